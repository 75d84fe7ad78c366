//! Camera buffers through the YUYV and MJPEG frame decoders (input layout in harness.rs): any input
//! must give a result or a typed error, never a panic. Seeds: fuzz/seeds/frame_decode.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::frame_decode(data));
