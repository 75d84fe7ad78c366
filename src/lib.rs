//! marrowscope: live bone-marrow differential counting at the microscope.
//!
//! The data path, one module per stage (hardware behind traits so every stage runs in tests):
//! `source` (camera, replay, virtual slide; `reconnect` reopens a lost camera) → `localize` (white cells and their crops, on
//! `stain`'s nuclear-stain channel measured against the frame's own lighting) →
//! `classify` (quantized CNN in tract) → `track` (count each cell once while the stage moves) →
//! `tally` (differential, journal) → `display` / `report`. `config` reads board profiles, `eval`
//! measures against expert labels, `bench` times the stages, `pipeline` runs the live loop,
//! `annotate` draws the found cells on frames,
//! `textfile` reads the text files a user edits, `folder` lists the folders a user names.

pub mod annotate;
pub mod bench;
pub mod classify;
pub mod config;
pub mod counteval;
pub mod detect;
pub mod display;
pub mod eval;
pub mod folder;
pub mod framebuffer;
pub mod localize;
pub mod operator;
pub mod pipeline;
pub mod reconnect;
pub mod report;
pub mod scale;
pub mod slide;
pub mod source;
pub mod spi_panel;
pub mod stain;
pub mod tally;
pub mod textfile;
pub mod track;
