//! Layers that own parameter slices and saved activations.

pub mod layers;
pub mod params;

pub use params::{Init, ParamBuilder, ParamDef, ParamId, ParamKind, ParamStore};
