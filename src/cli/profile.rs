//! `effnet profile`: one training step timed per kernel with timestamp queries, sorted by
//! time, with forward / backward / optimizer totals and host recording time, and each
//! kernel's GFLOP/s and GB/s against the adapter's ceilings (`effnet bench peak`): the
//! fractions of the f32 FMA rate, of the copy bandwidth, and the whole step's fraction of
//! its roofline floor, the sum over dispatches of max(flops / FMA rate, bytes / copy
//! bandwidth).

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Args;

use crate::bench::peak;
use crate::cli::precision::{self, PrecisionArg};
use crate::error::{Error, Result};
use crate::gpu::{Cost, Gpu, Recorder};
use crate::models::efficientnet::EfficientNet;
use crate::models::{ImageSize, NormChoice, Preset};
use crate::nn::model::Trainable;
use crate::train::loss_scale::LossScaler;
use crate::train::optim::{self, Optimizer};
use crate::util::Rng;

/// Options of `effnet profile`.
#[derive(Args, Debug, Clone)]
pub struct ProfileArgs {
    /// Model preset.
    #[arg(long, default_value_t = Preset { scale: 0, g16: true })]
    pub model: Preset,
    /// Normalization.
    #[arg(long, value_enum, default_value_t = NormChoice::LnPn)]
    pub norm: NormChoice,
    /// Width multiplier override.
    #[arg(long)]
    pub width: Option<f64>,
    /// Depth multiplier override.
    #[arg(long)]
    pub depth: Option<f64>,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Resolution.
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// Classes.
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    /// Rows of the per-kernel table to print.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Measure the adapter's peak again instead of using the cached one.
    #[arg(long)]
    pub refresh_peak: bool,
    /// Storage precision (see `effnet train --help`).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
}

/// Run the profile.
pub fn run(gpu: &Gpu, a: &ProfileArgs) -> Result<()> {
    if !gpu.features.timestamp_query {
        return Err(Error::Config(format!(
            "adapter '{}' has no timestamp queries; per-kernel profiling needs them",
            gpu.info.name
        )));
    }
    let peak = peak::get(gpu, a.refresh_peak)?;
    let mut cfg = a.model.config();
    cfg.norm = a.norm;
    if let Some(w) = a.width {
        cfg.width = w;
    }
    if let Some(d) = a.depth {
        cfg.depth = d;
    }
    cfg.classes = a.classes;
    let chosen = precision::choose(gpu, a.precision)?;
    println!("{}", chosen.header());
    let t_build = Instant::now();
    let size = ImageSize::square(a.image_size);
    let mut m = EfficientNet::with_precision(gpu, &cfg, a.batch, size, chosen.precision)?;
    let opt = Optimizer::parse("nesterov")?;
    let scaler = LossScaler::for_precision(gpu, chosen.precision, &opt, 1)?;
    m.set_loss_scale(scaler.as_ref().map(|s| s.state.clone()));
    let mut rng = Rng::new(1);
    m.store().initialize(gpu, &mut rng, 0.0)?;
    let x: Vec<f32> = (0..m.input().len()).map(|_| rng.normal() as f32).collect();
    gpu.write_f32(m.input(), &x)?;
    let labels: Vec<u32> = (0..a.batch).map(|i| (i % a.classes) as u32).collect();
    gpu.write_u32(m.labels(), &labels)?;
    gpu.write_f32(m.loss_weights(), &vec![1.0 / a.batch as f32; a.batch])?;
    let segs = m.store().segments.clone();
    let record =
        |m: &mut EfficientNet, rec: &mut Recorder, rng: &mut Rng| -> Result<(usize, usize)> {
            rec.set_tag("forward+loss+backward");
            m.record_train_step(rec, rng, 0.1, false)?;
            let nfb = rec.dispatch_count();
            rec.set_tag("optimizer");
            let (s, sc) = (m.store(), scaler.as_ref());
            optim::update_step(rec, sc, &opt, &segs, s, 0.01, 1e-5, 1)?;
            m.record_after_update(rec)?;
            // The weight average and the loss scale, as the trainer updates them every step.
            optim::ema_step(rec, sc, &s.w.chunks, &s.ema.chunks, 0.999)?;
            if let Some(sc) = sc {
                sc.record_update(rec)?;
            }
            Ok((nfb, rec.dispatch_count()))
        };
    // Warm-up step (builds every pipeline).
    let mut rec = Recorder::new(gpu);
    record(&mut m, &mut rec, &mut rng)?;
    rec.submit()?.wait(gpu)?;
    let startup = t_build.elapsed().as_secs_f64();
    // Timed step.
    let t_rec = Instant::now();
    let mut rec = Recorder::new(gpu).with_profiling(true);
    let (nfb, n) = record(&mut m, &mut rec, &mut rng)?;
    let host_ms = t_rec.elapsed().as_secs_f64() * 1e3;
    let t_gpu = Instant::now();
    let timings = rec.submit()?.timings(gpu)?;
    let wall_ms = t_gpu.elapsed().as_secs_f64() * 1e3;
    let mut by: BTreeMap<&str, (f64, usize, Cost)> = BTreeMap::new();
    let mut fwd_bwd = 0.0;
    let mut opt_ms = 0.0;
    let mut floor_ms = 0.0;
    for (i, t) in timings.iter().enumerate() {
        let e = by.entry(t.label).or_default();
        e.0 += t.ns / 1e6;
        e.1 += 1;
        e.2 = e.2.plus(t.cost);
        floor_ms += peak.floor_ms(t.cost);
        if i < nfb {
            fwd_bwd += t.ns / 1e6;
        } else {
            opt_ms += t.ns / 1e6;
        }
    }
    let total: f64 = timings.iter().map(|t| t.ns).sum::<f64>() / 1e6;
    let work: Cost = timings.iter().map(|t| t.cost).sum();
    println!(
        "{} ({}) batch {} at {}px on {} ({:?}), shader runtime checks {}: {} dispatches ({} timed)",
        cfg.name,
        cfg.norm.name(),
        a.batch,
        a.image_size,
        gpu.info.name,
        gpu.info.backend,
        if gpu.shader_checks { "on" } else { "off" },
        n,
        timings.len()
    );
    println!(
        "GPU time {total:.2} ms (forward+loss+backward {fwd_bwd:.2}, optimizer+proxy+average {opt_ms:.2}); \
         host recording {host_ms:.2} ms; submit-to-done wall {wall_ms:.2} ms; \
         start-up (build + first step) {startup:.2} s"
    );
    println!(
        "ceilings: copy {:.1} GB/s, f32 FMA {:.1} GFLOP/s; the step: {:.1} GFLOP, {:.2} GB, \
         {:.1} GFLOP/s, {:.1} GB/s; roofline floor {floor_ms:.2} ms = {:.1}% of the GPU time",
        peak.copy_gbps,
        peak.fma_gflops,
        work.flops / 1e9,
        work.bytes / 1e9,
        work.flops / total.max(1e-12) / 1e6,
        work.bytes / total.max(1e-12) / 1e6,
        100.0 * floor_ms / total.max(1e-12)
    );
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!(
        "{:<30} {:>6} {:>10} {:>7} {:>9} {:>8} {:>6} {:>6} {:>6}",
        "kernel", "calls", "ms", "share", "GFLOP/s", "GB/s", "%fma", "%copy", "%roof"
    );
    for (k, (ms, c, cost)) in rows.iter().take(a.top) {
        let gf = cost.flops / ms.max(1e-12) / 1e6;
        let gb = cost.bytes / ms.max(1e-12) / 1e6;
        println!(
            "{k:<30} {c:>6} {ms:>10.3} {:>6.1}% {gf:>9.1} {gb:>8.1} {:>6.1} {:>6.1} {:>6.1}",
            100.0 * ms / total.max(1e-12),
            100.0 * gf / peak.fma_gflops,
            100.0 * gb / peak.copy_gbps,
            100.0 * peak.floor_ms(*cost) / ms.max(1e-12)
        );
    }
    let mut slow: Vec<_> = timings.iter().enumerate().collect();
    slow.sort_by(|a, b| b.1.ns.total_cmp(&a.1.ns));
    println!("slowest dispatches:");
    for (i, t) in slow.iter().take(10) {
        println!(
            "  #{i:<4} {:<30} {:>9.3} ms  {:>8.1} GFLOP/s {:>7.1} GB/s  {}",
            t.label,
            t.ns / 1e6,
            t.cost.flops / t.ns.max(1.0) / 1e3,
            t.cost.bytes / t.ns.max(1.0) / 1e3,
            t.tag
        );
    }
    Ok(())
}
