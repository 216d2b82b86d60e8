//! The registry of every kernel effnet dispatches: the ops' kernels and those of the
//! modules above them (the fused optimizers, the moments analysis, the benchmarks' peak
//! probes). The portability and
//! kernel-contract tests walk this list, so a kernel missing here is a kernel nobody
//! checks.

use crate::gpu::KernelDef;

/// Every kernel effnet dispatches, with the override values it uses.
pub fn all() -> Vec<&'static KernelDef> {
    let mut v = crate::ops::kernels();
    v.extend_from_slice(crate::train::optim::KERNELS);
    v.extend_from_slice(crate::train::loss_scale::KERNELS);
    v.extend_from_slice(crate::moments::kernels::KERNELS);
    v.extend_from_slice(crate::bench::peak::KERNELS);
    v
}
