//! Model descriptions and builders.

pub mod config;

pub use config::{layer_table, totals, BlockDef, LayerRow, ModelConfig, NormChoice};
