//! `effnet bench norm`: the fused normalization kernels at EfficientNet-B0 activation
//! shapes.

use crate::bench::{copy_bandwidth, time_ms, BenchRow};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::act::Act;
use crate::ops::harness::run_gpu;
use crate::ops::norm::{backward, forward, NormGrads, NormKind, NormParams, NormSpec};
use crate::ops::proxy_norm::{self, ProxyGrads, ProxyParams, PROXY_EPS};
use crate::util::Rng;

/// EfficientNet-B0 activation shapes (H*W, C) the norm benchmarks run at.
pub const BENCH_SHAPES: [(usize, usize); 5] = [
    (112 * 112, 32),
    (56 * 56, 144),
    (28 * 28, 240),
    (14 * 14, 480),
    (7 * 7, 1152),
];

/// The three variants the benchmarks time at each shape: BN+SiLU (training), GN(4)+SiLU
/// and LN+PN(SiLU).
pub fn bench_specs(batch: usize, hw: usize, c: usize) -> [NormSpec; 3] {
    [
        NormSpec::new(batch, hw, c, NormKind::Batch).with_act(Act::Silu),
        NormSpec::new(batch, hw, c, NormKind::Group { groups: 4 }).with_act(Act::Silu),
        NormSpec::new(batch, hw, c, NormKind::layer())
            .with_act(Act::Silu)
            .with_proxy(true),
    ]
}

/// One normalization layer with every tensor its forward and backward touch allocated
/// (random x and dy), for benchmarks.
pub struct BenchLayer {
    /// The layer.
    pub spec: NormSpec,
    x: Tensor,
    y: Tensor,
    dy: Tensor,
    dx: Tensor,
    saved: Tensor,
    scratch: Tensor,
    /// gamma, beta, running mean, running var, mu~, s~, pshift, pscale.
    params: [Tensor; 8],
    /// dgamma, dbeta, dmu~, ds~, dpshift, dpscale, mu~ out, s~ out.
    grads: [Tensor; 8],
}

impl BenchLayer {
    /// Allocate and fill the tensors, and run one training forward (so `saved` is valid).
    pub fn new(gpu: &Gpu, spec: NormSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        let (n, c) = (spec.numel(), spec.c);
        let mut rng = Rng::new(seed);
        let mut randn = |len: usize, mean: f32, std: f32| -> Vec<f32> {
            (0..len).map(|_| mean + std * rng.normal() as f32).collect()
        };
        let x = gpu.upload(&randn(n, 0.5, 1.5), &[n])?;
        let dy = gpu.upload(&randn(n, 0.0, 1.0), &[n])?;
        let chan = |v: Vec<f32>| gpu.upload(&v, &[c]);
        let params = [
            chan(randn(c, 1.0, 0.2))?,
            chan(randn(c, 0.0, 0.2))?,
            chan(vec![0.0; c])?,
            chan(vec![1.0; c])?,
            chan(vec![0.2; c])?,
            chan(vec![1.7; c])?,
            chan(randn(c, 0.0, 0.1))?,
            chan(randn(c, 0.0, 0.1))?,
        ];
        let grads = (0..8)
            .map(|_| gpu.zeros(&[c]))
            .collect::<Result<Vec<_>>>()?
            .try_into()
            .expect("eight tensors");
        let layer = Self {
            spec,
            x,
            y: gpu.zeros(&[n])?,
            dy,
            dx: gpu.zeros(&[n])?,
            saved: gpu.zeros(&[spec.saved_len()])?,
            scratch: gpu.zeros(&[spec.scratch_len()])?,
            params,
            grads,
        };
        run_gpu(gpu, |r| layer.record_forward(r))?;
        Ok(layer)
    }

    fn norm_params(&self) -> NormParams<'_> {
        let p = &self.params;
        NormParams {
            gamma: Some(&p[0]),
            beta: Some(&p[1]),
            running_mean: Some(&p[2]),
            running_var: Some(&p[3]),
            proxy_mu: Some(&p[4]),
            proxy_s: Some(&p[5]),
        }
    }

    fn proxy_params(&self) -> ProxyParams<'_> {
        let p = &self.params;
        ProxyParams {
            act: self.spec.act,
            c: self.spec.c,
            eps: PROXY_EPS,
            gamma: Some(&p[0]),
            beta: Some(&p[1]),
            pshift: &p[6],
            pscale: &p[7],
        }
    }

    /// Record the training forward; with Proxy Norm, preceded by the per-step proxy
    /// statistics (written to separate tensors so the timed inputs stay fixed).
    pub fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        let s = &self.spec;
        if s.proxy.is_some() {
            proxy_norm::proxy_stats(r, &self.proxy_params(), &self.grads[6], &self.grads[7])?;
        }
        let p = self.norm_params();
        forward(r, s, true, &self.x, &p, &self.y, &self.saved, &self.scratch)
    }

    /// Record the backward; with Proxy Norm, followed by the proxy statistics backward.
    pub fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        let s = &self.spec;
        let g = &self.grads;
        let grads = NormGrads {
            dgamma: Some(&g[0]),
            dbeta: Some(&g[1]),
            dmu: Some(&g[2]),
            ds: Some(&g[3]),
        };
        let p = self.norm_params();
        backward(
            r,
            s,
            &self.x,
            &self.dy,
            &p,
            &self.saved,
            &self.dx,
            &grads,
            &self.scratch,
        )?;
        if s.proxy.is_some() {
            let pg = ProxyGrads {
                dgamma: Some(&g[0]),
                dbeta: Some(&g[1]),
                dpshift: &g[4],
                dpscale: &g[5],
            };
            proxy_norm::proxy_stats_backward(r, &self.proxy_params(), &g[2], Some(&g[3]), &pg)?;
        }
        Ok(())
    }

    /// Bytes a forward must move: x read and y written once.
    pub fn forward_bytes(&self) -> f64 {
        8.0 * self.spec.numel() as f64
    }

    /// Bytes a backward must move: x and dy read and dx written once.
    pub fn backward_bytes(&self) -> f64 {
        12.0 * self.spec.numel() as f64
    }
}

/// Benchmark [`bench_specs`] forward and backward at [`BENCH_SHAPES`] for batch `batch`,
/// `iters` timed runs each (median), plus the copy kernel over the largest activation,
/// measured in the same run. GB/s counts the bytes of [`BenchLayer::forward_bytes`] /
/// [`BenchLayer::backward_bytes`] (the fused kernels read x, and dy, twice: once to reduce,
/// once elementwise). The PN rows include the per-step proxy statistics and their backward.
/// Returns (copy row, rows).
pub fn bench(gpu: &Gpu, batch: usize, iters: usize) -> Result<(BenchRow, Vec<BenchRow>)> {
    let largest = BENCH_SHAPES
        .iter()
        .map(|(hw, c)| batch * hw * c)
        .max()
        .unwrap_or(1);
    let copy = copy_bandwidth(gpu, largest, iters)?;
    let mut rows = Vec::new();
    for &(hw, c) in &BENCH_SHAPES {
        let side = (hw as f64).sqrt().round() as usize;
        for spec in bench_specs(batch, hw, c) {
            let layer = BenchLayer::new(gpu, spec, 1)?;
            let name = format!(
                "{} {} [{batch},{side},{side},{c}]",
                spec.kind_name(),
                spec.act.name()
            );
            let fwd = time_ms(gpu, iters, |r| layer.record_forward(r))?;
            rows.push(BenchRow {
                name: format!("{name} fwd"),
                ms: fwd,
                flops: 0.0,
                bytes: layer.forward_bytes(),
            });
            let bwd = time_ms(gpu, iters, |r| layer.record_backward(r))?;
            rows.push(BenchRow {
                name: format!("{name} bwd"),
                ms: bwd,
                flops: 0.0,
                bytes: layer.backward_bytes(),
            });
        }
    }
    Ok((copy, rows))
}

/// `effnet bench norm`: run [`bench()`] and print the table (or one JSON object per row,
/// the copy kernel first).
pub fn run_bench(gpu: &Gpu, batch: usize, iters: usize, json: bool) -> Result<()> {
    let (copy, rows) = bench(gpu, batch, iters)?;
    if json {
        for r in std::iter::once(&copy).chain(&rows) {
            let v = serde_json::json!({
                "bench": "norm",
                "adapter": gpu.info.name,
                "name": r.name,
                "ms": r.ms,
                "bytes": r.bytes,
                "gbps": r.gbps(),
                "of_copy": r.gbps() / copy.gbps(),
            });
            println!("{v}");
        }
    } else {
        println!(
            "norm bench on {} ({:?}), batch {batch}, median of {iters}",
            gpu.info.name, gpu.info.backend
        );
        crate::bench::print_table(std::slice::from_ref(&copy), None);
        crate::bench::print_table(&rows, Some(&copy));
    }
    Ok(())
}
