//! Keeps the camera going when it vanishes mid-run (a loose USB cable, a camera reset): the
//! [`Reconnecting`] source reopens the device with exponential backoff while the live loop goes on
//! (the tally, the journal and the operator's keys stay live), and numbers frames on across
//! reconnections so the tracker sees one stream.

use crate::source::{Frame, FrameSource, SourceError};
use std::time::{Duration, Instant};

/// Opens (or reopens) the underlying source.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError>>;

/// Waits that double after each failed attempt, up to a ceiling; back to the first after success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt; the one after it is twice as long (at most `max`).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Longest the source sleeps in one call while waiting to retry, so the loop stays responsive.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// A source that reopens its device after a capture failure.
pub struct Reconnecting {
    open: Opener,
    current: Option<Box<dyn FrameSource>>,
    backoff: Backoff,
    retry_at: Instant,
    attempts: u32,
    next_index: u64,
    name: String,
    /// Times the source was lost and times it came back.
    pub losses: u64,
    pub reconnects: u64,
}

impl Reconnecting {
    /// Wraps a source that is already open; `open` reopens it after a failure.
    pub fn new(first: Box<dyn FrameSource>, open: Opener, backoff: Backoff) -> Reconnecting {
        Reconnecting {
            name: first.describe(),
            open,
            current: Some(first),
            backoff,
            retry_at: Instant::now(),
            attempts: 0,
            next_index: 0,
            losses: 0,
            reconnects: 0,
        }
    }

    fn lose(&mut self, cause: &SourceError) -> SourceError {
        self.current = None;
        self.losses += 1;
        self.attempts = 0;
        self.backoff.reset();
        self.retry_at = Instant::now();
        log::warn!("{}: lost ({cause}); reconnecting", self.name);
        SourceError::Lost {
            source_name: self.name.clone(),
            message: cause.to_string(),
        }
    }

    /// One reopening attempt when it is due; otherwise waits (a short slice) for it.
    fn try_reopen(&mut self) -> Result<(), SourceError> {
        let now = Instant::now();
        if now < self.retry_at {
            std::thread::sleep((self.retry_at - now).min(WAIT_SLICE));
            return Err(self.waiting());
        }
        self.attempts += 1;
        match (self.open)() {
            Ok(source) => {
                log::info!(
                    "{}: back after {} attempt(s)",
                    source.describe(),
                    self.attempts
                );
                self.current = Some(source);
                self.reconnects += 1;
                self.backoff.reset();
                Ok(())
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                log::warn!(
                    "{}: reconnect attempt {} failed ({e}); next in {:.1} s",
                    self.name,
                    self.attempts,
                    delay.as_secs_f32()
                );
                self.retry_at = Instant::now() + delay;
                Err(self.waiting())
            }
        }
    }

    fn waiting(&self) -> SourceError {
        SourceError::Reconnecting {
            source_name: self.name.clone(),
            attempts: self.attempts,
        }
    }
}

impl FrameSource for Reconnecting {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.current.is_none() {
            self.try_reopen()?;
        }
        let Some(source) = self.current.as_mut() else {
            return Err(self.waiting());
        };
        match source.next_frame() {
            Ok(Some(mut frame)) => {
                frame.index = self.next_index;
                self.next_index += 1;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) if e.is_recoverable() => Err(e),
            Err(e) => Err(self.lose(&e)),
        }
    }

    fn describe(&self) -> String {
        format!("{} (reconnects when lost)", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A camera that delivers `frames` frames, then fails as an unplugged device does.
    struct FlakyCamera {
        frames: u32,
        sent: u32,
    }

    impl FrameSource for FlakyCamera {
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            if self.sent == self.frames {
                return Err(SourceError::Camera {
                    device: "/dev/video9".into(),
                    message: "capture failed: No such device (os error 19)".into(),
                });
            }
            self.sent += 1;
            Ok(Some(Frame {
                index: self.sent as u64 - 1,
                image: RgbImage::new(4, 4),
                um_per_px: None,
                origin: "flaky".into(),
            }))
        }
        fn describe(&self) -> String {
            "flaky camera".into()
        }
    }

    /// An opener that fails `fail_first` times, then opens cameras of 3 frames; counts attempts.
    fn opener(fail_first: u32, attempts: Rc<RefCell<u32>>) -> Opener {
        Box::new(move || {
            *attempts.borrow_mut() += 1;
            if *attempts.borrow() <= fail_first {
                return Err(SourceError::Camera {
                    device: "/dev/video9".into(),
                    message: "cannot open: No such file or directory (os error 2)".into(),
                });
            }
            Ok(Box::new(FlakyCamera { frames: 3, sent: 0 }))
        })
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let waits: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, vec![250, 500, 1000, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn lost_camera_is_reopened_and_frames_are_numbered_on() {
        let attempts = Rc::new(RefCell::new(0));
        let first = Box::new(FlakyCamera { frames: 2, sent: 0 });
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
        let mut src = Reconnecting::new(first, opener(2, attempts.clone()), backoff);
        let mut indices = Vec::new();
        let (mut lost, mut waited) = (0, 0);
        while indices.len() < 6 {
            match src.next_frame() {
                Ok(Some(f)) => indices.push(f.index),
                Ok(None) => panic!("a camera does not end"),
                Err(SourceError::Lost { .. }) => lost += 1,
                Err(SourceError::Reconnecting { .. }) => waited += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(indices, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(lost, 2, "lost after the first camera and after the second");
        assert!(waited >= 2, "two failed reopen attempts were reported");
        assert_eq!(*attempts.borrow(), 4, "two failures, then two good opens");
        assert_eq!((src.losses, src.reconnects), (2, 2));
    }

    #[test]
    fn waiting_for_the_next_attempt_does_not_block() {
        let attempts = Rc::new(RefCell::new(0));
        let first = Box::new(FlakyCamera { frames: 0, sent: 0 });
        let backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(60));
        let mut src = Reconnecting::new(first, opener(u32::MAX, attempts.clone()), backoff);
        assert!(matches!(src.next_frame(), Err(SourceError::Lost { .. })));
        let t = Instant::now();
        for _ in 0..3 {
            assert!(matches!(
                src.next_frame(),
                Err(SourceError::Reconnecting { .. })
            ));
        }
        assert_eq!(*attempts.borrow(), 1, "one attempt, then a 30 s wait");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
