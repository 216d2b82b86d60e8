//! Timing one harness case: its inputs drawn as the selftest draws them, its GPU tensors
//! prepared once ([`crate::ops::OpCase::prepare`]), then its forward and its backward
//! timed separately, dispatch by dispatch. `effnet bench ops` runs every registered case
//! at its selftest shape this way; `bench conv` and `bench norm` run the same case types
//! at EfficientNet shapes.

use super::{time_dispatches, BenchRow, Timed};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::{HostTensor, OpCase};
use crate::util::Rng;

/// A timed case: forward and backward.
#[derive(Clone, Debug)]
pub struct CaseTiming {
    /// Row label (the case's name unless the caller gives a shorter one).
    pub name: String,
    /// The forward dispatches.
    pub forward: Timed,
    /// The backward dispatches (nothing for ops whose forward writes the gradient).
    pub backward: Timed,
}

impl CaseTiming {
    /// Rows: one per dispatch of each pass (named `<name> fwd <kernel>`), then a total per
    /// pass (`<name> fwd`, `<name> bwd`) and for both (`<name> fwd+bwd`).
    pub fn rows(&self) -> Vec<BenchRow> {
        let mut rows = Vec::new();
        for (pass, t) in [("fwd", &self.forward), ("bwd", &self.backward)] {
            if t.cost.flops == 0.0 && t.cost.bytes == 0.0 && t.kernels.is_empty() {
                continue;
            }
            if t.kernels.len() > 1 {
                for k in &t.kernels {
                    rows.push(BenchRow::new(
                        format!("{} {pass} {}", self.name, k.label),
                        k.ms,
                        k.cost,
                    ));
                }
            }
            let label = match t.kernels.as_slice() {
                [k] => format!("{} {pass} {}", self.name, k.label),
                _ => format!("{} {pass}", self.name),
            };
            rows.push(BenchRow::summed(label, t.total_ms, t.parts.clone()));
        }
        if rows.len() > 1 {
            let mut parts = self.forward.parts.clone();
            parts.extend_from_slice(&self.backward.parts);
            rows.push(BenchRow::summed(
                format!("{} fwd+bwd", self.name),
                self.forward.total_ms + self.backward.total_ms,
                parts,
            ));
        }
        rows
    }
}

/// Time `case` with the inputs and output gradients drawn from `seed`: `iters` timed runs
/// of each pass after a warm-up forward and backward (which also builds the pipelines and
/// fills what the backward reads).
pub fn time_case(
    gpu: &Gpu,
    case: &dyn OpCase,
    name: Option<String>,
    seed: u64,
    iters: usize,
) -> Result<CaseTiming> {
    let mut rng = Rng::new(seed);
    let inputs: Vec<HostTensor> = case
        .inputs(&mut rng)
        .into_iter()
        .map(|i| i.tensor)
        .collect();
    let dy: Vec<HostTensor> = case
        .output_shapes(&inputs)
        .iter()
        .map(|s| HostTensor::randn(s, 1.0, &mut rng))
        .collect();
    let p = case.prepare(gpu, &inputs, Some(&dy))?;
    drop(inputs);
    drop(dy);
    let forward = time_dispatches(gpu, iters, |r| p.record_forward(r))?;
    let backward = time_dispatches(gpu, iters, |r| p.record_backward(r))?;
    Ok(CaseTiming {
        name: name.unwrap_or_else(|| case.name()),
        forward,
        backward,
    })
}

/// `effnet bench ops`: every harness case whose name contains `filter` (all when `None`),
/// at its selftest shape, timed as the other benchmarks time theirs.
pub fn run(
    gpu: &Gpu,
    filter: Option<&str>,
    iters: usize,
    json: bool,
    peak: &super::Peak,
) -> Result<Vec<BenchRow>> {
    if !json {
        println!(
            "bench ops (the selftest's cases) on {} ({:?}), median of {iters}",
            gpu.info.name, gpu.info.backend
        );
        super::print_peak(gpu, peak);
    }
    let mut all = Vec::new();
    for case in crate::ops::cases() {
        if filter.is_some_and(|f| !case.name().contains(f)) {
            continue;
        }
        let rows = time_case(gpu, case.as_ref(), None, crate::selftest::SEED, iters)?.rows();
        if json {
            for r in &rows {
                let extra = serde_json::json!({"bench": "ops", "adapter": gpu.info.name});
                println!("{}", r.json(Some(peak), extra));
            }
        }
        all.extend(rows);
    }
    if !json {
        super::print_table(&all, Some(peak));
    }
    Ok(all)
}
