//! Harness cases of the softmax cross-entropy: label smoothing on ten classes, and a
//! thousand classes without.

use super::{softmax_xent, softmax_xent_ref};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
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
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let ones = HostTensor::new(&[self.n], vec![1.0; self.n]);
        let (loss, _) = self.run(gpu, i, &ones)?;
        Ok(vec![loss])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let (_, d) = self.run(gpu, i, &dy[0])?;
        Ok(vec![Some(d), None])
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 1e-5,
            backward: 2e-5,
            gradcheck: 1e-6,
        }
    }
}

impl XentCase {
    fn run(&self, gpu: &Gpu, i: &[HostTensor], dloss: &HostTensor) -> Result<(Vec<f32>, Vec<f32>)> {
        let z = i[0].upload(gpu)?;
        let lab = i[1].upload_u32(gpu)?;
        let dl = dloss.upload(gpu)?;
        let loss = gpu.zeros(&[self.n])?;
        let d = gpu.zeros(&[self.n, self.k])?;
        run_gpu(gpu, |r| {
            softmax_xent(r, &z, &lab, &dl, &loss, &d, self.eps as f32)
        })?;
        Ok((gpu.read(&loss)?, gpu.read(&d)?))
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
