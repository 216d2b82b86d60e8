//! The `effnet` command line: global adapter options and one subcommand, each implemented
//! in `effnet::cli`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use effnet::cli;
use effnet::{Gpu, GpuOptions};

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
    /// Build shaders with wgpu's runtime checks (bounds clamping, loop counters, guarded
    /// division): slower, for debugging. Off by default; `EFFNET_SHADER_CHECKS=1` also
    /// turns them on (`0`, `false`, `no`, `off` or empty leave them off).
    #[arg(long, global = true)]
    shader_checks: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List adapters, and show the chosen one with its limits and features.
    Info(cli::info::InfoArgs),
    /// Train an EfficientNet (the main job); see --help for FixRes fine-tuning.
    Train(Box<cli::train::TrainArgs>),
    /// Evaluate a checkpoint: top-1, top-5 and the confusion matrix.
    Eval(cli::train::EvalArgs),
    /// Classify images or an input tensor with timm or effnet weights (top-k, logits).
    Predict(Box<cli::predict::PredictArgs>),
    /// One training step's logits, loss, every gradient (timm names, PyTorch layouts) and
    /// running statistics as safetensors, to compare with PyTorch (llm.c's debug state).
    Grads(Box<cli::grads::GradsArgs>),
    /// Write an effnet training checkpoint as timm-named safetensors for PyTorch.
    Export(cli::predict::ExportArgs),
    /// Time one training step per kernel (timestamp queries) against the adapter's peaks.
    Profile(cli::profile::ProfileArgs),
    /// Moments of signal and sensitivity through depth at initialization (paper 3).
    Moments(Box<cli::moments::MomentsArgs>),
    /// The papers' comparisons, one command each: norms, fixres, moments (docs/papers.md).
    Reproduce(Box<cli::reproduce::ReproduceArgs>),
    /// Print a model's layer table with parameters and multiply-accumulates.
    Model(cli::model::ModelArgs),
    /// Time kernels at EfficientNet layer shapes against the adapter's measured peaks
    /// (conv, norm, ops), measure those peaks (peak), or a whole model's img/s (train).
    Bench(cli::bench::BenchArgs),
    /// Check every op's GPU forward and backward against the CPU reference.
    Selftest(cli::selftest::SelftestArgs),
}

fn run(cli: Cli) -> effnet::Result<bool> {
    let opts = GpuOptions {
        adapter: cli.adapter,
        backend: cli.backend,
        // Without the flag, `Gpu::new` reads EFFNET_SHADER_CHECKS.
        shader_checks: cli.shader_checks.then_some(true),
        masked_features: wgpu::Features::empty(),
    };
    let gpu = || Gpu::new(&opts);
    // Commands that return values (summaries, predictions) print them themselves; the
    // values are for library callers.
    match cli.cmd {
        Cmd::Info(a) => cli::info::run(&opts, &a)?,
        // Under mpirun (several ranks): data-parallel training, each rank on its adapter.
        Cmd::Train(a) if effnet::dist::launcher_size().is_some_and(|n| n > 1) => {
            cli::train_mpi::run(&opts, &a)?;
        }
        Cmd::Train(a) => {
            cli::train::run(&gpu()?, &a)?;
        }
        Cmd::Reproduce(a) => {
            cli::reproduce::run(&gpu()?, &a)?;
        }
        Cmd::Eval(a) => {
            cli::train::eval(&gpu()?, &a)?;
        }
        Cmd::Predict(a) => {
            cli::predict::run(&gpu()?, &a)?;
        }
        Cmd::Grads(a) => {
            cli::grads::run(&gpu()?, &a)?;
        }
        Cmd::Export(a) => {
            cli::predict::export(&a)?;
        }
        Cmd::Profile(a) => cli::profile::run(&gpu()?, &a)?,
        Cmd::Moments(a) => cli::moments::run(&gpu()?, &a)?,
        Cmd::Model(a) => cli::model::run(&a)?,
        Cmd::Bench(a) => cli::bench::run(&opts, &a)?,
        Cmd::Selftest(a) => return cli::selftest::run(&gpu()?, &a),
    }
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("effnet: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
