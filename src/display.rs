//! What the operator sees: the live count screen drawn with embedded-graphics onto any
//! `DrawTarget`, and the display backends chosen in the board profile (PNG snapshot for
//! headless/desktop use, none).

use crate::config::DisplayConfig;
use crate::tally::Tally;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_7X13_BOLD, FONT_9X15_BOLD};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
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
}

/// An RGB image that embedded-graphics can draw on.
pub struct Canvas {
    pub image: RgbImage,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            image: RgbImage::new(width, height),
        }
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.image.width(), self.image.height())
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = self.image.dimensions();
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < w && (p.y as u32) < h {
                self.image
                    .put_pixel(p.x as u32, p.y as u32, Rgb([c.r(), c.g(), c.b()]));
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

/// Draws the live count screen on a colour target of any size (from 240x240 up).
pub fn draw_count_screen<D>(
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
    let bold = MonoTextStyle::new(&FONT_7X13_BOLD, TEXT);
    let small = MonoTextStyle::new(&FONT_6X10, DIM);
    let body = MonoTextStyle::new(&FONT_6X10, TEXT);
    Text::new(
        &format!("{} / {}", tally.classified(), tally.target),
        Point::new(6, 16),
        title,
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
        Point::new(size.width as i32 - 6 - 6 * state.len() as i32, 14),
        small,
    )
    .draw(target)?;
    // Progress bar towards the target.
    let frac = (tally.classified() as f32 / tally.target.max(1) as f32).min(1.0);
    let bar_w = size.width.saturating_sub(12);
    Rectangle::new(Point::new(6, 22), Size::new(bar_w, 5))
        .into_styled(PrimitiveStyle::with_fill(Rgb888::new(50, 55, 75)))
        .draw(target)?;
    Rectangle::new(
        Point::new(6, 22),
        Size::new((bar_w as f32 * frac) as u32, 5),
    )
    .into_styled(PrimitiveStyle::with_fill(ACCENT))
    .draw(target)?;
    // Classes, most frequent first.
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
        let style = if class == crate::tally::BLAST {
            MonoTextStyle::new(&FONT_7X13_BOLD, ALERT)
        } else {
            bold
        };
        Text::new(
            &format!("{class:<4}{n:>4} {pct:5.1}%"),
            Point::new(6, y),
            style,
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
    // Footer: blasts with interval, M:E, review, fps, alerts.
    let (blast, ci) = tally.blast_percent();
    let ci = ci
        .map(|i| format!(" (95% CI {:.1}-{:.1})", i.low, i.high))
        .unwrap_or_default();
    let me = tally
        .me_ratio()
        .map(|r| format!("M:E {r:.2}"))
        .unwrap_or_else(|| "M:E n/a".into());
    let base = size.height as i32 - 6;
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
    let alert = status.alerts.last().cloned();
    match alert {
        Some(a) => Text::new(
            &a,
            Point::new(6, base),
            MonoTextStyle::new(&FONT_6X10, ALERT),
        )
        .draw(target)?,
        None => Text::new(
            &format!("{:.1} fps  frame {}", status.fps, status.frames),
            Point::new(6, base),
            small,
        )
        .draw(target)?,
    };
    Ok(())
}

/// A place the count screen goes.
pub trait Display {
    /// Redraws the screen with the current count.
    fn show(&mut self, tally: &Tally, status: &ScreenStatus) -> Result<(), DisplayError>;
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
        let tmp = self.path.with_extension("png.tmp");
        self.canvas
            .image
            .save_with_format(&tmp, image::ImageFormat::Png)
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))
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
        DisplayConfig::Ssd1306 { .. } => Err(unavailable("ssd1306")),
        DisplayConfig::Spi { .. } => Err(unavailable("spi")),
        DisplayConfig::Framebuffer { .. } => Err(unavailable("framebuffer")),
    }
}

fn unavailable(kind: &str) -> DisplayError {
    DisplayError::Unavailable {
        kind: kind.into(),
        message: "this panel driver is not in this release; use Png or None in the board profile"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::Entry;

    #[test]
    fn count_screen_shows_counts() {
        let mut tally = Tally::new(200);
        for (i, c) in ["NGS", "NGS", "BLA", "LYT"].iter().enumerate() {
            tally
                .apply(&Entry::Count {
                    id: i as u64,
                    class: c.to_string(),
                    p: 0.9,
                    frame: 0,
                    x: 0.0,
                    y: 0.0,
                })
                .unwrap();
        }
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
}
