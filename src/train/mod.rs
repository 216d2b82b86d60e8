//! Training: optimizers, schedules, checkpoints, metrics, the locked run folder, stopping on
//! signals, and the trainer loop.

pub mod checkpoint;
pub mod input_stage;
pub mod loss_scale;
pub mod metrics;
/// The trait the trainer drives (defined in [`crate::nn::model`], below the models that
/// implement it).
pub use crate::nn::model;
pub mod optim;
pub mod run_dir;
pub mod schedule;
pub mod stop;
pub mod trainer;
