//! Normalization fused with its affine transform, an activation and optionally a
//! proxy-normalized activation (SPEC §B.2, §C): BatchNorm (training: batch statistics and
//! a running-statistics update; evaluation: running statistics), LayerNorm over (H, W, C)
//! per sample, GroupNorm with G groups (G = 1 is LayerNorm, G = C instance norm).
//!
//! Per element of NHWC `x` (viewed as `[n, hw, c]`), with `s` its statistics segment:
//!
//! ```text
//! xhat = (x - mean[s]) * rstd[s]        rstd = 1 / sqrt(var + eps), var biased
//! z    = gamma[c] * xhat + beta[c]      (each part optional: NormSpec::scale / shift)
//! a    = act(z)
//! y    = a                              without Proxy Norm
//! y    = (a - mu~[c]) * s~[c]           with Proxy Norm (s~ dropped if !apply_scale)
//! ```
//!
//! Segments: BatchNorm one per channel over `n * hw` rows; Layer/Group norm one per
//! (sample, group) over `hw * c / G` values.
//!
//! Kernels (all deterministic: fixed-order tree reductions, no atomics):
//! - [`forward`]: a statistics pass (per-channel partial moments over row chunks, so big
//!   shapes fill the GPU), a small merge pass per segment (which also updates BatchNorm's
//!   running statistics), and one elementwise pass. BatchNorm evaluation is the
//!   elementwise pass alone on the running statistics.
//! - [`backward`]: one reduction over `x` and `dy` (normalized values recomputed from `x`
//!   and the saved statistics, never stored), one small pass that finishes the
//!   per-channel gradients (`dgamma`, `dbeta`, `dmu~`, `ds~`) and the per-segment sums,
//!   and one elementwise pass for `dx`.
//!
//! Buffers the caller owns (no allocation inside launchers):
//! - `saved`: [`NormSpec::saved_len`] floats, `[mean; S]` then `[rstd; S]` with `S =`
//!   [`NormSpec::segments`] (segment `s = sample * G + group` for Layer/Group norm,
//!   `s = channel` for BatchNorm). Written by a training-mode (or any Layer/Group norm)
//!   forward, read by the backward.
//! - `scratch`: [`NormSpec::scratch_len`] floats, free between calls (one scratch tensor
//!   sized for the largest layer can serve every layer). Layout: forward partials
//!   `[O, chunks, C, 3]` (count, mean, M2); backward partials `[O, chunks, C, 4]`
//!   followed by `[2, S]` segment means of `dxhat` and `dxhat * xhat`.
//!
//! Aliasing: wgpu tracks buffer usage per buffer, so a tensor a dispatch writes must not
//! share a buffer (arena chunk) with one it reads: `y` apart from `x` and the parameters,
//! `dx` apart from `x` and `dy`, gradient outputs apart from parameters, statistics and
//! scratch. Several outputs may share one buffer (e.g. a gradient arena).
//!
//! Proxy Norm's per-step statistics `mu~`, `s~` and their backward live in
//! [`super::proxy_norm`] (re-exported here: [`proxy_stats`], [`proxy_stats_backward`]).
//!
//! Variance convention: biased (divide by the count) everywhere, including BatchNorm's
//! running variance (TF/Keras; PyTorch keeps an unbiased running variance). Running update:
//! `run = momentum * run + (1 - momentum) * batch` (TF convention, momentum 0.99).

use super::act::Act;
use super::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use super::proxy_norm::{self, ProxyRef};
pub use super::proxy_norm::{
    proxy_stats, proxy_stats_backward, ProxyGrads, ProxyParams, PROXY_EPS, PROXY_POINTS,
};
use crate::bench::{copy_bandwidth, time_ms, BenchRow};
use crate::error::{Error, Result};
use crate::gpu::{Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

/// Default normalization epsilon (SPEC: `--norm-epsilon 1e-3`).
pub const DEFAULT_EPS: f32 = 1e-3;

/// Default BatchNorm running-statistics momentum (TF convention, SPEC §A).
pub const DEFAULT_MOMENTUM: f32 = 0.99;

/// Which statistics normalize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// BatchNorm: per channel over the batch and positions.
    Batch,
    /// GroupNorm: per sample over positions and `c / groups` channels. `groups == 1` is
    /// LayerNorm over (H, W, C); `groups == c` is instance norm. `c % groups` must be 0.
    Group {
        /// Number of groups.
        groups: usize,
    },
}

impl NormKind {
    /// LayerNorm (GroupNorm with one group).
    pub fn layer() -> Self {
        NormKind::Group { groups: 1 }
    }

    /// Instance norm over `c` channels (one group per channel).
    pub fn instance(c: usize) -> Self {
        NormKind::Group { groups: c }
    }
}

/// Proxy-normalized activation (SPEC §C.1): `y = (act(gamma * xhat + beta) - mu~) * s~`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyMode {
    /// Multiply by `s~`. False drops the factor (mean subtraction only: EfficientNet head
    /// and the SE squeeze variant, SPEC §C.4, where `s~` is applied elsewhere).
    pub apply_scale: bool,
}

/// One normalization layer: shape, kind and the fused parts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormSpec {
    /// Batch size.
    pub n: usize,
    /// Positions per sample (H * W).
    pub hw: usize,
    /// Channels.
    pub c: usize,
    /// BatchNorm or Group/Layer/instance norm.
    pub kind: NormKind,
    /// Added to the variance (default [`DEFAULT_EPS`]).
    pub eps: f32,
    /// BatchNorm running-statistics momentum (default [`DEFAULT_MOMENTUM`]); unused by
    /// the other kinds.
    pub momentum: f32,
    /// Per-channel scale gamma (LN before PN: false, gamma belongs to the PN-Act, which is
    /// this same op with `scale` true; projection LN: scale only).
    pub scale: bool,
    /// Per-channel shift beta.
    pub shift: bool,
    /// Activation after the affine transform.
    pub act: Act,
    /// Proxy-normalized activation, when used.
    pub proxy: Option<ProxyMode>,
}

/// Rows of a statistics chunk are at least this many (so small shapes stay one chunk).
const MIN_CHUNK_ROWS: usize = 256;
/// The statistics pass is split along rows until it has about this many workgroups.
const TARGET_GROUPS: usize = 1024;
/// Elements per thread (along rows) in the elementwise passes.
const ROWS_PER_THREAD: usize = 8;

/// The [O, M, C] view of a normalization and its statistics layout.
#[derive(Clone, Copy, Debug)]
struct Geom {
    o: usize,
    m: usize,
    c: usize,
    groups: usize,
    cg: usize,
    segs: usize,
    ti: usize,
    cblocks: usize,
    chunks: usize,
    chunk_rows: usize,
    /// Lanes per segment in the merge passes (a power of two <= 256).
    lanes: usize,
    /// Rows per workgroup of the elementwise passes.
    rows: usize,
}

impl Geom {
    /// Workgroups of a merge pass over all segments.
    fn segment_groups(&self) -> usize {
        self.segs.div_ceil(256 / self.lanes)
    }

    /// Workgroups of an elementwise pass.
    fn elementwise_groups(&self) -> usize {
        self.o * self.m.div_ceil(self.rows) * self.cblocks
    }
}

impl NormSpec {
    /// A spec with defaults: eps 1e-3, momentum 0.99, scale and shift on, identity
    /// activation, no Proxy Norm.
    pub fn new(n: usize, hw: usize, c: usize, kind: NormKind) -> Self {
        Self {
            n,
            hw,
            c,
            kind,
            eps: DEFAULT_EPS,
            momentum: DEFAULT_MOMENTUM,
            scale: true,
            shift: true,
            act: Act::Identity,
            proxy: None,
        }
    }

    /// With this activation.
    pub fn with_act(mut self, act: Act) -> Self {
        self.act = act;
        self
    }

    /// With these affine parts.
    pub fn with_affine(mut self, scale: bool, shift: bool) -> Self {
        self.scale = scale;
        self.shift = shift;
        self
    }

    /// With a proxy-normalized activation.
    pub fn with_proxy(mut self, apply_scale: bool) -> Self {
        self.proxy = Some(ProxyMode { apply_scale });
        self
    }

    /// Elements of `x`.
    pub fn numel(&self) -> usize {
        self.n * self.hw * self.c
    }

    /// Groups G (BatchNorm: one per channel).
    pub fn groups(&self) -> usize {
        match self.kind {
            NormKind::Batch => self.c,
            NormKind::Group { groups } => groups,
        }
    }

    /// Statistics segments S: `c` for BatchNorm, `n * groups` otherwise.
    pub fn segments(&self) -> usize {
        match self.kind {
            NormKind::Batch => self.c,
            NormKind::Group { groups } => self.n * groups,
        }
    }

    /// Values per statistics segment.
    pub fn segment_len(&self) -> usize {
        self.numel() / self.segments().max(1)
    }

    /// Floats of the `saved` statistics tensor: `[mean; S]` then `[rstd; S]`.
    pub fn saved_len(&self) -> usize {
        2 * self.segments()
    }

    /// Floats of the `scratch` tensor [`forward`] and [`backward`] need.
    pub fn scratch_len(&self) -> usize {
        let g = self.geom();
        4 * g.o * g.chunks * g.c + 2 * g.segs
    }

    /// Check the spec (positive sizes, `c % groups == 0`, 32-bit indexable).
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 || self.hw == 0 || self.c == 0 {
            return Err(Error::Shape(format!(
                "normalization over an empty shape: {self:?}"
            )));
        }
        if let NormKind::Group { groups } = self.kind {
            if groups == 0 || !self.c.is_multiple_of(groups) {
                return Err(Error::Config(format!(
                    "GroupNorm needs the channel count to be a multiple of the groups: {} \
                     channels, {groups} groups",
                    self.c
                )));
            }
        }
        if self.numel() >= (1 << 31) || self.scratch_len() >= (1 << 31) {
            return Err(Error::TooLarge(format!(
                "normalization over {} x {} x {} values exceeds 2^31 elements; reduce the \
                 batch size",
                self.n, self.hw, self.c
            )));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return Err(Error::Config(format!(
                "normalization eps must be positive, got {}",
                self.eps
            )));
        }
        Ok(())
    }

    fn geom(&self) -> Geom {
        let (o, m) = match self.kind {
            NormKind::Batch => (1, self.n * self.hw),
            NormKind::Group { .. } => (self.n, self.hw),
        };
        let c = self.c;
        let groups = self.groups().max(1);
        let ti = c.next_power_of_two().min(32);
        let cblocks = c.div_ceil(ti);
        let tiles = (o * cblocks).max(1);
        let want = if tiles >= TARGET_GROUPS {
            1
        } else {
            TARGET_GROUPS.div_ceil(tiles)
        };
        let chunks = want.min((m / MIN_CHUNK_ROWS).max(1));
        let chunk_rows = m.div_ceil(chunks).max(1);
        let chunks = m.div_ceil(chunk_rows).max(1);
        let cg = c / groups;
        Geom {
            o,
            m,
            c,
            groups,
            cg,
            segs: self.segments(),
            ti,
            cblocks,
            chunks,
            chunk_rows,
            lanes: (chunks * cg).next_power_of_two().min(256),
            rows: ROWS_PER_THREAD * (256 / ti),
        }
    }

    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.scale {
            f |= HAS_SCALE;
        }
        if self.shift {
            f |= HAS_SHIFT;
        }
        if let Some(pm) = self.proxy {
            f |= PROXY_MEAN;
            if pm.apply_scale {
                f |= PROXY_SCALE;
            }
        }
        f
    }

    /// Short name: `bn`, `ln`, `gn4`, `in`, with `+pn` (`+pn-mean` without s~).
    pub fn kind_name(&self) -> String {
        let base = match self.kind {
            NormKind::Batch => "bn".to_string(),
            NormKind::Group { groups: 1 } => "ln".to_string(),
            NormKind::Group { groups } if groups == self.c => "in".to_string(),
            NormKind::Group { groups } => format!("gn{groups}"),
        };
        match self.proxy {
            None => base,
            Some(ProxyMode { apply_scale: true }) => format!("{base}+pn"),
            Some(ProxyMode { apply_scale: false }) => format!("{base}+pn-mean"),
        }
    }
}

const HAS_SCALE: u32 = 1;
const HAS_SHIFT: u32 = 2;
const PROXY_MEAN: u32 = 4;
const PROXY_SCALE: u32 = 8;
const VAR_INPUT: u32 = 16;
const W_DGAMMA: u32 = 16;
const W_DBETA: u32 = 32;
const W_DMU: u32 = 64;
const W_DS: u32 = 128;

/// Activation codes the fused kernels are built with.
const ACT_CODES: [f64; 4] = [0.0, 1.0, 2.0, 3.0];

static STATS: KernelDef = KernelDef {
    shader: "norm/stats.wgsl",
    entry: "norm_stats_partial",
    bindings: &[Access::Read, Access::ReadWrite],
    overrides: &[],
};
static STATS_FINAL: KernelDef = KernelDef {
    shader: "norm/stats_finalize.wgsl",
    entry: "norm_stats_finalize",
    bindings: &[Access::Read, Access::ReadWrite],
    overrides: &[],
};
static STATS_FINAL_RUNNING: KernelDef = KernelDef {
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
static FWD: KernelDef = KernelDef {
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
static BWD_REDUCE: KernelDef = KernelDef {
    shader: "norm/backward_reduce.wgsl",
    entry: "norm_backward_reduce",
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
static BWD_FINAL: KernelDef = KernelDef {
    shader: "norm/backward_finalize.wgsl",
    entry: "norm_backward_finalize",
    bindings: &[
        Access::ReadWrite,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    overrides: &[],
};
static BWD: KernelDef = KernelDef {
    shader: "norm/backward.wgsl",
    entry: "norm_backward",
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

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[
    &STATS,
    &STATS_FINAL,
    &STATS_FINAL_RUNNING,
    &FWD,
    &BWD_REDUCE,
    &BWD_FINAL,
    &BWD,
];

/// The per-layer tensors a normalization reads (all `[c]`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NormParams<'a> {
    /// Scale gamma (required when `spec.scale`).
    pub gamma: Option<&'a Tensor>,
    /// Shift beta (required when `spec.shift`).
    pub beta: Option<&'a Tensor>,
    /// BatchNorm running mean: updated in place by a training forward when given,
    /// required by an evaluation forward.
    pub running_mean: Option<&'a Tensor>,
    /// BatchNorm running (biased) variance, like `running_mean`.
    pub running_var: Option<&'a Tensor>,
    /// Proxy Norm mean mu~ (required with `spec.proxy`), from
    /// [`proxy_norm::proxy_stats`].
    pub proxy_mu: Option<&'a Tensor>,
    /// Proxy Norm inverse std s~ (required with `spec.proxy` and `apply_scale`).
    pub proxy_s: Option<&'a Tensor>,
}

/// Gradient outputs of [`backward`] (all `[c]`, all overwritten). Each is written when
/// given and meaningful for the spec: `dgamma` with `scale`, `dbeta` with `shift`, `dmu`
/// (d loss / d mu~) with Proxy Norm, `ds` (d loss / d s~) with Proxy Norm and
/// `apply_scale`. Feed `dmu`, `ds` to [`proxy_norm::proxy_stats_backward`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NormGrads<'a> {
    /// d loss / d gamma.
    pub dgamma: Option<&'a Tensor>,
    /// d loss / d beta.
    pub dbeta: Option<&'a Tensor>,
    /// d loss / d mu~.
    pub dmu: Option<&'a Tensor>,
    /// d loss / d s~.
    pub ds: Option<&'a Tensor>,
}

fn need<'a>(t: Option<&'a Tensor>, what: &str, spec: &NormSpec) -> Result<&'a Tensor> {
    let t =
        t.ok_or_else(|| Error::Config(format!("{} normalization needs {what}", spec.kind_name())))?;
    if t.len() != spec.c {
        return Err(Error::Shape(format!(
            "{what} has shape {:?}, expected [{}]",
            t.shape(),
            spec.c
        )));
    }
    Ok(t)
}

fn check_len(t: &Tensor, len: usize, what: &str) -> Result<()> {
    if t.len() < len {
        return Err(Error::Shape(format!(
            "{what} holds {} values, needs {len}",
            t.len()
        )));
    }
    Ok(())
}

/// The per-channel tensors a kernel reads, with placeholders (`x`) where absent.
struct Channels<'a> {
    gamma: &'a Tensor,
    beta: &'a Tensor,
    pmu: &'a Tensor,
    ps: &'a Tensor,
}

fn channels<'a>(spec: &NormSpec, p: &NormParams<'a>, x: &'a Tensor) -> Result<Channels<'a>> {
    let gamma = if spec.scale {
        need(p.gamma, "gamma", spec)?
    } else {
        x
    };
    let beta = if spec.shift {
        need(p.beta, "beta", spec)?
    } else {
        x
    };
    let (pmu, ps) = match spec.proxy {
        None => (x, x),
        Some(pm) => (
            need(p.proxy_mu, "the proxy mean mu~", spec)?,
            if pm.apply_scale {
                need(p.proxy_s, "the proxy inverse std s~", spec)?
            } else {
                x
            },
        ),
    };
    Ok(Channels {
        gamma,
        beta,
        pmu,
        ps,
    })
}

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

/// Record the fused backward of [`forward`] in training mode (batch statistics for
/// BatchNorm, so gradients flow through them): `dx` (overwritten) and the per-channel
/// gradients in `grads` (see [`NormGrads`]). The normalized values are recomputed from
/// `x` and `saved` (written by the forward). `params` must be those of the forward.
/// `dx` must not alias `x` or `dy`.
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

    // Pass 1: per-(o, chunk, channel) partial sums.
    rec.dispatch(
        &BWD_REDUCE,
        &act,
        &[
            g.o as u32,
            g.m as u32,
            g.c as u32,
            g.chunks as u32,
            g.chunk_rows as u32,
            g.cblocks as u32,
            g.ti as u32,
            g.groups as u32,
            g.cg as u32,
            g.segs as u32,
            flags,
        ],
        &[x, dy, saved, ch.gamma, ch.beta, ch.pmu, ch.ps, scratch],
        Grid::Linear((g.o * g.chunks * g.cblocks) as u32),
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
        &[
            g.o as u32,
            g.c as u32,
            g.chunks as u32,
            g.groups as u32,
            g.cg as u32,
            g.segs as u32,
            cblocks32 as u32,
            seg_off as u32,
            f,
            (1.0 / spec.segment_len() as f64 as f32).to_bits(),
            g.lanes as u32,
        ],
        &[scratch, ch.gamma, ch.ps, o[0], o[1], o[2], o[3]],
        Grid::Linear((cblocks32 + g.segment_groups()) as u32),
    )?;

    // Pass 3: dx.
    rec.dispatch(
        &BWD,
        &act,
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
            g.segs as u32,
            seg_off as u32,
            flags,
        ],
        &[x, dy, saved, ch.gamma, ch.beta, ch.ps, scratch, dx],
        Grid::Linear(g.elementwise_groups() as u32),
    )
}

// ---------------------------------------------------------------------------------------
// f64 references

/// f64 reference parameters (slices of `c` values).
#[derive(Clone, Copy, Debug, Default)]
pub struct RefParams<'a> {
    /// gamma (None: 1).
    pub gamma: Option<&'a [f64]>,
    /// beta (None: 0).
    pub beta: Option<&'a [f64]>,
    /// BatchNorm (running mean, running variance).
    pub running: Option<(&'a [f64], &'a [f64])>,
    /// Proxy (mu~, s~); s~ is ignored without `apply_scale`.
    pub proxy: Option<(&'a [f64], &'a [f64])>,
}

/// What [`forward_ref`] returns.
#[derive(Clone, Debug)]
pub struct RefForward {
    /// Output.
    pub y: Vec<f64>,
    /// Statistics used: mean per segment (the running mean in BatchNorm evaluation).
    pub mean: Vec<f64>,
    /// Reciprocal standard deviation per segment.
    pub rstd: Vec<f64>,
    /// Updated running (mean, variance) after a BatchNorm training forward.
    pub running: Option<(Vec<f64>, Vec<f64>)>,
}

/// What [`backward_ref`] returns (per-channel gradients are zero where not applicable).
#[derive(Clone, Debug)]
pub struct RefBackward {
    /// d loss / d x.
    pub dx: Vec<f64>,
    /// d loss / d gamma.
    pub dgamma: Vec<f64>,
    /// d loss / d beta.
    pub dbeta: Vec<f64>,
    /// d loss / d mu~.
    pub dmu: Vec<f64>,
    /// d loss / d s~.
    pub ds: Vec<f64>,
}

impl NormSpec {
    /// Segment of flat element `i`.
    fn segment_of(&self, i: usize) -> usize {
        let c = i % self.c;
        match self.kind {
            NormKind::Batch => c,
            NormKind::Group { groups } => (i / (self.hw * self.c)) * groups + c / (self.c / groups),
        }
    }

    /// Batch statistics (mean, biased variance) per segment.
    fn moments_ref(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let s = self.segments();
        let k = self.segment_len() as f64;
        let mut mean = vec![0.0; s];
        for (i, v) in x.iter().enumerate() {
            mean[self.segment_of(i)] += v;
        }
        mean.iter_mut().for_each(|m| *m /= k);
        let mut var = vec![0.0; s];
        for (i, v) in x.iter().enumerate() {
            let sg = self.segment_of(i);
            var[sg] += (v - mean[sg]) * (v - mean[sg]);
        }
        var.iter_mut().for_each(|v| *v /= k);
        (mean, var)
    }
}

/// f64 reference of [`forward`].
pub fn forward_ref(spec: &NormSpec, training: bool, x: &[f64], p: &RefParams) -> RefForward {
    let eps = spec.eps as f64;
    let eval_bn = spec.kind == NormKind::Batch && !training;
    let (mean, var) = if eval_bn {
        let (m, v) = p
            .running
            .expect("evaluation BatchNorm needs running statistics");
        (m.to_vec(), v.to_vec())
    } else {
        spec.moments_ref(x)
    };
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let running = match (spec.kind, training, p.running) {
        (NormKind::Batch, true, Some((rm, rv))) => {
            let m = spec.momentum as f64;
            Some((
                rm.iter()
                    .zip(&mean)
                    .map(|(r, b)| m * r + (1.0 - m) * b)
                    .collect(),
                rv.iter()
                    .zip(&var)
                    .map(|(r, b)| m * r + (1.0 - m) * b)
                    .collect(),
            ))
        }
        _ => None,
    };
    let y = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i % spec.c;
            let s = spec.segment_of(i);
            let z = (v - mean[s]) * rstd[s] * p.gamma.map_or(1.0, |g| g[c])
                + p.beta.map_or(0.0, |b| b[c]);
            let a = spec.act.f(z);
            match (spec.proxy, p.proxy) {
                (Some(pm), Some((mu, sc))) => {
                    (a - mu[c]) * if pm.apply_scale { sc[c] } else { 1.0 }
                }
                _ => a,
            }
        })
        .collect();
    RefForward {
        y,
        mean,
        rstd,
        running,
    }
}

/// f64 reference of [`backward`] (training-mode statistics recomputed from `x`).
pub fn backward_ref(spec: &NormSpec, x: &[f64], dy: &[f64], p: &RefParams) -> RefBackward {
    let eps = spec.eps as f64;
    let (mean, var) = spec.moments_ref(x);
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let c = spec.c;
    let (proxy, apply) = match spec.proxy {
        Some(pm) => (true, pm.apply_scale),
        None => (false, false),
    };
    let mut r = RefBackward {
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
        dmu: vec![0.0; c],
        ds: vec![0.0; c],
    };
    let s_count = spec.segments();
    let mut m1 = vec![0.0; s_count];
    let mut m2 = vec![0.0; s_count];
    let mut dxh = vec![0.0; x.len()];
    let mut xh = vec![0.0; x.len()];
    for i in 0..x.len() {
        let ch = i % c;
        let s = spec.segment_of(i);
        let gm = p.gamma.map_or(1.0, |g| g[ch]);
        xh[i] = (x[i] - mean[s]) * rstd[s];
        let z = gm * xh[i] + p.beta.map_or(0.0, |b| b[ch]);
        let (mu, sc) = p.proxy.map_or((0.0, 1.0), |(m, s)| (m[ch], s[ch]));
        let sc = if apply { sc } else { 1.0 };
        let dz = dy[i] * sc * spec.act.df(z);
        r.dgamma[ch] += dz * xh[i];
        r.dbeta[ch] += dz;
        if proxy {
            r.dmu[ch] -= sc * dy[i];
            if apply {
                r.ds[ch] += dy[i] * (spec.act.f(z) - mu);
            }
        }
        dxh[i] = gm * dz;
        m1[s] += dxh[i];
        m2[s] += dxh[i] * xh[i];
    }
    let k = spec.segment_len() as f64;
    for i in 0..x.len() {
        let s = spec.segment_of(i);
        r.dx[i] = rstd[s] * (dxh[i] - m1[s] / k - xh[i] * m2[s] / k);
    }
    if !spec.scale {
        r.dgamma.iter_mut().for_each(|v| *v = 0.0);
    }
    if !spec.shift {
        r.dbeta.iter_mut().for_each(|v| *v = 0.0);
    }
    r
}

// ---------------------------------------------------------------------------------------
// Harness cases

/// Harness case: a training-mode normalization layer, composed with the proxy statistics
/// when Proxy Norm is on, so gradients to gamma, beta, the proxy shift and scale flow
/// through `mu~` and `s~` exactly. Inputs: x, then gamma, beta (if the spec has them),
/// then pshift, pscale (with Proxy Norm). Output: y.
pub struct NormCase {
    /// The layer.
    pub spec: NormSpec,
    /// Offset added to x (tests robustness to a large mean).
    pub offset: f64,
}

/// Indices of the optional inputs of a [`NormCase`].
#[derive(Clone, Copy)]
struct Slots {
    gamma: Option<usize>,
    beta: Option<usize>,
    pshift: Option<usize>,
    pscale: Option<usize>,
}

impl NormCase {
    fn slots(&self) -> Slots {
        let mut k = 1;
        let mut next = |on: bool| {
            on.then(|| {
                k += 1;
                k - 1
            })
        };
        let gamma = next(self.spec.scale);
        let beta = next(self.spec.shift);
        let pshift = next(self.spec.proxy.is_some());
        let pscale = next(self.spec.proxy.is_some());
        Slots {
            gamma,
            beta,
            pshift,
            pscale,
        }
    }

    fn shape(&self) -> [usize; 3] {
        [self.spec.n, self.spec.hw, self.spec.c]
    }

    fn proxy_ref<'a>(&self, i: &'a [HostTensor]) -> Option<ProxyRef<'a>> {
        let s = self.slots();
        self.spec.proxy.map(|_| ProxyRef {
            act: self.spec.act,
            eps: PROXY_EPS as f64,
            gamma: s.gamma.map(|k| &i[k].data[..]),
            beta: s.beta.map(|k| &i[k].data[..]),
            pshift: &i[s.pshift.unwrap()].data,
            pscale: &i[s.pscale.unwrap()].data,
        })
    }

    /// Record proxy stats (if any) and the forward; returns nothing, fills the tensors.
    fn record_forward(&self, r: &mut Recorder, t: &GpuTensors) -> Result<()> {
        if let Some(pp) = t.proxy_params(self) {
            proxy_norm::proxy_stats(r, &pp, &t.mu, &t.s)?;
        }
        forward(
            r,
            &self.spec,
            true,
            &t.x,
            &t.params(),
            &t.y,
            &t.saved,
            &t.scratch,
        )
    }
}

/// GPU tensors of one [`NormCase`] run.
struct GpuTensors {
    x: Tensor,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
    pshift: Option<Tensor>,
    pscale: Option<Tensor>,
    mu: Tensor,
    s: Tensor,
    run_mean: Tensor,
    run_var: Tensor,
    y: Tensor,
    saved: Tensor,
    scratch: Tensor,
}

impl GpuTensors {
    fn new(gpu: &Gpu, case: &NormCase, i: &[HostTensor]) -> Result<Self> {
        let sl = case.slots();
        let up = |k: Option<usize>| k.map(|k| i[k].upload(gpu)).transpose();
        let c = case.spec.c;
        Ok(Self {
            x: i[0].upload(gpu)?,
            gamma: up(sl.gamma)?,
            beta: up(sl.beta)?,
            pshift: up(sl.pshift)?,
            pscale: up(sl.pscale)?,
            mu: gpu.zeros(&[c])?,
            s: gpu.zeros(&[c])?,
            run_mean: gpu.zeros(&[c])?,
            run_var: gpu.upload(&vec![1.0; c], &[c])?,
            y: gpu.zeros(&case.shape())?,
            saved: gpu.zeros(&[case.spec.saved_len()])?,
            scratch: gpu.zeros(&[case.spec.scratch_len()])?,
        })
    }

    fn params(&self) -> NormParams<'_> {
        NormParams {
            gamma: self.gamma.as_ref(),
            beta: self.beta.as_ref(),
            running_mean: Some(&self.run_mean),
            running_var: Some(&self.run_var),
            proxy_mu: Some(&self.mu),
            proxy_s: Some(&self.s),
        }
    }

    fn proxy_params(&self, case: &NormCase) -> Option<ProxyParams<'_>> {
        case.spec.proxy.map(|_| ProxyParams {
            act: case.spec.act,
            c: case.spec.c,
            eps: PROXY_EPS,
            gamma: self.gamma.as_ref(),
            beta: self.beta.as_ref(),
            pshift: self.pshift.as_ref().unwrap(),
            pscale: self.pscale.as_ref().unwrap(),
        })
    }
}

fn f32_round(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

impl OpCase for NormCase {
    fn name(&self) -> String {
        let s = &self.spec;
        let affine = match (s.scale, s.shift) {
            (true, true) => "affine",
            (true, false) => "scale",
            (false, true) => "shift",
            (false, false) => "plain",
        };
        format!(
            "norm:{}/{}/{}[{}x{}x{}]",
            s.kind_name(),
            s.act.name(),
            affine,
            s.n,
            s.hw,
            s.c
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let c = self.spec.c;
        let sl = self.slots();
        let x = rng
            .normals_f32(self.spec.numel(), 1.5)
            .into_iter()
            .map(|v| v + self.offset)
            .collect();
        let mut v = vec![Input::diff(HostTensor::new(&self.shape(), f32_round(x)))];
        if sl.gamma.is_some() {
            let g = rng
                .normals_f32(c, 0.3)
                .into_iter()
                .map(|v| 1.0 + v)
                .collect();
            v.push(Input::diff(HostTensor::new(&[c], f32_round(g))));
        }
        if sl.beta.is_some() {
            v.push(Input::diff(HostTensor::randn(&[c], 0.4, rng)));
        }
        if sl.pshift.is_some() {
            v.push(Input::diff(HostTensor::randn(&[c], 0.3, rng)));
            v.push(Input::diff(HostTensor::randn(&[c], 0.2, rng)));
        }
        v
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let sl = self.slots();
        let stats = self.proxy_ref(i).map(|p| proxy_norm::proxy_stats_ref(&p));
        let p = RefParams {
            gamma: sl.gamma.map(|k| &i[k].data[..]),
            beta: sl.beta.map(|k| &i[k].data[..]),
            running: None,
            proxy: stats.as_ref().map(|(m, s)| (&m[..], &s[..])),
        };
        let f = forward_ref(&self.spec, true, &i[0].data, &p);
        vec![HostTensor::new(&self.shape(), f.y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let sl = self.slots();
        let c = [self.spec.c];
        let pr = self.proxy_ref(i);
        let stats = pr.as_ref().map(proxy_norm::proxy_stats_ref);
        let p = RefParams {
            gamma: sl.gamma.map(|k| &i[k].data[..]),
            beta: sl.beta.map(|k| &i[k].data[..]),
            running: None,
            proxy: stats.as_ref().map(|(m, s)| (&m[..], &s[..])),
        };
        let mut b = backward_ref(&self.spec, &i[0].data, &dy[0].data, &p);
        let mut out = vec![Some(HostTensor::new(&self.shape(), b.dx.clone()))];
        let mut proxy_grads = None;
        if let Some(pr) = pr {
            let apply = self.spec.proxy.is_some_and(|m| m.apply_scale);
            let [dg, db, dsh, dsc] =
                proxy_norm::proxy_stats_backward_ref(&pr, &b.dmu, apply.then_some(&b.ds[..]));
            b.dgamma.iter_mut().zip(dg).for_each(|(a, v)| *a += v);
            b.dbeta.iter_mut().zip(db).for_each(|(a, v)| *a += v);
            proxy_grads = Some((dsh, dsc));
        }
        if sl.gamma.is_some() {
            out.push(Some(HostTensor::new(&c, b.dgamma)));
        }
        if sl.beta.is_some() {
            out.push(Some(HostTensor::new(&c, b.dbeta)));
        }
        if let Some((dsh, dsc)) = proxy_grads {
            out.push(Some(HostTensor::new(&c, dsh)));
            out.push(Some(HostTensor::new(&c, dsc)));
        }
        out
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let t = GpuTensors::new(gpu, self, i)?;
        run_gpu(gpu, |r| self.record_forward(r, &t))?;
        Ok(vec![gpu.read(&t.y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let t = GpuTensors::new(gpu, self, i)?;
        let c = [self.spec.c];
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&self.shape())?;
        let dgamma = gpu.zeros(&c)?;
        let dbeta = gpu.zeros(&c)?;
        let dmu = gpu.zeros(&c)?;
        let ds = gpu.zeros(&c)?;
        let dpshift = gpu.zeros(&c)?;
        let dpscale = gpu.zeros(&c)?;
        let apply = self.spec.proxy.is_some_and(|m| m.apply_scale);
        run_gpu(gpu, |r| {
            self.record_forward(r, &t)?;
            let grads = NormGrads {
                dgamma: Some(&dgamma),
                dbeta: Some(&dbeta),
                dmu: Some(&dmu),
                ds: Some(&ds),
            };
            backward(
                r,
                &self.spec,
                &t.x,
                &g,
                &t.params(),
                &t.saved,
                &dx,
                &grads,
                &t.scratch,
            )?;
            if let Some(pp) = t.proxy_params(self) {
                let pg = ProxyGrads {
                    dgamma: Some(&dgamma),
                    dbeta: Some(&dbeta),
                    dpshift: &dpshift,
                    dpscale: &dpscale,
                };
                proxy_norm::proxy_stats_backward(r, &pp, &dmu, apply.then_some(&ds), &pg)?;
            }
            Ok(())
        })?;
        let sl = self.slots();
        let mut out = vec![Some(gpu.read(&dx)?)];
        if sl.gamma.is_some() {
            out.push(Some(gpu.read(&dgamma)?));
        }
        if sl.beta.is_some() {
            out.push(Some(gpu.read(&dbeta)?));
        }
        if self.spec.proxy.is_some() {
            out.push(Some(gpu.read(&dpshift)?));
            out.push(Some(gpu.read(&dpscale)?));
        }
        Ok(out)
    }
    fn tolerance(&self) -> Tolerance {
        // Proxy Norm gradients sum 200-point chains that partly cancel: looser.
        let backward = if self.spec.proxy.is_some() {
            1e-4
        } else {
            3e-5
        };
        Tolerance {
            forward: 1e-5,
            backward,
            gradcheck: 1e-6,
        }
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    let mut add = |spec: NormSpec, offset: f64| v.push(Box::new(NormCase { spec, offset }));
    let acts = [Act::Silu, Act::Relu, Act::Identity];
    // BatchNorm (training): every activation with affine, no affine, scale only; a long
    // shape that takes the split (multi-chunk) statistics path; and BN + PN.
    let bn = NormSpec::new(4, 30, 6, NormKind::Batch);
    for act in acts {
        add(bn.with_act(act), 0.5);
    }
    add(bn.with_act(Act::Silu).with_affine(false, false), 0.5);
    add(bn.with_act(Act::Identity).with_affine(true, false), 0.5);
    add(
        NormSpec::new(4, 1600, 3, NormKind::Batch).with_act(Act::Silu),
        3.0,
    );
    add(bn.with_act(Act::Silu).with_proxy(true), 0.5);
    // A mean far from zero relative to the spread (|mean| / std ~ 13).
    add(
        NormSpec::new(3, 40, 4, NormKind::Batch).with_act(Act::Silu),
        20.0,
    );
    // LayerNorm.
    let ln = NormSpec::new(3, 20, 8, NormKind::layer());
    for act in acts {
        add(ln.with_act(act), 0.5);
    }
    add(ln.with_act(Act::Silu).with_affine(false, false), 0.5);
    add(ln.with_act(Act::Identity).with_affine(true, false), 0.5);
    add(
        NormSpec::new(2, 2304, 4, NormKind::layer()).with_act(Act::Silu),
        3.0,
    );
    // GroupNorm with 4 groups.
    let gn = NormSpec::new(3, 20, 16, NormKind::Group { groups: 4 });
    for act in acts {
        add(gn.with_act(act), 0.5);
    }
    add(gn.with_act(Act::Silu).with_affine(false, false), 0.5);
    add(
        NormSpec::new(2, 50, 8, NormKind::Group { groups: 2 }).with_act(Act::Silu),
        20.0,
    );
    add(
        NormSpec::new(2, 600, 12, NormKind::Group { groups: 4 }).with_act(Act::Relu),
        2.0,
    );
    // Instance norm (G = C).
    let inorm = NormSpec::new(2, 30, 5, NormKind::instance(5));
    add(inorm.with_act(Act::Silu), 0.5);
    add(inorm.with_act(Act::Relu).with_affine(false, false), 0.5);
    // LayerNorm + Proxy Norm. (With the identity the shift cancels against mu~, so that
    // case has a scale only.)
    for act in [Act::Silu, Act::Relu] {
        add(ln.with_act(act).with_proxy(true), 0.5);
    }
    add(
        ln.with_act(Act::Identity)
            .with_affine(true, false)
            .with_proxy(true),
        0.5,
    );
    add(ln.with_act(Act::Silu).with_proxy(false), 0.5);
    add(
        ln.with_act(Act::Silu)
            .with_affine(false, false)
            .with_proxy(true),
        0.5,
    );
    // GroupNorm + Proxy Norm.
    for act in [Act::Silu, Act::Relu] {
        add(gn.with_act(act).with_proxy(true), 0.5);
    }
    add(gn.with_act(Act::Silu).with_proxy(false), 0.5);
    v
}

// ---------------------------------------------------------------------------------------
// Benchmarks

/// EfficientNet-B0 activation shapes (H*W, C) the norm benchmarks run at.
pub const BENCH_SHAPES: [(usize, usize); 5] = [
    (112 * 112, 32),
    (56 * 56, 144),
    (28 * 28, 240),
    (14 * 14, 480),
    (7 * 7, 1152),
];

/// The three variants the benchmarks time at each shape: BN+SiLU (training), GN(4)+SiLU
/// and LN+PN(SiLU).
pub fn bench_specs(batch: usize, hw: usize, c: usize) -> [NormSpec; 3] {
    [
        NormSpec::new(batch, hw, c, NormKind::Batch).with_act(Act::Silu),
        NormSpec::new(batch, hw, c, NormKind::Group { groups: 4 }).with_act(Act::Silu),
        NormSpec::new(batch, hw, c, NormKind::layer())
            .with_act(Act::Silu)
            .with_proxy(true),
    ]
}

/// One normalization layer with every tensor its forward and backward touch allocated
/// (random x and dy), for benchmarks.
pub struct BenchLayer {
    /// The layer.
    pub spec: NormSpec,
    x: Tensor,
    y: Tensor,
    dy: Tensor,
    dx: Tensor,
    saved: Tensor,
    scratch: Tensor,
    /// gamma, beta, running mean, running var, mu~, s~, pshift, pscale.
    params: [Tensor; 8],
    /// dgamma, dbeta, dmu~, ds~, dpshift, dpscale, mu~ out, s~ out.
    grads: [Tensor; 8],
}

impl BenchLayer {
    /// Allocate and fill the tensors, and run one training forward (so `saved` is valid).
    pub fn new(gpu: &Gpu, spec: NormSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        let (n, c) = (spec.numel(), spec.c);
        let mut rng = Rng::new(seed);
        let mut randn = |len: usize, mean: f32, std: f32| -> Vec<f32> {
            (0..len).map(|_| mean + std * rng.normal() as f32).collect()
        };
        let x = gpu.upload(&randn(n, 0.5, 1.5), &[n])?;
        let dy = gpu.upload(&randn(n, 0.0, 1.0), &[n])?;
        let chan = |v: Vec<f32>| gpu.upload(&v, &[c]);
        let params = [
            chan(randn(c, 1.0, 0.2))?,
            chan(randn(c, 0.0, 0.2))?,
            chan(vec![0.0; c])?,
            chan(vec![1.0; c])?,
            chan(vec![0.2; c])?,
            chan(vec![1.7; c])?,
            chan(randn(c, 0.0, 0.1))?,
            chan(randn(c, 0.0, 0.1))?,
        ];
        let grads = (0..8)
            .map(|_| gpu.zeros(&[c]))
            .collect::<Result<Vec<_>>>()?
            .try_into()
            .expect("eight tensors");
        let layer = Self {
            spec,
            x,
            y: gpu.zeros(&[n])?,
            dy,
            dx: gpu.zeros(&[n])?,
            saved: gpu.zeros(&[spec.saved_len()])?,
            scratch: gpu.zeros(&[spec.scratch_len()])?,
            params,
            grads,
        };
        run_gpu(gpu, |r| layer.record_forward(r))?;
        Ok(layer)
    }

    fn norm_params(&self) -> NormParams<'_> {
        let p = &self.params;
        NormParams {
            gamma: Some(&p[0]),
            beta: Some(&p[1]),
            running_mean: Some(&p[2]),
            running_var: Some(&p[3]),
            proxy_mu: Some(&p[4]),
            proxy_s: Some(&p[5]),
        }
    }

    fn proxy_params(&self) -> ProxyParams<'_> {
        let p = &self.params;
        ProxyParams {
            act: self.spec.act,
            c: self.spec.c,
            eps: PROXY_EPS,
            gamma: Some(&p[0]),
            beta: Some(&p[1]),
            pshift: &p[6],
            pscale: &p[7],
        }
    }

    /// Record the training forward; with Proxy Norm, preceded by the per-step proxy
    /// statistics (written to separate tensors so the timed inputs stay fixed).
    pub fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        let s = &self.spec;
        if s.proxy.is_some() {
            proxy_norm::proxy_stats(r, &self.proxy_params(), &self.grads[6], &self.grads[7])?;
        }
        let p = self.norm_params();
        forward(r, s, true, &self.x, &p, &self.y, &self.saved, &self.scratch)
    }

    /// Record the backward; with Proxy Norm, followed by the proxy statistics backward.
    pub fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        let s = &self.spec;
        let g = &self.grads;
        let grads = NormGrads {
            dgamma: Some(&g[0]),
            dbeta: Some(&g[1]),
            dmu: Some(&g[2]),
            ds: Some(&g[3]),
        };
        let p = self.norm_params();
        backward(
            r,
            s,
            &self.x,
            &self.dy,
            &p,
            &self.saved,
            &self.dx,
            &grads,
            &self.scratch,
        )?;
        if s.proxy.is_some() {
            let pg = ProxyGrads {
                dgamma: Some(&g[0]),
                dbeta: Some(&g[1]),
                dpshift: &g[4],
                dpscale: &g[5],
            };
            proxy_norm::proxy_stats_backward(r, &self.proxy_params(), &g[2], Some(&g[3]), &pg)?;
        }
        Ok(())
    }

    /// Bytes a forward must move: x read and y written once.
    pub fn forward_bytes(&self) -> f64 {
        8.0 * self.spec.numel() as f64
    }

    /// Bytes a backward must move: x and dy read and dx written once.
    pub fn backward_bytes(&self) -> f64 {
        12.0 * self.spec.numel() as f64
    }
}

/// Benchmark [`bench_specs`] forward and backward at [`BENCH_SHAPES`] for batch `batch`,
/// `iters` timed runs each (median), plus the copy kernel over the largest activation,
/// measured in the same run. GB/s counts the bytes of [`BenchLayer::forward_bytes`] /
/// [`BenchLayer::backward_bytes`] (the fused kernels read x, and dy, twice: once to reduce,
/// once elementwise). The PN rows include the per-step proxy statistics and their backward.
/// Returns (copy row, rows).
pub fn bench(gpu: &Gpu, batch: usize, iters: usize) -> Result<(BenchRow, Vec<BenchRow>)> {
    let largest = BENCH_SHAPES
        .iter()
        .map(|(hw, c)| batch * hw * c)
        .max()
        .unwrap_or(1);
    let copy = copy_bandwidth(gpu, largest, iters)?;
    let mut rows = Vec::new();
    for &(hw, c) in &BENCH_SHAPES {
        let side = (hw as f64).sqrt().round() as usize;
        for spec in bench_specs(batch, hw, c) {
            let layer = BenchLayer::new(gpu, spec, 1)?;
            let name = format!(
                "{} {} [{batch},{side},{side},{c}]",
                spec.kind_name(),
                spec.act.name()
            );
            let fwd = time_ms(gpu, iters, |r| layer.record_forward(r))?;
            rows.push(BenchRow {
                name: format!("{name} fwd"),
                ms: fwd,
                flops: 0.0,
                bytes: layer.forward_bytes(),
            });
            let bwd = time_ms(gpu, iters, |r| layer.record_backward(r))?;
            rows.push(BenchRow {
                name: format!("{name} bwd"),
                ms: bwd,
                flops: 0.0,
                bytes: layer.backward_bytes(),
            });
        }
    }
    Ok((copy, rows))
}

/// `effnet bench norm`: run [`bench()`] and print the table (or one JSON object per row,
/// the copy kernel first).
pub fn run_bench(gpu: &Gpu, batch: usize, iters: usize, json: bool) -> Result<()> {
    let (copy, rows) = bench(gpu, batch, iters)?;
    if json {
        for r in std::iter::once(&copy).chain(&rows) {
            let v = serde_json::json!({
                "bench": "norm",
                "adapter": gpu.info.name,
                "name": r.name,
                "ms": r.ms,
                "bytes": r.bytes,
                "gbps": r.gbps(),
                "of_copy": r.gbps() / copy.gbps(),
            });
            println!("{v}");
        }
    } else {
        println!(
            "norm bench on {} ({:?}), batch {batch}, median of {iters}",
            gpu.info.name, gpu.info.backend
        );
        crate::bench::print_table(std::slice::from_ref(&copy), None);
        crate::bench::print_table(&rows, Some(&copy));
    }
    Ok(())
}
