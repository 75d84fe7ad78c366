//! Faults during a run: a camera that vanishes and comes back (twice) leaves the count exactly as
//! an unbroken run of the same frames would; a full disk while the report is written is a clear
//! one-line error, the journal keeps every counted cell, and the next run resumes from it; a
//! camera that turns grey is told on the screen, and the count goes on when colour is back.

mod common;
use common::*;
use marrowscope::classify::Classifier;
use marrowscope::config::BoardProfile;
use marrowscope::display::{Display, DisplayError, NoDisplay, ScreenStatus};
use marrowscope::operator::NoControls;
use marrowscope::pipeline::{self, RunOptions, RunSummary, Station, NO_COLOUR_NOTICE};
use marrowscope::reconnect::{Backoff, Opener, Reconnecting};
use marrowscope::slide::{atlas_sprites, SlideOptions, VirtualSlideSource};
use marrowscope::source::{Frame, FrameSource, SourceError};
use marrowscope::tally::Tally;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

const FRAMES: u64 = 60;

fn slide() -> VirtualSlideSource {
    let opts = SlideOptions {
        width: 2400,
        height: 1600,
        frame_width: 640,
        frame_height: 480,
        step: 64.0,
        ..SlideOptions::new(4)
    };
    VirtualSlideSource::from_sprites(&atlas_sprites().unwrap(), opts, "atlas".into())
}

/// One connection to a camera that shows the shared slide and fails, as an unplugged USB camera
/// does, after `frames` frames.
struct Connection {
    slide: Rc<RefCell<VirtualSlideSource>>,
    frames: u64,
}

impl FrameSource for Connection {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.frames == 0 {
            return Err(SourceError::Camera {
                device: "/dev/video0".into(),
                message: "capture failed: No such device (os error 19)".into(),
            });
        }
        self.frames -= 1;
        self.slide.borrow_mut().next_frame()
    }
    fn describe(&self) -> String {
        "camera on the virtual slide".into()
    }
}

fn run(source: &mut dyn FrameSource, report: &Path) -> RunSummary {
    run_shown(source, report, &mut NoDisplay)
}

fn run_shown(source: &mut dyn FrameSource, report: &Path, display: &mut dyn Display) -> RunSummary {
    let mut profile = BoardProfile::desktop_default();
    profile.count_target = u32::MAX;
    let classifier = Classifier::load(&shipped_manifest(), profile.batch).unwrap();
    let opts = RunOptions {
        max_frames: Some(FRAMES),
        report_dir: report.to_path_buf(),
        annotate: None,
        progress: false,
        detector: None,
    };
    let station = Station {
        display,
        controls: &mut NoControls,
    };
    pipeline::run(&profile, source, &classifier, station, &opts).unwrap()
}

#[test]
fn lost_camera_reconnects_and_the_count_is_as_if_nothing_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let unbroken = run(&mut slide(), &tmp.path().join("unbroken"));

    let shared = Rc::new(RefCell::new(slide()));
    let first = Box::new(Connection {
        slide: shared.clone(),
        frames: 17,
    });
    // Reopening fails once (the device node is not back yet), then gives 25 frames per connection.
    let opens = Rc::new(RefCell::new(0u32));
    let (s, o) = (shared.clone(), opens.clone());
    let reopen: Opener = Box::new(move || {
        *o.borrow_mut() += 1;
        if *o.borrow() == 1 {
            return Err(SourceError::Camera {
                device: "/dev/video0".into(),
                message: "cannot open: No such file or directory (os error 2)".into(),
            });
        }
        Ok(Box::new(Connection {
            slide: s.clone(),
            frames: 25,
        }))
    });
    let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(8));
    let mut camera = Reconnecting::new(first, reopen, backoff);
    let broken = run(&mut camera, &tmp.path().join("broken"));

    assert_eq!(broken.source_losses, 2, "lost after 17 and after 42 frames");
    assert_eq!(*opens.borrow(), 3, "one failed reopen, two good ones");
    assert_eq!(broken.frames, FRAMES);
    assert!(unbroken.tally.total() > 10, "the pan counts cells");
    assert_eq!(broken.tally.counts(), unbroken.tally.counts());
    let journal = |dir: &str| {
        std::fs::read_to_string(tmp.path().join(dir).join("journal.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(journal("broken"), journal("unbroken"));
}

#[test]
fn full_disk_while_writing_the_report_keeps_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), 0.1, &report);
    std::fs::create_dir_all(&report).unwrap();
    // The report's temporary file is the kernel's always-full device: every write gets ENOSPC.
    std::os::unix::fs::symlink("/dev/full", report.join("differential.tmp")).unwrap();
    let out = run_virtual_slide(&board, "40", &[]);
    assert!(!out.status.success());
    assert_one_line_error(&out, "No space left on device");
    assert!(
        stderr(&out).contains("differential.json"),
        "{}",
        stderr(&out)
    );

    let journal = std::fs::read_to_string(report.join("journal.jsonl")).unwrap();
    let counted = journal
        .lines()
        .filter(|l| l.contains("\"op\":\"count\""))
        .count();
    assert!(counted > 5, "{counted} cells journaled");
    for line in journal.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("whole journal lines");
    }
    assert!(!report.join("differential.json").exists(), "no half report");

    // Space again: the next run resumes the journaled cells and writes the report.
    let out = run_virtual_slide(&board, "1", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{counted} cells resumed")),
        "{}",
        stdout(&out)
    );
    let diff = read_json(&report.join("differential.json"));
    assert!(diff["total"].as_u64().unwrap() as usize >= counted);
}

/// The slide as a camera gives it whose frames `grey` come without colour (set to a grey format).
struct TurnsGrey {
    slide: VirtualSlideSource,
    grey: std::ops::Range<u64>,
}

impl FrameSource for TurnsGrey {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let mut frame = self.slide.next_frame()?;
        if let Some(f) = frame.as_mut().filter(|f| self.grey.contains(&f.index)) {
            let grey = image::DynamicImage::ImageRgb8(f.image.clone()).to_luma8();
            f.image = image::DynamicImage::ImageLuma8(grey).to_rgb8();
        }
        Ok(frame)
    }
    fn describe(&self) -> String {
        "camera on the virtual slide".into()
    }
}

/// A display that keeps the notice of every screen it was asked to draw.
#[derive(Default)]
struct NoticeLog(Vec<Option<String>>);

impl Display for NoticeLog {
    fn show(&mut self, _: &Tally, status: &ScreenStatus) -> Result<(), DisplayError> {
        self.0
            .push(status.notice.as_ref().map(|(text, _)| text.clone()));
        Ok(())
    }
}

#[test]
fn a_camera_turned_grey_is_told_on_the_screen_until_colour_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let shown = |grey: std::ops::Range<u64>, dir: &str| {
        let mut camera = TurnsGrey {
            slide: slide(),
            grey,
        };
        let mut screen = NoticeLog::default();
        let summary = run_shown(&mut camera, &tmp.path().join(dir), &mut screen);
        (summary, screen.0.last().cloned().flatten())
    };
    let (grey_at_end, last_notice) = shown(40..FRAMES, "grey at the end");
    assert_eq!(grey_at_end.skipped_without_colour, FRAMES - 40);
    assert_eq!(last_notice.as_deref(), Some(NO_COLOUR_NOTICE));

    let (grey_between, last_notice) = shown(20..40, "grey between");
    assert_eq!(grey_between.skipped_without_colour, 20);
    assert_eq!(last_notice, None, "colour came back");
    assert!(grey_between.tally.total() > 0, "colour frames are counted");
}
