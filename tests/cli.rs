//! The command-line contract end to end: the whole pipeline on real smear frames and on the
//! virtual slide, classify/eval on real crops, board checks, and clean one-line errors on bad input.

mod common;
use common::*;
use marrowscope::localize::BoxPx;
use std::path::{Path, PathBuf};

const BCCD_FRAMES: usize = 12;
/// TXL-PBC val frames the learned-detector test scores (sorted by name: a mix of its sources).
const TXL_FRAMES: usize = 24;
/// Scale of the BCCD frames, µm per pixel, from red-cell diameters (about 88 px ≈ 7.5 µm).
const BCCD_UM_PER_PX: f32 = 0.085;

#[test]
fn pipeline_on_real_smear_frames_counts_each_white_cell() {
    // The profile names the learned detector: it finds the cells in replayed frames.
    count_real_smear_frames(&[], "marrowscope-wbc-centre-detector-fast");
}

#[test]
fn pipeline_with_the_classical_localizer_counts_each_white_cell() {
    count_real_smear_frames(&["--classical"], "classical");
}

/// `run` over the first BCCD frames (plus `extra` arguments): every fully visible white cell counted
/// once, labels from the model, the journal and the report written; the report names `localizer`.
fn count_real_smear_frames(extra: &[&str], localizer: &str) {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("frames");
    let copied = copy_first(&data.join("frames/bccd/JPEGImages"), &frames, BCCD_FRAMES);
    // Expert boxes of the white cells fully inside these frames.
    let mut truth = 0;
    for f in &copied {
        let stem = f.file_stem().unwrap().to_str().unwrap();
        let xml = data.join(format!("frames/bccd/Annotations/{stem}.xml"));
        let boxes = marrowscope::eval::read_voc_wbc(&xml).unwrap();
        truth += boxes
            .iter()
            .filter(|b| b.x0 > 2.0 && b.y0 > 2.0 && b.x1 < 638.0 && b.y1 < 478.0)
            .count();
    }
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), BCCD_UM_PER_PX, &report);
    let out = replay_folder(&board, &frames, extra);
    assert!(out.status.success(), "{}", stderr(&out));
    let diff = read_json(&report.join("differential.json"));
    let total = diff["total"].as_u64().unwrap() as usize;
    assert_eq!(diff["frames"].as_u64().unwrap() as usize, BCCD_FRAMES);
    // Each still is a new field: every fully visible white cell is counted once.
    assert!(
        total.abs_diff(truth) <= 2,
        "counted {total}, experts boxed {truth} complete white cells"
    );
    // Labels are model classes (or review), and the journal holds exactly the counted cells.
    let manifest = marrowscope::classify::ModelManifest::load(&shipped_manifest()).unwrap();
    for class in diff["counts"].as_object().unwrap().keys() {
        assert!(
            class == "REVIEW" || manifest.classes.contains(class),
            "unknown label {class}"
        );
    }
    let journal = std::fs::read_to_string(report.join("journal.jsonl")).unwrap();
    let count_lines = journal.lines().filter(|l| l.contains("\"op\":\"count\""));
    assert_eq!(count_lines.count(), total);
    assert!(
        journal.starts_with("{\"op\":\"start\",\"source\":\"folder "),
        "{journal}"
    );
    assert!(report.join("differential.csv").is_file());
    assert!(report.join("summary.png").is_file());
    assert!(stdout(&out).contains("Differential count"));
    assert_eq!(diff["localizer"], localizer);
}

#[test]
fn pictures_of_a_few_micrometres_give_no_cell() {
    // Colour noise in pictures of 8 to 47 px a side (under 4 µm at the desktop's 0.085 µm/px): the
    // learned detector, reading each blown up to its input, found "cells" in many of them, which
    // were counted (as ART).
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    for i in 0..40u32 {
        let (w, h) = (8 + i % 40, 8 + (i * 7) % 40);
        let picture =
            image::RgbImage::from_fn(w, h, |_, _| image::Rgb([noise(), noise(), noise()]));
        picture.save(frames.join(format!("{i:02}.png"))).unwrap();
    }
    let report = tmp.path().join("report");
    let out = marrowscope(&[
        "run",
        "--source",
        &format!("dir:{}", frames.display()),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let journal = std::fs::read_to_string(report.join("journal.jsonl")).unwrap();
    assert!(!journal.contains("\"op\":\"count\""), "{journal}");
}

/// A pan over four real frames side by side (BCCD's `first` to `first + 3` in name order), as a
/// stage would give it: 640×480 views 64 px apart
/// along each row and 160 px apart between rows, zigzag, the k-th (from 1) saved as `name(k)`.
/// Returns the number of views and of the expert white-cell boxes in the four frames.
fn write_pan(
    data: &Path,
    first: usize,
    folder: &Path,
    name: impl Fn(usize) -> String,
) -> (usize, usize) {
    let fields = marrowscope::eval::frames_in(&data.join("frames/bccd/JPEGImages")).unwrap();
    let fields = &fields[first..first + 4];
    let mut mosaic = image::RgbImage::new(1280, 960);
    let mut white_cells = 0;
    for (i, field) in fields.iter().enumerate() {
        let stem = field.file_stem().unwrap().to_str().unwrap();
        let xml = data.join(format!("frames/bccd/Annotations/{stem}.xml"));
        white_cells += marrowscope::eval::read_voc_wbc(&xml).unwrap().len();
        let picture = image::open(field).unwrap().to_rgb8();
        let (x, y) = (640 * (i as i64 % 2), 480 * (i as i64 / 2));
        image::imageops::replace(&mut mosaic, &picture, x, y);
    }
    let frames = folder.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let mut k = 0;
    for (row, y) in (0..=480).step_by(160).enumerate() {
        let mut xs: Vec<u32> = (0..=640).step_by(64).collect();
        if row % 2 == 1 {
            xs.reverse();
        }
        for x in xs {
            k += 1;
            let view = image::imageops::crop_imm(&mosaic, x, y, 640, 480).to_image();
            view.save(frames.join(name(k))).unwrap();
        }
    }
    (k, white_cells)
}

/// Each white cell of a pan over real frames is counted once, also when the learned detector's box
/// around a cell half out of the view passes as whole (before: 6 cells for 4, a neutrophil counted
/// on each of three rows). Capture programs often number frames without leading zeros; replayed in
/// plain name order (`frame1, frame10, frame100, frame11, …`) the pan jumped back and forth and
/// every jump counted the cells in view again (15 cells). In the pan over frames 8 to 11 a
/// neutrophil first comes into view as a sliver at the bottom edge, in a box that stops short of
/// the edge while its nucleus runs on to it; that sliver was classified and the cell counted
/// again when whole (6 cells for 5).
#[test]
fn a_pan_over_real_frames_counts_each_white_cell_once_in_the_order_it_was_taken() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let count = |first: usize, folder: &str, name: &dyn Fn(usize) -> String| {
        let folder = tmp.path().join(folder);
        let (frames, white_cells) = write_pan(&data, first, &folder, name);
        let report = folder.join("report");
        let board = write_board(&folder, BCCD_UM_PER_PX, &report);
        let out = replay_folder(&board, &folder.join("frames"), &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let diff = read_json(&report.join("differential.json"));
        assert_eq!(diff["frames"].as_u64().unwrap() as usize, frames);
        (diff["total"].as_u64().unwrap() as usize, white_cells)
    };
    let (padded, white_cells) = count(0, "padded", &|k| format!("frame{k:03}.png"));
    assert_eq!(padded, white_cells, "white cells counted in the pan");
    let (unpadded, _) = count(0, "unpadded", &|k| format!("frame{k}.png"));
    assert_eq!(unpadded, padded, "the same pan, numbered without zeros");
    let (counted, white_cells) = count(8, "slivers", &|k| format!("frame{k:03}.png"));
    assert_eq!(
        counted, white_cells,
        "white cells counted in the pan over frames 8 to 11"
    );
}

#[test]
fn frames_without_colour_are_skipped_and_the_camera_questioned() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("frames");
    let copied = copy_first(&data.join("frames/bccd/JPEGImages"), &frames, 4);
    // The last two as a monochrome camera would give them.
    for f in &copied[2..] {
        let grey = image::open(f).unwrap().to_luma8();
        image::DynamicImage::ImageLuma8(grey)
            .to_rgb8()
            .save(f)
            .unwrap();
    }
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), BCCD_UM_PER_PX, &report);
    let out = replay_folder(&board, &frames, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\n  skipped: 2 frames without colour: is the camera monochrome"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("has no colour, so it is skipped"),
        "{}",
        stderr(&out)
    );
    let diff = read_json(&report.join("differential.json"));
    assert_eq!(diff["skipped_frames"].as_u64(), Some(2), "{diff}");
    assert!(
        diff["total"].as_u64().unwrap() > 0,
        "the colour frames are counted"
    );
}

#[test]
fn no_real_frame_or_crop_is_taken_for_grey_and_each_grey_copy_is() {
    let Some(data) = data() else { return };
    let mut pictures: Vec<PathBuf> = ["frames/bccd/JPEGImages", "frames/txl-pbc/images/val"]
        .iter()
        .flat_map(|folder| marrowscope::eval::frames_in(&data.join(folder)).unwrap())
        .collect();
    for set in ["marrow", "pbc"] {
        for (_, crops) in marrowscope::eval::class_folders(&data.join(set)).unwrap() {
            pictures.extend(crops.into_iter().take(40));
        }
    }
    assert!(pictures.len() > 1_000, "{}", pictures.len());
    for picture in &pictures {
        let colour = image::open(picture).unwrap();
        let grey = image::DynamicImage::ImageLuma8(colour.to_luma8()).to_rgb8();
        let lacks_colour = marrowscope::localize::lacks_colour;
        assert!(!lacks_colour(&colour.to_rgb8()), "{}", picture.display());
        assert!(lacks_colour(&grey), "grey copy of {}", picture.display());
    }
}

#[test]
fn detect_eval_scores_real_frames_and_draws_each_one() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let mut copied = copy_first(&data.join("frames/bccd/JPEGImages"), &images, BCCD_FRAMES);
    // And a frame with two white cells whose expert boxes meet.
    let touching_pair = images.join("BloodImage_00034.jpg");
    std::fs::copy(
        data.join("frames/bccd/JPEGImages/BloodImage_00034.jpg"),
        &touching_pair,
    )
    .unwrap();
    copied.push(touching_pair);
    let labels = data.join("frames/bccd/Annotations");
    let boxes_by_frame: Vec<Vec<_>> = copied
        .iter()
        .map(|f| {
            let stem = f.file_stem().unwrap().to_str().unwrap();
            marrowscope::eval::read_voc_wbc(&labels.join(format!("{stem}.xml"))).unwrap()
        })
        .collect();
    let expert_boxes: Vec<_> = boxes_by_frame.iter().flatten().collect();
    let truth = expert_boxes.len() as u64;
    let annotated = tmp.path().join("annotated");
    let out = detect_eval_voc(
        &images,
        &labels,
        &[
            "--json",
            "--um-per-px",
            &BCCD_UM_PER_PX.to_string(),
            "--annotate",
            annotated.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let count = |key: &str| r[key].as_u64().unwrap();
    assert_eq!(count("frames"), copied.len() as u64);
    // Every expert box is either found or missed; precision and recall follow from the counts.
    assert_eq!(count("true_positives") + count("false_negatives"), truth);
    let tp = count("true_positives") as f64;
    let precision = tp / (tp + count("false_positives") as f64);
    assert!((r["precision"].as_f64().unwrap() - precision).abs() < 1e-9);
    assert!((r["recall"].as_f64().unwrap() - tp / truth as f64).abs() < 1e-9);
    // Each score lies inside its 95 % interval, which is not a single point.
    for score in ["precision", "recall"] {
        let (value, ci) = (r[score].as_f64().unwrap(), &r[format!("{score}_ci95")]);
        let (low, high) = (ci["low"].as_f64().unwrap(), ci["high"].as_f64().unwrap());
        assert!(low < value && value <= high && high <= 1.0, "{score}: {ci}");
    }
    // The in-view scores count the expert boxes clear of the (640 x 480) frame's edge, the cells
    // that get classified, and the found boxes clear of it.
    let view = &r["in_view"];
    let in_view = |key: &str| view[key].as_u64().unwrap();
    let clear = expert_boxes
        .iter()
        .filter(|b| b.clear_of_edge(640.0, 480.0));
    assert_eq!(in_view("expert"), clear.count() as u64);
    assert!(in_view("expert_found") <= in_view("expert"));
    assert!(in_view("found_paired") <= in_view("found").min(count("true_positives")));
    let view_recall = in_view("expert_found") as f64 / in_view("expert") as f64;
    assert!(
        (view["recall"].as_f64().unwrap() - view_recall).abs() < 1e-9,
        "{view}"
    );
    // The touching scores count the expert boxes that overlap or meet another of their frame.
    let touching = &r["touching"];
    let touching_count = |key: &str| touching[key].as_u64().unwrap();
    let expected: usize = boxes_by_frame
        .iter()
        .map(|boxes| {
            let touches_another = |(j, b): &(usize, &BoxPx)| {
                boxes
                    .iter()
                    .enumerate()
                    .any(|(k, o)| k != *j && b.touches(o))
            };
            boxes.iter().enumerate().filter(touches_another).count()
        })
        .sum();
    assert!(expected >= 2, "frame 00034's pair touches");
    assert_eq!(touching_count("expert"), expected as u64);
    // The detector takes every touching pair here apart (all of BCCD's: README), boxing no two
    // cells as one.
    assert_eq!(
        touching_count("expert_found"),
        expected as u64,
        "{touching}"
    );
    assert_eq!(touching_count("merged"), 0, "{touching}");
    assert!((touching["recall"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    // Each false and missed box is listed once, under the frame it is in.
    let stems: Vec<&str> = copied
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap())
        .collect();
    let listed = r["frames_with_errors"].as_array().unwrap();
    let boxes_of = |key: &str| -> u64 {
        listed
            .iter()
            .map(|e| {
                assert!(stems.contains(&e["frame"].as_str().unwrap()), "{e}");
                e[key].as_array().unwrap().len() as u64
            })
            .sum()
    };
    assert_eq!(boxes_of("false_positives"), count("false_positives"));
    assert_eq!(boxes_of("missed"), count("false_negatives"));
    assert!(listed
        .iter()
        .all(|e| e["false_positives"].as_array().unwrap().len()
            + e["missed"].as_array().unwrap().len()
            > 0));
    // On these frames the default localizer, the profile's detector, finds every white cell and
    // nothing else (all 364: see README).
    assert!(precision >= 0.9 && tp / truth as f64 >= 0.9, "{r}");
    for f in &copied {
        let stem = f.file_stem().unwrap().to_str().unwrap();
        let png = image::open(annotated.join(format!("{stem}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (640, 480));
    }
    // A frame whose expert box lies off its cell, in the corner: the cell found in it is listed as
    // a false box and the expert box as missed.
    let moved = tmp.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::copy(&copied[0], moved.join("moved.jpg")).unwrap();
    std::fs::write(
        moved.join("moved.xml"),
        "<annotation><object><name>WBC</name><bndbox>\
         <xmin>0</xmin><ymin>0</ymin><xmax>40</xmax><ymax>40</ymax></bndbox></object></annotation>",
    )
    .unwrap();
    let out = detect_eval_voc(&moved, &moved, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let listed = r["frames_with_errors"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{r}");
    assert_eq!(listed[0]["frame"], "moved");
    assert_eq!(
        listed[0]["missed"],
        serde_json::json!([[0.0, 0.0, 40.0, 40.0]])
    );
    let false_boxes = listed[0]["false_positives"].as_array().unwrap().len() as u64;
    assert!(
        false_boxes >= 1 && Some(false_boxes) == r["false_positives"].as_u64(),
        "{r}"
    );
    // A frame without its label file is a one-line error naming the file.
    std::fs::copy(&copied[0], images.join("unlabelled.jpg")).unwrap();
    let out = detect_eval_voc(&images, &labels, &[]);
    assert_one_line_error(&out, "unlabelled.xml");
}

#[test]
fn detect_eval_with_the_learned_detector_on_unseen_txl_frames() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    // TXL-PBC's val frames: the detector was trained on its train frames only.
    copy_first(&data.join("frames/txl-pbc/images/val"), &images, TXL_FRAMES);
    let labels = data.join("frames/txl-pbc/labels/val");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wbc-detector.ron");
    let eval = |detector: &Path| {
        detect_eval(
            &images,
            &labels,
            "yolo",
            &["--json", "--detector", detector.to_str().unwrap()],
        )
    };
    let scores = |out: std::process::Output| {
        assert!(out.status.success(), "{}", stderr(&out));
        let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(r["frames"].as_u64(), Some(TXL_FRAMES as u64));
        let f1 = r["f1"].as_f64().unwrap();
        (
            r["precision"].as_f64().unwrap(),
            r["recall"].as_f64().unwrap(),
            f1,
        )
    };
    let named = scores(eval(&manifest));
    // All 288 val frames: see README. These frames mix the four sources' magnifications.
    assert!(named.0 >= 0.9 && named.1 >= 0.9, "{named:?}");
    // The fast variant (the 640x480 profiles': desktop and Pi Zero) is within about a box of it
    // here (27 boxes).
    let fast = scores(eval(&manifest.with_file_name("wbc-detector-fast.ron")));
    assert!(fast.0 >= 0.9 && fast.1 >= 0.9, "{fast:?}");
    assert!(fast.2 >= named.2 - 0.04, "{fast:?} {named:?}");
    // Without options detect-eval scores the desktop profile's localizer, the fast detector.
    assert_eq!(
        scores(detect_eval(&images, &labels, "yolo", &["--json"])),
        fast
    );
    // The text output's fourth line gives the intervals of precision and recall, over all boxes
    // and over those clear of the edge; recall's holds the recall.
    let text = detect_eval(&images, &labels, "yolo", &[]);
    assert!(text.status.success(), "{}", stderr(&text));
    let line = stdout(&text).lines().nth(3).unwrap_or_default().to_string();
    assert!(line.starts_with("95 % intervals"), "{line}");
    let intervals: Vec<(f64, f64)> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches([',', ';']).split_once('-'))
        .filter_map(|(low, high)| Some((low.parse().ok()?, high.parse().ok()?)))
        .collect();
    assert_eq!(intervals.len(), 4, "{line}");
    let (low, high) = intervals[1];
    assert!(low < fast.1 && fast.1 <= high, "{line}");
    // The fifth line scores the cells touching a neighbour.
    let line = stdout(&text).lines().nth(4).unwrap_or_default().to_string();
    assert!(line.starts_with("cells touching a neighbour"), "{line}");
    assert!(
        line.contains("recall=") && line.contains("found on their own"),
        "{line}"
    );
    // It is the better of the two here: the classical one's fixed scale fits few of these sources.
    let classical = scores(detect_eval(
        &images,
        &labels,
        "yolo",
        &["--json", "--classical"],
    ));
    assert!(
        classical.2 < named.2 && classical.2 < fast.2,
        "{classical:?} {named:?} {fast:?}"
    );
    // A manifest whose hash does not match its model is refused in one line.
    let bad = tmp.path().join("wbc-detector.ron");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sha = text.split('"').nth(5).unwrap().to_string();
    std::fs::write(&bad, text.replace(&sha, &"0".repeat(64))).unwrap();
    std::fs::copy(
        manifest.with_file_name("wbc-detector.onnx"),
        tmp.path().join("wbc-detector.onnx"),
    )
    .unwrap();
    assert_one_line_error(&eval(&bad), "does not match");
}

/// TXL-PBC's 416 x 416 val frames (BCD's copies of BCCD frames) show about 40 µm at 0.096 µm per
/// pixel by their red cells' size; nine of them side by side show 120 µm, the field of the
/// Raspberry Pi 4 profile's camera (1280 px at 0.098 µm/px).
const TXL_416_UM_PER_PX: f32 = 0.096;

#[test]
fn detect_eval_reads_a_wider_field_at_a_larger_input() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (images, labels) = (tmp.path().join("images"), tmp.path().join("labels"));
    let truth = write_mosaic(
        &data.join("frames/txl-pbc"),
        (416, 416),
        3,
        &images,
        &labels,
    );
    assert!(truth >= 6, "{truth} white cells");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wbc-detector-fast.ron");
    let scale = TXL_416_UM_PER_PX.to_string();
    let eval = |detector: &Path| {
        let out = detect_eval(
            &images,
            &labels,
            "yolo",
            &[
                "--json",
                "--um-per-px",
                &scale,
                "--detector",
                detector.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let count = |key: &str| r[key].as_u64().unwrap();
        (count("true_positives"), count("false_positives"))
    };
    // The shipped manifest names the field its network learnt (48 µm): this 120 µm frame is read
    // at 384 px instead of 160, and the cells are found as in the frames one by one.
    let (found, false_boxes) = eval(&manifest);
    assert!(
        found + 1 >= truth && false_boxes <= 2,
        "{found} of {truth}, {false_boxes} false"
    );
    // Squeezed into the network's 160 px, as every frame was before, the cells are a third of
    // the size it learnt, and most are lost.
    let squeezed = tmp.path().join("squeezed.ron");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("field_um: Some(48.0),"), "{text}");
    std::fs::write(&squeezed, text.replace("field_um: Some(48.0),", "")).unwrap();
    std::fs::copy(
        manifest.with_file_name("wbc-detector-fast.onnx"),
        tmp.path().join("wbc-detector-fast.onnx"),
    )
    .unwrap();
    let (found_squeezed, _) = eval(&squeezed);
    assert!(2 * found_squeezed <= truth, "{found_squeezed} of {truth}");
}

/// A `k` × `k` mosaic of the first TXL-PBC val frames of `size` (sorted by name) written to
/// `images`, with every box of their YOLO labels moved into it written to `labels`; returns how
/// many white-cell boxes it holds.
fn write_mosaic(txl: &Path, size: (u32, u32), k: u32, images: &Path, labels: &Path) -> u64 {
    let mut frames: Vec<_> = std::fs::read_dir(txl.join("images/val"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| image::image_dimensions(p).ok() == Some(size))
        .collect();
    frames.sort();
    assert!(
        frames.len() >= (k * k) as usize,
        "{} frames of {size:?}",
        frames.len()
    );
    let mut mosaic = image::RgbImage::new(size.0 * k, size.1 * k);
    let (mut lines, mut white) = (Vec::new(), 0);
    for (i, frame) in frames.iter().take((k * k) as usize).enumerate() {
        let (gx, gy) = (i as u32 % k, i as u32 / k);
        let picture = image::open(frame).unwrap().to_rgb8();
        image::imageops::replace(
            &mut mosaic,
            &picture,
            (gx * size.0).into(),
            (gy * size.1).into(),
        );
        let stem = frame.file_stem().unwrap().to_str().unwrap();
        let label = std::fs::read_to_string(txl.join(format!("labels/val/{stem}.txt"))).unwrap();
        for fields in label
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            let [class, cx, cy, w, h] = fields[..] else {
                continue;
            };
            let v = |s: &str| s.parse::<f32>().unwrap() / k as f32;
            let (cx, cy) = (v(cx) + gx as f32 / k as f32, v(cy) + gy as f32 / k as f32);
            lines.push(format!("{class} {cx} {cy} {} {}", v(w), v(h)));
            white += u64::from(class == "0");
        }
    }
    std::fs::create_dir_all(images).unwrap();
    std::fs::create_dir_all(labels).unwrap();
    mosaic.save(images.join("mosaic.png")).unwrap();
    std::fs::write(labels.join("mosaic.txt"), lines.join("\n") + "\n").unwrap();
    white
}

#[test]
fn detect_eval_sets_aside_the_boxes_the_annotation_contradicts_itself_on() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    // Two TXL-PBC val frames: in the first a white-cell box is also boxed as a red cell, in the
    // second one white cell has two white-cell boxes (README, "Localization on real smears").
    for frame in [
        "3e08ca80-08dd-5b2c-b91e-60539d5b6a04.jpg",
        "c7e344a1-6f63-58e5-ac45-a389d669924f.jpg",
    ] {
        let from = data.join("frames/txl-pbc/images/val").join(frame);
        std::fs::copy(from, images.join(frame)).unwrap();
    }
    let labels = data.join("frames/txl-pbc/labels/val");
    let out = detect_eval(&images, &labels, "yolo", &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let c = &r["consistent"];
    assert_eq!(c["also_another_class"].as_u64(), Some(1), "{c}");
    assert_eq!(c["second_boxes"].as_u64(), Some(1), "{c}");
    let expert = r["true_positives"].as_u64().unwrap() + r["false_negatives"].as_u64().unwrap();
    assert_eq!(c["expert"].as_u64(), Some(expert - 2), "{c}");
    let found = r["true_positives"].as_u64().unwrap() + r["false_positives"].as_u64().unwrap();
    assert!(c["found"].as_u64().unwrap() <= found, "{c}");
    // The raw scores stay what they were: the set-aside boxes are misses there, listed apart.
    assert!(
        c["recall"].as_f64().unwrap() > r["recall"].as_f64().unwrap(),
        "{r}"
    );
    let aside: usize = r["frames_with_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["missed_set_aside"].as_array().unwrap().len())
        .sum();
    assert_eq!(aside, 2, "{r}");
    let text = detect_eval(&images, &labels, "yolo", &[]);
    let line = stdout(&text).lines().nth(5).unwrap_or_default().to_string();
    assert!(
        line.starts_with("white cells the annotation agrees on (1 expert box(es) also boxed as another class set aside, 1 second box(es)"),
        "{line}"
    );
}

/// `marrowscope detect-eval` on a folder of frames with VOC labels, plus `extra` arguments.
fn detect_eval_voc(images: &Path, labels: &Path, extra: &[&str]) -> std::process::Output {
    detect_eval(images, labels, "voc", extra)
}

/// `marrowscope detect-eval` on a folder of frames with labels in `format`, plus `extra` arguments.
#[test]
fn detect_eval_under_a_dim_uneven_yellow_lamp_finds_the_same_cells() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (val, labels) = (
        data.join("frames/txl-pbc/images/val"),
        data.join("frames/txl-pbc/labels/val"),
    );
    // Every val frame under a yellowish lamp (blue at 70 %) turned down and off-centre: its light
    // falls from 85 % at the right edge to 45 % at the left (benches/perturb_frames.py --lamp).
    // Without evening out the lighting, the fast detector missed 8 more of the 305 cells here.
    let dim = tmp.path().join("dim");
    std::fs::create_dir_all(&dim).unwrap();
    for entry in std::fs::read_dir(&val).unwrap().flatten() {
        let mut frame = image::open(entry.path()).unwrap().to_rgb8();
        let width = frame.width() as f32;
        for (x, _, pixel) in frame.enumerate_pixels_mut() {
            let light = 0.45 + 0.4 * x as f32 / (width - 1.0);
            for (v, tint) in pixel.0.iter_mut().zip([1.0, 0.92, 0.7]) {
                *v = (*v as f32 * light * tint).round() as u8;
            }
        }
        let stem = entry.path().file_stem().unwrap().to_owned();
        frame.save(dim.join(stem).with_extension("png")).unwrap();
    }
    let found = |images: &Path| {
        let out = detect_eval(images, &labels, "yolo", &["--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let count = |key: &str| r[key].as_u64().unwrap();
        (count("true_positives"), count("false_positives"))
    };
    // Within two cells and three false boxes (298 / 6 and 297 / 7 on this VM): room for another
    // CPU's rounding, far from the eight cells lost without the lighting range.
    let ((tp, fp), (dim_tp, dim_fp)) = (found(&val), found(&dim));
    assert!(
        dim_tp + 2 >= tp,
        "{dim_tp} cells found under the dim lamp, {tp} under the normal one"
    );
    assert!(
        dim_fp <= fp + 3,
        "{dim_fp} false boxes under the dim lamp, {fp} under the normal one"
    );
}

fn detect_eval(images: &Path, labels: &Path, format: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "detect-eval",
        "--images",
        images.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--format",
        format,
    ];
    args.extend_from_slice(extra);
    marrowscope(&args)
}

#[test]
fn virtual_slide_count_matches_its_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), 0.1, &report);
    // The whole slide, not the first 200 cells.
    let text = std::fs::read_to_string(&board).unwrap();
    std::fs::write(
        &board,
        text.replace("count_target: 200", "count_target: 5000"),
    )
    .unwrap();
    let out = marrowscope(&[
        "run",
        "--board",
        board.to_str().unwrap(),
        "--source",
        "virtual:2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let truth: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Virtual slide truth: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("truth line");
    let diff = read_json(&report.join("differential.json"));
    // The profile names a detector, but the drawn slide keeps the classical localizer.
    assert_eq!(diff["localizer"], "classical");
    let total = diff["total"].as_f64().unwrap();
    let error = (total - truth).abs() / truth;
    assert!(
        error <= 0.10,
        "counted {total} of {truth} cells ({:.1} % off)",
        error * 100.0
    );
}

/// `classify --json` on these files, which must succeed: one JSON object per output line.
fn classify_json(files: &[String]) -> Vec<serde_json::Value> {
    let mut args = vec!["classify", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = marrowscope(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn classify_prints_one_json_object_per_crop() {
    let Some(data) = data() else { return };
    let crops: Vec<String> = ["BLA", "LYT", "NGS"]
        .iter()
        .map(|c| {
            let dir = data.join("marrow").join(c);
            let mut f: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            f.sort();
            f[0].display().to_string()
        })
        .collect();
    let lines = classify_json(&crops);
    assert_eq!(lines.len(), 3);
    for (line, file) in lines.iter().zip(&crops) {
        assert_eq!(line["file"].as_str().unwrap(), file);
        let p = line["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(line["class"].as_str().unwrap().len() >= 3);
    }
}

#[test]
fn classify_in_batches_gives_each_crop_its_own_class_and_names_an_unreadable_one() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut crops: Vec<String> = ["BLA", "EOS", "LYT"]
        .iter()
        .flat_map(|c| copy_first(&data.join("marrow").join(c), &tmp.path().join(c), 2))
        .map(|p| p.display().to_string())
        .collect();
    let corrupt = tmp.path().join("torn.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff not a whole jpeg").unwrap();
    crops.insert(3, corrupt.display().to_string());
    let board = write_board(tmp.path(), 0.085, &tmp.path().join("report"));
    // One scale for all: `auto` would measure it from whichever crops are given.
    let with_board = [
        "classify",
        "--json",
        "--um-per-px",
        "0.1",
        "--board",
        board.to_str().unwrap(),
    ];
    let one_by_one: Vec<serde_json::Value> = crops
        .iter()
        .filter(|c| !c.ends_with("torn.jpg"))
        .map(|c| {
            let out = marrowscope(&[&with_board[..], &[c.as_str()]].concat());
            serde_json::from_str(stdout(&out).trim()).unwrap()
        })
        .collect();
    let text = std::fs::read_to_string(&board).unwrap();
    assert!(text.contains("batch: 1,"));
    std::fs::write(&board, text.replace("batch: 1,", "batch: 4,")).unwrap();
    let mut args = with_board.to_vec();
    args.extend(crops.iter().map(String::as_str));
    let out = marrowscope(&args);
    assert_one_line_error(&out, "torn.jpg: corrupt or unreadable image");
    let batched: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(batched.len(), one_by_one.len());
    for (b, one) in batched.iter().zip(&one_by_one) {
        assert_eq!(
            (&b["file"], &b["top_class"]),
            (&one["file"], &one["top_class"])
        );
        let (pb, p1) = (
            b["probability"].as_f64().unwrap(),
            one["probability"].as_f64().unwrap(),
        );
        assert!((pb - p1).abs() < 1e-4, "{b} against {one}");
    }
}

/// Needs the `tiff` feature (default; board builds leave it out) to write and read the TIFF copies.
#[cfg(feature = "tiff")]
#[test]
fn a_crop_saved_as_png_bmp_or_tiff_gets_the_same_class() {
    let Some(data) = data() else { return };
    let mut crops: Vec<_> = std::fs::read_dir(data.join("marrow").join("LYT"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    crops.sort();
    let crop = image::open(&crops[0]).unwrap().to_rgb8();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["crop.png", "crop.bmp", "crop.tif"] {
        let path = dir.path().join(name);
        crop.save(&path).unwrap();
        files.push(path.display().to_string());
    }
    // 16 bits a channel, as scientific cameras save
    let deep = image::DynamicImage::ImageRgb8(crop).to_rgb16();
    let path = dir.path().join("crop16.tiff");
    deep.save(&path).unwrap();
    files.push(path.display().to_string());
    let lines = classify_json(&files);
    assert_eq!(lines.len(), files.len());
    for line in &lines[1..] {
        assert_eq!(line["class"], lines[0]["class"], "{line}");
        assert_eq!(line["probability"], lines[0]["probability"], "{line}");
    }
}

#[test]
fn eval_reports_the_contract_json_and_unknown_classes() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A folder named in lower case is scored as the model's class of that code.
    for class in ["eos", "LYT", "NGS"] {
        let source = data.join("marrow").join(class.to_uppercase());
        copy_first(&source, &tmp.path().join(class), 6);
    }
    // A class the model has never heard of: always wrong, and reported.
    copy_first(&data.join("marrow/BLA"), &tmp.path().join("XYZ"), 2);
    let out = marrowscope(&["eval", "--data", tmp.path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["n"].as_u64(), Some(20));
    for key in ["accuracy", "macro_f1"] {
        let x = v[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{key} {x}");
    }
    assert_eq!(v["classes"]["XYZ"]["recall"].as_f64(), Some(0.0));
    assert_eq!(v["classes"]["EOS"]["support"].as_u64(), Some(6));
    assert!(v["confusion"]["LYT"].is_object());
    assert_eq!(v["unknown_classes"], serde_json::json!(["XYZ"]));
}

/// Pictures made from a real crop that the model would still give a class: a grey copy, one shrunk
/// to 20 px, a GIF under a `.png` name, and a cut-out (the cell's disc kept, its surround made
/// transparent black, as an export of segmented cells has it). Returns their paths.
fn unfit_copies_of(crop: &Path, dir: &Path) -> Vec<PathBuf> {
    let colour = image::open(crop).unwrap();
    let grey = dir.join("grey.png");
    image::DynamicImage::ImageLuma8(colour.to_luma8())
        .to_rgb8()
        .save(&grey)
        .unwrap();
    let tiny = dir.join("tiny.png");
    colour.thumbnail(20, 20).save(&tiny).unwrap();
    // A GIF is known by its first bytes, and refused before it is decoded.
    let gif = dir.join("gif.png");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    let cut_out = dir.join("cut-out.png");
    let rgb = colour.to_rgb8();
    let (w, h) = rgb.dimensions();
    let radius = w.min(h) as f32 * 0.35;
    image::RgbaImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - w as f32 / 2.0, y as f32 - h as f32 / 2.0);
        let [r, g, b] = rgb.get_pixel(x, y).0;
        if dx.hypot(dy) < radius {
            image::Rgba([r, g, b, 255])
        } else {
            image::Rgba([0, 0, 0, 0])
        }
    })
    .save(&cut_out)
    .unwrap();
    vec![grey, tiny, gif, cut_out]
}

#[test]
fn classify_refuses_a_grey_a_tiny_a_gif_and_a_cut_out_crop_and_classifies_the_real_one() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let real = copy_first(&data.join("marrow/EOS"), tmp.path(), 1).remove(0);
    let mut args = vec!["classify".to_string(), real.display().to_string()];
    args.extend(
        unfit_copies_of(&real, tmp.path())
            .iter()
            .map(|p| p.display().to_string()),
    );
    let out = marrowscope(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let printed = stdout(&out);
    let classified: Vec<&str> = printed.lines().collect();
    assert_eq!(classified.len(), 1, "only the real crop: {classified:?}");
    assert!(classified[0].starts_with(&real.display().to_string()));
    assert_one_line_error(&out, "grey.png: has no colour");
    let err = stderr(&out);
    assert!(err.contains("(and 3 more images not classified)"), "{err}");
    // Each one is named in a warning as it is met.
    for warning in [
        "grey.png: has no colour",
        "tiny.png: 20 × 20 px is too small to be a cell crop",
        "gif.png: a GIF picture, which marrowscope does not read",
        "cut-out.png: 61 % of it is transparent",
    ] {
        assert!(err.contains(warning), "{warning}: {err}");
    }
}

#[test]
fn classify_takes_a_folder_of_crops_and_names_a_folder_of_class_folders() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let crops = tmp.path().join("crops");
    let mut given = copy_first(&data.join("marrow/EOS"), &crops, 2);
    given.extend(copy_first(&data.join("marrow/LYT"), &crops, 1));
    given.sort();
    // A sub-folder is not looked into, and a file of another kind is passed over.
    copy_first(&data.join("marrow/BLA"), &crops.join("BLA"), 1);
    std::fs::write(crops.join("notes.txt"), "slide 4").unwrap();
    let out = marrowscope(&["classify", crops.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let named: Vec<String> = stdout(&out)
        .lines()
        .map(|line| line.split('\t').next().unwrap().to_string())
        .collect();
    let expected: Vec<String> = given.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        named, expected,
        "each picture of the folder once, in name order"
    );

    let out = marrowscope(&["classify", tmp.path().to_str().unwrap()]);
    assert_one_line_error(&out, "holds no image files, but its folders crops do");
}

#[test]
fn eval_leaves_a_grey_crop_out_of_the_score_and_names_it() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let class = tmp.path().join("EOS");
    let real = copy_first(&data.join("marrow/EOS"), &class, 3);
    let grey = unfit_copies_of(&real[0], &class).remove(0);
    for other in ["tiny.png", "gif.png", "cut-out.png"] {
        std::fs::remove_file(class.join(other)).unwrap();
    }
    let out = marrowscope(&["eval", "--data", tmp.path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("grey.png: has no colour"),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["n"].as_u64(), Some(3), "the three real crops: {v}");
    assert_eq!(
        v["unreadable"],
        serde_json::json!([grey.display().to_string()])
    );
}

#[test]
fn eval_with_no_readable_crop_is_an_error_not_a_score() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("BLA")).unwrap();
    for name in ["a.png", "b.jpg"] {
        std::fs::write(tmp.path().join("BLA").join(name), b"not a picture").unwrap();
    }
    let out = marrowscope(&["eval", "--data", tmp.path().to_str().unwrap(), "--json"]);
    assert_one_line_error(&out, "none of its 2 crops could be scored; the first: ");
    assert!(
        stderr(&out).contains("a.png: corrupt or unreadable image"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "no score: {}", stdout(&out));
}

#[test]
fn a_file_or_a_missing_folder_where_a_folder_goes_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let picture = tmp.path().join("f.png");
    save_flat_picture(&picture, (64, 48), [220, 200, 210]);
    let missing = tmp.path().join("labels");
    let out = detect_eval(&picture, tmp.path(), "yolo", &[]);
    assert_one_line_error(
        &out,
        "f.png: a file, not a folder: --images, the frames must be",
    );
    let out = detect_eval(tmp.path(), &missing, "yolo", &[]);
    assert_one_line_error(&out, "labels: no such folder (--labels, the label files)");
    let out = marrowscope(&["eval", "--data", picture.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "f.png: a file, not a folder: --data, one folder per class code",
    );
    let (dir, file) = (tmp.path().to_str().unwrap(), picture.to_str().unwrap());
    for (source, said) in [
        (
            format!("dir:{file}"),
            "a file, not a folder: replay one picture with file:PATH",
        ),
        (
            format!("file:{dir}"),
            "a folder, not an image file: replay a folder with dir:PATH",
        ),
        (
            dir.to_string(),
            &format!("a folder; replay it with dir:{dir}"),
        ),
        (
            format!("dir:{}", missing.display()),
            "labels: no such folder",
        ),
    ] {
        let out = marrowscope(&["run", "--source", &source, "--frames", "1"]);
        assert_one_line_error(&out, said);
    }
}

#[test]
fn a_folder_one_level_too_high_swapped_or_of_the_other_label_format_says_so() {
    let Some(data) = data() else { return };
    let (txl, bccd) = (data.join("frames/txl-pbc"), data.join("frames/bccd"));
    let (images, labels) = (txl.join("images/val"), txl.join("labels/val"));
    let cases = [
        (
            detect_eval(&txl.join("images"), &labels, "yolo", &[]),
            "images: holds no image files, but its folders train, val do: give one of them",
        ),
        (
            detect_eval(&images, &txl.join("labels"), "yolo", &[]),
            "labels: holds no .txt label files, but its folders train, val do: give one of them",
        ),
        (
            detect_eval(&images, &labels, "voc", &[]),
            " .txt files: those are read with --format yolo",
        ),
        (
            detect_eval(
                &bccd.join("JPEGImages"),
                &bccd.join("Annotations"),
                "yolo",
                &[],
            ),
            ".xml files: those are read with --format voc",
        ),
        (
            detect_eval(&labels, &images, "yolo", &[]),
            " .jpg files: those are the frames, given as --images",
        ),
    ];
    for (out, said) in cases {
        assert_one_line_error(&out, said);
    }
    let replay = format!("dir:{}", txl.join("images").display());
    let out = marrowscope(&["run", "--source", &replay, "--frames", "1"]);
    assert_one_line_error(&out, "but its folders train, val do: give one of them");
    // The data folder above the class folders: every crop would be scored as a wrong class.
    let out = marrowscope(&["eval", "--data", data.to_str().unwrap()]);
    assert_one_line_error(&out, "its folder marrow holds class folders; give that one");
}

#[test]
fn yolo_white_cells_numbered_otherwise_are_read_from_classes_txt() {
    let Some(data) = data() else { return };
    let txl = data.join("frames/txl-pbc");
    let tmp = tempfile::tempdir().unwrap();
    let (images, labels) = (tmp.path().join("images"), tmp.path().join("labels"));
    std::fs::create_dir_all(&labels).unwrap();
    // TXL-PBC numbers WBC 0, RBC 1, Platelet 2 (its classes.txt); this copy numbers them 2, 0, 1.
    for frame in copy_first(&txl.join("images/val"), &images, 8) {
        let name = format!("{}.txt", frame.file_stem().unwrap().to_str().unwrap());
        let text = std::fs::read_to_string(txl.join("labels/val").join(&name)).unwrap();
        let renumbered: String = text
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((class, rest)) => {
                    let class = ["2", "0", "1"][class.parse::<usize>().unwrap()];
                    format!("{class} {rest}\n")
                }
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(labels.join(&name), renumbered).unwrap();
    }
    let scores = |labels: &Path| {
        let out = detect_eval(&images, labels, "yolo", &["--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        (r["true_positives"].clone(), r["false_negatives"].clone())
    };
    let as_published = scores(&txl.join("labels/val"));
    assert!(as_published.0.as_u64().unwrap() > 0);
    // Without the class names, class 0 (here the red cells) would be scored as the white cells.
    assert_ne!(scores(&labels), as_published);
    std::fs::write(tmp.path().join("classes.txt"), "RBC\nPlatelet\nWBC\n").unwrap();
    assert_eq!(scores(&labels), as_published);
}

#[test]
fn a_board_profile_and_a_model_manifest_given_in_each_others_place_are_named() {
    let (board, manifest) = (repo().join("board/desktop.ron"), shipped_manifest());
    let out = marrowscope(&["check", "--board", manifest.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "a cell classifier's manifest, given where a board profile goes (give it with --model",
    );
    let crop = repo().join("models/demo-atlas.jpg");
    let out = marrowscope(&[
        "classify",
        "--model",
        board.to_str().unwrap(),
        crop.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &out,
        "desktop.ron: a board profile, given where a cell classifier's manifest goes (give it with --board)",
    );
}

#[test]
fn every_board_profile_checks() {
    for entry in std::fs::read_dir(repo().join("board")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "ron") {
            let out = marrowscope(&["check", "--board", path.to_str().unwrap()]);
            assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
            // The detector's input for the camera's field: the desktop's 54 µm at the network's
            // 160 px, the Raspberry Pi 4's 125 µm at 416 ("Fields wider than the training
            // frames'" in README).
            let name = path.file_stem().unwrap().to_str().unwrap();
            let said = stdout(&out);
            match name {
                "desktop" => assert!(said.contains("54 µm field read at 160 px"), "{said}"),
                "rpi4-hq-camera" => assert!(said.contains("125 µm field read at 416 px"), "{said}"),
                _ => assert!(said.contains(" px)"), "{said}"),
            }
            assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
        }
    }
}

#[test]
fn a_camera_field_too_wide_for_the_detector_is_warned_about() {
    // 640 px at 0.6 µm/px: 384 µm, twice the 4 × 48 µm the largest input reads at the learnt size.
    let tmp = tempfile::tempdir().unwrap();
    let models = format!("{}/", repo().join("models").display());
    let text = std::fs::read_to_string(repo().join("board/desktop.ron")).unwrap();
    let wide =
        text.replace("../models/", &models)
            .replacen("um_per_px: 0.085", "um_per_px: 0.6", 1);
    assert_ne!(wide, text.replace("../models/", &models));
    let path = tmp.path().join("wide.ron");
    std::fs::write(&path, wide).unwrap();
    let out = marrowscope(&["check", "--board", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("384 µm field read at 640 px"),
        "{}",
        stdout(&out)
    );
    let warning = stderr(&out);
    assert!(
        warning.contains("warning: ") && warning.contains("wide.ron") && warning.contains("50 %"),
        "{warning}"
    );
}

#[test]
fn corrupt_jpeg_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("cell.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    let out = marrowscope(&["classify", bad.to_str().unwrap()]);
    assert_one_line_error(&out, "cell.jpg");
    let report = tmp.path().join("report");
    let out = marrowscope(&[
        "run",
        "--source",
        &format!("file:{}", bad.display()),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "cell.jpg");
}

#[test]
fn annotating_or_reporting_into_a_file_is_refused_before_the_first_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("notes.png");
    std::fs::write(&file, b"not a folder").unwrap();
    let report = tmp.path().join("report");
    let annotate = file.to_str().unwrap();
    // Its frames folder holds notes.png, which no decoder reads, and its (empty) label file:
    // refused before the frame is read.
    std::fs::write(tmp.path().join("notes.txt"), "").unwrap();
    let frames = tmp.path().to_str().unwrap();
    let runs: [&[&str]; 2] = [
        &[
            "run",
            "--frames",
            "2",
            "--report",
            report.to_str().unwrap(),
            "--annotate",
            annotate,
        ],
        &[
            "detect-eval",
            "--images",
            frames,
            "--labels",
            frames,
            "--format",
            "yolo",
            "--annotate",
            annotate,
        ],
    ];
    for args in runs {
        let out = marrowscope(args);
        assert_one_line_error(
            &out,
            "notes.png: cannot write: a file is here, where annotated frames need a folder",
        );
    }
    assert!(!report.exists(), "nothing was counted");
    let out = marrowscope(&["run", "--frames", "2", "--report", annotate]);
    assert_one_line_error(
        &out,
        "notes.png: cannot write: a file is here, where the report and journal need a folder",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a folder");
}

#[test]
fn missing_model_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let crop = tmp.path().join("c.png");
    save_flat_picture(&crop, (64, 64), [200, 100, 150]);
    let out = marrowscope(&[
        "classify",
        "--model",
        "/nonexistent/model.ron",
        crop.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "/nonexistent/model.ron");
}

#[test]
fn a_manifest_that_does_not_fit_its_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest_text = std::fs::read_to_string(shipped_manifest()).unwrap();
    let manifest = marrowscope::classify::ModelManifest::load(&shipped_manifest()).unwrap();
    let onnx = repo().join("models").join(&manifest.file);
    std::fs::copy(&onnx, tmp.path().join(&manifest.file)).unwrap();
    let crop = tmp.path().join("c.png");
    save_flat_picture(&crop, (64, 64), [200, 100, 150]);
    let m = tmp.path().join("m.ron");
    let classify_with = |text: String| {
        std::fs::write(&m, text).unwrap();
        marrowscope(&[
            "classify",
            "--model",
            m.to_str().unwrap(),
            crop.to_str().unwrap(),
        ])
    };
    let out = classify_with(manifest_text.replace("input_size: 128", "input_size: 96"));
    assert_one_line_error(
        &out,
        "the model takes 128 × 128 px pictures, but its manifest's `input_size` is 96",
    );
    let out = classify_with(manifest_text.replace("precision: \"int8\"", "precision: \"f32\""));
    assert_one_line_error(
        &out,
        "the model is quantized (int8), but its manifest's `precision` is \"f32\"",
    );
    let out = classify_with(manifest_text.replace("precision: \"int8\"", "precision: \"fp64\""));
    assert_one_line_error(&out, "`precision` \"fp64\" is none of f32, f16, int8");
    let out = classify_with(manifest_text.replace("\"BAS\", \"BLA\"", "\"BLA\", \"BLA\""));
    assert_one_line_error(&out, "invalid manifest: `classes` lists \"BLA\" twice");
    assert!(classify_with(manifest_text.clone()).status.success());
    // One flipped bit in the weights.
    let copied = tmp.path().join(&manifest.file);
    let mut bytes = std::fs::read(&copied).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&copied, bytes).unwrap();
    assert_one_line_error(&classify_with(manifest_text), "does not match");
}

#[test]
fn a_folder_or_a_missing_file_where_a_file_goes_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = marrowscope(&["check", "--board", dir]);
    assert_one_line_error(&out, "cannot read board profile: a folder, not a file");
    let crop = tmp.path().join("crop.png");
    save_flat_picture(&crop, (64, 64), [200, 120, 180]);
    let out = marrowscope(&["classify", "--model", dir, crop.to_str().unwrap()]);
    assert_one_line_error(&out, "a folder, not a file");
    let missing = tmp.path().join("cell.png");
    let out = marrowscope(&["classify", missing.to_str().unwrap()]);
    assert_one_line_error(&out, "cell.png: no such image file");
}

#[test]
fn missing_board_profile_names_the_cause_once() {
    let out = marrowscope(&["check", "--board", "/nonexistent/board.ron"]);
    assert_one_line_error(&out, "/nonexistent/board.ron: cannot read board profile");
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn unknown_source_is_a_one_line_error() {
    let out = marrowscope(&["run", "--source", "rtsp://camera"]);
    assert_one_line_error(&out, "unknown source");
}

#[test]
fn malformed_board_names_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("board/desktop.ron")).unwrap();
    let bad = text.replacen("fps: 30,", "fps: 30,,", 1);
    let line = bad.lines().position(|l| l.contains("30,,")).unwrap() + 1;
    let path = tmp.path().join("bad.ron");
    std::fs::write(&path, bad).unwrap();
    let out = marrowscope(&["check", "--board", path.to_str().unwrap()]);
    assert_one_line_error(&out, &format!("bad.ron:{line}:"));
    let invalid = text.replacen("count_target: 200", "count_target: 0", 1);
    std::fs::write(&path, invalid).unwrap();
    let out = marrowscope(&["run", "--board", path.to_str().unwrap()]);
    assert_one_line_error(&out, "`count_target`");
    // An alert class the model lacks: refused by check and run, which read the model to know.
    let models = repo().join("models");
    let unknown_alert = text
        .replace("\"../models/", &format!("\"{}/", models.display()))
        .replacen("[\"BLA\"]", "[\"BLA\", \"BLAST\"]", 1);
    let line = unknown_alert
        .lines()
        .position(|l| l.contains("BLAST"))
        .unwrap()
        + 1;
    std::fs::write(&path, unknown_alert).unwrap();
    for command in ["check", "run"] {
        let out = marrowscope(&[command, "--board", path.to_str().unwrap()]);
        assert_one_line_error(&out, &format!("bad.ron:{line}:"));
        assert!(
            stderr(&out).contains("\"BLAST\" is not a class of model"),
            "{}",
            stderr(&out)
        );
    }
}

/// `text` as an editor that writes a byte-order mark and Windows line ends saves it.
fn with_bom_and_crlf(text: &str) -> String {
    format!("\u{feff}{}", text.replace('\n', "\r\n"))
}

#[test]
fn profiles_manifests_and_labels_saved_with_a_byte_order_mark_and_crlf_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let models = repo().join("models");
    // A detector manifest and a board profile naming it, as Windows Notepad saves them.
    let manifest = std::fs::read_to_string(models.join("wbc-detector-fast.ron")).unwrap();
    let manifest = manifest.replace(
        "\"wbc-detector",
        &format!("\"{}/wbc-detector", models.display()),
    );
    let detector = tmp.path().join("detector.ron");
    std::fs::write(&detector, with_bom_and_crlf(&manifest)).unwrap();
    let profile = std::fs::read_to_string(repo().join("board/desktop.ron"))
        .unwrap()
        .replace("\"../models/", &format!("\"{}/", models.display()));
    let detector_line = profile.lines().find(|l| l.contains("detector:")).unwrap();
    let profile = profile.replacen(
        detector_line,
        &format!("    detector: Some(\"{}\"),", detector.display()),
        1,
    );
    let board = tmp.path().join("board.ron");
    std::fs::write(&board, with_bom_and_crlf(&profile)).unwrap();
    let out = marrowscope(&["check", "--board", board.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("marrowscope-wbc-centre-detector-fast"),
        "{}",
        stdout(&out)
    );
    // An error in such a file is placed where the editor shows it: the mark takes no column.
    let bad = with_bom_and_crlf(&profile.replacen('(', "[", 1));
    std::fs::write(&board, bad).unwrap();
    let out = marrowscope(&["check", "--board", board.to_str().unwrap()]);
    let first = profile.lines().position(|l| l.starts_with('(')).unwrap() + 1;
    assert_one_line_error(&out, &format!("board.ron:{first}:1:"));
    // Saved as UTF-16 ("Unicode" in Windows Notepad): refused with what it is.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(profile.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(&board, utf16).unwrap();
    let out = marrowscope(&["check", "--board", board.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "board.ron: cannot read board profile: saved as UTF-16 text",
    );

    // YOLO label files of real frames: scored as the same files without the mark.
    let Some(data) = data() else { return };
    let images = tmp.path().join("images");
    let frames = copy_first(&data.join("frames/txl-pbc/images/val"), &images, 4);
    let marked = tmp.path().join("labels");
    std::fs::create_dir_all(&marked).unwrap();
    let labels = data.join("frames/txl-pbc/labels/val");
    for frame in &frames {
        let name = format!("{}.txt", frame.file_stem().unwrap().to_str().unwrap());
        let text = std::fs::read_to_string(labels.join(&name)).unwrap();
        std::fs::write(marked.join(&name), with_bom_and_crlf(&text)).unwrap();
    }
    let plain = detect_eval(&images, &labels, "yolo", &["--json"]);
    let saved = detect_eval(&images, &marked, "yolo", &["--json"]);
    assert!(saved.status.success(), "{}", stderr(&saved));
    assert!(
        stdout(&saved).contains("\"frames\":4"),
        "{}",
        stdout(&saved)
    );
    assert_eq!(stdout(&saved), stdout(&plain));
}

#[test]
fn labels_that_cannot_be_right_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let (images, labels) = (tmp.path().join("images"), tmp.path().join("labels"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    save_flat_picture(&images.join("f.png"), (64, 48), [220, 200, 210]);
    // YOLO boxes in pixels instead of fractions of the frame
    std::fs::write(labels.join("f.txt"), "0 0.5 0.5 0.1 0.1\n0 32 24 10 10\n").unwrap();
    let out = detect_eval(&images, &labels, "yolo", &[]);
    assert_one_line_error(&out, "f.txt:2:3: cx 32 is outside 0..1");
    // a VOC white cell whose corners enclose nothing
    let voc_eval = |annotation: &str| {
        std::fs::write(labels.join("f.xml"), annotation).unwrap();
        detect_eval_voc(&images, &labels, &[])
    };
    let object = "<object><name>WBC</name><bndbox><xmin>9</xmin><ymin>2</ymin><xmax>3</xmax><ymax>8</ymax></bndbox></object>";
    let out = voc_eval(&format!("<annotation>\n {object}\n</annotation>"));
    assert_one_line_error(&out, "f.xml:2:2: WBC box has no area");
    // annotated on the 640 × 480 original of a frame resized to 64 × 48 since
    let whole = object.replace("<xmin>9<", "<xmin>1<");
    let size = "<size><width>640</width><height>480</height><depth>3</depth></size>";
    let out = voc_eval(&format!("<annotation>\n {size}\n {whole}\n</annotation>"));
    assert_one_line_error(
        &out,
        "f.xml:2:2: annotated on a 640 × 480 picture, but its frame is 64 × 48",
    );
}

#[test]
fn implausible_arguments_are_refused_before_anything_runs() {
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "detect-eval",
                "--images",
                ".",
                "--labels",
                ".",
                "--format",
                "yolo",
                "--um-per-px",
                "nan",
            ],
            "not a plausible µm per pixel",
        ),
        (
            &["classify", "--um-per-px", "1e9", "c.png"],
            "nor `auto` (measured from red cells)",
        ),
        (
            &["count-eval", "--seeds", "0"],
            "not a whole number of at least 1",
        ),
        (
            &["bench", "--frames", "0"],
            "not a whole number of at least 1",
        ),
        (&["run", "--fps=-5"], "not a pace in frames per second"),
        (&["run", "--fps", "-5"], "not a pace in frames per second"),
        (
            &["run", "--frames", "-1"],
            "not a whole number of at least 1",
        ),
        (
            &["classify", "--um-per-px", "-0.1", "c.png"],
            "not a plausible µm per pixel",
        ),
    ];
    for (args, expect) in cases {
        let out = marrowscope(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expect) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // Seeds that would run past the largest one (they wrapped to no pan at all, a report of 0 pans).
    let last = u64::MAX.to_string();
    let out = marrowscope(&["count-eval", "--first-seed", &last, "--seeds", "2"]);
    assert_one_line_error(&out, "runs past the last seed");
}

#[test]
fn a_benchmark_batch_larger_than_a_board_runs_is_refused() {
    let out = marrowscope(&["bench", "--frames", "1", "--batches", "1,100000"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("batch sizes must be between 1 and 256 (got 100000)"),
        "{err}"
    );
}

/// Held-out crops (the model's test split, never trained or tuned on) of one source, `per_class`
/// per class, copied into class folders under `dest`.
fn held_out(
    data: &std::path::Path,
    source: &str,
    per_class: usize,
    dest: &std::path::Path,
) -> usize {
    let split = std::fs::read_to_string(repo().join("models/train/split.csv")).unwrap();
    let mut taken: std::collections::BTreeMap<String, usize> = Default::default();
    for line in split.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 4 || f[0] != "test" || f[1] != source {
            continue;
        }
        let n = taken.entry(f[2].to_string()).or_insert(0);
        if *n >= per_class {
            continue;
        }
        *n += 1;
        let dir = dest.join(f[2]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(data.join(source).join(f[2]).join(f[3]), dir.join(f[3])).unwrap();
    }
    taken.values().sum()
}

#[test]
fn held_out_crops_get_the_right_labels_through_the_binary() {
    let Some(data) = data() else { return };
    for (source, floor) in [("marrow", 0.6), ("pbc", 0.75)] {
        let tmp = tempfile::tempdir().unwrap();
        let n = held_out(&data, source, 12, tmp.path());
        let out = marrowscope(&["eval", "--data", tmp.path().to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(v["n"].as_u64(), Some(n as u64));
        let acc = v["accuracy"].as_f64().unwrap();
        // The model card reports 0.72 (marrow) and 0.88 (pbc) top-1 accuracy on the full test split.
        assert!(
            acc >= floor,
            "{source}: top-1 accuracy {acc:.3} on {n} held-out crops is below {floor}"
        );
        assert!(v["accepted_accuracy"].as_f64().unwrap() >= acc);
    }
}

#[test]
fn demo_runs_on_the_built_in_atlas_without_data() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marrowscope"))
        .args(["run", "--report", report.to_str().unwrap()])
        .env("MARROWSCOPE_DATA", tmp.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("built-in atlas"), "{}", stderr(&out));
    assert!(stdout(&out).contains("Differential count"));
    let diff = read_json(&report.join("differential.json"));
    assert!(diff["total"].as_u64().unwrap() > 20);
    assert!(report.join("screen.png").is_file());
}

#[test]
fn a_report_folder_resumed_with_another_source_warns_that_the_counts_add_up() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let run = |source: &str| {
        let report = report.to_str().unwrap();
        let out = marrowscope(&[
            "run", "--source", source, "--frames", "6", "--report", report,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let first = run("virtual:1");
    assert!(!first.contains("were counted from"), "{first}");
    let again = run("virtual:1");
    assert!(!again.contains("were counted from"), "same source: {again}");
    let other = run("virtual:2");
    assert!(
        other.contains("cells were counted from virtual slide seed 1")
            && other.contains("this run adds the cells of virtual slide seed 2"),
        "{other}"
    );
}

/// Runs `marrowscope run` on the virtual slide with `keys` typed on standard input.
fn run_with_keys(board: &Path, frames: &str, keys: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_marrowscope"))
        .args(["run", "--board", board.to_str().unwrap()])
        .args(["--source", "virtual:1", "--frames", frames])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(keys.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn journal_ops(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn operator_keys_correct_the_last_cell_and_reset_keeps_the_old_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), 0.1, &report);
    let journal = report.join("journal.jsonl");
    let first = run_with_keys(&board, "60", "");
    assert!(first.status.success(), "{}", stderr(&first));
    let counted = journal_ops(&journal).len();
    assert!(counted >= 3, "the first run counts cells: {counted}");

    // Resume and correct: discard the last cell, give the one before it another class; a class
    // the model does not have is refused without stopping the run.
    let out = run_with_keys(&board, "2", "d\nr lyt\nr XYZ\nbogus\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown key"), "{}", stderr(&out));
    let ops = journal_ops(&journal);
    let tail: Vec<&str> = ops[counted..]
        .iter()
        .map(|o| o["op"].as_str().unwrap())
        .collect();
    // The resumed run names its source first.
    assert_eq!(tail, ["start", "discard", "reassign"]);
    let csv = std::fs::read_to_string(report.join("corrections.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("unix_time,cell_id,"), "{csv}");
    assert!(rows[1].contains(",DISCARD,crops/"), "{csv}");
    assert!(rows[2].contains(",LYT,crops/"), "{csv}");
    let crop = rows[2].rsplit(',').next().unwrap();
    assert!(report.join(crop).is_file(), "corrected crop {crop} exists");
    assert!(
        stdout(&out).contains("2 operator corrections"),
        "{}",
        stdout(&out)
    );
    let diff = read_json(&report.join("differential.json"));
    let kept_cells = ops.iter().filter(|o| o["op"] == "count").count() as u64 - 1;
    assert_eq!(diff["total"].as_u64().unwrap(), kept_cells);

    // Reset needs two requests; the old journal is kept whole under a dated name.
    let before = std::fs::read_to_string(&journal).unwrap();
    let out = run_with_keys(&board, "1", "x\nx\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let kept: Vec<_> = std::fs::read_dir(&report)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("journal-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // Kept whole: everything before the run, and the run's own start entry.
    let kept_text = std::fs::read_to_string(&kept[0]).unwrap();
    let added = kept_text
        .strip_prefix(before.as_str())
        .expect("old entries kept");
    assert!(added.starts_with("{\"op\":\"start\""), "{added}");
    assert_eq!(added.lines().count(), 1, "{added}");
    assert!(journal_ops(&journal).len() < 3, "a new count started");
}

#[test]
fn count_eval_matches_counted_cells_to_the_slide() {
    let out = marrowscope(&["count-eval", "--seeds", "1", "--first-seed", "5", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let pan = &v["pans"][0];
    let truth = pan["truth_total"].as_u64().unwrap();
    assert!(truth > 250, "a large slide: {truth} cells");
    let once = pan["counted_once"].as_u64().unwrap();
    let (double, missed) = (
        pan["double_counts"].as_u64().unwrap(),
        pan["missed"].as_u64().unwrap(),
    );
    assert_eq!(once + missed, truth);
    // Measured 0 double and 0 missed of 329 on this pan (2026-12-03); the bounds are the issue's
    // goals: total count error at most 2 %, each class's at most 3 %.
    assert!(
        double + missed <= truth / 50,
        "double {double}, missed {missed} of {truth}"
    );
    assert_eq!(pan["false_counts"].as_u64(), Some(0));
    assert!(v["worst_total_error"].as_f64().unwrap() <= 0.02);
    assert!(v["worst_class_error"].as_f64().unwrap() <= 0.03, "{v}");
    // One pan pooled is that pan.
    assert_eq!(v["pooled"]["truth"], pan["truth"]);
    assert_eq!(v["pooled"]["total_error"], pan["total_error"]);
}

/// `run` of the board profile `board` over 30 frames of virtual slide 2, with `extra` arguments.
fn thirty_virtual_frames(board: &Path, extra: &[&str]) -> std::process::Output {
    run_virtual_slide(board, "30", extra)
}

#[test]
fn a_second_run_into_a_folder_being_counted_into_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), 0.1, &report);
    let first = thirty_virtual_frames(&board, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let journal = report.join("journal.jsonl");
    let before = std::fs::read_to_string(&journal).unwrap();
    let crops = std::fs::read_dir(report.join("crops")).unwrap().count();
    // Another run holds the journal, as a run still counting does.
    let held = std::fs::File::open(&journal).unwrap();
    held.try_lock().unwrap();
    let second = thirty_virtual_frames(&board, &[]);
    assert_one_line_error(
        &second,
        "journal.jsonl: another marrowscope run is counting into this journal now",
    );
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), before);
    assert_eq!(
        std::fs::read_dir(report.join("crops")).unwrap().count(),
        crops,
        "no crop written"
    );
    drop(held);
    let third = thirty_virtual_frames(&board, &[]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(stdout(&third).contains("cells resumed from the journal"));
}

#[test]
fn a_count_goes_on_only_with_the_model_that_began_it() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let board = write_board(tmp.path(), 0.1, &report);
    let run = |extra: &[&str]| thirty_virtual_frames(&board, extra);
    let first = run(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let journal = report.join("journal.jsonl");
    let before = std::fs::read_to_string(&journal).unwrap();
    assert!(
        before.contains(r#","model":"marrowscope-effl0t13-128-int8"}"#),
        "{before}"
    );
    let f32 = repo().join("models/marrow-f32.ron");
    let out = run(&["--model", f32.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "cells were classified by model marrowscope-effl0t13-128-int8, and this run's is \
         marrowscope-effl0t13-128-f32; one count is classified by one model",
    );
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        before,
        "nothing added"
    );
    let same = run(&[]);
    assert!(same.status.success(), "{}", stderr(&same));
    assert!(
        stdout(&same).contains("cells resumed from the journal"),
        "{}",
        stdout(&same)
    );
}
