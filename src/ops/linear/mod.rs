//! Linear layers and pointwise (1x1) convolutions on NHWC activations: `y[r, :] = x[r, :] .
//! W (+ b)` with the activation viewed as `[rows, cin]` (rows = N*H*W) and the weight stored
//! `[cin, cout]` (the layout of [`super::conv`] weights with k = 1).
//!
//! Forward and backward-data are plain GEMMs ([`super::gemm`]); the weight gradient is a
//! long reduction over rows and runs on the convolution's split-K weight-gradient kernel
//! (one pass, plus a deterministic reduction pass when the rows are split).

mod cases;
mod reference;

pub use cases::{cases, LinearCase};
pub use reference::{backward_ref, forward_ref};

use super::conv::{self, ConvSpec, Padding};
use super::gemm::{gemm, GemmSpec};
use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};

/// A linear layer / pointwise convolution: `y[r, :] = x[r, :] . W (+ b)` with `x` of
/// `rows x cin` (an NHWC activation has rows = N*H*W), `W` stored `[cin, cout]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinearSpec {
    /// Rows (N, or N*H*W for a 1x1 convolution).
    pub rows: usize,
    /// Input features / channels.
    pub cin: usize,
    /// Output features / channels.
    pub cout: usize,
    /// With a bias `[cout]`.
    pub bias: bool,
}

impl LinearSpec {
    /// The same layer as a 1x1 convolution (what the weight gradient runs on).
    pub fn as_conv(&self) -> ConvSpec {
        ConvSpec {
            n: 1,
            h: 1,
            w: self.rows,
            cin: self.cin,
            cout: self.cout,
            k: 1,
            stride: 1,
            groups: 1,
            bias: self.bias,
            padding: Padding::Symmetric,
        }
    }

    /// Elements of scratch [`backward_weight`] needs (0: none).
    pub fn scratch_len(&self) -> usize {
        self.as_conv().scratch_len()
    }

    /// Multiply-accumulates of the forward product.
    pub fn macs(&self) -> usize {
        self.rows * self.cin * self.cout
    }
}

/// Record `y = x . W (+ b)` (one dispatch).
pub fn forward(
    rec: &mut Recorder,
    s: &LinearSpec,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    if bias.is_some() != s.bias {
        return Err(Error::Config(format!(
            "linear {s:?}: bias given = {}",
            bias.is_some()
        )));
    }
    gemm(rec, &GemmSpec::new(s.rows, s.cout, s.cin), x, w, bias, y)
}

/// Record `dx = dy . W^T` (one dispatch; overwrites `dx`).
pub fn backward_data(
    rec: &mut Recorder,
    s: &LinearSpec,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let g = GemmSpec {
        trans_b: true,
        ..GemmSpec::new(s.rows, s.cin, s.cout)
    };
    gemm(rec, &g, dy, w, None, dx)
}

/// Record `dW = x^T . dy` and `db = sum_r dy[r, :]` (overwrites both). `scratch` must
/// hold [`LinearSpec::scratch_len`] elements when that is non-zero.
pub fn backward_weight(
    rec: &mut Recorder,
    s: &LinearSpec,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    dbias: Option<&Tensor>,
    scratch: Option<&Tensor>,
) -> Result<()> {
    conv::backward_weight(rec, &s.as_conv(), x, dy, dw, dbias, scratch)
}
