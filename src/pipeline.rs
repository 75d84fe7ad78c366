//! The live loop that ties the stages together: source → localize → track/classify → tally (with
//! its journal) → display, with progress on the terminal, alerts with evidence crops, annotated
//! frames on request, and the report at the end.

use crate::classify::{Classifier, ClassifyError, REVIEW};
use crate::config::BoardProfile;
use crate::display::{Canvas, Display, DisplayError, ScreenStatus};
use crate::localize::{Cell, Localization, Localizer};
use crate::operator::{Controls, CorrectionLog, OperatorCommand, OperatorError, RESET_CONFIRM};
use crate::report::{self, Differential, ReportError};
use crate::source::{FrameSource, SourceError};
use crate::tally::{self, Entry, Journal, StagePoint, Tally, TallyError};
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
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("no readable frames ({0})")]
    NoFrames(String),
    #[error("{journal}: its {cells} cells were classified by model {began}, and this run's is {now}; one count is classified by one model. Resume it with {began} (--model or the board profile that names it), or give another --report folder for a new count")]
    AnotherModel {
        journal: String,
        cells: u64,
        began: String,
        now: String,
    },
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
    /// Find the cells with this learned detector instead of the classical localizer.
    pub detector: Option<std::sync::Arc<crate::detect::WbcDetector>>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub frames: u64,
    pub skipped_out_of_focus: u64,
    /// Frames skipped because they hold no colour (a monochrome camera; see
    /// [`crate::localize::lacks_colour`]).
    pub skipped_without_colour: u64,
    pub corrupt_frames: u64,
    /// Times the source (camera) was lost and reconnection began; the count went on after each.
    pub source_losses: u64,
    /// Cells counted in this run (resumed ones not included).
    pub counted_now: u64,
    pub resumed: u64,
    pub tally: Tally,
    pub seconds: f64,
    pub alerts: Vec<String>,
    /// Operator corrections made in this run (reassigned or discarded cells).
    pub corrections: u64,
    /// Journals of counts the operator reset, kept under these names.
    pub archived_journals: Vec<PathBuf>,
    /// Each cell counted in this run: its id, the frame of its best view and where it was in that
    /// frame (frame pixels), so a count can be checked against a slide whose stage path is known.
    pub counted_views: Vec<(u64, u64, (f32, f32))>,
}

/// Why a frame without colour is skipped, after "frame N".
const WITHOUT_COLOUR: &str = "has no colour, so it is skipped: white cells are found and \
     classified by the colours of their stain. Is the camera monochrome, or set to a grey format?";

/// The screen's word while frames come without colour; an OLED line shows its first 21
/// characters, a colour panel all of it.
pub const NO_COLOUR_NOTICE: &str = "grey frames skipped: is the camera monochrome?";

/// Puts [`NO_COLOUR_NOTICE`] up while frames come without colour and takes it down at the first
/// frame with colour. A notice already up for another reason (a reset to confirm) stays.
fn show_colour_notice(status: &mut ScreenStatus, colourless: bool) {
    let ours = status
        .notice
        .as_ref()
        .is_some_and(|(text, _)| text == NO_COLOUR_NOTICE);
    if colourless && (ours || status.notice.is_none()) {
        status.notice = Some((NO_COLOUR_NOTICE.into(), Instant::now()));
    } else if !colourless && ours {
        status.notice = None;
    }
}

impl RunSummary {
    /// Frames that gave no cells to count: out of focus, without colour, or unreadable.
    pub fn skipped(&self) -> u64 {
        self.skipped_out_of_focus + self.skipped_without_colour + self.corrupt_frames
    }
}

/// The hardware a run talks to besides the camera.
pub struct Station<'a> {
    pub display: &'a mut dyn Display,
    pub controls: &'a mut dyn Controls,
}

/// What finds the cells in this run, as the report names it.
fn localizer_name(opts: &RunOptions) -> String {
    opts.detector
        .as_ref()
        .map_or_else(|| "classical".to_string(), |d| d.manifest().name.clone())
}

/// Runs the live loop until the source ends, the frame limit, the count target or the operator
/// quits.
pub fn run(
    profile: &BoardProfile,
    source: &mut dyn FrameSource,
    classifier: &Classifier,
    station: Station<'_>,
    opts: &RunOptions,
) -> Result<RunSummary, PipelineError> {
    let Station { display, controls } = station;
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
    let mut localizer = Localizer::new(profile.localizer.clone(), classifier.manifest().crop_um);
    if let Some(detector) = &opts.detector {
        localizer = localizer.with_detector(detector.clone());
    }
    let mut tracker =
        Tracker::new(TrackerConfig::default()).with_first_id(tally.max_id().map_or(0, |m| m + 1));
    let source_name = source.describe();
    refuse_another_model(&journal, resumed, &classifier.manifest().name)?;
    warn_of_another_source(&journal, resumed, &source_name);
    if let Some(place) = resume_place(&journal, source, &source_name)? {
        tracker = tracker.resuming_at(place.at.camera, place.counted);
    }
    journal.append(&Entry::Start {
        source: source_name.clone(),
        model: Some(classifier.manifest().name.clone()),
    })?;
    let mut status = ScreenStatus {
        source: source_name,
        ..Default::default()
    };
    let bar = progress_bar(opts.progress, &tally);
    let started = Instant::now();
    let mut summary = RunSummary {
        frames: 0,
        skipped_out_of_focus: 0,
        skipped_without_colour: 0,
        corrupt_frames: 0,
        source_losses: 0,
        counted_now: 0,
        resumed,
        tally: Tally::new(profile.count_target),
        seconds: 0.0,
        alerts: Vec::new(),
        corrections: 0,
        archived_journals: Vec::new(),
        counted_views: Vec::new(),
    };
    let recorder = Recorder {
        classifier,
        profile,
        report_dir: &opts.report_dir,
    };
    let corrections = CorrectionLog::new(&opts.report_dir);
    let mut reset_asked: Option<Instant> = None;
    // Where operator commands act, borrowed afresh whenever commands are applied.
    macro_rules! desk {
        () => {
            Desk {
                journal: &mut journal,
                tally: &mut tally,
                status: &mut status,
                summary: &mut summary,
                corrections: &corrections,
                classes: &classifier.manifest().classes,
                model: &classifier.manifest().name,
                reset_asked: &mut reset_asked,
            }
        };
    }
    let mut first_error: Option<String> = None;
    let mut last_draw = Instant::now();
    let mut source_ended = false;
    let mut quit = false;
    while !quit && !tally.target_reached() && opts.max_frames.is_none_or(|m| summary.frames < m) {
        let mut desk = desk!();
        for cmd in controls.poll() {
            quit |= desk.apply(cmd, profile.count_target)?;
            display.show(desk.tally, desk.status)?;
        }
        if quit {
            break;
        }
        if status
            .notice
            .as_ref()
            .is_some_and(|n| n.1.elapsed() > RESET_CONFIRM)
        {
            status.notice = None;
        }
        if status.paused {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                source_ended = true;
                break;
            }
            Err(e) if e.is_reconnecting() => {
                if matches!(e, SourceError::Lost { .. }) {
                    summary.source_losses += 1;
                }
                set_notice(&mut status, e.to_string());
                display.show(&tally, &status)?;
                continue;
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
        let colourless = crate::localize::lacks_colour(&frame.image);
        let loc = if tracker.frame_blurred() || colourless {
            Localization::default()
        } else {
            localizer.localize(&frame.image, um)
        };
        show_colour_notice(&mut status, colourless);
        if colourless {
            if summary.skipped_without_colour == 0 {
                log::warn!("frame {} {WITHOUT_COLOUR}", frame.index);
            }
            summary.skipped_without_colour += 1;
        } else if loc.out_of_focus || tracker.frame_blurred() {
            summary.skipped_out_of_focus += 1;
        }
        let cut = |cell: &Cell| localizer.crop(&frame.image, cell, um);
        counted.extend(tracker.observe(&loc.cells, um, cut, |crops| classifier.classify(crops))?);
        recorder.record_all(counted, &mut journal, &mut tally, &mut summary, &mut status)?;
        let redraw = last_draw.elapsed().as_millis() >= 500;
        let wants_preview = display.preview_size().filter(|_| redraw);
        if opts.annotate.is_some() || wants_preview.is_some() {
            let labels = cell_labels(&tracker, classifier, &loc, um);
            if let Some(dir) = &opts.annotate {
                annotate_frame(dir, frame.index, &frame.image, &loc, &labels)?;
            }
            if let Some(size) = wants_preview {
                let p = preview(&frame.image, &loc, &labels, size);
                status.preview = Some(std::sync::Arc::new(p));
            }
        }
        status.frames = summary.frames;
        status.skipped = summary.skipped();
        status.fps = summary.frames as f32 / started.elapsed().as_secs_f32().max(1e-3);
        bar.set_position(tally.classified());
        bar.set_message(format!("frame {} | {:.1} fps", summary.frames, status.fps));
        if redraw {
            display.show(&tally, &status)?;
            last_draw = Instant::now();
        }
    }
    // Commands given while the last frame was processed still count.
    let mut desk = desk!();
    for cmd in controls.poll() {
        desk.apply(cmd, profile.count_target)?;
    }
    if source_ended && !tally.target_reached() {
        let open_tracks = tracker.finish();
        recorder.record_all(
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
        summary.skipped(),
        &classifier.manifest().name,
        &localizer_name(opts),
        &status.source,
    );
    report::write_report(&opts.report_dir, &tally, &diff)?;
    summary.tally = tally;
    Ok(summary)
}

/// Refuses to add to a journal's cells with another classifier than the one that classified them:
/// the differential would mix two models' calls under one model's name.
fn refuse_another_model(journal: &Journal, resumed: u64, model: &str) -> Result<(), PipelineError> {
    match tally::last_model(journal.replayed()) {
        Some(began) if resumed > 0 && began != model => Err(PipelineError::AnotherModel {
            journal: journal.path().display().to_string(),
            cells: resumed,
            began: began.to_string(),
            now: model.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A count resumed from a journal of another source goes on adding to it (a camera's slides are
/// one count), but replaying another folder into a report folder is more often a mistake: say so.
fn warn_of_another_source(journal: &Journal, resumed: u64, source_name: &str) {
    match tally::last_source(journal.replayed()) {
        Some(last) if resumed > 0 && last != source_name => log::warn!(
            "{}: its {resumed} cells were counted from {last}; this run adds the cells of \
             {source_name} to them (give another --report folder to count another slide apart)",
            journal.path().display()
        ),
        _ => {}
    }
}

/// Where the journal left the count of this same source: the source is moved to the frame in which
/// the last cell was counted, and the returned point tells the tracker where the camera was there
/// and which cells are counted already. None for a camera (no positions), another source, or a
/// journal without a stage point.
fn resume_place(
    journal: &Journal,
    source: &mut dyn FrameSource,
    source_name: &str,
) -> Result<Option<tally::ResumePoint>, PipelineError> {
    let Some(place) = tally::resume_point(journal.replayed(), source_name) else {
        return Ok(None);
    };
    if !source.seek(place.at.frame)? {
        return Ok(None);
    }
    log::info!(
        "continuing {source_name} at frame {}, where the journal's last cell was counted",
        place.at.frame
    );
    Ok(Some(place))
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

/// Where operator commands act: the count, its journal and the corrections table.
struct Desk<'a> {
    journal: &'a mut Journal,
    tally: &'a mut Tally,
    status: &'a mut ScreenStatus,
    summary: &'a mut RunSummary,
    corrections: &'a CorrectionLog,
    classes: &'a [String],
    /// The classifier's name, for the start entry of a count begun anew.
    model: &'a str,
    /// When the operator last asked for a reset (it needs a second request to happen).
    reset_asked: &'a mut Option<Instant>,
}

/// Shows a one-line message to the operator (screen footer and log).
fn set_notice(status: &mut ScreenStatus, text: String) {
    log::info!("{text}");
    status.notice = Some((text, Instant::now()));
}

impl Desk<'_> {
    fn notice(&mut self, text: String) {
        set_notice(self.status, text);
    }

    /// Carries out one operator command; returns true when the operator quits.
    fn apply(&mut self, cmd: OperatorCommand, target: u32) -> Result<bool, PipelineError> {
        match cmd {
            OperatorCommand::TogglePause => {
                self.status.paused = !self.status.paused;
                let state = if self.status.paused {
                    "paused"
                } else {
                    "counting"
                };
                self.notice(state.into());
            }
            OperatorCommand::NextScreen => self.status.screen = self.status.screen.wrapping_add(1),
            OperatorCommand::DiscardLast => self.correct_last(None)?,
            OperatorCommand::ReassignLast(class) => self.correct_last(Some(class))?,
            OperatorCommand::Reset => self.reset(target)?,
            OperatorCommand::Quit => return Ok(true),
        }
        Ok(false)
    }

    /// The first request asks for confirmation; a second within `RESET_CONFIRM` starts the count
    /// over, keeping the old journal under a dated name.
    fn reset(&mut self, target: u32) -> Result<(), PipelineError> {
        let confirmed = self
            .reset_asked
            .is_some_and(|t| t.elapsed() <= RESET_CONFIRM);
        if !confirmed {
            *self.reset_asked = Some(Instant::now());
            self.notice("Reset? press RESET again to confirm".into());
            return Ok(());
        }
        *self.reset_asked = None;
        let (tally, kept) = self.journal.start_over(target)?;
        // The new journal names its source too, so a crash after the reset resumes in place.
        self.journal.append(&Entry::Start {
            source: self.status.source.clone(),
            model: Some(self.model.to_string()),
        })?;
        *self.tally = tally;
        self.status.alerts.clear();
        self.notice(format!(
            "count reset; previous journal kept as {}",
            kept.display()
        ));
        self.summary.archived_journals.push(kept);
        Ok(())
    }

    /// Reassigns (`Some(class)`) or discards (`None`) the last counted cell: journaled, applied,
    /// and written to corrections.csv.
    fn correct_last(&mut self, class: Option<String>) -> Result<(), PipelineError> {
        let Some(last) = self.tally.last().cloned() else {
            self.notice("nothing counted yet to correct".into());
            return Ok(());
        };
        let entry = match class {
            Some(c) if c != REVIEW && !self.classes.contains(&c) => {
                self.notice(format!(
                    "{c} is not a class of this model ({}, or REVIEW)",
                    self.classes.join(" ")
                ));
                return Ok(());
            }
            Some(c) => Entry::Reassign {
                id: last.id,
                class: c,
            },
            None => Entry::Discard { id: last.id },
        };
        self.journal.append(&entry)?;
        self.tally.apply(&entry)?;
        let crop = report::crop_file(last.id, &last.model_class);
        self.corrections
            .append(&last, &entry, &crop.display().to_string())?;
        self.summary.corrections += 1;
        let what = match &entry {
            Entry::Reassign { class, .. } => format!("cell {} {} -> {class}", last.id, last.class),
            _ => format!("cell {} ({}) discarded", last.id, last.class),
        };
        self.notice(what);
        Ok(())
    }
}

/// What recording a counted cell needs besides the journal and the tally.
struct Recorder<'a> {
    classifier: &'a Classifier,
    profile: &'a BoardProfile,
    report_dir: &'a Path,
}

impl Recorder<'_> {
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
            summary
                .counted_views
                .push((cell.track_id, cell.view.frame_index, cell.view.centre));
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
            at: Some(StagePoint {
                frame: cell.counted_in.0,
                camera: cell.counted_in.1,
            }),
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

/// Writes a frame with cell boxes and labels drawn (see `draw_cells`) as `frame_NNNNNN.png`.
pub fn annotate_frame(
    dir: &Path,
    index: u64,
    frame: &RgbImage,
    loc: &Localization,
    labels: &[Option<String>],
) -> Result<(), ReportError> {
    save_png(
        dir,
        &format!("frame_{index:06}.png"),
        &draw_cells(frame, loc, labels),
    )
}

/// Colour of an expert box that nothing was found for, in `detect-eval`'s pictures.
const MISSED_COLOUR: Rgb<u8> = Rgb([230, 40, 200]);
/// Colour of a missed expert box that the scores over the agreed cells do not count (the
/// annotation gives it another class too, or its cell was found through its other box).
const SET_ASIDE_COLOUR: Rgb<u8> = Rgb([150, 150, 150]);

/// Writes a `detect-eval` frame as `<name>.png`: the found cells as `draw_cells` draws them, those
/// matching no expert box labelled "FP", and the expert boxes nothing matched in magenta, "MISSED",
/// or in grey, "SET ASIDE", where the scores over the agreed cells do not count them.
pub fn annotate_evaluated_frame(
    dir: &Path,
    name: &str,
    frame: &RgbImage,
    loc: &Localization,
    unpaired: &crate::eval::FrameMatch,
    truth: &[crate::localize::BoxPx],
) -> Result<(), ReportError> {
    let labels: Vec<Option<String>> = (0..loc.cells.len())
        .map(|i| {
            unpaired
                .false_positives
                .contains(&i)
                .then(|| "FP".to_string())
        })
        .collect();
    let mut canvas = Canvas {
        image: draw_cells(frame, loc, &labels),
    };
    for &j in &unpaired.missed {
        let Some(b) = truth.get(j) else { continue };
        let (colour, label) = if unpaired.missed_set_aside.contains(&j) {
            (SET_ASIDE_COLOUR, "SET ASIDE")
        } else {
            (MISSED_COLOUR, "MISSED")
        };
        draw_box(&mut canvas.image, b, colour);
        let [r, g, b_] = colour.0;
        let style = MonoTextStyle::new(&FONT_6X10, Rgb888::new(r, g, b_));
        let _ =
            Text::new(label, Point::new(b.x0 as i32 + 2, b.y1 as i32 - 4), style).draw(&mut canvas);
    }
    save_png(dir, &format!("{name}.png"), &canvas.image)
}

/// Makes the folder annotated frames go to (`--annotate`), before the first frame is read, so that
/// a path that cannot be a folder ends nothing half-way.
pub fn prepare_annotate_dir(dir: &Path) -> Result<(), ReportError> {
    crate::report::make_folder(dir, "annotated frames")
}

/// Saves a picture into `dir` (made when missing) as `file`.
fn save_png(dir: &Path, file: &str, image: &RgbImage) -> Result<(), ReportError> {
    prepare_annotate_dir(dir)?;
    report::save_png(&dir.join(file), image)
}

/// The frame with every localized cell boxed: green when complete (classified), amber when cut by
/// the frame edge; labelled with its class when one is known (`labels`, one per cell), else with
/// its nuclear area.
pub fn draw_cells(frame: &RgbImage, loc: &Localization, labels: &[Option<String>]) -> RgbImage {
    let mut canvas = Canvas {
        image: frame.clone(),
    };
    for (i, cell) in loc.cells.iter().enumerate() {
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
        let label = match labels.get(i) {
            Some(Some(class)) => class.clone(),
            _ => format!("{:.0} um2", cell.nucleus_area_um2),
        };
        let _ = Text::new(
            &label,
            Point::new(cell.bbox.x0 as i32 + 2, cell.bbox.y0 as i32 + 10),
            style,
        )
        .draw(&mut canvas);
    }
    canvas.image
}

/// The class label of each localized cell from its track (`*` marks a counted cell).
fn cell_labels(
    tracker: &Tracker,
    classifier: &Classifier,
    loc: &Localization,
    um_per_px: f32,
) -> Vec<Option<String>> {
    loc.cells
        .iter()
        .map(|c| {
            tracker
                .prediction_near(c.centre, um_per_px)
                .map(|(p, counted)| {
                    let mark = if counted { "*" } else { "" };
                    format!("{}{mark}", classifier.label(p))
                })
        })
        .collect()
}

/// The camera preview for a display that shows one: boxes and labels, scaled to fit `size`.
fn preview(
    frame: &RgbImage,
    loc: &Localization,
    labels: &[Option<String>],
    size: (u32, u32),
) -> RgbImage {
    let drawn = draw_cells(frame, loc, labels);
    let scale = (size.0 as f32 / frame.width() as f32)
        .min(size.1 as f32 / frame.height() as f32)
        .min(1.0);
    let (w, h) = (
        ((frame.width() as f32 * scale) as u32).max(1),
        ((frame.height() as f32 * scale) as u32).max(1),
    );
    image::imageops::resize(&drawn, w, h, image::imageops::FilterType::Triangle)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(status: &ScreenStatus) -> Option<&str> {
        status.notice.as_ref().map(|(text, _)| text.as_str())
    }

    #[test]
    fn the_colour_notice_is_up_while_frames_are_grey_and_leaves_another_notice_alone() {
        let mut status = ScreenStatus::default();
        show_colour_notice(&mut status, false);
        assert_eq!(notice(&status), None);
        show_colour_notice(&mut status, true);
        assert_eq!(notice(&status), Some(NO_COLOUR_NOTICE));
        show_colour_notice(&mut status, true);
        assert_eq!(notice(&status), Some(NO_COLOUR_NOTICE));
        show_colour_notice(&mut status, false);
        assert_eq!(notice(&status), None, "down at the first frame with colour");

        let reset = "Reset? press RESET again to confirm";
        status.notice = Some((reset.into(), Instant::now()));
        show_colour_notice(&mut status, true);
        assert_eq!(notice(&status), Some(reset));
        show_colour_notice(&mut status, false);
        assert_eq!(notice(&status), Some(reset));
    }
}
