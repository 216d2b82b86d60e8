//! Proxy Norm statistics (SPEC §C.1-C.2): per channel, the mean `mu~` and inverse standard
//! deviation `s~` of `act(gamma * Y + beta)` for a Gaussian proxy `Y ~ N(pshift,
//! (1 + pscale)^2)`, estimated on 200 fixed Gaussian quantiles, and the exact gradient of
//! those statistics with respect to `gamma`, `beta`, `pshift` and `pscale`.
//!
//! The optimizer calls [`proxy_stats`] once per step after the weight update and stores
//! `mu~`, `s~`; the fused normalization forward ([`super::norm::forward`]) reads them. The
//! norm backward produces `dmu~`, `ds~` ([`super::norm::NormGrads`]) and
//! [`proxy_stats_backward`] chains them back to the four parameters.
//!
//! Quantiles: `u_i = sqrt(2) * erfinv(2 (i + 0.5) / 200 - 1)`, computed here in f64
//! ([`quantiles`]) and embedded, rounded to f32, in `shaders/proxy_norm/stats.wgsl` (a test
//! checks the table against this function).

mod backward;
mod cases;
mod forward;
mod reference;

pub use backward::proxy_stats_backward;
pub use cases::{cases, ProxyStatsCase};
pub use forward::proxy_stats;
pub use reference::{
    normal_quantile, proxy_stats_backward_ref, proxy_stats_ref, quantiles, ProxyRef,
};

use super::act::Act;
use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Access, KernelDef, Tensor};

/// Number of Gaussian quantiles the proxy statistics average over.
pub const PROXY_POINTS: usize = 200;

/// Epsilon added to the proxy variance (`--proxy-epsilon`, SPEC §C.1).
pub const PROXY_EPS: f32 = 0.03;

/// Activation codes the proxy kernels are built with (identity, ReLU, SiLU, sigmoid).
const ACT_CODES: [f64; 4] = [0.0, 1.0, 2.0, 3.0];

const HAS_GAMMA: u32 = 1;
const HAS_BETA: u32 = 2;
const HAS_DS: u32 = 4;
const WRITE0: u32 = 8;
const WRITE1: u32 = 16;
const PART1: u32 = 32;

const ALL_READ_TWO_WRITE: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::ReadWrite,
];

uniform_block! {
    /// Parameters of both entry points of `proxy_norm/stats.wgsl`.
    struct ProxyStatsParams {
        pub c: u32,
        pub flags: u32,
        pub eps: f32,
        /// Always 200 (POINTS); a uniform trip count keeps compilers from unrolling the loops 200 times (which costs seconds of pipeline compilation on some drivers).
        pub points: u32,
    }
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&forward::STATS.def, &backward::STATS_BWD.def];

/// The proxy parameters of one layer (all per channel, `c` entries).
#[derive(Clone, Copy, Debug)]
pub struct ProxyParams<'a> {
    /// The activation the Proxy Norm wraps (SiLU in EfficientNet).
    pub act: Act,
    /// Channels.
    pub c: usize,
    /// Proxy variance epsilon (normally [`PROXY_EPS`]).
    pub eps: f32,
    /// The activation's input scale gamma (None: 1, the layer has no scale).
    pub gamma: Option<&'a Tensor>,
    /// The activation's input shift beta (None: 0, the layer has no shift).
    pub beta: Option<&'a Tensor>,
    /// Proxy shift beta~ (learnable, init 0).
    pub pshift: &'a Tensor,
    /// Proxy scale gamma~ (learnable, init 0; the proxy std is 1 + gamma~).
    pub pscale: &'a Tensor,
}

/// Where [`proxy_stats_backward`] puts its gradients.
#[derive(Clone, Copy, Debug)]
pub struct ProxyGrads<'a> {
    /// d loss / d gamma: the proxy-path gradient is ADDED (it already holds the direct
    /// gradient from the norm backward). None when the layer has no scale.
    pub dgamma: Option<&'a Tensor>,
    /// d loss / d beta, ADDED like `dgamma`. None when the layer has no shift.
    pub dbeta: Option<&'a Tensor>,
    /// d loss / d pshift, WRITTEN (the statistics are its only path).
    pub dpshift: &'a Tensor,
    /// d loss / d pscale, WRITTEN.
    pub dpscale: &'a Tensor,
}

fn check_params(p: &ProxyParams) -> Result<()> {
    let c = p.c;
    let bad = |t: Option<&Tensor>| t.is_some_and(|t| t.len() != c);
    if c == 0 || p.pshift.len() != c || p.pscale.len() != c || bad(p.gamma) || bad(p.beta) {
        return Err(Error::Shape(format!(
            "proxy statistics over {c} channels: every parameter must have {c} entries"
        )));
    }
    Ok(())
}

fn base_flags(p: &ProxyParams) -> u32 {
    let mut f = 0;
    if p.gamma.is_some() {
        f |= HAS_GAMMA;
    }
    if p.beta.is_some() {
        f |= HAS_BETA;
    }
    f
}
