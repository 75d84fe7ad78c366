//! Measures the count against the virtual slide's truth: each seeded pan runs through the real live
//! loop (`pipeline::run`), then every counted cell is matched by position to the slide cell it was,
//! so cells counted twice, cells missed and counts of nothing are told apart, per true class.

use crate::classify::Classifier;
use crate::config::BoardProfile;
use crate::display::NoDisplay;
use crate::operator::NoControls;
use crate::pipeline::{self, PipelineError, RunOptions, Station};
use crate::slide::{SlideOptions, VirtualSlideSource};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A counted cell belongs to the slide cell nearest to it within this distance, µm.
pub const MATCH_UM: f32 = 8.0;

/// What one pan counted, against its truth.
#[derive(Debug, Clone, Serialize)]
pub struct PanResult {
    pub seed: u64,
    pub frames: u64,
    /// Cells on the slide, per class.
    pub truth: BTreeMap<String, u32>,
    /// Counted cells per true class (a cell counted twice adds two).
    pub counted_by_true_class: BTreeMap<String, u32>,
    /// Counted cells per label the model gave (the differential the operator sees).
    pub counted_by_label: BTreeMap<String, u32>,
    pub truth_total: u32,
    pub counted_total: u32,
    pub counted_once: u32,
    /// Extra counts of cells counted more than once.
    pub double_counts: u32,
    pub missed: u32,
    /// Counts that match no slide cell.
    pub false_counts: u32,
    /// |counted - truth| / truth over all cells.
    pub total_error: f64,
    /// Largest |counted - truth| / truth over the classes (by true class).
    pub worst_class_error: f64,
    /// Largest difference between counted and true percentages, percentage points (by true class).
    pub worst_class_pp: f64,
}

impl PanResult {
    /// A pan's truth and total count, before the counts are matched to the slide's cells.
    fn unmatched(
        seed: u64,
        frames: u64,
        truth: BTreeMap<String, u32>,
        counted_total: u32,
    ) -> PanResult {
        PanResult {
            seed,
            frames,
            truth_total: truth.values().sum(),
            truth,
            counted_by_true_class: BTreeMap::new(),
            counted_by_label: BTreeMap::new(),
            counted_total,
            counted_once: 0,
            double_counts: 0,
            missed: 0,
            false_counts: 0,
            total_error: 0.0,
            worst_class_error: 0.0,
            worst_class_pp: 0.0,
        }
    }
}

/// A count matched to a slide cell: record id, best frame, tracked world position.
type Hit = (u64, u64, (f32, f32));

/// Runs the pan of `seed` through the live loop and matches what it counted to the slide.
pub fn evaluate_pan(
    profile: &BoardProfile,
    classifier: &Classifier,
    detector: Option<&std::sync::Arc<crate::detect::WbcDetector>>,
    seed: u64,
    work_dir: &Path,
) -> Result<PanResult, PipelineError> {
    let mut source = VirtualSlideSource::new(SlideOptions::new(seed))?;
    let report_dir = work_dir.join(format!("pan-{seed}"));
    let summary = count_pan(profile, classifier, detector, &mut source, report_dir)?;
    let mut result = PanResult::unmatched(
        seed,
        summary.frames,
        source.slide().truth_counts(),
        summary.tally.total() as u32,
    );
    let hits = match_counts(&summary, &source, &mut result);
    score_slide_cells(seed, &source, hits, &mut result);
    score_classes(&mut result);
    Ok(result)
}

/// Pans over the slide through the live loop, with no count target, into a fresh `report_dir`.
fn count_pan(
    profile: &BoardProfile,
    classifier: &Classifier,
    detector: Option<&std::sync::Arc<crate::detect::WbcDetector>>,
    source: &mut VirtualSlideSource,
    report_dir: std::path::PathBuf,
) -> Result<pipeline::RunSummary, PipelineError> {
    if report_dir.exists() {
        let _ = std::fs::remove_dir_all(&report_dir);
    }
    let opts = RunOptions {
        max_frames: None,
        report_dir,
        annotate: None,
        progress: false,
        detector: detector.cloned(),
    };
    let mut profile = profile.clone();
    profile.count_target = u32::MAX;
    let station = Station {
        display: &mut NoDisplay,
        controls: &mut NoControls,
    };
    pipeline::run(&profile, source, classifier, station, &opts)
}

/// Matches each counted cell to the slide cell nearest its place on the slide (its best frame's
/// stage pose plus its place in that frame), within [`MATCH_UM`]; adds it to the result by its label
/// and by the true class it matched, or as a false count. Returns every count of each slide cell.
fn match_counts(
    summary: &pipeline::RunSummary,
    source: &VirtualSlideSource,
    result: &mut PanResult,
) -> Vec<Vec<Hit>> {
    let slide = source.slide();
    let radius = MATCH_UM / slide.um_per_px;
    let mut hits: Vec<Vec<Hit>> = vec![Vec::new(); slide.cells.len()];
    let seen: BTreeMap<u64, (u64, (f32, f32))> = summary
        .counted_views
        .iter()
        .map(|&(id, frame, centre)| (id, (frame, centre)))
        .collect();
    for r in summary.tally.records() {
        *result.counted_by_label.entry(r.class.clone()).or_default() += 1;
        let Some(&(frame, (fx, fy))) = seen.get(&r.id) else {
            result.false_counts += 1;
            continue;
        };
        let pose = source.path()[frame as usize];
        let (x, y) = (pose.x.round() + fx, pose.y.round() + fy);
        let nearest = slide
            .cells
            .iter()
            .map(|c| (c, ((c.x - x).powi(2) + (c.y - y).powi(2)).sqrt()))
            .filter(|(_, d)| *d <= radius)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match nearest {
            Some((cell, _)) => {
                hits[cell.id as usize].push((r.id, frame, r.world));
                *result
                    .counted_by_true_class
                    .entry(cell.class.clone())
                    .or_default() += 1;
            }
            None => result.false_counts += 1,
        }
    }
    hits
}

/// Each slide cell counted once, more than once, or missed, from its counts (`hits`, one list per
/// cell); a cell not counted exactly once is logged (`RUST_LOG=debug`) with its counts.
fn score_slide_cells(
    seed: u64,
    source: &VirtualSlideSource,
    hits: Vec<Vec<Hit>>,
    result: &mut PanResult,
) {
    let slide = source.slide();
    for (cell, counts) in slide.cells.iter().zip(hits) {
        let h = counts.len() as u32;
        if h != 1 {
            log::debug!(
                "seed {seed}: {} at ({:.0}, {:.0}), picture {:?}, counted {h} times (id, best frame, tracked world: {counts:?}; start pose {:?})",
                cell.class,
                cell.x,
                cell.y,
                slide.picture_of(cell.id).map(|(k, _)| k),
                source.path().first().map(|p| (p.x, p.y))
            );
        }
        match h {
            0 => result.missed += 1,
            1 => result.counted_once += 1,
            n => {
                result.counted_once += 1;
                result.double_counts += n - 1;
            }
        }
    }
}

/// The total's relative error, each class's share against its true share (percentage points), and
/// the largest relative error of a class.
fn score_classes(result: &mut PanResult) {
    result.total_error = relative_error(result.counted_total, result.truth_total);
    let counted_matched: u32 = result.counted_by_true_class.values().sum();
    for (class, &truth) in &result.truth {
        let counted = result
            .counted_by_true_class
            .get(class)
            .copied()
            .unwrap_or(0);
        let pp = 100.0
            * (counted as f64 / counted_matched.max(1) as f64
                - truth as f64 / result.truth_total.max(1) as f64)
                .abs();
        result.worst_class_pp = result.worst_class_pp.max(pp);
    }
    result.worst_class_error = largest(&class_errors(&result.truth, &result.counted_by_true_class));
}

/// Several pans taken together, as one long count: per true class, the cells on the slides and the
/// counts they got, summed over the pans.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pooled {
    pub truth: BTreeMap<String, u32>,
    pub counted_by_true_class: BTreeMap<String, u32>,
    /// |counted - truth| / truth over all cells of all pans (counts of nothing included).
    pub total_error: f64,
    /// |counted - truth| / truth per class.
    pub class_error: BTreeMap<String, f64>,
    /// The largest of `class_error`.
    pub worst_class_error: f64,
}

/// Sums the pans per class.
pub fn pool(pans: &[PanResult]) -> Pooled {
    let mut truth: BTreeMap<String, u32> = BTreeMap::new();
    let mut counted: BTreeMap<String, u32> = BTreeMap::new();
    for pan in pans {
        for (class, &n) in &pan.truth {
            *truth.entry(class.clone()).or_default() += n;
        }
        for (class, &n) in &pan.counted_by_true_class {
            *counted.entry(class.clone()).or_default() += n;
        }
    }
    let class_error = class_errors(&truth, &counted);
    let sum = |f: fn(&PanResult) -> u32| pans.iter().map(f).sum::<u32>();
    Pooled {
        total_error: relative_error(sum(|p| p.counted_total), sum(|p| p.truth_total)),
        worst_class_error: largest(&class_error),
        class_error,
        truth,
        counted_by_true_class: counted,
    }
}

/// |counted - truth| / truth for every class of the truth (a class never counted is off by 100 %).
fn class_errors(
    truth: &BTreeMap<String, u32>,
    counted: &BTreeMap<String, u32>,
) -> BTreeMap<String, f64> {
    truth
        .iter()
        .map(|(class, &t)| {
            let c = counted.get(class).copied().unwrap_or(0);
            (class.clone(), relative_error(c, t))
        })
        .collect()
}

fn largest(errors: &BTreeMap<String, f64>) -> f64 {
    errors.values().copied().fold(0.0, f64::max)
}

fn relative_error(counted: u32, truth: u32) -> f64 {
    (counted as f64 - truth as f64).abs() / truth.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pan(truth: &[(&str, u32)], counted: &[(&str, u32)]) -> PanResult {
        let map = |v: &[(&str, u32)]| v.iter().map(|&(c, n)| (c.to_string(), n)).collect();
        let total = |v: &[(&str, u32)]| v.iter().map(|&(_, n)| n).sum::<u32>();
        let mut pan = PanResult::unmatched(0, 0, map(truth), total(counted));
        pan.counted_by_true_class = map(counted);
        pan
    }

    #[test]
    fn pooled_pans_sum_each_class_before_comparing() {
        // One ART miss in the first pan and one ART double in the second cancel out; a missed BLA
        // in the second pan stays.
        let pans = [
            pan(&[("ART", 40), ("BLA", 60)], &[("ART", 39), ("BLA", 60)]),
            pan(&[("ART", 10), ("BLA", 40)], &[("ART", 11), ("BLA", 39)]),
        ];
        let pooled = pool(&pans);
        assert_eq!(pooled.truth["ART"], 50);
        assert_eq!(pooled.counted_by_true_class["BLA"], 99);
        assert_eq!(pooled.class_error["ART"], 0.0);
        assert_eq!(pooled.class_error["BLA"], 0.01);
        assert_eq!(pooled.worst_class_error, 0.01);
        assert_eq!(pooled.total_error, 1.0 / 150.0);
    }

    #[test]
    fn relative_error_of_counts() {
        assert_eq!(relative_error(98, 100), 0.02);
        assert_eq!(relative_error(0, 0), 0.0);
        assert_eq!(relative_error(3, 2), 0.5);
    }
}
