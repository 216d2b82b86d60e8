//! `effnet bench norm`: the fused normalization kernels (BN+SiLU, GN(4)+SiLU and
//! LN+PN(SiLU), forward and backward) at EfficientNet-B0 activation shapes: the selftest's
//! [`NormCase`] prepared at these shapes and timed kernel by kernel. The PN rows include
//! the per-step proxy statistics and their backward (the case composes them, as training
//! does). `bench/pytorch_norm.py` times the same list in PyTorch. With
//! `--precision mixed` the activations (x, y, dy, dx) are f16 through the kernels' f16
//! variants and the rows carry `/f16`; statistics and parameters stay f32.

use super::cases::{time_case, CaseTiming};
use super::{BenchRow, Peak};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Precision};
use crate::ops::act::Act;
use crate::ops::harness::dtype_suffix;
use crate::ops::norm::{NormCase, NormKind, NormSpec};

/// EfficientNet-B0 activation shapes (H*W, C) the norm benchmarks run at.
pub const BENCH_SHAPES: [(usize, usize); 5] = [
    (112 * 112, 32),
    (56 * 56, 144),
    (28 * 28, 240),
    (14 * 14, 480),
    (7 * 7, 1152),
];

/// The three variants timed at each shape: BN+SiLU (training), GN(4)+SiLU and
/// LN+PN(SiLU).
pub fn bench_specs(batch: usize, hw: usize, c: usize) -> [NormSpec; 3] {
    [
        NormSpec::new(batch, hw, c, NormKind::Batch).with_act(Act::Silu),
        NormSpec::new(batch, hw, c, NormKind::Group { groups: 4 }).with_act(Act::Silu),
        NormSpec::new(batch, hw, c, NormKind::layer())
            .with_act(Act::Silu)
            .with_proxy(true),
    ]
}

/// A row label: `bn silu [2,56,56,144]`.
pub fn label(spec: &NormSpec) -> String {
    let side = (spec.hw as f64).sqrt().round() as usize;
    format!(
        "{} {} [{},{side},{side},{}]",
        spec.kind_name(),
        spec.act.name(),
        spec.n,
        spec.c
    )
}

/// The case timed for `spec` (inputs as the selftest draws them, mean 0.5), with
/// activations stored as `dtype`.
pub fn case(spec: NormSpec, dtype: Dtype) -> NormCase {
    NormCase {
        spec,
        offset: 0.5,
        dtype,
    }
}

/// Time every variant at every shape for batch `batch` in `precision`.
pub fn measure(
    gpu: &Gpu,
    batch: usize,
    iters: usize,
    precision: Precision,
) -> Result<Vec<CaseTiming>> {
    precision.check_supported(gpu)?;
    let dtype = precision.activations();
    let mut out = Vec::new();
    for &(hw, c) in &BENCH_SHAPES {
        for spec in bench_specs(batch, hw, c) {
            let name = format!("{}{}", label(&spec), dtype_suffix(dtype));
            out.push(time_case(gpu, &case(spec, dtype), Some(name), 1, iters)?);
        }
    }
    Ok(out)
}

/// `effnet bench norm`: print the table (or one JSON object per row) against `peak`.
pub fn run(
    gpu: &Gpu,
    batch: usize,
    iters: usize,
    json: bool,
    peak: &Peak,
    precision: Precision,
) -> Result<Vec<BenchRow>> {
    let title = format!(
        "norm bench on {} ({:?}), batch {batch}, median of {iters}, precision {}",
        gpu.info.name,
        gpu.info.backend,
        precision.name()
    );
    let timings = measure(gpu, batch, iters, precision)?;
    Ok(super::report(gpu, "norm", &title, timings, json, peak))
}
