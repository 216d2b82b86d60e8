//! The `effnet` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use effnet::{selftest, Gpu, GpuOptions};

#[derive(Parser)]
#[command(
    name = "effnet",
    version,
    about = "Train EfficientNet variants on any GPU with WGSL compute shaders"
)]
struct Cli {
    /// Adapter to use: a case-insensitive substring of its name (see `effnet info`).
    #[arg(long, global = true, env = "EFFNET_ADAPTER")]
    adapter: Option<String>,
    /// Backend(s): vulkan, metal, dx12, gl (comma separated).
    #[arg(long, global = true, env = "WGPU_BACKEND")]
    backend: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List adapters, and show the chosen one with its limits and features.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Train an EfficientNet (the main job); see --help for FixRes fine-tuning.
    Train(Box<effnet::cli::train::TrainArgs>),
    /// Evaluate a checkpoint: top-1, top-5 and the confusion matrix.
    Eval(effnet::cli::train::EvalArgs),
    /// Classify images or an input tensor with timm or effnet weights (top-k, logits).
    Predict(Box<effnet::cli::predict::PredictArgs>),
    /// Write an effnet training checkpoint as timm-named safetensors for PyTorch.
    Export(effnet::cli::predict::ExportArgs),
    /// Time one training step per kernel (timestamp queries).
    Profile(effnet::cli::profile::ProfileArgs),
    /// Moments of signal and sensitivity through depth at initialization (paper 3).
    Moments(Box<effnet::cli::moments::MomentsArgs>),
    /// Print a model's layer table with parameters and multiply-accumulates.
    Model {
        /// Preset: b0..b7 or b0-g16..b7-g16.
        preset: String,
        /// Input resolution (default: the preset's native one).
        #[arg(long)]
        image_size: Option<usize>,
        /// Normalization: bn, gn, ln, ln-pn, gn-pn.
        #[arg(long, default_value = "bn")]
        norm: String,
        /// Output classes.
        #[arg(long, default_value_t = 1000)]
        classes: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time kernels at EfficientNet layer shapes (ms, GFLOP/s, GB/s per shape).
    Bench {
        /// What to benchmark.
        what: BenchWhat,
        /// Batch size (128 matches bench/pytorch_conv.py on a big GPU; 2 suits lavapipe).
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Timed runs per kernel (the median is reported).
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// `bench train`: model preset.
        #[arg(long, default_value = "b0-g16")]
        model: String,
        /// `bench train`: normalization.
        #[arg(long, default_value = "ln-pn")]
        norm: String,
        /// `bench train`: resolution.
        #[arg(long, default_value_t = 224)]
        image_size: usize,
    },
    /// Check every op's GPU forward and backward against the CPU reference.
    Selftest {
        /// Only ops whose name contains this.
        #[arg(long)]
        op: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// What `effnet bench` measures.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BenchWhat {
    /// Depthwise / G16 grouped convolutions and the 1x1 GEMMs at B0 shapes.
    Conv,
    /// BN+SiLU, GN+SiLU and LN+PN(SiLU) forward and backward at B0 activation shapes.
    Norm,
    /// Training-step and inference img/s of a whole model, with its GPU memory.
    Train,
}

fn run(cli: Cli) -> effnet::Result<bool> {
    let opts = GpuOptions {
        adapter: cli.adapter,
        backend: cli.backend,
        shader_checks: None,
    };
    match cli.cmd {
        Cmd::Info { json } => {
            let gpu = Gpu::new(&opts)?;
            let rep = gpu.report()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rep).expect("serializable")
                );
            } else {
                println!("adapters:");
                for a in &rep.adapters {
                    println!(
                        "  {} [{}; {}; {}]",
                        a.name, a.backend, a.device_type, a.driver
                    );
                }
                println!("chosen: {} ({})", rep.chosen.name, rep.chosen.backend);
                let l = &rep.limits;
                println!("limits:");
                println!(
                    "  max_storage_buffer_binding_size {} MiB",
                    l.max_storage_buffer_binding_size >> 20
                );
                println!("  max_buffer_size {} MiB", l.max_buffer_size >> 20);
                println!(
                    "  max_storage_buffers_per_shader_stage {}",
                    l.max_storage_buffers_per_shader_stage
                );
                println!(
                    "  max_compute_workgroups_per_dimension {}",
                    l.max_compute_workgroups_per_dimension
                );
                println!(
                    "  max_compute_workgroup_storage_size {} KiB",
                    l.max_compute_workgroup_storage_size >> 10
                );
                println!(
                    "  max_compute_invocations_per_workgroup {}",
                    l.max_compute_invocations_per_workgroup
                );
                println!(
                    "  subgroup size {}..{}",
                    l.subgroup_size.0, l.subgroup_size.1
                );
                let f = rep.features;
                println!(
                    "features: timestamp_query {}, subgroup {}, shader_f16 {}",
                    f.timestamp_query, f.subgroup, f.shader_f16
                );
            }
            Ok(true)
        }
        Cmd::Train(a) => {
            let gpu = Gpu::new(&opts)?;
            effnet::cli::train::run(&gpu, &a)?;
            Ok(true)
        }
        Cmd::Profile(a) => {
            let gpu = Gpu::new(&opts)?;
            effnet::cli::profile::run(&gpu, &a)?;
            Ok(true)
        }
        Cmd::Moments(a) => {
            let gpu = Gpu::new(&opts)?;
            effnet::cli::moments::run(&gpu, &a)?;
            Ok(true)
        }
        Cmd::Eval(a) => {
            let gpu = Gpu::new(&opts)?;
            effnet::cli::train::eval(&gpu, &a)?;
            Ok(true)
        }
        Cmd::Predict(a) => {
            let gpu = Gpu::new(&opts)?;
            effnet::cli::predict::run(&gpu, &a)?;
            Ok(true)
        }
        Cmd::Export(a) => {
            effnet::cli::predict::export(&a)?;
            Ok(true)
        }
        Cmd::Model {
            preset,
            image_size,
            norm,
            classes,
            json,
        } => {
            let mut cfg = effnet::models::ModelConfig::preset(&preset)?;
            cfg.norm = effnet::models::NormChoice::parse(&norm)?;
            cfg.classes = classes;
            cfg.validate()?;
            let image = image_size.unwrap_or(cfg.resolution);
            let rows = effnet::models::layer_table(&cfg, image);
            let (params, macs) = effnet::models::totals(&cfg, image);
            if json {
                let v = serde_json::json!({
                    "config": cfg, "image_size": image, "params": params, "macs": macs, "layers": rows
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).expect("serializable")
                );
            } else {
                println!("{} ({}) at {image}x{image}", cfg.name, cfg.norm.name());
                println!(
                    "{:<26} {:<22} {:>16} {:>10} {:>12}",
                    "layer", "kind", "output HxWxC", "params", "MACs"
                );
                for r in &rows {
                    println!(
                        "{:<26} {:<22} {:>16} {:>10} {:>12}",
                        r.name,
                        r.kind,
                        format!("{}x{}x{}", r.out[0], r.out[1], r.out[2]),
                        r.params,
                        r.macs
                    );
                }
                println!(
                    "total: {:.2}M parameters, {:.3}G MACs per image",
                    params as f64 / 1e6,
                    macs as f64 / 1e9
                );
            }
            Ok(true)
        }
        Cmd::Bench {
            what,
            batch,
            iters,
            json,
            model,
            norm,
            image_size,
        } => {
            let gpu = Gpu::new(&opts)?;
            match what {
                BenchWhat::Train => {
                    let r = effnet::cli::bench_train::run(
                        &gpu,
                        &model,
                        &norm,
                        batch.max(1),
                        image_size,
                        iters,
                    )?;
                    if json {
                        println!("{}", serde_json::to_string(&r).expect("serializable"));
                    } else {
                        println!(
                            "{} ({}) batch {} at {}px on {}: training {:.1} img/s, inference {:.1} img/s, \
                             {:.1} MiB of GPU buffers, first step after {:.2} s",
                            r.model,
                            r.norm,
                            r.batch,
                            r.image_size,
                            r.adapter,
                            r.train_img_s,
                            r.infer_img_s,
                            r.gpu_bytes as f64 / 1048576.0,
                            r.startup_s
                        );
                    }
                }
                BenchWhat::Conv => {
                    effnet::bench::conv::run(&gpu, batch.max(1), iters.max(1), json)?;
                }
                BenchWhat::Norm => {
                    effnet::bench::norm::run_bench(&gpu, batch.max(1), iters.max(1), json)?;
                }
            }
            Ok(true)
        }
        Cmd::Selftest { op, json } => {
            let gpu = Gpu::new(&opts)?;
            if !json {
                println!("selftest on {} ({:?})", gpu.info.name, gpu.info.backend);
            }
            let results = selftest::run(&gpu, op.as_deref(), |r| {
                if json {
                    println!("{}", serde_json::to_string(r).expect("serializable"));
                } else {
                    println!("{}", selftest::format_line(r));
                }
            })?;
            let failed = results.iter().filter(|r| !r.pass).count();
            if results.is_empty() {
                eprintln!("no op matches {:?}", op.unwrap_or_default());
                return Ok(false);
            }
            if !json {
                println!("{} passed, {} failed", results.len() - failed, failed);
            }
            Ok(failed == 0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("effnet: {e}");
            ExitCode::from(2)
        }
    }
}
