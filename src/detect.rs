//! The learned white-cell detector (issue 4): a small centre-point CNN (`models/train/detector.py`)
//! run by tract on the whole frame resized to its square input. It answers where the white cells
//! are when one fixed scale does not fit the frames (smears photographed at several
//! magnifications); the classical localizer still supplies focus, nuclear masks and crops. This
//! module owns the detector's manifest, loading (with its SHA-256 check) and the decoding of the
//! network's heat map into boxes.

use crate::classify::{load_manifest, parse_manifest, verified_model, ClassifyError};
use crate::localize::BoxPx;
use image::{imageops, RgbImage};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

type Plan = std::sync::Arc<TypedRunnableModel>;

/// What travels with the detector's model file (`wbc-detector.ron`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectorManifest {
    pub name: String,
    /// Model file, relative to the manifest's folder.
    pub file: String,
    pub sha256: String,
    /// Side of the square input the whole frame is resized to, pixels.
    pub input_size: usize,
    /// Input pixels per output grid cell.
    pub stride: usize,
    /// Heat-map peaks below this are not cells (picked on held-back training frames).
    pub threshold: f32,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl DetectorManifest {
    pub fn load(path: &Path) -> Result<DetectorManifest, ClassifyError> {
        load_manifest(path, Self::check)
    }

    /// Parses and checks manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<DetectorManifest, ClassifyError> {
        parse_manifest(text, origin, Self::check)
    }

    fn check(&self) -> Result<(), String> {
        if !(32..=2048).contains(&self.input_size) {
            return Err(format!("`input_size` {} is out of range", self.input_size));
        }
        if !(1..=64).contains(&self.stride) || !self.input_size.is_multiple_of(self.stride) {
            return Err(format!(
                "`stride` {} does not divide `input_size` {}",
                self.stride, self.input_size
            ));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(format!("`threshold` {} is not in (0, 1)", self.threshold));
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("`sha256` is not 64 hex digits".into());
        }
        Ok(())
    }

    /// Side of the output grid.
    pub fn grid(&self) -> usize {
        self.input_size / self.stride
    }
}

/// A white cell the detector found: its box in frame pixels and the heat-map peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: BoxPx,
    pub score: f32,
}

/// The loaded detector.
pub struct WbcDetector {
    manifest: DetectorManifest,
    plan: Plan,
    model_path: PathBuf,
}

impl std::fmt::Debug for WbcDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WbcDetector")
            .field("name", &self.manifest.name)
            .field("model", &self.model_path)
            .finish()
    }
}

/// Channels of the output: heat (after a sigmoid), centre offset x and y inside the grid cell, log
/// width and log height in grid cells.
const OUTPUT_CHANNELS: usize = 5;

impl WbcDetector {
    /// Loads the model a detector manifest names, refusing one whose SHA-256 differs.
    pub fn load(manifest_path: &Path) -> Result<WbcDetector, ClassifyError> {
        let manifest = DetectorManifest::load(manifest_path)?;
        let (bytes, model_path) = verified_model(manifest_path, &manifest.file, &manifest.sha256)?;
        let shown = model_path.display().to_string();
        let plan = build_plan(&bytes, manifest.input_size).map_err(|e| ClassifyError::Load {
            path: shown.clone(),
            message: format!("{e:#}"),
        })?;
        let detector = WbcDetector {
            manifest,
            plan,
            model_path,
        };
        let s = detector.manifest.input_size as u32;
        let got = detector.run(&RgbImage::new(s, s))?.len();
        let want = OUTPUT_CHANNELS * detector.manifest.grid().pow(2);
        if got != want {
            return Err(ClassifyError::Load {
                path: shown,
                message: format!("output has {got} values, the manifest's grid needs {want}"),
            });
        }
        Ok(detector)
    }

    pub fn manifest(&self) -> &DetectorManifest {
        &self.manifest
    }

    /// White cells in a frame, boxes in frame pixels.
    pub fn detect(&self, frame: &RgbImage) -> Result<Vec<Detection>, ClassifyError> {
        self.detect_in(frame, (frame.width() as f32, frame.height() as f32))
    }

    /// White cells in `picture`, a shrunk copy of a frame of `frame_size` (width, height) pixels;
    /// boxes in that frame's pixels.
    pub fn detect_in(
        &self,
        picture: &RgbImage,
        frame_size: (f32, f32),
    ) -> Result<Vec<Detection>, ClassifyError> {
        let out = self.run(picture)?;
        Ok(decode(
            &out,
            self.manifest.grid(),
            self.manifest.threshold,
            frame_size,
        ))
    }

    /// The network's raw output (channels × grid × grid) for a frame.
    fn run(&self, frame: &RgbImage) -> Result<Vec<f32>, ClassifyError> {
        let s = self.manifest.input_size;
        let input = frame_tensor(frame, s);
        let tensor = Tensor::from_shape(&[1, 3, s, s], &input)
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        let result = self
            .plan
            .run(tvec!(tensor.into()))
            .map_err(|e| ClassifyError::Inference(format!("{e:#}")))?;
        let view = result[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        Ok(view.iter().copied().collect())
    }
}

/// The whole frame stretched to side × side (antialiased, as in training), CHW, 0..1. A frame at
/// least twice the input's side is first averaged down by whole blocks (cheap) while its short
/// side stays at least the input's, so the finer resize works on a few hundred pixels.
fn frame_tensor(frame: &RgbImage, side: usize) -> Vec<f32> {
    let s = side as u32;
    let bin = frame.width().min(frame.height()) / s;
    let binned;
    let frame = if bin > 1 {
        binned = crate::localize::binned_image(frame, bin);
        &binned
    } else {
        frame
    };
    let resized;
    let img = if frame.dimensions() == (s, s) {
        frame
    } else {
        resized = imageops::resize(frame, s, s, imageops::FilterType::Triangle);
        &resized
    };
    let plane = side * side;
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = px.0[c] as f32 / 255.0;
        }
    }
    data
}

/// Boxes from the output: every heat-map cell at or above `threshold` that is the largest of its
/// 3 × 3 neighbourhood is a cell centre; its offset and log size give the box, scaled to a frame of
/// `frame` (width, height) pixels.
pub fn decode(out: &[f32], grid: usize, threshold: f32, frame: (f32, f32)) -> Vec<Detection> {
    let plane = grid * grid;
    if out.len() < OUTPUT_CHANNELS * plane {
        return Vec::new();
    }
    let heat = &out[..plane];
    let at = |channel: usize, x: usize, y: usize| out[channel * plane + y * grid + x];
    let (sx, sy) = (frame.0 / grid as f32, frame.1 / grid as f32);
    let mut found = Vec::new();
    for y in 0..grid {
        for x in 0..grid {
            let v = heat[y * grid + x];
            if v < threshold || !is_local_peak(heat, grid, x, y) {
                continue;
            }
            let cx = (x as f32 + at(1, x, y)) * sx;
            let cy = (y as f32 + at(2, x, y)) * sy;
            let w = at(3, x, y).clamp(-4.0, 6.0).exp() * sx;
            let h = at(4, x, y).clamp(-4.0, 6.0).exp() * sy;
            found.push(Detection {
                bbox: BoxPx {
                    x0: (cx - w / 2.0).max(0.0),
                    y0: (cy - h / 2.0).max(0.0),
                    x1: (cx + w / 2.0).min(frame.0),
                    y1: (cy + h / 2.0).min(frame.1),
                },
                score: v,
            });
        }
    }
    found
}

/// True when no 3 × 3 neighbour is larger (ties keep the peak, as max-pooling does).
fn is_local_peak(heat: &[f32], grid: usize, x: usize, y: usize) -> bool {
    let v = heat[y * grid + x];
    (y.saturating_sub(1)..(y + 2).min(grid))
        .all(|ny| (x.saturating_sub(1)..(x + 2).min(grid)).all(|nx| heat[ny * grid + nx] <= v))
}

fn build_plan(bytes: &[u8], size: usize) -> TractResult<Plan> {
    let mut reader = std::io::Cursor::new(bytes);
    tract_onnx::onnx()
        .model_for_read(&mut reader)?
        .with_input_fact(0, f32::fact([1, 3, size, size]).into())?
        .into_optimized()?
        .into_runnable()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(grid: usize, peaks: &[(usize, usize, f32, [f32; 4])]) -> Vec<f32> {
        let plane = grid * grid;
        let mut out = vec![0.0; OUTPUT_CHANNELS * plane];
        for &(x, y, heat, [ox, oy, lw, lh]) in peaks {
            let i = y * grid + x;
            out[i] = heat;
            out[plane + i] = ox;
            out[2 * plane + i] = oy;
            out[3 * plane + i] = lw;
            out[4 * plane + i] = lh;
        }
        out
    }

    #[test]
    fn decode_turns_a_peak_into_a_box_in_frame_pixels() {
        // 8 × 8 grid over a 640 × 480 frame: a grid cell is 80 × 60 px.
        let out = output(8, &[(2, 3, 0.9, [0.5, 0.5, 0.0, 2f32.ln()])]);
        let found = decode(&out, 8, 0.3, (640.0, 480.0));
        assert_eq!(found.len(), 1);
        let b = found[0].bbox;
        assert_eq!(b.centre(), (200.0, 210.0));
        assert_eq!((b.width(), b.height()), (80.0, 120.0));
    }

    #[test]
    fn decode_keeps_only_local_peaks_above_the_threshold() {
        let out = output(
            8,
            &[
                (2, 2, 0.9, [0.0; 4]),
                (3, 2, 0.6, [0.0; 4]), // beside a larger peak
                (6, 6, 0.2, [0.0; 4]), // below the threshold
                (6, 1, 0.5, [0.0; 4]),
            ],
        );
        let mut scores: Vec<f32> = decode(&out, 8, 0.3, (64.0, 64.0))
            .iter()
            .map(|d| d.score)
            .collect();
        scores.sort_by(f32::total_cmp);
        assert_eq!(scores, vec![0.5, 0.9]);
    }

    #[test]
    fn boxes_are_clipped_to_the_frame() {
        let out = output(4, &[(0, 0, 0.9, [0.0, 0.0, 1.0, 1.0])]);
        let b = decode(&out, 4, 0.3, (100.0, 100.0))[0].bbox;
        assert_eq!((b.x0, b.y0), (0.0, 0.0));
        assert!(b.x1 > 0.0 && b.x1 <= 100.0);
    }

    #[test]
    fn manifest_errors_name_the_place() {
        let err = DetectorManifest::parse("(name: \"d\",\n file: 3)", "det.ron").unwrap_err();
        assert!(err.to_string().starts_with("det.ron:2:"), "{err}");
        let text = format!(
            "(name: \"d\", file: \"d.onnx\", sha256: \"{}\", input_size: 256, stride: 7, threshold: 0.4)",
            "0".repeat(64)
        );
        let err = DetectorManifest::parse(&text, "det.ron").unwrap_err();
        assert!(err.to_string().contains("`stride` 7"), "{err}");
    }
}
