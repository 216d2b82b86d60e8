//! Backward pass of the fused normalization (training-mode statistics, or a frozen
//! BatchNorm's running statistics held constant): one reduction over `x` and `dy`
//! (normalized values recomputed, never stored), one small pass finishing the per-channel
//! gradients and per-segment sums, and one elementwise pass for `dx`.

use super::{
    channels, check_len, need, NormGrads, NormParams, NormSpec, ACT_CODES, W_DBETA, W_DGAMMA,
    W_DMU, W_DS,
};
use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Access, Cost, Grid, Kernel, Recorder, Tensor};

uniform_block! {
    /// Parameters of `norm/backward_reduce.wgsl`.
    pub(super) struct BackwardReduceParams {
        pub o: u32,
        pub m: u32,
        pub c: u32,
        pub chunks: u32,
        pub chunk_rows: u32,
        pub cblocks: u32,
        /// Channels per workgroup: a power of two <= 32.
        pub ti: u32,
        pub groups: u32,
        pub cg: u32,
        pub segs: u32,
        pub flags: u32,
        /// Added to the variance when `saved` holds variances (FROZEN).
        pub eps: f32,
    }
}

uniform_block! {
    /// Parameters of `norm/backward_finalize.wgsl`.
    pub(super) struct BackwardFinalizeParams {
        pub o: u32,
        pub c: u32,
        pub chunks: u32,
        pub groups: u32,
        pub cg: u32,
        pub segs: u32,
        /// Ceil(C / 32).
        pub cblocks: u32,
        pub seg_off: u32,
        pub flags: u32,
        /// 1 / elements per segment.
        pub inv_count: f32,
        /// L: lanes per segment, a power of two <= 256.
        pub lanes: u32,
    }
}

uniform_block! {
    /// Parameters of `norm/backward.wgsl`.
    pub(super) struct NormBackwardParams {
        pub o: u32,
        pub m: u32,
        pub c: u32,
        pub cblocks: u32,
        pub ti: u32,
        pub rblocks: u32,
        pub rows: u32,
        pub groups: u32,
        pub cg: u32,
        pub segs: u32,
        pub seg_off: u32,
        pub flags: u32,
        /// Added to the variance when `saved` holds variances (FROZEN).
        pub eps: f32,
    }
}

pub(super) static BWD_REDUCE: Kernel<BackwardReduceParams> = Kernel::new(
    "norm/backward_reduce.wgsl",
    "norm_backward_reduce",
    &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ],
    &[("ACT", &ACT_CODES)],
);
pub(super) static BWD_FINAL: Kernel<BackwardFinalizeParams> = Kernel::new(
    "norm/backward_finalize.wgsl",
    "norm_backward_finalize",
    &[
        Access::ReadWrite,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    &[],
);
pub(super) static BWD: Kernel<NormBackwardParams> = Kernel::new(
    "norm/backward.wgsl",
    "norm_backward",
    &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ],
    &[("ACT", &ACT_CODES)],
);

/// Record the fused backward of [`forward`] in training mode (batch statistics for
/// BatchNorm, so gradients flow through them): `dx` (overwritten) and the per-channel
/// gradients in `grads` (see [`NormGrads`]). The normalized values are recomputed from
/// `x` and `saved` (written by the forward). `params` must be those of the forward.
/// `dx` must not alias `x` or `dy`.
///
/// A frozen BatchNorm ([`NormSpec::frozen`]) reads its statistics from
/// `params.running_mean` and `params.running_var` instead (copied into `saved` first) and
/// differentiates with them held constant (the module docs give the formulas).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    rec: &mut Recorder,
    spec: &NormSpec,
    x: &Tensor,
    dy: &Tensor,
    params: &NormParams,
    saved: &Tensor,
    dx: &Tensor,
    grads: &NormGrads,
    scratch: &Tensor,
) -> Result<()> {
    spec.validate()?;
    let n = spec.numel();
    if x.len() != n || dy.len() != n || dx.len() != n {
        return Err(Error::Shape(format!(
            "normalization backward of {:?} with dy {:?} into {:?}, spec {}x{}x{}",
            x.shape(),
            dy.shape(),
            dx.shape(),
            spec.n,
            spec.hw,
            spec.c
        )));
    }
    check_len(saved, spec.saved_len(), "normalization saved statistics")?;
    check_len(scratch, spec.scratch_len(), "normalization scratch")?;
    let ch = channels(spec, params, x)?;
    let g = spec.geom();
    let flags = spec.flags();
    let act = [("ACT", spec.act.code())];
    if spec.frozen {
        // The shaders read (mean, variance) from `saved`: [mean; C] then [var; C].
        let rm = need(params.running_mean, "the running mean (frozen)", spec)?;
        let rv = need(params.running_var, "the running variance (frozen)", spec)?;
        rec.copy_into(rm, saved, 0)?;
        rec.copy_into(rv, saved, g.segs)?;
    }

    // Pass 1: per-(o, chunk, channel) partial sums.
    rec.dispatch(
        &BWD_REDUCE,
        &act,
        &BackwardReduceParams {
            o: g.o as u32,
            m: g.m as u32,
            c: g.c as u32,
            chunks: g.chunks as u32,
            chunk_rows: g.chunk_rows as u32,
            cblocks: g.cblocks as u32,
            ti: g.ti as u32,
            groups: g.groups as u32,
            cg: g.cg as u32,
            segs: g.segs as u32,
            flags,
            eps: spec.eps,
        },
        &[x, dy, saved, ch.gamma, ch.beta, ch.pmu, ch.ps, scratch],
        Grid::Linear((g.o * g.chunks * g.cblocks) as u32),
        // Recompute xhat, z and act'(z) and accumulate four sums per element; x and dy read
        // once, four partial sums per chunk and channel written.
        Cost::f32s(
            (12.0 + spec.act.grad_flops()) * n as f64,
            2 * n + 2 * g.segs + 4 * g.c,
            4 * g.o * g.chunks * g.c,
        ),
    )?;

    // Pass 2: per-channel gradients and per-segment sums.
    let checked = |t: Option<&'_ Tensor>, on: bool, what: &str| -> Result<Option<Tensor>> {
        match t {
            Some(t) if on => Ok(Some(need(Some(t), what, spec)?.clone())),
            _ => Ok(None),
        }
    };
    let proxy = spec.proxy.is_some();
    let pscale = spec.proxy.is_some_and(|p| p.apply_scale);
    let outs = [
        checked(grads.dgamma, spec.scale, "dgamma")?,
        checked(grads.dbeta, spec.shift, "dbeta")?,
        checked(grads.dmu, proxy, "dmu~")?,
        checked(grads.ds, pscale, "ds~")?,
    ];
    let mut f = flags;
    for (k, bit) in [W_DGAMMA, W_DBETA, W_DMU, W_DS].into_iter().enumerate() {
        if outs[k].is_some() {
            f |= bit;
        }
    }
    // Absent outputs alias a present one (or the scratch): the shader never writes them.
    let fallback = outs.iter().flatten().next().unwrap_or(scratch);
    let o: Vec<&Tensor> = outs
        .iter()
        .map(|t| t.as_ref().unwrap_or(fallback))
        .collect();
    let seg_off = 4 * g.o * g.chunks * g.c;
    let cblocks32 = if f & (W_DGAMMA | W_DBETA | W_DMU | W_DS) != 0 {
        g.c.div_ceil(32)
    } else {
        0
    };
    rec.dispatch(
        &BWD_FINAL,
        &[],
        &BackwardFinalizeParams {
            o: g.o as u32,
            c: g.c as u32,
            chunks: g.chunks as u32,
            groups: g.groups as u32,
            cg: g.cg as u32,
            segs: g.segs as u32,
            cblocks: cblocks32 as u32,
            seg_off: seg_off as u32,
            flags: f,
            inv_count: 1.0 / spec.segment_len() as f64 as f32,
            lanes: g.lanes as u32,
        },
        &[scratch, ch.gamma, ch.ps, o[0], o[1], o[2], o[3]],
        Grid::Linear((cblocks32 + g.segment_groups()) as u32),
        Cost::f32s(
            (4 * g.o * g.chunks * g.c) as f64,
            4 * g.o * g.chunks * g.c + 2 * g.c,
            4 * g.c + 2 * g.segs,
        ),
    )?;

    // Pass 3: dx.
    rec.dispatch(
        &BWD,
        &act,
        &NormBackwardParams {
            o: g.o as u32,
            m: g.m as u32,
            c: g.c as u32,
            cblocks: g.cblocks as u32,
            ti: g.ti as u32,
            rblocks: g.m.div_ceil(g.rows) as u32,
            rows: g.rows as u32,
            groups: g.groups as u32,
            cg: g.cg as u32,
            segs: g.segs as u32,
            seg_off: seg_off as u32,
            flags,
            eps: spec.eps,
        },
        &[x, dy, saved, ch.gamma, ch.beta, ch.ps, scratch, dx],
        Grid::Linear(g.elementwise_groups() as u32),
        // Recompute xhat, z and act'(z), then dx from the segment sums; x and dy read once,
        // dx written once.
        Cost::f32s(
            (10.0 + spec.act.grad_flops()) * n as f64,
            2 * n + 4 * g.segs + 3 * g.c,
            n,
        ),
    )
}
