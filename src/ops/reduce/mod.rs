//! Sums and means over one axis of a tensor viewed as [O, M, I] (global average pooling is
//! O=N, M=H*W, I=C; per-channel batch sums are O=1, M=N*H*W, I=C; a row sum is I=1), and
//! their gradient (a broadcast). Deterministic: fixed-order tree reductions, and a second
//! pass over chunk partials when M is long and O*I small.

mod cases;
mod reference;

pub use cases::{cases, ReduceCase};
pub use reference::sum_axis_ref;

use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Grid, Kernel, KernelDef, Recorder, Tensor,
};

uniform_block! {
    /// Parameters of `reduce/sum_axis.wgsl`.
    pub(super) struct SumAxisParams {
        pub o: u32,
        pub m: u32,
        pub i: u32,
        /// Chunks along M.
        pub s: u32,
        /// Rows of M per chunk.
        pub chunk: u32,
        /// Ceil(I / TI).
        pub iblocks: u32,
        pub scale: f32,
    }
}

uniform_block! {
    /// Parameters of `reduce/broadcast.wgsl`.
    pub(super) struct BroadcastParams {
        /// O * M * I.
        pub n: u32,
        pub m: u32,
        pub i: u32,
        pub scale: f32,
    }
}

static SUM: Kernel<SumAxisParams> = Kernel::new(
    "reduce/sum_axis.wgsl",
    "sum_axis",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[
        ("TI", &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
        ("PRODUCT", &[0.0, 1.0]),
    ],
)
// x and y are activations (or their gradients); the sums stay f32: they are parameter
// gradients (bias, SE), pooled features feeding the classifier, or split partials, and
// every accumulation is f32 (the second pass over the partials runs the f32 variant).
.with_f16(&[1, 2]);
static BROADCAST: Kernel<BroadcastParams> = Kernel::new(
    "reduce/broadcast.wgsl",
    "broadcast",
    &[Access::Read, Access::ReadWrite],
    &[],
)
// dx is an activation gradient; dy is the gradient of an f32 sum (see SUM), so f32.
.with_f16(&[2]);

/// The [O, M, I] view of a reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axes {
    /// Outer extent (kept).
    pub o: usize,
    /// Reduced extent.
    pub m: usize,
    /// Inner extent (kept, contiguous).
    pub i: usize,
}

impl Axes {
    /// Reduction view of `shape` over the contiguous axes `from..to`.
    pub fn of(shape: &[usize], from: usize, to: usize) -> Result<Axes> {
        if from > to || to > shape.len() {
            return Err(Error::Shape(format!(
                "cannot reduce axes {from}..{to} of {shape:?}"
            )));
        }
        Ok(Axes {
            o: shape[..from].iter().product(),
            m: shape[from..to].iter().product(),
            i: shape[to..].iter().product(),
        })
    }

    fn tile_i(self) -> u32 {
        (self.i.next_power_of_two().min(32)) as u32
    }

    /// Chunks along M chosen by rule: split when the grid would be small and M long.
    pub fn chunks(self) -> usize {
        let blocks = self.o * self.i.div_ceil(self.tile_i() as usize);
        if blocks >= 256 || self.m <= 2048 {
            1
        } else {
            (self.m / 1024).clamp(1, 256)
        }
    }

    /// Scratch elements [`sum_axis`] needs for its partials (0 when it needs none).
    pub fn scratch_len(self) -> usize {
        let s = self.chunks();
        if s > 1 {
            self.o * s * self.i
        } else {
            0
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn pass(
    rec: &mut Recorder,
    x: &Tensor,
    y: &Tensor,
    out: &Tensor,
    ax: Axes,
    s: usize,
    scale: f32,
    product: bool,
) -> Result<()> {
    let ti = ax.tile_i();
    let iblocks = ax.i.div_ceil(ti as usize);
    let chunk = ax.m.div_ceil(s);
    let groups = ax.o * s * iblocks;
    // One add (a multiply-add with the product) per element read.
    let reads = ax.o * ax.m * ax.i * if product { 2 } else { 1 };
    let cost = Cost {
        flops: reads as f64,
        bytes: (reads as u64 * x.dtype().size() + out.bytes()) as f64,
    };
    rec.dispatch(
        &SUM,
        &[
            ("TI", ti as f64),
            ("PRODUCT", if product { 1.0 } else { 0.0 }),
        ],
        &SumAxisParams {
            o: ax.o as u32,
            m: ax.m as u32,
            i: ax.i as u32,
            s: s as u32,
            chunk: chunk as u32,
            iblocks: iblocks as u32,
            scale,
        },
        &[x, y, out],
        Grid::Linear(groups as u32),
        cost,
    )
}

/// Record out[o, i] = scale * sum_m x[o, m, i] (times y[o, m, i] when `y` is given).
/// `scratch` must hold [`Axes::scratch_len`] elements when that is non-zero.
pub fn sum_axis(
    rec: &mut Recorder,
    x: &Tensor,
    y: Option<&Tensor>,
    out: &Tensor,
    ax: Axes,
    scale: f32,
    scratch: Option<&Tensor>,
) -> Result<()> {
    let n = ax.o * ax.m * ax.i;
    if x.len() != n || y.is_some_and(|y| y.len() != n) || out.len() != ax.o * ax.i {
        return Err(Error::Shape(format!(
            "sum over {ax:?}: input {:?}, output {:?}",
            x.shape(),
            out.shape()
        )));
    }
    let s = ax.chunks();
    let yy = y.unwrap_or(x);
    if s == 1 {
        return pass(rec, x, yy, out, ax, 1, scale, y.is_some());
    }
    let scratch = scratch
        .filter(|t| t.len() >= ax.scratch_len())
        .ok_or_else(|| Error::Config("sum_axis: scratch buffer missing or too small".into()))?;
    pass(rec, x, yy, scratch, ax, s, 1.0, y.is_some())?;
    let ax2 = Axes {
        o: ax.o,
        m: s,
        i: ax.i,
    };
    pass(rec, scratch, scratch, out, ax2, 1, scale, false)
}

/// Record dx[o, m, i] = scale * dy[o, i].
pub fn broadcast(rec: &mut Recorder, dy: &Tensor, dx: &Tensor, ax: Axes, scale: f32) -> Result<()> {
    let n = ax.o * ax.m * ax.i;
    if dy.len() != ax.o * ax.i || dx.len() != n {
        return Err(Error::Shape(format!(
            "broadcast over {ax:?}: input {:?}, output {:?}",
            dy.shape(),
            dx.shape()
        )));
    }
    rec.dispatch(
        &BROADCAST,
        &[],
        &BroadcastParams {
            n: n as u32,
            m: ax.m as u32,
            i: ax.i as u32,
            scale,
        },
        &[dy, dx],
        Grid::Linear(groups_for(n, 256)),
        Cost::tensors(n as f64, &[dy], &[dx]),
    )
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&SUM.def, &BROADCAST.def];
