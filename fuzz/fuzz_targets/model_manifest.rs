//! Model-manifest text through the RON parser and its checks: any input must give a result or a
//! typed error, never a panic. Seeds: fuzz/seeds/model_manifest.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::model_manifest(data));
