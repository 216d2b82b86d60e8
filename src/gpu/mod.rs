//! The GPU runtime: adapter choice, tensors and arenas, the shader/pipeline cache, typed
//! kernel parameter blocks, and the step recorder.

pub mod context;
pub mod kernel;
pub mod memory;
pub mod precision;
pub mod recorder;
pub mod tensor;
pub mod uniform;
mod uniforms;

pub use context::{list_adapters, AdapterSummary, FeatureSet, Gpu, GpuOptions, GpuReport};
pub use kernel::{shader_source, variant_source, Access, Kernel, KernelDef, SHADER_FILES};
pub use memory::MemoryBudget;
pub use precision::Precision;
pub use recorder::{groups_for, Cost, Grid, KernelTiming, Recorder, Submitted};
pub use tensor::{numel, Arena, Dtype, Readback, Shape, Tensor};
pub(crate) use uniform::uniform_block;
pub use uniform::{Scalar, Uniform, UniformField, UniformLayout, UniformScalar};
