//! Frame sources: everything that hands the pipeline RGB frames. One trait, [`FrameSource`], with a
//! V4L2 camera (MJPEG or YUYV, decoded here), replay of an image file or folder (JPEG, PNG, BMP, and
//! TIFF where the `tiff` feature is built in) at a set frame rate, and the virtual slide (see
//! [`crate::slide`]). Also the source-spec parser (`v4l:`, `dir:`, `file:`, `virtual:`) and
//! `read_rgb`, which every command reading pictures uses (it refuses a picture with a transparent
//! part; `read_crop` on top of it refuses a cell crop too small or without colour).

use crate::folder::{FileKind, NotAFolder};
use image::codecs::jpeg::JpegDecoder;
use image::{DynamicImage, ImageDecoder, RgbImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors from frame sources.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("unknown source {0:?}: use v4l:/dev/videoN, dir:PATH, file:PATH or virtual:SEED")]
    UnknownSpec(String),
    #[error("unknown source {spec:?}: that is a {what}; replay it with {suggestion}")]
    BarePath {
        spec: String,
        what: &'static str,
        suggestion: String,
    },
    #[error("source {0:?} gives nothing after the colon, e.g. {1}")]
    Incomplete(String, &'static str),
    #[error(
        "source {0:?}: the virtual slide's SEED is a whole number (0 or more), e.g. virtual:1"
    )]
    BadSeed(String),
    #[error("{path}: {message}")]
    Open { path: String, message: String },
    #[error("{path}: corrupt or unreadable image: {message}")]
    Corrupt { path: String, message: String },
    #[error("{path}: {size} is too large to read (over the decoder's 512 MB); camera frames and cell crops are far smaller")]
    TooLarge { path: String, size: String },
    #[error("{path}: this build does not read TIFF (board builds leave it out to stay small); save the frames as PNG, or use a desktop build")]
    TiffLeftOut { path: String },
    #[error(
        "{path}: a {format} picture, which marrowscope does not read; save it as PNG, JPEG or BMP"
    )]
    FormatNotRead { path: String, format: String },
    #[error("{path}: {width} × {height} px is too small to be a cell crop (at least {MIN_CROP_SIDE} px a side); give the crop as it was cut from the frame")]
    CropTooSmall {
        path: String,
        width: u32,
        height: u32,
    },
    #[error("{path}: {percent} % of it is transparent (a cut-out or screenshot's alpha channel), and what lies behind the transparent part is not the slide; save the picture as the camera gave it, without transparency")]
    Transparent { path: String, percent: u32 },
    #[error("{path}: has no colour (a grey picture), and cells are classified by the colours of their stain; was it taken with a monochrome camera or saved in grey?")]
    CropWithoutColour { path: String },
    #[error("camera {device}: {message}")]
    Camera { device: String, message: String },
    #[error("frame decoding failed: {0}")]
    Decode(String),
    #[error("{source_name}: lost ({message}); reconnecting")]
    Lost {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: reconnecting (attempt {attempts})")]
    Reconnecting { source_name: String, attempts: u32 },
}

impl SourceError {
    /// True when only this frame is bad and the source can go on.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            SourceError::Corrupt { .. }
                | SourceError::TooLarge { .. }
                | SourceError::TiffLeftOut { .. }
                | SourceError::FormatNotRead { .. }
                | SourceError::Transparent { .. }
                | SourceError::Decode(_)
        )
    }

    /// True while a lost source is being reconnected: no frame now, but the run goes on.
    pub fn is_reconnecting(&self) -> bool {
        matches!(
            self,
            SourceError::Lost { .. } | SourceError::Reconnecting { .. }
        )
    }
}

/// One camera frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Sequence number from the source, starting at 0.
    pub index: u64,
    pub image: RgbImage,
    /// Scale of this frame when the source knows it better than the board profile (virtual slide).
    pub um_per_px: Option<f32>,
    /// Where the frame came from (file name) for reports.
    pub origin: String,
}

/// Anything that produces frames.
pub trait FrameSource {
    /// The next frame, `Ok(None)` at the end of a finite source.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// A short human description, for logs. A journal names its source by it, so it must be the
    /// same for the same source each time it is opened.
    fn describe(&self) -> String;
    /// Moves the source so that the next frame is the one with index `frame`, for a run that
    /// continues a count; false when the source has no positions to return to (a camera).
    fn seek(&mut self, frame: u64) -> Result<bool, SourceError> {
        let _ = frame;
        Ok(false)
    }
}

/// A parsed `--source` spec.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    V4l(PathBuf),
    Dir(PathBuf),
    File(PathBuf),
    Virtual(u64),
}

impl SourceSpec {
    /// Reads `KIND:REST`. The kind is read in any case (`DIR:` as `dir:`) and spaces around the
    /// rest are dropped (`dir: frames`); a bare path that exists is named with the spec to use.
    pub fn parse(spec: &str) -> Result<SourceSpec, SourceError> {
        let Some((kind, rest)) = spec.split_once(':') else {
            return Err(bare_path_error(spec));
        };
        let (kind, rest) = (kind.to_ascii_lowercase(), rest.trim());
        let Some(example) = spec_example(&kind) else {
            return Err(bare_path_error(spec));
        };
        if rest.is_empty() {
            return Err(SourceError::Incomplete(spec.to_string(), example));
        }
        Ok(match kind.as_str() {
            "v4l" => SourceSpec::V4l(rest.into()),
            "dir" => SourceSpec::Dir(rest.into()),
            "file" => SourceSpec::File(rest.into()),
            _ => rest
                .parse()
                .map(SourceSpec::Virtual)
                .map_err(|_| SourceError::BadSeed(spec.to_string()))?,
        })
    }
}

/// A whole spec of a known kind (lower case), for messages; `None` for an unknown kind.
fn spec_example(kind: &str) -> Option<&'static str> {
    match kind {
        "v4l" => Some("v4l:/dev/video0"),
        "dir" => Some("dir:/home/lab/frames"),
        "file" => Some("file:/home/lab/frame.png"),
        "virtual" => Some("virtual:1"),
        _ => None,
    }
}

/// The error for a spec with no known kind: a path that exists (a folder or picture given without
/// `dir:`/`file:`, or `C:\frames` read as kind `C`) is named with the spec that replays it.
fn bare_path_error(spec: &str) -> SourceError {
    let path = Path::new(spec);
    let (what, kind) = if path.is_dir() {
        ("folder", "dir")
    } else if is_image_file(path) {
        ("picture", "file")
    } else {
        return SourceError::UnknownSpec(spec.to_string());
    };
    SourceError::BarePath {
        spec: spec.to_string(),
        what,
        suggestion: format!("{kind}:{spec}"),
    }
}

/// What a picture path that is not there is called in errors.
const NO_SUCH_IMAGE: &str = "no such image file";

/// Image file extensions replay, `classify` and `detect-eval` accept (microscope software often saves
/// TIFF, 8 or 16 bits a channel). Builds without the `tiff` feature (the boards') still list TIFF files,
/// so that each gets a clear error rather than being passed over.
const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff"];

/// The pictures replay and `detect-eval` read from a folder.
pub const IMAGE_FILES: FileKind = FileKind {
    called: "image files",
    is: is_image_file,
};

/// True when a path is a file (not a folder) whose name says it is an image replay can read.
pub fn is_image_file(path: &Path) -> bool {
    named_with_one_of(path, &IMAGE_EXTENSIONS)
}

/// Whether a path that is not a folder ends in one of `extensions` (any letter case).
fn named_with_one_of(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
        && !path.is_dir()
}

/// Extensions of the video files a microscope camera's software records.
const VIDEO_EXTENSIONS: [&str; 9] = [
    "mp4", "m4v", "mov", "avi", "mkv", "webm", "wmv", "mpg", "h264",
];

/// Video files, named where a folder of pictures holds only those.
const VIDEO_FILES: FileKind = FileKind {
    called: "video files",
    is: is_video_file,
};

/// Whether a path is named as a video file.
fn is_video_file(path: &Path) -> bool {
    named_with_one_of(path, &VIDEO_EXTENSIONS)
}

/// What a video given for replay is told: how to turn it into pictures that replay.
fn video_advice(video: &Path) -> String {
    let name = video.display().to_string();
    let quoted = if name.contains(char::is_whitespace) {
        format!("\"{name}\"")
    } else {
        name
    };
    format!(
        "marrowscope replays pictures, not videos: save the video's frames as pictures (e.g. \
         ffmpeg -i {quoted} frames/%05d.png) and replay the folder with dir:frames"
    )
}

/// Reads an image file as RGB, with a one-line error naming the file.
pub fn read_rgb(path: &Path) -> Result<RgbImage, SourceError> {
    let corrupt = |message: String| SourceError::Corrupt {
        path: path.display().to_string(),
        message,
    };
    if path.is_dir() {
        return Err(SourceError::Open {
            path: path.display().to_string(),
            message: "a folder, not an image file".into(),
        });
    }
    let reader = image::ImageReader::open(path).map_err(|e| SourceError::Open {
        path: path.display().to_string(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => NO_SUCH_IMAGE.into(),
            _ => e.to_string(),
        },
    })?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| corrupt(e.to_string()))?;
    refuse_left_out_format(path, reader.format(), READS_TIFF)?;
    let decoded = std::panic::catch_unwind(|| reader.decode());
    let picture = match decoded {
        Ok(Err(image::ImageError::Limits(_))) => Err(SourceError::TooLarge {
            path: path.display().to_string(),
            size: image::image_dimensions(path)
                .map_or_else(|_| "the image".into(), |(w, h)| format!("{w} × {h} px")),
        }),
        Ok(image) => image.map_err(|e| corrupt(e.to_string())),
        Err(_) => Err(corrupt(DECODER_PANICKED.into())),
    }?;
    refuse_transparent(path, &picture)?;
    Ok(picture.to_rgb8())
}

/// The share of a picture's pixels that may be less than opaque before it is refused: a few
/// stray pixels change nothing, a cut-out's transparent surround does.
const MOST_TRANSPARENT_SHARE: f64 = 0.01;

/// Refuses a picture with an alpha channel whose pixels are partly transparent (at least
/// [`MOST_TRANSPARENT_SHARE`] of them): converting it to RGB drops the alpha and keeps whatever
/// colour the file stores behind it (often black), which the localizer and the classifier would
/// take for the slide. Measured on 160 marrow crops given a transparent surround: 28 kept their
/// class, 4 took another at p ≥ 0.9, the rest fell to review. A picture whose alpha is opaque
/// everywhere is read as any other.
fn refuse_transparent(path: &Path, picture: &DynamicImage) -> Result<(), SourceError> {
    if !picture.color().has_alpha() {
        return Ok(());
    }
    let pixels = u64::from(picture.width()) * u64::from(picture.height());
    let see_through = count_see_through(picture);
    if pixels == 0 || (see_through as f64) < MOST_TRANSPARENT_SHARE * pixels as f64 {
        return Ok(());
    }
    Err(SourceError::Transparent {
        path: path.display().to_string(),
        percent: ((see_through * 100 + pixels / 2) / pixels).max(1) as u32,
    })
}

/// How many pixels of a picture with an alpha channel are less than fully opaque (read in 16
/// bits, which keeps every 8-bit alpha exactly).
fn count_see_through(picture: &DynamicImage) -> u64 {
    let alpha_opaque = u16::MAX;
    picture
        .to_rgba16()
        .pixels()
        .filter(|px| px.0[3] < alpha_opaque)
        .count() as u64
}

/// The smallest side of a picture `classify` and `eval` take for a cell crop, pixels: a cell
/// crop of the model's field (about 19 µm) this small is under 0.6 µm a pixel.
pub const MIN_CROP_SIDE: u32 = 32;

/// Reads a single-cell crop as [`read_rgb`] does, and refuses one too small to show a cell or one
/// without colour (see [`crate::localize::lacks_colour`]), which the model would still give a class.
pub fn read_crop(path: &Path) -> Result<RgbImage, SourceError> {
    let crop = read_rgb(path)?;
    let (width, height) = crop.dimensions();
    let path = || path.display().to_string();
    if width.min(height) < MIN_CROP_SIDE {
        return Err(SourceError::CropTooSmall {
            path: path(),
            width,
            height,
        });
    }
    if crate::localize::lacks_colour(&crop) {
        return Err(SourceError::CropWithoutColour { path: path() });
    }
    Ok(crop)
}

/// Whether this build decodes TIFF (the `tiff` feature; board builds leave it out).
const READS_TIFF: bool = cfg!(feature = "tiff");

/// A clear error for a file in a format this build leaves out, before the decoder's terse one.
fn refuse_left_out_format(
    path: &Path,
    format: Option<image::ImageFormat>,
    reads_tiff: bool,
) -> Result<(), SourceError> {
    use image::ImageFormat::{Bmp, Jpeg, Png, Tiff};
    match format {
        Some(Tiff) if !reads_tiff => Err(SourceError::TiffLeftOut {
            path: path.display().to_string(),
        }),
        Some(Jpeg | Png | Bmp | Tiff) | None => Ok(()),
        Some(other) => Err(SourceError::FormatNotRead {
            path: path.display().to_string(),
            format: other
                .extensions_str()
                .first()
                .map_or_else(|| format!("{other:?}"), |ext| ext.to_ascii_uppercase()),
        }),
    }
}

/// Error text when an image decoder panics on a corrupt file or frame: the frame is skipped and
/// counted instead of ending the run (on builds that unwind).
const DECODER_PANICKED: &str = "the image decoder failed on this data";

/// Replays image files (one file, or every image in a folder in name order, numbers by value:
/// `frame2` before `frame10`), optionally paced.
pub struct ReplaySource {
    files: Vec<PathBuf>,
    next: usize,
    interval: Option<Duration>,
    last: Option<Instant>,
    label: String,
}

impl ReplaySource {
    /// One image file.
    pub fn file(path: &Path) -> Result<ReplaySource, SourceError> {
        if !path.is_file() {
            let message = if path.is_dir() {
                "a folder, not an image file: replay a folder with dir:PATH"
            } else {
                NO_SUCH_IMAGE
            };
            return Err(SourceError::Open {
                path: path.display().to_string(),
                message: message.into(),
            });
        }
        if is_video_file(path) {
            return Err(SourceError::Open {
                path: path.display().to_string(),
                message: video_advice(path),
            });
        }
        Ok(Self::new(
            vec![path.to_path_buf()],
            format!("file {}", path.display()),
        ))
    }

    /// Every image in a folder, in name order, numbers by value ([`crate::folder::name_order`]).
    pub fn dir(path: &Path) -> Result<ReplaySource, SourceError> {
        let open_err = |message: String| SourceError::Open {
            path: path.display().to_string(),
            message,
        };
        match crate::folder::check(path) {
            Err(NotAFolder::File) => {
                return Err(open_err(
                    "a file, not a folder: replay one picture with file:PATH".into(),
                ))
            }
            Err(NotAFolder::Missing) => return Err(open_err("no such folder".into())),
            Ok(()) => {}
        }
        let files = crate::folder::files_of_kind(path, &IMAGE_FILES).map_err(|message| {
            match crate::folder::files_of_kind(path, &VIDEO_FILES) {
                Ok(videos) => open_err(format!("{message}; {}", video_advice(&videos[0]))),
                Err(_) => open_err(message),
            }
        })?;
        Ok(Self::new(files, format!("folder {}", path.display())))
    }

    fn new(files: Vec<PathBuf>, label: String) -> ReplaySource {
        ReplaySource {
            files,
            next: 0,
            interval: None,
            last: None,
            label,
        }
    }

    /// Paces frames at `fps` (0 = as fast as they can be read).
    pub fn with_fps(mut self, fps: f32) -> ReplaySource {
        self.interval = (fps > 0.0).then(|| Duration::from_secs_f32(1.0 / fps));
        self
    }

    fn pace(&mut self) {
        if let (Some(interval), Some(last)) = (self.interval, self.last) {
            let elapsed = last.elapsed();
            if elapsed < interval {
                std::thread::sleep(interval - elapsed);
            }
        }
        self.last = Some(Instant::now());
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(path) = self.files.get(self.next).cloned() else {
            return Ok(None);
        };
        let index = self.next as u64;
        self.next += 1;
        self.pace();
        let image = read_rgb(&path)?;
        Ok(Some(Frame {
            index,
            image,
            um_per_px: None,
            origin: path.display().to_string(),
        }))
    }

    fn describe(&self) -> String {
        format!("{} ({} images)", self.label, self.files.len())
    }

    fn seek(&mut self, frame: u64) -> Result<bool, SourceError> {
        self.next = usize::try_from(frame).map_or(self.files.len(), |f| f.min(self.files.len()));
        Ok(true)
    }
}

/// Converts packed YUYV 4:2:2 (BT.601, limited range) to RGB.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32) -> Result<RgbImage, SourceError> {
    let needed = width as usize * height as usize * 2;
    if !width.is_multiple_of(2) || data.len() < needed {
        return Err(SourceError::Decode(format!(
            "YUYV buffer of {} bytes is too short for {width}x{height}",
            data.len()
        )));
    }
    let mut out = RgbImage::new(width, height);
    let raw: &mut [u8] = &mut out;
    for (quad, rgb) in data[..needed].chunks_exact(4).zip(raw.chunks_exact_mut(6)) {
        let (y0, u, y1, v) = (quad[0], quad[1], quad[2], quad[3]);
        rgb[..3].copy_from_slice(&yuv_to_rgb(y0, u, v));
        rgb[3..].copy_from_slice(&yuv_to_rgb(y1, u, v));
    }
    Ok(out)
}

fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as i32 - 16).max(0) * 298;
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

/// Decodes one MJPEG frame (a JPEG image) of the negotiated size to RGB. The frame header is read and
/// checked before any pixel is decoded: a corrupt header must not make the device allocate a huge
/// image, pass on a frame of another size, or reach the decoder with a component layout no camera
/// sends (zune-jpeg 0.5.15 panics on chroma sampled finer than luma; found by fuzz/frame_decode).
/// A panic inside the decoder on a frame that passes the checks is turned into a decode error, as in
/// `read_rgb`, so one bad frame is skipped and counted, not fatal (on builds that unwind; board builds
/// abort and systemd restarts them, the journal keeping the count).
pub fn mjpeg_to_rgb(data: &[u8], width: u32, height: u32) -> Result<RgbImage, SourceError> {
    let bad = |message: String| SourceError::Decode(format!("MJPEG frame: {message}"));
    let header = JpegFrameHeader::read(data).map_err(bad)?;
    if (header.width, header.height) != (width, height) {
        return Err(bad(format!(
            "{}x{}, the camera was set to {width}x{height}",
            header.width, header.height
        )));
    }
    header.check_sampling().map_err(bad)?;
    // The decoder may take its size from a later frame header than the one read above: a larger
    // one is refused before any pixel is allocated, a smaller one after decoding.
    let decode = || -> image::ImageResult<RgbImage> {
        let mut decoder = JpegDecoder::new(Cursor::new(data))?;
        decoder.set_limits(no_larger_than(width, height))?;
        Ok(DynamicImage::from_decoder(decoder)?.to_rgb8())
    };
    let frame = match std::panic::catch_unwind(decode) {
        Ok(decoded) => decoded.map_err(|e| bad(e.to_string()))?,
        Err(_) => return Err(bad(DECODER_PANICKED.into())),
    };
    if frame.dimensions() != (width, height) {
        return Err(bad(format!(
            "decoded {}x{}, the camera was set to {width}x{height}",
            frame.width(),
            frame.height()
        )));
    }
    Ok(frame)
}

/// Decoder limits that refuse a picture wider or taller than `width` × `height`.
fn no_larger_than(width: u32, height: u32) -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits
}

/// The size and component sampling factors from a JPEG's frame (SOFn) header.
#[derive(Debug, PartialEq)]
struct JpegFrameHeader {
    width: u32,
    height: u32,
    /// (horizontal, vertical) sampling factor of each component, in header order.
    sampling: Vec<(u8, u8)>,
}

impl JpegFrameHeader {
    /// Walks the marker segments from the start of the image to the first frame header.
    fn read(data: &[u8]) -> Result<JpegFrameHeader, String> {
        if !data.starts_with(&[0xFF, 0xD8]) {
            return Err("not a JPEG (no start-of-image marker)".into());
        }
        let mut pos = 2;
        loop {
            while data.get(pos..pos + 2) == Some(&[0xFF, 0xFF]) {
                pos += 1; // fill bytes before a marker
            }
            let (Some(&0xFF), Some(&marker)) = (data.get(pos), data.get(pos + 1)) else {
                return Err(format!("no marker at byte {pos} before the frame header"));
            };
            if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
                pos += 2; // markers without a segment
                continue;
            }
            if marker == 0xD9 || marker == 0xDA {
                return Err("no frame header before the image data".into());
            }
            let length = match data.get(pos + 2..pos + 4) {
                Some(&[hi, lo]) if u16::from_be_bytes([hi, lo]) >= 2 => {
                    u16::from_be_bytes([hi, lo]) as usize
                }
                _ => return Err(format!("bad segment length at byte {}", pos + 2)),
            };
            let segment = data
                .get(pos + 4..pos + 2 + length)
                .ok_or_else(|| format!("segment at byte {pos} runs past the end of the frame"))?;
            let is_frame_header =
                (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
            if is_frame_header {
                return Self::parse_frame_segment(segment);
            }
            pos += 2 + length;
        }
    }

    fn parse_frame_segment(segment: &[u8]) -> Result<JpegFrameHeader, String> {
        let [_precision, h_hi, h_lo, w_hi, w_lo, count, components @ ..] = segment else {
            return Err("frame header too short".into());
        };
        let count = *count as usize;
        if components.len() < 3 * count {
            return Err(format!(
                "frame header names {count} components but holds fewer"
            ));
        }
        Ok(JpegFrameHeader {
            width: u16::from_be_bytes([*w_hi, *w_lo]) as u32,
            height: u16::from_be_bytes([*h_hi, *h_lo]) as u32,
            sampling: components
                .chunks_exact(3)
                .take(count)
                .map(|c| (c[1] >> 4, c[1] & 0x0F))
                .collect(),
        })
    }

    /// Grey, or colour whose chroma is sampled at an integer fraction of the luma sampling, the
    /// layouts cameras send (4:4:4, 4:2:2, 4:2:0).
    fn check_sampling(&self) -> Result<(), String> {
        let valid = |&(h, v): &(u8, u8)| (1..=4).contains(&h) && (1..=4).contains(&v);
        match self.sampling.as_slice() {
            [luma] if valid(luma) => Ok(()),
            [(lh, lv), chroma @ ..] if chroma.len() == 2 && valid(&(*lh, *lv)) => {
                let fits = |&(h, v): &(u8, u8)| valid(&(h, v)) && lh % h == 0 && lv % v == 0;
                if chroma.iter().all(fits) {
                    Ok(())
                } else {
                    Err(format!(
                        "component sampling {:?} is not a camera layout (chroma finer than luma)",
                        self.sampling
                    ))
                }
            }
            other => Err(format!(
                "{} components with sampling {other:?}: not a grey or YCbCr camera frame",
                other.len()
            )),
        }
    }
}

/// Pixel formats the camera path decodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

impl PixelFormat {
    pub fn from_fourcc(code: &str) -> Option<PixelFormat> {
        match code {
            "MJPG" => Some(PixelFormat::Mjpeg),
            "YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }

    /// Decodes one buffer of this format.
    pub fn decode(self, data: &[u8], width: u32, height: u32) -> Result<RgbImage, SourceError> {
        match self {
            PixelFormat::Mjpeg => mjpeg_to_rgb(data, width, height),
            PixelFormat::Yuyv => yuyv_to_rgb(data, width, height),
        }
    }
}

/// Checks a camera path before it is opened: a path that is not there (camera unplugged, wrong
/// number) or that is a file or folder rather than a device is named as such.
pub fn check_camera_path(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
            "no such camera device: is the camera plugged in? `ls /dev/video*` lists the cameras"
                .into(),
        ),
        Ok(m) if m.is_dir() || m.is_file() => {
            Err("not a camera device: V4L2 cameras are /dev/videoN".into())
        }
        _ => Ok(()),
    }
}

/// Why a camera device could not be opened: a device the user may not read (not in the `video`
/// group) is named with the fix; other errors are passed on as they are.
pub fn camera_open_message(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        "permission denied: add the user to the `video` group (then log in again)".into()
    } else {
        format!("cannot open: {error}")
    }
}

#[cfg(target_os = "linux")]
pub use camera::V4lCamera;

#[cfg(target_os = "linux")]
mod camera {
    //! The V4L2 camera through the `v4l` crate (memory-mapped streaming).
    use super::*;
    use crate::config::CameraConfig;
    use v4l::buffer::Type;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    /// A V4L2 capture device streaming MJPEG or YUYV.
    pub struct V4lCamera {
        device: String,
        stream: Stream<'static>,
        format: PixelFormat,
        width: u32,
        height: u32,
        index: u64,
        // Keeps the device open for as long as the stream lives.
        _device: Device,
    }

    impl V4lCamera {
        /// Opens the device and negotiates the profile's size and pixel format.
        pub fn open(path: &Path, cfg: &CameraConfig) -> Result<V4lCamera, SourceError> {
            let device = path.display().to_string();
            let err = |message: String| SourceError::Camera {
                device: device.clone(),
                message,
            };
            check_camera_path(path).map_err(err)?;
            let dev = Device::with_path(path).map_err(|e| err(camera_open_message(&e)))?;
            let mut fmt = dev
                .format()
                .map_err(|e| err(format!("cannot query format (not a V4L2 camera?): {e}")))?;
            fmt.width = cfg.width;
            fmt.height = cfg.height;
            let fourcc: [u8; 4] = cfg
                .pixel_format
                .as_bytes()
                .try_into()
                .map_err(|_| err(format!("bad pixel format {:?}", cfg.pixel_format)))?;
            fmt.fourcc = FourCC::new(&fourcc);
            let fmt = dev
                .set_format(&fmt)
                .map_err(|e| err(format!("cannot set format: {e}")))?;
            let got = fmt.fourcc.str().unwrap_or("????").to_string();
            let format = PixelFormat::from_fourcc(&got)
                .ok_or_else(|| err(format!("camera offers {got}, not MJPG or YUYV")))?;
            let stream = Stream::with_buffers(&dev, Type::VideoCapture, 4)
                .map_err(|e| err(format!("cannot start streaming: {e}")))?;
            log::info!("camera {device}: {}x{} {got}", fmt.width, fmt.height);
            Ok(V4lCamera {
                device,
                stream,
                format,
                width: fmt.width,
                height: fmt.height,
                index: 0,
                _device: dev,
            })
        }
    }

    impl FrameSource for V4lCamera {
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            let (buf, meta) = self.stream.next().map_err(|e| SourceError::Camera {
                device: self.device.clone(),
                message: format!("capture failed: {e}"),
            })?;
            let used = (meta.bytesused as usize).min(buf.len());
            let image = self.format.decode(&buf[..used], self.width, self.height)?;
            let index = self.index;
            self.index += 1;
            Ok(Some(Frame {
                index,
                image,
                um_per_px: None,
                origin: format!("{}#{index}", self.device),
            }))
        }

        fn describe(&self) -> String {
            format!(
                "V4L2 camera {} ({}x{} {:?})",
                self.device, self.width, self.height, self.format
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        assert_eq!(
            SourceSpec::parse("virtual:7").unwrap(),
            SourceSpec::Virtual(7)
        );
        assert_eq!(
            SourceSpec::parse("v4l:/dev/video0").unwrap(),
            SourceSpec::V4l("/dev/video0".into())
        );
        assert!(SourceSpec::parse("rtsp://cam").is_err());
        let e = SourceSpec::parse("virtual:x").unwrap_err().to_string();
        assert!(e.contains("SEED is a whole number"), "{e}");
        let e = SourceSpec::parse("dir:").unwrap_err().to_string();
        assert!(
            e.ends_with("gives nothing after the colon, e.g. dir:/home/lab/frames"),
            "{e}"
        );
        let e = SourceSpec::parse("virtual: ").unwrap_err().to_string();
        assert!(e.ends_with("e.g. virtual:1"), "{e}");
    }

    #[test]
    fn spec_kinds_are_read_in_any_case_and_spaces_after_the_colon_are_dropped() {
        assert_eq!(
            SourceSpec::parse("DIR: /data/frames ").unwrap(),
            SourceSpec::Dir("/data/frames".into())
        );
        assert_eq!(
            SourceSpec::parse("File:a.png").unwrap(),
            SourceSpec::File("a.png".into())
        );
        assert_eq!(
            SourceSpec::parse("Virtual:3").unwrap(),
            SourceSpec::Virtual(3)
        );
    }

    #[test]
    fn a_bare_folder_or_picture_is_named_with_the_spec_that_replays_it() {
        let dir = tempfile::tempdir().unwrap();
        let picture = dir.path().join("frame.png");
        test_picture().save(&picture).unwrap();
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, "x").unwrap();
        let folder = dir.path().display().to_string();
        let e = SourceSpec::parse(&folder).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!("a folder; replay it with dir:{folder}")),
            "{e}"
        );
        let e = SourceSpec::parse(&picture.display().to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a picture; replay it with file:"), "{e}");
        for other in [notes.display().to_string(), "rtsp://cam".into()] {
            let e = SourceSpec::parse(&other).unwrap_err().to_string();
            assert!(
                e.ends_with("use v4l:/dev/videoN, dir:PATH, file:PATH or virtual:SEED"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_camera_path_that_is_missing_or_not_a_device_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("video0");
        std::fs::write(&file, "").unwrap();
        let missing = check_camera_path(&dir.path().join("video9")).unwrap_err();
        assert!(missing.starts_with("no such camera device"), "{missing}");
        for not_a_device in [dir.path(), file.as_path()] {
            let e = check_camera_path(not_a_device).unwrap_err();
            assert!(e.starts_with("not a camera device"), "{e}");
        }
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(camera_open_message(&denied).contains("`video` group"));
        let other = std::io::Error::from_raw_os_error(16);
        assert!(camera_open_message(&other).starts_with("cannot open: "));
    }

    #[test]
    fn a_folder_given_as_a_file_or_a_file_as_a_folder_says_which_to_use() {
        let dir = tempfile::tempdir().unwrap();
        let picture = dir.path().join("frame.png");
        test_picture().save(&picture).unwrap();
        let e = ReplaySource::file(dir.path()).err().unwrap().to_string();
        assert!(
            e.ends_with("a folder, not an image file: replay a folder with dir:PATH"),
            "{e}"
        );
        let e = ReplaySource::dir(&picture).err().unwrap().to_string();
        assert!(
            e.ends_with("a file, not a folder: replay one picture with file:PATH"),
            "{e}"
        );
        let e = ReplaySource::file(&dir.path().join("gone.png"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.ends_with("no such image file"), "{e}");
        let e = ReplaySource::dir(&dir.path().join("gone")).err().unwrap();
        assert!(e.to_string().ends_with("gone: no such folder"), "{e}");
        assert!(ReplaySource::file(&picture).is_ok() && ReplaySource::dir(dir.path()).is_ok());
    }

    #[test]
    fn a_video_given_for_replay_says_how_to_replay_its_frames() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("slide 4.MP4");
        std::fs::write(&video, b"\0\0\0\x18ftypmp42").unwrap();
        let e = ReplaySource::file(&video).err().unwrap().to_string();
        let advice = format!(
            "marrowscope replays pictures, not videos: save the video's frames as pictures (e.g. \
             ffmpeg -i \"{}\" frames/%05d.png) and replay the folder with dir:frames",
            video.display()
        );
        assert_eq!(e, format!("{}: {advice}", video.display()));
        let e = ReplaySource::dir(dir.path()).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "{}: holds no image files, only 1 .mp4 file; {advice}",
                dir.path().display()
            )
        );
    }

    /// A 4x2 picture with a different colour in every pixel.
    fn test_picture() -> RgbImage {
        RgbImage::from_fn(4, 2, |x, y| {
            image::Rgb([40 * x as u8 + 10, 100 * y as u8 + 20, 200 - 30 * x as u8])
        })
    }

    /// Saves the test picture under each name in `dir` (format from the extension): each is listed as
    /// a picture and read back as saved.
    fn assert_read_as_saved(dir: &Path, names: &[&str]) {
        let picture = test_picture();
        for name in names {
            let path = dir.join(name);
            picture.save(&path).unwrap();
            assert!(is_image_file(&path), "{name}");
            assert_eq!(read_rgb(&path).unwrap(), picture, "{name}");
        }
    }

    #[test]
    fn png_and_bmp_are_read_as_saved() {
        let dir = tempfile::tempdir().unwrap();
        assert_read_as_saved(dir.path(), &["a.png", "b.bmp"]);
        assert!(!is_image_file(Path::new("notes.txt")));
        let err = read_rgb(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with(": a folder, not an image file"), "{err}");
        // A folder named like a picture is not listed among a folder's pictures.
        let folder = dir.path().join("frames.png");
        std::fs::create_dir(&folder).unwrap();
        assert!(!is_image_file(&folder));
    }

    #[cfg(feature = "tiff")]
    #[test]
    fn tiff_is_read_as_saved_in_8_and_16_bits() {
        let dir = tempfile::tempdir().unwrap();
        let picture = test_picture();
        assert_read_as_saved(dir.path(), &["c.tif", "d.TIFF"]);
        // 16 bits a channel, as scientific cameras save: read as the 8-bit picture it holds
        let deep = image::DynamicImage::ImageRgb8(picture.clone()).to_rgb16();
        let path = dir.path().join("deep.tif");
        deep.save(&path).unwrap();
        assert_eq!(read_rgb(&path).unwrap(), picture);
        // a listed extension on what is not that format is an error naming the file
        let fake = dir.path().join("fake.tif");
        std::fs::write(&fake, b"II*\0 not really a tiff").unwrap();
        let err = read_rgb(&fake).unwrap_err().to_string();
        assert!(err.contains("fake.tif"), "{err}");
    }

    #[test]
    fn a_picture_too_large_to_decode_is_a_clear_recoverable_error() {
        // A BMP header for 40,000 × 40,000 pixels of 24 bits (4.8 GB decoded), without the pixels:
        // refused from its header, before anything is allocated.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.bmp");
        let side = 40_000u32.to_le_bytes();
        let mut bmp = b"BM".to_vec();
        bmp.extend([0u8; 8]); // file size (unchecked), reserved
        bmp.extend(54u32.to_le_bytes()); // pixel data offset
        bmp.extend(40u32.to_le_bytes()); // BITMAPINFOHEADER
        bmp.extend(side);
        bmp.extend(side);
        bmp.extend(1u16.to_le_bytes()); // planes
        bmp.extend(24u16.to_le_bytes()); // bits per pixel
        bmp.extend([0u8; 24]); // no compression; sizes and palette left at 0
        std::fs::write(&path, bmp).unwrap();
        let err = read_rgb(&path).unwrap_err();
        assert!(
            err.is_recoverable(),
            "a frame skipped, not the end of the run"
        );
        let message = err.to_string();
        assert!(
            message.ends_with("huge.bmp: 40000 × 40000 px is too large to read (over the decoder's 512 MB); camera frames and cell crops are far smaller"),
            "{message}"
        );
    }

    #[test]
    fn tiff_left_out_of_the_build_is_a_clear_recoverable_error() {
        let path = Path::new("frames/f001.tif");
        let err = refuse_left_out_format(path, Some(image::ImageFormat::Tiff), false).unwrap_err();
        assert!(
            err.is_recoverable(),
            "a frame skipped and counted, not the end of the run"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("frames/f001.tif: ") && message.contains("PNG"),
            "{message}"
        );
        assert!(!message.contains('\n'));
        assert!(refuse_left_out_format(path, Some(image::ImageFormat::Tiff), true).is_ok());
        assert!(refuse_left_out_format(path, Some(image::ImageFormat::Png), false).is_ok());
        assert!(refuse_left_out_format(path, None, false).is_ok());
    }

    #[test]
    fn a_picture_in_a_format_not_read_is_named_with_the_formats_that_are() {
        let err = refuse_left_out_format(
            Path::new("crops/c1.webp"),
            Some(image::ImageFormat::WebP),
            true,
        )
        .unwrap_err();
        assert!(err.is_recoverable());
        assert_eq!(
            err.to_string(),
            "crops/c1.webp: a WEBP picture, which marrowscope does not read; save it as PNG, JPEG or BMP"
        );
        let gif = refuse_left_out_format(Path::new("c.jpg"), Some(image::ImageFormat::Gif), true);
        assert!(gif.unwrap_err().to_string().contains("a GIF picture"));
    }

    /// A stained cell: a purple disc on a pink field.
    fn stained_crop(side: u32) -> RgbImage {
        let centre = side as f32 / 2.0;
        RgbImage::from_fn(side, side, |x, y| {
            let r = ((x as f32 - centre).powi(2) + (y as f32 - centre).powi(2)).sqrt();
            if r < side as f32 / 3.0 {
                image::Rgb([120, 60, 150])
            } else {
                image::Rgb([230, 200, 210])
            }
        })
    }

    #[test]
    fn a_crop_too_small_or_without_colour_is_refused_and_a_stained_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let save = |name: &str, picture: RgbImage| {
            let path = dir.path().join(name);
            picture.save(&path).unwrap();
            path
        };
        let stained = save("cell.png", stained_crop(64));
        assert_eq!(read_crop(&stained).unwrap().dimensions(), (64, 64));

        let tiny = save("tiny.png", stained_crop(MIN_CROP_SIDE - 1));
        let message = read_crop(&tiny).unwrap_err().to_string();
        assert!(
            message.contains("tiny.png: 31 × 31 px is too small"),
            "{message}"
        );

        let grey = DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(stained_crop(64)).to_luma8());
        let grey = save("grey.png", grey.to_rgb8());
        let message = read_crop(&grey).unwrap_err().to_string();
        assert!(message.contains("grey.png: has no colour"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn a_picture_with_a_transparent_part_is_refused_and_an_opaque_alpha_read() {
        let dir = tempfile::tempdir().unwrap();
        let cell = stained_crop(64);
        let with_alpha = |see_through: &dyn Fn(u32, u32) -> bool| {
            image::RgbaImage::from_fn(64, 64, |x, y| {
                let [r, g, b] = cell.get_pixel(x, y).0;
                if see_through(x, y) {
                    image::Rgba([0, 0, 0, 0])
                } else {
                    image::Rgba([r, g, b, u8::MAX])
                }
            })
        };
        // A cut-out: the cell kept, its surround (the outer 16 px on each side) transparent black.
        let cut_out = dir.path().join("cut-out.png");
        let inside = |v: u32| (16..48).contains(&v);
        with_alpha(&|x, y| !(inside(x) && inside(y)))
            .save(&cut_out)
            .unwrap();
        let err = read_crop(&cut_out).unwrap_err();
        assert!(
            err.is_recoverable(),
            "a replayed frame is skipped, not fatal"
        );
        let message = err.to_string();
        assert!(
            message.contains("cut-out.png: 75 % of it is transparent"),
            "{message}"
        );
        assert!(!message.contains('\n'));

        // The same in 16 bits a channel.
        let deep = dir.path().join("deep.png");
        DynamicImage::ImageRgba8(with_alpha(&|x, _| x < 32))
            .to_rgba16()
            .save(&deep)
            .unwrap();
        let message = read_rgb(&deep).unwrap_err().to_string();
        assert!(message.contains("50 % of it is transparent"), "{message}");

        // An alpha channel opaque everywhere, or nearly (one stray pixel), changes nothing.
        for (name, stray) in [("opaque.png", None), ("stray.png", Some((3, 5)))] {
            let path = dir.path().join(name);
            with_alpha(&|x, y| Some((x, y)) == stray)
                .save(&path)
                .unwrap();
            let read = read_crop(&path).unwrap();
            let differing = read.pixels().zip(cell.pixels()).filter(|(a, b)| a != b);
            assert_eq!(differing.count(), usize::from(stray.is_some()), "{name}");
        }
    }

    #[test]
    fn yuyv_decodes_grey_and_colour() {
        // Two pixels of mid grey, then two pixels of saturated blue-ish chroma.
        let data = [128u8, 128, 128, 128, 41, 240, 41, 110];
        let img = yuyv_to_rgb(&data, 2, 2).unwrap();
        let grey = img.get_pixel(0, 0).0;
        assert!(grey.iter().all(|&c| (125..=135).contains(&c)), "{grey:?}");
        let blue = img.get_pixel(0, 1).0;
        assert!(blue[2] > 200 && blue[0] < 40, "{blue:?}");
    }

    #[test]
    fn yuyv_short_buffer_is_an_error() {
        assert!(yuyv_to_rgb(&[0u8; 10], 4, 4).is_err());
    }

    #[test]
    fn mjpeg_roundtrip_and_garbage() {
        let img = RgbImage::from_pixel(16, 8, image::Rgb([200, 40, 90]));
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let back = mjpeg_to_rgb(&bytes, 16, 8).unwrap();
        assert_eq!(back.dimensions(), (16, 8));
        let px = back.get_pixel(8, 4).0;
        assert!(
            (px[0] as i32 - 200).abs() < 12 && (px[1] as i32 - 40).abs() < 12,
            "{px:?}"
        );
        assert!(mjpeg_to_rgb(&bytes[..bytes.len() / 3], 16, 8).is_err());
        assert!(mjpeg_to_rgb(b"not a jpeg", 16, 8).is_err());
        let err = mjpeg_to_rgb(&bytes, 640, 480).unwrap_err().to_string();
        assert!(err.contains("16x8") && err.contains("640x480"), "{err}");
    }

    /// A 16x16 colour JPEG (4:2:0 from the encoder) and the offset of its frame header segment.
    fn colour_jpeg() -> (Vec<u8>, usize) {
        let img = RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 15, y as u8 * 15, 90]));
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
            .unwrap();
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        (bytes, sof)
    }

    #[test]
    fn frame_header_gives_size_and_sampling() {
        let (bytes, _) = colour_jpeg();
        let header = JpegFrameHeader::read(&bytes).unwrap();
        assert_eq!((header.width, header.height), (16, 16));
        assert_eq!(header.sampling.len(), 3);
        assert!(header.check_sampling().is_ok(), "{header:?}");
        assert!(JpegFrameHeader::read(&bytes[..20]).is_err());
    }

    #[test]
    fn a_second_frame_header_of_another_size_is_refused() {
        // fuzz/regressions/frame_decode: the size check reads the first frame header, the decoder
        // passed over it (a hierarchical SOF6 marker) and took the later one. A copy of the frame
        // header as SOF6, with another size, goes in ahead of it.
        for (first, expected) in [(8u8, "exceeds"), (32, "decoded 16x16")] {
            let (bytes, sof) = colour_jpeg();
            let length = usize::from(bytes[sof + 2]) << 8 | usize::from(bytes[sof + 3]);
            let mut extra = bytes[sof..sof + 2 + length].to_vec();
            (extra[1], extra[6], extra[8]) = (0xC6, first, first);
            let mut two = bytes[..sof].to_vec();
            two.extend(extra);
            two.extend(&bytes[sof..]);
            let side = u32::from(first);
            let err = mjpeg_to_rgb(&two, side, side).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn chroma_sampled_finer_than_luma_is_refused_before_decoding() {
        // The layout that made zune-jpeg 0.5.15 panic (fuzz/regressions/frame_decode).
        let (mut bytes, sof) = colour_jpeg();
        // Segment: marker, length (2), precision, height (2), width (2), count, then 3 per component.
        let (luma, cb) = (sof + 11, sof + 14);
        bytes[luma] = 0x11;
        bytes[cb] = 0x22;
        let err = mjpeg_to_rgb(&bytes, 16, 16).unwrap_err().to_string();
        assert!(err.contains("chroma finer than luma"), "{err}");
    }
}
