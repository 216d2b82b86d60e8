//! Harness cases of the activations (ReLU, SiLU, sigmoid on an odd shape).

use super::{backward, forward, Act};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase};
use crate::util::Rng;

/// Harness case for one activation on one shape.
pub struct ActCase {
    /// Activation.
    pub act: Act,
    /// Shape.
    pub shape: Vec<usize>,
}

impl OpCase for ActCase {
    fn name(&self) -> String {
        format!("{}{:?}", self.act.name(), self.shape)
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        vec![Input::diff(HostTensor::randn(&self.shape, 2.0, rng))]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        vec![HostTensor::new(
            &i[0].shape,
            i[0].data.iter().map(|&x| self.act.f(x)).collect(),
        )]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let d = i[0]
            .data
            .iter()
            .zip(&dy[0].data)
            .map(|(&x, &g)| g * self.act.df(x))
            .collect();
        vec![Some(HostTensor::new(&i[0].shape, d))]
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let x = i[0].upload(gpu)?;
        let y = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| forward(r, self.act, &x, &y))?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let x = i[0].upload(gpu)?;
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| backward(r, self.act, &x, &g, &dx))?;
        Ok(vec![Some(gpu.read(&dx)?)])
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for act in [Act::Relu, Act::Silu, Act::Sigmoid] {
        v.push(Box::new(ActCase {
            act,
            shape: vec![2, 7, 5, 3],
        }));
    }
    v
}
