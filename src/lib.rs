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
//! - [`nn`]: layers owning parameter slices and saved tensors; the parameter store;
//! - [`models`]: EfficientNet B0-B7 / G16 configurations and the explicit training graph;
//! - [`data`]: datasets, augmentation and the loader thread;
//! - [`dist`]: data-parallel training across processes (MPI with `--features mpi`);
//! - [`moments`]: moments of signal and sensitivity through depth at initialization;
//! - [`interop`]: timm / PyTorch weights in and out (safetensors, timm names);
//! - [`kernels`]: the registry of every kernel (what the shader tests walk);
//! - [`train`]: the trainer, optimizers, schedules, checkpoints and metrics;
//! - [`reproduce`]: the papers' comparisons (norms, FixRes, moments), one command each;
//! - [`cli`]: the commands behind the `effnet` binary;
//! - [`selftest`]: the harness run over every op, as `effnet selftest` does.

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod data;
pub mod dist;
pub mod error;
pub mod gpu;
pub mod interop;
pub mod kernels;
pub mod models;
pub mod moments;
pub mod nn;
pub mod ops;
pub mod reproduce;
pub mod selftest;
pub mod train;
pub mod util;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Recorder, Tensor};
