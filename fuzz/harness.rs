//! What each fuzz target does with one input, shared by the cargo-fuzz targets (fuzz/fuzz_targets)
//! and by the seed replay test (tests/fuzz_seeds.rs), so CI's plain `cargo test` feeds every
//! committed seed and past crash through the same calls. Each function must return for any input:
//! a panic here is the bug a fuzzer reports.

// Each fuzz target calls one of these.
#![allow(dead_code)]

use marrowscope::classify::ModelManifest;
use marrowscope::config::BoardProfile;
use marrowscope::source::{mjpeg_to_rgb, yuyv_to_rgb, PixelFormat};
use std::path::PathBuf;

/// Board-profile text (lossy UTF-8) through the RON parser and validator behind `--board`, then
/// the model-path resolution of an accepted profile.
pub fn board_profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(profile) = BoardProfile::parse(&text, "fuzz.ron", PathBuf::from("board")) {
        let _ = profile.model_path();
    }
}

/// Model-manifest text (lossy UTF-8) through the RON parser and its checks.
pub fn model_manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(manifest) = ModelManifest::parse(&text, "fuzz.ron") {
        let _ = manifest.class_index("BLA");
    }
    // The white-cell detector's manifest shares the reader and lives beside it in models/.
    if let Ok(manifest) = marrowscope::detect::DetectorManifest::parse(&text, "fuzz.ron") {
        assert!(manifest.grid() > 0);
    }
}

/// A camera buffer through the frame decoders. Byte 0 picks the path (bit 0: YUYV or MJPEG; bit 1:
/// direct call or through `PixelFormat::decode`), bytes 1 and 2 are the claimed width and height
/// (0..=255, so a run does not spend its time allocating huge images), the rest is the buffer. The
/// claimed size need not match the buffer: short, long and odd-width buffers and JPEGs whose header
/// says another size are all fed. A decoded frame must have the claimed size.
pub fn frame_decode(data: &[u8]) {
    let [mode, width, height, buf @ ..] = data else {
        return;
    };
    let (width, height) = (u32::from(*width), u32::from(*height));
    let yuyv = mode & 1 == 0;
    let result = match (yuyv, mode & 2 == 0) {
        (true, true) => yuyv_to_rgb(buf, width, height),
        (false, true) => mjpeg_to_rgb(buf, width, height),
        (true, false) => PixelFormat::Yuyv.decode(buf, width, height),
        (false, false) => PixelFormat::Mjpeg.decode(buf, width, height),
    };
    if let Ok(image) = result {
        assert_eq!(image.dimensions(), (width, height));
        assert_eq!(image.as_raw().len(), width as usize * height as usize * 3);
    }
}
