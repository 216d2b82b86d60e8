//! Harness cases of the softmax cross-entropy: label smoothing on ten classes, and a
//! thousand classes without.

use super::{softmax_xent, softmax_xent_ref};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::harness::{HostTensor, Input, OpCase, Prepared, Tolerance};
use crate::util::Rng;

/// Harness case for [`softmax_xent`].
pub struct XentCase {
    /// Rows.
    pub n: usize,
    /// Classes.
    pub k: usize,
    /// Label smoothing.
    pub eps: f64,
}

impl OpCase for XentCase {
    fn name(&self) -> String {
        format!("softmax_xent[{}x{}]/eps{}", self.n, self.k, self.eps)
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let labels = (0..self.n).map(|_| rng.below(self.k) as f64).collect();
        vec![
            Input::diff(HostTensor::randn(&[self.n, self.k], 3.0, rng)),
            Input::constant(HostTensor::new(&[self.n], labels)),
        ]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let ones = vec![1.0; self.n];
        let (l, _) = softmax_xent_ref(&i[0].data, &i[1].data, &ones, self.k, self.eps);
        vec![HostTensor::new(&[self.n], l)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let (_, d) = softmax_xent_ref(&i[0].data, &i[1].data, &dy[0].data, self.k, self.eps);
        vec![Some(HostTensor::new(&[self.n, self.k], d)), None]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        // The loss does not depend on the per-row loss gradient; without one, use 1.
        let dloss = match dy {
            Some(d) => d[0].upload(gpu)?,
            None => gpu.upload(&vec![1.0; self.n], &[self.n])?,
        };
        Ok(Box::new(XentRun {
            eps: self.eps as f32,
            logits: i[0].upload(gpu)?,
            labels: i[1].upload_u32(gpu)?,
            dloss,
            loss: gpu.zeros(&[self.n])?,
            dlogits: gpu.zeros(&[self.n, self.k])?,
        }))
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 1e-5,
            backward: 2e-5,
            gradcheck: 1e-6,
        }
    }
}

/// The tensors of one [`XentCase`] run.
struct XentRun {
    eps: f32,
    logits: Tensor,
    labels: Tensor,
    dloss: Tensor,
    loss: Tensor,
    dlogits: Tensor,
}

impl Prepared for XentRun {
    /// The fused kernel: per-row losses and the logit gradients.
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        softmax_xent(
            r,
            &self.logits,
            &self.labels,
            &self.dloss,
            &self.loss,
            &self.dlogits,
            self.eps,
        )
    }
    /// Nothing: the forward dispatch already wrote the gradients.
    fn record_backward(&self, _r: &mut Recorder) -> Result<()> {
        Ok(())
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.loss)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(vec![Some(gpu.read(&self.dlogits)?), None])
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(XentCase {
            n: 5,
            k: 10,
            eps: 0.1,
        }),
        Box::new(XentCase {
            n: 3,
            k: 1000,
            eps: 0.0,
        }),
    ]
}
