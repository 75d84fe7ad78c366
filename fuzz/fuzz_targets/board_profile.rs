//! Board-profile text through the RON parser and validator behind `--board`: any input must give a
//! result or a typed error, never a panic. Seeds: fuzz/seeds/board_profile.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::board_profile(data));
