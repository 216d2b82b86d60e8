//! `effnet bench conv`: the grouped-convolution family at EfficientNet-B0 layer shapes,
//! forward, backward-data and backward-weight, on any adapter.
//!
//! Shapes, at batch `N` (128 for the H100 comparison; `--batch` scales down):
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
//! once (partial sums of split reductions excluded). `bench/pytorch_conv.py` times the
//! same list with cuDNN and prints the same table.

use serde::Serialize;

use crate::bench::{copy_bandwidth, print_table, time_ms, BenchRow};
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::ops::conv::{self, ConvSpec};
use crate::ops::linear::{self, LinearSpec};

/// One benchmarked layer.
#[derive(Clone, Copy, Debug, Serialize)]
pub enum ConvBenchShape {
    /// A spatial (grouped or depthwise) convolution.
    Conv(ConvSpec),
    /// A 1x1 convolution as a GEMM.
    Pointwise(LinearSpec, usize),
}

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

/// Every shape at batch `n`.
pub fn shapes(n: usize) -> Vec<ConvBenchShape> {
    let mut v = Vec::new();
    for (list, per_group) in [(B0_DEPTHWISE, 1), (G16_B0_GROUPED, 16)] {
        for (c, h, k, stride) in list {
            v.push(ConvBenchShape::Conv(ConvSpec {
                n,
                h,
                w: h,
                cin: c,
                cout: c,
                k,
                stride,
                groups: c / per_group,
                bias: false,
            }));
        }
    }
    for (h, cin, cout) in B0_POINTWISE {
        v.push(ConvBenchShape::Pointwise(
            LinearSpec {
                rows: n * h * h,
                cin,
                cout,
                bias: false,
            },
            h,
        ));
    }
    v
}

struct Bufs {
    x: Tensor,
    w: Tensor,
    y: Tensor,
    dx: Tensor,
    dw: Tensor,
    scratch: Tensor,
}

fn bufs(gpu: &Gpu, x: usize, w: usize, y: usize, scratch: usize) -> Result<Bufs> {
    let fill = |n: usize| -> Result<Tensor> {
        let v: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
        gpu.upload(&v, &[n])
    };
    Ok(Bufs {
        x: fill(x)?,
        w: fill(w)?,
        y: fill(y)?,
        dx: gpu.zeros(&[x])?,
        dw: gpu.zeros(&[w])?,
        scratch: gpu.zeros(&[scratch.max(1)])?,
    })
}

/// Time one shape: rows for forward, backward data, backward weight and their sum.
pub fn bench_shape(gpu: &Gpu, shape: &ConvBenchShape, iters: usize) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    match *shape {
        ConvBenchShape::Conv(s) => {
            let (xl, wl, yl) = (
                s.n * s.h * s.w * s.cin,
                s.weight_len(),
                s.out_pixels() * s.cout,
            );
            let b = bufs(gpu, xl, wl, yl, s.scratch_len())?;
            let x = b.x.reshape(&s.in_shape())?;
            let y = b.y.reshape(&s.out_shape())?;
            let dx = b.dx.reshape(&s.in_shape())?;
            let (w, dw) = (&b.w, &b.dw);
            let [kf, kd, kw] = s.kernels();
            let name = s.label();
            let fl = 2.0 * s.macs() as f64;
            let by = |a: usize, b: usize, c: usize| 4.0 * (a + b + c) as f64;
            let f = time_ms(gpu, iters, |r| conv::forward(r, &s, &x, w, None, &y))?;
            let d = time_ms(gpu, iters, |r| conv::backward_data(r, &s, &y, w, &dx))?;
            let g = time_ms(gpu, iters, |r| {
                conv::backward_weight(r, &s, &x, &y, dw, None, Some(&b.scratch))
            })?;
            rows.push(BenchRow {
                name: format!("{name} fwd [{}]", kf.name()),
                ms: f,
                flops: fl,
                bytes: by(xl, wl, yl),
            });
            rows.push(BenchRow {
                name: format!("{name} bwd-data [{}]", kd.name()),
                ms: d,
                flops: fl,
                bytes: by(yl, wl, xl),
            });
            rows.push(BenchRow {
                name: format!("{name} bwd-weight [{}]", kw.name()),
                ms: g,
                flops: fl,
                bytes: by(xl, yl, wl),
            });
        }
        ConvBenchShape::Pointwise(s, h) => {
            let (xl, wl, yl) = (s.rows * s.cin, s.cin * s.cout, s.rows * s.cout);
            let b = bufs(gpu, xl, wl, yl, s.scratch_len())?;
            let name = format!(
                "conv1x1 {}->{} @{h}x{h} n{}",
                s.cin,
                s.cout,
                s.rows / (h * h)
            );
            let fl = 2.0 * s.macs() as f64;
            let by = |a: usize, b: usize, c: usize| 4.0 * (a + b + c) as f64;
            let f = time_ms(gpu, iters, |r| {
                linear::forward(r, &s, &b.x, &b.w, None, &b.y)
            })?;
            let d = time_ms(gpu, iters, |r| {
                linear::backward_data(r, &s, &b.y, &b.w, &b.dx)
            })?;
            let g = time_ms(gpu, iters, |r| {
                linear::backward_weight(r, &s, &b.x, &b.y, &b.dw, None, Some(&b.scratch))
            })?;
            rows.push(BenchRow {
                name: format!("{name} fwd [gemm]"),
                ms: f,
                flops: fl,
                bytes: by(xl, wl, yl),
            });
            rows.push(BenchRow {
                name: format!("{name} bwd-data [gemm]"),
                ms: d,
                flops: fl,
                bytes: by(yl, wl, xl),
            });
            rows.push(BenchRow {
                name: format!("{name} bwd-weight [igemm]"),
                ms: g,
                flops: fl,
                bytes: by(xl, yl, wl),
            });
        }
    }
    let total = BenchRow {
        name: rows[0]
            .name
            .replace(" fwd ", " fwd+bwd ")
            .replace(" [gemm]", "")
            .replace(" [igemm]", "")
            .replace(" [direct]", ""),
        ms: rows.iter().map(|r| r.ms).sum(),
        flops: rows.iter().map(|r| r.flops).sum(),
        bytes: rows.iter().map(|r| r.bytes).sum(),
    };
    rows.push(total);
    Ok(rows)
}

/// The whole benchmark: every shape at batch `batch`, plus the copy kernel's bandwidth.
/// Prints a table (or JSON lines with `json`) and returns the rows.
pub fn run(gpu: &Gpu, batch: usize, iters: usize, json: bool) -> Result<Vec<BenchRow>> {
    if !json {
        println!(
            "bench conv on {} ({:?}), batch {batch}, median of {iters}",
            gpu.info.name, gpu.info.backend
        );
    }
    let copy = copy_bandwidth(gpu, (batch * 112 * 112 * 96).max(1 << 20), iters)?;
    let mut all = Vec::new();
    for shape in shapes(batch) {
        let rows = bench_shape(gpu, &shape, iters)?;
        if json {
            for r in &rows {
                let v = serde_json::json!({
                    "name": r.name, "ms": r.ms, "gflops": r.gflops(), "gbps": r.gbps(),
                    "flops": r.flops, "bytes": r.bytes, "device": gpu.info.name,
                });
                println!("{v}");
            }
        }
        all.extend(rows);
    }
    if !json {
        print_table(&all, Some(&copy));
        println!(
            "{:<48} {:>10.3} {:>10} {:>9.1}",
            copy.name,
            copy.ms,
            "-",
            copy.gbps()
        );
    }
    Ok(all)
}
