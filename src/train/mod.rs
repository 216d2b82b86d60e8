//! Training: optimizers, schedules, checkpoints, metrics and the trainer loop.

pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod schedule;
