//! `effnet bench conv`: the grouped-convolution family at EfficientNet-B0 layer shapes,
//! forward, backward-data and backward-weight, on any adapter: the selftest's
//! [`ConvCase`] and [`LinearCase`] prepared at these shapes and timed kernel by kernel.
//!
//! Shapes, at batch `N` (128 for the comparison with `bench/pytorch_conv.py`; `--batch`
//! scales down):
//! - depthwise B0 (G1, expansion 6) spatial convs `(C, H, k, stride)`: (96, 112, 3, 2),
//!   (144, 56, 3, 1), (240, 28, 5, 1), (480, 14, 3, 1), (1152, 7, 5, 1) — blocks 1.0, 1.1,
//!   2.1, 3.1 and 5.1 (H is the input size);
//! - their G16-B0 equivalents (expansion 4, 16 channels per group) at the same blocks:
//!   C = 64, 96, 160, 320, 768 (= 16·4, 24·4, 40·4, 80·4, 192·4 where B0 has 16·6 ...),
//!   i.e. 4, 6, 10, 20, 48 groups;
//! - the B0 1x1 expand / project convs around those blocks and the head, as GEMMs with
//!   rows = N·H·W.
//!
//! FLOPs count a multiply-add as 2; bytes count each tensor a kernel must read or write
//! once (see [`crate::gpu::Cost`]). `bench/pytorch_conv.py` times the same list with
//! cuDNN.

use super::cases::{time_case, CaseTiming};
use super::{BenchRow, Peak};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::conv::{ConvCase, ConvSpec, Padding};
use crate::ops::linear::{LinearCase, LinearSpec};
use crate::ops::OpCase;

/// The depthwise B0 shapes `(C, H, k, stride)`.
pub const B0_DEPTHWISE: [(usize, usize, usize, usize); 5] = [
    (96, 112, 3, 2),
    (144, 56, 3, 1),
    (240, 28, 5, 1),
    (480, 14, 3, 1),
    (1152, 7, 5, 1),
];

/// The G16-B0 equivalents `(C, H, k, stride)` (16 channels per group).
pub const G16_B0_GROUPED: [(usize, usize, usize, usize); 5] = [
    (64, 112, 3, 2),
    (96, 56, 3, 1),
    (160, 28, 5, 1),
    (320, 14, 3, 1),
    (768, 7, 5, 1),
];

/// The B0 1x1 convolutions `(H, Cin, Cout)`: expand and project around the blocks above,
/// and the head.
pub const B0_POINTWISE: [(usize, usize, usize); 10] = [
    (112, 16, 96),
    (56, 96, 24),
    (56, 24, 144),
    (56, 144, 24),
    (28, 40, 240),
    (28, 240, 40),
    (14, 80, 480),
    (14, 480, 80),
    (7, 192, 1152),
    (7, 320, 1280),
];

/// A spatial convolution `(C, H, k, stride)` with `per_group` channels per group.
pub fn grouped(
    n: usize,
    (c, h, k, stride): (usize, usize, usize, usize),
    per_group: usize,
) -> ConvSpec {
    ConvSpec {
        n,
        h,
        w: h,
        cin: c,
        cout: c,
        k,
        stride,
        groups: c / per_group,
        bias: false,
        padding: Padding::Symmetric,
    }
}

/// A 1x1 convolution `(H, Cin, Cout)` as a linear layer over `n * H * H` rows.
pub fn pointwise(n: usize, (h, cin, cout): (usize, usize, usize)) -> LinearSpec {
    LinearSpec {
        rows: n * h * h,
        cin,
        cout,
        bias: false,
    }
}

/// Every benchmarked layer at batch `n`: (row label, the harness case).
pub fn cases(n: usize) -> Vec<(String, Box<dyn OpCase>)> {
    let mut v: Vec<(String, Box<dyn OpCase>)> = Vec::new();
    for (list, per_group) in [(B0_DEPTHWISE, 1), (G16_B0_GROUPED, 16)] {
        for shape in list {
            let spec = grouped(n, shape, per_group);
            v.push((spec.label(), Box::new(ConvCase::new(spec))));
        }
    }
    for shape in B0_POINTWISE {
        let spec = pointwise(n, shape);
        let (h, cin, cout) = shape;
        v.push((
            format!("conv1x1 {cin}->{cout} @{h}x{h} n{n}"),
            Box::new(LinearCase::new(spec)),
        ));
    }
    v
}

/// Time every layer at batch `batch`; returns the timings (rows per kernel and pass).
pub fn measure(gpu: &Gpu, batch: usize, iters: usize) -> Result<Vec<CaseTiming>> {
    cases(batch)
        .into_iter()
        .map(|(name, case)| time_case(gpu, case.as_ref(), Some(name), 1, iters))
        .collect()
}

/// `effnet bench conv`: print the table (or one JSON object per row) against `peak`.
pub fn run(
    gpu: &Gpu,
    batch: usize,
    iters: usize,
    json: bool,
    peak: &Peak,
) -> Result<Vec<BenchRow>> {
    let title = format!(
        "bench conv on {} ({:?}), batch {batch}, median of {iters}",
        gpu.info.name, gpu.info.backend
    );
    let timings = measure(gpu, batch, iters)?;
    Ok(super::report(gpu, "conv", &title, timings, json, peak))
}
