//! Reports of a count: the differential as CSV and JSON, a crop sheet (PNG) per class from the
//! saved evidence crops, and a summary picture of the count screen. Also the per-cell crop store
//! the sheets are built from.

use crate::display::{draw_count_screen, Canvas, ScreenStatus};
use crate::tally::{Interval, Tally};
use image::{imageops, Rgb, RgbImage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors while writing a report or a picture beside it (crop sheets, annotated frames); the path
/// says which.
#[derive(Debug, Error)]
#[error("{path}: cannot write: {message}")]
pub struct ReportError {
    pub path: String,
    pub message: String,
}

fn report_err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Makes `dir` (and the folders above it) where `what` go, before anything is written there; a
/// file in its place is named as such.
pub fn make_folder(dir: &Path, what: &str) -> Result<(), ReportError> {
    if dir.exists() && !dir.is_dir() {
        return Err(report_err(
            dir,
            format!("a file is here, where {what} need a folder"),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| report_err(dir, e))
}

/// Side of the stored evidence crops, pixels.
pub const STORED_CROP: u32 = 96;

/// The differential in the JSON report.
#[derive(Debug, Serialize)]
pub struct Differential {
    pub total: u64,
    pub classified: u64,
    pub review: u64,
    pub target: u32,
    pub counts: BTreeMap<String, u64>,
    pub percent: BTreeMap<String, f64>,
    pub me_ratio: Option<f64>,
    pub blast_percent: f64,
    pub blast_ci95: Option<Interval>,
    pub frames: u64,
    pub skipped_frames: u64,
    pub model: String,
    /// What found the cells: the learned detector's name, or "classical".
    pub localizer: String,
    pub source: String,
}

impl Differential {
    pub fn from_tally(
        tally: &Tally,
        frames: u64,
        skipped: u64,
        model: &str,
        localizer: &str,
        source: &str,
    ) -> Differential {
        let counts = tally.counts();
        let percent = counts
            .keys()
            .filter(|c| *c != crate::classify::REVIEW)
            .map(|c| (c.clone(), tally.percent(c)))
            .collect();
        let (blast_percent, blast_ci95) = tally.blast_percent();
        Differential {
            total: tally.total(),
            classified: tally.classified(),
            review: tally.review(),
            target: tally.target,
            counts,
            percent,
            me_ratio: tally.me_ratio(),
            blast_percent,
            blast_ci95,
            frames,
            skipped_frames: skipped,
            model: model.to_string(),
            localizer: localizer.to_string(),
            source: source.to_string(),
        }
    }
}

/// Saves a counted cell's crop for crop sheets and audit (`crops/<id>_<class>.png`).
/// Where the crop of cell `id`, counted as `class`, is stored, relative to the report folder.
pub fn crop_file(id: u64, class: &str) -> PathBuf {
    Path::new("crops").join(format!("{id:06}_{class}.png"))
}

/// Stores a counted cell's crop (downscaled) in the report folder.
pub fn store_crop(
    dir: &Path,
    id: u64,
    class: &str,
    crop: &RgbImage,
) -> Result<PathBuf, ReportError> {
    let crops = dir.join("crops");
    std::fs::create_dir_all(&crops).map_err(|e| report_err(&crops, e))?;
    let path = dir.join(crop_file(id, class));
    let small = imageops::resize(
        crop,
        STORED_CROP,
        STORED_CROP,
        imageops::FilterType::Triangle,
    );
    save_png(&path, &small)?;
    Ok(path)
}

/// Writes differential.csv, differential.json, crop sheets and summary.png into `dir`.
pub fn write_report(dir: &Path, tally: &Tally, diff: &Differential) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| report_err(dir, e))?;
    write_atomic(&dir.join("differential.json"), |f| {
        serde_json::to_writer_pretty(&mut *f, diff).map_err(std::io::Error::other)?;
        f.write_all(b"\n")
    })?;
    write_atomic(&dir.join("differential.csv"), |f| {
        writeln!(f, "class,count,percent")?;
        for (class, n) in &diff.counts {
            let pct = diff
                .percent
                .get(class)
                .map(|p| format!("{p:.2}"))
                .unwrap_or_default();
            writeln!(f, "{class},{n},{pct}")?;
        }
        writeln!(f, "TOTAL,{},", diff.total)
    })?;
    write_crop_sheets(dir, tally)?;
    let mut canvas = Canvas::new(480, 320);
    let status = ScreenStatus {
        frames: diff.frames,
        skipped: diff.skipped_frames,
        source: diff.source.clone(),
        ..Default::default()
    };
    let Ok(()) = draw_count_screen(&mut canvas, tally, &status);
    let summary = dir.join("summary.png");
    save_png(&summary, &canvas.image)
}

/// Writes a file through a temporary name so a crash or a full disk never leaves half a report;
/// on the storage too (synced) before it takes the file's name.
fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    write_via_temporary(path, true, fill)
}

/// Saves a picture as PNG through a temporary name, so that a full disk (an SD card filling up in
/// the field) leaves no half-written picture under the name, only the error. Not synced: pictures
/// are evidence beside the journal, which holds the count, and a sync per crop would stall the
/// live loop on slow cards.
pub fn save_png(path: &Path, image: &RgbImage) -> Result<(), ReportError> {
    write_via_temporary(path, false, |w| {
        image
            .write_to(w, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
}

fn write_via_temporary(
    path: &Path,
    sync: bool,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| report_err(&tmp, e))?;
    let mut w = std::io::BufWriter::new(file);
    let result = fill(&mut w).and_then(|_| w.flush()).and_then(|_| {
        if sync {
            w.get_ref().sync_all()
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        drop(w);
        let _ = std::fs::remove_file(&tmp);
        return Err(report_err(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| report_err(path, e))
}

/// One PNG per class with the stored crops of the cells counted in that class.
fn write_crop_sheets(dir: &Path, tally: &Tally) -> Result<(), ReportError> {
    let crops = dir.join("crops");
    let sheets = dir.join("sheets");
    std::fs::create_dir_all(&sheets).map_err(|e| report_err(&sheets, e))?;
    let mut by_class: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in tally.records() {
        by_class.entry(r.class.as_str()).or_default().push(r.id);
    }
    for (class, ids) in by_class {
        let cols = 10u32;
        let shown: Vec<RgbImage> = ids
            .iter()
            .filter_map(|id| find_crop(&crops, *id))
            .take(100)
            .collect();
        if shown.is_empty() {
            continue;
        }
        let rows = (shown.len() as u32).div_ceil(cols);
        let cell = STORED_CROP + 4;
        let mut sheet = RgbImage::from_pixel(cols * cell, rows * cell, Rgb([255, 255, 255]));
        for (i, crop) in shown.iter().enumerate() {
            let (c, r) = (i as u32 % cols, i as u32 / cols);
            imageops::overlay(
                &mut sheet,
                crop,
                (c * cell + 2) as i64,
                (r * cell + 2) as i64,
            );
        }
        let path = sheets.join(format!("{class}.png"));
        save_png(&path, &sheet)?;
    }
    Ok(())
}

/// The stored crop of a cell (whatever class it was stored under).
fn find_crop(crops: &Path, id: u64) -> Option<RgbImage> {
    let prefix = format!("{id:06}_");
    let entries = std::fs::read_dir(crops).ok()?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".png")
        })
        .and_then(|p| image::open(p).ok())
        .map(|i| i.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_that_cannot_be_written_whole_leaves_no_file_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000005_LYT.png");
        // A write that fails half-way, as on a full disk: nothing under the name, no temporary.
        let e = write_via_temporary(&path, false, |w| {
            w.write_all(&[0x89, b'P', b'N', b'G'])?;
            w.flush()?;
            Err(std::io::Error::other("No space left on device"))
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: cannot write: No space left on device", path.display())
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A picture already there stays whole when its replacement fails.
        let picture = RgbImage::from_pixel(3, 2, Rgb([10, 20, 30]));
        save_png(&path, &picture).unwrap();
        let failed = write_via_temporary(&path, true, |_| Err(std::io::Error::other("full")));
        assert!(failed.is_err());
        assert_eq!(image::open(&path).unwrap().to_rgb8(), picture);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
