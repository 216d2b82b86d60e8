//! Training: optimizers, schedules, checkpoints, metrics and the trainer loop.

pub mod checkpoint;
pub mod input_stage;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod schedule;
pub mod trainer;
