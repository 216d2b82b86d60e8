//! Small shared utilities.

pub mod plot;
pub mod rng;
pub mod safetensors;

pub use rng::Rng;
