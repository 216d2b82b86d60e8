//! Benchmarks: the selftest's harness cases ([`crate::ops::OpCase`]) prepared at model
//! shapes and timed kernel by kernel, as ggml's test-backend-ops perf mode does. Each
//! dispatch declares its FLOPs and bytes when it is recorded ([`crate::gpu::Cost`]), so
//! every row reports GFLOP/s, GB/s, the fractions of the adapter's two ceilings
//! ([`peak`]: copy bandwidth and f32 FMA rate, measured once and cached) and of the
//! roofline floor `max(flops / peak FLOP/s, bytes / peak bandwidth)`.
//!
//! `effnet bench conv | norm | ops | peak` and the criterion benches in `benches/` run this
//! code; `effnet profile` uses the same roofline over a whole training step.
//!
//! Times are GPU timestamps (one per dispatch) where the adapter has them, else the wall
//! clock around submit-and-wait of the whole pass (then there are no per-kernel rows).
//! Every figure is the median over the timed runs, after one warm-up.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{Cost, Gpu, Recorder};

pub mod cases;
pub mod conv;
pub mod norm;
pub mod peak;

pub use peak::Peak;

/// One measured row.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// What was measured (op, shape, pass, kernel).
    pub name: String,
    /// Median milliseconds per run.
    pub ms: f64,
    /// Floating-point operations per run (multiply-add = 2), as the launchers declare.
    pub flops: f64,
    /// Bytes that must move per run (each input read once, each output written once).
    pub bytes: f64,
    /// The declared work of each dispatch the row sums (empty for a single dispatch): its
    /// roofline floor is the sum of theirs, since each dispatch runs at its own bound.
    #[serde(skip)]
    pub parts: Vec<Cost>,
}

impl BenchRow {
    /// A row for `cost` measured at `ms`.
    pub fn new(name: impl Into<String>, ms: f64, cost: Cost) -> Self {
        Self {
            name: name.into(),
            ms,
            flops: cost.flops,
            bytes: cost.bytes,
            parts: Vec::new(),
        }
    }
    /// A row summing several dispatches of declared work `parts`, measured at `ms`.
    pub fn summed(name: impl Into<String>, ms: f64, parts: Vec<Cost>) -> Self {
        let mut row = Self::new(name, ms, parts.iter().copied().sum());
        row.parts = parts;
        row
    }
    /// The least time the row's work needs at the adapter's ceilings, ms: the sum over its
    /// dispatches of max(flops / FMA rate, bytes / copy bandwidth).
    pub fn floor_ms(&self, peak: &Peak) -> f64 {
        if self.parts.is_empty() {
            peak.floor_ms(self.cost())
        } else {
            self.parts.iter().map(|c| peak.floor_ms(*c)).sum()
        }
    }
    /// Achieved GFLOP/s.
    pub fn gflops(&self) -> f64 {
        self.flops / self.ms / 1e6
    }
    /// Achieved GB/s.
    pub fn gbps(&self) -> f64 {
        self.bytes / self.ms / 1e6
    }
    /// The declared work.
    pub fn cost(&self) -> Cost {
        Cost {
            flops: self.flops,
            bytes: self.bytes,
        }
    }
    /// Fraction of the roofline floor reached: the least time the work needs at the
    /// adapter's ceilings over the time it took (1 = at the roofline).
    pub fn roofline(&self, peak: &Peak) -> f64 {
        self.floor_ms(peak) / self.ms
    }
    /// The row as one JSON object (with the ceilings' fractions when `peak` is given).
    pub fn json(&self, peak: Option<&Peak>, extra: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name, "ms": self.ms, "flops": self.flops, "bytes": self.bytes,
            "gflops": self.gflops(), "gbps": self.gbps(),
        });
        if let Some(p) = peak {
            v["of_fma"] = (self.gflops() / p.fma_gflops).into();
            v["of_copy"] = (self.gbps() / p.copy_gbps).into();
            v["of_roofline"] = self.roofline(p).into();
        }
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }
}

/// One dispatch of a timed pass.
#[derive(Clone, Debug)]
pub struct TimedKernel {
    /// Kernel entry point.
    pub label: &'static str,
    /// Median GPU time, ms.
    pub ms: f64,
    /// Declared work.
    pub cost: Cost,
}

/// A timed pass: its total and, with timestamps, each dispatch.
#[derive(Clone, Debug)]
pub struct Timed {
    /// Median time of the whole pass, ms (sum of the dispatches' GPU times, or wall
    /// clock without timestamps).
    pub total_ms: f64,
    /// The pass's summed declared work.
    pub cost: Cost,
    /// Each dispatch's declared work, in order (known with or without timestamps).
    pub parts: Vec<Cost>,
    /// Each dispatch in order (empty without timestamp queries).
    pub kernels: Vec<TimedKernel>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Time `record` (which records one run of some GPU work): one warm-up run, then `iters`
/// timed runs; medians per dispatch and of the total.
pub fn time_dispatches(
    gpu: &Gpu,
    iters: usize,
    mut record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<Timed> {
    // Warm-up (builds pipelines, faults in memory).
    let mut rec = Recorder::new(gpu);
    record(&mut rec)?;
    let costs: Vec<_> = rec.costs().to_vec();
    rec.submit()?.wait(gpu)?;
    let mut totals = Vec::with_capacity(iters.max(1));
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); costs.len()];
    for _ in 0..iters.max(1) {
        let mut rec = Recorder::new(gpu).with_profiling(true);
        record(&mut rec)?;
        let t0 = Instant::now();
        let timings = rec.submit()?.timings(gpu)?;
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        if timings.len() == costs.len() && !timings.is_empty() {
            for (k, t) in timings.iter().enumerate() {
                per[k].push(t.ns / 1e6);
            }
            totals.push(timings.iter().map(|t| t.ns).sum::<f64>() / 1e6);
        } else {
            totals.push(wall);
        }
    }
    let kernels = if per.iter().all(|v| v.len() == totals.len()) && !per.is_empty() {
        per.iter_mut()
            .zip(&costs)
            .map(|(v, (label, cost))| TimedKernel {
                label,
                ms: median(v),
                cost: *cost,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Timed {
        total_ms: median(&mut totals),
        cost: costs.iter().map(|(_, c)| *c).sum(),
        parts: costs.iter().map(|(_, c)| *c).collect(),
        kernels,
    })
}

/// Print rows as a table: time, GFLOP/s, GB/s, and with `peak` the fractions of the FMA
/// rate, of the copy bandwidth and of the roofline floor.
pub fn print_table(rows: &[BenchRow], peak: Option<&Peak>) {
    println!(
        "{:<64} {:>9} {:>9} {:>8} {:>6} {:>6} {:>6}",
        "kernel", "ms", "GFLOP/s", "GB/s", "%fma", "%copy", "%roof"
    );
    for r in rows {
        let pct = |v: f64| format!("{:.1}", 100.0 * v);
        let (f, c, l) = match peak {
            Some(p) => (
                pct(r.gflops() / p.fma_gflops),
                pct(r.gbps() / p.copy_gbps),
                pct(r.roofline(p)),
            ),
            None => Default::default(),
        };
        println!(
            "{:<64} {:>9.3} {:>9.1} {:>8.1} {:>6} {:>6} {:>6}",
            r.name,
            r.ms,
            r.gflops(),
            r.gbps(),
            f,
            c,
            l
        );
    }
}

/// Print a benchmark's title, the peak line and the table of `timings` against `peak` (or,
/// with `json`, one JSON object per row tagged with `bench`), and return the rows.
pub fn report(
    gpu: &Gpu,
    bench: &str,
    title: &str,
    timings: Vec<cases::CaseTiming>,
    json: bool,
    peak: &Peak,
) -> Vec<BenchRow> {
    if !json {
        println!("{title}");
        print_peak(gpu, peak);
    }
    let mut all = Vec::new();
    for t in timings {
        let rows = t.rows();
        if json {
            for r in &rows {
                let extra = serde_json::json!({"bench": bench, "adapter": gpu.info.name});
                println!("{}", r.json(Some(peak), extra));
            }
        }
        all.extend(rows);
    }
    if !json {
        print_table(&all, Some(peak));
    }
    all
}

/// Print the peak line that heads every table.
pub fn print_peak(gpu: &Gpu, peak: &Peak) {
    println!(
        "{} ({:?}): copy {:.1} GB/s, f32 FMA {:.1} GFLOP/s (effnet bench peak; cached)",
        gpu.info.name, gpu.info.backend, peak.copy_gbps, peak.fma_gflops
    );
}
