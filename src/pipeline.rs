//! The live loop that ties the stages together: source → localize → track/classify → tally (with
//! its journal) → display, with progress on the terminal, alerts with evidence crops, annotated
//! frames on request, and the report at the end.

use crate::annotate;
use crate::classify::{Classifier, ClassifyError, REVIEW};
use crate::config::BoardProfile;
use crate::display::{Display, DisplayError, ScreenStatus};
use crate::localize::{Cell, Localization, Localizer};
use crate::operator::{Controls, CorrectionLog, OperatorCommand, OperatorError, RESET_CONFIRM};
use crate::report::{self, Differential, ReportError};
use crate::source::{Frame, FrameSource, SourceError};
use crate::tally::{self, Entry, Journal, StagePoint, Tally, TallyError};
use crate::track::{CountedCell, Tracker, TrackerConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
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
    /// The summary of a run that goes on from `resumed` cells counted before it.
    fn new(resumed: u64, count_target: u32) -> RunSummary {
        RunSummary {
            frames: 0,
            skipped_out_of_focus: 0,
            skipped_without_colour: 0,
            corrupt_frames: 0,
            source_losses: 0,
            counted_now: 0,
            resumed,
            tally: Tally::new(count_target),
            seconds: 0.0,
            alerts: Vec::new(),
            corrections: 0,
            archived_journals: Vec::new(),
            counted_views: Vec::new(),
        }
    }

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

/// How often the screen is redrawn (and the camera preview made) while frames come.
const REDRAW_EVERY: Duration = Duration::from_millis(500);

/// How long a paused run waits before it looks at the operator's commands again.
const PAUSED_POLL: Duration = Duration::from_millis(50);

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
    let mut count = Count::open(profile, classifier, &opts.report_dir, source.describe())?;
    let place = resume_place(&count.journal, source, &count.status.source)?;
    let mut stages = Stages::new(profile, classifier, opts, count.tally.max_id(), place);
    count.journal_start()?;
    let mut screen = Screen::new(display, opts.progress, &count.tally);
    let mut source_ended = false;
    while count.wants_more_frames(opts.max_frames) {
        if count.apply_commands(controls.poll(), screen.display)? {
            break;
        }
        count.expire_notice();
        if count.status.paused {
            std::thread::sleep(PAUSED_POLL);
            continue;
        }
        let frame = match next_frame(source, &mut count, screen.display)? {
            NextFrame::Frame(frame) => frame,
            NextFrame::Ended => {
                source_ended = true;
                break;
            }
            NextFrame::NotYet => continue,
        };
        let um = frame.um_per_px.unwrap_or(profile.optics.um_per_px);
        let Seen { loc, counted, skip } = stages.see(&frame, um)?;
        count.add_frame(frame.index, skip);
        count.record_all(counted)?;
        let labels = |loc: &Localization| stages.labels(loc, um);
        screen.after_frame(&mut count, &frame, &loc, labels, opts.annotate.as_deref())?;
    }
    // Commands given while the last frame was processed still count.
    for cmd in controls.poll() {
        count.apply(cmd)?;
    }
    if source_ended && !count.tally.target_reached() {
        count.record_all(stages.tracker.finish())?;
    }
    screen.close(&count)?;
    count.close(screen.started, &localizer_name(opts))
}

/// What the source gave when asked for a frame.
enum NextFrame {
    Frame(Frame),
    /// The source has no more frames.
    Ended,
    /// No frame this time: the camera is being reconnected, or the frame was bad and is skipped.
    NotYet,
}

/// Reads the next frame. A lost camera puts up its notice while it is reconnected, and a bad frame
/// is counted and skipped; any other source error ends the run.
fn next_frame(
    source: &mut dyn FrameSource,
    count: &mut Count,
    display: &mut dyn Display,
) -> Result<NextFrame, PipelineError> {
    match source.next_frame() {
        Ok(Some(frame)) => Ok(NextFrame::Frame(frame)),
        Ok(None) => Ok(NextFrame::Ended),
        Err(e) if e.is_reconnecting() => {
            if matches!(e, SourceError::Lost { .. }) {
                count.summary.source_losses += 1;
            }
            set_notice(&mut count.status, e.to_string());
            display.show(&count.tally, &count.status)?;
            Ok(NextFrame::NotYet)
        }
        Err(e) if e.is_recoverable() => {
            log::warn!("skipping a bad frame: {e}");
            count.first_bad_frame.get_or_insert_with(|| e.to_string());
            count.summary.corrupt_frames += 1;
            Ok(NextFrame::NotYet)
        }
        Err(e) => Err(e.into()),
    }
}

/// Why a frame gave no cells to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Its cells were looked for.
    No,
    /// It holds no colour (see [`crate::localize::lacks_colour`]).
    WithoutColour,
    /// It is out of focus, or blurred by the stage moving.
    OutOfFocus,
}

/// What the stages made of one frame.
struct Seen {
    loc: Localization,
    /// The cells the tracker counted with this frame: tracks seen whole often enough, or lost, and
    /// those closed by a jump to another field.
    counted: Vec<CountedCell>,
    skip: Skip,
}

/// What turns frames into counted cells: the localizer finds the cells, the tracker follows them
/// while the stage moves and has each classified and counted once.
struct Stages<'a> {
    localizer: Localizer,
    tracker: Tracker,
    classifier: &'a Classifier,
}

impl<'a> Stages<'a> {
    /// The stages of a run whose journal's highest cell id is `max_id`, going on at `place` where
    /// the journal left this source's count.
    fn new(
        profile: &BoardProfile,
        classifier: &'a Classifier,
        opts: &RunOptions,
        max_id: Option<u64>,
        place: Option<tally::ResumePoint>,
    ) -> Stages<'a> {
        let mut localizer =
            Localizer::new(profile.localizer.clone(), classifier.manifest().crop_um);
        if let Some(detector) = &opts.detector {
            localizer = localizer.with_detector(detector.clone());
        }
        let mut tracker =
            Tracker::new(TrackerConfig::default()).with_first_id(max_id.map_or(0, |m| m + 1));
        if let Some(place) = place {
            tracker = tracker.resuming_at(place.at.camera, place.counted);
        }
        Stages {
            localizer,
            tracker,
            classifier,
        }
    }

    /// Follows the stage to `frame`, finds its cells (unless it is without colour or blurred) and
    /// has the tracker classify and count those that are done.
    fn see(&mut self, frame: &Frame, um_per_px: f32) -> Result<Seen, PipelineError> {
        let mut counted = self.tracker.advance(&frame.image, frame.index);
        let colourless = crate::localize::lacks_colour(&frame.image);
        let loc = if self.tracker.frame_blurred() || colourless {
            Localization::default()
        } else {
            self.localizer.localize(&frame.image, um_per_px)
        };
        let skip = if colourless {
            Skip::WithoutColour
        } else if loc.out_of_focus || self.tracker.frame_blurred() {
            Skip::OutOfFocus
        } else {
            Skip::No
        };
        let localizer = &self.localizer;
        let classifier = self.classifier;
        let cut = |cell: &Cell| localizer.crop(&frame.image, cell, um_per_px);
        counted.extend(self.tracker.observe(&loc.cells, um_per_px, cut, |crops| {
            classifier.classify(crops)
        })?);
        Ok(Seen { loc, counted, skip })
    }

    /// The class label of each localized cell from its track (`*` marks a counted cell).
    fn labels(&self, loc: &Localization, um_per_px: f32) -> Vec<Option<String>> {
        loc.cells
            .iter()
            .map(|c| {
                self.tracker
                    .prediction_near(c.centre, um_per_px)
                    .map(|(p, counted)| {
                        let mark = if counted { "*" } else { "" };
                        format!("{}{mark}", self.classifier.label(p))
                    })
            })
            .collect()
    }
}

/// What the operator sees while the run goes on: the display, and the progress bar on the terminal.
struct Screen<'a> {
    display: &'a mut dyn Display,
    bar: ProgressBar,
    started: Instant,
    last_draw: Instant,
}

impl<'a> Screen<'a> {
    fn new(display: &'a mut dyn Display, progress: bool, tally: &Tally) -> Screen<'a> {
        Screen {
            display,
            bar: progress_bar(progress, tally),
            started: Instant::now(),
            last_draw: Instant::now(),
        }
    }

    /// Writes the annotated frame (`annotate`), brings the status and progress bar up to date,
    /// and redraws the screen, with a new camera preview, when it is due. `labels` gives each
    /// found cell's label; it is asked only when a frame is drawn.
    fn after_frame(
        &mut self,
        count: &mut Count,
        frame: &Frame,
        loc: &Localization,
        labels: impl Fn(&Localization) -> Vec<Option<String>>,
        annotate: Option<&Path>,
    ) -> Result<(), PipelineError> {
        let redraw = self.last_draw.elapsed() >= REDRAW_EVERY;
        let wants_preview = self.display.preview_size().filter(|_| redraw);
        if annotate.is_some() || wants_preview.is_some() {
            let labels = labels(loc);
            if let Some(dir) = annotate {
                annotate::annotate_frame(dir, frame.index, &frame.image, loc, &labels)?;
            }
            if let Some(size) = wants_preview {
                let picture = annotate::preview(&frame.image, loc, &labels, size);
                count.status.preview = Some(std::sync::Arc::new(picture));
            }
        }
        let status = &mut count.status;
        status.frames = count.summary.frames;
        status.skipped = count.summary.skipped();
        status.fps = count.summary.frames as f32 / self.started.elapsed().as_secs_f32().max(1e-3);
        self.bar.set_position(count.tally.classified());
        self.bar
            .set_message(format!("frame {} | {:.1} fps", status.frames, status.fps));
        if redraw {
            self.display.show(&count.tally, status)?;
            self.last_draw = Instant::now();
        }
        Ok(())
    }

    /// Takes the progress bar down and shows the count as it ends.
    fn close(&mut self, count: &Count) -> Result<(), PipelineError> {
        self.bar.finish_and_clear();
        self.display.show(&count.tally, &count.status)?;
        Ok(())
    }
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

/// Shows a one-line message to the operator (screen footer and log).
fn set_notice(status: &mut ScreenStatus, text: String) {
    log::info!("{text}");
    status.notice = Some((text, Instant::now()));
}

/// One run's count and all that changes it: the journal and the tally, what the screen shows, the
/// run's summary, and the operator's corrections.
struct Count<'a> {
    journal: Journal,
    tally: Tally,
    status: ScreenStatus,
    summary: RunSummary,
    corrections: CorrectionLog,
    /// When the operator last asked for a reset (it needs a second request to happen).
    reset_asked: Option<Instant>,
    /// The first bad frame's error, for a run that read no frame at all.
    first_bad_frame: Option<String>,
    classifier: &'a Classifier,
    profile: &'a BoardProfile,
    report_dir: &'a Path,
}

impl<'a> Count<'a> {
    /// Opens the count of the report folder's journal (resuming what it holds) for cells of
    /// `source`, refusing a journal whose cells another model classified.
    fn open(
        profile: &'a BoardProfile,
        classifier: &'a Classifier,
        report_dir: &'a Path,
        source: String,
    ) -> Result<Count<'a>, PipelineError> {
        let (journal, tally) =
            Journal::open(&report_dir.join("journal.jsonl"), profile.count_target)?;
        let resumed = tally.total();
        if resumed > 0 {
            log::info!(
                "resuming the count in {}: {} cells already counted",
                journal.path().display(),
                resumed
            );
        }
        refuse_another_model(&journal, resumed, &classifier.manifest().name)?;
        warn_of_another_source(&journal, resumed, &source);
        Ok(Count {
            journal,
            tally,
            status: ScreenStatus {
                source,
                ..Default::default()
            },
            summary: RunSummary::new(resumed, profile.count_target),
            corrections: CorrectionLog::new(report_dir),
            reset_asked: None,
            first_bad_frame: None,
            classifier,
            profile,
            report_dir,
        })
    }

    fn model(&self) -> &'a str {
        &self.classifier.manifest().name
    }

    /// Journals that this source's cells, classified by this model, are counted from here on.
    fn journal_start(&mut self) -> Result<(), PipelineError> {
        self.journal.append(&Entry::Start {
            source: self.status.source.clone(),
            model: Some(self.model().to_string()),
        })?;
        Ok(())
    }

    /// Until the count reaches its target or the run its frame limit.
    fn wants_more_frames(&self, max_frames: Option<u64>) -> bool {
        !self.tally.target_reached() && max_frames.is_none_or(|m| self.summary.frames < m)
    }

    /// Carries out the operator's commands, showing the count after each; true when one of them
    /// was to quit.
    fn apply_commands(
        &mut self,
        commands: Vec<OperatorCommand>,
        display: &mut dyn Display,
    ) -> Result<bool, PipelineError> {
        let mut quit = false;
        for cmd in commands {
            quit |= self.apply(cmd)?;
            display.show(&self.tally, &self.status)?;
        }
        Ok(quit)
    }

    /// Takes down a notice that has been up longer than a reset waits for its confirmation.
    fn expire_notice(&mut self) {
        if self
            .status
            .notice
            .as_ref()
            .is_some_and(|n| n.1.elapsed() > RESET_CONFIRM)
        {
            self.status.notice = None;
        }
    }

    /// Counts a frame read, and a skipped one as skipped; frames without colour put their notice
    /// up (and the first of them its warning in the log).
    fn add_frame(&mut self, index: u64, skip: Skip) {
        self.summary.frames += 1;
        show_colour_notice(&mut self.status, skip == Skip::WithoutColour);
        match skip {
            Skip::WithoutColour => {
                if self.summary.skipped_without_colour == 0 {
                    log::warn!("frame {index} {WITHOUT_COLOUR}");
                }
                self.summary.skipped_without_colour += 1;
            }
            Skip::OutOfFocus => self.summary.skipped_out_of_focus += 1,
            Skip::No => {}
        }
    }

    /// Records counted cells; alerts go to the log, the screen and the summary.
    fn record_all(&mut self, cells: Vec<CountedCell>) -> Result<(), PipelineError> {
        for cell in cells {
            self.summary.counted_now += 1;
            self.summary.counted_views.push((
                cell.track_id,
                cell.view.frame_index,
                cell.view.centre,
            ));
            if let Some(a) = self.record(&cell)? {
                log::warn!("{a}");
                self.status.alerts.push(a.clone());
                self.summary.alerts.push(a);
            }
        }
        Ok(())
    }

    /// Journals a counted cell, adds it to the tally, stores its crop; returns an alert if it is one.
    fn record(&mut self, cell: &CountedCell) -> Result<Option<String>, PipelineError> {
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
        self.journal.append(&entry)?;
        self.tally.apply(&entry)?;
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

    fn notice(&mut self, text: String) {
        set_notice(&mut self.status, text);
    }

    /// Carries out one operator command; returns true when the operator quits.
    fn apply(&mut self, cmd: OperatorCommand) -> Result<bool, PipelineError> {
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
            OperatorCommand::Reset => self.reset()?,
            OperatorCommand::Quit => return Ok(true),
        }
        Ok(false)
    }

    /// The first request asks for confirmation; a second within `RESET_CONFIRM` starts the count
    /// over, keeping the old journal under a dated name.
    fn reset(&mut self) -> Result<(), PipelineError> {
        let confirmed = self
            .reset_asked
            .is_some_and(|t| t.elapsed() <= RESET_CONFIRM);
        if !confirmed {
            self.reset_asked = Some(Instant::now());
            self.notice("Reset? press RESET again to confirm".into());
            return Ok(());
        }
        self.reset_asked = None;
        let (tally, kept) = self.journal.start_over(self.profile.count_target)?;
        // The new journal names its source too, so a crash after the reset resumes in place.
        self.journal_start()?;
        self.tally = tally;
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
        let classifier = self.classifier;
        let classes = &classifier.manifest().classes;
        let entry = match class {
            Some(c) if c != REVIEW && !classes.contains(&c) => {
                self.notice(format!(
                    "{c} is not a class of this model ({}, or REVIEW)",
                    classes.join(" ")
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

    /// Ends the run: writes the report and returns the summary, or says why no frame was read.
    fn close(self, started: Instant, localizer: &str) -> Result<RunSummary, PipelineError> {
        let model = self.model();
        let Count {
            tally,
            mut summary,
            status,
            first_bad_frame,
            report_dir,
            ..
        } = self;
        if summary.frames == 0 {
            return Err(PipelineError::NoFrames(
                first_bad_frame.unwrap_or_else(|| "the source gave no frames".into()),
            ));
        }
        summary.seconds = started.elapsed().as_secs_f64();
        let diff = Differential::from_tally(
            &tally,
            summary.frames,
            summary.skipped(),
            model,
            localizer,
            &status.source,
        );
        report::write_report(report_dir, &tally, &diff)?;
        summary.tally = tally;
        Ok(summary)
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
