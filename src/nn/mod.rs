//! Layers that own parameter slices and saved activations.

pub mod layers;
pub mod norm;
pub mod params;

pub use norm::NormChoice;
pub use params::{Init, ParamBuilder, ParamDef, ParamId, ParamKind, ParamStore, Segment};
