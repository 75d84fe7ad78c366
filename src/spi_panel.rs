//! Colour TFT panels on SPI (ST7789 240x240 / 240x320, ILI9341 320x240) driven through mipidsi:
//! the count screen is drawn on an RGB canvas with embedded-graphics and sent to the panel as one
//! RGB565 window per redraw. On the board the bus is linux-embedded-hal's `SpidevDevice` and the
//! data/command and reset lines are `CdevPin`s; tests drive the same code with a recording bus.

use crate::config::PanelController;
use crate::display::{draw_count_screen, Canvas, Display, DisplayError, ScreenStatus};
use crate::tally::Tally;
use embedded_graphics::pixelcolor::{Rgb565, Rgb888};
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use mipidsi::interface::SpiInterface;
use mipidsi::models::Model;
use mipidsi::options::{ColorInversion, Orientation, Rotation};

/// Bytes gathered per SPI transfer of pixel data.
const TRANSFER_BYTES: usize = 4096;

/// What the profile says about the panel, in the orientation the operator sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanelGeometry {
    pub width: u16,
    pub height: u16,
    /// Inverted colours (most ST7789 modules need it).
    pub invert: bool,
}

impl PanelGeometry {
    /// Panels are portrait in their own memory; a landscape screen is the panel turned 90°.
    fn native_size_and_rotation(&self) -> ((u16, u16), Rotation) {
        if self.width > self.height {
            ((self.height, self.width), Rotation::Deg90)
        } else {
            ((self.width, self.height), Rotation::Deg0)
        }
    }
}

/// A colour panel on SPI showing the count screen.
pub struct SpiPanelDisplay<SPI, DC, M, RST>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
    RST: OutputPin,
{
    panel: mipidsi::Display<SpiInterface<'static, SPI, DC>, M, RST>,
    canvas: Canvas,
    kind: &'static str,
}

fn panel_error(kind: &str, message: String) -> DisplayError {
    DisplayError::Unavailable {
        kind: kind.into(),
        message,
    }
}

/// The SPI interface with its transfer buffer. A panel is opened once per run, so the buffer lives
/// as long as the process.
fn interface<SPI: SpiDevice, DC: OutputPin>(spi: SPI, dc: DC) -> SpiInterface<'static, SPI, DC> {
    let buffer: &'static mut [u8] = Box::leak(vec![0u8; TRANSFER_BYTES].into_boxed_slice());
    SpiInterface::new(spi, dc, buffer)
}

fn builder<SPI, DC, M>(
    model: M,
    spi: SPI,
    dc: DC,
    geometry: PanelGeometry,
) -> mipidsi::Builder<SpiInterface<'static, SPI, DC>, M, mipidsi::NoResetPin>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
{
    let ((w, h), rotation) = geometry.native_size_and_rotation();
    let inversion = if geometry.invert {
        ColorInversion::Inverted
    } else {
        ColorInversion::Normal
    };
    mipidsi::Builder::new(model, interface(spi, dc))
        .display_size(w, h)
        .orientation(Orientation::new().rotate(rotation))
        .invert_colors(inversion)
}

impl<SPI, DC, M, RST> SpiPanelDisplay<SPI, DC, M, RST>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
    RST: OutputPin,
{
    fn from_builder(
        builder: mipidsi::Builder<SpiInterface<'static, SPI, DC>, M, RST>,
        geometry: PanelGeometry,
        delay: &mut impl DelayNs,
        kind: &'static str,
    ) -> Result<Self, DisplayError> {
        let panel = builder
            .init(delay)
            .map_err(|e| panel_error(kind, format!("init: {e:?}")))?;
        Ok(SpiPanelDisplay {
            panel,
            canvas: Canvas::new(geometry.width as u32, geometry.height as u32),
            kind,
        })
    }

    /// Gives the bus and pins back (tests read what was sent).
    pub fn release(self) -> (SPI, DC) {
        self.panel.release().0.release()
    }
}

impl<SPI, DC, M> SpiPanelDisplay<SPI, DC, M, mipidsi::NoResetPin>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
{
    /// Initializes a panel without a reset line (software reset).
    pub fn new(
        model: M,
        spi: SPI,
        dc: DC,
        geometry: PanelGeometry,
        delay: &mut impl DelayNs,
        kind: &'static str,
    ) -> Result<Self, DisplayError> {
        Self::from_builder(builder(model, spi, dc, geometry), geometry, delay, kind)
    }
}

impl<SPI, DC, M, RST> SpiPanelDisplay<SPI, DC, M, RST>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
    RST: OutputPin,
{
    /// Initializes a panel whose reset line is wired (hardware reset).
    pub fn with_reset(
        model: M,
        spi: SPI,
        dc: DC,
        reset: RST,
        geometry: PanelGeometry,
        delay: &mut impl DelayNs,
        kind: &'static str,
    ) -> Result<Self, DisplayError> {
        let b = builder(model, spi, dc, geometry).reset_pin(reset);
        Self::from_builder(b, geometry, delay, kind)
    }
}

impl<SPI, DC, M, RST> Display for SpiPanelDisplay<SPI, DC, M, RST>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
    RST: OutputPin,
{
    fn show(&mut self, tally: &Tally, status: &ScreenStatus) -> Result<(), DisplayError> {
        let Ok(()) = draw_count_screen(&mut self.canvas, tally, status);
        let (w, h) = self.canvas.image.dimensions();
        let pixels = self
            .canvas
            .image
            .pixels()
            .map(|p| Rgb565::from(Rgb888::new(p.0[0], p.0[1], p.0[2])));
        self.panel
            .set_pixels(0, 0, (w - 1) as u16, (h - 1) as u16, pixels)
            .map_err(|e| panel_error(self.kind, format!("write: {e:?}")))
    }
}

/// Opens the panel a profile names: `/dev/spidevB.C`, data/command and optional reset lines on a
/// GPIO character device.
#[cfg(target_os = "linux")]
pub fn open_spi_panel(
    spi: &str,
    controller: PanelController,
    geometry: PanelGeometry,
    gpio_chip: &str,
    dc_line: u32,
    reset_line: Option<u32>,
) -> Result<Box<dyn Display>, DisplayError> {
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    let kind = controller.name();
    let fail = |what: &str, e: &dyn std::fmt::Display| panel_error(kind, format!("{what}: {e}"));
    let mut bus = linux_embedded_hal::SpidevDevice::open(spi).map_err(|e| fail(spi, &e))?;
    let options = SpidevOptions::new()
        .bits_per_word(8)
        .max_speed_hz(40_000_000)
        .mode(SpiModeFlags::SPI_MODE_0)
        .build();
    bus.configure(&options).map_err(|e| fail(spi, &e))?;
    let dc = output_line(gpio_chip, dc_line).map_err(|e| fail("data/command line", &e))?;
    let reset = reset_line
        .map(|line| output_line(gpio_chip, line))
        .transpose()
        .map_err(|e| fail("reset line", &e))?;
    match controller {
        PanelController::St7789 => boxed(mipidsi::models::ST7789, bus, dc, reset, geometry, kind),
        PanelController::Ili9341 => boxed(
            mipidsi::models::ILI9341Rgb565,
            bus,
            dc,
            reset,
            geometry,
            kind,
        ),
    }
}

/// Initializes a panel of `model` on the board's bus and lines, with or without a reset line.
#[cfg(target_os = "linux")]
fn boxed<M: Model<ColorFormat = Rgb565> + 'static>(
    model: M,
    bus: linux_embedded_hal::SpidevDevice,
    dc: linux_embedded_hal::CdevPin,
    reset: Option<linux_embedded_hal::CdevPin>,
    geometry: PanelGeometry,
    kind: &'static str,
) -> Result<Box<dyn Display>, DisplayError> {
    let delay = &mut linux_embedded_hal::Delay;
    Ok(match reset {
        None => Box::new(SpiPanelDisplay::new(model, bus, dc, geometry, delay, kind)?),
        Some(r) => Box::new(SpiPanelDisplay::with_reset(
            model, bus, dc, r, geometry, delay, kind,
        )?),
    })
}

/// A GPIO line requested as an output, driven high at first.
#[cfg(target_os = "linux")]
pub fn output_line(
    chip: &str,
    line: u32,
) -> Result<linux_embedded_hal::CdevPin, linux_embedded_hal::gpio_cdev::Error> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let handle =
        Chip::new(chip)?
            .get_line(line)?
            .request(LineRequestFlags::OUTPUT, 1, "marrowscope")?;
    linux_embedded_hal::CdevPin::new(handle)
}

#[cfg(not(target_os = "linux"))]
pub fn open_spi_panel(
    spi: &str,
    controller: PanelController,
    _: PanelGeometry,
    _: &str,
    _: u32,
    _: Option<u32>,
) -> Result<Box<dyn Display>, DisplayError> {
    Err(panel_error(
        controller.name(),
        format!("{spi}: SPI needs Linux"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::tests::tally_of;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    /// What went over the wire: each SPI write with the level of the data/command line.
    #[derive(Default)]
    struct Wire {
        dc_high: Cell<bool>,
        writes: RefCell<Vec<(bool, Vec<u8>)>>,
    }

    /// An SPI device that records every write, standing in for /dev/spidev0.0.
    struct RecordingSpi(Rc<Wire>);
    /// The data/command line, recording its level on the same wire.
    struct RecordingPin(Rc<Wire>);

    impl embedded_hal::spi::ErrorType for RecordingSpi {
        type Error = embedded_hal::spi::ErrorKind;
    }

    impl SpiDevice for RecordingSpi {
        fn transaction(
            &mut self,
            operations: &mut [embedded_hal::spi::Operation<'_, u8>],
        ) -> Result<(), Self::Error> {
            for op in operations {
                if let embedded_hal::spi::Operation::Write(bytes) = op {
                    let dc = self.0.dc_high.get();
                    self.0.writes.borrow_mut().push((dc, bytes.to_vec()));
                }
            }
            Ok(())
        }
    }

    impl embedded_hal::digital::ErrorType for RecordingPin {
        type Error = std::convert::Infallible;
    }

    impl OutputPin for RecordingPin {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.0.dc_high.set(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.0.dc_high.set(true);
            Ok(())
        }
    }

    struct NoDelay;
    impl DelayNs for NoDelay {
        fn delay_ns(&mut self, _: u32) {}
    }

    /// Commands (bytes sent with D/C low) each with the data bytes that followed them.
    fn commands(wire: &Wire) -> Vec<(u8, Vec<u8>)> {
        let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
        for (dc_high, bytes) in wire.writes.borrow().iter() {
            if !dc_high {
                out.extend(bytes.iter().map(|&c| (c, Vec::new())));
            } else if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(bytes);
            }
        }
        out
    }

    /// The accent colour (120, 90, 200) in RGB565 as embedded-graphics rounds it, big-endian.
    const ACCENT_RGB565: [u8; 2] = [0x7a, 0xd8];

    fn open<M: Model<ColorFormat = Rgb565>>(
        model: M,
        geometry: PanelGeometry,
    ) -> (
        Rc<Wire>,
        SpiPanelDisplay<RecordingSpi, RecordingPin, M, mipidsi::NoResetPin>,
    ) {
        let wire = Rc::new(Wire::default());
        let spi = RecordingSpi(wire.clone());
        let dc = RecordingPin(wire.clone());
        let panel = SpiPanelDisplay::new(model, spi, dc, geometry, &mut NoDelay, "test").unwrap();
        (wire, panel)
    }

    #[test]
    fn st7789_init_sequence_and_pixel_window() {
        let geometry = PanelGeometry {
            width: 240,
            height: 240,
            invert: true,
        };
        let (wire, mut panel) = open(mipidsi::models::ST7789, geometry);
        let init = commands(&wire);
        let codes: Vec<u8> = init.iter().map(|c| c.0).collect();
        assert_eq!(
            codes.first(),
            Some(&0x01),
            "software reset first: {codes:x?}"
        );
        for (code, what) in [
            (0x11, "sleep out"),
            (0x21, "inversion on"),
            (0x29, "display on"),
        ] {
            assert!(codes.contains(&code), "{what} ({code:#x}) in {codes:x?}");
        }
        let colmod = init.iter().find(|c| c.0 == 0x3A).expect("pixel format set");
        assert_eq!(colmod.1, vec![0x55], "16 bits per pixel");
        wire.writes.borrow_mut().clear();

        panel
            .show(&tally_of(200, &["NGS", "BLA"]), &ScreenStatus::default())
            .unwrap();
        let sent = commands(&wire);
        let caset = sent.iter().find(|c| c.0 == 0x2A).expect("column window");
        assert_eq!(caset.1, vec![0, 0, 0, 239]);
        let raset = sent.iter().find(|c| c.0 == 0x2B).expect("row window");
        assert_eq!(raset.1, vec![0, 0, 0, 239]);
        let ramwr = sent.iter().find(|c| c.0 == 0x2C).expect("memory write");
        assert_eq!(ramwr.1.len(), 240 * 240 * 2, "one full frame of RGB565");
        // Pixel (7, 24) is the progress bar's accent colour (120, 90, 200), as on the PNG screen.
        let i = (24 * 240 + 7) * 2;
        assert_eq!(ramwr.1[i..i + 2], ACCENT_RGB565);
        let (_, dc) = panel.release();
        assert!(dc.0.dc_high.get(), "D/C left in data mode");
    }

    #[test]
    fn ili9341_landscape_is_the_panel_turned() {
        let geometry = PanelGeometry {
            width: 320,
            height: 240,
            invert: false,
        };
        let (wire, mut panel) = open(mipidsi::models::ILI9341Rgb565, geometry);
        let codes: Vec<u8> = commands(&wire).iter().map(|c| c.0).collect();
        assert!(!codes.contains(&0x21), "no inversion: {codes:x?}");
        let madctl = commands(&wire).into_iter().find(|c| c.0 == 0x36).unwrap();
        assert_ne!(madctl.1[0] & 0x20, 0, "row/column exchange for landscape");
        wire.writes.borrow_mut().clear();
        panel
            .show(&tally_of(4, &["LYT"]), &ScreenStatus::default())
            .unwrap();
        let sent = commands(&wire);
        let caset = sent.iter().find(|c| c.0 == 0x2A).unwrap();
        assert_eq!(caset.1, vec![0, 0, 0x01, 0x3F], "columns 0..319");
        let ramwr = sent.iter().find(|c| c.0 == 0x2C).unwrap();
        assert_eq!(ramwr.1.len(), 320 * 240 * 2);
        let i = (24 * 320 + 7) * 2;
        assert_eq!(ramwr.1[i..i + 2], ACCENT_RGB565);
    }

    #[test]
    fn oversized_panel_is_refused_with_a_message() {
        let geometry = PanelGeometry {
            width: 480,
            height: 320,
            invert: false,
        };
        let wire = Rc::new(Wire::default());
        let err = SpiPanelDisplay::new(
            mipidsi::models::ST7789,
            RecordingSpi(wire.clone()),
            RecordingPin(wire),
            geometry,
            &mut NoDelay,
            "st7789",
        )
        .err()
        .expect("480x320 does not fit an ST7789");
        assert!(err.to_string().contains("st7789"), "{err}");
    }
}
