//! Counting each cell once while the stage moves. The global shift between consecutive frames is
//! estimated by phase correlation (sub-pixel), which places every detection in slide ("world")
//! coordinates; detections are matched to tracks by world position; a track is counted once, when
//! it has been seen fully in view in enough frames or when it leaves the view, with its most
//! confident classification. Counted positions are remembered so a cell seen again on the next
//! zigzag row is not counted twice.

use crate::classify::Prediction;
use crate::localize::{BoxPx, Cell, CUT_BOX_BAND_UM};
use image::{GrayImage, RgbImage};
use rustfft::num_complex::Complex32;
use rustfft::FftPlanner;

/// Binning of frames before phase correlation.
const CORRELATION_BIN: u32 = 4;

/// Tracker settings, in physical units where they concern the slide.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// A detection within this distance of a track's predicted position is the same cell, µm.
    pub match_radius_um: f32,
    /// Complete, classified views after which a cell is counted without waiting for it to leave.
    pub stable_views: u32,
    /// Frames a track may go unseen before it is closed.
    pub max_missing: u64,
    /// Below this correlation peak height the new frame shows another field (the operator jumped,
    /// or replayed stills): open tracks are closed and counted, and matching starts afresh.
    pub min_correlation: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            match_radius_um: 5.0,
            stable_views: 3,
            max_missing: 3,
            min_correlation: 0.06,
        }
    }
}

/// The best view of a tracked cell.
#[derive(Debug, Clone)]
pub struct View {
    pub prediction: Prediction,
    pub crop: RgbImage,
    pub frame_index: u64,
    /// Where the cell was in that frame, frame pixels.
    pub centre: (f32, f32),
}

/// A cell counted once.
#[derive(Debug, Clone)]
pub struct CountedCell {
    pub track_id: u64,
    /// World position (slide pixels relative to the first frame).
    pub world: (f32, f32),
    pub view: View,
    /// The frame in which it was counted, and the camera's world position in that frame.
    pub counted_in: (u64, (f32, f32)),
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    /// Where the cell was last seen (world pixels); follows it while it enters or leaves the view.
    world: (f32, f32),
    /// Where the cell was last seen whole. A cell cut by the frame edge shows only part of its
    /// nucleus, whose centre is off by up to a cell radius: only whole views say where it is.
    settled: Option<(f32, f32)>,
    /// The cell's box in its last whole view, world pixels.
    extent: Option<BoxPx>,
    /// Area of the largest box among its whole views, px² ([`SHRUNK_VIEW_SHARE`]).
    largest_whole: f32,
    last_seen: u64,
    views: u32,
    best: Option<View>,
    counted: bool,
}

/// A view the localizer calls whole, whose box is under this share of the largest whole box of its
/// track, is the cell half out of the view. The learned detector's box around a cell cut by the frame
/// edge stops a few pixels short of the edge, so such a view passes as whole: its centre, a
/// nucleus radius off, would be where the cell is remembered, and the cell counted again when the
/// next row of a pan brings it back (a real neutrophil, twice in a pan over BCCD frames). Such a
/// view neither moves the cell's place nor is classified. Whole views of one cell differed by under
/// a tenth in box area in those pans.
const SHRUNK_VIEW_SHARE: f32 = 0.8;

/// The share of a box at the frame edge that must lie inside a counted cell's box for it to be part
/// of that cell. A neighbour touching the cell reaches into its box by much less.
const PART_INSIDE_SHARE: f32 = 0.6;

/// The share of box `a`'s area that lies inside box `b`.
fn share_inside(a: &BoxPx, b: &BoxPx) -> f32 {
    let w = (a.x1.min(b.x1) - a.x0.max(b.x0)).max(0.0);
    let h = (a.y1.min(b.y1) - a.y0.max(b.y0)).max(0.0);
    w * h / a.area().max(f32::EPSILON)
}

/// A frame whose sharpness along one axis falls below this share of the recent sharp frames', and
/// below this share of its sharpness along the other axis, is smeared by a fast stage move: its
/// shift would be biased, so it is skipped.
const MOTION_BLUR_RATIO: f32 = 0.85;

/// Phase-correlation shift estimator. Frames smeared by a fast stage move are recognised by their
/// sharpness and skipped (whitened phase correlation against a smeared frame is biased along the
/// move); the next sharp frame is correlated with the last sharp one.
pub struct ShiftEstimator {
    planner: FftPlanner<f32>,
    prev: Option<(Vec<Complex32>, u32, u32)>,
    /// Running sharpness of recent sharp frames.
    sharpness: Option<(f32, f32)>,
    blurred: bool,
    /// The next sharp frame is compared with a sharp frame from before a smeared one.
    after_blur: bool,
    spanned_blur: bool,
    /// Width and height of the last frame pushed.
    frame_size: Option<(u32, u32)>,
    /// The last frame pushed differs in size from the one before it.
    resized: bool,
}

impl Default for ShiftEstimator {
    fn default() -> Self {
        ShiftEstimator {
            planner: FftPlanner::new(),
            prev: None,
            sharpness: None,
            blurred: false,
            after_blur: false,
            spanned_blur: false,
            frame_size: None,
            resized: false,
        }
    }
}

/// Mean absolute difference between neighbouring pixels along x, and along y.
fn sharpness(grey: &GrayImage) -> (f32, f32) {
    let (w, h) = grey.dimensions();
    let (mut gx, mut gy) = (0u64, 0u64);
    for y in 0..h.saturating_sub(1) {
        for x in 0..w.saturating_sub(1) {
            let c = grey.get_pixel(x, y).0[0] as i32;
            gx += (grey.get_pixel(x + 1, y).0[0] as i32 - c).unsigned_abs() as u64;
            gy += (grey.get_pixel(x, y + 1).0[0] as i32 - c).unsigned_abs() as u64;
        }
    }
    let n = (w.max(2) as u64 * h.max(2) as u64) as f32;
    (gx as f32 / n, gy as f32 / n)
}

impl ShiftEstimator {
    /// True when the last pushed frame differs in size from the one before it (another camera,
    /// or pictures of several cameras replayed): nothing is compared across the change.
    pub fn last_was_resized(&self) -> bool {
        self.resized
    }

    /// Width and height of the last frame pushed.
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        self.frame_size
    }

    /// Records the size of a new frame; a change of size forgets the frames before it.
    fn note_size(&mut self, size: (u32, u32)) {
        self.resized = self.frame_size.is_some_and(|before| before != size);
        if self.resized {
            self.prev = None;
            self.sharpness = None;
            self.after_blur = false;
        }
        self.frame_size = Some(size);
    }

    /// True when the last pushed frame was smeared by motion and skipped.
    pub fn last_was_blurred(&self) -> bool {
        self.blurred
    }

    /// True when the last shift spans a skipped smeared frame (a longer jump, so less overlap and
    /// a lower correlation peak).
    pub fn spans_blur(&self) -> bool {
        self.spanned_blur
    }

    /// Displacement of the image content from the previous sharp frame to this one, frame pixels,
    /// and the correlation peak height (1 = identical content, near 0 = unrelated views); None for
    /// the first frame, after a size change, or for a frame smeared by motion.
    pub fn push(&mut self, frame: &RgbImage) -> Option<(f32, f32, f32)> {
        self.note_size(frame.dimensions());
        let grey = binned_grey(frame, CORRELATION_BIN);
        let sharp = sharpness(&grey);
        // Smeared along x or along y: that direction loses its edges, the other keeps them (a
        // still that is merely less sharp than the last one loses them in both directions).
        self.blurred = self.sharpness.is_some_and(|(sx, sy)| {
            let (rx, ry) = (sharp.0 / sx.max(1e-6), sharp.1 / sy.max(1e-6));
            let (lo, hi) = (rx.min(ry), rx.max(ry));
            lo < MOTION_BLUR_RATIO && lo < MOTION_BLUR_RATIO * hi
        });
        log::trace!("sharpness {sharp:?} of recent {:?}", self.sharpness);
        if self.blurred {
            self.after_blur = true;
            return None;
        }
        self.sharpness = Some(match self.sharpness {
            Some((sx, sy)) => (0.8 * sx + 0.2 * sharp.0, 0.8 * sy + 0.2 * sharp.1),
            None => sharp,
        });
        let (w, h) = grey.dimensions();
        let spectrum = self.fft2(&windowed(&grey), w, h, false);
        let result = match &self.prev {
            Some((prev, pw, ph)) if *pw == w && *ph == h => {
                let cross: Vec<Complex32> = spectrum
                    .iter()
                    .zip(prev)
                    .map(|(a, b)| {
                        let c = a * b.conj();
                        let n = c.norm();
                        if n > 1e-12 {
                            c / n
                        } else {
                            Complex32::new(0.0, 0.0)
                        }
                    })
                    .collect();
                let surface = self.fft2(&cross, w, h, true);
                let (dx, dy, peak) = peak_subpixel(&surface, w, h);
                let strength = peak / (w * h) as f32;
                Some((
                    dx * CORRELATION_BIN as f32,
                    dy * CORRELATION_BIN as f32,
                    strength,
                ))
            }
            _ => None,
        };
        self.prev = Some((spectrum, w, h));
        self.spanned_blur = result.is_some() && self.after_blur;
        if result.is_some() {
            self.after_blur = false;
        }
        result
    }

    fn fft2(&mut self, data: &[Complex32], w: u32, h: u32, inverse: bool) -> Vec<Complex32> {
        let (w, h) = (w as usize, h as usize);
        let mut buf = data.to_vec();
        let row_fft = if inverse {
            self.planner.plan_fft_inverse(w)
        } else {
            self.planner.plan_fft_forward(w)
        };
        for row in buf.chunks_exact_mut(w) {
            row_fft.process(row);
        }
        let col_fft = if inverse {
            self.planner.plan_fft_inverse(h)
        } else {
            self.planner.plan_fft_forward(h)
        };
        let mut col = vec![Complex32::new(0.0, 0.0); h];
        for x in 0..w {
            for y in 0..h {
                col[y] = buf[y * w + x];
            }
            col_fft.process(&mut col);
            for y in 0..h {
                buf[y * w + x] = col[y];
            }
        }
        buf
    }
}

fn binned_grey(frame: &RgbImage, bin: u32) -> GrayImage {
    let (w, h) = ((frame.width() / bin).max(1), (frame.height() / bin).max(1));
    let mut out = GrayImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0u32;
            for dy in 0..bin.min(frame.height()) {
                for dx in 0..bin.min(frame.width()) {
                    let p = frame
                        .get_pixel(
                            (x * bin + dx).min(frame.width() - 1),
                            (y * bin + dy).min(frame.height() - 1),
                        )
                        .0;
                    acc += p[1] as u32;
                }
            }
            out.put_pixel(x, y, image::Luma([(acc / (bin * bin)) as u8]));
        }
    }
    out
}

/// Mean-removed image under a Hann window, as complex samples.
fn windowed(img: &GrayImage) -> Vec<Complex32> {
    let (w, h) = img.dimensions();
    let mean = img.pixels().map(|p| p.0[0] as f32).sum::<f32>() / (w * h) as f32;
    let hann =
        |i: u32, n: u32| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos();
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let v = (img.get_pixel(x, y).0[0] as f32 - mean) * hann(x, w) * hann(y, h);
            out.push(Complex32::new(v, 0.0));
        }
    }
    out
}

/// Peak of a correlation surface with parabolic sub-pixel refinement, as a signed shift.
fn peak_subpixel(surface: &[Complex32], w: u32, h: u32) -> (f32, f32, f32) {
    let (w, h) = (w as usize, h as usize);
    let (mut best, mut bi) = (f32::MIN, 0);
    for (i, v) in surface.iter().enumerate() {
        if v.re > best {
            best = v.re;
            bi = i;
        }
    }
    let (px, py) = (bi % w, bi / w);
    let at = |x: usize, y: usize| surface[(y % h) * w + (x % w)].re;
    // Foroosh et al. (2002): the phase-correlation peak of a sub-pixel shift is a sampled
    // Dirichlet kernel; the larger neighbour's share of the peak gives the fraction.
    let refine = |l: f32, c: f32, r: f32| {
        let (n, sign) = if r >= l { (r, 1.0) } else { (l, -1.0) };
        if n <= 0.0 || c <= 0.0 {
            return 0.0;
        }
        (sign * n / (n + c)).clamp(-0.5, 0.5)
    };
    let fx = refine(at(px + w - 1, py), best, at(px + 1, py));
    let fy = refine(at(px, py + h - 1), best, at(px, py + 1));
    let signed = |p: usize, n: usize| {
        if p > n / 2 {
            p as f32 - n as f32
        } else {
            p as f32
        }
    };
    (signed(px, w) + fx, signed(py, h) + fy, best)
}

/// Counts each physical cell once across a stream of frames.
pub struct Tracker {
    cfg: TrackerConfig,
    shift: ShiftEstimator,
    /// World position of the current frame's top-left corner.
    camera: (f32, f32),
    tracks: Vec<Track>,
    /// Cells already counted or closed.
    done: Vec<Place>,
    next_id: u64,
    frame_index: u64,
    /// Match radius in frame pixels, from the scale of the last observed frame.
    match_radius_px: f32,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            shift: ShiftEstimator::default(),
            camera: (0.0, 0.0),
            tracks: Vec::new(),
            done: Vec::new(),
            next_id: 0,
            frame_index: 0,
            match_radius_px: 0.0,
        }
    }

    /// Starts the ids after journaled cells so resumed counts keep unique ids.
    pub fn with_first_id(mut self, id: u64) -> Tracker {
        self.next_id = id;
        self
    }

    /// Continues a count stopped at a known stage position: the camera is at `camera` (world pixels)
    /// in the first frame, and the cells at `counted` (world pixels) are counted already, so they
    /// are not counted again while still in view.
    pub fn resuming_at(mut self, camera: (f32, f32), counted: Vec<(f32, f32)>) -> Tracker {
        self.camera = camera;
        self.done = counted.into_iter().map(Place::point).collect();
        self
    }

    /// True when the current frame is smeared by a fast stage move: its cells are not observed
    /// (positions and classes from a smeared frame are unreliable).
    pub fn frame_blurred(&self) -> bool {
        self.shift.last_was_blurred()
    }

    /// A box in the current frame, in world pixels.
    fn to_world(&self, b: &BoxPx) -> BoxPx {
        let (x, y) = self.camera;
        BoxPx {
            x0: b.x0 + x,
            y0: b.y0 + y,
            x1: b.x1 + x,
            y1: b.y1 + y,
        }
    }

    /// Estimated world position of the current frame.
    pub fn camera(&self) -> (f32, f32) {
        self.camera
    }

    /// The best prediction so far of the track at `centre` (frame pixels) in the current frame,
    /// and whether that cell is already counted.
    pub fn prediction_near(
        &self,
        centre: (f32, f32),
        um_per_px: f32,
    ) -> Option<(&Prediction, bool)> {
        let world = (self.camera.0 + centre.0, self.camera.1 + centre.1);
        let radius = self.cfg.match_radius_um / um_per_px;
        self.tracks
            .iter()
            .filter(|t| dist(t.world, world) <= radius)
            .min_by(|a, b| dist(a.world, world).total_cmp(&dist(b.world, world)))
            .and_then(|t| t.best.as_ref().map(|b| (&b.prediction, t.counted)))
    }

    /// Registers a new frame: estimates the stage move from the previous one. Returns the cells
    /// counted because the view jumped to an unrelated field.
    pub fn advance(&mut self, frame: &RgbImage, frame_index: u64) -> Vec<CountedCell> {
        let mut counted = Vec::new();
        self.frame_index = frame_index;
        let shift = self.shift.push(frame);
        if self.shift.last_was_resized() {
            log::info!(
                "frame {frame_index}: {} × {} px, unlike the frame before it: a new field",
                frame.width(),
                frame.height()
            );
            counted = self.finish();
            self.done.clear();
        }
        if let Some((dx, dy, strength)) = shift {
            // A jump across a smeared frame overlaps less: half the peak height still means the
            // same field.
            let min = if self.shift.spans_blur() {
                self.cfg.min_correlation / 2.0
            } else {
                self.cfg.min_correlation
            };
            if strength < min {
                log::debug!("frame {frame_index}: new field (correlation {strength:.3})");
                counted = self.finish();
                self.done.clear();
            } else {
                // Content moved by (dx, dy): the camera moved the other way.
                self.camera.0 -= dx;
                self.camera.1 -= dy;
            }
        }
        self.frame_index = frame_index;
        counted
    }

    /// Matches this frame's cells to tracks, classifies the views that can still improve a
    /// track (`cut` gives a cell's crop, none when it cannot be classified), and returns the cells
    /// counted now.
    pub fn observe<E>(
        &mut self,
        cells: &[Cell],
        um_per_px: f32,
        cut: impl Fn(&Cell) -> Option<RgbImage>,
        classify: impl FnOnce(&[RgbImage]) -> Result<Vec<Prediction>, E>,
    ) -> Result<Vec<CountedCell>, E> {
        let radius = self.cfg.match_radius_um / um_per_px;
        self.match_radius_px = radius;
        let mut to_classify: Vec<(usize, RgbImage, (f32, f32))> = Vec::new();
        let mut matched = vec![false; self.tracks.len()];
        for cell in cells {
            let world = (self.camera.0 + cell.centre.0, self.camera.1 + cell.centre.1);
            let extent = cell.complete.then(|| self.to_world(&cell.bbox));
            let Some(t) = self.match_track(world, radius, &matched) else {
                if seen_before(&self.done, &Place { at: world, extent }, radius)
                    || self.part_of_a_counted_cell(&cell.bbox, um_per_px)
                {
                    continue;
                }
                log::trace!(
                    "frame {}: track {} born at ({:.0}, {:.0})",
                    self.frame_index,
                    self.next_id,
                    world.0,
                    world.1
                );
                let mut track = Track {
                    id: self.next_id,
                    world,
                    settled: None,
                    extent: None,
                    largest_whole: 0.0,
                    last_seen: self.frame_index,
                    views: 0,
                    best: None,
                    counted: false,
                };
                let whole = extent.is_some_and(|e| track.seen_whole(world, e));
                self.tracks.push(track);
                self.next_id += 1;
                matched.push(true);
                if whole {
                    self.queue_view(self.tracks.len() - 1, cell, &cut, &mut to_classify);
                }
                continue;
            };
            matched[t] = true;
            let track = &mut self.tracks[t];
            track.world = world;
            track.last_seen = self.frame_index;
            if extent.is_some_and(|e| track.seen_whole(world, e)) {
                self.queue_view(t, cell, &cut, &mut to_classify);
            }
        }
        if !to_classify.is_empty() {
            let crops: Vec<RgbImage> = to_classify.iter().map(|(_, c, _)| c.clone()).collect();
            let predictions = classify(&crops)?;
            for ((t, crop, centre), prediction) in to_classify.into_iter().zip(predictions) {
                self.record_view(t, crop, centre, prediction);
            }
        }
        Ok(self.collect_counted(radius))
    }

    /// Whether a box at the frame edge (within [`CUT_BOX_BAND_UM`]) lies mostly inside the whole box
    /// of a cell counted and gone: part of that cell coming back into view. The learned detector's
    /// box around such a part stops short of the edge and passes as whole, and its centre is too
    /// far from the cell's to be matched by distance (a counted neutrophil's lower part, entering
    /// at the top of the next row of a pan over BCCD frames, counted as a cell of its own).
    fn part_of_a_counted_cell(&self, bbox: &BoxPx, um_per_px: f32) -> bool {
        let Some((w, h)) = self.shift.frame_size() else {
            return false;
        };
        let band = CUT_BOX_BAND_UM / um_per_px;
        let at_edge = bbox.x0 < band
            || bbox.y0 < band
            || bbox.x1 > w as f32 - band
            || bbox.y1 > h as f32 - band;
        if !at_edge {
            return false;
        }
        let world = self.to_world(bbox);
        self.done
            .iter()
            .filter_map(|k| k.extent)
            .any(|e| share_inside(&world, &e) >= PART_INSIDE_SHARE)
    }

    /// Queues a whole view of track `t` for classification, unless the track is counted already.
    fn queue_view(
        &self,
        t: usize,
        cell: &Cell,
        cut: impl Fn(&Cell) -> Option<RgbImage>,
        queue: &mut Vec<(usize, RgbImage, (f32, f32))>,
    ) {
        if self.tracks[t].counted {
            return;
        }
        if let Some(crop) = cut(cell) {
            queue.push((t, crop, cell.centre));
        }
    }

    fn record_view(
        &mut self,
        t: usize,
        crop: RgbImage,
        centre: (f32, f32),
        prediction: Prediction,
    ) {
        let frame_index = self.frame_index;
        let track = &mut self.tracks[t];
        track.views += 1;
        let better = track
            .best
            .as_ref()
            .is_none_or(|b| prediction.probability > b.prediction.probability);
        if better {
            track.best = Some(View {
                prediction,
                crop,
                frame_index,
                centre,
            });
        }
    }

    fn match_track(&self, world: (f32, f32), radius: f32, matched: &[bool]) -> Option<usize> {
        self.tracks
            .iter()
            .enumerate()
            .filter(|(i, _)| !matched[*i])
            .map(|(i, t)| (i, dist(t.world, world)))
            .filter(|(_, d)| *d <= radius)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// Counts stable tracks and closes lost ones. A track that has settled onto the place of a cell
    /// counted earlier is that cell seen again (it was born at the frame edge, where a half-seen
    /// nucleus puts the centre off by up to a cell radius): it is absorbed, not counted.
    fn collect_counted(&mut self, radius: f32) -> Vec<CountedCell> {
        let mut out = Vec::new();
        let now = self.frame_index;
        let max_missing = self.cfg.max_missing;
        let stable = self.cfg.stable_views;
        let done = &self.done;
        // Tracks still open and counted: a second track that settles on one of them (it was born
        // where a cut or smeared view put the centre off, then followed the same cell) is that cell.
        let mut open_counted: Vec<Place> = self
            .tracks
            .iter()
            .filter(|t| t.counted)
            .map(Track::place)
            .collect();
        for track in &mut self.tracks {
            let lost = now.saturating_sub(track.last_seen) > max_missing;
            if track.counted || track.best.is_none() || !(track.views >= stable || lost) {
                continue;
            }
            track.counted = true;
            if seen_before(done, &track.place(), radius)
                || seen_before(&open_counted, &track.place(), radius)
            {
                log::debug!("track {} is a counted cell seen again: absorbed", track.id);
                continue;
            }
            open_counted.push(track.place());
            log::trace!(
                "frame {now}: track {} counted at ({:.0}, {:.0})",
                track.id,
                track.place().at.0,
                track.place().at.1
            );
            out.push(counted(track, (now, self.camera)));
        }
        let (closed, open): (Vec<Track>, Vec<Track>) = self
            .tracks
            .drain(..)
            .partition(|t| now.saturating_sub(t.last_seen) > max_missing);
        self.tracks = open;
        self.done
            .extend(closed.iter().filter(|t| t.counted).map(Track::place));
        out
    }

    /// Counts every open track that has a classified view (end of the stream).
    pub fn finish(&mut self) -> Vec<CountedCell> {
        let mut out = Vec::new();
        let radius = self.match_radius_px;
        for track in self.tracks.drain(..) {
            let seen_again = seen_before(&self.done, &track.place(), radius);
            if !track.counted && track.best.is_some() && !seen_again {
                out.push(counted(&track, (self.frame_index, self.camera)));
            }
            if track.best.is_some() {
                self.done.push(track.place());
            }
        }
        out
    }
}

impl Track {
    /// Takes a view the localizer calls whole (world position and box): where the cell is, unless
    /// its box has shrunk under [`SHRUNK_VIEW_SHARE`] of the largest whole one (the cell half out of
    /// the view). Returns whether the view was taken as whole.
    fn seen_whole(&mut self, world: (f32, f32), extent: BoxPx) -> bool {
        let area = extent.area();
        if area < SHRUNK_VIEW_SHARE * self.largest_whole {
            return false;
        }
        self.largest_whole = self.largest_whole.max(area);
        self.settled = Some(world);
        self.extent = Some(extent);
        true
    }

    /// Best known place of the cell: where it was last seen whole, and its box then.
    fn place(&self) -> Place {
        Place {
            at: self.settled.unwrap_or(self.world),
            extent: self.extent,
        }
    }
}

/// Where a cell is on the slide (world pixels) and, when it was seen whole, its box.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Place {
    at: (f32, f32),
    extent: Option<BoxPx>,
}

impl Place {
    fn point(at: (f32, f32)) -> Place {
        Place { at, extent: None }
    }
}

/// Share of a cell's box (nucleus plus cytoplasm margin), about its centre, that holds its nucleus.
const NUCLEAR_CORE: f32 = 0.7;

/// True when `place` is a cell already in `known`: within `radius` of one, or either's centre inside
/// the nuclear core of the other's box. A nucleus that one frame shows whole and another as two
/// lobes (focus, the lamp's drift, where it sits in the frame) gives centres up to a nuclear radius
/// apart, farther than the match radius; distinct cells' nuclei do not lie inside one another.
fn seen_before(known: &[Place], place: &Place, radius: f32) -> bool {
    known.iter().any(|k| {
        dist(k.at, place.at) <= radius
            || k.extent.is_some_and(|e| in_core(&e, place.at))
            || place.extent.is_some_and(|e| in_core(&e, k.at))
    })
}

fn in_core(b: &BoxPx, p: (f32, f32)) -> bool {
    let (cx, cy) = b.centre();
    let (hw, hh) = (
        b.width() * NUCLEAR_CORE / 2.0,
        b.height() * NUCLEAR_CORE / 2.0,
    );
    (p.0 - cx).abs() <= hw && (p.1 - cy).abs() <= hh
}

fn counted(track: &Track, counted_in: (u64, (f32, f32))) -> CountedCell {
    CountedCell {
        counted_in,
        track_id: track.id,
        world: track.place().at,
        view: track.best.clone().expect("counted tracks have a view"),
    }
}

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn textured(w: u32, h: u32) -> RgbImage {
        let mut rng = crate::slide::Rng::new(5);
        let mut img = RgbImage::from_pixel(w, h, Rgb([200, 200, 200]));
        for _ in 0..300 {
            let (cx, cy, r) = (
                rng.unit() * w as f32,
                rng.unit() * h as f32,
                4.0 + rng.unit() * 12.0,
            );
            let v = (rng.unit() * 180.0) as u8;
            for y in 0..h {
                for x in 0..w {
                    if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r {
                        img.put_pixel(x, y, Rgb([v, v, v]));
                    }
                }
            }
        }
        img
    }

    /// A detection at `centre` (frame pixels); `whole` says whether the frame edge cuts it.
    fn detection(centre: (f32, f32), whole: bool) -> Cell {
        sized_detection(centre, 20.0, whole)
    }

    /// A detection whose box reaches `half` pixels from its centre.
    fn sized_detection(centre: (f32, f32), half: f32, whole: bool) -> Cell {
        Cell {
            bbox: crate::localize::BoxPx {
                x0: centre.0 - half,
                y0: centre.1 - half,
                x1: centre.0 + half,
                y1: centre.1 + half,
            },
            centre,
            mask: image::GrayImage::new(1, 1),
            mask_scale: 1,
            nucleus_area_um2: 40.0,
            complete: whole,
        }
    }

    /// Stands in for the localizer's crop of a complete cell.
    fn cut(cell: &Cell) -> Option<RgbImage> {
        cell.complete.then(|| RgbImage::new(8, 8))
    }

    fn sure(crops: &[RgbImage]) -> Result<Vec<Prediction>, ()> {
        Ok(crops
            .iter()
            .map(|_| Prediction {
                top: 0,
                probability: 0.9,
                probabilities: vec![0.9, 0.1],
                review: false,
            })
            .collect())
    }

    /// A still field of view fed to a tracker frame after frame.
    struct Still {
        tracker: Tracker,
        frame: RgbImage,
        index: u64,
    }

    impl Still {
        fn new() -> Still {
            Still {
                tracker: Tracker::new(TrackerConfig::default()),
                frame: textured(320, 240),
                index: 0,
            }
        }

        /// Shows `times` frames with the given detections (at 0.25 µm/px); returns the cells counted.
        fn show(&mut self, cells: &[Cell], times: usize) -> usize {
            let mut n = 0;
            for _ in 0..times {
                self.index += 1;
                n += self.tracker.advance(&self.frame, self.index).len();
                n += self.tracker.observe(cells, 0.25, cut, sure).unwrap().len();
            }
            n
        }
    }

    #[test]
    fn a_cell_that_leaves_and_comes_back_is_counted_once() {
        // 0.25 µm/px: the 5 µm match radius is 20 px. While the cell is cut by the frame edge its
        // detected centre sits up to 30 px off (only part of the nucleus is in view).
        let mut still = Still::new();
        let whole = [detection((100.0, 100.0), true)];
        let mut counted = still.show(&whole, 3);
        assert_eq!(counted, 1, "three whole views count the cell");
        // Leaving: the part still in view drifts off, then the cell is gone long enough to close.
        counted += still.show(&[detection((115.0, 100.0), false)], 1);
        counted += still.show(&[detection((130.0, 100.0), false)], 1);
        counted += still.show(&[], 5);
        // Coming back: first cut (centre off), then whole at its old place.
        counted += still.show(&[detection((72.0, 100.0), false)], 1);
        counted += still.show(&whole, 4);
        counted += still.show(&[], 5);
        counted += still.tracker.finish().len();
        assert_eq!(counted, 1, "the cell came back and was counted again");
    }

    #[test]
    fn a_cell_leaving_in_boxes_that_stop_short_of_the_edge_is_remembered_where_it_was_whole() {
        // The learned detector's box around a cell half out of the view stops a few pixels short of
        // the frame edge, so the view passes as whole; only the box shrinking tells. 0.25 µm/px:
        // match radius 20 px; an 80 px cell.
        let mut still = Still::new();
        let whole = [sized_detection((100.0, 100.0), 40.0, true)];
        let mut counted = still.show(&whole, 3);
        assert_eq!(counted, 1);
        counted += still.show(&[sized_detection((115.0, 100.0), 30.0, true)], 1);
        counted += still.show(&[sized_detection((130.0, 100.0), 22.0, true)], 1);
        counted += still.show(&[], 5);
        // The next row of the pan brings it back whole, 30 px from the last half view's centre.
        counted += still.show(&whole, 4);
        counted += still.show(&[], 5);
        counted += still.tracker.finish().len();
        assert_eq!(
            counted, 1,
            "the cell was remembered where its half view was"
        );
        // A cell entering the view grows: its first, partial box is no bar to the whole ones.
        let mut still = Still::new();
        let mut counted = still.show(&[sized_detection((130.0, 100.0), 22.0, true)], 1);
        counted += still.show(&[sized_detection((115.0, 100.0), 30.0, true)], 1);
        counted += still.show(&whole, 2);
        assert_eq!(counted, 1, "three views, the last two whole");
        counted += still.show(&[], 5);
        counted += still.show(&whole, 3);
        counted += still.tracker.finish().len();
        assert_eq!(counted, 1);
    }

    /// A detection with the box (x0, y0, x1, y1), centred in it, that passes as whole.
    fn boxed_detection((x0, y0, x1, y1): (f32, f32, f32, f32)) -> Cell {
        let mut cell = detection(((x0 + x1) / 2.0, (y0 + y1) / 2.0), true);
        cell.bbox = crate::localize::BoxPx { x0, y0, x1, y1 };
        cell
    }

    #[test]
    fn part_of_a_counted_cell_coming_back_at_the_edge_is_not_a_cell_of_its_own() {
        // 0.25 µm/px: match radius 20 px, edge band 6 px. An 80 px cell near the top of a
        // 320 × 240 view, counted and gone; then its upper part at the top edge, in a box that
        // passes as whole, 30 px from the cell's centre and outside its nuclear core.
        let mut still = Still::new();
        let mut counted = still.show(&[boxed_detection((60.0, 10.0, 140.0, 90.0))], 3);
        counted += still.show(&[], 5);
        assert_eq!(counted, 1);
        counted += still.show(&[boxed_detection((62.0, 2.0, 138.0, 38.0))], 3);
        counted += still.show(&[], 5);
        assert_eq!(counted, 1, "the part was counted as a cell");
        // A neighbour at the edge, reaching into the counted cell's box a little, is a cell.
        counted += still.show(&[boxed_detection((130.0, 2.0, 200.0, 60.0))], 3);
        counted += still.show(&[], 5);
        counted += still.tracker.finish().len();
        assert_eq!(counted, 2);
    }

    #[test]
    fn a_cell_seen_whole_then_as_two_lobes_is_counted_once() {
        // 0.25 µm/px: match radius 20 px. A 20 µm cell (80 px box); in later frames its nucleus
        // falls apart into two lobes 25 px either side of its centre, each farther than the radius.
        let mut still = Still::new();
        let mut counted = still.show(&[sized_detection((100.0, 100.0), 40.0, true)], 3);
        assert_eq!(counted, 1);
        let lobes = [
            sized_detection((75.0, 100.0), 22.0, true),
            sized_detection((125.0, 100.0), 22.0, true),
        ];
        counted += still.show(&lobes, 4);
        counted += still.show(&[], 5);
        counted += still.tracker.finish().len();
        assert_eq!(counted, 1, "the lobes were counted as cells");
        // A second cell whose nucleus lies outside the first one's box is a cell of its own.
        let mut still = Still::new();
        let pair = [
            sized_detection((100.0, 100.0), 40.0, true),
            sized_detection((170.0, 100.0), 40.0, true),
        ];
        let counted = still.show(&pair, 3) + still.tracker.finish().len();
        assert_eq!(counted, 2);
    }

    #[test]
    fn a_frame_of_another_size_is_a_new_field() {
        // Pictures of two cameras replayed from one folder: nothing links the second one's cells
        // to the first one's, though they sit at the same pixels.
        let mut still = Still::new();
        let cell = [detection((100.0, 100.0), true)];
        let mut counted = still.show(&cell, 3);
        still.frame = textured(400, 300);
        counted += still.show(&cell, 3);
        counted += still.tracker.finish().len();
        assert_eq!(counted, 2);
    }

    #[test]
    fn two_cells_side_by_side_are_both_counted() {
        let mut still = Still::new();
        let pair = [
            detection((100.0, 100.0), true),
            detection((150.0, 100.0), true),
        ];
        let counted = still.show(&pair, 3) + still.tracker.finish().len();
        assert_eq!(counted, 2);
    }

    #[test]
    fn two_tracks_that_end_on_one_cell_count_it_once() {
        // One frame shows the cell as two pieces 15 px apart (within the 20 px match radius): two
        // tracks are born. From then on one detection is seen, and the nearer track follows it;
        // the other is lost and would be counted where the first already is.
        let mut still = Still::new();
        let mut counted = still.show(
            &[
                detection((100.0, 100.0), true),
                detection((115.0, 100.0), true),
            ],
            1,
        );
        counted += still.show(&[detection((110.0, 100.0), true)], 6);
        counted += still.show(&[], 5);
        counted += still.tracker.finish().len();
        assert_eq!(counted, 1);
    }

    #[test]
    fn phase_correlation_finds_the_shift() {
        let big = textured(800, 600);
        let a = image::imageops::crop_imm(&big, 100, 60, 640, 480).to_image();
        let b = image::imageops::crop_imm(&big, 137, 48, 640, 480).to_image();
        let mut est = ShiftEstimator::default();
        assert!(est.push(&a).is_none());
        let (dx, dy, strength) = est.push(&b).unwrap();
        // The camera moved +37, -12: content moved -37, +12.
        assert!(
            (dx + 37.0).abs() < 2.0 && (dy - 12.0).abs() < 2.0,
            "{dx} {dy}"
        );
        assert!(strength > 0.2, "{strength}");
        // An unrelated view has a low peak.
        let other = image::imageops::rotate180(&a);
        let (_, _, weak) = est.push(&other).unwrap();
        assert!(weak < 0.06, "{weak}");
    }
}
