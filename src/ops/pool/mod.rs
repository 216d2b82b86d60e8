//! Global average pooling of NHWC activations (`[n, h, w, c] -> [n, c]`) and its gradient,
//! on the deterministic reduction kernels of [`super::reduce`].

mod cases;
mod reference;

pub use cases::{cases, GapCase};
pub use reference::forward_ref;

use super::reduce::{self, Axes};
use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};

/// A global average pooling over H and W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GapSpec {
    /// Batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl GapSpec {
    /// The reduction view [N, H*W, C].
    pub fn axes(&self) -> Axes {
        Axes {
            o: self.n,
            m: self.h * self.w,
            i: self.c,
        }
    }

    /// Elements of scratch [`forward`] needs (0: none).
    pub fn scratch_len(&self) -> usize {
        self.axes().scratch_len()
    }

    fn scale(&self) -> f32 {
        1.0 / (self.h * self.w) as f32
    }

    fn check(&self, big: &Tensor, small: &Tensor) -> Result<()> {
        if big.len() != self.n * self.h * self.w * self.c || small.len() != self.n * self.c {
            return Err(Error::Shape(format!(
                "global average pool {self:?}: {:?} and {:?}",
                big.shape(),
                small.shape()
            )));
        }
        Ok(())
    }
}

/// Record `y[n, c] = mean_{h, w} x[n, h, w, c]`. `scratch` must hold
/// [`GapSpec::scratch_len`] elements when that is non-zero.
pub fn forward(
    rec: &mut Recorder,
    s: &GapSpec,
    x: &Tensor,
    y: &Tensor,
    scratch: Option<&Tensor>,
) -> Result<()> {
    s.check(x, y)?;
    reduce::sum_axis(rec, x, None, y, s.axes(), s.scale(), scratch)
}

/// Record `dx[n, h, w, c] = dy[n, c] / (h * w)` (overwrites dx).
pub fn backward(rec: &mut Recorder, s: &GapSpec, dy: &Tensor, dx: &Tensor) -> Result<()> {
    s.check(dx, dy)?;
    reduce::broadcast(rec, dy, dx, s.axes(), s.scale())
}
