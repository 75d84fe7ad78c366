//! Every count screen rendered to PNG and compared pixel for pixel with the goldens in
//! `tests/goldens/` (set UPDATE_GOLDENS=1 to rewrite them after an intended change, then look at them).

use marrowscope::display::{draw_count_screen, draw_mono_screen, Canvas, MonoCanvas, ScreenStatus};
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
        paused: false,
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
