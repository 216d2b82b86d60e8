//! Forward pass of Proxy Norm's statistics: `mu~`, `s~` per channel over the 200 Gaussian
//! quantiles, one dispatch.

use super::{
    base_flags, check_params, ProxyParams, ProxyStatsParams, ACT_CODES, ALL_READ_TWO_WRITE,
    PROXY_POINTS,
};
use crate::error::{Error, Result};
use crate::gpu::{groups_for, Cost, Grid, Kernel, Recorder, Tensor};

pub(super) static STATS: Kernel<ProxyStatsParams> = Kernel::new(
    "proxy_norm/stats.wgsl",
    "proxy_stats",
    ALL_READ_TWO_WRITE,
    &[("ACT", &ACT_CODES)],
);
/// Record the proxy statistics `mu~` (into `mu`) and `s~` (into `s`), `c` entries each.
pub fn proxy_stats(rec: &mut Recorder, p: &ProxyParams, mu: &Tensor, s: &Tensor) -> Result<()> {
    check_params(p)?;
    if mu.len() != p.c || s.len() != p.c {
        return Err(Error::Shape(format!(
            "proxy statistics outputs {:?}, {:?} for {} channels",
            mu.shape(),
            s.shape(),
            p.c
        )));
    }
    let ph = p.pshift;
    rec.dispatch(
        &STATS,
        &[("ACT", p.act.code())],
        &ProxyStatsParams {
            c: p.c as u32,
            flags: base_flags(p),
            eps: p.eps,
            points: PROXY_POINTS as u32,
        },
        &[
            p.gamma.unwrap_or(ph),
            p.beta.unwrap_or(ph),
            ph,
            p.pscale,
            ph,
            ph,
            mu,
            s,
        ],
        Grid::Linear(groups_for(p.c, 64)),
        // Per channel and quantile: the proxy value, its activation, two running sums.
        Cost::f32s(
            (7.0 + p.act.flops()) * (PROXY_POINTS * p.c) as f64,
            4 * p.c,
            2 * p.c,
        ),
    )
}
