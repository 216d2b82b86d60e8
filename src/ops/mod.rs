//! Ops: one module per op family, each with GPU launchers, an f64 CPU reference of forward
//! and backward, and harness cases ([`harness::OpCase`]) that `cargo test` and
//! `effnet selftest` run on the adapter at hand.

pub mod act;
pub mod elementwise;
pub mod harness;
pub mod loss;
pub mod reduce;

pub use act::Act;
pub use harness::{check, CheckResult, HostTensor, Input, OpCase, Tolerance};

/// Every registered harness case, in a stable order.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v = Vec::new();
    v.extend(act::cases());
    v.extend(elementwise::cases());
    v.extend(reduce::cases());
    v.extend(loss::cases());
    v
}

/// Every kernel effnet dispatches, with the override values it uses.
pub fn kernels() -> Vec<&'static crate::gpu::KernelDef> {
    let mut v = Vec::new();
    v.extend_from_slice(act::KERNELS);
    v.extend_from_slice(elementwise::KERNELS);
    v.extend_from_slice(reduce::KERNELS);
    v.extend_from_slice(loss::KERNELS);
    v.extend_from_slice(crate::train::optim::KERNELS);
    v
}
