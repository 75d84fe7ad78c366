//! Crash safety of the count: `run` is killed with SIGKILL at random moments; every time, the
//! journal reopens to exactly the cells it holds (none lost, none doubled), and a resumed run
//! carries the same count forward from where the source stood, so the killed-and-resumed runs
//! together count the slide as one unbroken run does.
//!
//! Half of the kills come at a random time after start (often during start-up); the other half come
//! a random moment after the run has journaled a new cell, so the test does not depend on how fast
//! the machine running it is.

mod common;
use common::*;
use marrowscope::slide::Rng;
use marrowscope::tally::Journal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KILLS: usize = 20;
/// How long a run may take to journal its next cell before the test gives up (a slow, loaded CI
/// machine running the unoptimized binary needs a few seconds).
const GROWTH_TIMEOUT: Duration = Duration::from_secs(180);

fn count_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| l.ends_with('}') && l.contains("\"op\":\"count\""))
        .count()
}

/// Complete count lines in the journal now (a missing file holds none).
fn journaled_cells(journal: &Path) -> usize {
    count_lines(&std::fs::read_to_string(journal).unwrap_or_default())
}

/// Waits until the journal holds more than `previous` counted cells; false after the timeout.
fn wait_for_growth(journal: &Path, previous: usize) -> bool {
    let started = Instant::now();
    while started.elapsed() < GROWTH_TIMEOUT {
        if journaled_cells(journal) > previous {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn killed_runs_resume_with_exactly_the_journaled_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), 0.1, &report);
    let journal_path = report.join("journal.jsonl");
    // The same slide in one unbroken run, beside the killed ones (the test's shortest path).
    let unbroken_dir = tmp.path().join("unbroken");
    std::fs::create_dir_all(&unbroken_dir).unwrap();
    let unbroken_report = unbroken_dir.join("report");
    let unbroken_board = write_board(&unbroken_dir, 0.1, &unbroken_report);
    let unbroken_run = Command::new(env!("CARGO_BIN_EXE_marrowscope"))
        .args(["run", "--board", unbroken_board.to_str().unwrap()])
        .args(["--source", "virtual:3"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rng = Rng::new(2026);
    let mut previous = 0;
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_marrowscope"))
            .args([
                "run",
                "--board",
                board.to_str().unwrap(),
                "--source",
                "virtual:3",
            ])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_after_a_count = round % 2 == 1;
        if kill_after_a_count && !wait_for_growth(&journal_path, previous) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("round {round}: the run journaled no new cell in {GROWTH_TIMEOUT:?}");
        }
        let delay_ms = if kill_after_a_count { 0.0 } else { 300.0 } + rng.unit() * 2500.0;
        std::thread::sleep(Duration::from_millis(delay_ms as u64));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let complete = journaled_cells(&journal_path);
        let (_, tally) = Journal::open(&journal_path, 200).unwrap();
        assert_eq!(
            tally.total() as usize,
            complete,
            "round {round}: journal replay differs from its lines"
        );
        assert!(
            complete >= previous,
            "round {round}: cells were lost ({complete} < {previous})"
        );
        let mut ids: Vec<u64> = tally.records().iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            complete,
            "round {round}: a cell id was counted twice"
        );
        previous = complete;
    }
    assert!(previous > 0, "no run lived long enough to count a cell");
    // A resumed run reports the journaled cells as its starting point and goes on to the end of
    // the slide from where the last cell was counted.
    let out = marrowscope(&[
        "run",
        "--board",
        board.to_str().unwrap(),
        "--source",
        "virtual:3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{previous} cells resumed from the journal")),
        "{text}"
    );
    let (_, resumed) = Journal::open(&journal_path, 200).unwrap();

    let unbroken = unbroken_run.wait_with_output().unwrap();
    assert!(unbroken.status.success(), "{}", stderr(&unbroken));
    let (_, unbroken) = Journal::open(&unbroken_report.join("journal.jsonl"), 200).unwrap();
    let (a, b) = (resumed.total() as f64, unbroken.total() as f64);
    eprintln!("killed and resumed: {a} cells; unbroken: {b} cells");
    assert!(
        (a - b).abs() <= (0.03 * b).max(3.0),
        "{KILLS} killed and resumed runs counted {a} cells, one unbroken run {b}"
    );
}
