//! The learned white-cell detector (issue 4): a small centre-point CNN (`models/train/detector.py`)
//! run by tract on the whole frame resized to its square input. It answers where the white cells
//! are when one fixed scale does not fit the frames (smears photographed at several
//! magnifications); the classical localizer still supplies focus, nuclear masks and crops. This
//! module owns the detector's manifest, loading (with its SHA-256 check) and the decoding of the
//! network's heat map into boxes, and the input side a frame is read at: the network learnt cells
//! at the size they have in its training frames' fields of view, so a frame that shows a wider field
//! is read at a larger input (the network is fully convolutional), not squeezed into the square.

use crate::classify::{load_manifest, parse_manifest, verified_model, ClassifyError};
use crate::config::RonFile;
use crate::localize::BoxPx;
use image::RgbImage;
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
    /// The widest field of view (µm along a frame's longer side) among the training frames, which
    /// the network learnt to read at `input_size`. A frame of a wider field is read at a larger
    /// input (see [`DetectorManifest::input_side`]), so that its cells keep about the size in input
    /// pixels the network learnt. Without it every frame is read at `input_size`.
    #[serde(default)]
    pub field_um: Option<f32>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl DetectorManifest {
    pub fn load(path: &Path) -> Result<DetectorManifest, ClassifyError> {
        load_manifest(path, RonFile::DetectorManifest, Self::check)
    }

    /// Parses and checks manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<DetectorManifest, ClassifyError> {
        parse_manifest(text, origin, RonFile::DetectorManifest, Self::check)
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
        if let Some(field) = self.field_um {
            if !(field > 0.0 && field <= 10_000.0) {
                return Err(format!("`field_um` {field} is not in (0, 10000]"));
            }
            if !self.input_size.is_multiple_of(self.side_step()) {
                return Err(format!(
                    "`input_size` {} is not a multiple of {}, the step a wider field's input grows by",
                    self.input_size,
                    self.side_step()
                ));
            }
        }
        Ok(())
    }

    /// Side of the output grid at the manifest's input size.
    pub fn grid(&self) -> usize {
        self.input_size / self.stride
    }

    /// The step a larger input grows by: the backbone's total stride (32), and a whole number of
    /// grid cells.
    fn side_step(&self) -> usize {
        let (mut a, mut b) = (BACKBONE_STRIDE, self.stride);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        BACKBONE_STRIDE / a * self.stride
    }

    /// The square input side a frame of `frame_field_um` (µm along its longer side) is read at:
    /// `input_size` where the field is no wider than `field_um` (or either is unknown); else
    /// `input_size` scaled by the ratio of the fields, rounded down to a whole step (32 px, or a
    /// multiple of it that holds whole grid cells), at most [`MAX_SIDE_FACTOR`] × `input_size`.
    /// Rounding down keeps each cell at most as large in input pixels as in the training frames
    /// (it never reads them finer than it learnt).
    pub fn input_side(&self, frame_field_um: Option<f32>) -> usize {
        let (Some(trained), Some(field)) = (self.field_um, frame_field_um) else {
            return self.input_size;
        };
        if field.is_nan() || field <= trained {
            return self.input_size;
        }
        let step = self.side_step();
        let wanted = self.input_size as f32 * (field / trained).min(MAX_SIDE_FACTOR as f32);
        ((wanted / step as f32).floor() as usize * step).max(self.input_size)
    }

    /// Where a frame of `frame_field_um` is wider than the largest input can follow
    /// ([`MAX_SIDE_FACTOR`] × `field_um`): the share of their learnt size its cells come to in the
    /// network's input (under 1, and fewer of them found). `None` where the field is within
    /// reach, or either field is unknown.
    pub fn cells_shrunk_to(&self, frame_field_um: f32) -> Option<f32> {
        let widest = self.field_um? * MAX_SIDE_FACTOR as f32;
        (frame_field_um > widest).then(|| widest / frame_field_um)
    }

    /// What to tell the operator about frames of `frame_field_um` too wide for the largest input
    /// (see [`DetectorManifest::cells_shrunk_to`]); `None` where they are within reach.
    pub fn too_wide_warning(&self, frame_field_um: f32) -> Option<String> {
        let share = self.cells_shrunk_to(frame_field_um)?;
        Some(format!(
            "{}: frames of {frame_field_um:.0} µm are wider than the {:.0} µm it reads with the \
             cells at their learnt size; their cells come to {:.0} % of it and fewer are found \
             (a higher magnification, or a smaller camera frame, keeps them at that size)",
            self.name,
            share * frame_field_um,
            100.0 * share
        ))
    }
}

/// The field a frame of `(width, height)` pixels at `um_per_px` shows, in µm along its longer side:
/// what [`DetectorManifest::input_side`] compares with the training frames' widest.
pub fn field_um((width, height): (u32, u32), um_per_px: f32) -> f32 {
    width.max(height) as f32 * um_per_px
}

/// The detectors' backbone halves its input five times: an input side must be a multiple of this.
const BACKBONE_STRIDE: usize = 32;
/// A frame of a field this many times the training frames' widest, or more, is read at this many
/// times the manifest's input size (bounds the network's time and memory per frame).
pub const MAX_SIDE_FACTOR: usize = 4;

/// A white cell the detector found: its box in frame pixels and the heat-map peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: BoxPx,
    pub score: f32,
}

/// The loaded detector.
pub struct WbcDetector {
    manifest: DetectorManifest,
    /// Whether frames too wide for the largest input have been logged (once a detector).
    warned_too_wide: std::sync::atomic::AtomicBool,
    /// The model, optimized for each input side it has been asked for (the manifest's first).
    plans: std::sync::Mutex<BTreeMap<usize, Plan>>,
    /// The verified model file, kept to build the plan of another input side.
    bytes: Vec<u8>,
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
            plans: std::sync::Mutex::new(BTreeMap::from([(manifest.input_size, plan)])),
            warned_too_wide: std::sync::atomic::AtomicBool::new(false),
            manifest,
            bytes,
            model_path,
        };
        let s = detector.manifest.input_size;
        let got = detector.run(vec![0.0; 3 * s * s], s)?.len();
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

    /// The input side a frame of `field_um` (µm along its longer side) is read at
    /// ([`DetectorManifest::input_side`]); the first frame too wide for the largest input is
    /// logged as a warning.
    pub fn input_side_for(&self, field_um: f32) -> usize {
        let too_wide = self.manifest.cells_shrunk_to(field_um).is_some();
        // The message is built once, not for every frame that is too wide.
        if too_wide
            && !self
                .warned_too_wide
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            if let Some(warning) = self.manifest.too_wide_warning(field_um) {
                log::warn!("{warning}");
            }
        }
        self.manifest.input_side(Some(field_um))
    }

    /// White cells in `picture`, the frame or a shrunk copy of a frame of `frame_size` (width,
    /// height) pixels, read at an input of `side` × `side` (see [`DetectorManifest::input_side`]);
    /// boxes in that frame's pixels. `gain` multiplies each pixel of the network's input (side ×
    /// side, row by row; the result kept within 0..1 as in training), so the localizer can even out
    /// the frame's lighting; an empty `gain` leaves the input as it is.
    pub fn detect_in<T: Copy + Into<f32>>(
        &self,
        picture: Picture<'_, T>,
        frame_size: (f32, f32),
        side: usize,
        gain: &[f32],
    ) -> Result<Vec<Detection>, ClassifyError> {
        let mut input = frame_tensor(picture, side);
        apply_gain(&mut input, gain, side)?;
        let out = self.run(input, side)?;
        let grid = side / self.manifest.stride;
        Ok(decode(&out, grid, self.manifest.threshold, frame_size))
    }

    /// The plan for inputs of `side` × `side`, built on first use.
    fn plan(&self, side: usize) -> Result<Plan, ClassifyError> {
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| ClassifyError::Inference("a detector thread panicked".into()))?;
        if let Some(plan) = plans.get(&side) {
            return Ok(plan.clone());
        }
        log::info!("white-cell detector: building its plan for {side} x {side} inputs");
        let plan = build_plan(&self.bytes, side).map_err(|e| ClassifyError::Load {
            path: self.model_path.display().to_string(),
            message: format!("at input side {side}: {e:#}"),
        })?;
        plans.insert(side, plan.clone());
        Ok(plan)
    }

    /// The network's raw output (channels × grid × grid) for its input (CHW, 0..1, side × side).
    fn run(&self, input: Vec<f32>, side: usize) -> Result<Vec<f32>, ClassifyError> {
        let tensor = Tensor::from_shape(&[1, 3, side, side], &input)
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        let result = self
            .plan(side)?
            .run(tvec!(tensor.into()))
            .map_err(|e| ClassifyError::Inference(format!("{e:#}")))?;
        let view = result[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        Ok(view.iter().copied().collect())
    }
}

/// An RGB picture as interleaved samples (0..255), rows top to bottom: a camera frame's bytes, or
/// the float block means of a binned frame.
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a, T> {
    width: usize,
    height: usize,
    samples: &'a [T],
}

impl<'a, T> Picture<'a, T> {
    /// A picture of `width` × `height` pixels; none when `samples` does not hold 3 per pixel.
    pub fn new(width: usize, height: usize, samples: &'a [T]) -> Option<Self> {
        (samples.len() == width * height * 3).then_some(Picture {
            width,
            height,
            samples,
        })
    }
}

impl<'a> Picture<'a, u8> {
    pub fn of_frame(frame: &'a RgbImage) -> Self {
        Picture {
            width: frame.width() as usize,
            height: frame.height() as usize,
            samples: frame.as_raw(),
        }
    }
}

/// The whole picture stretched to side × side, CHW, 0..1, with the antialiased bilinear filter the
/// network was trained with (PyTorch's `interpolate(mode="bilinear", antialias=True)`: a triangle
/// as wide as the scale). Separable, one output row at a time: its source rows are mixed into one
/// row of floats (a loop the compiler vectorizes, on a buffer that stays in the first-level cache),
/// which is then shrunk across into the three channel planes.
#[multiversion::multiversion(targets("x86_64+avx2"))]
pub fn frame_tensor<T: Copy + Into<f32>>(picture: Picture<'_, T>, side: usize) -> Vec<f32> {
    let (width, height) = (picture.width, picture.height);
    if width == 0 || height == 0 {
        return vec![0.0; 3 * side * side];
    }
    let row_len = width * 3;
    // The 1/255 of the network's 0..1 input folded into the weights across.
    let across_taps: Vec<Taps> = triangle_taps(width, side)
        .into_iter()
        .map(|t| Taps {
            first: t.first,
            weights: t.weights.iter().map(|w| w / 255.0).collect(),
        })
        .collect();
    let plane = side * side;
    let mut data = vec![0f32; 3 * plane];
    let mut row = vec![0f32; row_len];
    for (y, taps) in triangle_taps(height, side).iter().enumerate() {
        mix_rows(picture.samples, row_len, taps, &mut row);
        let [red, green, blue] = channel_rows(&mut data, plane, y * side, side);
        for (x, taps) in across_taps.iter().enumerate() {
            let span = &row[taps.first * 3..(taps.first + taps.weights.len()) * 3];
            let mut sum = [0f32; 3];
            for (px, &w) in span.chunks_exact(3).zip(&taps.weights) {
                sum[0] += w * px[0];
                sum[1] += w * px[1];
                sum[2] += w * px[2];
            }
            (red[x], green[x], blue[x]) = (sum[0], sum[1], sum[2]);
        }
    }
    data
}

/// Multiplies each of the three channel planes of `input` (side × side each) by `gain`, pixel by
/// pixel, keeping the values within 0..1; an empty `gain` changes nothing.
fn apply_gain(input: &mut [f32], gain: &[f32], side: usize) -> Result<(), ClassifyError> {
    if gain.is_empty() {
        return Ok(());
    }
    if gain.len() != side * side {
        return Err(ClassifyError::Inference(format!(
            "input gain has {} values, the {side} x {side} input needs {}",
            gain.len(),
            side * side
        )));
    }
    for plane in input.chunks_exact_mut(side * side) {
        for (v, &g) in plane.iter_mut().zip(gain) {
            *v = (*v * g).min(1.0);
        }
    }
    Ok(())
}

/// `row` = the source rows of `taps` (rows of `row_len` samples), weighted and summed.
#[inline(always)]
fn mix_rows<T: Copy + Into<f32>>(samples: &[T], row_len: usize, taps: &Taps, row: &mut [f32]) {
    row.fill(0.0);
    for (k, &w) in taps.weights.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        let source = &samples[(taps.first + k) * row_len..][..row_len];
        for (acc, &v) in row.iter_mut().zip(source) {
            *acc += w * v.into();
        }
    }
}

/// Row `start / side` of each of the three channel planes of `data`.
fn channel_rows(data: &mut [f32], plane: usize, start: usize, side: usize) -> [&mut [f32]; 3] {
    let (red, rest) = data.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    [red, green, blue].map(|p| &mut p[start..start + side])
}

/// The source pixels one output pixel of a resize draws on, and their weights (summing to 1).
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// Taps of the antialiased bilinear resize from `source` to `target` pixels along one axis: a
/// triangle `scale` wide around each output pixel's centre when shrinking, plain linear
/// interpolation when enlarging (the rule of PyTorch and PIL).
fn triangle_taps(source: usize, target: usize) -> Vec<Taps> {
    let scale = source as f64 / target as f64;
    let support = scale.max(1.0);
    (0..target)
        .map(|i| {
            let centre = scale * (i as f64 + 0.5);
            let first = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let end = ((centre + support + 0.5).floor() as usize).min(source);
            let raw: Vec<f64> = (first..end)
                .map(|j| (1.0 - ((j as f64 + 0.5 - centre) / support).abs()).max(0.0))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|w| if total > 0.0 { (w / total) as f32 } else { 0.0 })
                .collect();
            Taps { first, weights }
        })
        .collect()
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

    /// A 7 × 5 test picture with distinct values in every sample.
    fn test_frame() -> RgbImage {
        RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([0, 1, 2].map(|c| ((x * 37 + y * 91 + c * 50) % 256) as u8))
        })
    }

    #[test]
    fn the_resize_is_the_one_the_network_was_trained_with() {
        // torch.nn.functional.interpolate(frame / 255, size=(3, 3), mode="bilinear",
        // align_corners=False, antialias=True) of the test picture (PyTorch 2.x), first and
        // last channel; and the first row of the first channel enlarged to 8 × 8.
        let tensor = frame_tensor(Picture::of_frame(&test_frame()), 3);
        let red = [
            0.277311, 0.562926, 0.561104, 0.495487, 0.387876, 0.503828, 0.394958, 0.537156,
            0.443137,
        ];
        let blue = [
            0.577271, 0.541704, 0.410324, 0.401618, 0.484762, 0.625086, 0.664186, 0.43157, 0.405042,
        ];
        for (got, want) in tensor[..9]
            .iter()
            .chain(&tensor[18..])
            .zip(red.iter().chain(&blue))
        {
            assert!((got - want).abs() < 1e-5, "{tensor:?}");
        }
        let enlarged = frame_tensor(Picture::of_frame(&test_frame()), 8);
        let first_row = [
            0.0, 0.117892, 0.244853, 0.371814, 0.498775, 0.625735, 0.752696, 0.870588,
        ];
        for (got, want) in enlarged[..8].iter().zip(first_row) {
            assert!((got - want).abs() < 1e-5, "{:?}", &enlarged[..8]);
        }
    }

    #[test]
    fn float_block_means_resize_like_the_same_bytes() {
        let frame = test_frame();
        let floats: Vec<f32> = frame.as_raw().iter().map(|&b| b as f32).collect();
        let as_floats = Picture::new(7, 5, &floats[..]).unwrap();
        assert!(Picture::new(7, 4, &floats[..]).is_none());
        assert_eq!(
            frame_tensor(as_floats, 4),
            frame_tensor(Picture::of_frame(&frame), 4)
        );
    }

    #[test]
    fn the_gain_scales_each_channel_plane_within_one() {
        // Three channel planes of a 2 x 2 input; a gain above 1 never takes a value past 1.
        let mut input = vec![0.5, 0.5, 0.2, 0.9, 0.1, 0.1, 0.1, 0.1, 0.4, 0.8, 0.0, 1.0];
        apply_gain(&mut input, &[1.0, 2.0, 0.5, 1.5], 2).unwrap();
        let want = [0.5, 1.0, 0.1, 1.0, 0.1, 0.2, 0.05, 0.15, 0.4, 1.0, 0.0, 1.0];
        for (got, want) in input.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{input:?}");
        }
        let before = input.clone();
        apply_gain(&mut input, &[], 2).unwrap();
        assert_eq!(input, before);
        assert!(apply_gain(&mut input, &[1.0; 3], 2).is_err());
    }

    #[test]
    fn an_empty_picture_gives_a_blank_input() {
        let empty = Picture::<u8>::new(0, 0, &[]).unwrap();
        assert_eq!(frame_tensor(empty, 4), vec![0.0; 48]);
    }

    #[test]
    fn resize_taps_sum_to_one_and_stay_inside_the_source() {
        for (source, target) in [(640, 160), (480, 160), (575, 160), (100, 160), (160, 160)] {
            for taps in triangle_taps(source, target) {
                assert!(taps.first + taps.weights.len() <= source);
                assert!((taps.weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
        // Same size: each output pixel is its own source pixel.
        let same = triangle_taps(5, 5);
        assert!(same
            .iter()
            .enumerate()
            .all(|(i, t)| t.first == i && t.weights[0] == 1.0));
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
        // A detector trained on a mirrored margin (`detector.py --pad`) reads frames this code does
        // not prepare: refused, not run on unpadded input.
        let padded = text.replace("stride: 7", "stride: 8, pad: 8");
        let err = DetectorManifest::parse(&padded, "det.ron").unwrap_err();
        assert!(err.to_string().contains("pad"), "{err}");
    }

    fn manifest_with(fields: &str) -> Result<DetectorManifest, ClassifyError> {
        let text = format!(
            "(name: \"d\", file: \"d.onnx\", sha256: \"{}\", {fields})",
            "0".repeat(64)
        );
        DetectorManifest::parse(&text, "det.ron")
    }

    #[test]
    fn a_wider_field_is_read_at_a_larger_input_in_whole_steps() {
        let m = manifest_with("input_size: 160, stride: 8, threshold: 0.2, field_um: Some(48.0)")
            .unwrap();
        // Fields up to the training frames' widest, or unknown: the manifest's input.
        assert_eq!(m.input_side(Some(20.0)), 160);
        assert_eq!(m.input_side(Some(48.0)), 160);
        assert_eq!(m.input_side(None), 160);
        // 54.4 µm (the desktop's 640 px at 0.085 µm/px) would want 181 px: rounded down to 160.
        assert_eq!(m.input_side(Some(54.4)), 160);
        // The Pi Zero 2 W's and Jetson's 96 µm: twice the field, twice the side; the Pi 4's 125.4
        // µm: 418 px wanted, 416 read.
        assert_eq!(m.input_side(Some(96.0)), 320);
        assert_eq!(m.input_side(Some(125.44)), 416);
        // At most four times the manifest's side, however wide the field.
        assert_eq!(m.input_side(Some(1000.0)), 640);
        assert_eq!(m.input_side(Some(f32::INFINITY)), 640);
        assert_eq!(m.input_side(Some(f32::NAN)), 160);
        // Up to four times the trained field the cells keep their learnt size; beyond, they shrink.
        assert_eq!(m.cells_shrunk_to(96.0), None);
        assert_eq!(m.cells_shrunk_to(192.0), None);
        assert_eq!(m.cells_shrunk_to(384.0), Some(0.5));
        assert_eq!(m.cells_shrunk_to(f32::NAN), None);
        let warning = m.too_wide_warning(384.0).unwrap();
        assert!(
            warning.contains("384 µm") && warning.contains("192 µm"),
            "{warning}"
        );
        assert!(warning.contains("50 %"), "{warning}");
        // Without `field_um` every frame is read at the manifest's input, as before.
        let plain = manifest_with("input_size: 160, stride: 8, threshold: 0.2").unwrap();
        assert_eq!(plain.field_um, None);
        assert_eq!(plain.cells_shrunk_to(1000.0), None);
        assert_eq!(plain.input_side(Some(125.0)), 160);
        // A grid of step 4 grows by 32 px too (eight grid cells), a grid of step 64 by 64.
        let fine =
            manifest_with("input_size: 160, stride: 4, threshold: 0.2, field_um: Some(48.0)");
        assert_eq!(fine.unwrap().input_side(Some(96.0)), 320);
        let coarse =
            manifest_with("input_size: 128, stride: 64, threshold: 0.2, field_um: Some(40.0)");
        assert_eq!(coarse.unwrap().input_side(Some(70.0)), 192);
    }

    #[test]
    fn a_field_that_cannot_be_read_is_refused() {
        for bad in [
            "field_um: Some(0.0)",
            "field_um: Some(-5.0)",
            "field_um: Some(1e9)",
        ] {
            let err = manifest_with(&format!(
                "input_size: 160, stride: 8, threshold: 0.2, {bad}"
            ))
            .unwrap_err();
            assert!(err.to_string().contains("`field_um`"), "{bad}: {err}");
        }
        // An input that cannot grow by the backbone's step.
        let err = manifest_with("input_size: 168, stride: 8, threshold: 0.2, field_um: Some(48.0)")
            .unwrap_err();
        assert!(err.to_string().contains("multiple of 32"), "{err}");
    }
}
