//! Harness cases of the elementwise ops: a residual add with drop-connect scales, and the
//! squeeze-excitation channel scale.

use super::{
    channel_scale, channel_scale_backward, channel_scale_backward_ref, channel_scale_ref,
    residual_add, residual_add_backward_ref, residual_add_ref, scale_rows,
};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase};
use crate::util::Rng;

/// Harness case for [`residual_add`] (gradients to both branches).
pub struct ResidualCase {
    /// Shape [N, H, W, C].
    pub shape: Vec<usize>,
}

impl OpCase for ResidualCase {
    fn name(&self) -> String {
        format!("residual_add{:?}", self.shape)
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
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let a = i[0].upload(gpu)?;
        let b = i[1].upload(gpu)?;
        let s = i[2].upload(gpu)?;
        let y = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| residual_add(r, &a, &b, &s, &y))?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let s = i[2].upload(gpu)?;
        let g = dy[0].upload(gpu)?;
        let db = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| scale_rows(r, &g, &s, &db))?;
        // The identity branch's gradient is dy itself: the trainer aliases it, no kernel.
        Ok(vec![Some(gpu.read(&g)?), Some(gpu.read(&db)?), None])
    }
}

/// Harness case for [`channel_scale`] (gradients to x and s).
pub struct ChannelScaleCase {
    /// Shape [N, H, W, C].
    pub shape: Vec<usize>,
}

impl OpCase for ChannelScaleCase {
    fn name(&self) -> String {
        format!("channel_scale{:?}", self.shape)
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
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let x = i[0].upload(gpu)?;
        let s = i[1].upload(gpu)?;
        let y = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| channel_scale(r, &x, &s, &y))?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let x = i[0].upload(gpu)?;
        let s = i[1].upload(gpu)?;
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&self.shape)?;
        let ds = gpu.zeros(&i[1].shape)?;
        run_gpu(gpu, |r| {
            channel_scale_backward(r, &x, &s, &g, Some(&dx), &ds, None)
        })?;
        Ok(vec![Some(gpu.read(&dx)?), Some(gpu.read(&ds)?)])
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(ResidualCase {
            shape: vec![4, 3, 5, 6],
        }),
        Box::new(ChannelScaleCase {
            shape: vec![2, 5, 3, 7],
        }),
    ]
}
