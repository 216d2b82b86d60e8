//! Tiled GEMM (workgroup-memory tiles, 4 x 4 register micro-tiles).
//!
//! [`gemm`] computes `C[m, n] = op(A)[m, k] . op(B)[k, n] (+ bias[n]) (+ C)` on row-major
//! matrices in one dispatch. The tile is 64 x 64, 128 x 32 or 256 x 16 (rows x columns),
//! chosen by rule from `n` (the fewest padded columns; see [`GemmSpec::tile`]). Linear
//! layers and 1x1 convolutions ([`super::linear`], [`super::conv`]) run on it; a GEMM's
//! gradients are GEMMs with other transposes ([`GemmCase`] checks them that way).
//!
//! Storage types (mixed precision): the kernel is built from one body
//! (`gemm/gemm.inc.wgsl`) as two modules, one per operand combination, each with its own
//! f16-storage variant; [`gemm`] picks the module from B's dtype and the variant from the
//! tensors bound:
//! - `gemm/gemm.wgsl`: A and C activations (f16 or f32), B and the bias f32 parameters:
//!   `x . W`, `dy . W^T` (linear layers, 1x1 convolutions) and every all-f32 product
//!   (the moments code);
//! - `gemm/gemm_act_act.wgsl`: A and B activations (f16 or f32), C f32, no bias: a weight
//!   gradient `x^T . dy`, which is a parameter gradient and stays f32.

mod cases;
mod reference;

pub use cases::{cases, GemmCase};
pub use reference::gemm_ref;

use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Access, Cost, Dtype, Grid, Kernel, KernelDef, Recorder, Tensor};

uniform_block! {
    /// Parameters of `gemm/gemm.wgsl`.
    pub(super) struct GemmParams {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        /// Column tiles: ceil(n / BN).
        pub ntiles: u32,
        /// All tiles.
        pub tiles: u32,
    }
}

const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::ReadWrite];
const OVERRIDES: &[(&str, &[f64])] = &[
    ("TA", &[0.0, 1.0]),
    ("TB", &[0.0, 1.0]),
    ("BIAS", &[0.0, 1.0]),
    ("ACC", &[0.0, 1.0]),
    ("TNT", &[4.0, 8.0, 16.0]),
];

// A and C are activations (f16 under mixed precision: the 1x1 convolutions' x and y, dy
// and dx); B and the bias are f32 parameters (master weights). Sums in f32.
static GEMM: Kernel<GemmParams> =
    Kernel::new("gemm/gemm.wgsl", "gemm", BINDINGS, OVERRIDES).with_f16(&[1, 4]);
// A and B are activations (x and dy, f16 under mixed precision); C is a weight gradient
// (f32: it feeds the f32 optimizer). No bias (BIAS = 0): binding 3 is a placeholder, A.
static GEMM_ACT_ACT: Kernel<GemmParams> = Kernel::new(
    "gemm/gemm_act_act.wgsl",
    "gemm",
    BINDINGS,
    &[
        ("TA", &[0.0, 1.0]),
        ("TB", &[0.0, 1.0]),
        ("BIAS", &[0.0]),
        ("ACC", &[0.0, 1.0]),
        ("TNT", &[4.0, 8.0, 16.0]),
    ],
)
.with_f16(&[1, 2, 3]);

/// One matrix product `C[m, n] = op(A)[m, k] . op(B)[k, n] (+ bias) (+ C)`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GemmSpec {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// A is stored `[k, m]` (use its transpose).
    pub trans_a: bool,
    /// B is stored `[n, k]` (use its transpose).
    pub trans_b: bool,
    /// Add the product to C's current contents instead of overwriting C.
    pub accumulate: bool,
}

impl GemmSpec {
    /// A plain product of `[m, k]` by `[k, n]`, overwriting C.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            accumulate: false,
        }
    }

    /// Multiply-accumulates.
    pub fn macs(&self) -> usize {
        self.m * self.n * self.k
    }

    /// The work of one product: `2 m n k` FLOPs; A, B (the bias, C when accumulating)
    /// read once and C written once.
    pub fn cost(&self, bias: bool) -> Cost {
        let (m, n, k) = (self.m, self.n, self.k);
        let reads =
            m * k + k * n + if bias { n } else { 0 } + if self.accumulate { m * n } else { 0 };
        Cost::f32s(2.0 * self.macs() as f64, reads, m * n)
    }

    /// Threads along N of the tile (4, 8 or 16; the tile is `1024/t x 4t`): the choice
    /// with the fewest padded columns, ties to the wider tile; 16-column tiles only for
    /// n <= 48 and 32-column tiles only for n <= 160 (narrow tiles re-read A more often).
    pub fn tile(&self) -> u32 {
        let pad = |bn: usize| self.n.div_ceil(bn) * bn;
        let mut best = 16u32;
        for (t, limit) in [(8u32, 160usize), (4, 48)] {
            if self.n <= limit && pad(4 * t as usize) < pad(4 * best as usize) {
                best = t;
            }
        }
        best
    }

    /// Check sizes against the tensors.
    fn check(&self, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, c: &Tensor) -> Result<()> {
        if a.len() != self.m * self.k
            || b.len() != self.k * self.n
            || c.len() != self.m * self.n
            || bias.is_some_and(|t| t.len() != self.n)
        {
            return Err(Error::Shape(format!(
                "gemm {self:?}: A {:?}, B {:?}, C {:?}, bias {:?}",
                a.shape(),
                b.shape(),
                c.shape(),
                bias.map(|t| t.shape().to_vec())
            )));
        }
        if self.m.max(self.n).max(self.k) >= u32::MAX as usize / 2 {
            return Err(Error::TooLarge(format!("gemm {self:?} is too large")));
        }
        Ok(())
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Record `C = op(A) . op(B) (+ bias[n]) (+ C if accumulate)` (one dispatch). Every
/// tensor f32; or A and C f16 with B and the bias f32 (activation times weight); or A and
/// B f16 with C f32 and no bias (a weight gradient from activations).
pub fn gemm(
    rec: &mut Recorder,
    s: &GemmSpec,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<()> {
    s.check(a, b, bias, c)?;
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    let tnt = s.tile();
    let bm = 1024 / tnt as usize;
    let bn = 4 * tnt as usize;
    let ntiles = s.n.div_ceil(bn);
    let tiles = s.m.div_ceil(bm) * ntiles;
    let (kernel, placeholder) = if b.dtype() == Dtype::F16 {
        if bias.is_some() {
            return Err(Error::Config(format!(
                "gemm {s:?}: a product of two f16 activations (a weight gradient) takes no \
                 bias; add the bias gradient with reduce::sum_axis"
            )));
        }
        (&GEMM_ACT_ACT, a)
    } else {
        (&GEMM, b)
    };
    // The spec's FLOPs; the bytes of the tensors as stored (f16 moves half).
    let flops = s.cost(bias.is_some()).flops;
    let cost = match (bias, s.accumulate) {
        (Some(t), true) => Cost::tensors(flops, &[a, b, t, c], &[c]),
        (Some(t), false) => Cost::tensors(flops, &[a, b, t], &[c]),
        (None, true) => Cost::tensors(flops, &[a, b, c], &[c]),
        (None, false) => Cost::tensors(flops, &[a, b], &[c]),
    };
    rec.dispatch(
        kernel,
        &[
            ("TA", flag(s.trans_a)),
            ("TB", flag(s.trans_b)),
            ("BIAS", flag(bias.is_some())),
            ("ACC", flag(s.accumulate)),
            ("TNT", tnt as f64),
        ],
        &GemmParams {
            m: s.m as u32,
            n: s.n as u32,
            k: s.k as u32,
            ntiles: ntiles as u32,
            tiles: tiles as u32,
        },
        &[a, b, bias.unwrap_or(placeholder), c],
        Grid::Linear(tiles as u32),
        cost,
    )
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&GEMM.def, &GEMM_ACT_ACT.def];
