//! # effnet
//!
//! A training engine for the EfficientNet family whose compute is hand-written WGSL
//! compute shaders run through wgpu, on any Vulkan, Metal, DX12 or GL adapter (and Mesa's
//! lavapipe for headless CI).
//!
//! Layout:
//! - [`gpu`]: adapter choice and limits, tensors and arenas, the shader/pipeline cache and
//!   the step recorder (one command buffer per step);
//! - [`ops`]: one module per op family with GPU launchers, f64 CPU references and the op
//!   test harness;
//! - [`selftest`]: the harness run over every op, as `effnet selftest` does.

#![warn(missing_docs)]

pub mod bench;
pub mod bench_conv;
pub mod error;
pub mod gpu;
pub mod ops;
pub mod selftest;
pub mod util;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Recorder, Tensor};
pub mod models;
pub mod data;
pub mod train;
pub mod nn;
pub mod cli;
