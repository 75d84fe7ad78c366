//! Shared helpers of the integration tests: the built binary, the real data beside the clone, and
//! throw-away board profiles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data` beside the clone. In CI it must be there: a missing data folder fails the test
/// rather than skipping it. Elsewhere the test is skipped with a clear message.
pub fn data() -> Option<PathBuf> {
    let d = repo().join("../shared/data");
    if d.join("marrow").is_dir() {
        return Some(d);
    }
    if std::env::var("CI").is_ok() {
        panic!(
            "{} is missing: CI must have ../shared beside the clone",
            d.display()
        );
    }
    eprintln!("skipping: real data not found at {}", d.display());
    None
}

pub fn marrowscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_marrowscope"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the marrowscope binary runs")
}

/// `run` of the board profile `board` over `frames` frames of virtual slide 2, with `extra`
/// arguments.
pub fn run_virtual_slide(board: &Path, frames: &str, extra: &[&str]) -> Output {
    let args = [
        "run",
        "--board",
        board.to_str().unwrap(),
        "--source",
        "virtual:2",
        "--frames",
        frames,
    ];
    marrowscope(&[&args[..], extra].concat())
}

/// `run` of the board profile `board` replaying the pictures in folder `frames`, with `extra`
/// arguments.
pub fn replay_folder(board: &Path, frames: &Path, extra: &[&str]) -> Output {
    let source = format!("dir:{}", frames.display());
    let args = [
        "run",
        "--board",
        board.to_str().unwrap(),
        "--source",
        &source,
    ];
    marrowscope(&[&args[..], extra].concat())
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts a clean failure: non-zero exit, one error line, no panic.
pub fn assert_one_line_error(o: &Output, expect: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("marrowscope: error"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(
        lines[0].contains(expect),
        "{:?} does not mention {expect:?}",
        lines[0]
    );
}

pub fn shipped_manifest() -> PathBuf {
    repo().join("models/marrow-int8.ron")
}

/// `text` with `from` replaced by `to`; fails when `from` is not there (a changed profile would
/// otherwise leave the test running on settings it did not ask for).
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "board/desktop.ron has no {from:?}");
    text.replace(from, to)
}

/// Writes a board profile for replayed frames of a given scale into `dir`.
pub fn write_board(dir: &Path, um_per_px: f32, report: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("board/desktop.ron")).unwrap();
    let text = replaced(
        &text,
        "um_per_px: 0.085,",
        &format!("um_per_px: {um_per_px},"),
    );
    let text = replaced(
        &text,
        "model: \"../models/marrow-f32.ron\"",
        &format!("model: {:?}", shipped_manifest().display().to_string()),
    );
    let text = replaced(
        &text,
        "detector: Some(\"../models/wbc-detector-fast.ron\")",
        &format!(
            "detector: Some({:?})",
            repo()
                .join("models/wbc-detector-fast.ron")
                .display()
                .to_string()
        ),
    );
    let text = replaced(
        &text,
        "display: Png(path: \"screen.png\", width: 320, height: 240)",
        "display: None",
    );
    let text = replaced(
        &text,
        "report_dir: \"marrowscope-report\"",
        &format!("report_dir: {:?}", report.display().to_string()),
    );
    let path = dir.join("board.ron");
    std::fs::write(&path, text).unwrap();
    path
}

/// Saves a picture of one colour, `size` (width, height), at `path` (format from its extension).
pub fn save_flat_picture(path: &Path, size: (u32, u32), rgb: [u8; 3]) {
    image::RgbImage::from_pixel(size.0, size.1, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

/// Copies the first `n` files of a folder (sorted) into `dest`.
pub fn copy_first(src: &Path, dest: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dest).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .into_iter()
        .take(n)
        .map(|f| {
            let to = dest.join(f.file_name().unwrap());
            std::fs::copy(&f, &to).unwrap();
            to
        })
        .collect()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
