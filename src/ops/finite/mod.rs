//! Counting non-finite values (NaN, +inf, -inf) on the GPU: the check that keeps a
//! diverged model out of checkpoints without reading every parameter back first.
//!
//! The count has no gradient (it is piecewise constant in its input), so its harness case
//! checks the forward against the f64 reference only; its input is a constant.

use super::harness::{HostTensor, Input, OpCase, Prepared};
use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Gpu, Grid, Kernel, KernelDef, Recorder, Tensor,
};
use crate::util::Rng;

uniform_block! {
    /// Parameters of `reduce/count_nonfinite.wgsl`.
    struct CountParams {
        /// Elements of x.
        n: u32,
        /// The counts entry to add to.
        slot: u32,
    }
}

static COUNT: Kernel<CountParams> = Kernel::new(
    "reduce/count_nonfinite.wgsl",
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

/// f64 reference of [`count_nonfinite`]: how many values are NaN or infinite.
pub fn count_nonfinite_ref(x: &[f64]) -> usize {
    x.iter().filter(|v| !v.is_finite()).count()
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

/// Harness case: a tensor with NaN, infinities and extreme finite values (the largest
/// f32, subnormals, -0) planted at random places, counted into a chosen slot.
struct CountCase {
    n: usize,
    bad: usize,
    slot: usize,
}

impl OpCase for CountCase {
    fn name(&self) -> String {
        format!(
            "count_nonfinite[{}; {} bad; slot {}]",
            self.n, self.bad, self.slot
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let mut x = HostTensor::randn(&[self.n], 1.0, rng);
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        let finite_extremes = [f32::MAX as f64, f32::MIN as f64, 1e-45, -0.0];
        for k in 0..self.bad {
            x.data[rng.below(self.n)] = specials[k % 3];
        }
        for v in finite_extremes {
            let j = rng.below(self.n);
            if x.data[j].is_finite() {
                x.data[j] = v;
            }
        }
        vec![Input::constant(x)]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let mut counts = vec![0.0; self.slot + 1];
        counts[self.slot] = count_nonfinite_ref(&i[0].data) as f64;
        vec![HostTensor::new(&[self.slot + 1], counts)]
    }
    fn cpu_backward(&self, _i: &[HostTensor], _dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        vec![None]
    }
    fn output_shapes(&self, _: &[HostTensor]) -> Vec<Vec<usize>> {
        vec![vec![self.slot + 1]]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        _dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        Ok(Box::new(CountRun {
            slot: self.slot,
            x: i[0].upload(gpu)?,
            counts: gpu.upload_u32(&vec![0; self.slot + 1], &[self.slot + 1])?,
        }))
    }
    fn tolerance(&self) -> super::harness::Tolerance {
        // Counts are exact integers.
        super::harness::Tolerance {
            forward: 0.0,
            backward: 0.0,
            gradcheck: 0.0,
        }
    }
}

/// The tensors of one [`CountCase`] run.
struct CountRun {
    slot: usize,
    x: Tensor,
    counts: Tensor,
}

impl Prepared for CountRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        // The counts accumulate: start each run from zero.
        r.clear(&self.counts);
        count_nonfinite(r, &self.x, &self.counts, self.slot)
    }
    fn record_backward(&self, _: &mut Recorder) -> Result<()> {
        // A count is piecewise constant: no gradient.
        Ok(())
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu
            .read_u32(&self.counts)?
            .into_iter()
            .map(|c| c as f32)
            .collect()])
    }
    fn gradients(&self, _: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(vec![None])
    }
}

/// Harness cases: several workgroups with a few bad values, a partial last workgroup,
/// an all-finite tensor, and a tensor where most values are bad.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(CountCase {
            n: 1000,
            bad: 7,
            slot: 0,
        }),
        Box::new(CountCase {
            n: 70_001,
            bad: 40,
            slot: 3,
        }),
        Box::new(CountCase {
            n: 513,
            bad: 0,
            slot: 1,
        }),
        Box::new(CountCase {
            n: 300,
            bad: 900,
            slot: 0,
        }),
    ]
}
