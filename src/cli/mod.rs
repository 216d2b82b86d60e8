//! Command implementations behind the `effnet` binary.

pub mod bench_data;
pub mod bench_train;
pub mod moments;
pub mod predict;
pub mod profile;
pub mod reproduce;
pub mod train;
