//! Throughput measurement shared by `effnet bench` and the criterion benches: time a
//! recorded piece of GPU work (GPU timestamps where the adapter has them, else wall clock
//! around submit-and-wait) and express it as GFLOP/s and GB/s beside a plain copy kernel
//! measured on the same adapter.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{Gpu, Recorder};
use crate::ops::act::{self, Act};

pub mod conv;
pub mod norm;

/// One measured row.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// What was measured (op and shape).
    pub name: String,
    /// Median milliseconds per run.
    pub ms: f64,
    /// Floating-point operations per run (multiply-add = 2).
    pub flops: f64,
    /// Bytes that must move per run (each input read once, each output written once).
    pub bytes: f64,
}

impl BenchRow {
    /// Achieved GFLOP/s.
    pub fn gflops(&self) -> f64 {
        self.flops / self.ms / 1e6
    }
    /// Achieved GB/s.
    pub fn gbps(&self) -> f64 {
        self.bytes / self.ms / 1e6
    }
}

/// Median time in ms of `record` (which records one run), over `iters` runs after one
/// warm-up. Uses per-dispatch GPU timestamps summed over the run when available.
pub fn time_ms(
    gpu: &Gpu,
    iters: usize,
    mut record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<f64> {
    // Warm-up (builds pipelines, faults in memory).
    let mut rec = Recorder::new(gpu);
    record(&mut rec)?;
    rec.submit()?.wait(gpu)?;
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let mut rec = Recorder::new(gpu).with_profiling(true);
        record(&mut rec)?;
        let t0 = Instant::now();
        let sub = rec.submit()?;
        let timings = sub.timings(gpu)?;
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        let gpu_ms: f64 = timings.iter().map(|t| t.ns).sum::<f64>() / 1e6;
        samples.push(if timings.is_empty() || gpu_ms <= 0.0 {
            wall
        } else {
            gpu_ms
        });
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(samples[samples.len() / 2])
}

/// The reference bandwidth: a plain elementwise pass (identity activation, read + write)
/// over `n` floats.
pub fn copy_bandwidth(gpu: &Gpu, n: usize, iters: usize) -> Result<BenchRow> {
    let x = gpu.zeros(&[n])?;
    let y = gpu.zeros(&[n])?;
    let ms = time_ms(gpu, iters, |r| act::forward(r, Act::Identity, &x, &y))?;
    Ok(BenchRow {
        name: format!("copy[{n}]"),
        ms,
        flops: 0.0,
        bytes: 8.0 * n as f64,
    })
}

/// Print rows as a table (with the share of the copy kernel's bandwidth when given).
pub fn print_table(rows: &[BenchRow], copy: Option<&BenchRow>) {
    println!(
        "{:<48} {:>10} {:>10} {:>9} {:>8}",
        "kernel", "ms", "GFLOP/s", "GB/s", "of copy"
    );
    for r in rows {
        let share = copy
            .map(|c| format!("{:.0}%", 100.0 * r.gbps() / c.gbps()))
            .unwrap_or_default();
        println!(
            "{:<48} {:>10.3} {:>10.1} {:>9.1} {:>8}",
            r.name,
            r.ms,
            r.gflops(),
            r.gbps(),
            share
        );
    }
}
