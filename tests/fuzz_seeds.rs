//! Replays the committed fuzz seeds (fuzz/seeds/<target>/) and any crash inputs kept as
//! regressions (fuzz/regressions/<target>/) through the fuzz targets' own calls, so a plain
//! `cargo test` catches a parser or decoder that panics on them; the fuzzer itself runs in
//! fuzz/ci.sh.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::fs;
use std::path::Path;

/// Every file under fuzz/seeds/<target> and fuzz/regressions/<target>; the seeds must exist.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable fuzz input folder").path();
            let bytes = fs::read(&path).expect("readable fuzz input");
            found.push((path.display().to_string(), bytes));
        }
    }
    assert!(!found.is_empty(), "no seeds for fuzz target {target}");
    found
}

fn replay(target: &str, run: fn(&[u8])) {
    for (name, bytes) in inputs(target) {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "fuzz target {target} panicked on {name}");
    }
}

#[test]
fn board_profile_seeds_parse_or_fail_cleanly() {
    replay("board_profile", harness::board_profile);
}

#[test]
fn model_manifest_seeds_parse_or_fail_cleanly() {
    replay("model_manifest", harness::model_manifest);
}

#[test]
fn frame_decode_seeds_decode_or_fail_cleanly() {
    replay("frame_decode", harness::frame_decode);
}

#[test]
fn shipped_profiles_and_manifests_are_among_the_seeds() {
    // The seeds start the fuzzer from valid inputs: keep them in step with board/ and models/.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, target) in [("board", "board_profile"), ("models", "model_manifest")] {
        for entry in fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "ron") {
                let seed = root
                    .join("fuzz/seeds")
                    .join(target)
                    .join(path.file_name().unwrap());
                assert_eq!(
                    fs::read(&seed).ok(),
                    fs::read(&path).ok(),
                    "{} differs from its fuzz seed {}",
                    path.display(),
                    seed.display()
                );
            }
        }
    }
}
