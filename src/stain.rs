//! The nuclear-stain channel of a frame, and the frame's light it is measured against: the frame
//! averaged over blocks to the localizer's working scale, the colour of bare slide (the lamp's
//! colour) and the fall-off of illumination across the field, estimated from each frame's own
//! brightest pixels, and divided out so that a dim corner or a yellow lamp reads like the centre of
//! a well-set microscope. The learned detector's input is brought within the lighting it learned
//! under from the same estimate.

use image::GrayImage;
use image::RgbImage;
use std::ops::Range;

/// Nuclear stain channel at 1/bin resolution: high where blue stays and red and green are absorbed,
/// after the frame's own white balance and illumination fall-off are divided out (see
/// `BackgroundWhite`), so a dim corner or a yellow lamp reads like the centre of a well-set
/// microscope.
pub fn stain_channel(frame: &RgbImage, bin: u32) -> GrayImage {
    let binned = binned_rgb(frame, bin);
    stain_of_binned(&binned, &BackgroundWhite::estimate(&binned))
}

/// 255 / 3: the stain measure (2 + tb - tr - tg, 0..3) to 0..255, a product rather than a division
/// per pixel.
const STAIN_SCALE: f32 = 85.0;

/// The stain channel of a frame already averaged over bin × bin blocks, whose bare slide is `white`.
#[multiversion::multiversion(targets("x86_64+avx2"))]
pub(crate) fn stain_of_binned(binned: &BinnedRgb, white: &BackgroundWhite) -> GrayImage {
    let (width, height) = (binned.width, binned.height);
    // The illumination surface's terms in u alone, worked out once per column.
    let columns: Vec<ColumnTerms> = (0..width)
        .map(|x| white.illumination.column_terms(x as f32 + 0.5))
        .collect();
    // Each row in two passes the compiler vectorizes: the light's scale along the row, then the
    // pixels.
    let mut row_scale = vec![0f32; width as usize];
    let mut out = vec![0u8; (width * height) as usize];
    for (y, (row_out, row_in)) in out
        .chunks_exact_mut(width as usize)
        .zip(binned.pixels.chunks_exact(width as usize))
        .enumerate()
    {
        let row = white.illumination.row_terms(y as f32 + 0.5);
        for (scale, column) in row_scale.iter_mut().zip(&columns) {
            *scale = white.per_light(row.at(column));
        }
        for ((o, &pixel), &scale) in row_out.iter_mut().zip(row_in).zip(&row_scale) {
            let [tr, tg, tb] = white.transmittance(pixel, scale);
            *o = floor_within(STAIN_SCALE * (2.0 + tb - tr - tg), 255.0) as u8;
        }
    }
    GrayImage::from_raw(width, height, out).expect("buffer sized to the image")
}

/// A frame's mean colours over bin × bin blocks.
pub(crate) struct BinnedRgb {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pixels: Vec<[f32; 3]>,
}

impl BinnedRgb {
    #[cfg(test)]
    fn at(&self, x: u32, y: u32) -> [f32; 3] {
        self.pixels[(y * self.width + x) as usize]
    }
    #[cfg(test)]
    fn brightness_at(&self, x: u32, y: u32) -> usize {
        brightness_of(&self.at(x, y)) as usize
    }
    /// The block means as the detector's picture.
    pub(crate) fn picture(&self) -> crate::detect::Picture<'_, f32> {
        let (width, height) = (self.width as usize, self.height as usize);
        crate::detect::Picture::new(width, height, self.pixels.as_flattened())
            .expect("one mean colour per block")
    }
}

#[multiversion::multiversion(targets("x86_64+avx2"))]
pub(crate) fn binned_rgb(frame: &RgbImage, bin: u32) -> BinnedRgb {
    let (width, height) = ((frame.width() / bin).max(1), (frame.height() / bin).max(1));
    let bin_x = bin.min(frame.width()) as usize;
    let bin_y = bin.min(frame.height()) as usize;
    // A product per channel rather than a division: the reciprocal of the block's pixel count.
    let per_pixel = 1.0 / (bin_x * bin_y) as f32;
    let stride = frame.width() as usize * 3;
    // Bytes of each row that fall in whole bins.
    let used = width as usize * bin_x * 3;
    let raw = frame.as_raw();
    let mut pixels = vec![[0f32; 3]; (width * height) as usize];
    // Sums down the bin's rows, byte by byte (at most 16 × 255, so u16 holds them): one pass the
    // compiler vectorizes, then a short pass across each block.
    let mut down = vec![0u16; used];
    for (y, means) in pixels.chunks_exact_mut(width as usize).enumerate() {
        down.fill(0);
        for dy in 0..bin_y {
            let row = &raw[(y * bin_y + dy) * stride..][..used];
            down.iter_mut()
                .zip(row)
                .for_each(|(d, &v)| *d += u16::from(v));
        }
        // The common block widths spelled out, so that each gets a loop of fixed length.
        match bin_x {
            2 => block_means(&down, 2, per_pixel, means),
            3 => block_means(&down, 3, per_pixel, means),
            4 => block_means(&down, 4, per_pixel, means),
            _ => block_means(&down, bin_x, per_pixel, means),
        }
    }
    BinnedRgb {
        width,
        height,
        pixels,
    }
}

/// The mean colour of each `bin_x`-pixel block of `down` (one row of column sums over the bin's
/// rows), into `means` (one row of blocks); `per_pixel` is the reciprocal of a block's pixel count.
/// A plain loop over slices (not `extend`), so that it is compiled into its caller's AVX2 version.
#[inline(always)]
fn block_means(down: &[u16], bin_x: usize, per_pixel: f32, means: &mut [[f32; 3]]) {
    for (mean, block) in means.iter_mut().zip(down.chunks_exact(bin_x * 3)) {
        let mut sum = [0u32; 3];
        for p in block.chunks_exact(3) {
            for (s, &v) in sum.iter_mut().zip(p) {
                *s += u32::from(v);
            }
        }
        *mean = sum.map(|s| s as f32 * per_pixel);
    }
}

/// r + g + b of a block, rounded (0..=765): what the bare-slide sampling ranks blocks by.
#[inline(always)]
fn brightness_of(p: &[f32; 3]) -> u16 {
    // Rounded half up (the sum is never negative): without SSE4.1, f32::round is a libm call.
    floor_within(p[0] + p[1] + p[2] + 0.5, 765.0)
}

/// `value` rounded down to a whole number within 0..=`max` (`max` below 2^22; NaN gives 0): what
/// `value.clamp(0.0, max) as u16` gives, in arithmetic the compiler vectorizes (a float-to-integer
/// cast saturates, and the compiler converts it one value at a time). Adding 2^23 rounds a float in
/// this range to the nearest whole number, and that sum's bits are the number's plus those of 2^23.
#[inline(always)]
fn floor_within(value: f32, max: f32) -> u16 {
    /// 2^23: from here to 2^24 every float is a whole number.
    const WHOLE: f32 = 8_388_608.0;
    let t = value.max(0.0).min(max);
    let nearest = (t + WHOLE) - WHOLE;
    let down = if nearest > t { nearest - 1.0 } else { nearest };
    ((down + WHOLE).to_bits() - WHOLE.to_bits()) as u16
}

/// Tiles the background is sampled in, working pixels: about 40 µm at the working scale, larger than
/// any white cell, so every tile shows some bare slide.
const WHITE_TILE: u32 = 112;
/// Bare slide is sampled at every `WHITE_STEP`-th pixel of every `WHITE_STEP`-th row: a quarter of
/// the pixels, about 2,000 in each tile of a 320 × 240 working frame.
const WHITE_STEP: usize = 2;
/// The brightest share of a tile's pixels is taken as its bare slide.
const WHITE_SHARE: f32 = 0.2;
/// A sample darker than this (sum of channels) is the edge of the field stop, not the slide.
const MIN_WHITE: f32 = 60.0;
/// The range of bare-slide brightness (r + g + b) the detectors learned under: 5 % to 95 % of the
/// TXL-PBC training frames (the mean of the brightest fifth of every other pixel, every third
/// frame; median 609; 2026-12-05). Where the lighting is dimmer or brighter than this, the
/// detector's input is brought to its nearest end; within it, the input is left as it is.
const DETECTOR_WHITE: Range<f32> = 530.0..688.0;

/// The colour of bare slide across a frame: the lamp's colour, and the fall-off of illumination
/// towards the corners. Bare slide is the brightest thing in brightfield: the lamp is the mean of the
/// frame's brightest pixels, and each tile's brightest pixels sample the illumination where they lie.
/// A smooth surface (quadratic where there are enough tiles, else a plane or a constant) is fitted to
/// those samples by least squares, so a cell-crowded tile or the frame's corner does not make a step.
pub(crate) struct BackgroundWhite {
    /// 1 / the lamp's colour, per channel.
    inv_lamp: [f32; 3],
    lamp_brightness: f32,
    illumination: Surface,
}

impl BackgroundWhite {
    pub(crate) fn estimate(img: &BinnedRgb) -> BackgroundWhite {
        let (whole, samples) = bright_samples(img);
        let lamp = whole.map_or([255.0; 3], |s| s.colour);
        let lamp_brightness = lamp.iter().sum::<f32>();
        let points: Vec<(f32, f32, f32)> = samples
            .iter()
            .map(|s| (s.x, s.y, s.colour.iter().sum::<f32>()))
            .collect();
        let illumination = Surface::fit(&points, img.width as f32, img.height as f32)
            .unwrap_or_else(|| Surface::constant(lamp_brightness));
        BackgroundWhite {
            inv_lamp: lamp.map(|c| 1.0 / c),
            lamp_brightness,
            illumination,
        }
    }

    /// The lamp's brightness over the illumination surface's reading `light` (at least
    /// `MIN_WHITE`): the lamp's colour divided by it is the bare slide's colour there. For
    /// [`Self::transmittance`].
    fn per_light(&self, light: f32) -> f32 {
        self.lamp_brightness.max(1.0) / light.max(MIN_WHITE)
    }

    /// For each pixel of the detector's side × side input, the whole `covered` (width, height) frame
    /// pixels stretched to it, the factor that brings bare slide there within `DETECTOR_WHITE` (1
    /// where it already is): the illumination surface read at that input pixel's centre, in working
    /// pixels of `bin` frame pixels. Row by row, like the stain channel.
    pub(crate) fn detector_gain(
        &self,
        side: usize,
        (width, height): (f32, f32),
        bin: u32,
    ) -> Vec<f32> {
        let working =
            |len: f32| move |i: usize| (i as f32 + 0.5) * len / (side * bin as usize) as f32;
        let columns: Vec<ColumnTerms> = (0..side)
            .map(working(width))
            .map(|x| self.illumination.column_terms(x))
            .collect();
        let mut gain = Vec::with_capacity(side * side);
        for y in (0..side).map(working(height)) {
            let row = self.illumination.row_terms(y);
            gain.extend(columns.iter().map(|column| {
                let light = row.at(column).max(MIN_WHITE);
                light.clamp(DETECTOR_WHITE.start, DETECTOR_WHITE.end) / light
            }));
        }
        gain
    }

    /// Transmittance per channel (1 = bare slide) of a pixel where the light's scale (see
    /// [`Self::per_light`]) is `per_light`: the pixel divided by the bare-slide colour there (the
    /// lamp's colour scaled by it, each channel at least 1), so the measure does not change with the
    /// lamp's brightness. The lamp's reciprocals are worked out once per frame.
    fn transmittance(&self, pixel: [f32; 3], per_light: f32) -> [f32; 3] {
        let mut out = [0.0; 3];
        for ((t, p), inv_lamp) in out.iter_mut().zip(pixel).zip(self.inv_lamp) {
            // white = max(lamp / per_light, 1), so p / white = p × min(per_light / lamp, 1).
            *t = p * (per_light * inv_lamp).min(1.0);
        }
        out
    }
}

/// The brightest pixels of a region: their mean colour and where they lie.
struct BrightSample {
    x: f32,
    y: f32,
    colour: [f32; 3],
}

/// Running sums over a region's bright pixels. The pixels' places are summed as whole numbers
/// (their centres lie half a pixel further on): integer additions do not wait on one another the way
/// float additions do, and the sums are exact.
#[derive(Clone, Copy, Default)]
struct BrightSum {
    colour: [f32; 3],
    /// Sum of the pixels' columns.
    x: u64,
    /// Sum of the pixels' rows.
    y: u64,
    n: u32,
    /// `n` when the current row began (see [`Self::end_row`]).
    n_at_row_start: u32,
}

impl BrightSum {
    #[inline(always)]
    fn add(&mut self, x: usize, pixel: [f32; 3]) {
        for (s, v) in self.colour.iter_mut().zip(pixel) {
            *s += v;
        }
        self.x += x as u64;
        self.n += 1;
    }

    /// Counts the pixels added since the last call as lying in row `y`.
    #[inline(always)]
    fn end_row(&mut self, y: usize) {
        self.y += u64::from(self.n - self.n_at_row_start) * y as u64;
        self.n_at_row_start = self.n;
    }

    /// Mean colour and centroid (of the pixels' centres); none when there were no pixels or they
    /// are too dark to be bare slide.
    fn sample(&self) -> Option<BrightSample> {
        let n = self.n as f32;
        let colour = self.colour.map(|s| s / n.max(1.0));
        let centre = |sum: u64| (sum as f32 + 0.5 * n) / n;
        (self.n > 0 && colour.iter().sum::<f32>() >= MIN_WHITE).then(|| BrightSample {
            x: centre(self.x),
            y: centre(self.y),
            colour,
        })
    }
}

/// Brightness histogram of a region (r + g + b, 0..=765).
type BrightnessHistogram = [u32; 766];

/// The lowest brightness of a region's brightest `WHITE_SHARE` of pixels.
fn bright_threshold(hist: &BrightnessHistogram) -> usize {
    let total: u32 = hist.iter().sum();
    let wanted = ((total as f32 * WHITE_SHARE).ceil() as u32).max(1);
    let (mut taken, mut threshold) = (0u32, 765usize);
    while threshold > 0 && taken + hist[threshold] < wanted {
        taken += hist[threshold];
        threshold -= 1;
    }
    threshold
}

/// The span of each tile along one axis: `tiles` tiles across `len` pixels, tile `t` covering
/// `t·len/tiles .. (t+1)·len/tiles`.
fn tile_spans(len: u32, tiles: u32) -> Vec<Range<usize>> {
    (0..tiles)
        .map(|t| (t * len / tiles) as usize..((t + 1) * len / tiles) as usize)
        .collect()
}

/// The brightest pixels of the whole frame, and of each `WHITE_TILE` tile (row by row) where they
/// are light enough to be bare slide, among the pixels `WHITE_STEP` apart across and down. Two
/// passes over those for all of them: one for the tiles' histograms (the frame's is their sum), tile
/// by tile, and one for the sums over the bright pixels, which goes along each row one tile's span
/// at a time, so a tile's threshold is looked up once per span rather than per pixel.
#[multiversion::multiversion(targets("x86_64+avx2"))]
fn bright_samples(img: &BinnedRgb) -> (Option<BrightSample>, Vec<BrightSample>) {
    let tiles_x = img.width.div_ceil(WHITE_TILE).max(1);
    let tiles_y = img.height.div_ceil(WHITE_TILE).max(1);
    let width = img.width as usize;
    // The sampled pixels as a grid of their own, `columns` × `rows`; tiles' spans in its places.
    let (columns, rows) = (
        width.div_ceil(WHITE_STEP),
        (img.height as usize).div_ceil(WHITE_STEP),
    );
    let sampled =
        |span: Range<usize>| span.start.div_ceil(WHITE_STEP)..span.end.div_ceil(WHITE_STEP);
    let spans_x: Vec<Range<usize>> = tile_spans(img.width, tiles_x)
        .into_iter()
        .map(sampled)
        .collect();
    // Row by row: a flattened iterator here costs more than the sums it feeds.
    let mut brightness: Vec<u16> = Vec::with_capacity(columns * rows);
    for row in img.pixels.chunks_exact(width.max(1)).step_by(WHITE_STEP) {
        brightness.extend(row.iter().step_by(WHITE_STEP).map(brightness_of));
    }
    // Each row of tiles: the index of its first tile, and its sampled rows.
    let tile_rows = || {
        tile_spans(img.height, tiles_y)
            .into_iter()
            .enumerate()
            .map(move |(ty, ys)| (ty * tiles_x as usize, sampled(ys)))
    };
    // Sized up front: collected from the nested iterator, the vector of 3 KB histograms would
    // grow, and move them, several times a frame.
    let mut hists: Vec<BrightnessHistogram> = Vec::with_capacity((tiles_x * tiles_y) as usize);
    hists.extend(
        tile_rows()
            .flat_map(|(_, ys)| spans_x.iter().map(move |xs| (xs.clone(), ys.clone())))
            .map(|tile| histogram_of_tile(&brightness, columns, tile)),
    );
    let mut whole_hist = [0u32; 766];
    for hist in &hists {
        for (w, h) in whole_hist.iter_mut().zip(hist) {
            *w += h;
        }
    }
    let whole_threshold = bright_threshold(&whole_hist);
    let thresholds: Vec<usize> = hists.iter().map(bright_threshold).collect();
    let mut whole = BrightSum::default();
    let mut sums = vec![BrightSum::default(); hists.len()];
    for (first, sampled_rows) in tile_rows() {
        for row in sampled_rows {
            let y = row * WHITE_STEP;
            let brightness = &brightness[row * columns..(row + 1) * columns];
            let pixels = &img.pixels[y * width..(y + 1) * width];
            for ((tile_sum, &threshold), span) in sums[first..]
                .iter_mut()
                .zip(&thresholds[first..])
                .zip(&spans_x)
            {
                // Summed in a local copy, which stays in registers across the span.
                let mut sum = *tile_sum;
                for column in span.clone() {
                    let x = column * WHITE_STEP;
                    let (b, pixel) = (brightness[column] as usize, pixels[x]);
                    if b >= whole_threshold {
                        whole.add(x, pixel);
                    }
                    if b >= threshold {
                        sum.add(x, pixel);
                    }
                }
                whole.end_row(y);
                sum.end_row(y);
                *tile_sum = sum;
            }
        }
    }
    (
        whole.sample(),
        sums.iter().filter_map(BrightSum::sample).collect(),
    )
}

/// Brightness histogram of the tile `xs` × `ys` of a `width`-wide brightness image. Counted into
/// four histograms in turn and added up after: on a flat background most pixels fall in one bin,
/// and counting them all into one would make each count wait for the one before.
#[inline(always)]
fn histogram_of_tile(
    brightness: &[u16],
    width: usize,
    (xs, ys): (Range<usize>, Range<usize>),
) -> BrightnessHistogram {
    let mut counts = [[0u32; 766]; 4];
    for y in ys {
        // Brightness is at most 765; the `min` spares a bounds check per pixel.
        let (quads, rest) = brightness[y * width..][xs.clone()].as_chunks::<4>();
        for &b in rest {
            counts[0][usize::from(b).min(765)] += 1;
        }
        for quad in quads {
            for (count, &b) in counts.iter_mut().zip(quad) {
                count[usize::from(b).min(765)] += 1;
            }
        }
    }
    let mut hist = [0u32; 766];
    for count in &counts {
        for (h, c) in hist.iter_mut().zip(count) {
            *h += c;
        }
    }
    hist
}

/// A smooth function of position, `c0 + c1 u + c2 v + c3 u² + c4 uv + c5 v²` with u, v the position
/// scaled to -1..1 across the frame.
struct Surface {
    coefficients: [f32; 6],
    half_w: f32,
    half_h: f32,
}

impl Surface {
    fn constant(value: f32) -> Surface {
        Surface {
            coefficients: [value, 0.0, 0.0, 0.0, 0.0, 0.0],
            half_w: 1.0,
            half_h: 1.0,
        }
    }

    /// Least-squares fit to (x, y, value) points in a width × height frame: quadratic from 9 points,
    /// a plane from 3, else none.
    fn fit(points: &[(f32, f32, f32)], width: f32, height: f32) -> Option<Surface> {
        let terms = match points.len() {
            n if n >= 9 => 6,
            n if n >= 3 => 3,
            _ => return None,
        };
        let (half_w, half_h) = (width / 2.0, height / 2.0);
        let basis = |x: f32, y: f32| {
            let (u, v) = (x / half_w - 1.0, y / half_h - 1.0);
            [1.0, u, v, u * u, u * v, v * v]
        };
        // Normal equations A·c = b in f64.
        let mut a = [[0f64; 6]; 6];
        let mut b = [0f64; 6];
        for &(x, y, value) in points {
            let f = basis(x, y);
            for i in 0..terms {
                b[i] += (f[i] * value) as f64;
                for j in 0..terms {
                    a[i][j] += (f[i] * f[j]) as f64;
                }
            }
        }
        let solved = solve(&mut a, &mut b, terms)?;
        let mut coefficients = [0f32; 6];
        for (c, s) in coefficients.iter_mut().zip(solved) {
            *c = s as f32;
        }
        Some(Surface {
            coefficients,
            half_w,
            half_h,
        })
    }

    /// The surface's own coordinates (-1 to 1 across the frame) of a column and of a row.
    fn u(&self, x: f32) -> f32 {
        x / self.half_w - 1.0
    }
    fn v(&self, y: f32) -> f32 {
        y / self.half_h - 1.0
    }

    /// The surface's value at surface coordinates (see `u` and `v`), term by term.
    #[cfg(test)]
    fn at_uv(&self, u: f32, v: f32) -> f32 {
        let c = &self.coefficients;
        c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v
    }

    /// The terms of the column at pixel coordinate `x`, for [`RowTerms::at`].
    fn column_terms(&self, x: f32) -> ColumnTerms {
        let (c, u) = (&self.coefficients, self.u(x));
        ColumnTerms {
            u,
            in_u: c[1] * u + c[3] * u * u,
        }
    }

    /// The terms of the row at pixel coordinate `y`, for [`RowTerms::at`].
    fn row_terms(&self, y: f32) -> RowTerms {
        let (c, v) = (&self.coefficients, self.v(y));
        RowTerms {
            constant: c[0] + c[2] * v + c[5] * v * v,
            per_u: c[4] * v,
        }
    }
}

/// A surface's terms that depend on u alone, for one column.
struct ColumnTerms {
    u: f32,
    in_u: f32,
}

/// A surface's terms that depend on v alone, for one row: with a column's terms, its value there
/// in three operations (the surface is evaluated at every pixel).
struct RowTerms {
    constant: f32,
    per_u: f32,
}

impl RowTerms {
    fn at(&self, column: &ColumnTerms) -> f32 {
        self.constant + column.in_u + self.per_u * column.u
    }
}

/// Solves the first `n` rows and columns of a·x = b by Gaussian elimination with partial pivoting;
/// none when the system is singular (samples all on one line, say).
fn solve(a: &mut [[f64; 6]; 6], b: &mut [f64; 6], n: usize) -> Option<[f64; 6]> {
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..n {
            let factor = a[row][col] / pivot_row[col];
            for (value, above) in a[row][col..n].iter_mut().zip(&pivot_row[col..n]) {
                *value -= factor * above;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = [0f64; 6];
    for row in (0..n).rev() {
        let rest: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localize::tests::{dim_yellow, synthetic_frame, xorshift};
    use image::Rgb;

    #[test]
    fn lamp_colour_and_fall_off_are_divided_out() {
        let bare = RgbImage::from_pixel(240, 160, Rgb([228, 222, 214]));
        let stain = stain_channel(&dim_yellow(&bare), 1);
        let (lo, hi) = stain
            .pixels()
            .fold((255u8, 0u8), |(lo, hi), p| (lo.min(p.0[0]), hi.max(p.0[0])));
        // Bare slide is transmittance 1 in every channel: 255 × (2 + 1 − 1 − 1) / 3 = 85, in the
        // dim corner as in the bright one (uncorrected, the dim edge reads 30 levels higher).
        assert!(lo >= 82 && hi <= 88, "bare slide stain ranges {lo}..{hi}");
        // A nucleus reads the same under a lamp turned down to 60 %.
        let mut frame = synthetic_frame();
        let bright = stain_channel(&frame, 1).get_pixel(120, 90).0[0] as i32;
        frame
            .pixels_mut()
            .for_each(|p| p.0 = p.0.map(|v| (v as f32 * 0.6) as u8));
        let dim = stain_channel(&frame, 1).get_pixel(120, 90).0[0] as i32;
        assert!(
            (bright - dim).abs() <= 3,
            "nucleus {bright} bright, {dim} dim"
        );
    }

    /// The detector's input gain of a frame (side 8, the frame itself as the working frame).
    fn detector_gain_of(frame: &RgbImage) -> Vec<f32> {
        let binned = binned_rgb(frame, 1);
        let size = (frame.width() as f32, frame.height() as f32);
        BackgroundWhite::estimate(&binned).detector_gain(8, size, 1)
    }

    #[test]
    fn the_detector_sees_lighting_outside_its_training_range_brought_to_its_ends() {
        // Bare slide within the range (r + g + b = 664): the input is left as it is.
        let usual = detector_gain_of(&RgbImage::from_pixel(240, 160, Rgb([228, 222, 214])));
        assert!(usual.iter().all(|&g| (g - 1.0).abs() < 1e-3), "{usual:?}");
        // A lamp turned down to 60 % (398): brought up to the range's dim end, 530.
        let dim = detector_gain_of(&RgbImage::from_pixel(240, 160, Rgb([137, 133, 128])));
        assert!(
            dim.iter().all(|&g| (g - 530.0 / 398.0).abs() < 0.01),
            "{dim:?}"
        );
        // Brighter than the range (750): brought down to its bright end, 688.
        let bright = detector_gain_of(&RgbImage::from_pixel(240, 160, Rgb([252, 250, 248])));
        assert!(
            bright.iter().all(|&g| (g - 688.0 / 750.0).abs() < 0.01),
            "{bright:?}"
        );
        // A yellow lamp falling off to 55 % at the left edge: lifted most at the left, where the
        // light is dimmest, and left as it is at the right, where it is within the range.
        let uneven = detector_gain_of(&dim_yellow(&RgbImage::from_pixel(
            240,
            160,
            Rgb([228, 222, 214]),
        )));
        assert_eq!(uneven.len(), 64);
        let row = &uneven[24..32];
        assert!(row[0] > 1.5 && row[7] < 1.01, "{row:?}");
        assert!(row.windows(2).all(|pair| pair[0] >= pair[1]), "{row:?}");
    }

    #[test]
    fn binning_is_the_mean_of_each_whole_block() {
        let mut state = 0x9e37_79b9u32;
        let frame = RgbImage::from_fn(41, 23, |_, _| {
            let v = xorshift(&mut state);
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        });
        for bin in [1, 3, 16, 30] {
            let binned = binned_rgb(&frame, bin);
            let (bx, by) = (bin.min(41), bin.min(23));
            assert_eq!(
                (binned.width, binned.height),
                ((41 / bin).max(1), (23 / bin).max(1))
            );
            for (y, x) in (0..binned.height).flat_map(|y| (0..binned.width).map(move |x| (y, x))) {
                let mut sum = [0u32; 3];
                for (px, py) in
                    (0..by).flat_map(|dy| (0..bx).map(move |dx| (x * bx + dx, y * by + dy)))
                {
                    for (s, &v) in sum.iter_mut().zip(&frame.get_pixel(px, py).0) {
                        *s += u32::from(v);
                    }
                }
                let mean = sum.map(|s| s as f32 / (bx * by) as f32);
                // The mean is taken as a product with the reciprocal of the count: within a
                // rounding of the division.
                let got = binned.at(x, y);
                for (g, m) in got.iter().zip(mean) {
                    assert!(
                        (g - m).abs() <= 1e-6 * m.max(1.0),
                        "bin {bin} at ({x}, {y})"
                    );
                }
                let brightness = (mean.iter().sum::<f32>()).round() as usize;
                assert_eq!(
                    binned.brightness_at(x, y),
                    brightness,
                    "bin {bin} at ({x}, {y})"
                );
            }
        }
    }

    /// The bright sample of one region, worked out directly (the rule `bright_samples` applies to
    /// the frame and to every tile in two passes).
    fn bright_sample_of(
        img: &BinnedRgb,
        xs: std::ops::Range<u32>,
        ys: std::ops::Range<u32>,
    ) -> Option<BrightSample> {
        let step = WHITE_STEP as u32;
        let (xs, ys) = (xs.filter(|x| x % step == 0), ys.filter(|y| y % step == 0));
        let mut hist = [0u32; 766];
        for y in ys.clone() {
            for x in xs.clone() {
                hist[img.brightness_at(x, y)] += 1;
            }
        }
        let threshold = bright_threshold(&hist);
        let mut sum = BrightSum::default();
        for y in ys {
            for x in xs.clone() {
                if img.brightness_at(x, y) >= threshold {
                    sum.add(x as usize, img.at(x, y));
                }
            }
            sum.end_row(y as usize);
        }
        sum.sample()
    }

    #[test]
    fn bright_sum_gives_the_mean_colour_and_the_centre_of_the_pixels() {
        let mut sum = BrightSum::default();
        // Two pixels in row 3 (columns 4 and 7), one in row 10 (column 1).
        sum.add(4, [200.0, 180.0, 190.0]);
        sum.add(7, [210.0, 190.0, 170.0]);
        sum.end_row(3);
        sum.add(1, [190.0, 170.0, 180.0]);
        sum.end_row(10);
        let sample = sum.sample().unwrap();
        assert_eq!(sample.colour, [200.0, 180.0, 180.0]);
        assert_eq!(sample.x, (4.5 + 7.5 + 1.5) / 3.0);
        assert_eq!(sample.y, (3.5 + 3.5 + 10.5) / 3.0);
        let mut dark = BrightSum::default();
        dark.add(0, [10.0, 10.0, 10.0]);
        dark.end_row(0);
        assert!(dark.sample().is_none(), "darker than bare slide");
        assert!(BrightSum::default().sample().is_none(), "no pixels");
    }

    #[test]
    fn floor_within_is_the_clamped_cast() {
        let cast = |v: f32, max: f32| v.clamp(0.0, max) as u16;
        // Every whole number and half of 0..=765 and the floats on either side of them, a spread
        // of bit patterns over the range, and values outside it.
        let mut values = vec![-1.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e9];
        for k in 0..=2 * 766 {
            let v = k as f32 * 0.5;
            values.extend([v, v.next_up(), v.next_down()]);
        }
        values.extend((0..=765f32.to_bits()).step_by(9973).map(f32::from_bits));
        for max in [255.0, 765.0] {
            for &v in &values {
                assert_eq!(floor_within(v, max), cast(v, max), "{v} within 0..={max}");
            }
        }
    }

    #[test]
    fn tile_histogram_counts_each_pixel_of_the_tile_once() {
        let mut state = 0x9e37_79b9u32;
        // A flat left half (one bin) and speckle on the right, 37 wide so the spans' lengths are
        // not multiples of four.
        let (width, height) = (37usize, 11usize);
        let brightness: Vec<u16> = (0..width * height)
            .map(|i| {
                let v = xorshift(&mut state) % 766;
                if i % width < 18 {
                    600
                } else {
                    v as u16
                }
            })
            .collect();
        for (xs, ys) in [(0..37, 0..11), (3..30, 2..9), (5..6, 4..5), (7..7, 0..11)] {
            let mut direct = [0u32; 766];
            for y in ys.clone() {
                for x in xs.clone() {
                    direct[brightness[y * width + x] as usize] += 1;
                }
            }
            let counted = histogram_of_tile(&brightness, width, (xs, ys));
            assert!(counted == direct);
        }
    }

    #[test]
    fn bright_samples_are_those_of_the_frame_and_of_each_tile() {
        let mut state = 0x2545_f491u32;
        // 300 × 250 pixels: 3 × 3 tiles of unequal sizes; a dark band leaves the top row of tiles
        // too dark to be bare slide.
        let frame = RgbImage::from_fn(300, 250, |_, y| {
            let v = xorshift(&mut state);
            let top = if y < 83 { 16 } else { 1 };
            image::Rgb([0, 8, 16].map(|s| ((v >> s) as u8) / top))
        });
        let img = binned_rgb(&frame, 1);
        let (whole, tiles) = bright_samples(&img);
        let same =
            |a: &BrightSample, b: &BrightSample| (a.x, a.y, a.colour) == (b.x, b.y, b.colour);
        assert!(same(
            &whole.unwrap(),
            &bright_sample_of(&img, 0..300, 0..250).unwrap()
        ));
        let bounds = [(0, 100), (100, 200), (200, 300)];
        let rows = [(0, 83), (83, 166), (166, 250)];
        let direct: Vec<BrightSample> = rows
            .iter()
            .flat_map(|&(y0, y1)| bounds.iter().map(move |&(x0, x1)| (x0..x1, y0..y1)))
            .filter_map(|(xs, ys)| bright_sample_of(&img, xs, ys))
            .collect();
        assert_eq!(direct.len(), 6, "the top row of tiles is too dark");
        assert_eq!(tiles.len(), direct.len());
        assert!(tiles.iter().zip(&direct).all(|(a, b)| same(a, b)));
        assert_eq!(tile_spans(250, 3), [0..83, 83..166, 166..250]);
    }

    #[test]
    fn row_and_column_terms_give_the_surface() {
        let surface = Surface {
            coefficients: [600.0, -12.0, 7.5, -30.0, 4.0, -22.0],
            half_w: 213.0,
            half_h: 160.0,
        };
        for (x, y) in [(0.5, 0.5), (100.5, 37.5), (425.5, 319.5), (213.0, 160.0)] {
            let split = surface.row_terms(y).at(&surface.column_terms(x));
            let whole = surface.at_uv(surface.u(x), surface.v(y));
            assert!(
                (split - whole).abs() < 1e-3,
                "({x}, {y}): {split} against {whole}"
            );
        }
    }
}
