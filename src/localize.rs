//! White-cell localization in whole frames, classical and fast: on the nuclear-stain channel
//! ([`crate::stain`]: Giemsa nuclei are dark violet, blue stays while red and green are absorbed,
//! measured against the frame's own lighting), a per-frame threshold
//! (Otsu, floored above the frame's own background), lobes merged into cells, size filters in
//! micrometres, and, for the cells that get classified, a square crop of fixed physical size around
//! the cell. Also the focus measure used to skip blurred frames. With a learned detector attached
//! ([`crate::detect`]), its boxes say where the cells are and this module still judges focus,
//! gives each cell its nuclear mask and crop, and brings the detector's input within the lighting
//! it learned under (by `stain`'s estimate of that lighting).

use crate::config::LocalizerConfig;
use crate::stain::{binned_rgb, stain_of_binned, BackgroundWhite, BinnedRgb};
use image::{imageops, GrayImage, RgbImage};
use std::ops::Range;

/// An axis-aligned box in frame pixels (x0, y0 inclusive; x1, y1 exclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxPx {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BoxPx {
    pub fn width(&self) -> f32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> f32 {
        self.y1 - self.y0
    }
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
    pub fn centre(&self) -> (f32, f32) {
        ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)
    }
    /// Whether the box keeps more than a pixel clear of every edge of a frame of `width` × `height`
    /// pixels: a box that reaches the edge holds a cell cut by it.
    pub fn clear_of_edge(&self, width: f32, height: f32) -> bool {
        self.x0 > 1.0 && self.y0 > 1.0 && self.x1 < width - 1.0 && self.y1 < height - 1.0
    }
    /// Whether the two boxes overlap or meet (no gap between them on either axis): around two
    /// cells, cells that touch.
    pub fn touches(&self, other: &BoxPx) -> bool {
        self.x0 <= other.x1 && other.x0 <= self.x1 && self.y0 <= other.y1 && other.y0 <= self.y1
    }
    /// Whether the point lies inside the box.
    pub fn holds(&self, (x, y): (f32, f32)) -> bool {
        (self.x0..self.x1).contains(&x) && (self.y0..self.y1).contains(&y)
    }
    /// Intersection over union with another box.
    pub fn iou(&self, other: &BoxPx) -> f32 {
        let ix = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let iy = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// One white cell found in a frame.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Box around the whole cell (nucleus plus estimated cytoplasm), frame pixels.
    pub bbox: BoxPx,
    /// Nucleus centre, frame pixels.
    pub centre: (f32, f32),
    /// Nuclear mask over `bbox`, at the localizer's working scale (`mask_scale` frame pixels per mask pixel).
    pub mask: GrayImage,
    pub mask_scale: u32,
    /// Nuclear area, µm².
    pub nucleus_area_um2: f32,
    /// False when the cell is cut by the frame edge: it is not classified until fully in view.
    pub complete: bool,
}

/// Result of localizing one frame.
#[derive(Debug, Clone, Default)]
pub struct Localization {
    pub cells: Vec<Cell>,
    /// Focus score of the frame (variance of the Laplacian on the stain channel).
    pub focus: f32,
    /// True when the frame was judged out of focus and not searched.
    pub out_of_focus: bool,
}

/// The localizer: classical, or boxes from a learned detector.
#[derive(Debug, Clone)]
pub struct Localizer {
    cfg: LocalizerConfig,
    /// Side of the crop handed to the classifier, µm.
    crop_um: f32,
    detector: Option<std::sync::Arc<crate::detect::WbcDetector>>,
}

/// Working resolution the search runs at, µm per pixel (frames finer than this are binned).
const WORK_UM_PER_PX: f32 = 0.35;
/// With a detector, the coarsest working resolution, µm per pixel: the classical stages then give
/// only focus and the nuclear mask inside each box, and a nucleus (7 µm or more) is still 14
/// working pixels across.
const MAX_DETECTOR_WORK_UM_PER_PX: f32 = 0.5;
/// The largest block the localizer bins by (the binning sums a block's rows in `u16`: at most
/// 16 × 255).
const MAX_BIN: u32 = 16;

/// The block size the localizer bins a frame of `(width, height)` pixels at `um_per_px` by: the
/// finest whole block no finer than [`WORK_UM_PER_PX`] allows (1 where the frame is coarser).
/// With a detector of input side `detector_side`, its picture's blocks instead where they are
/// coarser and still at most [`MAX_DETECTOR_WORK_UM_PER_PX`]: one binning then serves the
/// classical stages and the detector, with less work for the former (the Pi Zero 2 W's 640 × 480
/// frames at 0.15 µm/px: blocks of 3, not 2).
fn work_bin(um_per_px: f32, (width, height): (u32, u32), detector_side: Option<u32>) -> u32 {
    let classical = ((WORK_UM_PER_PX / um_per_px).floor() as u32).clamp(1, MAX_BIN);
    let Some(side) = detector_side else {
        return classical;
    };
    let picture = detector_bin(MAX_BIN, (width, height), side);
    if picture > classical && picture as f32 * um_per_px <= MAX_DETECTOR_WORK_UM_PER_PX {
        picture
    } else {
        classical
    }
}

impl Localizer {
    pub fn new(cfg: LocalizerConfig, crop_um: f32) -> Localizer {
        Localizer {
            cfg,
            crop_um,
            detector: None,
        }
    }

    /// Takes the cells' boxes from a learned detector instead of the nuclear-stain search.
    pub fn with_detector(mut self, detector: std::sync::Arc<crate::detect::WbcDetector>) -> Self {
        self.detector = Some(detector);
        self
    }

    pub fn config(&self) -> &LocalizerConfig {
        &self.cfg
    }

    /// Finds the white cells in a frame of the given scale (their crops are cut on demand, see
    /// [`Localizer::crop`]).
    pub fn localize(&self, frame: &RgbImage, um_per_px: f32) -> Localization {
        let field_um = crate::detect::field_um(frame.dimensions(), um_per_px);
        let detector = self
            .detector
            .as_ref()
            .map(|d| (d, d.input_side_for(field_um) as u32));
        let bin = work_bin(
            um_per_px,
            (frame.width(), frame.height()),
            detector.map(|(_, side)| side),
        );
        let binned = binned_rgb(frame, bin);
        let white = BackgroundWhite::estimate(&binned);
        let stain = stain_of_binned(&binned, &white);
        let focus = focus_score(&stain);
        if focus < self.cfg.min_focus {
            return Localization {
                cells: Vec::new(),
                focus,
                out_of_focus: true,
            };
        }
        let work_um = um_per_px * bin as f32;
        let mask = nucleus_mask(&stain);
        if let Some((detector, side)) = detector {
            let found = detector_boxes(detector, side as usize, frame, &binned, bin, &white)
                .map(|boxes| no_smaller_than(boxes, self.cfg.min_nucleus_um / um_per_px));
            let size = (frame.width() as f32, frame.height() as f32);
            return Localization {
                cells: detected_cells(found, &mask, size, bin, um_per_px),
                focus,
                out_of_focus: false,
            };
        }
        let merge_radius = ((self.cfg.merge_um / work_um).round() as u32).max(1);
        let grouped = dilate(&mask, merge_radius);
        let components = label_components(&grouped);
        let split_above = SPLIT_ABOVE_FRACTION * self.cfg.max_cell_um / work_um;
        let mut cells = Vec::new();
        for group in components {
            let Some(blob) = Blob::inside(&group, &mask) else {
                continue;
            };
            if (blob.x1 - blob.x0).max(blob.y1 - blob.y0) as f32 <= split_above {
                cells.extend(self.to_cell(&blob, &mask, frame, bin, um_per_px));
                continue;
            }
            // Too large for one nucleus: nuclei of neighbouring cells were merged. Take the
            // nuclear pieces one by one instead.
            for piece in split_group(&group, &mask, split_above, 2.0 * merge_radius as f32) {
                cells.extend(self.to_cell(&piece, &mask, frame, bin, um_per_px));
            }
        }
        Localization {
            cells,
            focus,
            out_of_focus: false,
        }
    }

    fn to_cell(
        &self,
        blob: &Blob,
        mask: &GrayImage,
        frame: &RgbImage,
        bin: u32,
        um_per_px: f32,
    ) -> Option<Cell> {
        let work_um = um_per_px * bin as f32;
        let nucleus_area_um2 = blob.area as f32 * work_um * work_um;
        let min_area = std::f32::consts::PI * (self.cfg.min_nucleus_um / 2.0).powi(2);
        if nucleus_area_um2 < min_area {
            return None;
        }
        let nucleus_w = (blob.x1 - blob.x0) as f32 * work_um;
        let nucleus_h = (blob.y1 - blob.y0) as f32 * work_um;
        if nucleus_w.max(nucleus_h) > self.cfg.max_cell_um {
            return None;
        }
        let b = bin as f32;
        // The cytoplasm rim is not stained like the nucleus: widen the nuclear box by a margin that
        // scales with nuclear size (about 1.2 µm plus 12 % of the nuclear side).
        let margin = |side_px: f32| (1.2 / um_per_px) + 0.12 * side_px;
        let (fx0, fy0) = (blob.x0 as f32 * b, blob.y0 as f32 * b);
        let (fx1, fy1) = (blob.x1 as f32 * b, blob.y1 as f32 * b);
        let (mx, my) = (margin(fx1 - fx0), margin(fy1 - fy0));
        let (w, h) = (frame.width() as f32, frame.height() as f32);
        let raw = BoxPx {
            x0: fx0 - mx,
            y0: fy0 - my,
            x1: fx1 + mx,
            y1: fy1 + my,
        };
        let complete = raw.x0 >= 0.0 && raw.y0 >= 0.0 && raw.x1 <= w && raw.y1 <= h;
        let bbox = BoxPx {
            x0: raw.x0.max(0.0),
            y0: raw.y0.max(0.0),
            x1: raw.x1.min(w),
            y1: raw.y1.min(h),
        };
        let centre = (blob.cx * b + b / 2.0, blob.cy * b + b / 2.0);
        let cell_mask =
            imageops::crop_imm(mask, blob.x0, blob.y0, blob.x1 - blob.x0, blob.y1 - blob.y0)
                .to_image();
        Some(Cell {
            bbox,
            centre,
            mask: cell_mask,
            mask_scale: bin,
            nucleus_area_um2,
            complete,
        })
    }

    /// The classifier's input for a cell: a square of the model's physical field around the nucleus
    /// centre; none for a cell cut by the frame edge. Cut only for the cells that get classified
    /// (most cells in a frame are tracked cells counted already).
    pub fn crop(&self, frame: &RgbImage, cell: &Cell, um_per_px: f32) -> Option<RgbImage> {
        cell.complete
            .then(|| square_crop(frame, cell.centre, self.crop_um / um_per_px))
    }
}

/// The detector's boxes in a frame whose localizer binned it by `bin` into `binned`, with `white`
/// its bare slide, read at an input of `side` × `side`. Block means serve as the detector's picture
/// while they still have the input's side (a fraction of the resize's work; the resize's triangle
/// is at least a block wide, so the blocks blur its input little): the localizer's own binned
/// frame, or a finer binning where that one has become smaller than the input. Lighting outside the
/// range the detectors learned under is brought within it (see
/// [`BackgroundWhite::detector_gain`]).
fn detector_boxes(
    detector: &crate::detect::WbcDetector,
    side: usize,
    frame: &RgbImage,
    binned: &BinnedRgb,
    bin: u32,
    white: &BackgroundWhite,
) -> Result<Vec<crate::detect::Detection>, crate::classify::ClassifyError> {
    let picture_bin = detector_bin(bin, (frame.width(), frame.height()), side as u32);
    // The blocks cover the frame but for the last picture_bin - 1 columns and rows at most.
    let covered = |b: &BinnedRgb| {
        (
            (b.width * picture_bin) as f32,
            (b.height * picture_bin) as f32,
        )
    };
    let gain = |covered| white.detector_gain(side, covered, bin);
    if picture_bin == bin && bin > 1 {
        let covered = covered(binned);
        detector.detect_in(binned.picture(), covered, side, &gain(covered))
    } else if picture_bin > 1 {
        let finer = binned_rgb(frame, picture_bin);
        let covered = covered(&finer);
        detector.detect_in(finer.picture(), covered, side, &gain(covered))
    } else {
        let whole = (frame.width() as f32, frame.height() as f32);
        detector.detect_in(
            crate::detect::Picture::of_frame(frame),
            whole,
            side,
            &gain(whole),
        )
    }
}

/// The block size of the detector's picture: the localizer's `bin`, or the largest smaller one that
/// still leaves at least `side` blocks across and down a frame of `(width, height)` pixels; 1 (the
/// frame itself) where no block of 2 or more does.
fn detector_bin(bin: u32, (width, height): (u32, u32), side: u32) -> u32 {
    bin.min(width / side.max(1))
        .min(height / side.max(1))
        .max(1)
}

/// The detector's boxes whose longer side is at least `min_side` frame pixels (the smallest
/// nucleus the profile counts, `min_nucleus_um`): a box smaller than that holds no white cell, not
/// even the sliver of one at the frame edge. The network finds such boxes where a frame shows far
/// less than it learnt (a picture of a few µm blown up to its input: noise read as a cell).
fn no_smaller_than(
    boxes: Vec<crate::detect::Detection>,
    min_side: f32,
) -> Vec<crate::detect::Detection> {
    boxes
        .into_iter()
        .filter(|d| d.bbox.width().max(d.bbox.height()) >= min_side)
        .collect()
}

/// How near the frame edge (µm) a detector box may stop and still hold a cell cut by it: around a
/// cell half out of view the network's box stopped 0.4–0.9 µm short of the edge in pans over BCCD
/// frames. The tracker takes such boxes for parts of cells it has counted.
pub const CUT_BOX_BAND_UM: f32 = 1.5;

/// Cells from the detector's boxes: each box's nuclear mask is the frame's nuclear mask inside it,
/// its centre the box's centre. A box that reaches the frame edge is a cut cell, and so is one that
/// stops short of it but whose nucleus runs on to it ([`nucleus_runs_to_edge`]). A failed inference
/// is logged and gives no cells for that frame.
fn detected_cells(
    detections: Result<Vec<crate::detect::Detection>, crate::classify::ClassifyError>,
    mask: &GrayImage,
    (w, h): (f32, f32),
    bin: u32,
    um_per_px: f32,
) -> Vec<Cell> {
    let detections = match detections {
        Ok(d) => d,
        Err(e) => {
            log::error!("white-cell detector: {e}");
            return Vec::new();
        }
    };
    let work_um = um_per_px * bin as f32;
    let band = (CUT_BOX_BAND_UM / work_um).ceil() as u32;
    detections
        .into_iter()
        .filter_map(|d| {
            let b = d.bbox;
            let (mx0, my0) = ((b.x0 / bin as f32) as u32, (b.y0 / bin as f32) as u32);
            let mx1 = ((b.x1 / bin as f32).ceil() as u32).min(mask.width());
            let my1 = ((b.y1 / bin as f32).ceil() as u32).min(mask.height());
            if mx1 <= mx0 || my1 <= my0 {
                return None;
            }
            let cell_mask = imageops::crop_imm(mask, mx0, my0, mx1 - mx0, my1 - my0).to_image();
            let nuclear_px = cell_mask.pixels().filter(|p| p.0[0] > 0).count();
            let span = MaskSpan {
                x: mx0..mx1,
                y: my0..my1,
            };
            Some(Cell {
                bbox: b,
                centre: b.centre(),
                mask: cell_mask,
                mask_scale: bin,
                nucleus_area_um2: nuclear_px as f32 * work_um * work_um,
                complete: b.clear_of_edge(w, h) && !nucleus_runs_to_edge(mask, &span, band),
            })
        })
        .collect()
}

/// A box in mask pixels.
struct MaskSpan {
    x: Range<u32>,
    y: Range<u32>,
}

/// Whether, on a side of the box no more than `band` mask pixels from the frame edge, a row or
/// column of nuclear pixels runs unbroken from the box's own border out to the edge: the nucleus
/// goes on past the box, so the cell is cut however short of the edge the box stops.
fn nucleus_runs_to_edge(mask: &GrayImage, span: &MaskSpan, band: u32) -> bool {
    let (w, h) = mask.dimensions();
    let nuclear = |x: u32, y: u32| mask.get_pixel(x, y).0[0] > 0;
    let column_runs =
        |rows: Range<u32>| span.x.clone().any(|x| rows.clone().all(|y| nuclear(x, y)));
    let row_runs = |columns: Range<u32>| {
        span.y
            .clone()
            .any(|y| columns.clone().all(|x| nuclear(x, y)))
    };
    (span.y.start <= band && column_runs(0..span.y.start + 1))
        || (h - span.y.end <= band && column_runs(span.y.end - 1..h))
        || (span.x.start <= band && row_runs(0..span.x.start + 1))
        || (w - span.x.end <= band && row_runs(span.x.end - 1..w))
}

/// Groups whose nuclear extent is above this fraction of `max_cell_um` are split into pieces.
const SPLIT_ABOVE_FRACTION: f32 = 0.6;

/// Nuclear pixels of one cell candidate, in working-scale pixels.
#[derive(Debug, Clone)]
struct Blob {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    area: u32,
    cx: f32,
    cy: f32,
}

impl Blob {
    /// The nuclear (undilated) pixels inside a grouped component.
    fn inside(group: &Component, mask: &GrayImage) -> Option<Blob> {
        let mut nucleus = Component::empty();
        for y in group.y0..group.y1 {
            for x in group.x0..group.x1 {
                if mask.get_pixel(x, y).0[0] > 0 {
                    nucleus.add(x, y);
                }
            }
        }
        (nucleus.area > 0).then(|| Blob::from_component(&nucleus, 0, 0))
    }

    /// The larger side of the bounding box, working pixels.
    fn extent(&self) -> f32 {
        (self.x1 - self.x0).max(self.y1 - self.y0) as f32
    }

    /// Distance between the bounding boxes (0 when they overlap), working pixels.
    fn gap(&self, other: &Blob) -> f32 {
        let gx = self
            .x0
            .saturating_sub(other.x1)
            .max(other.x0.saturating_sub(self.x1));
        let gy = self
            .y0
            .saturating_sub(other.y1)
            .max(other.y0.saturating_sub(self.y1));
        ((gx * gx + gy * gy) as f32).sqrt()
    }

    /// Both pieces as one nucleus.
    fn joined(&self, other: &Blob) -> Blob {
        let area = self.area + other.area;
        let weight = |b: &Blob| b.area as f32 / area as f32;
        Blob {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
            area,
            cx: self.cx * weight(self) + other.cx * weight(other),
            cy: self.cy * weight(self) + other.cy * weight(other),
        }
    }

    fn from_component(c: &Component, dx: u32, dy: u32) -> Blob {
        Blob {
            x0: c.x0 + dx,
            y0: c.y0 + dy,
            x1: c.x1 + dx,
            y1: c.y1 + dy,
            area: c.area,
            cx: c.sum_x / c.area as f32 + dx as f32,
            cy: c.sum_y / c.area as f32 + dy as f32,
        }
    }
}

/// The nuclei of an oversized group (working pixels): its separate nuclear pieces, with the lobes of
/// one nucleus put back together. The two closest pieces (at most `max_gap` apart) are joined first,
/// as long as the joined nucleus spans at most `max_extent`; so the lobes of a segmented neutrophil
/// become one cell while the round nuclei of two neighbours stay two.
fn split_group(group: &Component, mask: &GrayImage, max_extent: f32, max_gap: f32) -> Vec<Blob> {
    let sub = imageops::crop_imm(
        mask,
        group.x0,
        group.y0,
        group.x1 - group.x0,
        group.y1 - group.y0,
    )
    .to_image();
    let mut pieces: Vec<Blob> = label_components(&sub)
        .iter()
        .map(|c| Blob::from_component(c, group.x0, group.y0))
        .collect();
    while let Some((i, j)) = closest_joinable(&pieces, max_extent, max_gap) {
        let lobe = pieces.swap_remove(j);
        pieces[i] = pieces[i].joined(&lobe);
    }
    pieces
}

/// The pair of pieces (i < j) with the smallest gap whose union stays within `max_extent`.
fn closest_joinable(pieces: &[Blob], max_extent: f32, max_gap: f32) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize, f32)> = None;
    for i in 0..pieces.len() {
        for j in i + 1..pieces.len() {
            let gap = pieces[i].gap(&pieces[j]);
            if gap > max_gap || pieces[i].joined(&pieces[j]).extent() > max_extent {
                continue;
            }
            if best.is_none_or(|(_, _, g)| gap < g) {
                best = Some((i, j, gap));
            }
        }
    }
    best.map(|(i, j, _)| (i, j))
}

/// Variance of the 4-neighbour Laplacian: low for blurred frames.
#[multiversion::multiversion(targets("x86_64+avx2"))]
pub fn focus_score(img: &GrayImage) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let raw = img.as_raw();
    // Integer sums are exact (|l| <= 1020, so sum2 < 2^40 for any frame a camera gives).
    let (mut sum, mut sum2) = (0i64, 0i64);
    for y in 1..h - 1 {
        let (above, row, below) = (
            &raw[(y - 1) * w..][..w],
            &raw[y * w..][..w],
            &raw[(y + 1) * w..][..w],
        );
        for x in 1..w - 1 {
            let l = row[x - 1] as i32 + row[x + 1] as i32 + above[x] as i32 + below[x] as i32
                - 4 * row[x] as i32;
            sum += l as i64;
            sum2 += (l * l) as i64;
        }
    }
    let n = ((w - 2) * (h - 2)) as f64;
    let mean = sum as f64 / n;
    (sum2 as f64 / n - mean * mean) as f32
}

/// About how many pixels of a frame [`lacks_colour`] looks at.
const COLOUR_SAMPLES: u64 = 4096;
/// A pixel whose channels spread (brightest minus darkest of R, G, B) this little is grey: a
/// monochrome camera's pixels, and those of a grey picture saved as JPEG, differ by rounding only.
const GREY_SPREAD: u8 = 3;
/// Share of sampled pixels that may be coloured in a frame still judged grey (a hot pixel, a
/// JPEG block edge), per mille.
const COLOURED_PER_MILLE: usize = 5;
/// Share of sampled pixels that must be 15 % or more darker than the background (cells) for a
/// grey frame to hold a picture at all, per mille; a blank field is not judged.
const DARK_PER_MILLE: usize = 10;

/// True for a frame with a picture in it but no colour: nearly every sampled pixel grey, yet
/// some darker than the frame's background, as cells are. A monochrome camera, or one set
/// to a grey format, gives such frames, without the stain's colours that white cells are found and
/// classified by. A blank field (no cells in view) is not judged: nothing is found in it anyway.
pub fn lacks_colour(frame: &RgbImage) -> bool {
    let (w, h) = frame.dimensions();
    let step = ((w as u64 * h as u64 / COLOUR_SAMPLES) as f64)
        .sqrt()
        .max(1.0) as usize;
    let samples = (w as usize).div_ceil(step) * (h as usize).div_ceil(step);
    let most_coloured = samples * COLOURED_PER_MILLE / 1000;
    let mut greys = Vec::with_capacity(samples);
    let mut coloured = 0;
    for y in (0..h).step_by(step) {
        for x in (0..w).step_by(step) {
            let [r, g, b] = frame.get_pixel(x, y).0;
            if r.max(g).max(b) - r.min(g).min(b) > GREY_SPREAD {
                coloured += 1;
                if coloured > most_coloured {
                    return false;
                }
            }
            greys.push(g);
        }
    }
    if greys.is_empty() {
        return false;
    }
    greys.sort_unstable();
    let background = greys[greys.len() * 3 / 4] as u32;
    let dark = greys
        .iter()
        .filter(|&&v| (v as u32) * 20 < background * 17)
        .count();
    dark * 1000 >= greys.len() * DARK_PER_MILLE
}

/// Otsu's threshold of a histogram.
pub fn otsu(hist: &[u64; 256]) -> u8 {
    let total: u64 = hist.iter().sum();
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0u64, 0f64, -1f64, 0u8);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c;
        sum0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let m0 = sum0 / w0 as f64;
        let m1 = (sum_all - sum0) / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1).powi(2);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// Minimum contrast of a nucleus over the frame's median stain value (stain of transmittance: 38 grey
/// levels under a typical lamp of about 220).
const MIN_NUCLEUS_CONTRAST: u8 = 44;

/// Binary nucleus mask (255 = nucleus) of a stain channel.
pub fn nucleus_mask(stain: &GrayImage) -> GrayImage {
    let mut hist = [0u64; 256];
    for &p in stain.as_raw() {
        hist[p as usize] += 1;
    }
    let median = percentile(&hist, 0.5);
    let floor = median.saturating_add(MIN_NUCLEUS_CONTRAST);
    let threshold = otsu(&hist).max(floor);
    let set = |&s: &u8| if s > threshold { 255 } else { 0 };
    let mask = stain.as_raw().iter().map(set).collect();
    GrayImage::from_raw(stain.width(), stain.height(), mask).expect("buffer sized to the image")
}

fn percentile(hist: &[u64; 256], q: f64) -> u8 {
    let total: u64 = hist.iter().sum();
    let target = (total as f64 * q) as u64;
    let mut acc = 0;
    for (i, &c) in hist.iter().enumerate() {
        acc += c;
        if acc > target {
            return i as u8;
        }
    }
    255
}

/// Square dilation by `r` pixels (separable: along each row, then a running count down each column).
pub fn dilate(mask: &GrayImage, r: u32) -> GrayImage {
    let (w, h, r) = (mask.width() as usize, mask.height() as usize, r as usize);
    let mut horiz = vec![0u8; w * h];
    for (src, dst) in mask.as_raw().chunks_exact(w).zip(horiz.chunks_exact_mut(w)) {
        spread_row(src, dst, r);
    }
    // Set rows among horiz rows y - r ..= y + r, per column, kept as the window slides down.
    let mut in_window = vec![0u32; w];
    let add_row = |counts: &mut [u32], row: &[u8], delta: i32| {
        for (c, &p) in counts.iter_mut().zip(row) {
            if p > 0 {
                *c = c.wrapping_add_signed(delta);
            }
        }
    };
    for row in horiz.chunks_exact(w).take(r) {
        add_row(&mut in_window, row, 1);
    }
    let mut out = vec![0u8; w * h];
    for (y, out_row) in out.chunks_exact_mut(w).enumerate() {
        if y + r < h {
            add_row(&mut in_window, &horiz[(y + r) * w..][..w], 1);
        }
        if y > r {
            add_row(&mut in_window, &horiz[(y - r - 1) * w..][..w], -1);
        }
        for (o, &c) in out_row.iter_mut().zip(&in_window) {
            *o = if c > 0 { 255 } else { 0 };
        }
    }
    GrayImage::from_raw(w as u32, h as u32, out).expect("buffer sized to the image")
}

/// Sets (255) every position of `dst` within `r` of a set position of `src`.
fn spread_row(src: &[u8], dst: &mut [u8], r: usize) {
    let mut last_on: Option<usize> = None;
    for (i, (&s, d)) in src.iter().zip(dst.iter_mut()).enumerate() {
        if s > 0 {
            last_on = Some(i);
        }
        if last_on.is_some_and(|j| i - j <= r) {
            *d = 255;
        }
    }
    let mut next_on: Option<usize> = None;
    for (i, (&s, d)) in src.iter().zip(dst.iter_mut()).enumerate().rev() {
        if s > 0 {
            next_on = Some(i);
        }
        if next_on.is_some_and(|j| j - i <= r) {
            *d = 255;
        }
    }
}

/// One 8-connected component of a binary mask.
#[derive(Debug, Clone)]
pub struct Component {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
    pub area: u32,
    pub sum_x: f32,
    pub sum_y: f32,
}

impl Component {
    fn empty() -> Component {
        Component {
            x0: u32::MAX,
            y0: u32::MAX,
            x1: 0,
            y1: 0,
            area: 0,
            sum_x: 0.0,
            sum_y: 0.0,
        }
    }

    /// Adds one pixel to the extent, area and centroid sums.
    fn add(&mut self, x: u32, y: u32) {
        self.x0 = self.x0.min(x);
        self.y0 = self.y0.min(y);
        self.x1 = self.x1.max(x + 1);
        self.y1 = self.y1.max(y + 1);
        self.area += 1;
        self.sum_x += x as f32;
        self.sum_y += y as f32;
    }
}

/// 8-connected components of the set pixels of a mask.
pub fn label_components(mask: &GrayImage) -> Vec<Component> {
    let (w, h) = mask.dimensions();
    let mut seen = vec![false; (w * h) as usize];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..(w * h) {
        if seen[start as usize] || mask.as_raw()[start as usize] == 0 {
            continue;
        }
        seen[start as usize] = true;
        stack.push(start);
        let mut c = Component::empty();
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            c.add(x, y);
            for dy in -1i32..=1 {
                for dx in -1i32..=1 {
                    let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i32 || ny >= h as i32 {
                        continue;
                    }
                    let j = (ny as u32 * w + nx as u32) as usize;
                    if !seen[j] && mask.as_raw()[j] > 0 {
                        seen[j] = true;
                        stack.push(j as u32);
                    }
                }
            }
        }
        out.push(c);
    }
    out
}

/// A square crop of `side` pixels centred on `centre`; parts outside the frame are filled with the
/// frame's border colour.
pub fn square_crop(frame: &RgbImage, centre: (f32, f32), side: f32) -> RgbImage {
    let side = side.round().max(2.0) as u32;
    let x0 = (centre.0 - side as f32 / 2.0).round() as i64;
    let y0 = (centre.1 - side as f32 / 2.0).round() as i64;
    let (w, h) = (frame.width() as i64, frame.height() as i64);
    if x0 >= 0 && y0 >= 0 && x0 + side as i64 <= w && y0 + side as i64 <= h {
        return imageops::crop_imm(frame, x0 as u32, y0 as u32, side, side).to_image();
    }
    let mut out = RgbImage::from_pixel(side, side, *frame.get_pixel(0, 0));
    for y in 0..side as i64 {
        for x in 0..side as i64 {
            let (sx, sy) = ((x0 + x).clamp(0, w - 1), (y0 + y).clamp(0, h - 1));
            out.put_pixel(x as u32, y as u32, *frame.get_pixel(sx as u32, sy as u32));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::Rgb;

    pub(crate) fn synthetic_frame() -> RgbImage {
        // Pale background, one pink red cell, one violet nucleus with a paler cytoplasm ring.
        let mut img = RgbImage::from_pixel(200, 160, Rgb([228, 222, 214]));
        for y in 0..160 {
            for x in 0..200 {
                let d_rbc = ((x as f32 - 40.0).powi(2) + (y as f32 - 40.0).powi(2)).sqrt();
                let d_wbc = ((x as f32 - 120.0).powi(2) + (y as f32 - 90.0).powi(2)).sqrt();
                if d_rbc < 18.0 {
                    img.put_pixel(x, y, Rgb([210, 140, 160]));
                }
                if d_wbc < 30.0 {
                    img.put_pixel(x, y, Rgb([200, 180, 210]));
                }
                if d_wbc < 20.0 && (x + y) % 7 != 0 {
                    img.put_pixel(x, y, Rgb([95, 60, 160]));
                }
            }
        }
        img
    }

    /// The frame seen through a yellowish lamp whose light falls off to 55 % at the left edge.
    pub(crate) fn dim_yellow(frame: &RgbImage) -> RgbImage {
        let w = frame.width() as f32;
        let mut out = frame.clone();
        for (x, _, p) in out.enumerate_pixels_mut() {
            let light = 0.55 + 0.45 * x as f32 / (w - 1.0);
            for (v, tint) in p.0.iter_mut().zip([1.0, 0.92, 0.7]) {
                *v = (*v as f32 * light * tint).round() as u8;
            }
        }
        out
    }

    #[test]
    fn a_dim_yellow_frame_gives_the_same_cell() {
        let frame = synthetic_frame();
        let localizer = Localizer::new(LocalizerConfig::default(), 12.0);
        let clean = localizer.localize(&frame, 0.25);
        let tinted = localizer.localize(&dim_yellow(&frame), 0.25);
        assert_eq!(clean.cells.len(), 1);
        assert_eq!(tinted.cells.len(), 1);
        let (a, b) = (clean.cells[0].centre, tinted.cells[0].centre);
        assert!(
            (a.0 - b.0).abs() < 2.0 && (a.1 - b.1).abs() < 2.0,
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn lobes_of_one_nucleus_are_one_cell_beside_a_neighbour() {
        // 0.35 µm/px (the working scale): three lobes 3 px apart (a segmented neutrophil, 14.7 µm
        // across) and, 8 px from the last lobe, a round nucleus. The group spans 27 µm, so it is
        // taken apart; the lobes must come back together and the neighbour stay on its own.
        let mut frame = RgbImage::from_pixel(160, 90, Rgb([228, 222, 214]));
        let discs = [
            (40.0, 45.0, 6.0),
            (55.0, 45.0, 6.0),
            (70.0, 45.0, 6.0),
            (98.0, 45.0, 14.0),
        ];
        for (x, y, p) in frame.enumerate_pixels_mut() {
            let inside = discs.iter().any(|&(cx, cy, r): &(f32, f32, f32)| {
                (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r
            });
            if inside {
                *p = Rgb([95, 60, 160]);
            }
        }
        let loc = Localizer::new(LocalizerConfig::default(), 20.0).localize(&frame, 0.35);
        let mut centres: Vec<f32> = loc.cells.iter().map(|c| c.centre.0).collect();
        centres.sort_by(f32::total_cmp);
        assert_eq!(centres.len(), 2, "{centres:?}");
        assert!((centres[0] - 55.5).abs() < 2.0, "{centres:?}");
        assert!((centres[1] - 98.5).abs() < 2.0, "{centres:?}");
    }

    #[test]
    fn finds_the_nucleus_and_not_the_red_cell() {
        let frame = synthetic_frame();
        let localizer = Localizer::new(LocalizerConfig::default(), 12.0);
        let loc = localizer.localize(&frame, 0.25);
        assert_eq!(
            loc.cells.len(),
            1,
            "{:?}",
            loc.cells.iter().map(|c| c.bbox).collect::<Vec<_>>()
        );
        let c = &loc.cells[0];
        assert!((c.centre.0 - 120.0).abs() < 3.0 && (c.centre.1 - 90.0).abs() < 3.0);
        assert!(c.complete);
        let crop = localizer.crop(&frame, c, 0.25).unwrap();
        assert_eq!(crop.width(), 48);
    }

    #[test]
    fn with_a_detector_one_binning_serves_both_where_it_is_fine_enough() {
        // Classical: the finest whole block no finer than 0.35 µm/px.
        assert_eq!(work_bin(0.15, (640, 480), None), 2);
        assert_eq!(work_bin(0.085, (640, 480), None), 4);
        assert_eq!(work_bin(0.5, (640, 480), None), 1);
        // The Pi Zero 2 W: the detector's blocks of 3 (0.45 µm/px, 213 × 160).
        assert_eq!(work_bin(0.15, (640, 480), Some(160)), 3);
        // The desktop profile: blocks of 4 are already coarser than the detector's 3.
        assert_eq!(work_bin(0.085, (640, 480), Some(160)), 4);
        // 1280 × 960 at 0.1 µm/px: the detector's blocks of 6 would be 0.6 µm/px, too coarse.
        assert_eq!(work_bin(0.1, (1280, 960), Some(160)), 3);
        // The Jetson's 0.075 µm/px: blocks of 6 are 0.45 µm/px.
        assert_eq!(work_bin(0.075, (1280, 960), Some(160)), 6);
        // A frame too small for blocks of 2 under the detector: the classical bin.
        assert_eq!(work_bin(0.15, (300, 300), Some(160)), 2);
    }

    #[test]
    fn detector_picture_is_the_coarsest_binning_that_still_covers_its_input() {
        // The desktop profile's 640 × 480 frames at 0.085 µm/px: bin 4 leaves 160 × 120 blocks,
        // too few rows for a 160-px input; blocks of 3 leave 213 × 160.
        assert_eq!(detector_bin(4, (640, 480), 160), 3);
        assert_eq!(detector_bin(3, (640, 480), 160), 3);
        assert_eq!(detector_bin(2, (1280, 960), 160), 2);
        assert_eq!(detector_bin(4, (416, 416), 160), 2);
        // Smaller than two input sides: the frame itself.
        assert_eq!(detector_bin(4, (300, 300), 160), 1);
        assert_eq!(detector_bin(1, (1280, 960), 160), 1);
    }

    #[test]
    fn a_box_short_of_the_edge_holds_a_cut_cell_where_its_nucleus_runs_on_to_it() {
        // A 40 × 30 mask; a nucleus over columns 10..20 from row 22 down to the bottom edge, in a
        // box that stops two rows short of it (rows 22..28).
        let mut mask = GrayImage::new(40, 30);
        for y in 22..30 {
            for x in 10..20 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        let span = |x: Range<u32>, y: Range<u32>| MaskSpan { x, y };
        assert!(nucleus_runs_to_edge(&mask, &span(8..22, 22..28), 3));
        // Farther from the edge than the band: not looked at.
        assert!(!nucleus_runs_to_edge(&mask, &span(8..22, 22..28), 1));
        // A gap of background between the nucleus and the edge: a whole cell near the edge.
        for x in 10..20 {
            mask.put_pixel(x, 29, image::Luma([0]));
        }
        assert!(!nucleus_runs_to_edge(&mask, &span(8..22, 22..28), 3));
        // The same on the other sides: the mask turned a quarter, a half and three quarters.
        let mut cut = GrayImage::new(30, 30);
        for y in 0..30 {
            for x in 0..4 {
                cut.put_pixel(x, y, image::Luma([255]));
            }
        }
        assert!(nucleus_runs_to_edge(&cut, &span(2..12, 5..15), 3));
        let turned = imageops::rotate90(&cut);
        assert!(nucleus_runs_to_edge(&turned, &span(5..15, 2..12), 3));
        let turned = imageops::rotate180(&cut);
        assert!(nucleus_runs_to_edge(&turned, &span(18..28, 15..25), 3));
        let turned = imageops::rotate270(&cut);
        assert!(nucleus_runs_to_edge(&turned, &span(15..25, 18..28), 3));
        // A nucleus at the edge that does not reach into the box is another cell's.
        let mut beside = GrayImage::new(30, 30);
        for y in 0..30 {
            for x in 0..2 {
                beside.put_pixel(x, y, image::Luma([255]));
            }
        }
        assert!(!nucleus_runs_to_edge(&beside, &span(3..12, 5..15), 3));
    }

    #[test]
    fn cell_cut_by_the_edge_is_not_complete() {
        let frame = imageops::crop_imm(&synthetic_frame(), 100, 0, 100, 160).to_image();
        let localizer = Localizer::new(LocalizerConfig::default(), 12.0);
        let loc = localizer.localize(&frame, 0.25);
        assert_eq!(loc.cells.len(), 1);
        assert!(!loc.cells[0].complete);
        assert!(localizer.crop(&frame, &loc.cells[0], 0.25).is_none());
    }

    #[test]
    fn a_grey_picture_lacks_colour_and_a_stained_or_blank_one_does_not() {
        let colour = synthetic_frame();
        assert!(!lacks_colour(&colour));
        let mut grey = image::DynamicImage::ImageLuma8(imageops::grayscale(&colour)).to_rgb8();
        assert!(lacks_colour(&grey));
        // A few hot pixels do not make it a colour picture.
        for x in 0..10 {
            grey.put_pixel(x * 20, 4, Rgb([255, 0, 0]));
        }
        assert!(lacks_colour(&grey));
        // A blank grey field (no cells in view, sensor noise) is not judged.
        let mut state = 7;
        let blank = RgbImage::from_fn(200, 160, |_, _| {
            let v = 225 + (xorshift(&mut state) % 5) as u8;
            Rgb([v, v, v])
        });
        assert!(!lacks_colour(&blank));
        assert!(!lacks_colour(&RgbImage::new(0, 0)));
    }

    #[test]
    fn blurred_flat_frame_is_out_of_focus() {
        let frame = RgbImage::from_pixel(100, 100, Rgb([220, 220, 220]));
        let loc = Localizer::new(LocalizerConfig::default(), 12.0).localize(&frame, 0.25);
        assert!(loc.out_of_focus);
    }

    /// The next value of a xorshift32 sequence: test pictures that are the same on every run.
    pub(crate) fn xorshift(state: &mut u32) -> u32 {
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        *state
    }

    /// A mask of scattered set pixels and small blobs, the same for every call.
    fn speckled_mask(w: u32, h: u32) -> GrayImage {
        let mut state = 0x2545_f491u32;
        GrayImage::from_fn(w, h, |_, _| {
            let v = xorshift(&mut state);
            image::Luma([if v.is_multiple_of(23) { 255 } else { 0 }])
        })
    }

    #[test]
    fn dilation_sets_exactly_the_pixels_within_r_of_a_set_pixel() {
        let mask = speckled_mask(37, 29);
        for r in [0, 1, 3, 40] {
            let grown = dilate(&mask, r);
            for (x, y, p) in grown.enumerate_pixels() {
                let near = mask
                    .enumerate_pixels()
                    .any(|(mx, my, m)| m.0[0] > 0 && mx.abs_diff(x) <= r && my.abs_diff(y) <= r);
                assert_eq!(p.0[0] > 0, near, "r {r} at ({x}, {y})");
            }
        }
    }

    #[test]
    fn focus_score_is_the_variance_of_the_laplacian() {
        let img = speckled_mask(23, 17);
        let mut values = Vec::new();
        for y in 1..16 {
            for x in 1..22 {
                let at = |x: u32, y: u32| img.get_pixel(x, y).0[0] as f64;
                values.push(
                    at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y),
                );
            }
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((focus_score(&img) as f64 - variance).abs() < 1e-3 * variance);
    }

    #[test]
    fn iou_of_boxes() {
        let a = BoxPx {
            x0: 0.0,
            y0: 0.0,
            x1: 10.0,
            y1: 10.0,
        };
        let b = BoxPx {
            x0: 5.0,
            y0: 0.0,
            x1: 15.0,
            y1: 10.0,
        };
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn boxes_touch_when_they_overlap_or_meet() {
        let at = |x0: f32, y0: f32| BoxPx {
            x0,
            y0,
            x1: x0 + 10.0,
            y1: y0 + 10.0,
        };
        let a = at(0.0, 0.0);
        assert!(a.touches(&at(5.0, 5.0)), "overlapping");
        assert!(
            a.touches(&at(10.0, 0.0)) && at(10.0, 0.0).touches(&a),
            "meeting side by side"
        );
        assert!(a.touches(&at(10.0, 10.0)), "meeting at a corner");
        assert!(!a.touches(&at(10.5, 0.0)), "half a pixel apart");
        assert!(!a.touches(&at(3.0, 11.0)), "a pixel apart below");
        assert!(a.holds((0.0, 9.5)) && a.holds((5.0, 5.0)));
        assert!(!a.holds((10.0, 5.0)) && !a.holds((5.0, -0.1)));
    }
}
