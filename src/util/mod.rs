//! Small shared utilities.

pub mod rng;
pub mod safetensors;

pub use rng::Rng;
