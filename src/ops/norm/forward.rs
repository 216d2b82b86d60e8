//! Forward pass of the fused normalization: a statistics pass (partial moments over row
//! chunks), a merge pass per segment (which also updates BatchNorm's running statistics)
//! and one elementwise pass `y = [PN] act(affine(normalize(x)))`. BatchNorm evaluation is
//! the elementwise pass alone, on the running statistics.

use super::{
    channels, check_len, need, Geom, NormKind, NormParams, NormSpec, ACT_CODES, VAR_INPUT,
};
use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Access, Cost, Grid, Kernel, Recorder, Tensor};

uniform_block! {
    /// Parameters of `norm/stats.wgsl`.
    pub(super) struct StatsParams {
        pub o: u32,
        pub m: u32,
        pub c: u32,
        pub chunks: u32,
        pub chunk_rows: u32,
        /// Ceil(C / ti).
        pub cblocks: u32,
        /// Channels per workgroup: a power of two <= 32.
        pub ti: u32,
    }
}

uniform_block! {
    /// Parameters of both entry points of `norm/stats_finalize.wgsl`.
    pub(super) struct StatsFinalizeParams {
        pub c: u32,
        pub chunks: u32,
        pub groups: u32,
        /// Channels per group.
        pub cg: u32,
        /// S = O * G.
        pub segs: u32,
        pub eps: f32,
        pub momentum: f32,
        /// L: lanes per segment, a power of two <= 256.
        pub lanes: u32,
    }
}

uniform_block! {
    /// Parameters of `norm/forward.wgsl`.
    pub(super) struct NormForwardParams {
        pub o: u32,
        pub m: u32,
        pub c: u32,
        /// Ceil(C / ti).
        pub cblocks: u32,
        /// Channels per workgroup: a power of two <= 32.
        pub ti: u32,
        /// Ceil(M / rows).
        pub rblocks: u32,
        /// Rows per workgroup.
        pub rows: u32,
        pub groups: u32,
        /// C / G.
        pub cg: u32,
        /// Where rstd (or the variance) starts in `rstd`.
        pub rstd_off: u32,
        pub flags: u32,
        pub eps: f32,
    }
}

pub(super) static STATS: Kernel<StatsParams> = Kernel::new(
    "norm/stats.wgsl",
    "norm_stats_partial",
    &[Access::Read, Access::ReadWrite],
    &[],
);
pub(super) static STATS_FINAL: Kernel<StatsFinalizeParams> = Kernel::new(
    "norm/stats_finalize.wgsl",
    "norm_stats_finalize",
    &[Access::Read, Access::ReadWrite],
    &[],
);
pub(super) static STATS_FINAL_RUNNING: Kernel<StatsFinalizeParams> = Kernel::new(
    "norm/stats_finalize.wgsl",
    "norm_stats_finalize_running",
    &[
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    &[],
);
pub(super) static FWD: Kernel<NormForwardParams> = Kernel::new(
    "norm/forward.wgsl",
    "norm_forward",
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
/// Record the fused forward `y = [PN] act(affine(normalize(x)))` (see the module docs).
///
/// `training` selects BatchNorm's batch statistics (and updates the running statistics
/// when given) over its running statistics, except for a frozen BatchNorm
/// ([`NormSpec::frozen`]), which always uses (and never updates) its running statistics;
/// Layer/Group norms always use the sample's own statistics. `saved` ([`NormSpec::saved_len`]) receives the statistics the backward
/// needs (untouched by a BatchNorm evaluation or frozen forward); `scratch`
/// ([`NormSpec::scratch_len`]) is temporary. `y` must not alias `x`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    rec: &mut Recorder,
    spec: &NormSpec,
    training: bool,
    x: &Tensor,
    params: &NormParams,
    y: &Tensor,
    saved: &Tensor,
    scratch: &Tensor,
) -> Result<()> {
    spec.validate()?;
    let n = spec.numel();
    if x.len() != n || y.len() != n {
        return Err(Error::Shape(format!(
            "normalization of {:?} into {:?}, spec {}x{}x{}",
            x.shape(),
            y.shape(),
            spec.n,
            spec.hw,
            spec.c
        )));
    }
    let ch = channels(spec, params, x)?;
    let g = spec.geom();
    let mut flags = spec.flags();
    let eval_bn = spec.uses_running_stats(training);
    let (mean, rstd, rstd_off) = if eval_bn {
        flags |= VAR_INPUT;
        (
            need(params.running_mean, "the running mean (evaluation)", spec)?,
            need(
                params.running_var,
                "the running variance (evaluation)",
                spec,
            )?,
            0,
        )
    } else {
        check_len(saved, spec.saved_len(), "normalization saved statistics")?;
        check_len(scratch, spec.scratch_len(), "normalization scratch")?;
        statistics(rec, spec, &g, training, x, params, saved, scratch)?;
        (saved, saved, g.segs)
    };
    rec.dispatch(
        &FWD,
        &[("ACT", spec.act.code())],
        &NormForwardParams {
            o: g.o as u32,
            m: g.m as u32,
            c: g.c as u32,
            cblocks: g.cblocks as u32,
            ti: g.ti as u32,
            rblocks: g.m.div_ceil(g.rows) as u32,
            rows: g.rows as u32,
            groups: g.groups as u32,
            cg: g.cg as u32,
            rstd_off: rstd_off as u32,
            flags,
            eps: spec.eps,
        },
        &[x, mean, rstd, ch.gamma, ch.beta, ch.pmu, ch.ps, y],
        Grid::Linear(g.elementwise_groups() as u32),
        // Normalize, affine, activation (and the proxy shift and scale) per element; x read
        // and y written once, plus the statistics and the per-channel parameters.
        Cost::f32s(
            (4.0 + spec.act.flops() + if spec.proxy.is_some() { 2.0 } else { 0.0 }) * n as f64,
            n + 2 * g.segs + 4 * g.c,
            n,
        ),
    )
}

/// Statistics passes: partial moments into scratch, merged into saved (+ running stats).
#[allow(clippy::too_many_arguments)]
fn statistics(
    rec: &mut Recorder,
    spec: &NormSpec,
    g: &Geom,
    training: bool,
    x: &Tensor,
    params: &NormParams,
    saved: &Tensor,
    scratch: &Tensor,
) -> Result<()> {
    rec.dispatch(
        &STATS,
        &[],
        &StatsParams {
            o: g.o as u32,
            m: g.m as u32,
            c: g.c as u32,
            chunks: g.chunks as u32,
            chunk_rows: g.chunk_rows as u32,
            cblocks: g.cblocks as u32,
            ti: g.ti as u32,
        },
        &[x, scratch],
        Grid::Linear((g.o * g.chunks * g.cblocks) as u32),
        // A Welford update per element; x read once, (count, mean, M2) per chunk and channel.
        Cost::f32s(4.0 * x.len() as f64, x.len(), 3 * g.o * g.chunks * g.c),
    )?;
    let words = StatsFinalizeParams {
        c: g.c as u32,
        chunks: g.chunks as u32,
        groups: g.groups as u32,
        cg: g.cg as u32,
        segs: g.segs as u32,
        eps: spec.eps,
        momentum: spec.momentum,
        lanes: g.lanes as u32,
    };
    let grid = Grid::Linear(g.segment_groups() as u32);
    // Merging the chunk moments (Chan et al.), about six operations per partial.
    let partials = 3 * g.o * g.chunks * g.c;
    let merge = Cost::f32s(2.0 * partials as f64, partials, 2 * g.segs);
    let running = spec.kind == NormKind::Batch && training;
    if running && (params.running_mean.is_some() || params.running_var.is_some()) {
        let rm = need(
            params.running_mean,
            "the running mean with the running variance",
            spec,
        )?;
        let rv = need(
            params.running_var,
            "the running variance with the running mean",
            spec,
        )?;
        rec.dispatch(
            &STATS_FINAL_RUNNING,
            &[],
            &words,
            &[scratch, saved, rm, rv],
            grid,
            merge.plus(Cost::f32s(4.0 * spec.c as f64, 2 * spec.c, 2 * spec.c)),
        )
    } else {
        rec.dispatch(&STATS_FINAL, &[], &words, &[scratch, saved], grid, merge)
    }
}
