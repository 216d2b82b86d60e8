//! Backward pass of squeeze-excitation: the gate's gradient, both linear layers' data and
//! weight gradients, and one fused kernel for `dx = dy * gate + dpooled / (h*w)`.

use super::{check_x, SeGrads, SeSaved, SeSpec, SeTemp, SeWeights};
use crate::error::{Error, Result};
use crate::gpu::{groups_for, uniform_block, Access, Cost, Grid, Kernel, Recorder, Tensor};
use crate::ops::act::{self, Act};
use crate::ops::{linear, reduce};

uniform_block! {
    /// Parameters of `squeeze_excite/backward_data.wgsl`.
    pub(super) struct SeBackwardDataParams {
        /// N * P * C.
        pub n: u32,
        /// P = H * W.
        pub hw: u32,
        pub c: u32,
        pub inv_hw: f32,
    }
}

pub(super) static SE_DX: Kernel<SeBackwardDataParams> = Kernel::new(
    "squeeze_excite/backward_data.wgsl",
    "se_backward_data",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[],
)
// dy and dx are activation gradients (f16 under mixed precision); the gate and the pooled
// gradient are per-channel f32 (the excitation's f32 output and an f32 sum).
.with_f16(&[1, 4]);
/// Record the backward pass: `dx` and the parameter gradients (all overwritten) from
/// `dy`, the input `x` and what [`forward`] saved. `scratch` as for [`forward`].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    rec: &mut Recorder,
    s: &SeSpec,
    x: &Tensor,
    p: &SeWeights,
    saved: &SeSaved,
    dy: &Tensor,
    dx: &Tensor,
    g: &SeGrads,
    tmp: &SeTemp,
    scratch: Option<&Tensor>,
) -> Result<()> {
    check_x(s, &[x, dy, dx])?;
    // dgate[n, c] = sum_p dy * x
    reduce::sum_axis(rec, dy, Some(x), &tmp.dgate, s.gap().axes(), 1.0, scratch)?;
    act::backward(rec, Act::Sigmoid, &saved.h2, &tmp.dgate, &tmp.dh2)?;
    linear::backward_weight(
        rec,
        &s.fc2(),
        &saved.a1,
        &tmp.dh2,
        g.dw2,
        Some(g.db2),
        scratch,
    )?;
    linear::backward_data(rec, &s.fc2(), &tmp.dh2, p.w2, &tmp.da1)?;
    act::backward(rec, Act::Silu, &saved.h1, &tmp.da1, &tmp.dh1)?;
    linear::backward_weight(
        rec,
        &s.fc1(),
        &saved.pooled,
        &tmp.dh1,
        g.dw1,
        Some(g.db1),
        scratch,
    )?;
    linear::backward_data(rec, &s.fc1(), &tmp.dh1, p.w1, &tmp.dpooled)?;
    if saved.gate.len() != s.n * s.c || tmp.dpooled.len() != s.n * s.c {
        return Err(Error::Shape(format!(
            "squeeze-excitation {s:?}: gate {:?}, pooled gradient {:?}",
            saved.gate.shape(),
            tmp.dpooled.shape()
        )));
    }
    let n = s.len();
    rec.dispatch(
        &SE_DX,
        &[],
        &SeBackwardDataParams {
            n: n as u32,
            hw: (s.h * s.w) as u32,
            c: s.c as u32,
            inv_hw: 1.0 / (s.h * s.w) as f32,
        },
        &[dy, &saved.gate, &tmp.dpooled, dx],
        Grid::Linear(groups_for(n, 256)),
        Cost::tensors(3.0 * n as f64, &[dy, &saved.gate, &tmp.dpooled], &[dx]),
    )
}
