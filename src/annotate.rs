//! Frames with the found cells drawn on them: the annotated frames of `run --annotate` and
//! `detect-eval --annotate` (found boxes, and in `detect-eval` the false and missed ones), and the
//! camera preview a display shows.

use crate::display::Canvas;
use crate::eval::FrameMatch;
use crate::localize::{BoxPx, Localization};
use crate::report::{self, ReportError};
use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::Text;
use image::{Rgb, RgbImage};
use std::path::Path;

/// Writes a frame with cell boxes and labels drawn (see `draw_cells`) as `frame_NNNNNN.png`.
pub fn annotate_frame(
    dir: &Path,
    index: u64,
    frame: &RgbImage,
    loc: &Localization,
    labels: &[Option<String>],
) -> Result<(), ReportError> {
    save_png(
        dir,
        &format!("frame_{index:06}.png"),
        &draw_cells(frame, loc, labels),
    )
}

/// Colour of a found cell that is whole in the frame (it gets classified).
const WHOLE_COLOUR: Rgb<u8> = Rgb([40, 200, 60]);
/// Colour of a found cell cut by the frame edge (not classified until it is whole in view).
const CUT_COLOUR: Rgb<u8> = Rgb([240, 170, 30]);

/// Colour of an expert box that nothing was found for, in `detect-eval`'s pictures.
const MISSED_COLOUR: Rgb<u8> = Rgb([230, 40, 200]);
/// Colour of a missed expert box that the scores over the agreed cells do not count (the
/// annotation gives it another class too, or its cell was found through its other box).
const SET_ASIDE_COLOUR: Rgb<u8> = Rgb([150, 150, 150]);

/// Writes a `detect-eval` frame as `<name>.png`: the found cells as `draw_cells` draws them, those
/// matching no expert box labelled "FP", and the expert boxes nothing matched in magenta, "MISSED",
/// or in grey, "SET ASIDE", where the scores over the agreed cells do not count them.
pub fn annotate_evaluated_frame(
    dir: &Path,
    name: &str,
    frame: &RgbImage,
    loc: &Localization,
    unpaired: &FrameMatch,
    truth: &[BoxPx],
) -> Result<(), ReportError> {
    let labels: Vec<Option<String>> = (0..loc.cells.len())
        .map(|i| {
            unpaired
                .false_positives
                .contains(&i)
                .then(|| "FP".to_string())
        })
        .collect();
    let mut canvas = Canvas {
        image: draw_cells(frame, loc, &labels),
    };
    for &j in &unpaired.missed {
        let Some(b) = truth.get(j) else { continue };
        let (colour, label) = if unpaired.missed_set_aside.contains(&j) {
            (SET_ASIDE_COLOUR, "SET ASIDE")
        } else {
            (MISSED_COLOUR, "MISSED")
        };
        draw_box(&mut canvas.image, b, colour);
        let [r, g, b_] = colour.0;
        let style = MonoTextStyle::new(&FONT_6X10, Rgb888::new(r, g, b_));
        let _ =
            Text::new(label, Point::new(b.x0 as i32 + 2, b.y1 as i32 - 4), style).draw(&mut canvas);
    }
    save_png(dir, &format!("{name}.png"), &canvas.image)
}

/// Makes the folder annotated frames go to (`--annotate`), before the first frame is read, so that
/// a path that cannot be a folder ends nothing half-way.
pub fn prepare_annotate_dir(dir: &Path) -> Result<(), ReportError> {
    report::make_folder(dir, "annotated frames")
}

/// Saves a picture into `dir` (made when missing) as `file`.
fn save_png(dir: &Path, file: &str, image: &RgbImage) -> Result<(), ReportError> {
    prepare_annotate_dir(dir)?;
    report::save_png(&dir.join(file), image)
}

/// The frame with every localized cell boxed: green when complete (classified), amber when cut by
/// the frame edge; labelled with its class when one is known (`labels`, one per cell), else with
/// its nuclear area.
pub fn draw_cells(frame: &RgbImage, loc: &Localization, labels: &[Option<String>]) -> RgbImage {
    let mut canvas = Canvas {
        image: frame.clone(),
    };
    for (i, cell) in loc.cells.iter().enumerate() {
        let colour = if cell.complete {
            WHOLE_COLOUR
        } else {
            CUT_COLOUR
        };
        draw_box(&mut canvas.image, &cell.bbox, colour);
        let style = MonoTextStyle::new(
            &FONT_6X10,
            Rgb888::new(colour.0[0], colour.0[1], colour.0[2]),
        );
        let label = match labels.get(i) {
            Some(Some(class)) => class.clone(),
            _ => format!("{:.0} um2", cell.nucleus_area_um2),
        };
        let _ = Text::new(
            &label,
            Point::new(cell.bbox.x0 as i32 + 2, cell.bbox.y0 as i32 + 10),
            style,
        )
        .draw(&mut canvas);
    }
    canvas.image
}

/// The camera preview for a display that shows one: boxes and labels, scaled to fit `size`.
pub fn preview(
    frame: &RgbImage,
    loc: &Localization,
    labels: &[Option<String>],
    size: (u32, u32),
) -> RgbImage {
    let drawn = draw_cells(frame, loc, labels);
    let scale = (size.0 as f32 / frame.width() as f32)
        .min(size.1 as f32 / frame.height() as f32)
        .min(1.0);
    let (w, h) = (
        ((frame.width() as f32 * scale) as u32).max(1),
        ((frame.height() as f32 * scale) as u32).max(1),
    );
    image::imageops::resize(&drawn, w, h, image::imageops::FilterType::Triangle)
}

/// Draws a two-pixel rectangle outline.
pub fn draw_box(img: &mut RgbImage, b: &BoxPx, colour: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0, x1, y1) = (b.x0 as i64, b.y0 as i64, b.x1 as i64 - 1, b.y1 as i64 - 1);
    let mut put = |x: i64, y: i64| {
        if x >= 0 && y >= 0 && x < w && y < h {
            img.put_pixel(x as u32, y as u32, colour);
        }
    };
    for t in 0..2 {
        for x in x0..=x1 {
            put(x, y0 + t);
            put(x, y1 - t);
        }
        for y in y0..=y1 {
            put(x0 + t, y);
            put(x1 - t, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localize::Cell;
    use image::GrayImage;

    fn cell(bbox: BoxPx, complete: bool) -> Cell {
        Cell {
            bbox,
            centre: bbox.centre(),
            mask: GrayImage::new(1, 1),
            mask_scale: 1,
            nucleus_area_um2: 30.0,
            complete,
        }
    }

    fn box_of([x0, y0, x1, y1]: [f32; 4]) -> BoxPx {
        BoxPx { x0, y0, x1, y1 }
    }

    fn grey_frame() -> RgbImage {
        RgbImage::from_pixel(120, 80, Rgb([128, 128, 128]))
    }

    #[test]
    fn whole_cells_are_boxed_green_and_cut_ones_amber_with_the_frame_left_alone_elsewhere() {
        let whole = box_of([10.0, 10.0, 50.0, 50.0]);
        let cut = box_of([90.0, 40.0, 130.0, 90.0]);
        let loc = Localization {
            cells: vec![cell(whole, true), cell(cut, false)],
            ..Default::default()
        };
        let drawn = draw_cells(&grey_frame(), &loc, &[Some("LYT".into()), None]);
        assert_eq!(drawn.dimensions(), (120, 80));
        assert_eq!(*drawn.get_pixel(10, 45), WHOLE_COLOUR, "left side");
        assert_eq!(*drawn.get_pixel(11, 45), WHOLE_COLOUR, "two pixels wide");
        assert_eq!(
            *drawn.get_pixel(49, 45),
            WHOLE_COLOUR,
            "right side, inside the box"
        );
        assert_eq!(
            *drawn.get_pixel(30, 45),
            Rgb([128, 128, 128]),
            "inside untouched"
        );
        assert_eq!(
            *drawn.get_pixel(90, 60),
            CUT_COLOUR,
            "the cut box, up to the frame edge"
        );
        assert_eq!(
            *drawn.get_pixel(70, 5),
            Rgb([128, 128, 128]),
            "away from every box"
        );
    }

    #[test]
    fn the_preview_fits_the_screen_and_never_enlarges_the_frame() {
        let loc = Localization::default();
        let small = preview(&grey_frame(), &loc, &[], (60, 60));
        assert_eq!(small.dimensions(), (60, 40), "aspect kept");
        let large = preview(&grey_frame(), &loc, &[], (480, 320));
        assert_eq!(large.dimensions(), (120, 80));
    }
}
