//! Global average pooling of NHWC activations (`[n, h, w, c] -> [n, c]`) and its gradient,
//! on the deterministic reduction kernels of [`super::reduce`].

use super::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use super::reduce::{self, Axes};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::util::Rng;

/// A global average pooling over H and W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GapSpec {
    /// Batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl GapSpec {
    /// The reduction view [N, H*W, C].
    pub fn axes(&self) -> Axes {
        Axes {
            o: self.n,
            m: self.h * self.w,
            i: self.c,
        }
    }

    /// Elements of scratch [`forward`] needs (0: none).
    pub fn scratch_len(&self) -> usize {
        self.axes().scratch_len()
    }

    fn scale(&self) -> f32 {
        1.0 / (self.h * self.w) as f32
    }

    fn check(&self, big: &Tensor, small: &Tensor) -> Result<()> {
        if big.len() != self.n * self.h * self.w * self.c || small.len() != self.n * self.c {
            return Err(Error::Shape(format!(
                "global average pool {self:?}: {:?} and {:?}",
                big.shape(),
                small.shape()
            )));
        }
        Ok(())
    }
}

/// Record `y[n, c] = mean_{h, w} x[n, h, w, c]`. `scratch` must hold
/// [`GapSpec::scratch_len`] elements when that is non-zero.
pub fn forward(
    rec: &mut Recorder,
    s: &GapSpec,
    x: &Tensor,
    y: &Tensor,
    scratch: Option<&Tensor>,
) -> Result<()> {
    s.check(x, y)?;
    reduce::sum_axis(rec, x, None, y, s.axes(), s.scale(), scratch)
}

/// Record `dx[n, h, w, c] = dy[n, c] / (h * w)` (overwrites dx).
pub fn backward(rec: &mut Recorder, s: &GapSpec, dy: &Tensor, dx: &Tensor) -> Result<()> {
    s.check(dx, dy)?;
    reduce::broadcast(rec, dy, dx, s.axes(), s.scale())
}

/// f64 reference of [`forward`].
pub fn forward_ref(s: &GapSpec, x: &[f64]) -> Vec<f64> {
    reduce::sum_axis_ref(x, None, s.axes(), 1.0 / (s.h * s.w) as f64)
}

/// Harness case for global average pooling.
pub struct GapCase {
    /// Shape.
    pub spec: GapSpec,
}

impl OpCase for GapCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!("gap[{}x{}x{}x{}]", s.n, s.h, s.w, s.c)
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
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let s = &self.spec;
        let x = i[0].upload(gpu)?;
        let y = gpu.zeros(&[s.n, s.c])?;
        let scratch = gpu.zeros(&[s.scratch_len().max(1)])?;
        run_gpu(gpu, |r| forward(r, s, &x, &y, Some(&scratch)))?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let s = &self.spec;
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&i[0].shape)?;
        run_gpu(gpu, |r| backward(r, s, &g, &dx))?;
        Ok(vec![Some(gpu.read(&dx)?)])
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 1e-6,
            gradcheck: 1e-6,
        }
    }
}

/// Harness cases: odd sizes, and a long reduction on one sample (the split path).
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(GapCase {
            spec: GapSpec {
                n: 3,
                h: 5,
                w: 7,
                c: 19,
            },
        }),
        Box::new(GapCase {
            spec: GapSpec {
                n: 1,
                h: 51,
                w: 49,
                c: 5,
            },
        }),
    ]
}
