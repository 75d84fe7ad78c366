//! Operator input and the corrections it makes: keys typed on the terminal and GPIO buttons become
//! `OperatorCommand`s (pause, next screen, correct or discard the last cell, reset with
//! confirmation, quit); every correction is journaled and appended to `corrections.csv`, a table of
//! model class versus operator class with the cell's crop, for retraining.

use crate::tally::{Entry, Record};
use embedded_hal::digital::InputPin;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors from operator input devices and the corrections file.
#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("{path}: cannot write corrections: {message}")]
    Corrections { path: String, message: String },
    #[error("buttons on {chip}: {message}")]
    Buttons { chip: String, message: String },
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    TogglePause,
    NextScreen,
    /// Remove the last counted cell (not a white cell, or counted twice).
    DiscardLast,
    /// Give the last counted cell another class (a model class or REVIEW).
    ReassignLast(String),
    /// First press asks for confirmation, a second one within `RESET_CONFIRM` resets.
    Reset,
    /// Stop the run and write the report.
    Quit,
}

/// How long a reset request waits for its confirmation.
pub const RESET_CONFIRM: Duration = Duration::from_secs(10);

/// A source of operator commands, polled once per frame.
pub trait Controls {
    fn poll(&mut self) -> Vec<OperatorCommand>;
}

/// No operator input (headless, tests).
pub struct NoControls;

impl Controls for NoControls {
    fn poll(&mut self) -> Vec<OperatorCommand> {
        Vec::new()
    }
}

/// The keys understood on the terminal, one command per line.
pub const KEY_HELP: &str =
    "keys (then Enter): p pause/resume, n next screen, d discard last cell, r CODE reassign last cell \
     (e.g. r LYT, r REVIEW), x reset (twice to confirm), q quit";

/// Reads one typed line as a command; `Err` says what was not understood.
pub fn parse_key_line(line: &str) -> Result<Option<OperatorCommand>, String> {
    let mut words = line.split_whitespace();
    let Some(key) = words.next() else {
        return Ok(None);
    };
    let cmd = match key.to_ascii_lowercase().as_str() {
        "p" | "pause" => OperatorCommand::TogglePause,
        "n" | "next" => OperatorCommand::NextScreen,
        "d" | "discard" => OperatorCommand::DiscardLast,
        "x" | "reset" => OperatorCommand::Reset,
        "q" | "quit" => OperatorCommand::Quit,
        "r" | "reassign" => match words.next() {
            Some(code) => OperatorCommand::ReassignLast(code.to_ascii_uppercase()),
            None => return Err("r needs a class code, e.g. `r LYT`".into()),
        },
        other => return Err(format!("unknown key {other:?}; {KEY_HELP}")),
    };
    if words.next().is_some() {
        return Err(format!("{line:?}: one command per line; {KEY_HELP}"));
    }
    Ok(Some(cmd))
}

/// Commands typed on standard input, read by a background thread so the count never waits for
/// the keyboard. When standard input ends (a service, a closed pipe) there are simply no more.
pub struct KeyControls {
    lines: mpsc::Receiver<String>,
}

impl KeyControls {
    pub fn from_stdin() -> KeyControls {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        KeyControls { lines: rx }
    }
}

impl Controls for KeyControls {
    fn poll(&mut self) -> Vec<OperatorCommand> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            match parse_key_line(&line) {
                Ok(Some(cmd)) => out.push(cmd),
                Ok(None) => {}
                Err(e) => log::warn!("{e}"),
            }
        }
        out
    }
}

/// The four buttons of a counting station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    StartPause,
    NextScreen,
    Correct,
    Reset,
}

/// Held at least this long, a press is a long press.
pub const LONG_PRESS: Duration = Duration::from_millis(1500);
/// A level must hold this long to count (contact bounce).
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Turns sampled levels of one button into presses: debounced, short (on release) or long (once,
/// while still held).
#[derive(Debug, Clone, Default)]
pub struct PressDecoder {
    stable: bool,
    candidate: Option<(bool, Instant)>,
    pressed_at: Option<Instant>,
    long_sent: bool,
}

/// A decoded press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Short,
    Long,
}

impl PressDecoder {
    /// Feeds one sample (`pressed` at `now`); returns a press when one completes.
    pub fn sample(&mut self, pressed: bool, now: Instant) -> Option<Press> {
        if pressed != self.stable {
            match self.candidate {
                Some((level, since)) if level == pressed => {
                    if now.duration_since(since) >= DEBOUNCE {
                        self.candidate = None;
                        return self.settle(pressed, since);
                    }
                }
                _ => self.candidate = Some((pressed, now)),
            }
        } else {
            self.candidate = None;
        }
        match self.pressed_at {
            Some(t) if self.stable && !self.long_sent && now.duration_since(t) >= LONG_PRESS => {
                self.long_sent = true;
                Some(Press::Long)
            }
            _ => None,
        }
    }

    fn settle(&mut self, pressed: bool, since: Instant) -> Option<Press> {
        self.stable = pressed;
        if pressed {
            self.pressed_at = Some(since);
            self.long_sent = false;
            return None;
        }
        let was_long = self.long_sent;
        self.pressed_at = None;
        (!was_long).then_some(Press::Short)
    }
}

/// What a press of each button means: start/pause and next screen on a short press; correct sends
/// the last cell to review (short) or discards it (long); reset needs a long press (and a second
/// one to confirm).
pub fn command_for(button: Button, press: Press) -> Option<OperatorCommand> {
    match (button, press) {
        (Button::StartPause, Press::Short) => Some(OperatorCommand::TogglePause),
        (Button::NextScreen, Press::Short) => Some(OperatorCommand::NextScreen),
        (Button::Correct, Press::Short) => Some(OperatorCommand::ReassignLast(
            crate::classify::REVIEW.to_string(),
        )),
        (Button::Correct, Press::Long) => Some(OperatorCommand::DiscardLast),
        (Button::Reset, Press::Long) => Some(OperatorCommand::Reset),
        _ => None,
    }
}

/// Buttons on input pins (on the board: GPIO character-device lines through linux-embedded-hal).
pub struct Buttons<P: InputPin> {
    pins: Vec<(Button, P, PressDecoder)>,
}

impl<P: InputPin> Buttons<P> {
    /// `pins` read high while pressed (request active-low lines for buttons to ground).
    pub fn new(pins: Vec<(Button, P)>) -> Buttons<P> {
        Buttons {
            pins: pins
                .into_iter()
                .map(|(b, p)| (b, p, PressDecoder::default()))
                .collect(),
        }
    }

    /// Samples every button at `now`.
    pub fn poll_at(&mut self, now: Instant) -> Vec<OperatorCommand> {
        let mut out = Vec::new();
        for (button, pin, decoder) in &mut self.pins {
            let pressed = match pin.is_high() {
                Ok(level) => level,
                Err(e) => {
                    log::warn!("reading button {button:?}: {e:?}");
                    continue;
                }
            };
            if let Some(cmd) = decoder
                .sample(pressed, now)
                .and_then(|press| command_for(*button, press))
            {
                out.push(cmd);
            }
        }
        out
    }
}

impl<P: InputPin> Controls for Buttons<P> {
    fn poll(&mut self) -> Vec<OperatorCommand> {
        self.poll_at(Instant::now())
    }
}

/// Several inputs at once (keys and buttons).
pub struct AllControls(pub Vec<Box<dyn Controls>>);

impl Controls for AllControls {
    fn poll(&mut self) -> Vec<OperatorCommand> {
        self.0.iter_mut().flat_map(|c| c.poll()).collect()
    }
}

/// Opens the buttons a profile names: lines on a GPIO character device, pressed = active.
#[cfg(target_os = "linux")]
pub fn open_buttons(
    cfg: &crate::config::ButtonsConfig,
) -> Result<Buttons<linux_embedded_hal::CdevPin>, OperatorError> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let fail = |e: &dyn std::fmt::Display| OperatorError::Buttons {
        chip: cfg.gpio_chip.clone(),
        message: e.to_string(),
    };
    let mut chip = Chip::new(&cfg.gpio_chip).map_err(|e| fail(&e))?;
    let mut flags = LineRequestFlags::INPUT;
    if cfg.active_low {
        flags |= LineRequestFlags::ACTIVE_LOW;
    }
    let mut pins = Vec::new();
    for (button, line) in [
        (Button::StartPause, cfg.start_pause),
        (Button::NextScreen, cfg.next_screen),
        (Button::Correct, cfg.correct),
        (Button::Reset, cfg.reset),
    ] {
        let handle = chip
            .get_line(line)
            .and_then(|l| l.request(flags.clone(), 0, "marrowscope"))
            .map_err(|e| fail(&format!("line {line}: {e}")))?;
        let pin = linux_embedded_hal::CdevPin::new(handle).map_err(|e| fail(&e))?;
        pins.push((button, pin));
    }
    Ok(Buttons::new(pins))
}

/// The corrections table (`corrections.csv` in the report folder): one row per correction, with
/// the model's class and probability, the operator's class (or DISCARD) and the stored crop, so
/// corrected crops can go back into training.
pub struct CorrectionLog {
    path: PathBuf,
}

/// The header of corrections.csv.
pub const CORRECTIONS_HEADER: &str =
    "unix_time,cell_id,frame,x_um,y_um,model_class,probability,counted_as,corrected_to,crop";

impl CorrectionLog {
    pub fn new(report_dir: &Path) -> CorrectionLog {
        CorrectionLog {
            path: report_dir.join("corrections.csv"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends (and syncs) one correction of `record`; `entry` is the journal entry made for it.
    pub fn append(&self, record: &Record, entry: &Entry, crop: &str) -> Result<(), OperatorError> {
        let err = |e: std::io::Error| OperatorError::Corrections {
            path: self.path.display().to_string(),
            message: e.to_string(),
        };
        let corrected_to = match entry {
            Entry::Reassign { class, .. } => class.as_str(),
            Entry::Discard { .. } => "DISCARD",
            Entry::Count { .. } | Entry::Start { .. } => return Ok(()),
        };
        let new_file = !self.path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut text = String::new();
        if new_file {
            text.push_str(CORRECTIONS_HEADER);
            text.push('\n');
        }
        text.push_str(&format!(
            "{now},{},{},{:.1},{:.1},{},{:.4},{},{},{}\n",
            record.id,
            record.frame,
            record.world.0,
            record.world.1,
            record.model_class,
            record.probability,
            record.class,
            corrected_to,
            crop
        ));
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_become_commands() {
        assert_eq!(parse_key_line("p"), Ok(Some(OperatorCommand::TogglePause)));
        assert_eq!(
            parse_key_line(" r lyt "),
            Ok(Some(OperatorCommand::ReassignLast("LYT".into())))
        );
        assert_eq!(parse_key_line("d"), Ok(Some(OperatorCommand::DiscardLast)));
        assert_eq!(parse_key_line(""), Ok(None));
        assert!(parse_key_line("r").unwrap_err().contains("class code"));
        assert!(parse_key_line("z").unwrap_err().contains("unknown key"));
        assert!(parse_key_line("d d").is_err());
    }

    /// Samples a level sequence `(ms, pressed)` through a decoder.
    fn decode(samples: &[(u64, bool)]) -> Vec<(u64, Press)> {
        let t0 = Instant::now();
        let mut d = PressDecoder::default();
        samples
            .iter()
            .filter_map(|&(ms, level)| {
                d.sample(level, t0 + Duration::from_millis(ms))
                    .map(|p| (ms, p))
            })
            .collect()
    }

    #[test]
    fn short_press_fires_on_release_and_bounce_is_ignored() {
        let samples = [
            (0, false),
            (10, true),
            (15, false), // bounce
            (20, true),
            (45, true), // stable for 25 ms: pressed
            (200, true),
            (210, false),
            (240, false), // released
        ];
        assert_eq!(decode(&samples), vec![(240, Press::Short)]);
        assert_eq!(decode(&[(0, true), (5, false), (40, false)]), vec![]);
    }

    #[test]
    fn long_press_fires_once_while_held() {
        let mut samples = vec![(0, true), (30, true)];
        samples.extend((1..=40).map(|i| (30 + i * 50, true)));
        samples.extend([(2100, false), (2150, false)]);
        assert_eq!(decode(&samples), vec![(1530, Press::Long)]);
    }

    /// An input pin that plays back a level per poll.
    struct ScriptedPin(std::collections::VecDeque<bool>);
    impl embedded_hal::digital::ErrorType for ScriptedPin {
        type Error = std::convert::Infallible;
    }
    impl InputPin for ScriptedPin {
        fn is_high(&mut self) -> Result<bool, Self::Error> {
            Ok(self.0.pop_front().unwrap_or(false))
        }
        fn is_low(&mut self) -> Result<bool, Self::Error> {
            self.is_high().map(|h| !h)
        }
    }

    #[test]
    fn buttons_map_to_commands() {
        let held = |n: usize| {
            let mut v = vec![true; n];
            v.extend([false; 3]);
            ScriptedPin(v.into())
        };
        let mut buttons = Buttons::new(vec![
            (Button::StartPause, held(3)),
            (Button::Correct, held(3)),
            (Button::Reset, held(3)),
            (Button::NextScreen, held(3)),
        ]);
        let t0 = Instant::now();
        let mut got = Vec::new();
        for i in 0..8 {
            got.extend(buttons.poll_at(t0 + Duration::from_millis(30 * i)));
        }
        // Short presses: pause, review-last, next screen; a short press of reset does nothing.
        assert_eq!(
            got,
            vec![
                OperatorCommand::TogglePause,
                OperatorCommand::ReassignLast("REVIEW".into()),
                OperatorCommand::NextScreen,
            ]
        );
        let mut reset = Buttons::new(vec![(Button::Reset, held(80))]);
        let got: Vec<_> = (0..90)
            .flat_map(|i| reset.poll_at(t0 + Duration::from_millis(30 * i)))
            .collect();
        assert_eq!(got, vec![OperatorCommand::Reset]);
    }

    #[test]
    fn corrections_csv_has_header_once_and_one_row_per_correction() {
        let dir = tempfile::tempdir().unwrap();
        let log = CorrectionLog::new(dir.path());
        let record = Record {
            id: 7,
            class: "NGS".into(),
            model_class: "NGS".into(),
            probability: 0.91,
            frame: 12,
            world: (10.0, 20.5),
        };
        log.append(
            &record,
            &Entry::Reassign {
                id: 7,
                class: "NGB".into(),
            },
            "crops/000007_NGS.png",
        )
        .unwrap();
        log.append(&record, &Entry::Discard { id: 7 }, "crops/000007_NGS.png")
            .unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CORRECTIONS_HEADER);
        assert!(
            lines[1].ends_with(",7,12,10.0,20.5,NGS,0.9100,NGS,NGB,crops/000007_NGS.png"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains(",NGS,DISCARD,"), "{}", lines[2]);
    }
}
