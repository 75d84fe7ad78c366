//! Cell classification: the model manifest (RON) and the tract-onnx classifier. The model is loaded
//! once, optimized for a fixed input shape, verified against the SHA-256 in its manifest, and runs
//! batches of crops. Output is a class code with a calibrated probability, or "review" when the model
//! is not sure enough.

use crate::config::RonFile;
use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tract_onnx::prelude::*;

/// Label given to cells whose calibrated probability is below the manifest's abstain threshold.
pub const REVIEW: &str = "REVIEW";

/// Errors while loading a model or classifying crops.
#[derive(Debug, Error)]
pub enum ClassifyError {
    #[error("{path}: cannot read model manifest: {source}")]
    ManifestIo {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    ManifestSyntax {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: invalid manifest: {message}")]
    ManifestInvalid { path: String, message: String },
    #[error("{path}: {what}")]
    ManifestOfOtherModel { path: String, what: String },
    #[error("{path}: cannot read model file: {source}")]
    ModelIo {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: SHA-256 {actual} does not match the manifest's {expected}; refusing this model"
    )]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: tract cannot load the model: {message}")]
    Load { path: String, message: String },
    #[error("{path}: the model takes {declared} × {declared} px pictures, but its manifest's `input_size` is {manifest}")]
    InputSize {
        path: String,
        declared: usize,
        manifest: usize,
    },
    #[error("{path}: the model is {model_is}, but its manifest's `precision` is {manifest:?}; is it the manifest of another export?")]
    Precision {
        path: String,
        model_is: &'static str,
        manifest: String,
    },
    #[error("model output has {got} classes but the manifest lists {expected}")]
    OutputShape { got: usize, expected: usize },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// The manifest's `precision` values: the number format of the weights.
const PRECISIONS: [&str; 3] = ["f32", "f16", "int8"];

/// What travels with a model file: how to feed it and how to read its output.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub name: String,
    /// Model file, relative to the manifest's folder.
    pub file: String,
    pub sha256: String,
    /// Side of the square model input, pixels.
    pub input_size: usize,
    pub mean: (f32, f32, f32),
    pub std: (f32, f32, f32),
    /// Physical side of the square field the model input covers, µm.
    pub crop_um: f32,
    pub classes: Vec<String>,
    /// Softmax temperature fitted on validation data.
    pub temperature: f32,
    /// Cells whose top probability is below this go to the review bucket.
    pub abstain_below: f32,
    pub precision: String,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl ModelManifest {
    /// Reads and checks a manifest file (not yet the model it names).
    pub fn load(path: &Path) -> Result<ModelManifest, ClassifyError> {
        load_manifest(path, RonFile::ClassifierManifest, Self::check)
    }

    /// Parses and checks manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ModelManifest, ClassifyError> {
        parse_manifest(text, origin, RonFile::ClassifierManifest, Self::check)
    }

    fn check(&self) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err("`classes` is empty".into());
        }
        if let Some(twice) = self
            .classes
            .iter()
            .enumerate()
            .find_map(|(i, c)| self.classes[..i].contains(c).then_some(c))
        {
            return Err(format!("`classes` lists {twice:?} twice"));
        }
        if !(16..=1024).contains(&self.input_size) {
            return Err(format!("`input_size` {} is out of range", self.input_size));
        }
        if !(self.crop_um.is_finite() && self.crop_um > 1.0 && self.crop_um < 500.0) {
            return Err(format!("`crop_um` {} is not plausible", self.crop_um));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err("`temperature` must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.abstain_below) {
            return Err("`abstain_below` must be in 0..1".into());
        }
        let stds = [self.std.0, self.std.1, self.std.2];
        if stds.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("`std` must be positive".into());
        }
        if !PRECISIONS.contains(&self.precision.as_str()) {
            return Err(format!(
                "`precision` {:?} is none of {}",
                self.precision,
                PRECISIONS.join(", ")
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("`sha256` is not 64 hex digits".into());
        }
        Ok(())
    }

    /// Index of a class code, if the model knows it.
    pub fn class_index(&self, code: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == code)
    }
}

/// One classified crop.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index of the most probable class.
    pub top: usize,
    /// Calibrated probability of the top class.
    pub probability: f32,
    /// Calibrated probabilities of every class, in manifest order.
    pub probabilities: Vec<f32>,
    /// True when the probability is below the abstain threshold (goes to review).
    pub review: bool,
}

type Plan = std::sync::Arc<TypedRunnableModel>;

/// A loaded, optimized model ready to classify crops.
pub struct Classifier {
    manifest: ModelManifest,
    /// Runnable plans keyed by batch size, largest first.
    plans: Vec<(usize, Plan)>,
    model_path: PathBuf,
}

/// The model's own spelling of a class code typed in another letter case or with spaces around
/// it (`lyt` for `LYT`); `None` when the model has no such class.
pub fn class_as_model_spells<'a>(code: &str, classes: &'a [String]) -> Option<&'a String> {
    classes.iter().find(|c| c.eq_ignore_ascii_case(code.trim()))
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a RON model manifest of `kind` and checks it with `check` (which says what is wrong).
pub fn load_manifest<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: RonFile,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ClassifyError> {
    let shown = path.display().to_string();
    let text = crate::textfile::read(path).map_err(|source| ClassifyError::ManifestIo {
        path: shown.clone(),
        source,
    })?;
    parse_manifest(&text, &shown, kind, check)
}

/// Parses RON manifest text of `kind` (errors at line and column of `origin`, or naming the other
/// kind of file it is) and checks it.
pub fn parse_manifest<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    kind: RonFile,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ClassifyError> {
    let manifest: T = ron::from_str(text).map_err(|e| match kind.misplaced(text) {
        Some(what) => ClassifyError::ManifestOfOtherModel {
            path: origin.to_string(),
            what,
        },
        None => ClassifyError::ManifestSyntax {
            path: origin.to_string(),
            line: e.span.start.line,
            col: e.span.start.col,
            message: e.code.to_string(),
        },
    })?;
    check(&manifest).map_err(|message| ClassifyError::ManifestInvalid {
        path: origin.to_string(),
        message,
    })?;
    Ok(manifest)
}

/// The model file `file` beside a manifest, with its path; refused when its SHA-256 is not `sha256`.
pub fn verified_model(
    manifest_path: &Path,
    file: &str,
    sha256: &str,
) -> Result<(Vec<u8>, PathBuf), ClassifyError> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let model_path = base.join(file);
    let shown = model_path.display().to_string();
    let bytes = std::fs::read(&model_path).map_err(|source| ClassifyError::ModelIo {
        path: shown.clone(),
        source,
    })?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(ClassifyError::HashMismatch {
            path: shown,
            expected: sha256.to_string(),
            actual,
        });
    }
    Ok((bytes, model_path))
}

impl Classifier {
    /// Loads the model a manifest names; `batch` is the largest batch run at once.
    pub fn load(manifest_path: &Path, batch: usize) -> Result<Classifier, ClassifyError> {
        let manifest = ModelManifest::load(manifest_path)?;
        let (bytes, model_path) = verified_model(manifest_path, &manifest.file, &manifest.sha256)?;
        let shown = model_path.display().to_string();
        let mut sizes = vec![batch.max(1)];
        if batch > 1 {
            sizes.push(1);
        }
        let load_err = |e: TractError| ClassifyError::Load {
            path: shown.clone(),
            message: format!("{e:#}"),
        };
        let model = read_model(&bytes).map_err(load_err)?;
        match declared_input_side(&model) {
            Some(declared) if declared != manifest.input_size => {
                return Err(ClassifyError::InputSize {
                    path: shown,
                    declared,
                    manifest: manifest.input_size,
                })
            }
            _ => {}
        }
        check_precision(&model, &manifest.precision, &shown)?;
        let mut plans = Vec::new();
        for b in sizes {
            let plan = build_plan(model.clone(), b, manifest.input_size).map_err(load_err)?;
            plans.push((b, plan));
        }
        let classifier = Classifier {
            manifest,
            plans,
            model_path,
        };
        classifier.check_output_width()?;
        Ok(classifier)
    }

    fn check_output_width(&self) -> Result<(), ClassifyError> {
        let s = self.manifest.input_size;
        let blank = RgbImage::from_pixel(s as u32, s as u32, image::Rgb([200, 200, 200]));
        let logits = self.run_logits(std::slice::from_ref(&blank))?;
        let got = logits.first().map(|l| l.len()).unwrap_or(0);
        if got != self.manifest.classes.len() {
            return Err(ClassifyError::OutputShape {
                got,
                expected: self.manifest.classes.len(),
            });
        }
        Ok(())
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Classifies crops (any size; each is resized to the model input).
    pub fn classify(&self, crops: &[RgbImage]) -> Result<Vec<Prediction>, ClassifyError> {
        let logits = self.run_logits(crops)?;
        Ok(logits.iter().map(|l| self.calibrate(l)).collect())
    }

    /// Turns raw logits into a calibrated prediction.
    pub fn calibrate(&self, logits: &[f32]) -> Prediction {
        let probabilities = softmax(logits, self.manifest.temperature);
        let (top, probability) =
            probabilities
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |best, (i, p)| if p > best.1 { (i, p) } else { best },
                );
        Prediction {
            top,
            probability,
            review: probability < self.manifest.abstain_below,
            probabilities,
        }
    }

    /// Raw logits per crop, running full batches on the large plan and the rest one by one.
    pub fn run_logits(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>, ClassifyError> {
        let mut out = Vec::with_capacity(crops.len());
        let mut start = 0;
        while start < crops.len() {
            let left = crops.len() - start;
            let (b, plan) = self
                .plans
                .iter()
                .find(|(b, _)| *b <= left)
                .unwrap_or(self.plans.last().expect("at least one plan"));
            let chunk = &crops[start..start + (*b).min(left)];
            out.extend(self.run_chunk(plan, *b, chunk)?);
            start += chunk.len();
        }
        Ok(out)
    }

    fn run_chunk(
        &self,
        plan: &Plan,
        batch: usize,
        chunk: &[RgbImage],
    ) -> Result<Vec<Vec<f32>>, ClassifyError> {
        let s = self.manifest.input_size;
        let mut data = vec![0f32; batch * 3 * s * s];
        for (i, crop) in chunk.iter().enumerate() {
            let plane = &mut data[i * 3 * s * s..(i + 1) * 3 * s * s];
            self.fill_input(crop, plane);
        }
        let input = Tensor::from_shape(&[batch, 3, s, s], &data)
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        let result = plan
            .run(tvec!(input.into()))
            .map_err(|e| ClassifyError::Inference(format!("{e:#}")))?;
        let view = result[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        let classes = view.len() / batch;
        let flat: Vec<f32> = view.iter().copied().collect();
        Ok(flat
            .chunks(classes)
            .take(chunk.len())
            .map(|c| c.to_vec())
            .collect())
    }

    /// Writes one crop, resized and normalized, into a CHW plane.
    fn fill_input(&self, crop: &RgbImage, plane: &mut [f32]) {
        let s = self.manifest.input_size;
        let resized;
        let img = if crop.width() as usize == s && crop.height() as usize == s {
            crop
        } else {
            resized = imageops::resize(crop, s as u32, s as u32, imageops::FilterType::Triangle);
            &resized
        };
        let m = [
            self.manifest.mean.0,
            self.manifest.mean.1,
            self.manifest.mean.2,
        ];
        let d = [
            self.manifest.std.0,
            self.manifest.std.1,
            self.manifest.std.2,
        ];
        for (idx, px) in img.pixels().enumerate() {
            for c in 0..3 {
                plane[c * s * s + idx] = (px.0[c] as f32 / 255.0 - m[c]) / d[c];
            }
        }
    }

    /// The class code of a prediction, or [`REVIEW`] when it abstains.
    pub fn label(&self, p: &Prediction) -> &str {
        if p.review {
            REVIEW
        } else {
            &self.manifest.classes[p.top]
        }
    }
}

fn read_model(bytes: &[u8]) -> TractResult<InferenceModel> {
    tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes))
}

/// Refuses a model whose quantization the manifest's `precision` belies: an int8 model holds
/// (de)quantize operators, a floating-point one none.
fn check_precision(
    model: &InferenceModel,
    precision: &str,
    path: &str,
) -> Result<(), ClassifyError> {
    let quantized = model
        .nodes()
        .iter()
        .any(|n| n.op.name().contains("QuantizeLinear"));
    let model_is = match (quantized, precision == "int8") {
        (true, false) => "quantized (int8)",
        (false, true) => "not quantized (floating point)",
        _ => return Ok(()),
    };
    Err(ClassifyError::Precision {
        path: path.to_string(),
        model_is,
        manifest: precision.to_string(),
    })
}

/// The side of the square pictures the model file fixes for its input (N × 3 × side × side), if
/// it fixes one; a model exported with a free picture size gives `None`.
fn declared_input_side(model: &InferenceModel) -> Option<usize> {
    use tract_onnx::tract_hir::infer::Factoid;
    let fact = model.input_fact(0).ok()?;
    let side = |i: usize| {
        let dim = fact.shape.dim(i)?;
        usize::try_from(dim.concretize()?.to_i64().ok()?).ok()
    };
    match (fact.shape.rank().concretize(), side(2), side(3)) {
        (Some(4), Some(h), Some(w)) if h == w => Some(h),
        _ => None,
    }
}

fn build_plan(model: InferenceModel, batch: usize, size: usize) -> TractResult<Plan> {
    model
        .with_input_fact(0, f32::fact([batch, 3, size, size]).into())?
        .into_optimized()?
        .into_runnable()
}

/// Softmax of logits divided by a temperature.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exps: Vec<f32> = logits
        .iter()
        .map(|l| ((l - max) / temperature).exp())
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_temperature_flattens() {
        let p1 = softmax(&[2.0, 1.0, 0.0], 1.0);
        let p2 = softmax(&[2.0, 1.0, 0.0], 2.0);
        assert!((p1.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(p2[0] < p1[0]);
    }

    #[test]
    fn the_precision_must_say_whether_the_model_is_quantized() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for (file, holds) in [("marrow-f32.onnx", "f32"), ("marrow-int8.onnx", "int8")] {
            let model = read_model(&std::fs::read(models.join(file)).unwrap()).unwrap();
            assert!(check_precision(&model, holds, file).is_ok());
            let other = if holds == "int8" { "f32" } else { "int8" };
            let message = check_precision(&model, other, file)
                .unwrap_err()
                .to_string();
            let model_is = if holds == "int8" {
                "quantized"
            } else {
                "not quantized"
            };
            assert!(
                message.starts_with(&format!("{file}: the model is {model_is} (")),
                "{message}"
            );
        }
    }

    #[test]
    fn sha256_of_known_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn shipped(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_detectors_manifest_where_a_classifiers_goes_is_named_so_and_the_reverse() {
        let (classifier, detector) = (shipped("marrow-int8.ron"), shipped("wbc-detector.ron"));
        let e = ModelManifest::parse(&detector, "d.ron")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "d.ron: a cell detector's manifest, given where a cell classifier's manifest goes (give it with --detector"
            ),
            "{e}"
        );
        let e = crate::detect::DetectorManifest::parse(&classifier, "m.ron")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "m.ron: a cell classifier's manifest, given where a cell detector's manifest goes (give it with --model"
            ),
            "{e}"
        );
        let e = ModelManifest::parse(crate::config::DESKTOP_PROFILE, "b.ron")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "b.ron: a board profile, given where a cell classifier's manifest goes (give it with --board)"
        );
        // A misspelt field is still placed at its line and column.
        let e = ModelManifest::parse(&classifier.replace("crop_um", "crop_mu"), "m.ron")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.ron:8:5: Unexpected field named `crop_mu`"),
            "{e}"
        );
        let checked = ModelManifest::parse(&classifier.replace("\"BAS\"", "\"ART\""), "m.ron");
        let e = checked.unwrap_err().to_string();
        assert_eq!(e, "m.ron: invalid manifest: `classes` lists \"ART\" twice");
    }
}
