//! Residual add with a per-sample branch scale (drop-connect) and the per-sample,
//! per-channel scale of squeeze-excitation: launchers, f64 references, harness cases.

mod cases;
mod reference;

pub use cases::{cases, ChannelScaleCase, ResidualCase};
pub use reference::{
    channel_scale_backward_ref, channel_scale_ref, residual_add_backward_ref, residual_add_ref,
};

use super::reduce::{self, Axes};
use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Grid, Kernel, KernelDef, Recorder, Tensor,
};

uniform_block! {
    /// Parameters of `elementwise/residual_add.wgsl`.
    pub(super) struct ResidualAddParams {
        pub n: u32,
        pub per: u32,
    }
}

uniform_block! {
    /// Parameters of `elementwise/scale_rows.wgsl`.
    pub(super) struct ScaleRowsParams {
        pub n: u32,
        pub per: u32,
    }
}

uniform_block! {
    /// Parameters of `elementwise/channel_scale.wgsl`.
    pub(super) struct ChannelScaleParams {
        /// Total elements N*P*C.
        pub n: u32,
        /// P = H*W.
        pub hw: u32,
        /// Channels.
        pub c: u32,
    }
}

static RESIDUAL: Kernel<ResidualAddParams> = Kernel::new(
    "elementwise/residual_add.wgsl",
    "residual_add",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[],
)
// a, b, y are activations; the per-sample drop-connect scale s stays f32 (N values, and
// 0 or 1/keep must be exact).
.with_f16(&[1, 2, 4]);
static SCALE_ROWS: Kernel<ScaleRowsParams> = Kernel::new(
    "elementwise/scale_rows.wgsl",
    "scale_rows",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[],
)
// x, y are activations (gradients); the row scale s is f32 like residual_add's.
.with_f16(&[1, 3]);
static CHANNEL_SCALE: Kernel<ChannelScaleParams> = Kernel::new(
    "elementwise/channel_scale.wgsl",
    "channel_scale",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[],
)
// x, y are activations; the gate s (N*C values, the output of the SE excitation's
// sigmoid) stays f32: it is tiny, and it is the f32 output of the excitation GEMMs.
.with_f16(&[1, 3]);

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
        &ResidualAddParams {
            n: n as u32,
            per: (n / batch) as u32,
        },
        &[a, b, s, y],
        Grid::Linear(groups_for(n, 256)),
        Cost::tensors(2.0 * n as f64, &[a, b, s], &[y]),
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
        &ScaleRowsParams {
            n: n as u32,
            per: (n / rows) as u32,
        },
        &[x, s, y],
        Grid::Linear(groups_for(n, 256)),
        Cost::tensors(n as f64, &[x, s], &[y]),
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
        &ChannelScaleParams {
            n: n as u32,
            hw: (sh[1] * sh[2]) as u32,
            c: sh[3] as u32,
        },
        &[x, s, y],
        Grid::Linear(groups_for(n, 256)),
        Cost::tensors(n as f64, &[x, s], &[y]),
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

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&RESIDUAL.def, &SCALE_ROWS.def, &CHANNEL_SCALE.def];
