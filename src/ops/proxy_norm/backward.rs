//! Backward pass of Proxy Norm's statistics: the exact chain of `dmu~`, `ds~` to gamma,
//! beta and the proxy shift and scale, two small dispatches.

use super::{
    base_flags, check_params, ProxyGrads, ProxyParams, ProxyStatsParams, ACT_CODES,
    ALL_READ_TWO_WRITE, HAS_DS, PART1, PROXY_POINTS, WRITE0, WRITE1,
};
use crate::error::{Error, Result};
use crate::gpu::{groups_for, Cost, Grid, Kernel, Recorder, Tensor};

pub(super) static STATS_BWD: Kernel<ProxyStatsParams> = Kernel::new(
    "proxy_norm/stats.wgsl",
    "proxy_stats_backward",
    ALL_READ_TWO_WRITE,
    &[("ACT", &ACT_CODES)],
);
/// Record the exact chain of `dmu~` and `ds~` (None: zero, e.g. when the layer drops the
/// s~ factor and nothing else uses it) through [`proxy_stats`]: adds into `dgamma`,
/// `dbeta` and writes `dpshift`, `dpscale` (see [`ProxyGrads`]). Two small dispatches.
pub fn proxy_stats_backward(
    rec: &mut Recorder,
    p: &ProxyParams,
    dmu: &Tensor,
    ds: Option<&Tensor>,
    grads: &ProxyGrads,
) -> Result<()> {
    check_params(p)?;
    let c = p.c;
    let wrong = |t: &Tensor| t.len() != c;
    if wrong(dmu)
        || ds.is_some_and(wrong)
        || wrong(grads.dpshift)
        || wrong(grads.dpscale)
        || grads.dgamma.is_some_and(wrong)
        || grads.dbeta.is_some_and(wrong)
    {
        return Err(Error::Shape(format!(
            "proxy statistics backward over {c} channels: every gradient must have {c} entries"
        )));
    }
    let mut flags = base_flags(p);
    if ds.is_some() {
        flags |= HAS_DS;
    }
    let ph = p.pshift;
    let reads = [
        p.gamma.unwrap_or(ph),
        p.beta.unwrap_or(ph),
        ph,
        p.pscale,
        dmu,
        ds.unwrap_or(dmu),
    ];
    let grid = Grid::Linear(groups_for(c, 64));
    // Per channel and quantile: the proxy value, its activation and derivative (the
    // moments are recomputed first), and the chained sums.
    let cost = Cost::f32s(
        (14.0 + p.act.flops() + p.act.grad_flops()) * (PROXY_POINTS * c) as f64,
        6 * c,
        2 * c,
    );
    let consts = [("ACT", p.act.code())];
    // Part 0: gamma and beta (only those the layer has and the caller wants).
    let dg = grads.dgamma.filter(|_| p.gamma.is_some());
    let db = grads.dbeta.filter(|_| p.beta.is_some());
    if let Some(first) = dg.or(db) {
        let mut f = flags;
        if dg.is_some() {
            f |= WRITE0;
        }
        if db.is_some() {
            f |= WRITE1;
        }
        // An absent output aliases the present one; the shader never writes it.
        let (o0, o1) = (dg.unwrap_or(first), db.unwrap_or(first));
        rec.dispatch(
            &STATS_BWD,
            &consts,
            &ProxyStatsParams {
                c: c as u32,
                flags: f,
                eps: p.eps,
                points: PROXY_POINTS as u32,
            },
            &[
                reads[0], reads[1], reads[2], reads[3], reads[4], reads[5], o0, o1,
            ],
            grid,
            cost,
        )?;
    }
    // Part 1: the proxy shift and scale.
    rec.dispatch(
        &STATS_BWD,
        &consts,
        &ProxyStatsParams {
            c: c as u32,
            flags: flags | PART1 | WRITE0 | WRITE1,
            eps: p.eps,
            points: PROXY_POINTS as u32,
        },
        &[
            reads[0],
            reads[1],
            reads[2],
            reads[3],
            reads[4],
            reads[5],
            grads.dpshift,
            grads.dpscale,
        ],
        grid,
        cost,
    )
}
