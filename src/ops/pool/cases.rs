//! Harness cases of global average pooling: odd sizes, and a long reduction on one sample
//! (the split path); f16 inputs (mixed precision: x and dx f16, the pooled y and its
//! gradient f32 sums).

use super::{backward, forward, forward_ref, GapSpec};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy, HostTensor, Input, OpCase, Prepared, Tolerance,
};
use crate::util::Rng;

/// Harness case for global average pooling.
pub struct GapCase {
    /// Shape.
    pub spec: GapSpec,
    /// Storage type of x and dx (the pooled y and dy are f32 either way).
    pub dtype: Dtype,
}

impl OpCase for GapCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "gap[{}x{}x{}x{}]{}",
            s.n,
            s.h,
            s.w,
            s.c,
            dtype_suffix(self.dtype)
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        vec![Input::diff(HostTensor::randn(
            &[s.n, s.h, s.w, s.c],
            1.0,
            rng,
        ))]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let s = &self.spec;
        vec![HostTensor::new(&[s.n, s.c], forward_ref(s, &i[0].data))]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let hw = s.h * s.w;
        let dx = (0..i[0].data.len())
            .map(|k| dy[0].data[(k / (hw * s.c)) * s.c + k % s.c] / hw as f64)
            .collect();
        vec![Some(HostTensor::new(&i[0].shape, dx))]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let s = self.spec;
        Ok(Box::new(GapRun {
            s,
            x: i[0].upload_as(gpu, self.dtype)?,
            y: gpu.zeros(&[s.n, s.c])?,
            scratch: gpu.zeros(&[s.scratch_len().max(1)])?,
            dy: upload_dy(gpu, dy, 0, &[s.n, s.c])?,
            dx: gpu.zeros_of(&i[0].shape, self.dtype)?,
        }))
    }
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 1e-6,
            gradcheck: 1e-6,
        }
        .for_dtype(self.dtype)
    }
}

/// The tensors of one [`GapCase`] run.
struct GapRun {
    s: GapSpec,
    x: Tensor,
    y: Tensor,
    scratch: Tensor,
    dy: Tensor,
    dx: Tensor,
}

impl Prepared for GapRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        forward(r, &self.s, &self.x, &self.y, Some(&self.scratch))
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        backward(r, &self.s, &self.dy, &self.dx)
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(vec![Some(gpu.read(&self.dx)?)])
    }
}

/// Harness cases: odd sizes, and a long reduction on one sample (the split path), each
/// with f32 and with f16 activations.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for (n, h, w, c) in [(3, 5, 7, 19), (1, 51, 49, 5)] {
            v.push(Box::new(GapCase {
                spec: GapSpec { n, h, w, c },
                dtype,
            }));
        }
    }
    v
}
