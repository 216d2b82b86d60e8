//! Harness cases of the activations (ReLU, SiLU, sigmoid on an odd shape).

use super::{backward, forward, Act};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy_as, HostTensor, Input, OpCase, Prepared, Tolerance,
};
use crate::util::Rng;

/// Harness case for one activation on one shape.
pub struct ActCase {
    /// Activation.
    pub act: Act,
    /// Shape.
    pub shape: Vec<usize>,
    /// Storage type of x, y, dy, dx (f16: the kernels' f16 variants).
    pub dtype: Dtype,
}

impl OpCase for ActCase {
    fn name(&self) -> String {
        format!(
            "{}{:?}{}",
            self.act.name(),
            self.shape,
            dtype_suffix(self.dtype)
        )
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
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance::default().for_dtype(self.dtype)
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        Ok(Box::new(ActRun {
            act: self.act,
            x: i[0].upload_as(gpu, self.dtype)?,
            y: gpu.zeros_of(&self.shape, self.dtype)?,
            dy: upload_dy_as(gpu, dy, 0, &self.shape, self.dtype)?,
            dx: gpu.zeros_of(&self.shape, self.dtype)?,
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
    for dtype in [Dtype::F32, Dtype::F16] {
        for act in [Act::Relu, Act::Silu, Act::Sigmoid] {
            v.push(Box::new(ActCase {
                act,
                shape: vec![2, 7, 5, 3],
                dtype,
            }));
        }
    }
    v
}
