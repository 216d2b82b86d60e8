//! Harness cases of the axis sums: global average pooling, a long per-channel sum (the
//! split two-pass path) and a row sum.

use super::{broadcast, sum_axis, sum_axis_ref, Axes};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy, HostTensor, Input, OpCase, Prepared, Tolerance,
};
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
    /// Storage type of x and dx (the sums and dy stay f32).
    pub dtype: Dtype,
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
            "{}{:?}/axes{}..{}{}",
            if self.mean { "mean" } else { "sum" },
            self.shape,
            self.from,
            self.to,
            dtype_suffix(self.dtype)
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
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let ax = self.axes();
        Ok(Box::new(ReduceRun {
            ax,
            scale: self.scale() as f32,
            x: i[0].upload_as(gpu, self.dtype)?,
            out: gpu.zeros(&self.out_shape())?,
            scratch: gpu.zeros(&[ax.scratch_len().max(1)])?,
            dy: upload_dy(gpu, dy, 0, &self.out_shape())?,
            dx: gpu.zeros_of(&self.shape, self.dtype)?,
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

/// The tensors of one [`ReduceCase`] run.
struct ReduceRun {
    ax: Axes,
    scale: f32,
    x: Tensor,
    out: Tensor,
    scratch: Tensor,
    dy: Tensor,
    dx: Tensor,
}

impl Prepared for ReduceRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        sum_axis(
            r,
            &self.x,
            None,
            &self.out,
            self.ax,
            self.scale,
            Some(&self.scratch),
        )
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        broadcast(r, &self.dy, &self.dx, self.ax, self.scale)
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.out)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(vec![Some(gpu.read(&self.dx)?)])
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = f32_cases();
    // The f16 variants on the pooling and the split two-pass shapes.
    v.push(Box::new(ReduceCase {
        shape: vec![3, 5, 7, 19],
        from: 1,
        to: 3,
        mean: true,
        dtype: Dtype::F16,
    }));
    v.push(Box::new(ReduceCase {
        shape: vec![2, 40, 41, 3],
        from: 0,
        to: 3,
        mean: false,
        dtype: Dtype::F16,
    }));
    v
}

fn f32_cases() -> Vec<Box<dyn OpCase>> {
    vec![
        // Global average pooling over H, W of NHWC.
        Box::new(ReduceCase {
            shape: vec![3, 5, 7, 19],
            from: 1,
            to: 3,
            mean: true,
            dtype: Dtype::F32,
        }),
        // Per-channel sum over N, H, W, long enough to take the split two-pass path.
        Box::new(ReduceCase {
            shape: vec![2, 40, 41, 3],
            from: 0,
            to: 3,
            mean: false,
            dtype: Dtype::F32,
        }),
        // Row sum over the last axis.
        Box::new(ReduceCase {
            shape: vec![6, 37],
            from: 1,
            to: 2,
            mean: false,
            dtype: Dtype::F32,
        }),
    ]
}
