//! Small shared utilities.

pub mod rng;

pub use rng::Rng;
