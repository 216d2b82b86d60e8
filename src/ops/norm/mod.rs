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
//! Frozen BatchNorm ([`NormSpec::frozen`], PyTorch's `model.eval()` while training, as
//! fine-tuning does): the forward is the evaluation forward on the running statistics,
//! which stay unchanged, and the backward treats them as constants:
//! `dx = dy * act'(z) * gamma / sqrt(running_var + eps)` (no terms through the batch
//! statistics), `dgamma = sum(dz * xhat)`, `dbeta = sum(dz)` with
//! `xhat = (x - running_mean) / sqrt(running_var + eps)`. Its backward first copies the
//! running statistics into `saved` (`[mean; C]` then `[var; C]`), then runs the same
//! three passes with the `FROZEN` flag.
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
//! Variance convention: biased (divide by the count) to normalize, everywhere; BatchNorm's
//! running variance is updated with the unbiased batch variance (count / (count - 1) times
//! the biased one; the biased one for a single value per channel), as PyTorch keeps it, so
//! exported statistics match a PyTorch-trained model's. Running update:
//! `run = momentum * run + (1 - momentum) * batch` (TF convention, momentum 0.99).

mod backward;
mod cases;
mod forward;
mod reference;

pub use backward::backward;
pub use cases::{cases, NormCase};
pub use forward::forward;
pub use reference::{backward_ref, forward_ref, RefBackward, RefForward, RefParams};

use super::act::Act;
pub use super::proxy_norm::{
    proxy_stats, proxy_stats_backward, ProxyGrads, ProxyParams, PROXY_EPS, PROXY_POINTS,
};
use crate::error::{Error, Result};
use crate::gpu::{KernelDef, Tensor};

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
    /// BatchNorm only: normalize with the running statistics in training too, keep them
    /// unchanged, and let gradients flow through them as constants (eval-mode BatchNorm
    /// backward, for fine-tuning with frozen statistics).
    pub frozen: bool,
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
            frozen: false,
        }
    }

    /// With BatchNorm's statistics frozen (see [`NormSpec::frozen`]) or not.
    pub fn with_frozen(mut self, frozen: bool) -> Self {
        self.frozen = frozen;
        self
    }

    /// True when this layer normalizes with its running statistics: a BatchNorm
    /// evaluation pass, or any pass of a frozen BatchNorm.
    pub fn uses_running_stats(&self, training: bool) -> bool {
        self.kind == NormKind::Batch && (!training || self.frozen)
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

    /// Bessel's correction n / (n - 1) for the values of one segment (1 for a single
    /// value), applied to BatchNorm's running variance.
    pub fn unbiased_factor(&self) -> f64 {
        let n = self.segment_len() as f64;
        if n > 1.0 {
            n / (n - 1.0)
        } else {
            1.0
        }
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
        if self.frozen && self.kind != NormKind::Batch {
            return Err(Error::Config(format!(
                "only BatchNorm has running statistics to freeze, not {}",
                self.kind_name()
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
        if self.frozen {
            f |= FROZEN;
        }
        f
    }

    /// Short name: `bn`, `ln`, `gn4`, `in`, with `+pn` (`+pn-mean` without s~).
    pub fn kind_name(&self) -> String {
        let base = match self.kind {
            NormKind::Batch if self.frozen => "bn-frozen".to_string(),
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
/// Backward passes: `saved` holds the running (mean, variance), constants of the loss.
const FROZEN: u32 = 256;

/// Activation codes the fused kernels are built with.
const ACT_CODES: [f64; 4] = [0.0, 1.0, 2.0, 3.0];

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[
    &forward::STATS.def,
    &forward::STATS_FINAL.def,
    &forward::STATS_FINAL_RUNNING.def,
    &forward::FWD.def,
    &backward::BWD_REDUCE.def,
    &backward::BWD_FINAL.def,
    &backward::BWD.def,
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
    /// BatchNorm running (unbiased) variance, like `running_mean`.
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
