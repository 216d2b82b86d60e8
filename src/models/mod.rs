//! Model descriptions and builders.

pub mod config;
pub mod efficientnet;
pub mod footprint;
pub mod size;

pub use config::{layer_table, totals, BlockDef, LayerRow, ModelConfig, NormChoice, Preset};
pub use footprint::Footprint;
pub use size::ImageSize;
