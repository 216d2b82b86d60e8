//! `effnet bench`: kernel benchmarks at EfficientNet shapes against the adapter's measured
//! ceilings (see [`crate::bench`]), the ceilings themselves, a whole model's training and
//! inference throughput ([`super::bench_train`]) and the loader's ([`super::bench_data`]).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{bench_data, bench_train};
use crate::bench::{self, peak};
use crate::cli::precision::{self, PrecisionArg};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::models::{NormChoice, Preset};

/// What `effnet bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchWhat {
    /// Depthwise / G16 grouped convolutions and the 1x1 GEMMs at B0 shapes.
    Conv,
    /// BN+SiLU, GN+SiLU and LN+PN(SiLU) forward and backward at B0 activation shapes.
    Norm,
    /// Every selftest case at its selftest shape (`--op` filters by name).
    Ops,
    /// The adapter's copy bandwidth and f32 FMA rate (cached; `--refresh` re-measures).
    Peak,
    /// Training-step and inference img/s of a whole model, with its GPU memory.
    Train,
    /// Loader img/s on an image folder, per stage and per worker count (--iters batches;
    /// no GPU).
    Data,
}

/// Options of `effnet bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to benchmark.
    #[arg(value_enum)]
    pub what: BenchWhat,
    /// Batch size (128 matches bench/pytorch_conv.py on a big GPU; 2 suits lavapipe).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Timed runs per kernel (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Measure the adapter's peak again instead of using the cached one.
    #[arg(long)]
    pub refresh: bool,
    /// `bench ops`: only cases whose name contains this.
    #[arg(long)]
    pub op: Option<String>,
    /// `bench train`: model preset.
    #[arg(long, default_value_t = Preset { scale: 0, g16: true })]
    pub model: Preset,
    /// `bench train`: normalization.
    #[arg(long, value_enum, default_value_t = NormChoice::LnPn)]
    pub norm: NormChoice,
    /// `bench train` and `bench data`: resolution.
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// `bench data` (and `bench train`, to compare): an image-folder dataset (its
    /// `train/` sub-folder when there is one); see `examples/gen_jpegs.rs`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `bench norm` and `bench train`: storage precision of the activations: auto (mixed
    /// where the adapter has SHADER_F16 and the f16 kernels pass the start-up check), f32,
    /// or mixed (f16 activations and gradients through the kernels' f16 variants; needs
    /// SHADER_F16). The other benchmarks run f32 only and refuse mixed.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// `bench data`: loader worker counts to measure, e.g. `1,2,4` (default: cores - 1).
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
}

/// Run `effnet bench` (on the adapter `opts` picks; `bench data` needs none).
pub fn run(opts: &GpuOptions, a: &BenchArgs) -> Result<()> {
    let gpu = || Gpu::new(opts);
    let (batch, iters) = (a.batch.max(1), a.iters.max(1));
    if a.precision == PrecisionArg::Mixed && !matches!(a.what, BenchWhat::Norm | BenchWhat::Train) {
        return Err(Error::Config(format!(
            "--precision mixed: `effnet bench {}` runs f32 only; `effnet bench norm` and \
             `effnet bench train` take --precision mixed",
            a.what
                .to_possible_value()
                .map_or("?".into(), |v| v.get_name().to_string())
        )));
    }
    match a.what {
        BenchWhat::Data => {
            let d = a.data_dir.clone();
            bench_data::main(d, a.image_size, a.batch, &a.workers, a.iters, a.json)?;
        }
        BenchWhat::Peak => print_peak(&gpu()?, a)?,
        BenchWhat::Conv => {
            let gpu = &gpu()?;
            let p = peak::get(gpu, a.refresh)?;
            bench::conv::run(gpu, batch, iters, a.json, &p)?;
        }
        BenchWhat::Norm => {
            let gpu = &gpu()?;
            let p = peak::get(gpu, a.refresh)?;
            let chosen = precision::choose(gpu, a.precision)?;
            if !a.json {
                println!("{}", chosen.header());
            }
            bench::norm::run(gpu, batch, iters, a.json, &p, chosen.precision)?;
        }
        BenchWhat::Ops => {
            let gpu = &gpu()?;
            let p = peak::get(gpu, a.refresh)?;
            bench::cases::run(gpu, a.op.as_deref(), iters, a.json, &p)?;
        }
        BenchWhat::Train => train(&gpu()?, a, batch, iters)?,
    }
    Ok(())
}

/// `effnet bench peak`: the cached (or measured) ceilings.
fn print_peak(gpu: &Gpu, a: &BenchArgs) -> Result<()> {
    let p = peak::get(gpu, a.refresh)?;
    if a.json {
        let mut v = serde_json::to_value(&p).expect("serializable");
        v["adapter"] = gpu.info.name.clone().into();
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} ({:?}): copy {:.1} GB/s ({:.0} MiB each way), f32 FMA {:.1} GFLOP/s",
        gpu.info.name,
        gpu.info.backend,
        p.copy_gbps,
        p.copy_bytes / 2.0 / 1048576.0,
        p.fma_gflops
    );
    if let Some(path) = peak::cache_path() {
        println!("cached in {}", path.display());
    }
    Ok(())
}

/// `effnet bench train`: a whole model's img/s and dispatches per step, and with
/// `--data-dir` the loader's img/s at the same batch and size beside it.
fn train(gpu: &Gpu, a: &BenchArgs, batch: usize, iters: usize) -> Result<()> {
    let chosen = precision::choose(gpu, a.precision)?;
    if !a.json {
        println!("{}", chosen.header());
    }
    let r = bench_train::run(
        gpu,
        a.model,
        a.norm,
        batch,
        a.image_size,
        iters,
        chosen.precision,
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r).expect("serializable"));
    } else {
        println!(
            "{} ({}, {}) batch {} at {}px on {}: training {:.1} img/s, inference {:.1} \
             img/s, {:.1} MiB of GPU buffers ({:.1} MiB of f32 parameter arenas, {:.1} MiB \
             of activations and their gradients, estimated), first step after {:.2} s, {} \
             dispatches per training step (shader runtime checks {})",
            r.model,
            r.norm,
            r.precision,
            r.batch,
            r.image_size,
            r.adapter,
            r.train_img_s,
            r.infer_img_s,
            r.gpu_bytes as f64 / 1048576.0,
            r.param_bytes as f64 / 1048576.0,
            r.activation_bytes as f64 / 1048576.0,
            r.startup_s,
            r.dispatches,
            if gpu.shader_checks { "on" } else { "off" }
        );
    }
    if a.data_dir.is_some() {
        // The loader at the same batch and size: loader-bound if slower.
        let d = bench_data::main(
            a.data_dir.clone(),
            a.image_size,
            batch,
            &a.workers,
            iters,
            a.json,
        )?;
        for l in d.iter().filter(|l| !a.json && l.img_s < r.train_img_s) {
            println!(
                "loader-bound with {} workers: {:.1} img/s < {:.1} img/s of the step",
                l.workers, l.img_s, r.train_img_s
            );
        }
    }
    Ok(())
}
