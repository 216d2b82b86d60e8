//! Harness cases of the non-finite count: NaN and infinities planted among extreme finite
//! values (the largest f32, subnormals, -0), counted into a chosen slot.

use super::{count_nonfinite, count_nonfinite_ref};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::harness::{HostTensor, Input, OpCase, Prepared, Tolerance};
use crate::util::Rng;

/// Harness case: a tensor with NaN, infinities and extreme finite values (the largest
/// f32, subnormals, -0) planted at random places, counted into a chosen slot.
pub struct CountCase {
    /// Elements.
    pub n: usize,
    /// Non-finite values planted (at random places, so some may coincide).
    pub bad: usize,
    /// The counts entry the case adds to.
    pub slot: usize,
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
    fn tolerance(&self) -> Tolerance {
        // Counts are exact integers.
        Tolerance {
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
