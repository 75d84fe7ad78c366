//! Measuring the pipeline against expert labels: classifier metrics on folders of labelled crops
//! (accuracy, per-class precision/recall/F1, macro-F1, confusion) and white-cell localization
//! precision/recall/F1 at IoU >= 0.5 on frames with YOLO or Pascal VOC boxes, over all boxes, over
//! those clear of the frame edge, and over the cells touching a neighbour.

use crate::folder::{FileKind, NotAFolder};
use crate::localize::BoxPx;
use crate::source::is_image_file;
use crate::tally::{wilson_95, Interval};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors while reading evaluation data.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    /// A label that cannot be read, at its line and column (both from 1).
    #[error("{path}:{line}:{column}: {message}")]
    Label {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Checks, before any work, that `path`, given as `what` (e.g. "--labels, the label files"), is a
/// folder: a missing one or a file is named as such, not as an OS error on the first file inside it.
pub fn require_folder(path: &Path, what: &str) -> Result<(), EvalError> {
    let message = match crate::folder::check(path) {
        Ok(()) => return Ok(()),
        Err(NotAFolder::File) => format!("a file, not a folder: {what} must be a folder"),
        Err(NotAFolder::Missing) => format!("no such folder ({what})"),
    };
    Err(EvalError::Data {
        path: path.display().to_string(),
        message,
    })
}

/// Class folders under a root: (class code, image files found recursively), sorted by code.
/// Accepts both `ROOT/CODE/*.jpg` and the published Matek layout `ROOT/CODE/<range>/*.jpg`.
pub fn class_folders(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, EvalError> {
    let err = |message: String| EvalError::Data {
        path: root.display().to_string(),
        message,
    };
    require_folder(root, "--data, one folder per class code")?;
    let entries = std::fs::read_dir(root).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let code = entry.file_name().to_string_lossy().to_string();
        let mut files = Vec::new();
        collect_images(&path, &mut files);
        files.sort();
        if !files.is_empty() {
            out.push((code, files));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.is_empty() {
        let mut message =
            "no class folders with images (expected one folder per class code)".to_string();
        if crate::folder::files_of_kind(root, &crate::source::IMAGE_FILES).is_ok() {
            message.push_str(": its crops lie in the folder itself; give the folder above it");
        }
        return Err(err(message));
    }
    Ok(out)
}

/// Refuses a `--data` folder none of whose folders is a class of the model (`classes`): every
/// crop would be counted wrong, as when the folder above the class folders is given (`data/`
/// holding `marrow/` and `pbc/`). A folder of it that holds class folders is named.
pub fn require_a_known_class(
    root: &Path,
    folders: &[(String, Vec<PathBuf>)],
    classes: &[String],
) -> Result<(), EvalError> {
    let is_class = |name: &str| crate::classify::class_as_model_spells(name, classes).is_some();
    if folders.iter().any(|(code, _)| is_class(code)) {
        return Ok(());
    }
    let names: Vec<&str> = folders.iter().map(|(code, _)| code.as_str()).collect();
    let mut message = format!(
        "none of its folders ({}) is a class of the model ({})",
        names.join(", "),
        classes.join(", ")
    );
    let holds_classes = |name: &str| {
        std::fs::read_dir(root.join(name)).is_ok_and(|inside| {
            inside
                .flatten()
                .any(|e| e.path().is_dir() && is_class(&e.file_name().to_string_lossy()))
        })
    };
    if let Some(parent) = names.iter().find(|name| holds_classes(name)) {
        message.push_str(&format!(
            ": its folder {parent} holds class folders; give that one"
        ));
    }
    Err(EvalError::Data {
        path: root.display().to_string(),
        message,
    })
}

/// Names each class folder by the model's class code when they differ only in letter case or
/// surrounding spaces (`lyt` for `LYT`), so that its crops are scored, not counted as a class the
/// model does not know. Other names are kept as they are.
pub fn spell_as_model(
    folders: Vec<(String, Vec<PathBuf>)>,
    classes: &[String],
) -> Vec<(String, Vec<PathBuf>)> {
    folders
        .into_iter()
        .map(
            |(code, files)| match crate::classify::class_as_model_spells(&code, classes) {
                Some(class) if *class != code => {
                    log::info!("class folder {code:?} is scored as class {class}");
                    (class.clone(), files)
                }
                _ => (code, files),
            },
        )
        .collect()
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_images(&p, out);
        } else if is_image_file(&p) {
            out.push(p);
        }
    }
}

/// Per-class metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// Classification report in the JSON shape of the command-line contract.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    pub n: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub classes: BTreeMap<String, ClassMetrics>,
    /// confusion[true][predicted top-1] = count.
    pub confusion: BTreeMap<String, BTreeMap<String, u64>>,
    /// Folders whose class the model does not know (all counted as wrong).
    pub unknown_classes: Vec<String>,
    /// Crops the runtime would put in the review bucket (calibrated probability below the
    /// manifest's threshold). The metrics above use the top-1 class of every crop.
    pub review: u64,
    pub review_rate: f64,
    /// Accuracy on the crops the runtime would count (not sent to review).
    pub accepted_accuracy: f64,
    /// Files not scored: unreadable, too small for a cell crop or without colour
    /// ([`crate::source::read_crop`]); each was named in a warning.
    pub unreadable: Vec<String>,
}

/// Accumulates (truth, prediction) pairs.
#[derive(Debug, Default)]
pub struct ConfusionCounter {
    confusion: BTreeMap<String, BTreeMap<String, u64>>,
    review: u64,
    accepted_correct: u64,
}

impl ConfusionCounter {
    /// Adds one crop: its true class, the model's top-1 class, and whether it would go to review.
    pub fn add(&mut self, truth: &str, predicted: &str, review: bool) {
        if review {
            self.review += 1;
        } else if truth == predicted {
            self.accepted_correct += 1;
        }
        *self
            .confusion
            .entry(truth.to_string())
            .or_default()
            .entry(predicted.to_string())
            .or_insert(0) += 1;
    }

    /// Builds the report; `known` are the model's classes.
    pub fn report(self, known: &[String], unreadable: Vec<String>) -> ClassReport {
        let truths: Vec<String> = self.confusion.keys().cloned().collect();
        let n: u64 = self.confusion.values().flat_map(|r| r.values()).sum();
        let correct: u64 = truths
            .iter()
            .map(|t| self.confusion[t].get(t).copied().unwrap_or(0))
            .sum();
        // Per-class metrics over every class that is a truth or a prediction.
        let mut codes: Vec<String> = truths.clone();
        for row in self.confusion.values() {
            for p in row.keys() {
                if !codes.contains(p) {
                    codes.push(p.clone());
                }
            }
        }
        codes.sort();
        let mut classes = BTreeMap::new();
        for c in &codes {
            let tp = self
                .confusion
                .get(c)
                .and_then(|r| r.get(c))
                .copied()
                .unwrap_or(0);
            let support: u64 = self.confusion.get(c).map(|r| r.values().sum()).unwrap_or(0);
            let predicted: u64 = self
                .confusion
                .values()
                .map(|r| r.get(c).copied().unwrap_or(0))
                .sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            classes.insert(
                c.clone(),
                ClassMetrics {
                    precision,
                    recall,
                    f1: f1(precision, recall),
                    support,
                },
            );
        }
        let with_support: Vec<&ClassMetrics> = classes.values().filter(|m| m.support > 0).collect();
        let macro_f1 = match with_support.len() {
            0 => 0.0,
            n => with_support.iter().map(|m| m.f1).sum::<f64>() / n as f64,
        };
        let unknown_classes = truths
            .iter()
            .filter(|t| !known.contains(t))
            .cloned()
            .collect();
        ClassReport {
            n,
            accuracy: ratio(correct, n),
            macro_f1,
            classes,
            confusion: self.confusion,
            unknown_classes,
            review: self.review,
            review_rate: ratio(self.review, n),
            accepted_accuracy: ratio(self.accepted_correct, n - self.review.min(n)),
            unreadable,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Label file formats for detection evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelFormat {
    Yolo,
    Voc,
}

impl LabelFormat {
    /// `yolo` or `voc`, in any letter case (`YOLO`, `VOC` as the formats are usually written).
    pub fn parse(s: &str) -> Option<LabelFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "yolo" => Some(LabelFormat::Yolo),
            "voc" => Some(LabelFormat::Voc),
            _ => None,
        }
    }

    /// The kind of file that holds one frame's labels in this format.
    fn label_files(self) -> FileKind {
        match self {
            LabelFormat::Yolo => FileKind {
                called: ".txt label files",
                is: |p| has_extension(p, "txt"),
            },
            LabelFormat::Voc => FileKind {
                called: ".xml label files",
                is: |p| has_extension(p, "xml"),
            },
        }
    }

    fn other(self) -> LabelFormat {
        match self {
            LabelFormat::Yolo => LabelFormat::Voc,
            LabelFormat::Voc => LabelFormat::Yolo,
        }
    }

    fn option(self) -> &'static str {
        match self {
            LabelFormat::Yolo => "--format yolo",
            LabelFormat::Voc => "--format voc",
        }
    }
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(extension))
        && path.is_file()
}

/// The frames of `detect-eval` in `images`, in name order (numbers by value); a folder without
/// pictures says what it holds instead (its `train/` and `val/` folders, or label files given as
/// the pictures).
pub fn frames_in(images: &Path) -> Result<Vec<PathBuf>, EvalError> {
    crate::folder::files_of_kind(images, &crate::source::IMAGE_FILES).map_err(|message| {
        EvalError::Data {
            path: images.display().to_string(),
            message,
        }
    })
}

/// Checks, before any frame is read, that `labels` holds label files of `format`: labels of the
/// other format are named with the option that reads them (VOC's `.xml` read as YOLO would
/// otherwise stop at the first frame with "no such label file").
pub fn require_label_files(labels: &Path, format: LabelFormat) -> Result<(), EvalError> {
    let Err(mut message) = crate::folder::files_of_kind(labels, &format.label_files()) else {
        return Ok(());
    };
    let other = format.other();
    if crate::folder::files_of_kind(labels, &other.label_files()).is_ok() {
        message.push_str(&format!(": those are read with {}", other.option()));
    } else if crate::folder::files_of_kind(labels, &crate::source::IMAGE_FILES).is_ok() {
        message.push_str(": those are the frames, given as --images");
    }
    Err(EvalError::Data {
        path: labels.display().to_string(),
        message,
    })
}

/// The class names read as white cells, in lower case without spaces, `_` or `-`.
const WHITE_CELL_NAMES: [&str; 8] = [
    "wbc",
    "wbcs",
    "whitebloodcell",
    "whitebloodcells",
    "leukocyte",
    "leukocytes",
    "leucocyte",
    "leucocytes",
];

/// True for a class name that means white cells: `WBC` as BCCD and TXL-PBC write it, in any
/// letter case, or spelt out (`white blood cell`, `Leukocyte`).
pub fn names_white_cells(name: &str) -> bool {
    let plain: String = name
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    WHITE_CELL_NAMES.contains(&plain.as_str())
}

/// The file that names a YOLO set's classes, one a line, in the order of their numbers.
const YOLO_CLASS_NAMES: &str = "classes.txt";

/// How many folders above the label folder a `classes.txt` is looked for (TXL-PBC keeps it two up,
/// beside `labels/`, whose `train/` and `val/` hold the label files).
const CLASS_NAMES_FOLDERS_UP: usize = 2;

/// The class number of the white cells in the YOLO labels of `labels`: the line naming them in
/// the `classes.txt` of that folder or of one of the two above it, else class 0 (as TXL-PBC
/// numbers them). A `classes.txt` that names no white-cell class is refused with its classes: a
/// set whose class 0 is platelets would otherwise be scored as if they were white cells.
pub fn yolo_white_cell_class(labels: &Path) -> Result<u32, EvalError> {
    let labels = labels
        .canonicalize()
        .unwrap_or_else(|_| labels.to_path_buf());
    let Some(names_file) = labels
        .ancestors()
        .take(CLASS_NAMES_FOLDERS_UP + 1)
        .map(|folder| folder.join(YOLO_CLASS_NAMES))
        .find(|file| file.is_file())
    else {
        log::info!("no {YOLO_CLASS_NAMES} beside the labels: class 0 is taken as the white cells");
        return Ok(0);
    };
    let bad = |message: String| EvalError::Data {
        path: names_file.display().to_string(),
        message,
    };
    let text = crate::textfile::read(&names_file).map_err(|e| bad(e.to_string()))?;
    let names: Vec<&str> = text.lines().map(str::trim).collect();
    let Some(class) = names.iter().position(|name| names_white_cells(name)) else {
        let listed: Vec<&str> = names.into_iter().filter(|n| !n.is_empty()).collect();
        return Err(bad(format!(
            "names no white-cell class (its classes: {}); one line should be WBC",
            listed.join(", ")
        )));
    };
    log::info!(
        "white cells are class {class} ({:?} in {})",
        names[class],
        names_file.display()
    );
    Ok(class as u32)
}

/// Refuses, before any frame is localized, labels of `frames` in which boxes are given but none is
/// a white cell (VOC objects named otherwise, or YOLO white cells not under the class number read
/// for them): every cell found would be scored a false positive. Stops reading at the first
/// white-cell box.
pub fn require_white_cell_boxes(
    labels: &Path,
    frames: &[PathBuf],
    format: LabelFormat,
    wbc_class: u32,
) -> Result<(), EvalError> {
    let mut other_boxes = 0;
    for frame in frames {
        let stem = frame.file_stem().unwrap_or_default().to_string_lossy();
        let expert = match format {
            LabelFormat::Yolo => read_yolo(&labels.join(format!("{stem}.txt")), 1, 1, wbc_class)?,
            LabelFormat::Voc => read_voc(&labels.join(format!("{stem}.xml")))?,
        };
        if !expert.wbc.is_empty() {
            return Ok(());
        }
        other_boxes += expert.other.len();
    }
    if other_boxes == 0 {
        return Ok(());
    }
    let read_as_white_cells = match format {
        LabelFormat::Yolo => format!(
            "class {wbc_class} is read as white cells; name the classes in a {YOLO_CLASS_NAMES} \
             beside the labels, one a line, WBC among them"
        ),
        LabelFormat::Voc => "objects named WBC (or white blood cell, leukocyte) are read as \
                             white cells"
            .to_string(),
    };
    Err(EvalError::Data {
        path: labels.display().to_string(),
        message: format!(
            "none of the {other_boxes} boxes of its label files is a white cell: \
             {read_as_white_cells}"
        ),
    })
}

/// The five fields of a YOLO label line, in order.
const YOLO_FIELDS: [&str; 5] = ["class", "cx", "cy", "w", "h"];

/// An annotation's boxes: the white cells, and the boxes it gives any other class (red cells,
/// platelets), which say where it contradicts itself (see [`ConsistentCounts`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExpertBoxes {
    pub wbc: Vec<BoxPx>,
    pub other: Vec<BoxPx>,
}

/// The expert boxes of the frame named `stem`, of `size` pixels, from its label file in `labels`
/// (`<stem>.txt` in YOLO, whose white cells are class `wbc_class`; `<stem>.xml` in VOC).
pub fn read_expert_boxes(
    labels: &Path,
    stem: &str,
    format: LabelFormat,
    wbc_class: u32,
    (width, height): (u32, u32),
) -> Result<ExpertBoxes, EvalError> {
    match format {
        LabelFormat::Yolo => read_yolo(
            &labels.join(format!("{stem}.txt")),
            width,
            height,
            wbc_class,
        ),
        LabelFormat::Voc => read_voc_of_frame(&labels.join(format!("{stem}.xml")), width, height),
    }
}

/// White-cell boxes from a YOLO label file (class `wbc_class` = WBC, see
/// [`yolo_white_cell_class`]; cx cy w h as fractions of the frame).
pub fn read_yolo_wbc(
    path: &Path,
    width: u32,
    height: u32,
    wbc_class: u32,
) -> Result<Vec<BoxPx>, EvalError> {
    Ok(read_yolo(path, width, height, wbc_class)?.wbc)
}

/// Every box of a YOLO label file: class `wbc_class` as white cells, the others as other classes.
/// Every line is checked, whatever its class: five numbers, a whole class number, a centre inside
/// the frame and a size above 0 and at most the frame's (pixel coordinates given by mistake are
/// refused, not read as boxes many frames wide).
pub fn read_yolo(
    path: &Path,
    width: u32,
    height: u32,
    wbc_class: u32,
) -> Result<ExpertBoxes, EvalError> {
    let text = read_label_file(path)?;
    let mut boxes = ExpertBoxes::default();
    for (i, line) in text.lines().enumerate() {
        let Some([class, cx, cy, w, h]) = yolo_line(path, i + 1, line)? else {
            continue;
        };
        let (fw, fh) = (width as f32, height as f32);
        let b = BoxPx {
            x0: (cx - w / 2.0) * fw,
            y0: (cy - h / 2.0) * fh,
            x1: (cx + w / 2.0) * fw,
            y1: (cy + h / 2.0) * fh,
        };
        if class == wbc_class as f32 {
            boxes.wbc.push(b);
        } else {
            boxes.other.push(b);
        }
    }
    Ok(boxes)
}

fn read_label_file(path: &Path) -> Result<String, EvalError> {
    crate::textfile::read(path).map_err(|e| EvalError::Data {
        path: path.display().to_string(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => {
                "no such label file: every image needs one of the same name, even a frame \
                 without cells"
                    .into()
            }
            _ => e.to_string(),
        },
    })
}

/// The checked numbers of one YOLO line (`line_no` from 1), or None for a blank line.
fn yolo_line(path: &Path, line_no: usize, line: &str) -> Result<Option<[f32; 5]>, EvalError> {
    let bad = |column: usize, message: String| EvalError::Label {
        path: path.display().to_string(),
        line: line_no,
        column,
        message,
    };
    let fields = fields_with_columns(line);
    if fields.is_empty() {
        return Ok(None);
    }
    if fields.len() != YOLO_FIELDS.len() {
        return Err(bad(
            1,
            format!(
                "expected 5 fields (class cx cy w h), found {}",
                fields.len()
            ),
        ));
    }
    let mut values = [0f32; 5];
    for (k, &(column, text)) in fields.iter().enumerate() {
        let name = YOLO_FIELDS[k];
        let value = text
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| bad(column, format!("{name} `{text}` is not a number")))?;
        if let Some(problem) = yolo_value_problem(name, value) {
            return Err(bad(column, format!("{name} {text} {problem}")));
        }
        values[k] = value;
    }
    Ok(Some(values))
}

/// Why a YOLO field's value cannot be right, if it cannot.
fn yolo_value_problem(name: &str, value: f32) -> Option<&'static str> {
    match name {
        "class" if value < 0.0 || value.fract() != 0.0 => {
            Some("is not a class number (0, 1, 2, ...)")
        }
        "cx" | "cy" if !(0.0..=1.0).contains(&value) => {
            Some("is outside 0..1: YOLO centres are fractions of the frame, not pixels")
        }
        "w" | "h" if value <= 0.0 || value > 1.0 => {
            Some("is not above 0 and at most 1: YOLO sizes are fractions of the frame, not pixels")
        }
        _ => None,
    }
}

/// The whitespace-separated fields of a line, each with its column (in characters, from 1).
fn fields_with_columns(line: &str) -> Vec<(usize, &str)> {
    line.split_whitespace()
        .map(|field| {
            let at = field.as_ptr() as usize - line.as_ptr() as usize;
            (line[..at].chars().count() + 1, field)
        })
        .collect()
}

/// White-cell boxes from a Pascal VOC annotation (objects named WBC, see [`names_white_cells`]).
pub fn read_voc_wbc(path: &Path) -> Result<Vec<BoxPx>, EvalError> {
    Ok(read_voc(path)?.wbc)
}

/// Every box of a Pascal VOC annotation: objects named WBC as white cells, the others (RBC,
/// Platelets) as other classes. A file without an `<annotation>` element, or a WBC object without
/// four numeric corners or with a box of no area, is an error at the object's line and column; an
/// object of another class whose box cannot be read is left out (it only marks where the
/// annotation contradicts itself), with a debug log line.
pub fn read_voc(path: &Path) -> Result<ExpertBoxes, EvalError> {
    voc_boxes(path, &read_label_file(path)?)
}

/// Every box of the Pascal VOC annotation of a `width` × `height` frame (as [`read_voc`]). An
/// annotation whose `<size>` gives another size is refused at its `<size>`: its boxes are in the
/// pixels of the picture annotated, so in a frame resized since, every box would be elsewhere and
/// every score wrong.
pub fn read_voc_of_frame(path: &Path, width: u32, height: u32) -> Result<ExpertBoxes, EvalError> {
    let text = read_label_file(path)?;
    check_voc_size(path, &text, (width, height))?;
    voc_boxes(path, &text)
}

fn check_voc_size(path: &Path, text: &str, frame: (u32, u32)) -> Result<(), EvalError> {
    let Some(at) = text.find("<size>") else {
        return Ok(());
    };
    let size = text[at..].split("</size>").next().unwrap_or("");
    let side = |name| tag(size, name).and_then(|v| v.trim().parse::<u32>().ok());
    let (Some(width), Some(height)) = (side("width"), side("height")) else {
        return Ok(());
    };
    if (width, height) == frame || (width, height) == (0, 0) {
        return Ok(());
    }
    Err(label_error_at(
        path,
        text,
        at,
        format!(
            "annotated on a {width} × {height} picture, but its frame is {} × {}: \
             resized since? VOC boxes are in the annotated picture's pixels",
            frame.0, frame.1
        ),
    ))
}

/// A label error at byte `at` of `text`, with its line and column.
fn label_error_at(path: &Path, text: &str, at: usize, message: String) -> EvalError {
    let before = &text[..at];
    EvalError::Label {
        path: path.display().to_string(),
        line: before.matches('\n').count() + 1,
        column: before.rsplit('\n').next().unwrap_or("").chars().count() + 1,
        message,
    }
}

fn voc_boxes(path: &Path, text: &str) -> Result<ExpertBoxes, EvalError> {
    if !text.contains("<annotation") {
        return Err(EvalError::Data {
            path: path.display().to_string(),
            message: "not a Pascal VOC annotation (no <annotation> element)".into(),
        });
    }
    let mut boxes = ExpertBoxes::default();
    let mut from = 0;
    while let Some(found) = text[from..].find("<object>") {
        let at = from + found;
        from = at + "<object>".len();
        let object = text[from..].split("</object>").next().unwrap_or("");
        if tag(object, "name").is_some_and(names_white_cells) {
            boxes.wbc.push(voc_box(path, text, at, object)?);
        } else {
            match voc_box(path, text, at, object) {
                Ok(b) => boxes.other.push(b),
                Err(e) => log::debug!("left out of the label check (not a WBC object): {e}"),
            }
        }
    }
    Ok(boxes)
}

/// The box of one object (`object` is its text, which starts at byte `at` of `text`).
fn voc_box(path: &Path, text: &str, at: usize, object: &str) -> Result<BoxPx, EvalError> {
    let bad = |message: String| label_error_at(path, text, at, message);
    let coord = |t: &str| -> Result<f32, EvalError> {
        tag(object, t)
            .and_then(|v| v.trim().parse::<f32>().ok())
            .filter(|v| v.is_finite())
            .ok_or_else(|| bad(format!("WBC object without a numeric <{t}>")))
    };
    let b = BoxPx {
        x0: coord("xmin")?,
        y0: coord("ymin")?,
        x1: coord("xmax")?,
        y1: coord("ymax")?,
    };
    if b.x1 <= b.x0 || b.y1 <= b.y0 {
        return Err(bad(format!(
            "WBC box has no area (xmin {} xmax {}, ymin {} ymax {})",
            b.x0, b.x1, b.y0, b.y1
        )));
    }
    Ok(b)
}

fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    Some(&text[start..end])
}

/// Detection counts accumulated over frames.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DetectionCounts {
    pub frames: u64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    /// The same matching, for the boxes clear of the frame edge only.
    pub in_view: InViewCounts,
    /// The same matching, for the cells touching a neighbour.
    pub touching: TouchingCounts,
    /// The same matching, over the white cells the annotation does not contradict itself on.
    pub consistent: ConsistentCounts,
}

/// The cells the counter classifies: expert boxes clear of the frame edge (see
/// [`BoxPx::clear_of_edge`]), and found cells the localizer judged whole (`Cell::complete`: clear
/// of the edge, and no nucleus running on past the box to it). A cell cut by the edge is not
/// classified until it is fully in view, so these say how well the cells that get counted are
/// found. Pairs come from the matching of all boxes.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct InViewCounts {
    /// Expert boxes clear of the edge, and how many of them a found box was paired with.
    pub expert: u64,
    pub expert_found: u64,
    /// Found cells judged whole, and how many of them were paired with an expert box.
    pub found: u64,
    pub found_paired: u64,
}

/// Cells touching a neighbour, which the localizer must take apart: the expert boxes that overlap
/// or meet another expert box of their frame (see [`BoxPx::touches`]). Pairs come from the matching
/// of all boxes, so a box drawn around two such cells pairs with neither.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct TouchingCounts {
    /// Expert boxes touching another, and how many of them a found box was paired with.
    pub expert: u64,
    pub expert_found: u64,
    /// Found boxes paired with no expert box that hold the centres of two expert boxes or more:
    /// neighbours boxed as one. (A paired box may hold a neighbour's centre where two cells
    /// overlap; it found its own cell.)
    pub merged: u64,
}

/// The white cells an annotation agrees with itself on. An expert white-cell box that coincides
/// (IoU >= 0.5, as for matching) with a box the same annotation gives another class, a red cell or
/// a platelet, is set aside, as PASCAL VOC sets aside its "difficult" objects: it counts neither as a
/// cell missed nor, when a found box pairs with it, as a cell found or a false box. Expert white-cell
/// boxes that coincide with each other are one cell boxed twice: found when either is. Pairs come
/// from the matching of all boxes; a second found box on one cell counts as a false one. The raw
/// scores stay as they are; these say how much of what they count against the localizer is the
/// annotation's disagreement with itself.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct ConsistentCounts {
    /// White cells the annotation agrees on, and how many of them a found box was paired with.
    pub expert: u64,
    pub expert_found: u64,
    /// Found boxes not set aside with an expert box, and how many of them found an agreed cell.
    pub found: u64,
    pub found_paired: u64,
    /// Expert white-cell boxes set aside because they coincide with a box of another class.
    pub also_another_class: u64,
    /// Expert white-cell boxes that coincide with an earlier one of their frame: second boxes.
    pub second_boxes: u64,
}

/// The recall of [`TouchingCounts`], with its 95 % Wilson interval and the counts.
#[derive(Debug, Clone, Serialize)]
pub struct TouchingReport {
    pub recall: f64,
    pub recall_ci95: Option<Interval>,
    #[serde(flatten)]
    pub counts: TouchingCounts,
}

/// Detection report in the JSON shape of the command-line contract.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    pub frames: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// 95 % Wilson intervals of precision and recall, each box one trial (none without boxes). The
    /// boxes of one frame are not quite independent trials, so the true spread is somewhat wider.
    pub precision_ci95: Option<Interval>,
    pub recall_ci95: Option<Interval>,
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub skipped_out_of_focus: u64,
    /// Precision, recall and F1 over the boxes clear of the frame edge (the cells that get
    /// classified), with their counts.
    pub in_view: InViewReport,
    /// Recall over the cells touching a neighbour, and the found boxes around two cells or more.
    pub touching: TouchingReport,
    /// Precision, recall and F1 over the white cells the annotation agrees with itself on.
    pub consistent: ConsistentReport,
    /// The frames with a found box no expert box matched or an expert box nothing matched, in
    /// the order scored, with those boxes: where to look first when checking the localizer.
    pub frames_with_errors: Vec<FrameErrors>,
}

/// One frame's unpaired boxes: where the localizer and the experts disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameErrors {
    /// The frame's file name without its extension (that of its label file too).
    pub frame: String,
    /// Found boxes matched to no expert box, `[x0, y0, x1, y1]` in frame pixels (to 0.1 px).
    pub false_positives: Vec<[f32; 4]>,
    /// Expert boxes nothing found was matched to.
    pub missed: Vec<[f32; 4]>,
    /// Of `missed`, those the scores over the agreed cells do not count as missed (see
    /// [`ConsistentCounts`]): boxes the annotation also gives another class, and second boxes on a
    /// cell found through its other box.
    pub missed_set_aside: Vec<[f32; 4]>,
}

/// Precision, recall and F1 over a part of the boxes, with their intervals and the counts they
/// come from.
#[derive(Debug, Clone, Serialize)]
pub struct PartScores<C> {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// As [`DetectionReport::precision_ci95`] and [`DetectionReport::recall_ci95`].
    pub precision_ci95: Option<Interval>,
    pub recall_ci95: Option<Interval>,
    #[serde(flatten)]
    pub counts: C,
}

/// The scores of [`InViewCounts`].
pub type InViewReport = PartScores<InViewCounts>;
/// The scores of [`ConsistentCounts`].
pub type ConsistentReport = PartScores<ConsistentCounts>;

impl<C> PartScores<C> {
    /// The scores of `found_paired` of `found` boxes and `expert_found` of `expert` cells.
    fn of(
        counts: C,
        (found_paired, found): (u64, u64),
        (expert_found, expert): (u64, u64),
    ) -> Self {
        let (precision, recall) = (ratio(found_paired, found), ratio(expert_found, expert));
        PartScores {
            precision,
            recall,
            f1: f1(precision, recall),
            precision_ci95: wilson_95(found_paired, found),
            recall_ci95: wilson_95(expert_found, expert),
            counts,
        }
    }
}

/// What one frame's matching left unpaired: indices of found boxes with no expert box (false
/// positives) and of expert boxes nothing was found for (misses), and which of the misses the
/// scores over the agreed cells do not count (see [`FrameErrors::missed_set_aside`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FrameMatch {
    pub false_positives: Vec<usize>,
    pub missed: Vec<usize>,
    pub missed_set_aside: Vec<usize>,
}

impl FrameMatch {
    /// The boxes this matching left unpaired, under the frame's name; none when all were paired.
    pub fn errors(&self, frame: &str, predicted: &[BoxPx], truth: &[BoxPx]) -> Option<FrameErrors> {
        let corners = |boxes: &[BoxPx], picked: &[usize]| -> Vec<[f32; 4]> {
            let tenths = |v: f32| (v * 10.0).round() / 10.0;
            picked
                .iter()
                .filter_map(|&i| boxes.get(i))
                .map(|b| [b.x0, b.y0, b.x1, b.y1].map(tenths))
                .collect()
        };
        (!self.false_positives.is_empty() || !self.missed.is_empty()).then(|| FrameErrors {
            frame: frame.to_string(),
            false_positives: corners(predicted, &self.false_positives),
            missed: corners(truth, &self.missed),
            missed_set_aside: corners(truth, &self.missed_set_aside),
        })
    }
}

impl DetectionCounts {
    /// Greedy one-to-one matching by IoU (best pairs first) at `min_iou` of the found boxes with
    /// the expert white-cell boxes (`truth`); adds the frame (of `frame` width × height pixels) to
    /// the counts and says which boxes stayed unpaired. `whole`: for each found box, whether the
    /// localizer judged its cell whole (see [`InViewCounts`]). `other`: the annotation's boxes of
    /// other classes, for [`ConsistentCounts`].
    pub fn add_frame(
        &mut self,
        predicted: &[BoxPx],
        whole: &[bool],
        truth: &[BoxPx],
        other: &[BoxPx],
        frame: (u32, u32),
        min_iou: f32,
    ) -> FrameMatch {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, p) in predicted.iter().enumerate() {
            for (j, t) in truth.iter().enumerate() {
                let iou = p.iou(t);
                if iou >= min_iou {
                    pairs.push((iou, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used_p = vec![false; predicted.len()];
        let mut used_t = vec![false; truth.len()];
        let mut partner = vec![None; predicted.len()];
        let mut tp = 0;
        for (_, i, j) in pairs {
            if !used_p[i] && !used_t[j] {
                used_p[i] = true;
                used_t[j] = true;
                partner[i] = Some(j);
                tp += 1;
            }
        }
        self.frames += 1;
        self.true_positives += tp;
        self.false_positives += predicted.len() as u64 - tp;
        self.false_negatives += truth.len() as u64 - tp;
        let (w, h) = (frame.0 as f32, frame.1 as f32);
        let in_view = |kept: &[bool], used: &[bool]| {
            let paired = kept.iter().zip(used).filter(|&(k, u)| *k && *u).count();
            (kept.iter().filter(|&&k| k).count() as u64, paired as u64)
        };
        let expert_clear: Vec<bool> = truth.iter().map(|b| b.clear_of_edge(w, h)).collect();
        let (expert, expert_found) = in_view(&expert_clear, &used_t);
        let (found, found_paired) = in_view(whole, &used_p);
        self.in_view.expert += expert;
        self.in_view.expert_found += expert_found;
        self.in_view.found += found;
        self.in_view.found_paired += found_paired;
        self.add_touching(predicted, truth, &used_p, &used_t);
        let not_counted = self.add_consistent(predicted, truth, other, &partner, min_iou);
        let unpaired = |used: &[bool]| (0..used.len()).filter(|&i| !used[i]).collect();
        FrameMatch {
            false_positives: unpaired(&used_p),
            missed: unpaired(&used_t),
            missed_set_aside: (0..truth.len())
                .filter(|&j| !used_t[j] && not_counted[j])
                .collect(),
        }
    }

    /// Adds a frame's cells touching a neighbour and its unpaired found boxes around two expert
    /// cells or more (`paired[i]`, `found[j]`: whether found box i and expert box j were paired).
    fn add_touching(
        &mut self,
        predicted: &[BoxPx],
        truth: &[BoxPx],
        paired: &[bool],
        found: &[bool],
    ) {
        let touching = |j: usize| {
            truth
                .iter()
                .enumerate()
                .any(|(k, other)| k != j && truth[j].touches(other))
        };
        for j in (0..truth.len()).filter(|&j| touching(j)) {
            self.touching.expert += 1;
            self.touching.expert_found += u64::from(found[j]);
        }
        let merged = predicted.iter().zip(paired).filter(|(p, &paired)| {
            !paired && truth.iter().filter(|t| p.holds(t.centre())).count() >= 2
        });
        self.touching.merged += merged.count() as u64;
    }

    /// Adds a frame's white cells the annotation agrees on, and the found boxes not set aside
    /// (`partner[i]`: the expert box found box i was paired with). Says which expert boxes would
    /// not count as missed there: those set aside, and those whose cell was found.
    fn add_consistent(
        &mut self,
        predicted: &[BoxPx],
        truth: &[BoxPx],
        other: &[BoxPx],
        partner: &[Option<usize>],
        min_iou: f32,
    ) -> Vec<bool> {
        let set_aside: Vec<bool> = truth
            .iter()
            .map(|t| other.iter().any(|o| t.iou(o) >= min_iou))
            .collect();
        let cell = cells_of(truth, &set_aside, min_iou);
        let c = &mut self.consistent;
        c.also_another_class += set_aside.iter().filter(|&&a| a).count() as u64;
        c.second_boxes += (0..truth.len())
            .filter(|&j| !set_aside[j] && cell[j] != j)
            .count() as u64;
        c.expert += (0..truth.len())
            .filter(|&j| !set_aside[j] && cell[j] == j)
            .count() as u64;
        let mut credited = vec![false; truth.len()];
        for (p, pair) in predicted.iter().zip(partner) {
            match *pair {
                Some(j) if set_aside[j] => {}
                Some(j) => {
                    c.found += 1;
                    if !credited[cell[j]] {
                        credited[cell[j]] = true;
                        c.found_paired += 1;
                    }
                }
                None if (0..truth.len()).any(|j| set_aside[j] && p.iou(&truth[j]) >= min_iou) => {}
                None => c.found += 1,
            }
        }
        c.expert_found += credited.iter().filter(|&&f| f).count() as u64;
        (0..truth.len())
            .map(|j| set_aside[j] || credited[cell[j]])
            .collect()
    }

    /// The scores, with the frames out of focus and the unpaired boxes of each frame that had any.
    pub fn report(
        &self,
        skipped_out_of_focus: u64,
        frames_with_errors: Vec<FrameErrors>,
    ) -> DetectionReport {
        let (tp, found, expert) = (
            self.true_positives,
            self.true_positives + self.false_positives,
            self.true_positives + self.false_negatives,
        );
        let (precision, recall) = (ratio(tp, found), ratio(tp, expert));
        let (v, c) = (self.in_view, self.consistent);
        DetectionReport {
            frames: self.frames,
            precision,
            recall,
            f1: f1(precision, recall),
            precision_ci95: wilson_95(tp, found),
            recall_ci95: wilson_95(tp, expert),
            true_positives: self.true_positives,
            false_positives: self.false_positives,
            false_negatives: self.false_negatives,
            skipped_out_of_focus,
            in_view: PartScores::of(v, (v.found_paired, v.found), (v.expert_found, v.expert)),
            touching: TouchingReport {
                recall: ratio(self.touching.expert_found, self.touching.expert),
                recall_ci95: wilson_95(self.touching.expert_found, self.touching.expert),
                counts: self.touching,
            },
            consistent: PartScores::of(c, (c.found_paired, c.found), (c.expert_found, c.expert)),
            frames_with_errors,
        }
    }
}

/// Each expert box's cell: the index of the first box not set aside that it coincides with (IoU
/// at least `min_iou`, directly or through boxes between), its own index when none does; boxes
/// set aside keep their own.
fn cells_of(truth: &[BoxPx], set_aside: &[bool], min_iou: f32) -> Vec<usize> {
    let mut cell: Vec<usize> = (0..truth.len()).collect();
    for j in 0..truth.len() {
        if set_aside[j] {
            continue;
        }
        if let Some(k) = (0..j).find(|&k| !set_aside[k] && truth[k].iou(&truth[j]) >= min_iou) {
            cell[j] = cell[k];
        }
    }
    cell
}

/// Harmonic mean of precision and recall (0 when both are 0).
fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_confusion() {
        let mut c = ConfusionCounter::default();
        for _ in 0..8 {
            c.add("BLA", "BLA", false);
        }
        c.add("BLA", "LYT", false);
        c.add("BLA", "NGS", true);
        for _ in 0..9 {
            c.add("LYT", "LYT", false);
        }
        c.add("XYZ", "LYT", false);
        let r = c.report(&["BLA".into(), "LYT".into()], vec![]);
        assert_eq!(r.n, 20);
        assert!((r.accuracy - 17.0 / 20.0).abs() < 1e-9);
        assert!((r.classes["BLA"].recall - 0.8).abs() < 1e-9);
        assert!((r.classes["BLA"].precision - 1.0).abs() < 1e-9);
        assert!((r.classes["LYT"].precision - 9.0 / 11.0).abs() < 1e-9);
        assert_eq!(r.classes["NGS"].precision, 0.0);
        assert_eq!(r.classes["XYZ"].f1, 0.0);
        assert_eq!(r.unknown_classes, vec!["XYZ".to_string()]);
        assert_eq!(r.review, 1);
        assert!((r.accepted_accuracy - 17.0 / 19.0).abs() < 1e-9);
        // Nothing counted: every score 0, not the empty sum's -0 ("-0.0000" in the text line).
        let r = ConfusionCounter::default().report(&["BLA".into()], vec![]);
        assert_eq!(r.macro_f1.to_bits(), 0.0f64.to_bits());
    }

    #[test]
    fn class_folders_differing_from_the_model_only_in_case_take_its_spelling() {
        let classes = ["BLA".to_string(), "LYT".to_string()];
        let folders = ["lyt", " Bla ", "BLA", "XYZ", "ly"]
            .map(|code| (code.to_string(), vec![PathBuf::from(code)]));
        let spelled: Vec<String> = spell_as_model(folders.to_vec(), &classes)
            .into_iter()
            .map(|(code, _)| code)
            .collect();
        assert_eq!(spelled, ["LYT", "BLA", "BLA", "XYZ", "ly"]);
    }

    #[test]
    fn a_data_folder_above_the_class_folders_or_a_class_folder_itself_is_named() {
        let classes = ["BLA".to_string(), "LYT".to_string()];
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for class_folder in ["marrow/lyt", "marrow/BLA", "pbc/EBO"] {
            std::fs::create_dir_all(root.join(class_folder)).unwrap();
            std::fs::write(root.join(class_folder).join("c.png"), "").unwrap();
        }
        let folders = spell_as_model(class_folders(root).unwrap(), &classes);
        let e = require_a_known_class(root, &folders, &classes)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(": none of its folders (marrow, pbc) is a class of the model (BLA, LYT): its folder marrow holds class folders; give that one"),
            "{e}"
        );
        let marrow = root.join("marrow");
        let folders = spell_as_model(class_folders(&marrow).unwrap(), &classes);
        assert!(require_a_known_class(&marrow, &folders, &classes).is_ok());
        let e = class_folders(&marrow.join("BLA")).unwrap_err().to_string();
        assert!(
            e.ends_with("(expected one folder per class code): its crops lie in the folder itself; give the folder above it"),
            "{e}"
        );
    }

    #[test]
    fn white_cells_are_named_as_annotators_write_them() {
        for name in [
            "WBC",
            "wbc",
            " WBCs ",
            "White blood cell",
            "white_blood_cells",
            "Leukocyte",
        ] {
            assert!(names_white_cells(name), "{name}");
        }
        for name in ["RBC", "Platelets", "neutrophil", "W BC cluster", ""] {
            assert!(!names_white_cells(name), "{name}");
        }
    }

    #[test]
    fn the_yolo_white_cell_class_is_read_from_classes_txt_beside_or_above_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("set/labels/val");
        std::fs::create_dir_all(&labels).unwrap();
        assert_eq!(yolo_white_cell_class(&labels).unwrap(), 0);
        std::fs::write(dir.path().join("set/classes.txt"), "Platelets\nRBC\nWBC\n").unwrap();
        assert_eq!(yolo_white_cell_class(&labels).unwrap(), 2);
        // The nearest one counts.
        let beside = labels.join("classes.txt");
        std::fs::write(&beside, "RBC\r\nwhite blood cell\r\n").unwrap();
        assert_eq!(yolo_white_cell_class(&labels).unwrap(), 1);
        std::fs::write(&beside, "RBC\n\nPlatelets\n").unwrap();
        let e = yolo_white_cell_class(&labels).unwrap_err().to_string();
        assert!(
            e.ends_with("classes.txt: names no white-cell class (its classes: RBC, Platelets); one line should be WBC"),
            "{e}"
        );
        // Three folders up is another set's.
        std::fs::remove_file(&beside).unwrap();
        std::fs::write(dir.path().join("set/classes.txt"), "x").unwrap();
        std::fs::rename(
            dir.path().join("set/classes.txt"),
            dir.path().join("classes.txt"),
        )
        .unwrap();
        assert_eq!(yolo_white_cell_class(&labels).unwrap(), 0);
    }

    #[test]
    fn labels_that_box_no_white_cell_are_refused_before_any_frame_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<PathBuf> = ["a", "b"]
            .map(|s| dir.path().join(format!("{s}.png")))
            .to_vec();
        let yolo = |a: &str, b: &str| {
            std::fs::write(dir.path().join("a.txt"), a).unwrap();
            std::fs::write(dir.path().join("b.txt"), b).unwrap();
        };
        yolo(
            "1 0.5 0.5 0.1 0.1\n",
            "2 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n",
        );
        let e = require_white_cell_boxes(dir.path(), &frames, LabelFormat::Yolo, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains(": none of the 3 boxes of its label files is a white cell: class 0 is read as white cells; name the classes in a classes.txt"), "{e}");
        assert!(require_white_cell_boxes(dir.path(), &frames, LabelFormat::Yolo, 2).is_ok());
        yolo("", "");
        assert!(require_white_cell_boxes(dir.path(), &frames, LabelFormat::Yolo, 0).is_ok());
        let voc = |name: &str| {
            let object = format!("<object><name>{name}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>");
            for stem in ["a", "b"] {
                let text = format!("<annotation>{object}</annotation>");
                std::fs::write(dir.path().join(format!("{stem}.xml")), text).unwrap();
            }
        };
        voc("Leukocyte");
        assert!(require_white_cell_boxes(dir.path(), &frames, LabelFormat::Voc, 0).is_ok());
        voc("Leukozyt");
        let e = require_white_cell_boxes(dir.path(), &frames, LabelFormat::Voc, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("none of the 2 boxes of its label files is a white cell: objects named WBC"),
            "{e}"
        );
    }

    #[test]
    fn label_formats_are_read_in_any_case() {
        for (given, format) in [("yolo", LabelFormat::Yolo), ("VOC", LabelFormat::Voc)] {
            assert_eq!(LabelFormat::parse(given), Some(format));
        }
        assert_eq!(LabelFormat::parse("xml"), None);
    }

    #[test]
    fn detection_matching_is_one_to_one() {
        let t = [BoxPx {
            x0: 0.0,
            y0: 0.0,
            x1: 10.0,
            y1: 10.0,
        }];
        let p = [
            BoxPx {
                x0: 0.0,
                y0: 0.0,
                x1: 10.0,
                y1: 10.0,
            },
            BoxPx {
                x0: 1.0,
                y0: 0.0,
                x1: 11.0,
                y1: 10.0,
            },
        ];
        let mut d = DetectionCounts::default();
        let unpaired = d.add_frame(&p, &clear(&p), &t, &[], (100, 100), 0.5);
        assert_eq!(
            unpaired,
            FrameMatch {
                false_positives: vec![1],
                missed: vec![],
                missed_set_aside: vec![],
            }
        );
        let nothing_found =
            DetectionCounts::default().add_frame(&[], &[], &t, &[], (100, 100), 0.5);
        assert_eq!(nothing_found.missed, vec![0]);
        let r = d.report(0, Vec::new());
        assert_eq!(
            (r.true_positives, r.false_positives, r.false_negatives),
            (1, 1, 0)
        );
        assert!((r.precision - 0.5).abs() < 1e-9);
    }

    #[test]
    fn scores_carry_their_wilson_intervals() {
        // 10 of 100 found boxes paired, 10 of 12 expert boxes found; in view: 8 of 50 and 8 of 9.
        let d = DetectionCounts {
            frames: 3,
            true_positives: 10,
            false_positives: 90,
            false_negatives: 2,
            in_view: InViewCounts {
                expert: 9,
                expert_found: 8,
                found: 50,
                found_paired: 8,
            },
            touching: TouchingCounts {
                expert: 6,
                expert_found: 5,
                merged: 1,
            },
            consistent: ConsistentCounts::default(),
        };
        let r = d.report(0, Vec::new());
        // wilson_95(10, 100) is 0.0552-0.1744 (tally's test, from the formula by hand).
        let p = r.precision_ci95.unwrap();
        assert!(
            (p.low - 0.0552).abs() < 5e-4 && (p.high - 0.1744).abs() < 5e-4,
            "{p:?}"
        );
        assert_eq!(r.recall_ci95, wilson_95(10, 12));
        assert_eq!(r.in_view.precision_ci95, wilson_95(8, 50));
        assert_eq!(r.in_view.recall_ci95, wilson_95(8, 9));
        assert_eq!(r.touching.recall_ci95, wilson_95(5, 6));
        // No boxes at all: no interval, rather than one around a ratio of nothing.
        let empty = DetectionCounts::default().report(0, Vec::new());
        assert_eq!((empty.precision_ci95, empty.recall_ci95), (None, None));
        assert_eq!(empty.in_view.recall_ci95, None);
        assert_eq!(empty.touching.recall_ci95, None);
    }

    #[test]
    fn cells_touching_a_neighbour_are_scored_apart_and_merged_boxes_counted() {
        // Two cells side by side whose expert boxes meet, and a third well away from them.
        let truth = [
            square(10.0, 10.0, 20.0),
            square(30.0, 12.0, 20.0),
            square(70.0, 70.0, 20.0),
        ];
        // Frame 1: one box around the pair (holding both centres), the lone cell found.
        let mut d = DetectionCounts::default();
        let around_both = BoxPx {
            x0: 9.0,
            y0: 9.0,
            x1: 51.0,
            y1: 33.0,
        };
        let merged = d.add_frame(
            &[around_both, truth[2]],
            &[true; 2],
            &truth,
            &[],
            (100, 100),
            0.5,
        );
        assert_eq!(merged.missed, vec![0, 1]);
        let t = d.touching;
        assert_eq!((t.expert, t.expert_found, t.merged), (2, 0, 1));
        // Frame 2: each of the pair found on its own; the lone cell missed does not count here.
        d.add_frame(&truth[..2], &[true; 2], &truth, &[], (100, 100), 0.5);
        let r = d.report(0, Vec::new());
        let t = r.touching.counts;
        assert_eq!((t.expert, t.expert_found, t.merged), (4, 2, 1));
        assert!((r.touching.recall - 0.5).abs() < 1e-9);
        // A box that found its own cell is no merge, even where, the two cells overlapping, it
        // also holds its neighbour's centre.
        let overlapping = [square(10.0, 10.0, 30.0), square(28.0, 28.0, 20.0)];
        let mut own = DetectionCounts::default();
        own.add_frame(
            &overlapping,
            &clear(&overlapping),
            &overlapping,
            &[],
            (100, 100),
            0.5,
        );
        assert!(overlapping[0].holds(overlapping[1].centre()));
        assert_eq!((own.touching.expert_found, own.touching.merged), (2, 0));
    }

    fn square(x0: f32, y0: f32, side: f32) -> BoxPx {
        BoxPx {
            x0,
            y0,
            x1: x0 + side,
            y1: y0 + side,
        }
    }

    /// Whether each box is clear of the edge of a 100 × 100 frame: found cells judged whole where
    /// no nucleus runs on past their boxes.
    fn clear(boxes: &[BoxPx]) -> Vec<bool> {
        boxes
            .iter()
            .map(|b| b.clear_of_edge(100.0, 100.0))
            .collect()
    }

    #[test]
    fn boxes_at_the_frame_edge_are_left_out_of_the_in_view_scores() {
        // Expert: a cell in view (found), a cell cut by the left edge (missed), a cell in view
        // (missed). Found: the first cell, a false box cut by the bottom edge, a false box in view.
        let truth = [
            square(20.0, 20.0, 10.0),
            square(0.0, 40.0, 8.0),
            square(60.0, 60.0, 10.0),
        ];
        let found = [
            square(20.5, 20.0, 10.0),
            square(40.0, 92.0, 8.0),
            square(70.0, 20.0, 10.0),
        ];
        let mut d = DetectionCounts::default();
        let unpaired = d.add_frame(&found, &clear(&found), &truth, &[], (100, 100), 0.5);
        // The unpaired boxes are reported under the frame's name, to a tenth of a pixel.
        let errors = unpaired.errors("f1", &found, &truth).unwrap();
        assert_eq!(errors.frame, "f1");
        assert_eq!(
            errors.false_positives,
            vec![[40.0, 92.0, 48.0, 100.0], [70.0, 20.0, 80.0, 30.0]]
        );
        assert_eq!(
            errors.missed,
            vec![[0.0, 40.0, 8.0, 48.0], [60.0, 60.0, 70.0, 70.0]]
        );
        let all_paired = DetectionCounts::default().add_frame(
            &truth,
            &clear(&truth),
            &truth,
            &[],
            (100, 100),
            0.5,
        );
        assert_eq!(all_paired.errors("f2", &truth, &truth), None);
        let r = d.report(0, vec![errors.clone()]);
        assert_eq!(r.frames_with_errors, vec![errors]);
        assert_eq!(
            (r.true_positives, r.false_positives, r.false_negatives),
            (1, 2, 2)
        );
        let v = r.in_view.counts;
        assert_eq!(
            (v.expert, v.expert_found, v.found, v.found_paired),
            (2, 1, 2, 1)
        );
        assert!((r.in_view.recall - 0.5).abs() < 1e-9);
        assert!((r.in_view.precision - 0.5).abs() < 1e-9);
        // The same boxes, the found cell in view judged cut (its nucleus runs on to the edge past
        // its box): left out of the found side; the expert side stays as it was.
        let mut cut = DetectionCounts::default();
        cut.add_frame(&found, &[true, false, false], &truth, &[], (100, 100), 0.5);
        let v = cut.in_view;
        assert_eq!(
            (v.expert, v.expert_found, v.found, v.found_paired),
            (2, 1, 1, 1)
        );
        assert!(square(1.5, 1.5, 97.0).clear_of_edge(100.0, 100.0));
        assert!(!square(1.0, 50.0, 10.0).clear_of_edge(100.0, 100.0));
        assert!(!square(50.0, 50.0, 49.5).clear_of_edge(100.0, 100.0));
    }

    #[test]
    fn voc_and_yolo_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let voc = dir.path().join("a.xml");
        std::fs::write(
            &voc,
            "<annotation><object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>\
             <object><name>WBC</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>",
        )
        .unwrap();
        let b = read_voc_wbc(&voc).unwrap();
        assert_eq!(
            b,
            vec![BoxPx {
                x0: 10.0,
                y0: 20.0,
                x1: 30.0,
                y1: 40.0
            }]
        );
        let yolo = dir.path().join("a.txt");
        std::fs::write(&yolo, "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.125 0.125\n").unwrap();
        let b = read_yolo_wbc(&yolo, 100, 200, 0).unwrap();
        assert_eq!(
            b,
            vec![BoxPx {
                x0: 25.0,
                y0: 50.0,
                x1: 75.0,
                y1: 150.0
            }]
        );
        // The other classes' boxes are kept apart, for the label check.
        let all = read_yolo(&yolo, 100, 200, 0).unwrap();
        assert_eq!(all.wbc, b);
        assert_eq!(
            all.other,
            vec![BoxPx {
                x0: 18.75,
                y0: 37.5,
                x1: 31.25,
                y1: 62.5
            }]
        );
        let all = read_voc(&voc).unwrap();
        assert_eq!((all.wbc.len(), all.other), (1, vec![square(1.0, 1.0, 4.0)]));
        // An object of another class whose box cannot be read is left out; a WBC one is an error.
        std::fs::write(
            &voc,
            "<annotation><object><name>RBC</name><bndbox><xmin>1</xmin></bndbox></object>\
             <object><name>WBC</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>",
        )
        .unwrap();
        let all = read_voc(&voc).unwrap();
        assert_eq!((all.wbc.len(), all.other.len()), (1, 0));
        std::fs::write(&yolo, "0 0.5 oops 0.5 0.5\n").unwrap();
        let e = read_yolo_wbc(&yolo, 100, 200, 0).unwrap_err().to_string();
        assert!(e.ends_with("a.txt:1:7: cy `oops` is not a number"), "{e}");
        // A frame without its label file is named, with what is expected; an empty file is a frame
        // without cells.
        let e = read_yolo(&dir.path().join("none.txt"), 100, 200, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("none.txt: no such label file: every image needs one of the same name"),
            "{e}"
        );
        std::fs::write(&yolo, "").unwrap();
        assert_eq!(
            read_yolo(&yolo, 100, 200, 0).unwrap(),
            ExpertBoxes::default()
        );
    }

    #[test]
    fn boxes_the_annotation_contradicts_itself_on_are_set_aside() {
        // Expert white-cell boxes: a cell (0), the same cell boxed again (1), a cell also boxed as a
        // red cell (2), a cell far from the others (3). A red-cell box elsewhere (no white cell).
        let truth = [
            square(10.0, 10.0, 20.0),
            square(11.0, 10.0, 20.0),
            square(50.0, 10.0, 20.0),
            square(10.0, 60.0, 20.0),
        ];
        let other = [square(51.0, 11.0, 20.0), square(70.0, 70.0, 10.0)];
        // Found: cell 0 twice (each box pairs with one of its expert boxes), the set-aside cell,
        // and a false box on the red cell elsewhere; cell 3 missed.
        let found = [
            square(10.0, 10.0, 20.0),
            square(11.5, 10.0, 20.0),
            square(50.0, 10.0, 20.0),
            square(70.0, 70.0, 10.0),
        ];
        let mut d = DetectionCounts::default();
        let unpaired = d.add_frame(&found, &clear(&found), &truth, &other, (100, 100), 0.5);
        assert_eq!(unpaired.missed, vec![3]);
        assert!(unpaired.missed_set_aside.is_empty());
        // Found once, the cell boxed twice leaves its second box missed, but not counted so over
        // the agreed cells; nor is the set-aside box, missed.
        let once = DetectionCounts::default().add_frame(
            &found[..1],
            &[true],
            &truth,
            &other,
            (100, 100),
            0.5,
        );
        assert_eq!(once.missed, vec![1, 2, 3]);
        assert_eq!(once.missed_set_aside, vec![1, 2]);
        let errors = once.errors("f", &found[..1], &truth).unwrap();
        assert_eq!(
            errors.missed_set_aside,
            vec![[11.0, 10.0, 31.0, 30.0], [50.0, 10.0, 70.0, 30.0]]
        );
        let r = d.report(0, Vec::new());
        // The raw scores count every box as it is.
        assert_eq!(
            (r.true_positives, r.false_positives, r.false_negatives),
            (3, 1, 1)
        );
        let c = r.consistent.counts;
        assert_eq!((c.also_another_class, c.second_boxes), (1, 1));
        // Two cells agreed on (0 and 3), one found; the found box on the set-aside cell counts
        // for nothing; the second box on cell 0 and the box on the red cell are false.
        assert_eq!((c.expert, c.expert_found), (2, 1));
        assert_eq!((c.found, c.found_paired), (3, 1));
        assert!((r.consistent.recall - 0.5).abs() < 1e-9);
        // A found box left unpaired on a set-aside cell (its expert box taken by another) counts
        // for nothing either.
        let mut d = DetectionCounts::default();
        d.add_frame(
            &[truth[2], found[2]],
            &[true; 2],
            &truth[2..3],
            &other,
            (100, 100),
            0.5,
        );
        let c = d.consistent;
        assert_eq!((c.expert, c.found, c.also_another_class), (0, 0, 1));
        // Without other classes or second boxes the scores are the raw ones.
        let mut plain = DetectionCounts::default();
        plain.add_frame(
            &found[2..],
            &clear(&found[2..]),
            &truth[2..],
            &[],
            (100, 100),
            0.5,
        );
        let r = plain.report(0, Vec::new());
        assert_eq!(
            (r.consistent.precision, r.consistent.recall),
            (r.precision, r.recall)
        );
    }

    /// The error for a YOLO label file holding `text`, after the file's name.
    fn yolo_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let yolo = dir.path().join("b.txt");
        std::fs::write(&yolo, text).unwrap();
        let e = read_yolo_wbc(&yolo, 640, 480, 0).unwrap_err().to_string();
        e.split_once("b.txt:")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or(e)
    }

    #[test]
    fn yolo_lines_that_cannot_be_right_are_refused_at_their_line_and_column() {
        let pixels = yolo_error("0 0.5 0.5 0.2 0.2\n\n0  320 240 64 64\n");
        assert!(
            pixels.starts_with("3:4: cx 320 is outside 0..1"),
            "{pixels}"
        );
        let size = yolo_error("2 0.5 0.5 0 0.2\n");
        assert!(size.starts_with("1:11: w 0 is not above 0"), "{size}");
        let class = yolo_error("0.5 0.5 0.5 0.2 0.2\n");
        assert!(
            class.starts_with("1:1: class 0.5 is not a class number"),
            "{class}"
        );
        assert_eq!(
            yolo_error("0 nan 0.5 0.2 0.2"),
            "1:3: cx `nan` is not a number"
        );
        assert_eq!(
            yolo_error("0 0.5 0.5 0.2\n"),
            "1:1: expected 5 fields (class cx cy w h), found 4"
        );
        // edges are fine: a centre on the frame's edge and a box as large as the frame
        let dir = tempfile::tempdir().unwrap();
        let yolo = dir.path().join("c.txt");
        std::fs::write(&yolo, "\t0 1 0 1.0 1\n1 0.0 1.0 0.01 0.01\n").unwrap();
        assert_eq!(read_yolo_wbc(&yolo, 10, 10, 0).unwrap().len(), 1);
    }

    #[test]
    fn voc_objects_that_cannot_be_right_are_refused_at_their_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let voc = dir.path().join("v.xml");
        let object = |name: &str, corners: &str| {
            format!("  <object><name>{name}</name><bndbox>{corners}</bndbox></object>\n")
        };
        let whole = "<xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>";
        let error = |objects: &[String]| {
            std::fs::write(
                &voc,
                format!("<annotation>\n{}</annotation>\n", objects.concat()),
            )
            .unwrap();
            read_voc_wbc(&voc)
                .map(|b| b.len())
                .map_err(|e| e.to_string())
        };
        // a red cell with no area (BCCD holds two) is not read; a white cell's must be whole
        let flat = "<xmin>30</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>";
        assert_eq!(error(&[object("RBC", flat), object("WBC", whole)]), Ok(1));
        let e = error(&[object("WBC", whole), object("WBC", flat)]).unwrap_err();
        assert!(
            e.ends_with("v.xml:3:3: WBC box has no area (xmin 30 xmax 30, ymin 2 ymax 40)"),
            "{e}"
        );
        let no_ymax = "<xmin>1</xmin><ymin>2</ymin><xmax>30</xmax>";
        let e = error(&[object("WBC", no_ymax)]).unwrap_err();
        assert!(
            e.ends_with("v.xml:2:3: WBC object without a numeric <ymax>"),
            "{e}"
        );
        // The annotated picture's size, where given, must be the frame's.
        let size = "<size>\n<width>640</width>\n<height>480</height>\n</size>";
        let sized = format!(
            "<annotation>\n  {size}\n{}</annotation>\n",
            object("WBC", whole)
        );
        std::fs::write(&voc, sized).unwrap();
        assert_eq!(read_voc_of_frame(&voc, 640, 480).unwrap().wbc.len(), 1);
        assert_eq!(read_voc(&voc).unwrap().wbc.len(), 1);
        let e = read_voc_of_frame(&voc, 320, 240).unwrap_err().to_string();
        assert!(
            e.ends_with("v.xml:2:3: annotated on a 640 × 480 picture, but its frame is 320 × 240: resized since? VOC boxes are in the annotated picture's pixels"),
            "{e}"
        );
        let without_size = format!("<annotation>\n{}</annotation>\n", object("WBC", whole));
        std::fs::write(&voc, without_size).unwrap();
        assert_eq!(read_voc_of_frame(&voc, 320, 240).unwrap().wbc.len(), 1);
        std::fs::write(&voc, "0 0.5 0.5 0.2 0.2\n").unwrap();
        let e = read_voc_wbc(&voc).unwrap_err().to_string();
        assert!(
            e.ends_with("v.xml: not a Pascal VOC annotation (no <annotation> element)"),
            "{e}"
        );
    }
}
