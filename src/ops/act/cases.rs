//! Harness cases of the activations (ReLU, SiLU, sigmoid on an odd shape).

use super::{backward, forward, Act};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::harness::{upload_dy, HostTensor, Input, OpCase, Prepared};
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
    fn output_shapes(&self, _: &[HostTensor]) -> Vec<Vec<usize>> {
        vec![self.shape.clone()]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        Ok(Box::new(ActRun {
            act: self.act,
            x: i[0].upload(gpu)?,
            y: gpu.zeros(&self.shape)?,
            dy: upload_dy(gpu, dy, 0, &self.shape)?,
            dx: gpu.zeros(&self.shape)?,
        }))
    }
}

/// The tensors of one [`ActCase`] run.
struct ActRun {
    act: Act,
    x: Tensor,
    y: Tensor,
    dy: Tensor,
    dx: Tensor,
}

impl Prepared for ActRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        forward(r, self.act, &self.x, &self.y)
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        backward(r, self.act, &self.x, &self.dy, &self.dx)
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(vec![Some(gpu.read(&self.dx)?)])
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
