//! Storage precision: f32 everywhere, or mixed (f16 activations and activation gradients,
//! f32 parameters, gradients, optimizer state and every accumulation).
//!
//! WGSL has no type parameters and an `override` cannot change a type, so a kernel's f16
//! variant is another module: a shader names its activation storage type through
//! `alias act_t = f32;`, and [`variant_source`](super::kernel::variant_source) rewrites that
//! line to `alias act_t = f16;` under `enable f16;`. Arithmetic stays f32 in registers
//! (`f32(x[i])` on load, `act_t(v)` on store), so the f16 variant differs from the f32 one
//! only in what memory holds.

use serde::{Deserialize, Serialize};

use super::context::Gpu;
use super::tensor::Dtype;
use crate::error::{Error, Result};

/// The storage precision of a run (`--precision`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (also what a configuration without a precision means: every run
    /// before mixed precision existed).
    #[default]
    F32,
    /// f16 activations and activation gradients; f32 master weights, gradients, optimizer
    /// state, statistics and accumulation, with dynamic loss scaling.
    Mixed,
}

impl Precision {
    /// The element type activations and their gradients are stored in.
    pub fn activations(self) -> Dtype {
        match self {
            Precision::F32 => Dtype::F32,
            Precision::Mixed => Dtype::F16,
        }
    }

    /// Lower-case name (`f32`, `mixed`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }

    /// An error unless `gpu` can run this precision: mixed needs the `SHADER_F16` feature.
    pub fn check_supported(self, gpu: &Gpu) -> Result<()> {
        if self == Precision::Mixed && !gpu.features.shader_f16 {
            return Err(Error::Config(format!(
                "--precision mixed needs f16 in shaders (wgpu feature SHADER_F16), which adapter \
                 '{}' ({:?}) does not offer; use --precision f32 (`effnet info` lists the \
                 adapter's features)",
                gpu.info.name, gpu.info.backend
            )));
        }
        Ok(())
    }
}
