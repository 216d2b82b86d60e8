//! Training: optimizers, schedules, checkpoints, metrics and the trainer loop.

pub mod checkpoint;
pub mod metrics;
/// The trait the trainer drives (defined in [`crate::nn::model`], below the models that
/// implement it).
pub use crate::nn::model;
pub mod optim;
pub mod schedule;
pub mod trainer;
