//! Squeeze-excitation on NHWC activations:
//! `pooled = mean_{h,w} x`, `h1 = pooled . w1 + b1`, `a1 = silu(h1)`, `h2 = a1 . w2 + b2`,
//! `gate = sigmoid(h2)`, `y = x * gate[n, c]`, with `w1 [c, hidden]`, `w2 [hidden, c]`.
//!
//! Forward records 6 dispatches (7 when the pooling is split) and keeps `pooled`, `h1`,
//! `a1`, `h2` and `gate` in an [`SeSaved`] for the backward pass, which also reads `x`.
//! Backward uses the temporaries of an [`SeTemp`] and ends in one fused kernel for
//! `dx = dy * gate + dpooled / (h*w)`. Nothing is allocated inside the launchers.

mod backward;
mod cases;
mod forward;
mod reference;

pub use backward::backward;
pub use cases::{cases, SeCase};
pub use forward::forward;
pub use reference::{backward_ref, forward_ref};

use super::linear::LinearSpec;
use super::pool::GapSpec;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelDef, Tensor};

/// One squeeze-excitation block on `[n, h, w, c]` with hidden width `hidden`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeSpec {
    /// Batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Hidden width of the bottleneck.
    pub hidden: usize,
}

impl SeSpec {
    fn gap(&self) -> GapSpec {
        GapSpec {
            n: self.n,
            h: self.h,
            w: self.w,
            c: self.c,
        }
    }

    /// The squeeze layer `[c] -> [hidden]`.
    pub fn fc1(&self) -> LinearSpec {
        LinearSpec {
            rows: self.n,
            cin: self.c,
            cout: self.hidden,
            bias: true,
        }
    }

    /// The excite layer `[hidden] -> [c]`.
    pub fn fc2(&self) -> LinearSpec {
        LinearSpec {
            rows: self.n,
            cin: self.hidden,
            cout: self.c,
            bias: true,
        }
    }

    /// Elements of scratch [`forward`] and [`backward`] need (one buffer serves both).
    pub fn scratch_len(&self) -> usize {
        self.gap()
            .scratch_len()
            .max(self.fc1().scratch_len())
            .max(self.fc2().scratch_len())
    }

    /// Activation elements `n*h*w*c`.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// True when the activation is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The block's parameters.
pub struct SeWeights<'a> {
    /// `[c, hidden]`.
    pub w1: &'a Tensor,
    /// `[hidden]`.
    pub b1: &'a Tensor,
    /// `[hidden, c]`.
    pub w2: &'a Tensor,
    /// `[c]`.
    pub b2: &'a Tensor,
}

/// Gradients of the block's parameters (overwritten by [`backward`]).
pub struct SeGrads<'a> {
    /// `[c, hidden]`.
    pub dw1: &'a Tensor,
    /// `[hidden]`.
    pub db1: &'a Tensor,
    /// `[hidden, c]`.
    pub dw2: &'a Tensor,
    /// `[c]`.
    pub db2: &'a Tensor,
}

/// What [`forward`] keeps for [`backward`] (all small: `[n, c]` or `[n, hidden]`).
pub struct SeSaved {
    /// Pooled input `[n, c]`.
    pub pooled: Tensor,
    /// Squeeze pre-activation `[n, hidden]`.
    pub h1: Tensor,
    /// Squeeze activation `silu(h1)` `[n, hidden]`.
    pub a1: Tensor,
    /// Excite pre-activation `[n, c]`.
    pub h2: Tensor,
    /// Gate `sigmoid(h2)` `[n, c]`.
    pub gate: Tensor,
}

impl SeSaved {
    /// Allocate for a spec.
    pub fn new(gpu: &Gpu, s: &SeSpec) -> Result<Self> {
        Ok(Self {
            pooled: gpu.zeros(&[s.n, s.c])?,
            h1: gpu.zeros(&[s.n, s.hidden])?,
            a1: gpu.zeros(&[s.n, s.hidden])?,
            h2: gpu.zeros(&[s.n, s.c])?,
            gate: gpu.zeros(&[s.n, s.c])?,
        })
    }
}

/// Backward temporaries (free again once [`backward`] has run).
pub struct SeTemp {
    /// `[n, c]`.
    pub dgate: Tensor,
    /// `[n, c]`.
    pub dh2: Tensor,
    /// `[n, hidden]`.
    pub da1: Tensor,
    /// `[n, hidden]`.
    pub dh1: Tensor,
    /// `[n, c]`.
    pub dpooled: Tensor,
}

impl SeTemp {
    /// Allocate for a spec.
    pub fn new(gpu: &Gpu, s: &SeSpec) -> Result<Self> {
        Ok(Self {
            dgate: gpu.zeros(&[s.n, s.c])?,
            dh2: gpu.zeros(&[s.n, s.c])?,
            da1: gpu.zeros(&[s.n, s.hidden])?,
            dh1: gpu.zeros(&[s.n, s.hidden])?,
            dpooled: gpu.zeros(&[s.n, s.c])?,
        })
    }
}

fn check_x(s: &SeSpec, ts: &[&Tensor]) -> Result<()> {
    if s.n == 0 || s.h == 0 || s.w == 0 || s.c == 0 || s.hidden == 0 {
        return Err(Error::Config(format!(
            "squeeze-excitation {s:?}: empty size"
        )));
    }
    for t in ts {
        if t.len() != s.len() {
            return Err(Error::Shape(format!(
                "squeeze-excitation {s:?}: activation of shape {:?}",
                t.shape()
            )));
        }
    }
    Ok(())
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&backward::SE_DX.def];
