//! The live loop that ties the stages together: source → localize → track/classify → tally (with
//! its journal) → display, with progress on the terminal, alerts with evidence crops, annotated
//! frames on request, and the report at the end.

use crate::classify::{Classifier, ClassifyError, REVIEW};
use crate::config::BoardProfile;
use crate::display::{Canvas, Display, DisplayError, ScreenStatus};
use crate::localize::{Localization, Localizer};
use crate::report::{self, Differential, ReportError};
use crate::source::{FrameSource, SourceError};
use crate::tally::{Entry, Journal, Tally, TallyError};
use crate::track::{CountedCell, Tracker, TrackerConfig};
use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::Text;
use image::{Rgb, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

/// Errors that stop a run. Whatever was counted is already in the journal.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Tally(#[from] TallyError),
    #[error(transparent)]
    Display(#[from] DisplayError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("no readable frames ({0})")]
    NoFrames(String),
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    pub report_dir: PathBuf,
    /// Write annotated frames here.
    pub annotate: Option<PathBuf>,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub frames: u64,
    pub skipped_out_of_focus: u64,
    pub corrupt_frames: u64,
    /// Cells counted in this run (resumed ones not included).
    pub counted_now: u64,
    pub resumed: u64,
    pub tally: Tally,
    pub seconds: f64,
    pub alerts: Vec<String>,
}

/// Runs the live loop until the source ends, the frame limit or the count target.
pub fn run(
    profile: &BoardProfile,
    source: &mut dyn FrameSource,
    classifier: &Classifier,
    display: &mut dyn Display,
    opts: &RunOptions,
) -> Result<RunSummary, PipelineError> {
    let (mut journal, mut tally) =
        Journal::open(&opts.report_dir.join("journal.jsonl"), profile.count_target)?;
    let resumed = tally.total();
    if resumed > 0 {
        log::info!(
            "resuming the count in {}: {} cells already counted",
            journal.path().display(),
            resumed
        );
    }
    let localizer = Localizer::new(profile.localizer.clone(), classifier.manifest().crop_um);
    let mut tracker =
        Tracker::new(TrackerConfig::default()).with_first_id(tally.max_id().map_or(0, |m| m + 1));
    let mut status = ScreenStatus {
        source: source.describe(),
        ..Default::default()
    };
    let bar = progress_bar(opts.progress, &tally);
    let started = Instant::now();
    let mut summary = RunSummary {
        frames: 0,
        skipped_out_of_focus: 0,
        corrupt_frames: 0,
        counted_now: 0,
        resumed,
        tally: Tally::new(profile.count_target),
        seconds: 0.0,
        alerts: Vec::new(),
    };
    let station = Station {
        classifier,
        profile,
        report_dir: &opts.report_dir,
    };
    let mut first_error: Option<String> = None;
    let mut last_draw = Instant::now();
    let mut source_ended = false;
    while !tally.target_reached() && opts.max_frames.is_none_or(|m| summary.frames < m) {
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                source_ended = true;
                break;
            }
            Err(e) if e.is_recoverable() => {
                log::warn!("skipping a bad frame: {e}");
                first_error.get_or_insert_with(|| e.to_string());
                summary.corrupt_frames += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        summary.frames += 1;
        let um = frame.um_per_px.unwrap_or(profile.optics.um_per_px);
        let mut counted = tracker.advance(&frame.image, frame.index);
        let loc = localizer.localize(&frame.image, um);
        if loc.out_of_focus {
            summary.skipped_out_of_focus += 1;
        }
        counted.extend(tracker.observe(&loc.cells, um, |crops| classifier.classify(crops))?);
        station.record_all(counted, &mut journal, &mut tally, &mut summary, &mut status)?;
        if let Some(dir) = &opts.annotate {
            annotate_frame(dir, frame.index, &frame.image, &loc)?;
        }
        status.frames = summary.frames;
        status.skipped = summary.skipped_out_of_focus + summary.corrupt_frames;
        status.fps = summary.frames as f32 / started.elapsed().as_secs_f32().max(1e-3);
        bar.set_position(tally.classified());
        bar.set_message(format!("frame {} | {:.1} fps", summary.frames, status.fps));
        if last_draw.elapsed().as_millis() >= 500 {
            display.show(&tally, &status)?;
            last_draw = Instant::now();
        }
    }
    if source_ended && !tally.target_reached() {
        let open_tracks = tracker.finish();
        station.record_all(
            open_tracks,
            &mut journal,
            &mut tally,
            &mut summary,
            &mut status,
        )?;
    }
    bar.finish_and_clear();
    display.show(&tally, &status)?;
    if summary.frames == 0 {
        return Err(PipelineError::NoFrames(
            first_error.unwrap_or_else(|| "the source gave no frames".into()),
        ));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let diff = Differential::from_tally(
        &tally,
        summary.frames,
        summary.skipped_out_of_focus + summary.corrupt_frames,
        &classifier.manifest().name,
        &status.source,
    );
    report::write_report(&opts.report_dir, &tally, &diff)?;
    summary.tally = tally;
    Ok(summary)
}

fn progress_bar(show: bool, tally: &Tally) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(tally.target as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} counted {pos}/{len} [{bar:30}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(tally.classified());
    bar
}

/// What recording a counted cell needs besides the journal and the tally.
struct Station<'a> {
    classifier: &'a Classifier,
    profile: &'a BoardProfile,
    report_dir: &'a Path,
}

impl Station<'_> {
    /// Records counted cells; alerts go to the log, the screen and the summary.
    fn record_all(
        &self,
        cells: Vec<CountedCell>,
        journal: &mut Journal,
        tally: &mut Tally,
        summary: &mut RunSummary,
        status: &mut ScreenStatus,
    ) -> Result<(), PipelineError> {
        for cell in cells {
            summary.counted_now += 1;
            if let Some(a) = self.record(journal, tally, &cell)? {
                log::warn!("{a}");
                status.alerts.push(a.clone());
                summary.alerts.push(a);
            }
        }
        Ok(())
    }

    /// Journals a counted cell, adds it to the tally, stores its crop; returns an alert if it is one.
    fn record(
        &self,
        journal: &mut Journal,
        tally: &mut Tally,
        cell: &CountedCell,
    ) -> Result<Option<String>, PipelineError> {
        let label = self.classifier.label(&cell.view.prediction).to_string();
        let entry = Entry::Count {
            id: cell.track_id,
            class: label.clone(),
            p: cell.view.prediction.probability,
            frame: cell.view.frame_index,
            x: cell.world.0,
            y: cell.world.1,
        };
        journal.append(&entry)?;
        tally.apply(&entry)?;
        let stored = report::store_crop(self.report_dir, cell.track_id, &label, &cell.view.crop)?;
        let alerting = label == crate::tally::BLAST || self.profile.alert_classes.contains(&label);
        Ok((alerting && label != REVIEW).then(|| {
            format!(
                "ALERT {label} (p={:.2}) at frame {}, evidence {}",
                cell.view.prediction.probability,
                cell.view.frame_index,
                stored.display()
            )
        }))
    }
}

/// Writes a frame with cell boxes drawn (green: complete, amber: cut by the edge).
pub fn annotate_frame(
    dir: &Path,
    index: u64,
    frame: &RgbImage,
    loc: &Localization,
) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut canvas = Canvas {
        image: frame.clone(),
    };
    for cell in &loc.cells {
        let colour = if cell.complete {
            Rgb([40, 200, 60])
        } else {
            Rgb([240, 170, 30])
        };
        draw_box(&mut canvas.image, &cell.bbox, colour);
        let style = MonoTextStyle::new(
            &FONT_6X10,
            Rgb888::new(colour.0[0], colour.0[1], colour.0[2]),
        );
        let label = format!("{:.0} um2", cell.nucleus_area_um2);
        let _ = Text::new(
            &label,
            Point::new(cell.bbox.x0 as i32 + 2, cell.bbox.y0 as i32 + 10),
            style,
        )
        .draw(&mut canvas);
    }
    let path = dir.join(format!("frame_{index:06}.png"));
    canvas.image.save(&path).map_err(|e| ReportError {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Draws a two-pixel rectangle outline.
pub fn draw_box(img: &mut RgbImage, b: &crate::localize::BoxPx, colour: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0, x1, y1) = (b.x0 as i64, b.y0 as i64, b.x1 as i64 - 1, b.y1 as i64 - 1);
    let mut put = |x: i64, y: i64| {
        if x >= 0 && y >= 0 && x < w && y < h {
            img.put_pixel(x as u32, y as u32, colour);
        }
    };
    for t in 0..2 {
        for x in x0..=x1 {
            put(x, y0 + t);
            put(x, y1 - t);
        }
        for y in y0..=y1 {
            put(x0 + t, y);
            put(x1 - t, y);
        }
    }
}
