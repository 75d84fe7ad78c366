//! The `marrowscope` command line: the live loop (`run`, the default demo), `classify`, `eval`,
//! `detect-eval`, `bench` and `check`. Errors end here as one human line and a non-zero exit.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand};
use marrowscope::annotate;
use marrowscope::classify::{Classifier, ModelManifest};
use marrowscope::config::BoardProfile;
use marrowscope::display::open_display;
use marrowscope::eval::{self, ConfusionCounter, DetectionCounts, LabelFormat};
use marrowscope::localize::Localizer;
use marrowscope::operator::{AllControls, Controls, KeyControls, KEY_HELP};
use marrowscope::pipeline::{self, RunOptions};
use marrowscope::scale::{self, ScaleChoice};
use marrowscope::slide::{SlideOptions, VirtualSlideSource};
use marrowscope::source::{read_crop, read_rgb, FrameSource, ReplaySource, SourceSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "marrowscope",
    version,
    about = "Live bone-marrow differential counting at the microscope"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// What `run` is given (also the default command, with everything left to the profile).
#[derive(Args, Default)]
struct RunArgs {
    /// Board profile (RON); default: the built-in desktop profile.
    #[arg(long)]
    board: Option<PathBuf>,
    /// v4l:/dev/videoN, dir:PATH (its pictures in name order, numbers by value: frame2 before
    /// frame10), file:PATH or virtual:SEED.
    #[arg(long)]
    source: Option<String>,
    /// Stop after N frames (at least 1).
    #[arg(long, value_parser = parse_at_least_one, allow_negative_numbers = true)]
    frames: Option<u64>,
    /// Report and journal folder (default: the profile's report_dir).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write every frame with its cell boxes drawn into this folder.
    #[arg(long)]
    annotate: Option<PathBuf>,
    /// Replay pace for dir:/file: sources, frames per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fps, allow_negative_numbers = true)]
    fps: f32,
    /// Model manifest (RON), overriding the profile's.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Find the cells with this learned detector (manifest, e.g. models/wbc-detector.ron);
    /// default: the profile's detector for camera and file sources.
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Find the cells with the classical localizer (nuclear stain) even where the profile names a
    /// detector.
    #[arg(long, conflicts_with = "detector")]
    classical: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The live loop: source -> localize -> classify -> count -> display (default: demo on the virtual slide).
    Run(RunArgs),
    /// Classify single-cell crops: one line (or JSON object with --json) per image.
    Classify {
        /// Crop pictures (JPEG, PNG, BMP or TIFF), one cell each, or folders of them (each folder's
        /// pictures in name order with numbers by value, not its sub-folders).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// One JSON object per crop instead of a text line.
        #[arg(long)]
        json: bool,
        /// Board profile (RON); default: the built-in desktop profile.
        #[arg(long)]
        board: Option<PathBuf>,
        /// Model manifest (RON); default: the board profile's model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Scale of the crops: `auto` (measured from red cells; crops without enough red cells are
        /// taken to cover the model's field) or µm per pixel.
        #[arg(long, default_value = "auto", allow_negative_numbers = true)]
        um_per_px: ScaleChoice,
    },
    /// Classifier metrics on a folder with one sub-folder of crops per class code.
    Eval {
        /// Folder with one sub-folder of crops per class code (e.g. LYT/, BLA/).
        #[arg(long)]
        data: PathBuf,
        /// The report as one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Board profile (RON); default: the built-in desktop profile.
        #[arg(long)]
        board: Option<PathBuf>,
        /// Model manifest (RON); default: the board profile's model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Scale of the crops: `auto` (measured from red cells across the set) or µm per pixel.
        #[arg(long, default_value = "auto", allow_negative_numbers = true)]
        um_per_px: ScaleChoice,
    },
    /// White-cell localization precision/recall/F1 at IoU >= 0.5 on labelled frames.
    DetectEval {
        /// Folder of whole frames.
        #[arg(long)]
        images: PathBuf,
        /// Folder of label files, one per frame with the frame's name (.txt for yolo, .xml for voc).
        #[arg(long)]
        labels: PathBuf,
        /// Label format: yolo or voc (any letter case).
        #[arg(long)]
        format: String,
        /// The report as one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Micrometres per pixel of the frames (default: the profile's).
        #[arg(long, value_parser = scale::parse_um_per_px, allow_negative_numbers = true)]
        um_per_px: Option<f32>,
        /// Board profile (RON); default: the built-in desktop profile.
        #[arg(long)]
        board: Option<PathBuf>,
        /// Write each frame with its found boxes drawn (those matching no expert box labelled FP, missed expert boxes in magenta) into this folder as <frame name>.png.
        #[arg(long)]
        annotate: Option<PathBuf>,
        /// Find the cells with this learned detector (manifest, e.g. models/wbc-detector.ron);
        /// default: the profile's detector.
        #[arg(long)]
        detector: Option<PathBuf>,
        /// Score the classical localizer (nuclear stain) even where the profile names a detector.
        #[arg(long, conflicts_with = "detector")]
        classical: bool,
    },
    /// Timings and memory of each stage (one core); with --soak, the soak test instead.
    Bench {
        /// The report as one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Board profile (RON); default: the built-in desktop profile.
        #[arg(long)]
        board: Option<PathBuf>,
        /// Model manifest (RON); default: the board profile's model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Virtual frames (1280x960) for the end-to-end figure (at least 1).
        #[arg(long, default_value_t = 200, value_parser = parse_at_least_one, allow_negative_numbers = true)]
        frames: u64,
        /// Batch sizes for the classification timing.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1,8,32",
            allow_negative_numbers = true
        )]
        batches: Vec<usize>,
        /// Soak test: run the live loop for this many virtual frames (640x480) and read resident
        /// memory as it goes.
        #[arg(long, value_parser = parse_at_least_one, allow_negative_numbers = true)]
        soak: Option<u64>,
        /// Soak test: read resident memory every this many frames (at least 1).
        #[arg(long, default_value_t = 1000, value_parser = parse_at_least_one, allow_negative_numbers = true)]
        soak_every: u64,
        /// Also time localization with this learned detector (manifest, e.g.
        /// models/wbc-detector.ron); default: the profile's detector.
        #[arg(long)]
        detector: Option<PathBuf>,
    },
    /// Count seeded pans of the virtual slide through the live loop and compare with the truth:
    /// cells counted once, twice, missed, per true class.
    CountEval {
        /// How many pans (seeds first_seed, first_seed+1, ...; at least 1).
        #[arg(long, default_value_t = 5, value_parser = parse_at_least_one, allow_negative_numbers = true)]
        seeds: u64,
        /// Seed of the first pan.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        first_seed: u64,
        /// The report as one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Board profile (RON); default: the built-in desktop profile.
        #[arg(long)]
        board: Option<PathBuf>,
        /// Where the pans' reports go (default: a temporary folder, removed afterwards).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Find the cells with this learned detector (manifest) instead of the classical localizer.
        #[arg(long)]
        detector: Option<PathBuf>,
    },
    /// Parse and validate a board profile and the model it names.
    Check {
        /// Board profile (RON) to check.
        #[arg(long)]
        board: PathBuf,
    },
}

/// A count given on the command line (frames, pans, ...): a whole number, at least 1.
fn parse_at_least_one(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// A replay pace given on the command line: frames per second, 0 for as fast as possible.
fn parse_fps(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a pace in frames per second (0 or more; 0 = as fast as possible)"
        )),
    }
}

fn main() {
    let process_start = std::time::Instant::now();
    PROCESS_START.get_or_init(|| process_start);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("marrowscope: error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, leaving out a cause whose text the line already holds
/// (our error types print their I/O cause themselves).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        None => run_cmd(RunArgs::default()),
        Some(Command::Run(args)) => run_cmd(args),
        Some(Command::Classify {
            images,
            json,
            board,
            model,
            um_per_px,
        }) => classify_cmd(&images, json, board, model, um_per_px),
        Some(Command::Eval {
            data,
            json,
            board,
            model,
            um_per_px,
        }) => eval_cmd(&data, json, board, model, um_per_px),
        Some(Command::DetectEval {
            images,
            labels,
            format,
            json,
            um_per_px,
            board,
            annotate,
            detector,
            classical,
        }) => detect_eval_cmd(
            &images,
            &labels,
            &format,
            json,
            um_per_px,
            board,
            annotate,
            LocalizerChoice {
                detector,
                classical,
            },
        ),
        Some(Command::Bench {
            json,
            board,
            model,
            frames,
            batches,
            soak,
            soak_every,
            detector,
        }) => match soak {
            Some(soak) => soak_cmd(json, board, model, soak, soak_every),
            None => bench_cmd(json, board, model, frames, batches, detector),
        },
        Some(Command::CountEval {
            seeds,
            first_seed,
            json,
            board,
            report,
            detector,
        }) => count_eval_cmd(first_seed, seeds, json, board, report, detector),
        Some(Command::Check { board }) => check_cmd(&board),
    }
}

/// The learned white-cell detector a `--detector` option names, loaded once.
fn load_detector(
    path: Option<PathBuf>,
) -> Result<Option<std::sync::Arc<marrowscope::detect::WbcDetector>>> {
    let Some(path) = path else { return Ok(None) };
    let detector = marrowscope::detect::WbcDetector::load(&path)?;
    log::info!(
        "white cells found by {} ({})",
        detector.manifest().name,
        path.display()
    );
    Ok(Some(std::sync::Arc::new(detector)))
}

/// What the command line says about the localizer: `--detector RON` or `--classical`.
struct LocalizerChoice {
    detector: Option<PathBuf>,
    classical: bool,
}

impl LocalizerChoice {
    /// The detector that finds the cells: the one `--detector` names; none with `--classical`
    /// or on a drawn source (the virtual slide, which the detector was not trained on);
    /// otherwise the profile's.
    fn detector_path(self, profile: &BoardProfile, drawn_source: bool) -> Option<PathBuf> {
        if self.detector.is_some() {
            self.detector
        } else if self.classical || drawn_source {
            None
        } else {
            profile.detector_path()
        }
    }

    fn load(
        self,
        profile: &BoardProfile,
        drawn_source: bool,
    ) -> Result<Option<std::sync::Arc<marrowscope::detect::WbcDetector>>> {
        let detector = load_detector(self.detector_path(profile, drawn_source))?;
        if detector.is_none() {
            log::info!("white cells found by the classical localizer (nuclear stain)");
        }
        Ok(detector)
    }
}

fn load_profile(board: Option<PathBuf>) -> Result<BoardProfile> {
    match board {
        Some(path) => Ok(BoardProfile::load(&path)?),
        None => Ok(BoardProfile::desktop_default()),
    }
}

fn manifest_path(profile: &BoardProfile, model: Option<PathBuf>) -> PathBuf {
    model.unwrap_or_else(|| profile.model_path())
}

/// Cells per class on the virtual slide.
type TruthCounts = BTreeMap<String, u32>;

/// Opens a source; for the virtual slide also returns its truth counts.
fn open_source(
    spec: &str,
    profile: &BoardProfile,
    fps: f32,
) -> Result<(Box<dyn FrameSource>, Option<TruthCounts>)> {
    Ok(match SourceSpec::parse(spec)? {
        SourceSpec::Virtual(seed) => {
            let slide = VirtualSlideSource::new(SlideOptions::new(seed))?;
            let truth = slide.slide().truth_counts();
            (Box::new(slide), Some(truth))
        }
        SourceSpec::Dir(p) => (Box::new(ReplaySource::dir(&p)?.with_fps(fps)), None),
        SourceSpec::File(p) => (Box::new(ReplaySource::file(&p)?.with_fps(fps)), None),
        SourceSpec::V4l(p) => (open_camera(&p, profile)?, None),
    })
}

/// The camera, reopened with backoff (0.5 s doubling to 8 s) when it vanishes mid-run. The first
/// open must succeed, so a wrong device path is an error at once.
#[cfg(target_os = "linux")]
fn open_camera(path: &Path, profile: &BoardProfile) -> Result<Box<dyn FrameSource>> {
    use marrowscope::reconnect::{Backoff, Reconnecting};
    use marrowscope::source::V4lCamera;
    let first = V4lCamera::open(path, &profile.camera)?;
    let (path, cfg) = (path.to_path_buf(), profile.camera.clone());
    let reopen =
        Box::new(move || V4lCamera::open(&path, &cfg).map(|c| Box::new(c) as Box<dyn FrameSource>));
    let backoff = Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(8),
    );
    Ok(Box::new(Reconnecting::new(
        Box::new(first),
        reopen,
        backoff,
    )))
}

#[cfg(not(target_os = "linux"))]
fn open_camera(path: &Path, _profile: &BoardProfile) -> Result<Box<dyn FrameSource>> {
    bail!("{}: V4L2 cameras need Linux", path.display())
}

fn run_cmd(args: RunArgs) -> Result<()> {
    let RunArgs {
        board,
        source,
        frames,
        report,
        annotate,
        fps,
        model,
        detector,
        classical,
    } = args;
    let mut profile = load_profile(board)?;
    if let Some(dir) = &annotate {
        annotate::prepare_annotate_dir(dir)?;
    }
    let spec = source.unwrap_or_else(|| profile.default_source.clone());
    let (mut src, truth) = open_source(&spec, &profile, fps)?;
    let classifier = Classifier::load(&manifest_path(&profile, model), profile.batch)?;
    let manifest = classifier.manifest();
    profile.fit_alert_classes(&manifest.name, &manifest.classes)?;
    log::info!("source: {}", src.describe());
    log::info!(
        "model: {} ({})",
        classifier.manifest().name,
        classifier.model_path().display()
    );
    let opts = RunOptions {
        max_frames: frames,
        report_dir: report.unwrap_or_else(|| PathBuf::from(&profile.report_dir)),
        annotate,
        progress: true,
        detector: LocalizerChoice {
            detector,
            classical,
        }
        // Only the virtual slide, a drawn source, comes with a truth.
        .load(&profile, truth.is_some())?,
    };
    marrowscope::report::make_folder(&opts.report_dir, "the report and journal")?;
    let mut display = open_display(&profile.display, &opts.report_dir)?;
    let mut controls = open_controls(&profile)?;
    let station = pipeline::Station {
        display: display.as_mut(),
        controls: &mut controls,
    };
    let summary = pipeline::run(&profile, src.as_mut(), &classifier, station, &opts)?;
    print_differential(&summary, &opts.report_dir);
    if let Some(truth) = truth {
        let total: u32 = truth.values().sum();
        let listed: Vec<String> = truth.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!("Virtual slide truth: {total} cells ({})", listed.join(", "));
    }
    Ok(())
}

/// Keys on the terminal, and the profile's buttons when it has them.
fn open_controls(profile: &BoardProfile) -> Result<AllControls> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprintln!("{KEY_HELP}");
    }
    let mut controls: Vec<Box<dyn Controls>> = vec![Box::new(KeyControls::from_stdin())];
    if let Some(cfg) = &profile.buttons {
        controls.push(open_buttons(cfg)?);
    }
    Ok(AllControls(controls))
}

#[cfg(target_os = "linux")]
fn open_buttons(cfg: &marrowscope::config::ButtonsConfig) -> Result<Box<dyn Controls>> {
    Ok(Box::new(marrowscope::operator::open_buttons(cfg)?))
}

#[cfg(not(target_os = "linux"))]
fn open_buttons(cfg: &marrowscope::config::ButtonsConfig) -> Result<Box<dyn Controls>> {
    bail!("buttons on {}: GPIO needs Linux", cfg.gpio_chip)
}

/// "1 frame", "2 frames".
fn frames(n: u64) -> String {
    match n {
        1 => "1 frame".into(),
        n => format!("{n} frames"),
    }
}

fn print_differential(s: &pipeline::RunSummary, report_dir: &Path) {
    let t = &s.tally;
    println!(
        "Differential count: {} cells ({} classified, {} for review), {} frames in {:.1} s, {} skipped",
        t.total(),
        t.classified(),
        t.review(),
        s.frames,
        s.seconds,
        s.skipped()
    );
    for (n, why) in [
        (
            s.skipped_out_of_focus,
            "out of focus or smeared by a stage move",
        ),
        (s.corrupt_frames, "unreadable (each named in a warning)"),
        (
            s.skipped_without_colour,
            "without colour: is the camera monochrome, or set to a grey format?",
        ),
    ] {
        if n > 0 {
            println!("  skipped: {} {why}", frames(n));
        }
    }
    if s.source_losses > 0 {
        println!(
            "  the camera was lost {} time(s) and reconnected; the count went on",
            s.source_losses
        );
    }
    if s.resumed > 0 {
        println!(
            "  ({} cells resumed from the journal, {} counted now)",
            s.resumed, s.counted_now
        );
    }
    let mut counts: Vec<_> = t.counts().into_iter().collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    for (class, n) in counts {
        let pct = if class == marrowscope::classify::REVIEW {
            String::new()
        } else {
            format!("{:5.1} %", t.percent(&class))
        };
        println!("  {class:<7}{n:>5}  {pct}");
    }
    let (blast, ci) = t.blast_percent();
    match ci {
        Some(i) => println!(
            "  blasts {blast:.1} % (95% CI {:.1}-{:.1} %)",
            i.low, i.high
        ),
        None => println!("  blasts: no classified cells"),
    }
    match t.me_ratio() {
        Some(r) => println!("  M:E ratio {r:.2}"),
        None => println!("  M:E ratio n/a (no erythroid precursors counted)"),
    }
    for a in &s.alerts {
        println!("  {a}");
    }
    if s.corrections > 0 {
        println!("  {} operator corrections (corrections.csv)", s.corrections);
    }
    for kept in &s.archived_journals {
        println!(
            "  an earlier count was reset; its journal is kept in {}",
            kept.display()
        );
    }
    println!("Report: {}", report_dir.display());
}

/// Minimum number of measured red cells before a scale estimate is trusted.
const MIN_RED_CELLS: usize = 20;

/// The scale of a set of crops: fixed, or measured from their red cells (None: crops are taken
/// to cover the model's field already, or there are none to measure).
fn crop_scale(choice: ScaleChoice, sample: &[image::RgbImage]) -> Option<f32> {
    match choice {
        ScaleChoice::Fixed(v) => Some(v),
        ScaleChoice::Auto if sample.is_empty() => None,
        ScaleChoice::Auto => {
            let est = scale::estimate_um_per_px(sample, MIN_RED_CELLS);
            match est {
                Some(um) => log::info!("crop scale measured from red cells: {um:.3} µm/px"),
                None => log::info!(
                    "too few red cells to measure scale: crops taken to cover the model's field"
                ),
            }
            est
        }
    }
}

fn fit(crop: image::RgbImage, um_per_px: Option<f32>, classifier: &Classifier) -> image::RgbImage {
    match um_per_px {
        Some(um) => scale::fit_to_field(&crop, um, classifier.manifest().crop_um),
        None => crop,
    }
}

/// How many crops `classify` measures the scale of a set from (`--um-per-px auto`).
const SCALE_SAMPLE: usize = 200;

/// One line of `classify`: the file, its class (or the review bucket) and the top probability.
fn print_class(
    path: &Path,
    p: &marrowscope::classify::Prediction,
    classifier: &Classifier,
    json: bool,
) {
    let label = classifier.label(p);
    if json {
        let obj = serde_json::json!({
            "file": path.display().to_string(),
            "class": label,
            "probability": p.probability,
            "top_class": classifier.manifest().classes[p.top],
        });
        println!("{obj}");
    } else {
        println!("{}\t{label}\t{:.3}", path.display(), p.probability);
    }
}

/// The crops `classify` was given: each picture as named, and each folder's pictures in name
/// order; a folder without pictures is an error saying what it holds instead.
fn crops_named(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut crops = Vec::new();
    for path in paths {
        if path.is_dir() {
            let pictures =
                marrowscope::folder::files_of_kind(path, &marrowscope::source::IMAGE_FILES)
                    .map_err(|message| anyhow!("{}: {message}", path.display()))?;
            crops.extend(pictures);
        } else {
            crops.push(path.clone());
        }
    }
    Ok(crops)
}

fn classify_cmd(
    images: &[PathBuf],
    json: bool,
    board: Option<PathBuf>,
    model: Option<PathBuf>,
    um_per_px: ScaleChoice,
) -> Result<()> {
    let images = crops_named(images)?;
    let profile = load_profile(board)?;
    let classifier = Classifier::load(&manifest_path(&profile, model), profile.batch)?;
    let um = match um_per_px {
        ScaleChoice::Auto => {
            let sample: Vec<image::RgbImage> = images
                .iter()
                .take(SCALE_SAMPLE)
                .filter_map(|path| read_crop(path).ok())
                .collect();
            crop_scale(um_per_px, &sample)
        }
        ScaleChoice::Fixed(um) => Some(um),
    };
    // A batch at a time, so that thousands of crops fit a board's memory.
    let mut failures = Vec::new();
    let bar = indicatif::ProgressBar::new(images.len() as u64);
    for chunk in images.chunks(profile.batch.max(1)) {
        bar.inc(chunk.len() as u64);
        let (mut read, mut crops) = (Vec::new(), Vec::new());
        for path in chunk {
            match read_crop(path) {
                Ok(crop) => {
                    read.push(path);
                    crops.push(fit(crop, um, &classifier));
                }
                Err(e) => {
                    log::warn!("{e}");
                    failures.push(e.to_string());
                }
            }
        }
        for (path, p) in read.into_iter().zip(classifier.classify(&crops)?) {
            bar.suspend(|| print_class(path, &p, &classifier, json));
        }
    }
    bar.finish_and_clear();
    match failures.len() {
        0 => Ok(()),
        1 => bail!("{}", failures[0]),
        n => bail!("{} (and {} more images not classified)", failures[0], n - 1),
    }
}

fn eval_cmd(
    data: &Path,
    json: bool,
    board: Option<PathBuf>,
    model: Option<PathBuf>,
    um_per_px: ScaleChoice,
) -> Result<()> {
    let profile = load_profile(board)?;
    let classifier = Classifier::load(&manifest_path(&profile, model), profile.batch)?;
    let classes = &classifier.manifest().classes;
    let folders = eval::spell_as_model(eval::class_folders(data)?, classes);
    eval::require_a_known_class(data, &folders, classes)?;
    let sample: Vec<image::RgbImage> = folders
        .iter()
        .flat_map(|(_, files)| files.iter().step_by((files.len() / 12).max(1)).take(12))
        .filter_map(|f| read_crop(f).ok())
        .collect();
    let um = crop_scale(um_per_px, &sample);
    let total: usize = folders.iter().map(|(_, f)| f.len()).sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "eval {pos}/{len} [{bar:30}] {eta}",
    )?);
    let mut counter = ConfusionCounter::default();
    let (mut unreadable, mut first_refusal) = (Vec::new(), None);
    let batch = profile.batch.max(1);
    for (class, files) in &folders {
        for chunk in files.chunks(batch) {
            let mut crops = Vec::with_capacity(chunk.len());
            for f in chunk {
                match read_crop(f) {
                    Ok(c) => crops.push(fit(c, um, &classifier)),
                    Err(e) => {
                        log::warn!("{e}");
                        first_refusal.get_or_insert_with(|| e.to_string());
                        unreadable.push(f.display().to_string());
                    }
                }
            }
            for p in classifier.classify(&crops)? {
                counter.add(class, &classifier.manifest().classes[p.top], p.review);
            }
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    if let (0, Some(first)) = (total - unreadable.len(), first_refusal) {
        bail!(
            "{}: none of its {total} crops could be scored; the first: {first}",
            data.display()
        );
    }
    let report = counter.report(&classifier.manifest().classes, unreadable);
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "n={} accuracy={:.4} macro_f1={:.4} (top-1); review {:.1} % of crops, accuracy of the rest {:.4}",
        report.n,
        report.accuracy,
        report.macro_f1,
        100.0 * report.review_rate,
        report.accepted_accuracy
    );
    for (c, m) in &report.classes {
        println!(
            "  {c:<5} precision {:.3} recall {:.3} f1 {:.3} support {}",
            m.precision, m.recall, m.f1, m.support
        );
    }
    if !report.unknown_classes.is_empty() {
        println!(
            "  classes the model does not know (counted wrong): {}",
            report.unknown_classes.join(", ")
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn detect_eval_cmd(
    images: &Path,
    labels: &Path,
    format: &str,
    json: bool,
    um_per_px: Option<f32>,
    board: Option<PathBuf>,
    annotate: Option<PathBuf>,
    choice: LocalizerChoice,
) -> Result<()> {
    let profile = load_profile(board)?;
    let Some(format) = LabelFormat::parse(format) else {
        bail!("unknown label format {format:?}: use yolo or voc");
    };
    eval::require_folder(images, "--images, the frames")?;
    eval::require_folder(labels, "--labels, the label files")?;
    eval::require_label_files(labels, format)?;
    if let Some(dir) = &annotate {
        annotate::prepare_annotate_dir(dir)?;
    }
    let um = um_per_px.unwrap_or(profile.optics.um_per_px);
    let localizer = detection_localizer(&profile, choice)?;
    let files = eval::frames_in(images)?;
    let wbc_class = match format {
        LabelFormat::Yolo => eval::yolo_white_cell_class(labels)?,
        LabelFormat::Voc => 0,
    };
    eval::require_white_cell_boxes(labels, &files, format, wbc_class)?;
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    let mut counts = DetectionCounts::default();
    let mut skipped = 0;
    let mut frames_with_errors = Vec::new();
    for f in &files {
        bar.inc(1);
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let frame = read_rgb(f)?;
        let expert = eval::read_expert_boxes(labels, stem, format, wbc_class, frame.dimensions())?;
        let truth = &expert.wbc;
        let loc = localizer.localize(&frame, um);
        if loc.out_of_focus {
            skipped += 1;
        }
        let boxes: Vec<_> = loc.cells.iter().map(|c| c.bbox).collect();
        let whole: Vec<_> = loc.cells.iter().map(|c| c.complete).collect();
        let dims = frame.dimensions();
        let unpaired = counts.add_frame(&boxes, &whole, truth, &expert.other, dims, 0.5);
        if let Some(errors) = unpaired.errors(stem, &boxes, truth) {
            log::debug!(
                "{}: {} false positive(s), {} missed",
                f.display(),
                errors.false_positives.len(),
                errors.missed.len()
            );
            frames_with_errors.push(errors);
        }
        if let Some(dir) = &annotate {
            annotate::annotate_evaluated_frame(dir, stem, &frame, &loc, &unpaired, truth)?;
        }
    }
    bar.finish_and_clear();
    let report = counts.report(skipped, frames_with_errors);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_detection_report(&report);
    }
    Ok(())
}

/// The learned detector's (or the classical) localizer that `detect-eval` scores, with the crop
/// size of the profile's classifier (20 µm where its manifest cannot be read: crops are not cut).
fn detection_localizer(profile: &BoardProfile, choice: LocalizerChoice) -> Result<Localizer> {
    let manifest = ModelManifest::load(&profile.model_path()).ok();
    let crop_um = manifest.map_or(20.0, |m| m.crop_um);
    let localizer = Localizer::new(profile.localizer.clone(), crop_um);
    Ok(match choice.load(profile, false)? {
        Some(detector) => localizer.with_detector(detector),
        None => localizer,
    })
}

/// `detect-eval`'s report as text: one line for each of its scores.
fn print_detection_report(report: &eval::DetectionReport) {
    println!(
        "frames={} precision={:.4} recall={:.4} f1={:.4} (tp {} fp {} fn {}, {} out of focus)",
        report.frames,
        report.precision,
        report.recall,
        report.f1,
        report.true_positives,
        report.false_positives,
        report.false_negatives,
        report.skipped_out_of_focus
    );
    let v = &report.in_view;
    println!(
        "cells clear of the frame edge (those that get classified): precision={:.4} recall={:.4} f1={:.4} \
         ({} of {} expert boxes found, {} of {} found boxes paired)",
        v.precision,
        v.recall,
        v.f1,
        v.counts.expert_found,
        v.counts.expert,
        v.counts.found_paired,
        v.counts.found
    );
    println!(
        "{} frames with a false or missed box (listed, with the boxes, by --json)",
        report.frames_with_errors.len()
    );
    println!(
        "95 % intervals (Wilson, each box one trial): precision {}, recall {}; cells clear of \
         the frame edge: precision {}, recall {}",
        interval_text(report.precision_ci95),
        interval_text(report.recall_ci95),
        interval_text(v.precision_ci95),
        interval_text(v.recall_ci95)
    );
    let t = &report.touching;
    println!(
        "cells touching a neighbour (expert boxes that overlap or meet): recall={} ({} of {} \
         found on their own; interval {}); {} false box(es) around two expert cells or more",
        if t.counts.expert == 0 {
            "n/a".to_string()
        } else {
            format!("{:.4}", t.recall)
        },
        t.counts.expert_found,
        t.counts.expert,
        interval_text(t.recall_ci95),
        t.counts.merged
    );
    let c = &report.consistent;
    println!(
        "white cells the annotation agrees on ({} expert box(es) also boxed as another class set \
         aside, {} second box(es) on one cell): precision={:.4} recall={:.4} f1={:.4} ({} of {} \
         found, {} of {} found boxes paired; intervals {}, {})",
        c.counts.also_another_class,
        c.counts.second_boxes,
        c.precision,
        c.recall,
        c.f1,
        c.counts.expert_found,
        c.counts.expert,
        c.counts.found_paired,
        c.counts.found,
        interval_text(c.precision_ci95),
        interval_text(c.recall_ci95)
    );
}

/// An interval of a proportion as `low-high` to three places; `n/a` when there was nothing to count.
fn interval_text(interval: Option<marrowscope::tally::Interval>) -> String {
    interval.map_or("n/a".into(), |i| format!("{:.3}-{:.3}", i.low, i.high))
}

/// When `main` began, for the time from start to the first counted cell.
static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn bench_cmd(
    json: bool,
    board: Option<PathBuf>,
    model: Option<PathBuf>,
    frames: u64,
    batches: Vec<usize>,
    detector: Option<PathBuf>,
) -> Result<()> {
    let profile = load_profile(board)?;
    let opts = marrowscope::bench::BenchOptions {
        frames,
        batches,
        process_start: *PROCESS_START.get_or_init(std::time::Instant::now),
        detector: detector.or_else(|| profile.detector_path()),
    };
    let r = marrowscope::bench::run_bench(&profile, &manifest_path(&profile, model), &opts)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("{} on {} ({} thread)", r.model, r.machine, r.threads);
    println!("  model load + optimize: {:.1} ms", r.model_load_ms);
    match r.first_count_ms {
        Some(t) => println!(
            "  process start to first counted cell: {t:.0} ms ({} frames)",
            r.frames_to_first_count
        ),
        None => println!("  no cell was counted in {} frames", r.end_to_end_frames),
    }
    for c in &r.classify {
        println!(
            "  classify, batch {}: {:.2} ms per crop ({:.1} ms per batch)",
            c.batch, c.ms_per_crop, c.ms_per_batch
        );
    }
    println!(
        "  localize (classical): {:.2} ms per megapixel at {}x{}, {:.2} at 640x480",
        r.localize_ms_per_megapixel,
        r.frame_width,
        r.frame_height,
        r.localize_640x480_ms_per_megapixel
    );
    if let (Some(d), Some(small)) = (
        r.detector_localize_ms_per_megapixel,
        r.detector_localize_640x480_ms_per_megapixel,
    ) {
        println!(
            "  localize with the learned detector: {d:.2} ms per megapixel at {}x{}, {small:.2} at 640x480",
            r.frame_width, r.frame_height
        );
    }
    if let Some(at_profile) = r.detector_localize_at_profile_ms_per_megapixel {
        println!(
            "  localize with the learned detector at the profile's {} um/px and its camera's frame size: {at_profile:.2} ms per megapixel at {}x{}",
            r.profile_um_per_px, r.profile_frame_width, r.profile_frame_height
        );
    }
    println!(
        "  end to end at {}x{}: {:.1} frames/s over {} frames ({:.1} cells and {:.1} crops classified per frame; synthesizing a frame took {:.1} ms more)",
        r.frame_width,
        r.frame_height,
        r.end_to_end_fps,
        r.end_to_end_frames,
        r.cells_per_frame,
        r.crops_classified_per_frame,
        r.frame_synthesis_ms
    );
    if let Some(mb) = r.peak_rss_mb {
        println!("  peak resident memory after the end-to-end run: {mb:.1} MB");
    }
    Ok(())
}

fn soak_cmd(
    json: bool,
    board: Option<PathBuf>,
    model: Option<PathBuf>,
    frames: u64,
    every: u64,
) -> Result<()> {
    let profile = load_profile(board)?;
    let classifier = Classifier::load(&manifest_path(&profile, model), profile.batch)?;
    let dir = std::env::temp_dir().join(format!("marrowscope-soak-{}", std::process::id()));
    let result = marrowscope::bench::run_soak(&profile, &classifier, frames, every, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let r = result?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "soak: {} frames in {:.0} s ({:.1} frames/s), {} cells counted",
        r.frames,
        r.seconds,
        r.frames as f64 / r.seconds.max(1e-9),
        r.counted
    );
    println!("frame,seconds,rss_mb");
    for s in &r.samples {
        println!("{},{:.1},{:.2}", s.frame, s.seconds, s.rss_mb);
    }
    println!(
        "resident memory after warm-up {:.1} MB, at the end {:.1} MB, peak {:.1} MB",
        r.rss_after_warmup_mb,
        r.rss_end_mb,
        r.peak_rss_mb.unwrap_or(f64::NAN)
    );
    Ok(())
}

fn check_cmd(board: &Path) -> Result<()> {
    let mut profile = BoardProfile::load(board)?;
    let classifier = Classifier::load(&profile.model_path(), profile.batch)?;
    let model = classifier.manifest();
    profile.fit_alert_classes(&model.name, &model.classes)?;
    let localizer = match load_detector(profile.detector_path())? {
        Some(d) => {
            let camera = (profile.camera.width, profile.camera.height);
            let field_um = marrowscope::detect::field_um(camera, profile.optics.um_per_px);
            if let Some(warning) = d.manifest().too_wide_warning(field_um) {
                eprintln!("warning: {}: detector {warning}", board.display());
            }
            format!(
                "detector {}, the camera's {field_um:.0} µm field read at {} px",
                d.manifest().name,
                d.manifest().input_side(Some(field_um))
            )
        }
        None => "classical localizer".to_string(),
    };
    println!(
        "{}: ok (board {:?}, model {} with {} classes, {:.3} µm/px, crop {:.1} µm, {localizer})",
        board.display(),
        profile.name,
        model.name,
        model.classes.len(),
        profile.optics.um_per_px,
        model.crop_um
    );
    Ok(())
}

fn count_eval_cmd(
    first_seed: u64,
    seeds: u64,
    json: bool,
    board: Option<PathBuf>,
    report: Option<PathBuf>,
    detector: Option<PathBuf>,
) -> Result<()> {
    use marrowscope::counteval::{pool, PanResult};
    let Some(last_seed) = first_seed.checked_add(seeds - 1) else {
        bail!(
            "--first-seed {first_seed} with --seeds {seeds} runs past the last seed, {}",
            u64::MAX
        );
    };
    let profile = load_profile(board)?;
    let classifier = Classifier::load(&profile.model_path(), profile.batch)?;
    let detector = load_detector(detector)?;
    let temp = std::env::temp_dir().join(format!("marrowscope-count-eval-{}", std::process::id()));
    let work = report.clone().unwrap_or_else(|| temp.clone());
    let pans = run_pans(
        &profile,
        &classifier,
        detector.as_ref(),
        first_seed..=last_seed,
        &work,
    );
    if report.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    let pans = pans?;
    let worst = |f: fn(&PanResult) -> f64| pans.iter().map(f).fold(0.0, f64::max);
    let summary = serde_json::json!({
        "pans": pans,
        "worst_total_error": worst(|p| p.total_error),
        "worst_class_error": worst(|p| p.worst_class_error),
        "worst_class_pp": worst(|p| p.worst_class_pp),
        "double_counts": pans.iter().map(|p| p.double_counts).sum::<u32>(),
        "missed": pans.iter().map(|p| p.missed).sum::<u32>(),
        "false_counts": pans.iter().map(|p| p.false_counts).sum::<u32>(),
        "truth_total": pans.iter().map(|p| p.truth_total).sum::<u32>(),
        "pooled": pool(&pans),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    print_pans(&pans, &summary);
    Ok(())
}

/// Pans over the virtual slide of each seed through the live loop, their reports under `work`,
/// with a progress bar.
fn run_pans(
    profile: &BoardProfile,
    classifier: &Classifier,
    detector: Option<&std::sync::Arc<marrowscope::detect::WbcDetector>>,
    seeds: std::ops::RangeInclusive<u64>,
    work: &Path,
) -> Result<Vec<marrowscope::counteval::PanResult>> {
    let bar = indicatif::ProgressBar::new(seeds.end() - seeds.start() + 1);
    let mut pans = Vec::new();
    for seed in seeds {
        bar.set_message(format!("pan {seed}"));
        let pan = marrowscope::counteval::evaluate_pan(profile, classifier, detector, seed, work);
        pans.push(pan?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(pans)
}

/// `count-eval`'s text: a line per pan, the worst pan, and all pans as one count.
fn print_pans(pans: &[marrowscope::counteval::PanResult], summary: &serde_json::Value) {
    println!("seed  frames  truth  counted  once  double  missed  false  total err  worst class err (pp)");
    for p in pans {
        println!(
            "{:>4}  {:>6}  {:>5}  {:>7}  {:>4}  {:>6}  {:>6}  {:>5}  {:>8.1}%  {:>8.1}% ({:.1})",
            p.seed,
            p.frames,
            p.truth_total,
            p.counted_total,
            p.counted_once,
            p.double_counts,
            p.missed,
            p.false_counts,
            100.0 * p.total_error,
            100.0 * p.worst_class_error,
            p.worst_class_pp
        );
    }
    println!(
        "worst over {} pans: total {:.1} %, class {:.1} % ({:.1} percentage points)",
        pans.len(),
        100.0 * summary["worst_total_error"].as_f64().unwrap_or(0.0),
        100.0 * summary["worst_class_error"].as_f64().unwrap_or(0.0),
        summary["worst_class_pp"].as_f64().unwrap_or(0.0)
    );
    let pooled = marrowscope::counteval::pool(pans);
    println!(
        "all {} pans as one count: total {:.2} %, worst class {:.1} % ({})",
        pans.len(),
        100.0 * pooled.total_error,
        100.0 * pooled.worst_class_error,
        pooled
            .class_error
            .iter()
            .map(|(class, e)| format!("{class} {:.1} %", 100.0 * e))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
