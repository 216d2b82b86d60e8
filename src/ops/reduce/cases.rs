//! Harness cases of the axis sums: global average pooling, a long per-channel sum (the
//! split two-pass path) and a row sum.

use super::{broadcast, sum_axis, sum_axis_ref, Axes};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use crate::util::Rng;

/// Harness case: sum or mean of a tensor over axes `from..to`.
pub struct ReduceCase {
    /// Input shape.
    pub shape: Vec<usize>,
    /// First reduced axis.
    pub from: usize,
    /// One past the last reduced axis.
    pub to: usize,
    /// Mean instead of sum.
    pub mean: bool,
}

impl ReduceCase {
    fn axes(&self) -> Axes {
        Axes::of(&self.shape, self.from, self.to).expect("valid case")
    }
    fn scale(&self) -> f64 {
        if self.mean {
            1.0 / self.axes().m as f64
        } else {
            1.0
        }
    }
    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.shape[..self.from].to_vec();
        s.extend_from_slice(&self.shape[self.to..]);
        s
    }
}

impl OpCase for ReduceCase {
    fn name(&self) -> String {
        format!(
            "{}{:?}/axes{}..{}",
            if self.mean { "mean" } else { "sum" },
            self.shape,
            self.from,
            self.to
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        vec![Input::diff(HostTensor::randn(&self.shape, 1.0, rng))]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let v = sum_axis_ref(&i[0].data, None, self.axes(), self.scale());
        vec![HostTensor::new(&self.out_shape(), v)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let ax = self.axes();
        let mut dx = vec![0.0; i[0].data.len()];
        for o in 0..ax.o {
            for m in 0..ax.m {
                for ii in 0..ax.i {
                    dx[(o * ax.m + m) * ax.i + ii] = dy[0].data[o * ax.i + ii] * self.scale();
                }
            }
        }
        vec![Some(HostTensor::new(&self.shape, dx))]
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let ax = self.axes();
        let x = i[0].upload(gpu)?;
        let out = gpu.zeros(&self.out_shape())?;
        let scratch = gpu.zeros(&[ax.scratch_len().max(1)])?;
        run_gpu(gpu, |r| {
            sum_axis(r, &x, None, &out, ax, self.scale() as f32, Some(&scratch))
        })?;
        Ok(vec![gpu.read(&out)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        _i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| {
            broadcast(r, &g, &dx, self.axes(), self.scale() as f32)
        })?;
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

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        // Global average pooling over H, W of NHWC.
        Box::new(ReduceCase {
            shape: vec![3, 5, 7, 19],
            from: 1,
            to: 3,
            mean: true,
        }),
        // Per-channel sum over N, H, W, long enough to take the split two-pass path.
        Box::new(ReduceCase {
            shape: vec![2, 40, 41, 3],
            from: 0,
            to: 3,
            mean: false,
        }),
        // Row sum over the last axis.
        Box::new(ReduceCase {
            shape: vec![6, 37],
            from: 1,
            to: 2,
            mean: false,
        }),
    ]
}
