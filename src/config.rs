//! Board profiles: what camera, optics, localizer settings, model, display and counting rules a
//! particular microscope station uses. Profiles are RON files (`board/*.ron`); every error names the
//! file, the line and column, and the field at fault.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors while reading or validating a board profile.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read board profile: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Syntax {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {what}")]
    NotAProfile { path: String, what: String },
    #[error("{path}:{line}:{col}: invalid `{field}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        col: usize,
        field: String,
        message: String,
    },
}

/// Camera settings (V4L2).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Device node, e.g. `/dev/video0`.
    pub device: String,
    pub width: u32,
    pub height: u32,
    /// FourCC: `MJPG` or `YUYV`.
    pub pixel_format: String,
    pub fps: u32,
}

/// Optical scale of the camera image at the sample plane.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpticsConfig {
    /// Micrometres per camera pixel (objective, tube lens, sensor pitch and binning together).
    pub um_per_px: f32,
}

/// Settings of the classical white-cell localizer, in physical units.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LocalizerConfig {
    /// Smallest white-cell nucleus diameter to accept, µm.
    pub min_nucleus_um: f32,
    /// Largest white-cell diameter to accept, µm.
    pub max_cell_um: f32,
    /// Nuclear lobes closer than this are merged into one cell, µm.
    pub merge_um: f32,
    /// Frames whose focus score (variance of the Laplacian on the stain channel) is below this are skipped.
    pub min_focus: f32,
}

impl Default for LocalizerConfig {
    fn default() -> Self {
        LocalizerConfig {
            min_nucleus_um: 3.5,
            max_cell_um: 30.0,
            merge_um: 1.6,
            min_focus: 2.0,
        }
    }
}

/// Which display the live count is drawn on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum DisplayConfig {
    /// No display (headless counting).
    None,
    /// Progress lines on the terminal plus a PNG snapshot of the count screen.
    Png {
        path: String,
        width: u32,
        height: u32,
    },
    /// Monochrome SSD1306 OLED on I2C.
    Ssd1306 { i2c: String, address: u8 },
    /// ST7789 / ILI9341 colour panel on SPI: `spi` is the spidev node, the data/command (and
    /// optional reset) lines are offsets on the GPIO character device `gpio_chip`.
    Spi {
        spi: String,
        controller: PanelController,
        width: u32,
        height: u32,
        /// Inverted colours (most ST7789 modules need it).
        #[serde(default)]
        invert: bool,
        gpio_chip: String,
        dc_line: u32,
        #[serde(default)]
        reset_line: Option<u32>,
    },
    /// Linux framebuffer device (HDMI / DSI).
    Framebuffer { device: String },
}

/// The controller chip of an SPI colour panel.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum PanelController {
    St7789,
    Ili9341,
}

impl PanelController {
    pub fn name(&self) -> &'static str {
        match self {
            PanelController::St7789 => "st7789",
            PanelController::Ili9341 => "ili9341",
        }
    }
}

/// Four push buttons on a GPIO character device (line offsets), wired to ground unless
/// `active_low` is false.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ButtonsConfig {
    pub gpio_chip: String,
    pub start_pause: u32,
    pub next_screen: u32,
    pub correct: u32,
    pub reset: u32,
    #[serde(default = "default_true")]
    pub active_low: bool,
}

fn default_true() -> bool {
    true
}

/// A complete board profile.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    pub name: String,
    pub camera: CameraConfig,
    pub optics: OpticsConfig,
    #[serde(default)]
    pub localizer: LocalizerConfig,
    /// Path of the model manifest (RON), relative to the profile file.
    pub model: String,
    /// Learned white-cell detector manifest (RON), relative to the profile file. When set, cells in
    /// camera frames and replayed files are found with it; the virtual slide, which is drawn rather
    /// than photographed, keeps the classical localizer. None: the classical localizer everywhere.
    #[serde(default)]
    pub detector: Option<String>,
    pub display: DisplayConfig,
    /// Operator buttons (none when absent; keys on the terminal always work).
    #[serde(default)]
    pub buttons: Option<ButtonsConfig>,
    /// Stop counting at this many classified cells (e.g. 200 or 500).
    pub count_target: u32,
    /// Folder for reports and the count journal, relative to the working directory.
    pub report_dir: String,
    /// Source used when `run` gets no `--source`.
    #[serde(default = "default_source")]
    pub default_source: String,
    /// Classes that raise an alert whenever one is counted, besides blasts.
    #[serde(default)]
    pub alert_classes: Vec<String>,
    /// Crops classified per tract call.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Folder this profile was read from (set after parsing).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The profile file itself (set after parsing).
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_source() -> String {
    "virtual:1".into()
}

/// The largest batch of crops classified at once: 256 crops of 128 × 128 are 50 MB of input,
/// and a board has no more cells in view than that.
pub const MAX_BATCH: usize = 256;

fn default_batch() -> usize {
    8
}

/// How errors name the built-in desktop profile.
const BUILT_IN_ORIGIN: &str = "board/desktop.ron (built in)";

/// The built-in desktop profile, used when `--board` is not given.
pub const DESKTOP_PROFILE: &str = include_str!("../board/desktop.ron");

impl BoardProfile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<BoardProfile, ConfigError> {
        let text = crate::textfile::read(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut profile = Self::parse(&text, &path.display().to_string(), base)?;
        profile.path = path.to_path_buf();
        Ok(profile)
    }

    /// The built-in desktop profile; its model path is resolved against `models_dir`.
    pub fn desktop_default() -> BoardProfile {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("board");
        Self::parse(DESKTOP_PROFILE, BUILT_IN_ORIGIN, base)
            .expect("the built-in desktop profile is valid (tested)")
    }

    /// Parses and validates profile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, base_dir: PathBuf) -> Result<BoardProfile, ConfigError> {
        let mut profile: BoardProfile =
            ron::from_str(text).map_err(|e| match RonFile::BoardProfile.misplaced(text) {
                Some(what) => ConfigError::NotAProfile {
                    path: origin.to_string(),
                    what,
                },
                None => ConfigError::Syntax {
                    path: origin.to_string(),
                    line: e.span.start.line,
                    col: e.span.start.col,
                    message: e.code.to_string(),
                },
            })?;
        profile.base_dir = base_dir;
        profile.camera.pixel_format = as_fourcc(&profile.camera.pixel_format);
        profile.validate(text, origin)?;
        Ok(profile)
    }

    /// The model manifest path, resolved against the profile's folder.
    pub fn model_path(&self) -> PathBuf {
        self.resolve(&self.model)
    }

    /// The learned detector's manifest path, if the profile names one, resolved against its folder.
    pub fn detector_path(&self) -> Option<PathBuf> {
        self.detector.as_deref().map(|d| self.resolve(d))
    }

    fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| {
            let (line, col) = locate_field(text, field);
            ConfigError::Invalid {
                path: origin.to_string(),
                line,
                col,
                field: field.to_string(),
                message,
            }
        };
        self.validate_camera(&invalid)?;
        self.validate_localizer(&invalid)?;
        self.validate_counting(&invalid)?;
        self.validate_display(&invalid)?;
        self.validate_buttons(&invalid)?;
        self.validate_models(&invalid)
    }

    /// A plausible scale, and a frame size, pixel format and frame rate a camera can give.
    fn validate_camera(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let o = &self.optics;
        if !crate::scale::plausible_um_per_px(o.um_per_px) {
            return Err(invalid(
                "um_per_px",
                format!(
                    "{} {}",
                    o.um_per_px,
                    crate::scale::implausible_scale_reason()
                ),
            ));
        }
        let c = &self.camera;
        if c.width < 64 || c.height < 64 || c.width > 8192 || c.height > 8192 {
            return Err(invalid(
                "width",
                format!("{}x{} is not a usable frame size", c.width, c.height),
            ));
        }
        if !matches!(c.pixel_format.as_str(), "MJPG" | "YUYV") {
            return Err(invalid(
                "pixel_format",
                format!(
                    "{:?} is not supported (use \"MJPG\" or \"YUYV\")",
                    c.pixel_format
                ),
            ));
        }
        if c.fps == 0 || c.fps > 240 {
            return Err(invalid(
                "fps",
                format!("{} is not a usable frame rate", c.fps),
            ));
        }
        Ok(())
    }

    /// A count target, a report folder, a source and a batch size.
    fn validate_counting(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.count_target == 0 {
            return Err(invalid("count_target", "must be at least 1".to_string()));
        }
        if self.report_dir.trim().is_empty() {
            return Err(invalid("report_dir", "names no folder".to_string()));
        }
        if let Err(e) = crate::source::SourceSpec::parse(&self.default_source) {
            return Err(invalid("default_source", e.to_string()));
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(invalid(
                "batch",
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        Ok(())
    }

    /// A PNG screen named as a PNG picture, of sides it can be drawn at; an SPI screen that fits
    /// its panel.
    fn validate_display(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if let DisplayConfig::Png {
            path,
            width,
            height,
        } = &self.display
        {
            if !is_png_name(path) {
                return Err(invalid(
                    "display",
                    format!("{path:?}: the screen snapshot is a PNG picture; name it so, e.g. \"screen.png\""),
                ));
            }
            if !(PNG_SIDES.contains(width) && PNG_SIDES.contains(height)) {
                return Err(invalid(
                    "display",
                    format!(
                        "a {width}x{height} PNG screen: each side must be {} to {} px",
                        PNG_SIDES.start(),
                        PNG_SIDES.end()
                    ),
                ));
            }
        }
        if let DisplayConfig::Spi { width, height, .. } = &self.display {
            let (short, long) = ((*width).min(*height), (*width).max(*height));
            if short == 0 || short > 240 || long > 320 {
                return Err(invalid(
                    "display",
                    format!("{width}x{height} does not fit a 240x320 SPI panel"),
                ));
            }
        }
        Ok(())
    }

    /// No two buttons on one GPIO line.
    fn validate_buttons(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if let Some(b) = &self.buttons {
            let mut lines = [b.start_pause, b.next_screen, b.correct, b.reset];
            lines.sort_unstable();
            if lines.windows(2).any(|w| w[0] == w[1]) {
                return Err(invalid(
                    "buttons",
                    "two buttons share one GPIO line".to_string(),
                ));
            }
        }
        Ok(())
    }

    /// A classifier's manifest named, and a detector's where the field is given.
    fn validate_models(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.model.trim().is_empty() {
            return Err(invalid("model", "names no model manifest".to_string()));
        }
        if self
            .detector
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            return Err(invalid(
                "detector",
                "names no detector manifest (leave the field out for the classical localizer)"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// The localizer's sizes are those of white cells (a nucleus of at least 1 µm, a cell of at most
    /// 150 µm, the size of the largest megakaryocytes), lobes merge over less than a cell, and the
    /// focus bar is not negative; NaN is refused everywhere.
    fn validate_localizer(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let l = &self.localizer;
        let rules = [
            (
                "max_cell_um",
                l.max_cell_um <= 150.0,
                format!(
                    "{} µm is not the size of a marrow cell (at most 150)",
                    l.max_cell_um
                ),
            ),
            (
                "min_nucleus_um",
                l.min_nucleus_um >= 1.0 && l.min_nucleus_um < l.max_cell_um,
                format!(
                    "{} µm: needs 1 <= min_nucleus_um < max_cell_um",
                    l.min_nucleus_um
                ),
            ),
            (
                "merge_um",
                l.merge_um >= 0.0 && l.merge_um < l.max_cell_um,
                format!("{} µm: needs 0 <= merge_um < max_cell_um", l.merge_um),
            ),
            (
                "min_focus",
                l.min_focus >= 0.0 && l.min_focus.is_finite(),
                format!("{} is not a focus score (0 or more)", l.min_focus),
            ),
        ];
        // A comparison with NaN is false, so NaN breaks every rule it is in.
        match rules.into_iter().find(|(_, holds, _)| !holds) {
            Some((field, _, message)) => Err(invalid(field, message)),
            None => Ok(()),
        }
    }

    /// Spells each alert class as the model (`model_name`, with `classes`) does (`bla` alerts on
    /// `BLA`), and refuses one the model does not have: no cell would ever raise that alert. The
    /// error points at `alert_classes` in the profile.
    pub fn fit_alert_classes(
        &mut self,
        model_name: &str,
        classes: &[String],
    ) -> Result<(), ConfigError> {
        let unknown = self.alert_classes.iter_mut().find_map(|alert| {
            let Some(class) = crate::classify::class_as_model_spells(alert, classes) else {
                return Some(alert.clone());
            };
            if class != alert {
                log::info!("alert class {alert:?} is the model's class {class}");
                *alert = class.clone();
            }
            None
        });
        let Some(unknown) = unknown else {
            return Ok(());
        };
        let (origin, text) = if self.path.as_os_str().is_empty() {
            (BUILT_IN_ORIGIN.to_string(), DESKTOP_PROFILE.to_string())
        } else {
            let text = crate::textfile::read(&self.path).unwrap_or_default();
            (self.path.display().to_string(), text)
        };
        let (line, col) = locate_field(&text, "alert_classes");
        Err(ConfigError::Invalid {
            path: origin,
            line,
            col,
            field: "alert_classes".into(),
            message: format!(
                "{unknown:?} is not a class of model {model_name} (its classes: {})",
                classes.join(", ")
            ),
        })
    }
}

/// A supported pixel format typed in lower case or with spaces (`mjpg`) as its FourCC (`MJPG`);
/// anything else as typed, for `validate` to refuse in the user's own words.
fn as_fourcc(typed: &str) -> String {
    let fourcc = typed.trim().to_ascii_uppercase();
    if matches!(fourcc.as_str(), "MJPG" | "YUYV") {
        fourcc
    } else {
        typed.to_string()
    }
}

/// The kinds of RON file a user gives marrowscope, told apart so that one given in another's
/// place is named as what it is, not as an unexpected field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RonFile {
    BoardProfile,
    ClassifierManifest,
    DetectorManifest,
}

impl RonFile {
    const ALL: [RonFile; 3] = [
        RonFile::BoardProfile,
        RonFile::ClassifierManifest,
        RonFile::DetectorManifest,
    ];

    fn reads(self, text: &str) -> bool {
        match self {
            RonFile::BoardProfile => ron::from_str::<BoardProfile>(text).is_ok(),
            RonFile::ClassifierManifest => {
                ron::from_str::<crate::classify::ModelManifest>(text).is_ok()
            }
            RonFile::DetectorManifest => {
                ron::from_str::<crate::detect::DetectorManifest>(text).is_ok()
            }
        }
    }

    fn called(self) -> &'static str {
        match self {
            RonFile::BoardProfile => "a board profile",
            RonFile::ClassifierManifest => "a cell classifier's manifest",
            RonFile::DetectorManifest => "a cell detector's manifest",
        }
    }

    fn given_with(self) -> &'static str {
        match self {
            RonFile::BoardProfile => "--board",
            RonFile::ClassifierManifest => "--model, or name it in a profile's `model`",
            RonFile::DetectorManifest => "--detector, or name it in a profile's `detector`",
        }
    }

    /// For text that failed to read as this kind but reads as another, what it is and where it
    /// goes: "a board profile, given where a cell classifier's manifest goes (give it with --board)".
    pub fn misplaced(self, text: &str) -> Option<String> {
        let found = Self::ALL
            .into_iter()
            .filter(|kind| *kind != self)
            .find(|kind| kind.reads(text))?;
        Some(format!(
            "{}, given where {} goes (give it with {})",
            found.called(),
            self.called(),
            found.given_with()
        ))
    }
}

/// True for a file name ending in `.png` (any case), with a name before it.
fn is_png_name(path: &str) -> bool {
    let path = Path::new(path);
    let named_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    named_png && path.file_stem().is_some_and(|s| !s.is_empty())
}

/// Sides of a PNG count screen, pixels: from the SSD1306's 64 rows to a 4K monitor's width.
const PNG_SIDES: std::ops::RangeInclusive<u32> = 64..=4096;

/// Line and column (1-based) where `field:` first appears in the text, or (1, 1).
pub fn locate_field(text: &str, field: &str) -> (usize, usize) {
    let needle = format!("{field}:");
    for (i, line) in text.lines().enumerate() {
        if let Some(col) = line.find(&needle) {
            let before = line[..col].chars().last();
            if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                return (i + 1, col + 1);
            }
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desktop_profile_is_valid() {
        let p = BoardProfile::desktop_default();
        assert_eq!(p.name, "desktop");
        assert!(p.model_path().ends_with("models/marrow-f32.ron"));
        assert!(p
            .detector_path()
            .is_some_and(|d| d.ends_with("models/wbc-detector-fast.ron") && d.is_file()));
    }

    #[test]
    fn detector_is_optional_but_not_empty() {
        let named = "Some(\"../models/wbc-detector-fast.ron\")";
        let field = format!("    detector: {named},\n");
        assert!(DESKTOP_PROFILE.contains(&field));
        let without = DESKTOP_PROFILE.replacen(&field, "", 1);
        let p = BoardProfile::parse(&without, "x.ron", PathBuf::new()).unwrap();
        assert_eq!(p.detector_path(), None);
        let empty = DESKTOP_PROFILE.replacen(named, "Some(\" \")", 1);
        let msg = BoardProfile::parse(&empty, "x.ron", PathBuf::new())
            .unwrap_err()
            .to_string();
        let line = empty.lines().position(|l| l.contains("detector:")).unwrap() + 1;
        assert!(msg.starts_with(&format!("x.ron:{line}:")), "{msg}");
        assert!(msg.contains("`detector`"), "{msg}");
    }

    #[test]
    fn a_model_manifest_given_as_the_profile_is_named_so() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let read = |name: &str| crate::textfile::read(&models.join(name)).unwrap();
        let as_profile = |text: &str| {
            BoardProfile::parse(text, "m.ron", PathBuf::new())
                .unwrap_err()
                .to_string()
        };
        let e = as_profile(&read("marrow-int8.ron"));
        assert!(
            e.starts_with("m.ron: a cell classifier's manifest, given where a board profile goes (give it with --model"),
            "{e}"
        );
        let e = as_profile(&read("wbc-detector.ron"));
        assert!(
            e.starts_with("m.ron: a cell detector's manifest, given where a board profile goes (give it with --detector"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let text = DESKTOP_PROFILE.replacen("fps: 30", "fps: thirty", 1);
        let err = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap_err();
        let msg = err.to_string();
        let line = text.lines().position(|l| l.contains("thirty")).unwrap() + 1;
        assert!(msg.starts_with(&format!("x.ron:{line}:")), "{msg}");
    }

    #[test]
    fn invalid_value_names_field_and_line() {
        let text = DESKTOP_PROFILE.replacen("um_per_px: 0.", "um_per_px: -0.", 1);
        let err = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap_err();
        let line = text.lines().position(|l| l.contains("um_per_px")).unwrap() + 1;
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("x.ron:{line}:")), "{msg}");
        assert!(msg.contains("`um_per_px`"), "{msg}");
    }

    #[test]
    fn values_no_microscope_could_use_name_their_field_and_line() {
        let cases = [
            (
                "min_nucleus_um: 3.5",
                "min_nucleus_um: 0.001",
                "min_nucleus_um",
            ),
            ("max_cell_um: 30.0", "max_cell_um: 1e30", "max_cell_um"),
            ("max_cell_um: 30.0", "max_cell_um: NaN", "max_cell_um"),
            (
                "min_nucleus_um: 3.5",
                "min_nucleus_um: 40.0",
                "min_nucleus_um",
            ),
            ("merge_um: 1.6", "merge_um: NaN", "merge_um"),
            ("merge_um: 1.6", "merge_um: -1.0", "merge_um"),
            ("min_focus: 2.0", "min_focus: -1.0", "min_focus"),
            ("min_focus: 2.0", "min_focus: inf", "min_focus"),
            (
                "report_dir: \"marrowscope-report\"",
                "report_dir: \" \"",
                "report_dir",
            ),
            ("\"virtual:1\"", "\"virtual:q\"", "default_source"),
            ("\"virtual:1\"", "\"camera\"", "default_source"),
            (
                "width: 320, height: 240",
                "width: 0, height: 240",
                "display",
            ),
            (
                "width: 320, height: 240",
                "width: 320, height: 20000",
                "display",
            ),
            ("path: \"screen.png\"", "path: \"\"", "display"),
            ("path: \"screen.png\"", "path: \"screen.jpg\"", "display"),
            ("path: \"screen.png\"", "path: \"snapshots/\"", "display"),
        ];
        for (from, to, field) in cases {
            assert!(DESKTOP_PROFILE.contains(from), "{from}");
            let text = DESKTOP_PROFILE.replacen(from, to, 1);
            let msg = BoardProfile::parse(&text, "x.ron", PathBuf::new())
                .unwrap_err()
                .to_string();
            let line = text.lines().position(|l| l.contains(to)).unwrap() + 1;
            assert!(msg.starts_with(&format!("x.ron:{line}:")), "{to}: {msg}");
            assert!(msg.contains(&format!("`{field}`")), "{to}: {msg}");
        }
        // The edges of the ranges are usable.
        for (from, to) in [
            ("min_nucleus_um: 3.5", "min_nucleus_um: 1.0"),
            ("max_cell_um: 30.0", "max_cell_um: 150.0"),
            ("merge_um: 1.6", "merge_um: 0.0"),
            ("min_focus: 2.0", "min_focus: 0.0"),
            ("width: 320, height: 240", "width: 4096, height: 64"),
            ("path: \"screen.png\"", "path: \"/media/usb/Screen.PNG\""),
        ] {
            let text = DESKTOP_PROFILE.replacen(from, to, 1);
            assert!(
                BoardProfile::parse(&text, "x.ron", PathBuf::new()).is_ok(),
                "{to}"
            );
        }
    }

    #[test]
    fn an_alert_class_the_model_lacks_is_refused_at_its_line() {
        let classes: Vec<String> = ["BLA", "LYT"].map(String::from).to_vec();
        let mut desktop = BoardProfile::desktop_default();
        assert!(desktop.fit_alert_classes("m", &classes).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ron");
        let text = DESKTOP_PROFILE.replacen("[\"BLA\"]", "[\"BLA\", \"ZZZ\"]", 1);
        std::fs::write(&path, &text).unwrap();
        let msg = BoardProfile::load(&path)
            .unwrap()
            .fit_alert_classes("m", &classes)
            .unwrap_err()
            .to_string();
        let line = text.lines().position(|l| l.contains("ZZZ")).unwrap() + 1;
        assert!(
            msg.starts_with(&format!("{}:{line}:", path.display())),
            "{msg}"
        );
        assert!(
            msg.ends_with("\"ZZZ\" is not a class of model m (its classes: BLA, LYT)"),
            "{msg}"
        );
        let msg = desktop
            .fit_alert_classes("m", &classes[1..])
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with(BUILT_IN_ORIGIN), "{msg}");
    }

    #[test]
    fn a_pixel_format_in_lower_case_is_its_fourcc() {
        let text = DESKTOP_PROFILE.replacen("pixel_format: \"MJPG\"", "pixel_format: \"yuyv \"", 1);
        let p = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap();
        assert_eq!(p.camera.pixel_format, "YUYV");
        let text = DESKTOP_PROFILE.replacen("pixel_format: \"MJPG\"", "pixel_format: \"h264\"", 1);
        let e = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap_err();
        assert!(e.to_string().contains("\"h264\" is not supported"), "{e}");
    }

    #[test]
    fn an_alert_class_in_another_letter_case_alerts_on_the_models_class() {
        let classes: Vec<String> = ["BLA", "LYT"].map(String::from).to_vec();
        let text = DESKTOP_PROFILE.replacen("[\"BLA\"]", "[\"bla\", \" Lyt \"]", 1);
        let mut profile = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap();
        profile.fit_alert_classes("m", &classes).unwrap();
        assert_eq!(profile.alert_classes, classes);
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = DESKTOP_PROFILE.replacen("count_target:", "count_targte:", 1);
        let err = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("count_targte"), "{err}");
    }

    const RPI4: &str = include_str!("../board/rpi4-hq-camera.ron");

    #[test]
    fn spi_panel_and_buttons_profile_parses() {
        let p = BoardProfile::parse(RPI4, "rpi4.ron", PathBuf::new()).unwrap();
        match &p.display {
            DisplayConfig::Spi {
                controller,
                width,
                reset_line,
                invert,
                ..
            } => {
                assert_eq!(*controller, PanelController::St7789);
                assert_eq!((*width, *reset_line, *invert), (240, Some(27), true));
            }
            other => panic!("{other:?}"),
        }
        let b = p.buttons.expect("buttons");
        assert_eq!((b.start_pause, b.reset, b.active_low), (5, 19, true));
    }

    #[test]
    fn bad_panel_and_button_settings_are_named() {
        let text = RPI4.replacen("controller: St7789", "controller: St7735", 1);
        let err = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap_err();
        let line = text.lines().position(|l| l.contains("St7735")).unwrap() + 1;
        assert!(
            err.to_string().starts_with(&format!("x.ron:{line}:")),
            "{err}"
        );

        let text = RPI4.replacen(
            "width: 240,\n        height: 240",
            "width: 480,\n        height: 320",
            1,
        );
        let err = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("240x320 SPI panel"), "{err}");

        let text = RPI4.replacen("reset: 19", "reset: 5", 1);
        let err = BoardProfile::parse(&text, "x.ron", PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("share one GPIO line"), "{err}");
    }
}
