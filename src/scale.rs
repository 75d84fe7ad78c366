//! Physical scale from the sample itself: red cells are the haematologist's ruler (about 7.5 µm
//! across). Used when images come without a known µm per pixel (crop folders from other labs,
//! frames of unknown optics): round, isolated red cells are found, their diameters measured, and
//! the median turned into µm per pixel.

use crate::localize::label_components;
use image::{GrayImage, Luma, RgbImage};

/// Mean diameter of a normal red cell, µm.
pub const RBC_DIAMETER_UM: f32 = 7.5;

/// The scales, µm per pixel, a microscope camera can have (both bounds left out): finer than 0.005
/// is beyond any optical resolution, and at 50 a cell would be a fraction of a pixel.
pub const PLAUSIBLE_UM_PER_PX: (f32, f32) = (0.005, 50.0);

/// Whether a scale in µm per pixel lies within [`PLAUSIBLE_UM_PER_PX`].
pub fn plausible_um_per_px(um_per_px: f32) -> bool {
    let (finest, coarsest) = PLAUSIBLE_UM_PER_PX;
    um_per_px.is_finite() && um_per_px > finest && um_per_px < coarsest
}

/// Why a scale is refused, after the value: "is not a plausible µm per pixel (0.005..50)".
pub fn implausible_scale_reason() -> String {
    let (finest, coarsest) = PLAUSIBLE_UM_PER_PX;
    format!("is not a plausible µm per pixel ({finest}..{coarsest})")
}

/// A µm per pixel given on the command line, refused unless plausible (see [`plausible_um_per_px`]).
pub fn parse_um_per_px(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if plausible_um_per_px(v) => Ok(v),
        _ => Err(format!("{s:?} {}", implausible_scale_reason())),
    }
}

/// Diameters (pixels) of round, isolated red cells in an image.
pub fn red_cell_diameters(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let mut mask = GrayImage::new(w, h);
    for (m, p) in mask.pixels_mut().zip(img.pixels()) {
        let [r, g, b] = p.0.map(i32::from);
        // Eosin-pink: red well above green, and not a violet nucleus.
        let pink = r - g > 30 && r > 120 && b - r < 0 && r + g + b < 660;
        *m = Luma([if pink { 255 } else { 0 }]);
    }
    let mut out = Vec::new();
    for c in label_components(&mask) {
        let (cw, ch) = ((c.x1 - c.x0) as f32, (c.y1 - c.y0) as f32);
        let touches = c.x0 == 0 || c.y0 == 0 || c.x1 >= w || c.y1 >= h;
        // Red cells are at least a tenth of the image side in any crop or frame we handle;
        // smaller pink specks are platelets, granules or noise.
        let min_side = 0.1 * w.min(h) as f32;
        if touches || cw < min_side.max(8.0) || ch < min_side.max(8.0) {
            continue;
        }
        let aspect = cw.max(ch) / cw.min(ch);
        let fill = c.area as f32 / (cw * ch);
        // A disc fills about 0.785 of its box; a disc with central pallor somewhat less.
        if aspect <= 1.2 && (0.5..=0.9).contains(&fill) {
            out.push((cw + ch) / 2.0);
        }
    }
    out
}

/// Median of a list (None when empty).
pub fn median(values: &mut [f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(values[values.len() / 2])
}

/// Estimates µm per pixel from the red cells in a set of images; None when fewer than `min_cells`
/// red cells could be measured.
pub fn estimate_um_per_px<'a>(
    images: impl IntoIterator<Item = &'a RgbImage>,
    min_cells: usize,
) -> Option<f32> {
    let mut diameters: Vec<f32> = images.into_iter().flat_map(red_cell_diameters).collect();
    if diameters.len() < min_cells {
        return None;
    }
    median(&mut diameters).map(|d| RBC_DIAMETER_UM / d)
}

/// Cuts (or pads) a crop so it covers `field_um` at `um_per_px`, centred; the classifier then
/// resizes it to its input. Padding repeats the border.
pub fn fit_to_field(crop: &RgbImage, um_per_px: f32, field_um: f32) -> RgbImage {
    let side = (field_um / um_per_px).round().max(2.0);
    let centre = (crop.width() as f32 / 2.0, crop.height() as f32 / 2.0);
    crate::localize::square_crop(crop, centre, side)
}

/// Scale of a set of crops: a fixed value, or estimated from red cells (`auto`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleChoice {
    Auto,
    Fixed(f32),
}

impl std::str::FromStr for ScaleChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(ScaleChoice::Auto);
        }
        parse_um_per_px(s)
            .map(ScaleChoice::Fixed)
            .map_err(|e| format!("{e}, nor `auto` (measured from red cells)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn only_a_plausible_scale_is_taken_from_the_command_line() {
        assert_eq!(parse_um_per_px("0.15"), Ok(0.15));
        for bad in ["nan", "inf", "0", "-0.1", "1e-9", "50", "1e9", "fast", ""] {
            let e = parse_um_per_px(bad).unwrap_err();
            assert!(
                e.contains("not a plausible µm per pixel (0.005..50)"),
                "{bad}: {e}"
            );
        }
        assert_eq!("auto".parse::<ScaleChoice>(), Ok(ScaleChoice::Auto));
        assert_eq!("0.2".parse::<ScaleChoice>(), Ok(ScaleChoice::Fixed(0.2)));
        let e = "1e9".parse::<ScaleChoice>().unwrap_err();
        assert!(
            e.ends_with("(0.005..50), nor `auto` (measured from red cells)"),
            "{e}"
        );
    }

    #[test]
    fn measures_drawn_red_cells() {
        let mut img = RgbImage::from_pixel(300, 200, Rgb([235, 225, 215]));
        for (cx, cy) in [(60.0f32, 60.0f32), (160.0, 70.0), (240.0, 140.0)] {
            for y in 0..200 {
                for x in 0..300 {
                    let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                    if d < 20.0 {
                        img.put_pixel(x, y, Rgb([215, 140, 150]));
                    }
                }
            }
        }
        let d = red_cell_diameters(&img);
        assert_eq!(d.len(), 3, "{d:?}");
        let um = estimate_um_per_px([&img], 3).unwrap();
        assert!((um - 7.5 / 40.0).abs() < 0.01, "{um}");
        assert!(estimate_um_per_px([&img], 4).is_none());
        let fitted = fit_to_field(&img, 0.25, 25.0);
        assert_eq!(fitted.dimensions(), (100, 100));
    }
}
