//! Forward pass of squeeze-excitation: pool, squeeze (linear + SiLU), excite (linear +
//! sigmoid) and the per-channel scale, 6 dispatches (7 when the pooling is split).

use super::{check_x, SeSaved, SeSpec, SeWeights};
use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::ops::act::{self, Act};
use crate::ops::{elementwise, linear, pool};

/// Record the forward pass `y = x * sigmoid(fc2(silu(fc1(mean x))))`, filling `saved`.
/// `scratch` must hold [`SeSpec::scratch_len`] elements when that is non-zero.
pub fn forward(
    rec: &mut Recorder,
    s: &SeSpec,
    x: &Tensor,
    p: &SeWeights,
    y: &Tensor,
    saved: &SeSaved,
    scratch: Option<&Tensor>,
) -> Result<()> {
    check_x(s, &[x, y])?;
    let x4 = x.reshape(&[s.n, s.h, s.w, s.c])?;
    pool::forward(rec, &s.gap(), x, &saved.pooled, scratch)?;
    linear::forward(rec, &s.fc1(), &saved.pooled, p.w1, Some(p.b1), &saved.h1)?;
    act::forward(rec, Act::Silu, &saved.h1, &saved.a1)?;
    linear::forward(rec, &s.fc2(), &saved.a1, p.w2, Some(p.b2), &saved.h2)?;
    act::forward(rec, Act::Sigmoid, &saved.h2, &saved.gate)?;
    elementwise::channel_scale(rec, &x4, &saved.gate, y)
}
