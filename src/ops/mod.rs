//! Ops: one module per op family, each with GPU launchers, an f64 CPU reference of forward
//! and backward, and harness cases ([`harness::OpCase`]) that `cargo test` and
//! `effnet selftest` run on the adapter at hand.

pub mod act;
pub mod conv;
pub mod elementwise;
pub mod finite;
pub mod gemm;
pub mod harness;
pub mod input;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod proxy_norm;
pub mod reduce;
pub mod squeeze_excite;

pub use act::Act;
pub use harness::{check, CheckResult, HostTensor, Input, OpCase, Tolerance};

/// Every registered harness case, in a stable order.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v = Vec::new();
    v.extend(input::cases());
    v.extend(act::cases());
    v.extend(elementwise::cases());
    v.extend(reduce::cases());
    v.extend(finite::cases());
    v.extend(loss::cases());
    v.extend(gemm::cases());
    v.extend(linear::cases());
    v.extend(conv::cases());
    v.extend(pool::cases());
    v.extend(squeeze_excite::cases());
    v.extend(norm::cases());
    v.extend(proxy_norm::cases());
    v
}

/// Every kernel of the ops, with the override values it uses ([`crate::kernels::all`] adds
/// those of the optimizers and the moments analysis).
pub fn kernels() -> Vec<&'static crate::gpu::KernelDef> {
    let mut v = Vec::new();
    v.extend_from_slice(input::KERNELS);
    v.extend_from_slice(act::KERNELS);
    v.extend_from_slice(elementwise::KERNELS);
    v.extend_from_slice(reduce::KERNELS);
    v.extend_from_slice(finite::KERNELS);
    v.extend_from_slice(loss::KERNELS);
    v.extend_from_slice(gemm::KERNELS);
    v.extend_from_slice(conv::KERNELS);
    v.extend_from_slice(squeeze_excite::KERNELS);
    v.extend_from_slice(norm::KERNELS);
    v.extend_from_slice(proxy_norm::KERNELS);
    v
}
