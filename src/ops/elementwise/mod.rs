//! Residual add with a per-sample branch scale (drop-connect) and the per-sample,
//! per-channel scale of squeeze-excitation: launchers, f64 references, harness cases.

use super::harness::{run_gpu, HostTensor, Input, OpCase};
use super::reduce::{self, Axes};
use crate::error::{Error, Result};
use crate::gpu::{groups_for, Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

static RESIDUAL: KernelDef = KernelDef {
    shader: "elementwise/residual_add.wgsl",
    entry: "residual_add",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[],
};
static SCALE_ROWS: KernelDef = KernelDef {
    shader: "elementwise/scale_rows.wgsl",
    entry: "scale_rows",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[],
};
static CHANNEL_SCALE: KernelDef = KernelDef {
    shader: "elementwise/channel_scale.wgsl",
    entry: "channel_scale",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[],
};

fn batch_of(t: &Tensor) -> usize {
    t.shape().first().copied().unwrap_or(1)
}

/// Record y = a + s[n] * b over tensors of shape [N, ...]; `s` has N entries.
pub fn residual_add(
    rec: &mut Recorder,
    a: &Tensor,
    b: &Tensor,
    s: &Tensor,
    y: &Tensor,
) -> Result<()> {
    let n = a.len();
    let batch = batch_of(a);
    if b.len() != n || y.len() != n || s.len() != batch || batch == 0 {
        return Err(Error::Shape(format!(
            "residual add of {:?} and {:?} with scale {:?}",
            a.shape(),
            b.shape(),
            s.shape()
        )));
    }
    rec.dispatch(
        &RESIDUAL,
        &[],
        &[n as u32, (n / batch) as u32],
        &[a, b, s, y],
        Grid::Linear(groups_for(n, 256)),
    )
}

/// Record y = x * s[n] for x of shape [N, ...] (also the branch gradient of
/// [`residual_add`]: db = dy * s).
pub fn scale_rows(rec: &mut Recorder, x: &Tensor, s: &Tensor, y: &Tensor) -> Result<()> {
    let n = x.len();
    let rows = s.len();
    if rows == 0 || !n.is_multiple_of(rows) || y.len() != n {
        return Err(Error::Shape(format!(
            "scale rows of {:?} by {:?}",
            x.shape(),
            s.shape()
        )));
    }
    rec.dispatch(
        &SCALE_ROWS,
        &[],
        &[n as u32, (n / rows) as u32],
        &[x, s, y],
        Grid::Linear(groups_for(n, 256)),
    )
}

/// Record y[n, p, c] = x[n, p, c] * s[n, c] for NHWC `x` and `s` of shape [N, C].
pub fn channel_scale(rec: &mut Recorder, x: &Tensor, s: &Tensor, y: &Tensor) -> Result<()> {
    let sh = x.shape();
    if sh.len() != 4 || s.len() != sh[0] * sh[3] || y.len() != x.len() {
        return Err(Error::Shape(format!(
            "channel scale of {:?} by {:?}",
            sh,
            s.shape()
        )));
    }
    let n = x.len();
    rec.dispatch(
        &CHANNEL_SCALE,
        &[],
        &[n as u32, (sh[1] * sh[2]) as u32, sh[3] as u32],
        &[x, s, y],
        Grid::Linear(groups_for(n, 256)),
    )
}

/// Record the gradients of [`channel_scale`]: dx = dy * s and ds[n, c] = sum_p dy * x.
/// `scratch` as for [`reduce::sum_axis`] over [N, H*W, C].
pub fn channel_scale_backward(
    rec: &mut Recorder,
    x: &Tensor,
    s: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    ds: &Tensor,
    scratch: Option<&Tensor>,
) -> Result<()> {
    if let Some(dx) = dx {
        channel_scale(rec, dy, s, dx)?;
    }
    let sh = x.shape();
    let ax = Axes {
        o: sh[0],
        m: sh[1] * sh[2],
        i: sh[3],
    };
    reduce::sum_axis(rec, dy, Some(x), ds, ax, 1.0, scratch)
}

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
        let y = (0..i[0].data.len())
            .map(|k| i[0].data[k] + i[2].data[k / per] * i[1].data[k])
            .collect();
        vec![HostTensor::new(&self.shape, y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let per = i[0].data.len() / self.shape[0];
        let db = (0..i[0].data.len())
            .map(|k| dy[0].data[k] * i[2].data[k / per])
            .collect();
        vec![
            Some(dy[0].clone()),
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
        let (hw, c) = (sh[1] * sh[2], sh[3]);
        let y = (0..i[0].data.len())
            .map(|k| i[0].data[k] * i[1].data[(k / (hw * c)) * c + k % c])
            .collect();
        vec![HostTensor::new(sh, y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let sh = &self.shape;
        let (hw, c) = (sh[1] * sh[2], sh[3]);
        let mut dx = vec![0.0; i[0].data.len()];
        let mut ds = vec![0.0; i[1].data.len()];
        for (k, d) in dx.iter_mut().enumerate() {
            let sc = (k / (hw * c)) * c + k % c;
            *d = dy[0].data[k] * i[1].data[sc];
            ds[sc] += dy[0].data[k] * i[0].data[k];
        }
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

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&RESIDUAL, &SCALE_ROWS, &CHANNEL_SCALE];

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
