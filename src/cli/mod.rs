//! Command implementations behind the `effnet` binary.

pub mod bench;
pub mod bench_data;
pub mod bench_train;
pub mod grads;
pub mod info;
pub mod model;
pub mod moments;
pub mod precision;
pub mod predict;
pub mod profile;
pub mod reproduce;
pub mod selftest;
pub mod train;
pub mod train_mpi;
