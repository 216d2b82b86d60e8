//! Forward pass of the fused normalization: a statistics pass (partial moments over row
//! chunks), a merge pass per segment (which also updates BatchNorm's running statistics)
//! and one elementwise pass `y = [PN] act(affine(normalize(x)))`. BatchNorm evaluation is
//! the elementwise pass alone, on the running statistics.

use super::{
    channels, check_len, need, Geom, NormKind, NormParams, NormSpec, ACT_CODES, VAR_INPUT,
};
use crate::error::{Error, Result};
use crate::gpu::{Access, Grid, KernelDef, Recorder, Tensor};

pub(super) static STATS: KernelDef = KernelDef {
    shader: "norm/stats.wgsl",
    entry: "norm_stats_partial",
    bindings: &[Access::Read, Access::ReadWrite],
    overrides: &[],
};
pub(super) static STATS_FINAL: KernelDef = KernelDef {
    shader: "norm/stats_finalize.wgsl",
    entry: "norm_stats_finalize",
    bindings: &[Access::Read, Access::ReadWrite],
    overrides: &[],
};
pub(super) static STATS_FINAL_RUNNING: KernelDef = KernelDef {
    shader: "norm/stats_finalize.wgsl",
    entry: "norm_stats_finalize_running",
    bindings: &[
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    overrides: &[],
};
pub(super) static FWD: KernelDef = KernelDef {
    shader: "norm/forward.wgsl",
    entry: "norm_forward",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ],
    overrides: &[("ACT", &ACT_CODES)],
};
/// Record the fused forward `y = [PN] act(affine(normalize(x)))` (see the module docs).
///
/// `training` selects BatchNorm's batch statistics (and updates the running statistics
/// when given) over its running statistics; Layer/Group norms always use the sample's own
/// statistics. `saved` ([`NormSpec::saved_len`]) receives the statistics the backward
/// needs (untouched by a BatchNorm evaluation forward); `scratch`
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
    let eval_bn = spec.kind == NormKind::Batch && !training;
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
        &[
            g.o as u32,
            g.m as u32,
            g.c as u32,
            g.cblocks as u32,
            g.ti as u32,
            g.m.div_ceil(g.rows) as u32,
            g.rows as u32,
            g.groups as u32,
            g.cg as u32,
            rstd_off as u32,
            flags,
            spec.eps.to_bits(),
        ],
        &[x, mean, rstd, ch.gamma, ch.beta, ch.pmu, ch.ps, y],
        Grid::Linear(g.elementwise_groups() as u32),
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
        &[
            g.o as u32,
            g.m as u32,
            g.c as u32,
            g.chunks as u32,
            g.chunk_rows as u32,
            g.cblocks as u32,
            g.ti as u32,
        ],
        &[x, scratch],
        Grid::Linear((g.o * g.chunks * g.cblocks) as u32),
    )?;
    let words = [
        g.c as u32,
        g.chunks as u32,
        g.groups as u32,
        g.cg as u32,
        g.segs as u32,
        spec.eps.to_bits(),
        spec.momentum.to_bits(),
        g.lanes as u32,
    ];
    let grid = Grid::Linear(g.segment_groups() as u32);
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
        )
    } else {
        rec.dispatch(&STATS_FINAL, &[], &words, &[scratch, saved], grid)
    }
}
