//! Counting non-finite values (NaN, +inf, -inf) on the GPU: the check that keeps a
//! diverged model out of checkpoints without reading every parameter back first.
//!
//! The count has no gradient (it is piecewise constant in its input), so its harness case
//! checks the forward against the f64 reference only; its input is a constant.

mod cases;
mod reference;

pub use cases::{cases, CountCase};
pub use reference::count_nonfinite_ref;

use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Gpu, Grid, Kernel, KernelDef, Recorder, Tensor,
};

uniform_block! {
    /// Parameters of `finite/count_nonfinite.wgsl`.
    struct CountParams {
        /// Elements of x.
        n: u32,
        /// The counts entry to add to.
        slot: u32,
    }
}

static COUNT: Kernel<CountParams> = Kernel::new(
    "finite/count_nonfinite.wgsl",
    "count_nonfinite",
    &[Access::Read, Access::ReadWrite],
    &[],
);

/// The kernels of this module (for the portability and contract tests).
pub static KERNELS: &[&KernelDef] = &[&COUNT.def];

/// Record `counts[slot] += number of non-finite values of x`. `counts` is a u32 tensor
/// the caller zeroes first (e.g. with [`Recorder::clear`]); several tensors can add into
/// different slots of one counts tensor in one submission.
///
/// Work: one test per element (counted as 1 FLOP), reading `x` once.
pub fn count_nonfinite(rec: &mut Recorder, x: &Tensor, counts: &Tensor, slot: usize) -> Result<()> {
    if slot >= counts.len() {
        return Err(Error::Shape(format!(
            "non-finite count slot {slot} outside a counts tensor of {} entries",
            counts.len()
        )));
    }
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let n32 = u32::try_from(n)
        .map_err(|_| Error::TooLarge(format!("non-finite count over {n} values (over 2^32)")))?;
    rec.dispatch(
        &COUNT,
        &[],
        &CountParams {
            n: n32,
            slot: slot as u32,
        },
        &[x, counts],
        Grid::Linear(groups_for(n, 256)),
        Cost {
            flops: n as f64,
            bytes: 4.0 * n as f64,
        },
    )
}

/// The number of non-finite values of each tensor, counted on the GPU in one submission
/// (only the counts are read back).
pub fn count_each(gpu: &Gpu, tensors: &[&Tensor]) -> Result<Vec<u32>> {
    if tensors.is_empty() {
        return Ok(Vec::new());
    }
    let counts = gpu.upload_u32(&vec![0; tensors.len()], &[tensors.len()])?;
    let mut rec = Recorder::new(gpu);
    for (slot, t) in tensors.iter().enumerate() {
        count_nonfinite(&mut rec, t, &counts, slot)?;
    }
    rec.submit()?.wait(gpu)?;
    gpu.read_u32(&counts)
}
