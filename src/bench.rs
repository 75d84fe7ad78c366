//! `marrowscope bench`: timings and memory of each stage, measured in one run on this machine —
//! model load, classification per crop at several batch sizes, localization per megapixel,
//! end-to-end frames per second at camera resolution, time from process start to the first counted
//! cell, and peak resident memory — plus the soak test (`bench --soak N`), which drives the real
//! live loop over a virtual slide for N frames and samples resident memory as it goes.
//!
//! tract runs on one thread here (no multithreaded kernels are built in), so every figure is one
//! core's. Frames of the virtual slide are synthesized in memory; the time spent synthesizing them
//! stands in for the camera and is left out of the pipeline's figures (it is reported on its own).

use crate::classify::{Classifier, ClassifyError};
use crate::config::BoardProfile;
use crate::display::NoDisplay;
use crate::localize::{Cell, Localizer};
use crate::operator::NoControls;
use crate::pipeline::{self, PipelineError, RunOptions, Station};
use crate::slide::{atlas_sprites, SlideOptions, StagePose, VirtualSlideSource};
use crate::source::{Frame, FrameSource, SourceError};
use crate::track::{Tracker, TrackerConfig};
use image::{imageops, RgbImage};

/// White-cell spacing of the benchmark's slide: about 10 cells in each 1280×960 frame, as issue 8
/// asks (the demo slide's 215 px gives about 19).
const BENCH_CELL_SPACING: f32 = 300.0;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("batch sizes must be between 1 and {max} (got {0})", max = crate::config::MAX_BATCH)]
    BadBatch(usize),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Virtual frames for the end-to-end figure.
    pub frames: u64,
    /// Batch sizes for the per-crop classification timing.
    pub batches: Vec<usize>,
    /// When the process started, for the time to the first counted cell.
    pub process_start: Instant,
    /// Also time localization with this learned detector (manifest).
    pub detector: Option<std::path::PathBuf>,
}

/// Classification time at one batch size.
#[derive(Debug, Serialize)]
pub struct ClassifyTiming {
    pub batch: usize,
    pub ms_per_crop: f64,
    pub ms_per_batch: f64,
    pub crops_timed: usize,
}

/// Measured timings and memory.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub machine: String,
    pub model: String,
    pub threads: usize,
    /// Model load and optimization for the batch sizes the profile runs, ms.
    pub model_load_ms: f64,
    /// Process start to the first counted cell: start-up with the model load, then the pipeline's
    /// time on the frames up to that count (building the virtual slide and synthesizing its
    /// frames left out: a camera streams them), ms.
    pub first_count_ms: Option<f64>,
    pub frames_to_first_count: u64,
    /// Per crop at each batch size; crops already at the model's input size.
    pub classify: Vec<ClassifyTiming>,
    pub frame_width: u32,
    pub frame_height: u32,
    pub localize_ms_per_megapixel: f64,
    /// The same frames localized with the learned detector (`--detector`), ms per megapixel.
    pub detector_localize_ms_per_megapixel: Option<f64>,
    /// Both again on 640 × 480 cut-outs of the same frames (the smaller profiles' camera size),
    /// ms per megapixel: the detector's network costs the same per frame at any size.
    pub localize_640x480_ms_per_megapixel: f64,
    pub detector_localize_640x480_ms_per_megapixel: Option<f64>,
    /// The profile's scale, µm per pixel (the virtual slide's frames are timed at their own).
    pub profile_um_per_px: f32,
    /// The size of the frames timed at the profile's scale: its camera's, cut out of the virtual
    /// slide's frames (no larger than they are).
    pub profile_frame_width: u32,
    pub profile_frame_height: u32,
    /// The detector on those frames as if they had the profile's scale, ms per megapixel: the
    /// path the profile's camera takes (the localizer's binning, and so the detector's picture,
    /// follow the scale; the network costs the same per frame at any size).
    pub detector_localize_at_profile_ms_per_megapixel: Option<f64>,
    /// Tracking, localization and classification of new views, per frame.
    pub end_to_end_fps: f64,
    pub end_to_end_frames: u64,
    pub cells_per_frame: f64,
    /// Crops the tracker sent to the classifier (new cells and better views), per frame.
    pub crops_classified_per_frame: f64,
    /// Synthesizing one virtual frame (the camera's part; not in `end_to_end_fps`), ms.
    pub frame_synthesis_ms: f64,
    /// Peak resident memory of this process (VmHWM) after the end-to-end run, MB: the live loop's
    /// footprint with the profile's model, plus the virtual slide's cell pictures.
    pub peak_rss_mb: Option<f64>,
}

/// Runs the benchmark with the profile's settings and the model of `manifest`.
pub fn run_bench(
    profile: &BoardProfile,
    manifest: &Path,
    opts: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    if let Some(&b) = opts
        .batches
        .iter()
        .find(|&&b| b == 0 || b > crate::config::MAX_BATCH)
    {
        return Err(BenchError::BadBatch(b));
    }
    let t = Instant::now();
    let classifier = Classifier::load(manifest, profile.batch)?;
    let model_load_ms = ms(t.elapsed());
    let started_up = opts.process_start.elapsed();
    let sprites = atlas_sprites()?;
    let slide_opts = SlideOptions {
        cell_spacing: BENCH_CELL_SPACING,
        ..SlideOptions::new(1)
    };
    let (frame_width, frame_height) = (slide_opts.frame_width, slide_opts.frame_height);
    let mut source = VirtualSlideSource::from_sprites(&sprites, slide_opts, "atlas".into());
    let localizer = Localizer::new(profile.localizer.clone(), classifier.manifest().crop_um);
    let e2e = run_end_to_end(&mut source, &localizer, &classifier, opts.frames)?;
    // The live loop's memory: read before the timings below hold their frames (16 frames, 37 MB)
    // and load larger plans.
    let peak_rss_mb = peak_rss_mb();
    let um = source.slide().um_per_px;
    let frames = localization_frames(&source);
    let small = cut_outs(&frames, 640, 480);
    let camera = &profile.camera;
    let at_profile = cut_outs(&frames, camera.width, camera.height);
    let localize_ms_per_megapixel = time_localize(&localizer, &frames, um);
    let localize_640x480_ms_per_megapixel = time_localize(&localizer, &small, um);
    let detector = opts
        .detector
        .as_deref()
        .map(crate::detect::WbcDetector::load)
        .transpose()?;
    let with_detector = detector.map(|d| localizer.clone().with_detector(std::sync::Arc::new(d)));
    let detector_localize_ms_per_megapixel = with_detector
        .as_ref()
        .map(|l| time_localize(l, &frames, um));
    let detector_localize_640x480_ms_per_megapixel =
        with_detector.as_ref().map(|l| time_localize(l, &small, um));
    let profile_um_per_px = profile.optics.um_per_px;
    let detector_localize_at_profile_ms_per_megapixel = with_detector
        .as_ref()
        .map(|l| time_localize(l, &at_profile, profile_um_per_px));
    let size = classifier.manifest().input_size as u32;
    let crops: Vec<RgbImage> = sprites
        .iter()
        .map(|s| imageops::resize(&s.image, size, size, imageops::FilterType::Triangle))
        .collect();
    let classify = opts
        .batches
        .iter()
        .map(|&b| time_classify(manifest, &crops, b))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BenchReport {
        machine: machine_name(),
        model: classifier.manifest().name.clone(),
        threads: 1,
        model_load_ms,
        first_count_ms: e2e
            .first_count
            .map(|pipeline_time| ms(started_up + pipeline_time)),
        frames_to_first_count: e2e.frames_to_first_count,
        classify,
        frame_width,
        frame_height,
        localize_ms_per_megapixel,
        detector_localize_ms_per_megapixel,
        localize_640x480_ms_per_megapixel,
        detector_localize_640x480_ms_per_megapixel,
        profile_um_per_px,
        profile_frame_width: camera.width.min(frame_width),
        profile_frame_height: camera.height.min(frame_height),
        detector_localize_at_profile_ms_per_megapixel,
        end_to_end_fps: e2e.frames as f64 / e2e.pipeline.as_secs_f64().max(1e-9),
        end_to_end_frames: e2e.frames,
        cells_per_frame: e2e.cells as f64 / e2e.frames.max(1) as f64,
        crops_classified_per_frame: e2e.crops_classified as f64 / e2e.frames.max(1) as f64,
        frame_synthesis_ms: ms(e2e.synthesis) / e2e.frames.max(1) as f64,
        peak_rss_mb,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Per-crop time at one batch size: warm-up, then the median batch time over at least 64 crops
/// and 1 s (benches/tract_vs_onnxruntime.py times onnxruntime the same way).
fn time_classify(
    manifest: &Path,
    crops: &[RgbImage],
    batch: usize,
) -> Result<ClassifyTiming, BenchError> {
    let classifier = Classifier::load(manifest, batch)?;
    let chunk: Vec<RgbImage> = crops.iter().cycle().take(batch).cloned().collect();
    classifier.run_logits(&chunk)?;
    let started = Instant::now();
    let mut done = 0;
    let mut per_batch = Vec::new();
    while done < 64 || started.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        classifier.run_logits(&chunk)?;
        per_batch.push(ms(t.elapsed()));
        done += batch;
    }
    let per_crop = median(&mut per_batch) / batch as f64;
    Ok(ClassifyTiming {
        batch,
        ms_per_crop: per_crop,
        ms_per_batch: per_crop * batch as f64,
        crops_timed: done,
    })
}

/// Eight frames spread along the stage path, for the localization timings.
fn localization_frames(source: &VirtualSlideSource) -> Vec<RgbImage> {
    let poses: Vec<StagePose> = source.path().iter().step_by(37).take(8).copied().collect();
    poses.iter().map(|p| source.render(p)).collect()
}

/// The top-left `width` × `height` of each frame (the whole frame where it is smaller).
fn cut_outs(frames: &[RgbImage], width: u32, height: u32) -> Vec<RgbImage> {
    frames
        .iter()
        .map(|f| {
            imageops::crop_imm(f, 0, 0, width.min(f.width()), height.min(f.height())).to_image()
        })
        .collect()
}

/// Localization time per megapixel of `frames` (of scale `um`): the median of repeated passes over
/// the same frames (at least 5 passes and 1.5 s), so one slow moment on a shared machine does not
/// set the figure.
fn time_localize(localizer: &Localizer, frames: &[RgbImage], um: f32) -> f64 {
    let megapixels: f64 = frames
        .iter()
        .map(|f| f.width() as f64 * f.height() as f64 / 1e6)
        .sum();
    let _ = localizer.localize(&frames[0], um);
    let started = Instant::now();
    let mut passes = Vec::new();
    while passes.len() < 5 || started.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        for f in frames {
            let _ = localizer.localize(f, um);
        }
        passes.push(ms(t.elapsed()) / megapixels);
    }
    median(&mut passes)
}

/// Median of a non-empty list (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

struct EndToEnd {
    frames: u64,
    cells: usize,
    crops_classified: u64,
    pipeline: Duration,
    synthesis: Duration,
    /// Pipeline time up to and including the frame of the first count.
    first_count: Option<Duration>,
    frames_to_first_count: u64,
}

/// Tracking, localization and classification over virtual frames, timed without the synthesis of
/// the frames themselves.
fn run_end_to_end(
    source: &mut VirtualSlideSource,
    localizer: &Localizer,
    classifier: &Classifier,
    frames: u64,
) -> Result<EndToEnd, BenchError> {
    let um = source.slide().um_per_px;
    let mut tracker = Tracker::new(TrackerConfig::default());
    let mut e2e = EndToEnd {
        frames: 0,
        cells: 0,
        crops_classified: 0,
        pipeline: Duration::ZERO,
        synthesis: Duration::ZERO,
        first_count: None,
        frames_to_first_count: 0,
    };
    while e2e.frames < frames {
        let t = Instant::now();
        let Some(frame) = source.next_frame()? else {
            break;
        };
        e2e.synthesis += t.elapsed();
        let t = Instant::now();
        let mut counted = tracker.advance(&frame.image, frame.index);
        let loc = localizer.localize(&frame.image, um);
        let cut = |cell: &Cell| localizer.crop(&frame.image, cell, um);
        counted.extend(tracker.observe(&loc.cells, um, cut, |c| {
            e2e.crops_classified += c.len() as u64;
            classifier.classify(c)
        })?);
        e2e.pipeline += t.elapsed();
        e2e.cells += loc.cells.len();
        e2e.frames += 1;
        if e2e.first_count.is_none() && !counted.is_empty() {
            e2e.first_count = Some(e2e.pipeline);
            e2e.frames_to_first_count = e2e.frames;
        }
    }
    Ok(e2e)
}

/// The CPU's model name, from /proc/cpuinfo.
fn machine_name() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {cpus} cores")
}

/// A field of /proc/self/status in MB (`VmHWM`, `VmRSS`); None off Linux.
fn status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

/// Peak resident memory of this process, MB.
pub fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

/// Resident memory of this process now, MB.
pub fn rss_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

/// One memory reading of the soak test.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    pub frame: u64,
    pub seconds: f64,
    pub rss_mb: f64,
}

/// The soak test's result.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub frames: u64,
    pub seconds: f64,
    pub counted: u64,
    pub samples: Vec<SoakSample>,
    /// Resident memory at the first sample after warm-up (10 % of the run) and at the end, MB.
    pub rss_after_warmup_mb: f64,
    pub rss_end_mb: f64,
    pub peak_rss_mb: Option<f64>,
}

/// Virtual-slide frames for as long as asked: the stage pans the whole path, then pans it back
/// (and so on), so the motion never jumps and every pass after the first sees cells already counted.
/// Reads resident memory every `every` frames.
pub struct SoakSource {
    inner: VirtualSlideSource,
    frames: u64,
    next: u64,
    every: u64,
    started: Instant,
    samples: Vec<SoakSample>,
}

impl SoakSource {
    pub fn new(inner: VirtualSlideSource, frames: u64, every: u64) -> SoakSource {
        SoakSource {
            inner,
            frames,
            next: 0,
            every: every.max(1),
            started: Instant::now(),
            samples: Vec::new(),
        }
    }

    /// Index into the stage path for frame `i`: forward, then back, then forward...
    fn pose_index(&self, i: u64) -> usize {
        let n = self.inner.path().len() as u64;
        if n < 2 {
            return 0;
        }
        let period = 2 * (n - 1);
        let k = i % period;
        (if k < n { k } else { period - k }) as usize
    }

    pub fn samples(&self) -> &[SoakSample] {
        &self.samples
    }

    fn sample(&mut self) {
        if let Some(rss) = rss_mb() {
            self.samples.push(SoakSample {
                frame: self.next,
                seconds: self.started.elapsed().as_secs_f64(),
                rss_mb: rss,
            });
        }
    }
}

impl FrameSource for SoakSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.next.is_multiple_of(self.every) {
            self.sample();
        }
        if self.next >= self.frames {
            return Ok(None);
        }
        let pose = self.inner.path()[self.pose_index(self.next)];
        let index = self.next;
        self.next += 1;
        Ok(Some(Frame {
            index,
            image: self.inner.render(&pose),
            um_per_px: Some(self.inner.slide().um_per_px),
            origin: format!("soak#{index}"),
        }))
    }

    fn describe(&self) -> String {
        format!("soak: {} frames of {}", self.frames, self.inner.describe())
    }
}

/// Drives the real live loop (journal included, into `report_dir`) for `frames` frames of a
/// 640×480 pan over a 3000×2000 virtual slide, reading resident memory every `every` frames.
pub fn run_soak(
    profile: &BoardProfile,
    classifier: &Classifier,
    frames: u64,
    every: u64,
    report_dir: &Path,
) -> Result<SoakReport, BenchError> {
    let slide_opts = SlideOptions {
        width: 3000,
        height: 2000,
        frame_width: 640,
        frame_height: 480,
        step: 48.0,
        ..SlideOptions::new(1)
    };
    let inner = VirtualSlideSource::from_sprites(&atlas_sprites()?, slide_opts, "atlas".into());
    let mut source = SoakSource::new(inner, frames, every);
    let mut profile = profile.clone();
    profile.count_target = u32::MAX;
    let opts = RunOptions {
        max_frames: Some(frames),
        report_dir: report_dir.to_path_buf(),
        annotate: None,
        progress: true,
        detector: None,
    };
    let station = Station {
        display: &mut NoDisplay,
        controls: &mut NoControls,
    };
    let summary = pipeline::run(&profile, &mut source, classifier, station, &opts)?;
    source.sample();
    let samples = source.samples().to_vec();
    let warm = samples
        .iter()
        .find(|s| s.frame >= frames / 10)
        .or(samples.first())
        .map_or(f64::NAN, |s| s.rss_mb);
    Ok(SoakReport {
        frames: summary.frames,
        seconds: summary.seconds,
        counted: summary.counted_now,
        rss_after_warmup_mb: warm,
        rss_end_mb: samples.last().map_or(f64::NAN, |s| s.rss_mb),
        samples,
        peak_rss_mb: peak_rss_mb(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slide::VirtualSlide;

    /// White cells per frame of the benchmark's slide, from the slide's truth (cells per slide
    /// area times the frame's area).
    fn truth_cells_per_frame(cell_spacing: f32) -> f64 {
        let opts = SlideOptions {
            cell_spacing,
            ..SlideOptions::new(1)
        };
        let slide = VirtualSlide::compose(&atlas_sprites().unwrap(), &opts);
        let per_pixel = slide.cells.len() as f64 / (opts.width as f64 * opts.height as f64);
        per_pixel * opts.frame_width as f64 * opts.frame_height as f64
    }

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
    }

    #[test]
    fn cut_outs_take_the_camera_size_from_the_top_left_and_never_grow_a_frame() {
        let frame = RgbImage::from_fn(1280, 960, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, 7])
        });
        let small = cut_outs(std::slice::from_ref(&frame), 640, 480);
        assert_eq!(small[0].dimensions(), (640, 480));
        assert_eq!(small[0].get_pixel(639, 479), frame.get_pixel(639, 479));
        let larger_camera = cut_outs(std::slice::from_ref(&frame), 1920, 1080);
        assert_eq!(larger_camera[0].dimensions(), (1280, 960));
    }

    #[test]
    fn bench_frames_carry_about_ten_cells() {
        let bench = truth_cells_per_frame(BENCH_CELL_SPACING);
        assert!((8.5..=11.5).contains(&bench), "{bench:.1} cells per frame");
        let demo = truth_cells_per_frame(SlideOptions::new(1).cell_spacing);
        assert!(demo > 15.0, "the demo slide is denser: {demo:.1}");
    }

    #[test]
    fn soak_path_goes_forward_then_back_without_jumps() {
        let sprites = atlas_sprites().unwrap();
        let opts = SlideOptions {
            width: 1600,
            height: 1200,
            frame_width: 640,
            frame_height: 480,
            step: 64.0,
            ..SlideOptions::new(2)
        };
        let inner = VirtualSlideSource::from_sprites(&sprites, opts, "t".into());
        let n = inner.path().len() as u64;
        let soak = SoakSource::new(inner, 10 * n, 100);
        let idx: Vec<usize> = (0..3 * n).map(|i| soak.pose_index(i)).collect();
        assert_eq!(idx[0], 0);
        assert_eq!(idx[(n - 1) as usize], (n - 1) as usize);
        assert_eq!(
            idx[(2 * n - 2) as usize],
            0,
            "back at the start after one round trip"
        );
        assert!(idx.windows(2).all(|w| w[0].abs_diff(w[1]) == 1));
    }

    #[test]
    fn soak_source_ends_after_its_frames_and_samples_memory() {
        let sprites = atlas_sprites().unwrap();
        let opts = SlideOptions {
            width: 1600,
            height: 1200,
            frame_width: 320,
            frame_height: 240,
            step: 64.0,
            ..SlideOptions::new(2)
        };
        let inner = VirtualSlideSource::from_sprites(&sprites, opts, "t".into());
        let mut soak = SoakSource::new(inner, 5, 2);
        let mut got = 0;
        while let Some(f) = soak.next_frame().unwrap() {
            assert_eq!(f.index, got);
            got += 1;
        }
        assert_eq!(got, 5);
        let frames: Vec<u64> = soak.samples().iter().map(|s| s.frame).collect();
        assert_eq!(frames, vec![0, 2, 4]);
        assert!(soak.samples().iter().all(|s| s.rss_mb > 0.0));
    }

    #[test]
    fn status_fields_are_read_in_megabytes() {
        let peak = peak_rss_mb().unwrap();
        let now = rss_mb().unwrap();
        assert!(now > 1.0 && peak >= now, "now {now} MB, peak {peak} MB");
    }
}
