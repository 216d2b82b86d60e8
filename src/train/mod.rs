//! Training: optimizers, schedules, checkpoints, metrics, the locked run folder, stopping on
//! signals, and the trainer loop.

pub mod checkpoint;
pub mod input_stage;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod run_dir;
pub mod schedule;
pub mod stop;
pub mod trainer;
