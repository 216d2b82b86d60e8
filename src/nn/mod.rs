//! Layers that own parameter slices and saved activations, the parameter store, the
//! normalization choice, and the trait a trainable model implements.

pub mod layers;
pub mod model;
pub mod norm;
pub mod params;

pub use norm::NormChoice;
pub use params::{Init, ParamBuilder, ParamDef, ParamId, ParamKind, ParamStore, Segment};
