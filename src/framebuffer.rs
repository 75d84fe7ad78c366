//! The Linux framebuffer (HDMI monitors, DSI panels): the count screen, or on a wide screen the
//! camera frame with its cell boxes and labels beside the counts, packed to the device's pixel
//! format (16-bit RGB565, 24-bit BGR, 32-bit BGRX) and written from the first byte.

use crate::display::{draw_count_screen, Canvas, Display, DisplayError, ScreenStatus};
use crate::tally::Tally;
use image::RgbImage;

/// Width of the count panel beside the camera frame.
pub const COUNT_PANEL_WIDTH: u32 = 320;
/// Screens at least this wide show the camera frame beside the counts.
pub const CAMERA_LAYOUT_MIN_WIDTH: u32 = 560;

/// A framebuffer device showing the count screen (and the camera frame when it is wide enough).
pub struct FramebufferDisplay {
    file: std::fs::File,
    device: String,
    stride: usize,
    bits_per_pixel: u32,
    canvas: Canvas,
    counts: Canvas,
}

/// Where the camera frame goes on a screen of `width` x `height`, or None when it is too narrow.
pub fn camera_area(width: u32, height: u32) -> Option<(u32, u32)> {
    (width >= CAMERA_LAYOUT_MIN_WIDTH).then(|| (width - COUNT_PANEL_WIDTH, height))
}

/// The camera screen: the latest frame (with its boxes and labels already drawn), scaled to fit
/// and centred on the left, the count panel (`counts`, drawn here) on the right.
pub fn draw_camera_screen(
    canvas: &mut Canvas,
    counts: &mut Canvas,
    tally: &Tally,
    status: &ScreenStatus,
) {
    let (w, h) = canvas.image.dimensions();
    let Ok(()) = draw_count_screen(counts, tally, status);
    for p in canvas.image.pixels_mut() {
        *p = image::Rgb([0, 0, 0]);
    }
    let left = w.saturating_sub(counts.image.width());
    if let Some(frame) = &status.preview {
        let scale = (left as f32 / frame.width() as f32).min(h as f32 / frame.height() as f32);
        let (fw, fh) = (
            ((frame.width() as f32 * scale) as u32).max(1),
            ((frame.height() as f32 * scale) as u32).max(1),
        );
        let fitted = image::imageops::resize(
            frame.as_ref(),
            fw,
            fh,
            image::imageops::FilterType::Triangle,
        );
        let (x, y) = ((left - fw.min(left)) / 2, (h - fh.min(h)) / 2);
        image::imageops::replace(&mut canvas.image, &fitted, x as i64, y as i64);
    }
    image::imageops::replace(&mut canvas.image, &counts.image, left as i64, 0);
}

impl FramebufferDisplay {
    /// Opens `/dev/fbN`, reading its geometry from `/sys/class/graphics/fbN/`.
    pub fn open(device: &std::path::Path) -> Result<FramebufferDisplay, DisplayError> {
        let shown = device.display().to_string();
        let err = |message: String| DisplayError::Unavailable {
            kind: format!("framebuffer {shown}"),
            message,
        };
        let name = device
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| err("not a device path".into()))?;
        let sys = std::path::Path::new("/sys/class/graphics").join(name);
        let read = |f: &str| {
            std::fs::read_to_string(sys.join(f))
                .map_err(|e| err(format!("{}: {e}", sys.join(f).display())))
        };
        let size = read("virtual_size")?;
        let (w, h) = size
            .trim()
            .split_once(',')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .ok_or_else(|| err(format!("unreadable virtual_size {size:?}")))?;
        let bpp: u32 = read("bits_per_pixel")?
            .trim()
            .parse()
            .map_err(|_| err("unreadable bits_per_pixel".into()))?;
        let stride: usize = read("stride")?
            .trim()
            .parse()
            .map_err(|_| err("unreadable stride".into()))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(device)
            .map_err(|e| err(e.to_string()))?;
        FramebufferDisplay::with_geometry(file, &shown, w, h, bpp, stride)
    }

    /// A framebuffer of known geometry on any writable file (tests use a plain file).
    pub fn with_geometry(
        file: std::fs::File,
        device: &str,
        width: u32,
        height: u32,
        bits_per_pixel: u32,
        stride: usize,
    ) -> Result<FramebufferDisplay, DisplayError> {
        if !matches!(bits_per_pixel, 16 | 24 | 32)
            || stride < width as usize * bits_per_pixel as usize / 8
        {
            return Err(DisplayError::Unavailable {
                kind: format!("framebuffer {device}"),
                message: format!(
                    "unsupported format: {bits_per_pixel} bits per pixel, stride {stride}"
                ),
            });
        }
        Ok(FramebufferDisplay {
            file,
            device: device.to_string(),
            stride,
            bits_per_pixel,
            counts: Canvas::new(COUNT_PANEL_WIDTH.min(width), height),
            canvas: Canvas::new(width, height),
        })
    }
}

/// Packs an RGB image into framebuffer rows of `stride` bytes.
pub fn pack_framebuffer(img: &RgbImage, bits_per_pixel: u32, stride: usize) -> Vec<u8> {
    let mut out = vec![0u8; stride * img.height() as usize];
    for (y, row) in out.chunks_exact_mut(stride).enumerate() {
        for x in 0..img.width() {
            let [r, g, b] = img.get_pixel(x, y as u32).0;
            let i = x as usize * bits_per_pixel as usize / 8;
            match bits_per_pixel {
                16 => {
                    let v = ((r as u16 >> 3) << 11) | ((g as u16 >> 2) << 5) | (b as u16 >> 3);
                    row[i..i + 2].copy_from_slice(&v.to_le_bytes());
                }
                24 => row[i..i + 3].copy_from_slice(&[b, g, r]),
                _ => row[i..i + 4].copy_from_slice(&[b, g, r, 0xff]),
            }
        }
    }
    out
}

impl Display for FramebufferDisplay {
    fn show(&mut self, tally: &Tally, status: &ScreenStatus) -> Result<(), DisplayError> {
        use std::io::{Seek, SeekFrom, Write};
        let (w, h) = self.canvas.image.dimensions();
        if camera_area(w, h).is_some() && status.screen.is_multiple_of(2) {
            draw_camera_screen(&mut self.canvas, &mut self.counts, tally, status);
        } else {
            let Ok(()) = draw_count_screen(&mut self.canvas, tally, status);
        }
        let bytes = pack_framebuffer(&self.canvas.image, self.bits_per_pixel, self.stride);
        let err = |e: std::io::Error| DisplayError::Write {
            path: self.device.clone(),
            message: e.to_string(),
        };
        self.file.seek(SeekFrom::Start(0)).map_err(err)?;
        self.file.write_all(&bytes).map_err(err)
    }

    fn preview_size(&self) -> Option<(u32, u32)> {
        let (w, h) = self.canvas.image.dimensions();
        camera_area(w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::tests::tally_of;

    #[test]
    fn framebuffer_writer_packs_16_24_and_32_bit_pixels() {
        let tally = tally_of(4, &["NGS"]);
        for (bpp, expect) in [
            (16u32, vec![0xd9u8, 0x7a]),
            (24, vec![200, 90, 120]),
            (32, vec![200, 90, 120, 0xff]),
        ] {
            let file = tempfile::NamedTempFile::new().unwrap();
            let stride = 320 * bpp as usize / 8 + 16;
            let mut fb = FramebufferDisplay::with_geometry(
                file.reopen().unwrap(),
                "fb-test",
                320,
                240,
                bpp,
                stride,
            )
            .unwrap();
            fb.show(&tally, &ScreenStatus::default()).unwrap();
            let bytes = std::fs::read(file.path()).unwrap();
            assert_eq!(bytes.len(), stride * 240);
            // The progress bar (accent colour 120, 90, 200) at x = 7, y = 24.
            let i = 24 * stride + 7 * bpp as usize / 8;
            assert_eq!(&bytes[i..i + expect.len()], &expect[..], "{bpp} bpp");
        }
        let file = tempfile::tempfile().unwrap();
        assert!(FramebufferDisplay::with_geometry(file, "fb", 320, 240, 8, 320).is_err());
    }
}
