//! Harness cases of the elementwise ops: a residual add with drop-connect scales, and the
//! squeeze-excitation channel scale.

use super::{
    channel_scale, channel_scale_backward, channel_scale_backward_ref, channel_scale_ref,
    residual_add, residual_add_backward_ref, residual_add_ref, scale_rows,
};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy_as, HostTensor, Input, OpCase, Prepared, Tolerance,
};
use crate::ops::reduce::Axes;
use crate::util::Rng;

/// Harness case for [`residual_add`] (gradients to both branches).
pub struct ResidualCase {
    /// Shape [N, H, W, C].
    pub shape: Vec<usize>,
    /// Storage type of a, b, y and the gradients (the scales stay f32).
    pub dtype: Dtype,
}

impl OpCase for ResidualCase {
    fn name(&self) -> String {
        format!("residual_add{:?}{}", self.shape, dtype_suffix(self.dtype))
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let n = self.shape[0];
        // Drop-connect scales: 0 (dropped) or 1/0.8 (kept, rescaled).
        let s = (0..n)
            .map(|k| if k % 3 == 1 { 0.0 } else { 1.25 })
            .collect();
        vec![
            Input::diff(HostTensor::randn(&self.shape, 1.0, rng)),
            Input::diff(HostTensor::randn(&self.shape, 1.0, rng)),
            Input::constant(HostTensor::new(&[n], s)),
        ]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let per = i[0].data.len() / self.shape[0];
        let y = residual_add_ref(&i[0].data, &i[1].data, &i[2].data, per);
        vec![HostTensor::new(&self.shape, y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let per = i[0].data.len() / self.shape[0];
        let (da, db) = residual_add_backward_ref(&dy[0].data, &i[2].data, per);
        vec![
            Some(HostTensor::new(&self.shape, da)),
            Some(HostTensor::new(&self.shape, db)),
            None,
        ]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let d = self.dtype;
        Ok(Box::new(ResidualRun {
            a: i[0].upload_as(gpu, d)?,
            b: i[1].upload_as(gpu, d)?,
            s: i[2].upload(gpu)?,
            y: gpu.zeros_of(&self.shape, d)?,
            dy: upload_dy_as(gpu, dy, 0, &self.shape, d)?,
            db: gpu.zeros_of(&self.shape, d)?,
        }))
    }
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance::default().for_dtype(self.dtype)
    }
}

/// The tensors of one [`ResidualCase`] run.
struct ResidualRun {
    a: Tensor,
    b: Tensor,
    s: Tensor,
    y: Tensor,
    dy: Tensor,
    db: Tensor,
}

impl Prepared for ResidualRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        residual_add(r, &self.a, &self.b, &self.s, &self.y)
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        scale_rows(r, &self.dy, &self.s, &self.db)
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        // The identity branch's gradient is dy itself: the trainer aliases it, no kernel.
        Ok(vec![
            Some(gpu.read(&self.dy)?),
            Some(gpu.read(&self.db)?),
            None,
        ])
    }
}

/// Harness case for [`channel_scale`] (gradients to x and s).
pub struct ChannelScaleCase {
    /// Shape [N, H, W, C].
    pub shape: Vec<usize>,
    /// Storage type of x, y, dy, dx (the gate s and its gradient stay f32).
    pub dtype: Dtype,
}

impl OpCase for ChannelScaleCase {
    fn name(&self) -> String {
        format!("channel_scale{:?}{}", self.shape, dtype_suffix(self.dtype))
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let sh = &self.shape;
        vec![
            Input::diff(HostTensor::randn(sh, 1.0, rng)),
            Input::diff(HostTensor::randn(&[sh[0], sh[3]], 1.0, rng)),
        ]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let sh = &self.shape;
        let y = channel_scale_ref(&i[0].data, &i[1].data, sh[1] * sh[2], sh[3]);
        vec![HostTensor::new(sh, y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let sh = &self.shape;
        let (dx, ds) =
            channel_scale_backward_ref(&i[0].data, &i[1].data, &dy[0].data, sh[1] * sh[2], sh[3]);
        vec![
            Some(HostTensor::new(sh, dx)),
            Some(HostTensor::new(&i[1].shape, ds)),
        ]
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
        let sh = &self.shape;
        let ax = Axes {
            o: sh[0],
            m: sh[1] * sh[2],
            i: sh[3],
        };
        let d = self.dtype;
        Ok(Box::new(ChannelScaleRun {
            x: i[0].upload_as(gpu, d)?,
            s: i[1].upload(gpu)?,
            y: gpu.zeros_of(sh, d)?,
            dy: upload_dy_as(gpu, dy, 0, sh, d)?,
            dx: gpu.zeros_of(sh, d)?,
            ds: gpu.zeros(&i[1].shape)?,
            scratch: gpu.zeros(&[ax.scratch_len().max(1)])?,
        }))
    }
}

/// The tensors of one [`ChannelScaleCase`] run.
struct ChannelScaleRun {
    x: Tensor,
    s: Tensor,
    y: Tensor,
    dy: Tensor,
    dx: Tensor,
    ds: Tensor,
    scratch: Tensor,
}

impl Prepared for ChannelScaleRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        channel_scale(r, &self.x, &self.s, &self.y)
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        channel_scale_backward(
            r,
            &self.x,
            &self.s,
            &self.dy,
            Some(&self.dx),
            &self.ds,
            Some(&self.scratch),
        )
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(vec![Some(gpu.read(&self.dx)?), Some(gpu.read(&self.ds)?)])
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        v.push(Box::new(ResidualCase {
            shape: vec![4, 3, 5, 6],
            dtype,
        }));
        v.push(Box::new(ChannelScaleCase {
            shape: vec![2, 5, 3, 7],
            dtype,
        }));
    }
    v
}
