//! Training: optimizers, schedules, checkpoints, metrics and the trainer loop.

pub mod optim;
pub mod schedule;
