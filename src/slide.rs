//! The virtual slide: a large smear-like mosaic of real, expert-labelled cell crops with every cell's
//! position and class known, and a simulated stage that pans across it in a zigzag with overlap,
//! pauses, fast moves (with motion blur) and illumination drift. It is the default demo source and
//! the ground truth for counting tests.
//!
//! Cells come from `../shared/data/marrow` when present, otherwise from the small atlas of real
//! marrow crops built into the binary (`models/demo-atlas.jpg`, CC BY 4.0, Matek et al. 2021).

use crate::source::{read_rgb, Frame, FrameSource, SourceError};
use image::{imageops, Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Scale of the marrow crops (and so of the virtual slide), µm per pixel, estimated from red-cell
/// diameters (about 7.5 µm over about 75 px at 192 px crops).
pub const SLIDE_UM_PER_PX: f32 = 0.1;

/// The demo atlas: real marrow crops, 192 px each, one column per class. Built into the binary by the
/// default `embedded-atlas` feature; board builds leave it out (0.3 MB) and read the file instead.
#[cfg(feature = "embedded-atlas")]
const ATLAS_JPEG: &[u8] = include_bytes!("../models/demo-atlas.jpg");
/// Where a build without the embedded atlas looks for it: `$MARROWSCOPE_ATLAS`, else this path under
/// the working folder, else the install location of `board/INSTALL.md`.
#[cfg(not(feature = "embedded-atlas"))]
const ATLAS_PATHS: [&str; 2] = [
    "models/demo-atlas.jpg",
    "/usr/local/share/marrowscope/demo-atlas.jpg",
];
/// Class code of each atlas column, and the crop side.
const ATLAS_CLASSES: [&str; 8] = ["ART", "BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"];
const ATLAS_CELL: u32 = 192;

/// A labelled cell picture used to populate the slide.
#[derive(Clone)]
pub struct Sprite {
    pub class: String,
    pub image: RgbImage,
}

/// One cell placed on the slide.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideCell {
    pub id: u32,
    pub class: String,
    /// Centre in slide pixels.
    pub x: f32,
    pub y: f32,
}

/// Settings of a virtual slide and its stage path.
#[derive(Debug, Clone)]
pub struct SlideOptions {
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub frame_width: u32,
    pub frame_height: u32,
    /// Stage speed in pixels per frame during normal panning.
    pub step: f32,
    /// Distance between neighbouring white cells on the slide's jittered grid, in pixels (one in
    /// five grid places is left empty). 215 px puts about 19 white cells in a 1280×960 frame.
    pub cell_spacing: f32,
}

impl SlideOptions {
    pub fn new(seed: u64) -> SlideOptions {
        SlideOptions {
            seed,
            width: 6000,
            height: 4000,
            frame_width: 1280,
            frame_height: 960,
            step: 96.0,
            cell_spacing: 215.0,
        }
    }
}

/// Small deterministic PRNG (SplitMix64) so a seed always gives the same slide.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The atlas's JPEG bytes and where they came from.
#[cfg(feature = "embedded-atlas")]
fn atlas_jpeg() -> Result<(std::borrow::Cow<'static, [u8]>, String), SourceError> {
    Ok((ATLAS_JPEG.into(), "built-in atlas".to_string()))
}

#[cfg(not(feature = "embedded-atlas"))]
fn atlas_jpeg() -> Result<(std::borrow::Cow<'static, [u8]>, String), SourceError> {
    let candidates: Vec<std::path::PathBuf> = std::env::var_os("MARROWSCOPE_ATLAS")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(ATLAS_PATHS.iter().map(std::path::PathBuf::from))
        .collect();
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok((bytes.into(), path.display().to_string()));
        }
    }
    Err(SourceError::Decode(format!(
        "the virtual slide needs real crops: none in ../shared/data or $MARROWSCOPE_DATA, and no \
         demo atlas at $MARROWSCOPE_ATLAS or {}",
        ATLAS_PATHS.join(" or ")
    )))
}

/// Sprites from the demo atlas.
pub fn atlas_sprites() -> Result<Vec<Sprite>, SourceError> {
    let (jpeg, origin) = atlas_jpeg()?;
    let atlas = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .map_err(|e| SourceError::Decode(format!("{origin}: {e}")))?
        .to_rgb8();
    let mut sprites = Vec::new();
    for (col, class) in ATLAS_CLASSES.iter().enumerate() {
        for row in 0..atlas.height() / ATLAS_CELL {
            let image = imageops::crop_imm(
                &atlas,
                col as u32 * ATLAS_CELL,
                row * ATLAS_CELL,
                ATLAS_CELL,
                ATLAS_CELL,
            )
            .to_image();
            sprites.push(Sprite {
                class: class.to_string(),
                image,
            });
        }
    }
    Ok(sprites)
}

/// Sprites from a folder with one sub-folder of crops per class code; `per_class` picked per class
/// by the seed.
pub fn folder_sprites(
    root: &Path,
    per_class: usize,
    seed: u64,
) -> Result<Vec<Sprite>, SourceError> {
    let mut rng = Rng::new(seed);
    let mut sprites = Vec::new();
    let folders = crate::eval::class_folders(root).map_err(|e| SourceError::Open {
        path: root.display().to_string(),
        message: e.to_string(),
    })?;
    let vetter = SingleCellVetter::new();
    for (class, mut files) in folders {
        files.sort();
        let (mut kept, mut skipped) = (0, 0);
        while kept < per_class && !files.is_empty() {
            let i = rng.below(files.len());
            let image = read_rgb(&files.swap_remove(i))?;
            if !vetter.shows_one_centred_cell(&image) {
                skipped += 1;
                continue;
            }
            kept += 1;
            sprites.push(Sprite {
                class: class.clone(),
                image,
            });
        }
        if skipped > 0 {
            log::info!(
                "virtual slide: {skipped} {class} picture(s) skipped, not one centred cell \
                 ({kept} kept)"
            );
        }
    }
    if sprites.is_empty() {
        return Err(SourceError::Open {
            path: root.display().to_string(),
            message: "no class folders with images".into(),
        });
    }
    Ok(sprites)
}

/// Decides which cell pictures may populate the slide. The slide's truth says "one white cell here"
/// for every picture it pastes, so a picture must show exactly that: Matek crops are cut around a
/// cell from a real smear and some hold a neighbour's nucleus, two naked nuclei filed as one artefact,
/// or no stained nucleus at all. A picture is kept when the localizer, run on it pasted alone on its
/// own smear colour exactly as the slide pastes it, finds one complete cell within the distance
/// count-eval matches by ([`crate::counteval::MATCH_UM`]) of its centre. The localizer's own errors
/// on real smears are measured by `detect-eval`; this keeps them out of the counting test.
///
/// A picture must also pass with the smallest accepted nucleus made 1.5 times larger in area: a
/// faint smudge or a clump of granules just above the localizer's limits on its own can fall below
/// them on the slide (another smear colour, red cells nearby, the lamp's drift), and the slide would
/// then hold a cell nobody could count. And it must pass with that nucleus made 1.5 times smaller:
/// a neighbour's nucleus cut by the picture's rim, just below the limits on its own, can rise above
/// them in a frame whose mix of cells sets a lower nuclear threshold, and the slide would then hold
/// two cells where its truth says one.
pub struct SingleCellVetter {
    localizers: [crate::localize::Localizer; 3],
}

/// How much larger (and smaller) in area the smallest nucleus is for the second (and third) look.
const VET_AREA_MARGIN: f32 = 1.5;

impl SingleCellVetter {
    pub fn new() -> SingleCellVetter {
        // Default settings, not a board profile's, so a seed always gives the same slide.
        let normal = crate::config::LocalizerConfig::default();
        let strict = crate::config::LocalizerConfig {
            min_nucleus_um: normal.min_nucleus_um * VET_AREA_MARGIN.sqrt(),
            ..normal.clone()
        };
        let lenient = crate::config::LocalizerConfig {
            min_nucleus_um: normal.min_nucleus_um / VET_AREA_MARGIN.sqrt(),
            ..normal.clone()
        };
        let localizers =
            [normal, strict, lenient].map(|cfg| crate::localize::Localizer::new(cfg, 1.0));
        SingleCellVetter { localizers }
    }

    /// True when the picture passes in all three settings: pasted alone, and as each copy of a 3 × 3
    /// patch of its copies (each turned another quarter, as the slide turns them) at the slide's
    /// cell spacing, which gives the frame-wide nuclear threshold a field of cells as on the slide.
    pub fn shows_one_centred_cell(&self, picture: &RgbImage) -> bool {
        let side = picture.width().max(picture.height()) as f32;
        let background = border_median([picture]);
        let spacing = SlideOptions::new(0).cell_spacing;
        let alone = (side * 1.5).round() as u32;
        let patch = (2.0 * spacing + side * 1.5).round() as u32;
        [(alone, 1), (patch, 3)].into_iter().all(|(field_side, n)| {
            let (field, places) = paste_grid(picture, background, field_side, n, spacing);
            self.shows_one_cell_at_each(&field, &places, side)
        })
    }

    /// True when, in all three settings, exactly one whole cell of `field` lies within what a picture
    /// of side `side` pasted at each of `places` shows, within count-eval's matching distance of it.
    fn shows_one_cell_at_each(&self, field: &RgbImage, places: &[(f32, f32)], side: f32) -> bool {
        self.localizers.iter().all(|localizer| {
            let cells = localizer.localize(field, SLIDE_UM_PER_PX).cells;
            places.iter().all(|&place| one_cell_at(&cells, place, side))
        })
    }

    /// The pictures that pass, in order; logs how many of each class did not.
    pub fn keep_single_cells(&self, sprites: Vec<Sprite>) -> Vec<Sprite> {
        let before = sprites.len();
        let kept: Vec<Sprite> = sprites
            .into_iter()
            .filter(|s| self.shows_one_centred_cell(&s.image))
            .collect();
        if kept.len() < before {
            log::info!(
                "virtual slide: {} of {before} pictures skipped, not one centred cell",
                before - kept.len()
            );
        }
        kept
    }
}

impl Default for SingleCellVetter {
    fn default() -> Self {
        Self::new()
    }
}

/// A square field of `side` pixels on the smear colour with an n × n grid of the picture, `spacing`
/// apart around the middle, the k-th copy turned k quarter turns; and where each copy's centre is.
fn paste_grid(
    picture: &RgbImage,
    background: Rgb<u8>,
    side: u32,
    n: u32,
    spacing: f32,
) -> (RgbImage, Vec<(f32, f32)>) {
    let mut field = RgbImage::from_pixel(side, side, background);
    let middle = side as f32 / 2.0;
    let offset = |i: u32| middle + (i as f32 - (n - 1) as f32 / 2.0) * spacing;
    let mut places = Vec::new();
    for row in 0..n {
        for col in 0..n {
            let turns = ((row * n + col) % 4) as u8;
            paste_cell(&mut field, picture, turns, offset(col), offset(row));
            places.push((offset(col), offset(row)));
        }
    }
    (field, places)
}

/// True when exactly one of `cells` lies within the shown part of a picture of side `side` pasted
/// at `place`, whole, and within count-eval's matching distance of `place`.
fn one_cell_at(cells: &[crate::localize::Cell], place: (f32, f32), side: f32) -> bool {
    let from_place = |(x, y): (f32, f32)| ((x - place.0).powi(2) + (y - place.1).powi(2)).sqrt();
    // What of a pasted picture shows: its soft round mask, feather included.
    let shown = side * 0.48;
    let reach = crate::counteval::MATCH_UM / SLIDE_UM_PER_PX;
    let mut inside = cells.iter().filter(|c| from_place(c.centre) <= shown);
    match (inside.next(), inside.next()) {
        (Some(cell), None) => cell.complete && from_place(cell.centre) <= reach,
        _ => false,
    }
}

/// Where the real data lives: `$MARROWSCOPE_DATA` when set (a folder without `marrow/` then means
/// "use the built-in atlas"), else `../shared/data` beside the working directory or the source tree.
pub fn data_root() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MARROWSCOPE_DATA") {
        let p = PathBuf::from(p);
        return p.join("marrow").is_dir().then_some(p);
    }
    [
        PathBuf::from("../shared/data"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    ]
    .into_iter()
    .find(|p| p.join("marrow").is_dir())
}

/// A slide with its ground truth: where every red cell and every white cell lies. Frames are
/// rendered from this description on demand, so a large slide costs little memory.
pub struct VirtualSlide {
    pub width: u32,
    pub height: u32,
    pub cells: Vec<SlideCell>,
    pub um_per_px: f32,
    background: Rgb<u8>,
    /// Red cells: centre and radius, slide pixels.
    red_cells: Vec<(f32, f32, f32)>,
    /// The cell pictures, each stored once.
    sprites: Vec<RgbImage>,
    /// For each white cell, in `cells` order: its picture and how many quarter turns it is turned.
    pictures: Vec<(usize, u8)>,
}

impl VirtualSlide {
    /// Lays out a slide: red cells scattered on a smear-coloured background, white cells from
    /// `sprites` on a jittered grid with gaps, each turned by a random quarter.
    pub fn compose(sprites: &[Sprite], opts: &SlideOptions) -> VirtualSlide {
        let mut rng = Rng::new(opts.seed);
        let background = border_median(sprites.iter().map(|s| &s.image));
        let n_rbc = (opts.width as usize * opts.height as usize) / 30000;
        let red_cells = (0..n_rbc)
            .map(|_| {
                let (cx, cy) = (
                    rng.unit() * opts.width as f32,
                    rng.unit() * opts.height as f32,
                );
                (cx, cy, 33.0 + rng.unit() * 8.0)
            })
            .collect();
        let spacing = opts.cell_spacing;
        let margin = edge_margin(sprites);
        let mut cells = Vec::new();
        let mut pictures = Vec::new();
        let mut y = margin;
        while y < opts.height as f32 - margin {
            let mut x = margin + rng.unit() * 60.0;
            while x < opts.width as f32 - margin {
                let (cx, cy) = (x + rng.unit() * 40.0 - 20.0, y + rng.unit() * 40.0 - 20.0);
                // Leave some gaps, as on a real smear.
                if rng.unit() < 0.8 {
                    let k = rng.below(sprites.len());
                    pictures.push((k, rng.below(4) as u8));
                    cells.push(SlideCell {
                        id: cells.len() as u32,
                        class: sprites[k].class.clone(),
                        x: cx,
                        y: cy,
                    });
                }
                x += spacing + rng.unit() * 40.0;
            }
            y += spacing + rng.unit() * 30.0;
        }
        let mut slide = VirtualSlide {
            width: opts.width,
            height: opts.height,
            cells,
            um_per_px: SLIDE_UM_PER_PX,
            background,
            red_cells,
            sprites: sprites.iter().map(|s| s.image.clone()).collect(),
            pictures,
        };
        let classes: Vec<&str> = sprites.iter().map(|s| s.class.as_str()).collect();
        slide.settle_pictures(&classes, opts.cell_spacing, &SingleCellVetter::new());
        slide
    }

    /// Makes every cell's picture show one cell where it lies, among its neighbours on the smear
    /// colour and red cells: a picture that passed on its own can still show a second nucleus there
    /// (a neighbour's nucleus cut by the picture's rim, or a clump of naked nuclei, reaches the
    /// frame-wide nuclear threshold of a busier field). Such a cell gets the next picture of its
    /// class that passes in its place; when none does, the cell is left out of the slide and its
    /// truth.
    fn settle_pictures(&mut self, classes: &[&str], spacing: f32, vetter: &SingleCellVetter) {
        let (mut swapped, mut dropped) = (0, 0);
        let mut keep = Vec::with_capacity(self.cells.len());
        for i in 0..self.cells.len() {
            let first = self.pictures[i].0;
            let settled = self.settle_picture(i, classes, spacing, vetter);
            if settled && self.pictures[i].0 != first {
                swapped += 1;
                log::debug!(
                    "virtual slide: cell {i} ({}) shows more than one cell with picture {first}; \
                     picture {} instead",
                    self.cells[i].class,
                    self.pictures[i].0
                );
            }
            if !settled {
                dropped += 1;
            }
            keep.push(settled);
        }
        if dropped > 0 {
            let (cells, pictures): (Vec<SlideCell>, Vec<(usize, u8)>) = self
                .cells
                .drain(..)
                .zip(self.pictures.drain(..))
                .zip(&keep)
                .filter_map(|(both, &kept)| kept.then_some(both))
                .unzip();
            self.cells = cells;
            self.pictures = pictures;
            for (id, cell) in self.cells.iter_mut().enumerate() {
                cell.id = id as u32;
            }
        }
        if swapped + dropped > 0 {
            log::info!(
                "virtual slide: {swapped} picture(s) swapped and {dropped} cell(s) left out \
                 where a picture showed more than one cell among its neighbours"
            );
        }
    }

    /// Gives cell `i` the first picture of its class, from its own on, that shows one cell in
    /// place; false (picture unchanged) when none does.
    fn settle_picture(
        &mut self,
        i: usize,
        classes: &[&str],
        spacing: f32,
        vetter: &SingleCellVetter,
    ) -> bool {
        let first = self.pictures[i].0;
        let same_class = (0..classes.len())
            .map(|step| (first + step) % classes.len())
            .filter(|&j| classes[j] == classes[first]);
        for candidate in same_class {
            self.pictures[i].0 = candidate;
            if self.shows_one_cell_in_place(i, spacing, vetter) {
                return true;
            }
        }
        self.pictures[i].0 = first;
        false
    }

    /// True when the localizer, in all three of the vetter's settings, finds exactly one whole cell in
    /// what the picture of cell `i` shows, on the slide as it is around it.
    fn shows_one_cell_in_place(&self, i: usize, spacing: f32, vetter: &SingleCellVetter) -> bool {
        let cell = &self.cells[i];
        let picture = &self.sprites[self.pictures[i].0];
        let side = picture.width().max(picture.height()) as f32;
        let half = spacing + side * 0.75;
        let x0 = (cell.x - half).clamp(0.0, self.width as f32).floor();
        let y0 = (cell.y - half).clamp(0.0, self.height as f32).floor();
        let w = ((cell.x + half).min(self.width as f32) - x0).max(1.0) as u32;
        let h = ((cell.y + half).min(self.height as f32) - y0).max(1.0) as u32;
        let field = self.view(x0 as u32, y0 as u32, w, h);
        vetter.shows_one_cell_at_each(&field, &[(cell.x - x0, cell.y - y0)], side)
    }

    /// The picture pasted for a cell (unturned) and its index among the slide's pictures.
    pub fn picture_of(&self, cell_id: u32) -> Option<(usize, &RgbImage)> {
        let &(k, _) = self.pictures.get(cell_id as usize)?;
        Some((k, &self.sprites[k]))
    }

    /// Truth counts per class.
    pub fn truth_counts(&self) -> std::collections::BTreeMap<String, u32> {
        let mut m = std::collections::BTreeMap::new();
        for c in &self.cells {
            *m.entry(c.class.clone()).or_insert(0) += 1;
        }
        m
    }

    /// The part of the slide whose top-left corner is at (x, y), `w` x `h` pixels.
    pub fn view(&self, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
        let mut img = RgbImage::from_pixel(w, h, self.background);
        let (fx, fy) = (x as f32, y as f32);
        let overlaps = |cx: f32, cy: f32, r: f32| {
            cx + r >= fx && cx - r <= fx + w as f32 && cy + r >= fy && cy - r <= fy + h as f32
        };
        for &(cx, cy, r) in &self.red_cells {
            if overlaps(cx, cy, r) {
                draw_red_cell(&mut img, cx - fx, cy - fy, r);
            }
        }
        for (cell, &(k, turns)) in self.cells.iter().zip(&self.pictures) {
            let picture = &self.sprites[k];
            let half = picture.width().max(picture.height()) as f32 / 2.0;
            if overlaps(cell.x, cell.y, half) {
                paste_cell(&mut img, picture, turns, cell.x - fx, cell.y - fy);
            }
        }
        img
    }
}

/// Distance from the slide's edges to the grid of white cells, slide pixels. The stage cannot move
/// past the edge, and a cell whose box touches the frame edge is never counted, so every cell must
/// be fully visible from some stage position: half the largest picture, plus the grid's jitter
/// (20 px), plus the localizer's cytoplasm margin around a nucleus that fills the picture (about a
/// sixth of its side), plus slack.
fn edge_margin(sprites: &[Sprite]) -> f32 {
    let largest = sprites
        .iter()
        .map(|s| s.image.width().max(s.image.height()))
        .max()
        .unwrap_or(0) as f32;
    largest / 2.0 + largest / 6.0 + 30.0
}

/// Smear colour: the median border colour of the cell pictures, so the field looks like the
/// smears the cells came from.
/// Per-channel median of the corner pixels of every sprite.
fn border_median<'a>(pictures: impl IntoIterator<Item = &'a RgbImage>) -> Rgb<u8> {
    let mut channels: [Vec<u8>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for picture in pictures {
        let (w, h) = picture.dimensions();
        for (x, y) in [(2, 2), (w - 3, 2), (2, h - 3), (w - 3, h - 3)] {
            let p = picture.get_pixel(x, y).0;
            for (c, v) in channels.iter_mut().zip(p) {
                c.push(v);
            }
        }
    }
    let med = |v: &mut Vec<u8>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(220)
    };
    let [mut r, mut g, mut b] = channels;
    Rgb([med(&mut r), med(&mut g), med(&mut b)])
}

fn draw_red_cell(img: &mut RgbImage, cx: f32, cy: f32, r: f32) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    let (x0, x1) = (((cx - r) as i32).max(0), ((cx + r) as i32 + 1).min(w));
    let (y0, y1) = (((cy - r) as i32).max(0), ((cy + r) as i32 + 1).min(h));
    for y in y0..y1 {
        for x in x0..x1 {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / r;
            if d < 1.0 {
                // Darker rim, paler centre (biconcave disc).
                let density = 0.55 + 0.45 * d * d;
                let px = img.get_pixel_mut(x as u32, y as u32);
                let target = [205.0f32, 150.0, 160.0];
                for (v, t) in px.0.iter_mut().zip(target) {
                    *v = (*v as f32 + (t - *v as f32) * density).round() as u8;
                }
            }
        }
    }
}

/// Pastes a cell picture, turned clockwise by `turns` quarter turns, centred at (cx, cy) through a
/// soft round mask. The turn is applied while reading, so no turned copy is made.
fn paste_cell(img: &mut RgbImage, sprite: &RgbImage, turns: u8, cx: f32, cy: f32) {
    let (w, h) = sprite.dimensions();
    let (sw, sh) = if turns % 2 == 1 { (h, w) } else { (w, h) };
    // The pixel of the unturned picture that lands at (x, y) of the turned one.
    let source = |x: u32, y: u32| match turns % 4 {
        1 => (y, h - 1 - x),
        2 => (w - 1 - x, h - 1 - y),
        3 => (w - 1 - y, x),
        _ => (x, y),
    };
    let radius = sw.min(sh) as f32 * 0.40;
    let feather = sw as f32 * 0.08;
    let (ox, oy) = (cx - sw as f32 / 2.0, cy - sh as f32 / 2.0);
    for y in 0..sh {
        for x in 0..sw {
            let d = ((x as f32 - sw as f32 / 2.0).powi(2) + (y as f32 - sh as f32 / 2.0).powi(2))
                .sqrt();
            let alpha = ((radius + feather - d) / feather).clamp(0.0, 1.0);
            if alpha <= 0.0 {
                continue;
            }
            let (tx, ty) = (
                (ox + x as f32).floor() as i64,
                (oy + y as f32).floor() as i64,
            );
            if tx < 0 || ty < 0 || tx >= img.width() as i64 || ty >= img.height() as i64 {
                continue;
            }
            let (px, py) = source(x, y);
            let src = sprite.get_pixel(px, py).0;
            let dst = img.get_pixel_mut(tx as u32, ty as u32);
            for (d, s) in dst.0.iter_mut().zip(src) {
                *d = (*d as f32 * (1.0 - alpha) + s as f32 * alpha).round() as u8;
            }
        }
    }
}

/// One stop of the simulated stage: the frame's top-left corner on the slide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StagePose {
    pub x: f32,
    pub y: f32,
    /// Motion blur length in pixels (fast moves).
    pub blur: u32,
    /// Illumination gain.
    pub gain: f32,
}

/// The stage path: zigzag rows with overlap, pauses, fast moves and slow illumination drift.
pub fn stage_path(opts: &SlideOptions) -> Vec<StagePose> {
    let mut rng = Rng::new(opts.seed.wrapping_mul(31).wrapping_add(7));
    let max_x = (opts.width - opts.frame_width) as f32;
    let max_y = (opts.height - opts.frame_height) as f32;
    let row_step = opts.frame_height as f32 * 0.7;
    let mut poses = Vec::new();
    let mut y = 0.0f32;
    let mut left_to_right = true;
    loop {
        let mut x = if left_to_right { 0.0 } else { max_x };
        loop {
            let t = poses.len() as f32;
            let gain = 1.0 + 0.08 * (t / 90.0).sin();
            let r = rng.unit();
            if r < 0.03 {
                // Pause: the operator stops to look.
                for _ in 0..8 {
                    poses.push(StagePose {
                        x,
                        y,
                        blur: 0,
                        gain,
                    });
                }
            }
            let fast = r > 0.93;
            let step = if fast {
                opts.step * 2.5
            } else {
                opts.step * (0.8 + 0.4 * rng.unit())
            };
            poses.push(StagePose {
                x,
                y,
                blur: if fast { (step / 8.0) as u32 } else { 0 },
                gain,
            });
            if (left_to_right && x >= max_x) || (!left_to_right && x <= 0.0) {
                break;
            }
            x = if left_to_right {
                (x + step).min(max_x)
            } else {
                (x - step).max(0.0)
            };
        }
        if y >= max_y {
            break;
        }
        // Move down one row in a few frames.
        let target = (y + row_step).min(max_y);
        while y < target {
            y = (y + opts.step).min(target);
            poses.push(StagePose {
                x,
                y,
                blur: 0,
                gain: 1.0,
            });
        }
        left_to_right = !left_to_right;
    }
    poses
}

/// Frame source panning over a virtual slide.
pub struct VirtualSlideSource {
    slide: VirtualSlide,
    path: Vec<StagePose>,
    next: usize,
    opts: SlideOptions,
    origin: String,
}

impl VirtualSlideSource {
    /// Builds the slide for a seed from the real data if present, else from the built-in atlas.
    pub fn new(opts: SlideOptions) -> Result<VirtualSlideSource, SourceError> {
        let (sprites, origin) = match data_root() {
            Some(root) => (
                folder_sprites(&root.join("marrow"), 24, opts.seed)?,
                format!("{}", root.join("marrow").display()),
            ),
            None => (
                SingleCellVetter::new().keep_single_cells(atlas_sprites()?),
                "built-in atlas".to_string(),
            ),
        };
        Ok(Self::from_sprites(&sprites, opts, origin))
    }

    pub fn from_sprites(
        sprites: &[Sprite],
        opts: SlideOptions,
        origin: String,
    ) -> VirtualSlideSource {
        let slide = VirtualSlide::compose(sprites, &opts);
        let path = stage_path(&opts);
        VirtualSlideSource {
            slide,
            path,
            next: 0,
            opts,
            origin,
        }
    }

    pub fn slide(&self) -> &VirtualSlide {
        &self.slide
    }

    pub fn path(&self) -> &[StagePose] {
        &self.path
    }

    /// Renders the camera view at one stage pose.
    pub fn render(&self, pose: &StagePose) -> RgbImage {
        let (fw, fh) = (self.opts.frame_width, self.opts.frame_height);
        let (x, y) = (pose.x.round() as u32, pose.y.round() as u32);
        let mut frame = self.slide.view(x, y, fw, fh);
        if pose.blur > 1 {
            frame = horizontal_blur(&frame, pose.blur);
        }
        if (pose.gain - 1.0).abs() > 1e-3 {
            for p in frame.pixels_mut() {
                for c in 0..3 {
                    p.0[c] = (p.0[c] as f32 * pose.gain).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        frame
    }
}

/// Box blur along x, as a fast horizontal stage move smears the image.
fn horizontal_blur(img: &RgbImage, len: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(w, h);
    let half = (len / 2) as i64;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0u32; 3];
            let mut n = 0;
            for dx in -half..=half {
                let sx = (x as i64 + dx).clamp(0, w as i64 - 1) as u32;
                let p = img.get_pixel(sx, y).0;
                for c in 0..3 {
                    acc[c] += p[c] as u32;
                }
                n += 1;
            }
            out.put_pixel(
                x,
                y,
                Rgb([(acc[0] / n) as u8, (acc[1] / n) as u8, (acc[2] / n) as u8]),
            );
        }
    }
    out
}

impl FrameSource for VirtualSlideSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(pose) = self.path.get(self.next).copied() else {
            return Ok(None);
        };
        let index = self.next as u64;
        self.next += 1;
        Ok(Some(Frame {
            index,
            image: self.render(&pose),
            um_per_px: Some(self.slide.um_per_px),
            origin: format!("virtual:{}#{index}", self.opts.seed),
        }))
    }

    fn seek(&mut self, frame: u64) -> Result<bool, SourceError> {
        self.next = usize::try_from(frame).map_or(self.path.len(), |f| f.min(self.path.len()));
        Ok(true)
    }

    fn describe(&self) -> String {
        format!(
            "virtual slide seed {} ({}x{} px, {} cells from {}, {} frames)",
            self.opts.seed,
            self.opts.width,
            self.opts.height,
            self.slide.cells.len(),
            self.origin,
            self.path.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atlas_loads_real_crops() {
        let sprites = atlas_sprites().unwrap();
        assert!(sprites.len() >= 8 * 4);
        assert!(ATLAS_CLASSES
            .iter()
            .all(|c| sprites.iter().any(|s| s.class == *c)));
    }

    #[test]
    fn same_seed_same_slide_and_path_covers_it() {
        let sprites = atlas_sprites().unwrap();
        let opts = SlideOptions::new(3);
        let a = VirtualSlideSource::from_sprites(&sprites, opts.clone(), "t".into());
        let b = VirtualSlideSource::from_sprites(&sprites, opts.clone(), "t".into());
        assert_eq!(a.slide().cells, b.slide().cells);
        assert!(a.slide().cells.len() > 50);
        let last = a.path().last().unwrap();
        assert!(last.y >= (opts.height - opts.frame_height) as f32 - 0.5);
        assert!(a.path().iter().any(|p| p.blur > 0), "fast moves present");
    }

    /// A 192-px picture on a pale smear colour with violet nuclei of `radius` px at `centres`.
    fn picture_with_nuclei(centres: &[(f32, f32)], radius: f32) -> RgbImage {
        RgbImage::from_fn(192, 192, |x, y| {
            let inside = centres.iter().any(|&(cx, cy)| {
                (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= radius * radius
            });
            if inside {
                Rgb([95, 45, 150])
            } else {
                Rgb([226, 214, 224])
            }
        })
    }

    #[test]
    fn only_pictures_of_one_centred_cell_populate_the_slide() {
        let vetter = SingleCellVetter::new();
        let one = picture_with_nuclei(&[(96.0, 96.0)], 40.0);
        assert!(vetter.shows_one_centred_cell(&one));
        // Two nuclei 3 µm apart (0.1 µm/px): two cells, one picture.
        let two = picture_with_nuclei(&[(55.0, 96.0), (137.0, 96.0)], 26.0);
        assert!(!vetter.shows_one_centred_cell(&two));
        // No stained nucleus: nothing to count.
        let none = picture_with_nuclei(&[], 0.0);
        assert!(!vetter.shows_one_centred_cell(&none));
        let kept = vetter.keep_single_cells(vec![
            Sprite {
                class: "A".into(),
                image: two,
            },
            Sprite {
                class: "B".into(),
                image: one,
            },
        ]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].class, "B");
    }

    #[test]
    fn a_picture_showing_two_cells_on_the_slide_is_swapped_or_left_out() {
        let one = picture_with_nuclei(&[(96.0, 96.0)], 40.0);
        // Two nuclei 4.8 µm apart, both inside what the picture shows.
        let two = picture_with_nuclei(&[(50.0, 96.0), (142.0, 96.0)], 22.0);
        let sprite = |class: &str, image: &RgbImage| Sprite {
            class: class.into(),
            image: image.clone(),
        };
        // Class A has one good picture and one of two cells, class B only one of two cells.
        let sprites = [sprite("A", &two), sprite("A", &one), sprite("B", &two)];
        let opts = SlideOptions {
            width: 1800,
            height: 1400,
            ..SlideOptions::new(4)
        };
        let slide = VirtualSlide::compose(&sprites, &opts);
        assert!(!slide.cells.is_empty());
        for (id, cell) in slide.cells.iter().enumerate() {
            assert_eq!(cell.id as usize, id, "ids stay contiguous");
            assert_eq!(cell.class, "A", "class B has no picture of one cell");
            let (k, picture) = slide.picture_of(cell.id).unwrap();
            assert_eq!(k, 1);
            assert!(*picture == one);
        }
    }

    #[test]
    fn turned_paste_equals_pasting_a_turned_copy() {
        let sprite = RgbImage::from_fn(40, 30, |x, y| Rgb([x as u8 * 6, y as u8 * 8, 90]));
        let turned = [
            sprite.clone(),
            imageops::rotate90(&sprite),
            imageops::rotate180(&sprite),
            imageops::rotate270(&sprite),
        ];
        for (turns, copy) in turned.iter().enumerate() {
            let mut by_reading = RgbImage::from_pixel(64, 64, Rgb([200, 190, 210]));
            let mut by_copy = by_reading.clone();
            paste_cell(&mut by_reading, &sprite, turns as u8, 30.5, 28.0);
            paste_cell(&mut by_copy, copy, 0, 30.5, 28.0);
            assert!(by_reading == by_copy, "{turns} quarter turns");
        }
    }
}
