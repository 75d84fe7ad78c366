//! Every count screen rendered to PNG and compared pixel for pixel with the goldens in
//! `tests/goldens/` (set UPDATE_GOLDENS=1 to rewrite them after an intended change, then look at them).

use marrowscope::display::{draw_count_screen, draw_mono_screen, Canvas, MonoCanvas, ScreenStatus};
use marrowscope::framebuffer::{camera_area, draw_camera_screen, COUNT_PANEL_WIDTH};
use marrowscope::tally::{Entry, Tally};
use std::path::PathBuf;

fn sample_tally() -> Tally {
    let mut tally = Tally::new(200);
    let classes = [
        ("NGS", 41),
        ("LYT", 22),
        ("MON", 14),
        ("EOS", 9),
        ("BLA", 7),
        ("PMO", 6),
        ("EBO", 12),
        ("ART", 3),
        ("REVIEW", 11),
    ];
    let mut id = 0;
    for (class, n) in classes {
        for _ in 0..n {
            let entry = Entry::Count {
                id,
                class: class.into(),
                p: 0.9,
                frame: id,
                x: 0.0,
                y: 0.0,
                at: None,
            };
            tally.apply(&entry).unwrap();
            id += 1;
        }
    }
    tally
}

fn status() -> ScreenStatus {
    ScreenStatus {
        frames: 1234,
        skipped: 3,
        fps: 29.7,
        alerts: vec![],
        source: "virtual:1".into(),
        ..Default::default()
    }
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(name)
}

fn compare(name: &str, rendered: image::DynamicImage) {
    let path = golden(name);
    if std::env::var("UPDATE_GOLDENS").is_ok() {
        rendered.save(&path).unwrap();
        return;
    }
    let expected = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        expected.to_rgb8().dimensions(),
        rendered.to_rgb8().dimensions(),
        "{name}"
    );
    let differing = expected
        .to_rgb8()
        .pixels()
        .zip(rendered.to_rgb8().pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "{name}: {differing} pixels differ from the golden"
    );
}

#[test]
fn colour_screens_match_goldens() {
    for (w, h) in [(320, 240), (240, 240)] {
        let mut canvas = Canvas::new(w, h);
        let Ok(()) = draw_count_screen(&mut canvas, &sample_tally(), &status());
        compare(
            &format!("count_{w}x{h}.png"),
            image::DynamicImage::ImageRgb8(canvas.image),
        );
    }
}

#[test]
fn oled_screen_matches_golden() {
    let mut canvas = MonoCanvas::new(128, 64);
    let Ok(()) = draw_mono_screen(&mut canvas, &sample_tally(), &status());
    compare(
        "count_oled_128x64.png",
        image::DynamicImage::ImageLuma8(canvas.image),
    );
}

/// The second screen: the last counted cells, one corrected by the operator, and the notice.
fn recent_cells_status_and_tally() -> (ScreenStatus, Tally) {
    let mut tally = sample_tally();
    let last = tally.last().unwrap().id;
    tally
        .apply(&Entry::Reassign {
            id: last,
            class: "LYT".into(),
        })
        .unwrap();
    let status = ScreenStatus {
        screen: 1,
        notice: Some((
            format!("cell {last} REVIEW -> LYT"),
            std::time::Instant::now(),
        )),
        ..status()
    };
    (status, tally)
}

#[test]
fn recent_cells_screens_match_goldens() {
    let (status, tally) = recent_cells_status_and_tally();
    let mut canvas = Canvas::new(320, 240);
    let Ok(()) = draw_count_screen(&mut canvas, &tally, &status);
    compare(
        "recent_320x240.png",
        image::DynamicImage::ImageRgb8(canvas.image),
    );
    let mut mono = MonoCanvas::new(128, 64);
    let Ok(()) = draw_mono_screen(&mut mono, &tally, &status);
    compare(
        "recent_oled_128x64.png",
        image::DynamicImage::ImageLuma8(mono.image),
    );
}

/// A stand-in camera frame: a smear-coloured gradient with one boxed "cell".
fn synthetic_preview(w: u32, h: u32) -> image::RgbImage {
    let mut img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([220 - (x * 40 / w) as u8, 190 - (y * 30 / h) as u8, 200])
    });
    for i in 0..60 {
        for t in 0..2 {
            img.put_pixel(100 + i, 80 + t, image::Rgb([40, 200, 60]));
            img.put_pixel(100 + i, 138 + t, image::Rgb([40, 200, 60]));
            img.put_pixel(100 + t, 80 + i, image::Rgb([40, 200, 60]));
            img.put_pixel(158 + t, 80 + i, image::Rgb([40, 200, 60]));
        }
    }
    img
}

#[test]
fn framebuffer_camera_screen_matches_golden() {
    let (w, h) = (800, 480);
    let area = camera_area(w, h).expect("800 px is wide enough for the camera");
    assert_eq!(area, (w - COUNT_PANEL_WIDTH, h));
    assert!(camera_area(480, 320).is_none());
    let status = ScreenStatus {
        preview: Some(std::sync::Arc::new(synthetic_preview(640, 480))),
        ..status()
    };
    let mut canvas = Canvas::new(w, h);
    let mut counts = Canvas::new(COUNT_PANEL_WIDTH, h);
    draw_camera_screen(&mut canvas, &mut counts, &sample_tally(), &status);
    compare(
        "camera_800x480.png",
        image::DynamicImage::ImageRgb8(canvas.image),
    );
}
