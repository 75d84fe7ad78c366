//! What the operator sees: the live count screen drawn with embedded-graphics onto any
//! `DrawTarget`, and the display backends chosen in the board profile (PNG snapshot for
//! headless/desktop use, none, an SSD1306 OLED on I2C; the Linux framebuffer is in `framebuffer`,
//! SPI colour panels in `spi_panel`).

use crate::config::DisplayConfig;
use crate::tally::Tally;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_7X13_BOLD, FONT_9X15_BOLD};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::{BinaryColor, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;
use image::{Rgb, RgbImage};
use std::convert::Infallible;
use std::path::PathBuf;
use thiserror::Error;

/// Errors from display backends.
#[derive(Debug, Error)]
pub enum DisplayError {
    #[error("{path}: cannot write screen snapshot: {message}")]
    Write { path: String, message: String },
    #[error("display {kind}: {message}")]
    Unavailable { kind: String, message: String },
}

/// Everything the live count screen shows besides the tally.
#[derive(Debug, Clone, Default)]
pub struct ScreenStatus {
    pub frames: u64,
    pub skipped: u64,
    pub fps: f32,
    pub alerts: Vec<String>,
    pub source: String,
    pub paused: bool,
    /// The last message for the operator (a correction, a reset question), shown in the footer.
    pub notice: Option<(String, std::time::Instant)>,
    /// Which screen the operator chose (next-screen button/key); displays with one screen ignore it.
    pub screen: usize,
    /// The latest camera frame with its cells boxed and labelled, for displays that show it.
    pub preview: Option<std::sync::Arc<RgbImage>>,
}

/// How a drawing colour becomes an image pixel.
pub trait CanvasPixel: image::Pixel<Subpixel = u8> {
    type Color: PixelColor;
    fn from_color(color: Self::Color) -> Self;
}

impl CanvasPixel for Rgb<u8> {
    type Color = Rgb888;
    fn from_color(c: Rgb888) -> Self {
        Rgb([c.r(), c.g(), c.b()])
    }
}

impl CanvasPixel for image::Luma<u8> {
    type Color = BinaryColor;
    fn from_color(c: BinaryColor) -> Self {
        image::Luma([if c.is_on() { 255 } else { 0 }])
    }
}

/// An image that embedded-graphics can draw on: RGB for colour panels and PNG snapshots, grey for
/// monochrome OLED previews.
pub struct ImageCanvas<P: CanvasPixel> {
    pub image: image::ImageBuffer<P, Vec<u8>>,
}

/// Colour canvas.
pub type Canvas = ImageCanvas<Rgb<u8>>;
/// Monochrome canvas.
pub type MonoCanvas = ImageCanvas<image::Luma<u8>>;

impl<P: CanvasPixel> ImageCanvas<P> {
    pub fn new(width: u32, height: u32) -> ImageCanvas<P> {
        ImageCanvas {
            image: image::ImageBuffer::new(width, height),
        }
    }
}

impl<P: CanvasPixel> OriginDimensions for ImageCanvas<P> {
    fn size(&self) -> Size {
        Size::new(self.image.width(), self.image.height())
    }
}

impl<P: CanvasPixel> DrawTarget for ImageCanvas<P> {
    type Color = P::Color;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = self.image.dimensions();
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < w && (p.y as u32) < h {
                self.image
                    .put_pixel(p.x as u32, p.y as u32, P::from_color(c));
            }
        }
        Ok(())
    }
}

const BACKGROUND: Rgb888 = Rgb888::new(16, 20, 32);
const TEXT: Rgb888 = Rgb888::new(230, 232, 240);
const DIM: Rgb888 = Rgb888::new(140, 146, 170);
const ACCENT: Rgb888 = Rgb888::new(120, 90, 200);
const ALERT: Rgb888 = Rgb888::new(235, 70, 70);
const ACCENT_LIGHT: Rgb888 = Rgb888::new(190, 170, 250);

/// Draws the screen the operator chose on a colour target of any size (from 240x240 up): the
/// live counts, or the last counted cells (to check before correcting one).
pub fn draw_count_screen<D>(
    target: &mut D,
    tally: &Tally,
    status: &ScreenStatus,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888> + OriginDimensions,
{
    match status.screen % 2 {
        0 => draw_counts(target, tally, status),
        _ => draw_recent_cells(target, tally, status),
    }
}

/// The last counted cells, newest first, with their probability; corrected ones show both classes.
fn draw_recent_cells<D>(
    target: &mut D,
    tally: &Tally,
    status: &ScreenStatus,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888> + OriginDimensions,
{
    let size = target.size();
    target.clear(BACKGROUND)?;
    let title = MonoTextStyle::new(&FONT_9X15_BOLD, TEXT);
    let body = MonoTextStyle::new(&FONT_6X10, TEXT);
    let small = MonoTextStyle::new(&FONT_6X10, DIM);
    Text::new("Last cells", Point::new(6, 16), title).draw(target)?;
    let rows = ((size.height as i32 - 40) / 12).max(1) as usize;
    for (i, r) in tally.records().iter().rev().take(rows).enumerate() {
        let class = if r.class == r.model_class {
            r.class.clone()
        } else {
            format!("{} (model {})", r.class, r.model_class)
        };
        let line = format!("#{:<5} {class:<18} p {:.2}", r.id, r.probability);
        Text::new(&line, Point::new(6, 34 + 12 * i as i32), body).draw(target)?;
    }
    let foot = match &status.notice {
        Some((n, _)) => n.clone(),
        None => "correct: review / hold: discard".into(),
    };
    Text::new(&foot, Point::new(6, size.height as i32 - 6), small).draw(target)?;
    Ok(())
}

/// The live count: total and target, classes with bars, blasts with interval, M:E, review, alerts.
fn draw_counts<D>(target: &mut D, tally: &Tally, status: &ScreenStatus) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888> + OriginDimensions,
{
    target.clear(BACKGROUND)?;
    draw_progress(target, tally, status)?;
    draw_class_rows(target, tally)?;
    draw_footer(target, tally, status)
}

/// The count against its target, whether it is counting, paused or done, and a bar towards the
/// target, along the top.
fn draw_progress<D>(target: &mut D, tally: &Tally, status: &ScreenStatus) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888> + OriginDimensions,
{
    let width = target.size().width;
    Text::new(
        &format!("{} / {}", tally.classified(), tally.target),
        Point::new(6, 16),
        MonoTextStyle::new(&FONT_9X15_BOLD, TEXT),
    )
    .draw(target)?;
    let state = if tally.target_reached() {
        "TARGET REACHED"
    } else if status.paused {
        "PAUSED"
    } else {
        "counting"
    };
    Text::new(
        state,
        Point::new(width as i32 - 6 - 6 * state.len() as i32, 14),
        MonoTextStyle::new(&FONT_6X10, DIM),
    )
    .draw(target)?;
    let frac = (tally.classified() as f32 / tally.target.max(1) as f32).min(1.0);
    let bar_w = width.saturating_sub(12);
    Rectangle::new(Point::new(6, 22), Size::new(bar_w, 5))
        .into_styled(PrimitiveStyle::with_fill(Rgb888::new(50, 55, 75)))
        .draw(target)?;
    Rectangle::new(
        Point::new(6, 22),
        Size::new((bar_w as f32 * frac) as u32, 5),
    )
    .into_styled(PrimitiveStyle::with_fill(ACCENT))
    .draw(target)?;
    Ok(())
}

/// One row per class, most frequent first (cells for review left to the footer): count, percent
/// and a bar, blasts in the alert colour; as many rows as fit above the footer.
fn draw_class_rows<D>(target: &mut D, tally: &Tally) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888> + OriginDimensions,
{
    let size = target.size();
    let mut counts: Vec<(String, u64)> = tally
        .counts()
        .into_iter()
        .filter(|(c, _)| c != crate::classify::REVIEW)
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let row_h = 13;
    let footer_rows = 4;
    let max_rows = ((size.height as i32 - 34 - footer_rows * 12) / row_h).max(1) as usize;
    for (i, (class, n)) in counts.iter().take(max_rows).enumerate() {
        let y = 42 + i as i32 * row_h;
        let pct = tally.percent(class);
        let colour = if class == crate::tally::BLAST {
            ALERT
        } else {
            TEXT
        };
        Text::new(
            &format!("{class:<4}{n:>4} {pct:5.1}%"),
            Point::new(6, y),
            MonoTextStyle::new(&FONT_7X13_BOLD, colour),
        )
        .draw(target)?;
        let x0 = 6 + 7 * 15;
        let w = size.width as i32 - x0 - 6;
        if w > 10 {
            let len = (w as f64 * pct / 100.0).round() as u32;
            Rectangle::new(Point::new(x0, y - 8), Size::new(len.max(1), 7))
                .into_styled(PrimitiveStyle::with_fill(ACCENT))
                .draw(target)?;
        }
    }
    Ok(())
}

/// The footer: cells for review, M:E and skipped frames; blasts with their interval; and the last
/// line: a notice to the operator, else the last alert, else speed and frame number.
fn draw_footer<D>(target: &mut D, tally: &Tally, status: &ScreenStatus) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888> + OriginDimensions,
{
    let body = MonoTextStyle::new(&FONT_6X10, TEXT);
    let (blast, ci) = tally.blast_percent();
    let ci = ci
        .map(|i| format!(" (95% CI {:.1}-{:.1})", i.low, i.high))
        .unwrap_or_default();
    let me = tally
        .me_ratio()
        .map(|r| format!("M:E {r:.2}"))
        .unwrap_or_else(|| "M:E n/a".into());
    let base = target.size().height as i32 - 6;
    Text::new(
        &format!(
            "review {}  {}  skipped {}",
            tally.review(),
            me,
            status.skipped
        ),
        Point::new(6, base - 24),
        body,
    )
    .draw(target)?;
    Text::new(
        &format!("blasts {blast:.1}%{ci}"),
        Point::new(6, base - 12),
        body,
    )
    .draw(target)?;
    let (last_line, colour) = match (&status.notice, status.alerts.last()) {
        (Some((notice, _)), _) => (notice.clone(), ACCENT_LIGHT),
        (None, Some(alert)) => (alert.clone(), ALERT),
        (None, None) => (
            format!("{:.1} fps  frame {}", status.fps, status.frames),
            DIM,
        ),
    };
    Text::new(
        &last_line,
        Point::new(6, base),
        MonoTextStyle::new(&FONT_6X10, colour),
    )
    .draw(target)?;
    Ok(())
}

/// A place the count screen goes.
pub trait Display {
    /// Redraws the screen with the current count.
    fn show(&mut self, tally: &Tally, status: &ScreenStatus) -> Result<(), DisplayError>;

    /// The largest camera preview this display shows, if it shows one.
    fn preview_size(&self) -> Option<(u32, u32)> {
        None
    }
}

/// No display: headless counting.
pub struct NoDisplay;

impl Display for NoDisplay {
    fn show(&mut self, _: &Tally, _: &ScreenStatus) -> Result<(), DisplayError> {
        Ok(())
    }
}

/// Writes the count screen as a PNG file (atomically, so a reader never sees half a picture).
pub struct PngDisplay {
    path: PathBuf,
    canvas: Canvas,
}

impl PngDisplay {
    pub fn new(path: PathBuf, width: u32, height: u32) -> PngDisplay {
        PngDisplay {
            path,
            canvas: Canvas::new(width, height),
        }
    }
}

impl Display for PngDisplay {
    fn show(&mut self, tally: &Tally, status: &ScreenStatus) -> Result<(), DisplayError> {
        let Ok(()) = draw_count_screen(&mut self.canvas, tally, status);
        let err = |message: String| DisplayError::Write {
            path: self.path.display().to_string(),
            message,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        crate::report::save_png(&self.path, &self.canvas.image).map_err(|e| err(e.message))
    }
}

/// Opens the display a profile names; a relative PNG path is inside the report folder.
pub fn open_display(
    cfg: &DisplayConfig,
    report_dir: &std::path::Path,
) -> Result<Box<dyn Display>, DisplayError> {
    match cfg {
        DisplayConfig::None => Ok(Box::new(NoDisplay)),
        DisplayConfig::Png {
            path,
            width,
            height,
        } => Ok(Box::new(PngDisplay::new(
            report_dir.join(path),
            *width,
            *height,
        ))),
        DisplayConfig::Ssd1306 { i2c, address } => open_ssd1306(i2c, *address),
        DisplayConfig::Spi {
            spi,
            controller,
            width,
            height,
            invert,
            gpio_chip,
            dc_line,
            reset_line,
        } => {
            let geometry = crate::spi_panel::PanelGeometry {
                width: *width as u16,
                height: *height as u16,
                invert: *invert,
            };
            crate::spi_panel::open_spi_panel(
                spi,
                *controller,
                geometry,
                gpio_chip,
                *dc_line,
                *reset_line,
            )
        }
        DisplayConfig::Framebuffer { device } => Ok(Box::new(
            crate::framebuffer::FramebufferDisplay::open(std::path::Path::new(device))?,
        )),
    }
}

/// Draws the compact count screen for a 128x64 monochrome OLED.
pub fn draw_mono_screen<D>(
    target: &mut D,
    tally: &Tally,
    status: &ScreenStatus,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let style = MonoTextStyle::new(&FONT_6X10, BinaryColor::On);
    target.clear(BinaryColor::Off)?;
    let head = format!(
        "{}/{} rev {} {:.0}fps",
        tally.classified(),
        tally.target,
        tally.review(),
        status.fps
    );
    Text::new(&head, Point::new(0, 8), style).draw(target)?;
    if status.screen % 2 == 1 {
        for (i, r) in tally.records().iter().rev().take(4).enumerate() {
            let line = format!("#{:<4} {:<6} {:.2}", r.id % 100_000, r.class, r.probability);
            Text::new(&line, Point::new(0, 20 + 11 * i as i32), style).draw(target)?;
        }
        return Ok(());
    }
    let mut counts: Vec<(String, u64)> = tally
        .counts()
        .into_iter()
        .filter(|(c, _)| c != crate::classify::REVIEW)
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (i, (class, n)) in counts.iter().take(3).enumerate() {
        let line = format!("{class:<4}{n:>4} {:5.1}%", tally.percent(class));
        Text::new(&line, Point::new(0, 20 + 11 * i as i32), style).draw(target)?;
    }
    let (blast, ci) = tally.blast_percent();
    let last = match (status.alerts.last(), ci) {
        _ if status.notice.is_some() => status
            .notice
            .as_ref()
            .map_or(String::new(), |n| n.0.clone()),
        (Some(_), _) => "ALERT: see log".to_string(),
        (None, Some(i)) => format!("BLA {blast:.1}% {:.0}-{:.0}", i.low, i.high),
        (None, None) => "BLA -".to_string(),
    };
    Text::new(&last, Point::new(0, 62), style).draw(target)?;
    Ok(())
}

/// A 128x64 SSD1306 OLED on any I2C bus (on the board: linux-embedded-hal's `I2cdev`).
pub struct Ssd1306Display<I: embedded_hal::i2c::I2c> {
    oled: ssd1306::Ssd1306<
        display_interface_i2c::I2CInterface<I>,
        ssd1306::size::DisplaySize128x64,
        ssd1306::mode::BufferedGraphicsMode<ssd1306::size::DisplaySize128x64>,
    >,
}

impl<I: embedded_hal::i2c::I2c> Ssd1306Display<I> {
    /// Sends the panel's init sequence.
    pub fn new(i2c: I, address: u8) -> Result<Ssd1306Display<I>, DisplayError> {
        use ssd1306::prelude::*;
        let interface = ssd1306::I2CDisplayInterface::new_custom_address(i2c, address);
        let mut oled =
            ssd1306::Ssd1306::new(interface, DisplaySize128x64, DisplayRotation::Rotate0)
                .into_buffered_graphics_mode();
        oled.init()
            .map_err(|e| ssd1306_error(format!("init: {e:?}")))?;
        Ok(Ssd1306Display { oled })
    }
}

fn ssd1306_error(message: String) -> DisplayError {
    DisplayError::Unavailable {
        kind: "ssd1306".into(),
        message,
    }
}

impl<I: embedded_hal::i2c::I2c> Display for Ssd1306Display<I> {
    fn show(&mut self, tally: &Tally, status: &ScreenStatus) -> Result<(), DisplayError> {
        self.oled.clear_buffer();
        draw_mono_screen(&mut self.oled, tally, status)
            .map_err(|e| ssd1306_error(format!("draw: {e:?}")))?;
        self.oled
            .flush()
            .map_err(|e| ssd1306_error(format!("flush: {e:?}")))
    }
}

#[cfg(target_os = "linux")]
fn open_ssd1306(bus: &str, address: u8) -> Result<Box<dyn Display>, DisplayError> {
    let i2c =
        linux_embedded_hal::I2cdev::new(bus).map_err(|e| ssd1306_error(format!("{bus}: {e}")))?;
    Ok(Box::new(Ssd1306Display::new(i2c, address)?))
}

#[cfg(not(target_os = "linux"))]
fn open_ssd1306(bus: &str, _address: u8) -> Result<Box<dyn Display>, DisplayError> {
    Err(ssd1306_error(format!("{bus}: I2C needs Linux")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tally::Entry;

    /// A tally with one counted cell per listed class.
    pub(crate) fn tally_of(target: u32, classes: &[&str]) -> Tally {
        let mut tally = Tally::new(target);
        for (i, c) in classes.iter().enumerate() {
            let (id, class) = (i as u64, c.to_string());
            let entry = Entry::Count {
                id,
                class,
                p: 0.9,
                frame: 0,
                x: 0.0,
                y: 0.0,
                at: None,
            };
            tally.apply(&entry).unwrap();
        }
        tally
    }

    #[test]
    fn count_screen_shows_counts() {
        let tally = tally_of(200, &["NGS", "NGS", "BLA", "LYT"]);
        let mut canvas = Canvas::new(320, 240);
        let Ok(()) = draw_count_screen(&mut canvas, &tally, &ScreenStatus::default());
        // Something was drawn in the class rows and the progress bar is partly filled.
        let lit = canvas
            .image
            .pixels()
            .filter(|p| p.0 == [230, 232, 240])
            .count();
        assert!(lit > 200, "{lit}");
        assert_eq!(canvas.image.get_pixel(7, 24).0, [120, 90, 200]);
    }

    /// An I2C bus that records every write, standing in for /dev/i2c-1.
    #[derive(Default)]
    struct RecordingI2c {
        writes: Vec<(u8, Vec<u8>)>,
    }

    impl embedded_hal::i2c::ErrorType for RecordingI2c {
        type Error = embedded_hal::i2c::ErrorKind;
    }

    impl embedded_hal::i2c::I2c for RecordingI2c {
        fn transaction(
            &mut self,
            address: u8,
            operations: &mut [embedded_hal::i2c::Operation<'_>],
        ) -> Result<(), Self::Error> {
            for op in operations {
                if let embedded_hal::i2c::Operation::Write(bytes) = op {
                    self.writes.push((address, bytes.to_vec()));
                }
            }
            Ok(())
        }
    }

    #[test]
    fn ssd1306_init_sequence_and_pixel_stream() {
        let tally = tally_of(200, &["BLA"]);
        let oled = Ssd1306Display::new(RecordingI2c::default(), 0x3C).unwrap();
        let init: Vec<(u8, Vec<u8>)> = oled.oled.release().release().writes;
        assert!(
            init.iter().all(|(a, b)| *a == 0x3C && b[0] == 0x00),
            "commands go with control byte 0x00"
        );
        let commands: Vec<u8> = init.iter().flat_map(|(_, b)| b[1..].to_vec()).collect();
        assert_eq!(commands.first(), Some(&0xAE), "display off first");
        assert!(
            commands.contains(&0x8D) && commands.contains(&0xAF),
            "charge pump and display on"
        );
        let mut oled = Ssd1306Display::new(RecordingI2c::default(), 0x3D).unwrap();
        oled.show(&tally, &ScreenStatus::default()).unwrap();
        let bus = oled.oled.release().release();
        let pixels: Vec<u8> = bus
            .writes
            .iter()
            .filter(|(a, b)| *a == 0x3D && b[0] == 0x40)
            .flat_map(|(_, b)| b[1..].to_vec())
            .collect();
        assert_eq!(pixels.len(), 128 * 64 / 8, "one full frame of pixel data");
        let lit: u32 = pixels.iter().map(|b| b.count_ones()).sum();
        assert!(lit > 200, "text was drawn: {lit} pixels on");
    }
}
