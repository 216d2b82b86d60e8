//! The GPU runtime: adapter choice, tensors and arenas, the shader/pipeline cache, and the
//! step recorder.

pub mod context;
pub mod kernel;
pub mod memory;
pub mod recorder;
pub mod tensor;
mod uniforms;

pub use context::{list_adapters, AdapterSummary, FeatureSet, Gpu, GpuOptions, GpuReport};
pub use kernel::{shader_source, Access, KernelDef, SHADER_FILES};
pub use memory::MemoryBudget;
pub use recorder::{groups_for, Grid, KernelTiming, Recorder, Submitted};
pub use tensor::{numel, Arena, Readback, Shape, Tensor};
