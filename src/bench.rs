//! Stage timings for `marrowscope bench`: model cold start, classification per crop at several
//! batch sizes, localization per megapixel, and end-to-end frames per second on the virtual slide.

use crate::classify::{Classifier, ClassifyError};
use crate::config::BoardProfile;
use crate::localize::Localizer;
use crate::slide::{atlas_sprites, SlideOptions, VirtualSlideSource};
use crate::source::FrameSource;
use crate::track::{Tracker, TrackerConfig};
use image::RgbImage;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Measured timings.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub cold_start_ms: f64,
    /// Milliseconds per crop at each batch size.
    pub classify_ms_per_crop: Vec<(usize, f64)>,
    pub localize_ms_per_megapixel: f64,
    pub end_to_end_fps: f64,
    pub end_to_end_frames: u64,
    pub cells_per_frame: f64,
    pub threads: usize,
}

/// Runs the benchmark with the profile's model; `frames` virtual frames for the end-to-end figure.
pub fn run_bench(
    profile: &BoardProfile,
    manifest: &Path,
    frames: u64,
) -> Result<BenchReport, ClassifyError> {
    let t0 = Instant::now();
    let classifier = Classifier::load(manifest, 8)?;
    let cold_start_ms = t0.elapsed().as_secs_f64() * 1e3;
    let sprites = atlas_sprites().map_err(|e| ClassifyError::Inference(e.to_string()))?;
    let crops: Vec<RgbImage> = sprites.iter().map(|s| s.image.clone()).collect();
    let mut classify_ms_per_crop = Vec::new();
    for batch in [1usize, 8] {
        let c = if batch == 8 {
            &classifier
        } else {
            &Classifier::load(manifest, 1)?
        };
        let reps = 32 / batch.max(1) * batch;
        let _ = c.classify(&crops[..batch])?;
        let t = Instant::now();
        let mut done = 0;
        while done < reps {
            let n = batch.min(crops.len());
            c.classify(&crops[..n])?;
            done += n;
        }
        classify_ms_per_crop.push((batch, t.elapsed().as_secs_f64() * 1e3 / done as f64));
    }
    let mut source =
        VirtualSlideSource::from_sprites(&sprites, SlideOptions::new(1), "atlas".into());
    let um = source.slide().um_per_px;
    let localizer = Localizer::new(profile.localizer.clone(), classifier.manifest().crop_um);
    let sample = source.render(&source.path()[0]);
    let t = Instant::now();
    let reps = 20;
    for _ in 0..reps {
        let _ = localizer.localize(&sample, um);
    }
    let mp = sample.width() as f64 * sample.height() as f64 / 1e6;
    let localize_ms_per_megapixel = t.elapsed().as_secs_f64() * 1e3 / reps as f64 / mp;
    let mut tracker = Tracker::new(TrackerConfig::default());
    let t = Instant::now();
    let (mut n, mut cells) = (0u64, 0usize);
    while n < frames {
        let Ok(Some(frame)) = source.next_frame() else {
            break;
        };
        let _ = tracker.advance(&frame.image, frame.index);
        let loc = localizer.localize(&frame.image, um);
        cells += loc.cells.len();
        tracker.observe(&loc.cells, um, |c| classifier.classify(c))?;
        n += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(BenchReport {
        model: classifier.manifest().name.clone(),
        cold_start_ms,
        classify_ms_per_crop,
        localize_ms_per_megapixel,
        end_to_end_fps: n as f64 / secs.max(1e-9),
        end_to_end_frames: n,
        cells_per_frame: cells as f64 / n.max(1) as f64,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    })
}
