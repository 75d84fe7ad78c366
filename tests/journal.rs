//! Crash safety of the count: `run` is killed with SIGKILL at random moments; every time, the
//! journal reopens to exactly the cells it holds (none lost, none doubled), and a resumed run
//! carries the same count forward.

mod common;
use common::*;
use marrowscope::slide::Rng;
use marrowscope::tally::Journal;
use std::process::{Command, Stdio};
use std::time::Duration;

const KILLS: usize = 20;

fn count_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| l.ends_with('}') && l.contains("\"op\":\"count\""))
        .count()
}

#[test]
fn killed_runs_resume_with_exactly_the_journaled_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), 0.1, &report);
    let journal_path = report.join("journal.jsonl");
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
        std::thread::sleep(Duration::from_millis(300 + (rng.unit() * 2500.0) as u64));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let raw = std::fs::read_to_string(&journal_path).unwrap_or_default();
        let complete = count_lines(&raw);
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
    // A resumed run reports the journaled cells as its starting point.
    let out = marrowscope(&[
        "run",
        "--board",
        board.to_str().unwrap(),
        "--source",
        "virtual:3",
        "--frames",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{previous} cells resumed from the journal")),
        "{text}"
    );
}
