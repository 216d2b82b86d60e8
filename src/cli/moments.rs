//! `effnet moments`: moments of signal and sensitivity through depth at initialization
//! (paper 3) on the paper's random networks (`--net`) or through an EfficientNet
//! (`--model`), written as moments.csv, summary.json and PNG figures (docs/moments.md).

use std::path::PathBuf;

use clap::Args;

use crate::data::FASHION_MNIST_DIR;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::{NormChoice, Preset};
use crate::moments::effnet::{self, EffnetConfig};
use crate::moments::{self, output, InputKind, InputSource, Net, NetConfig, Standardize};

/// Options of `effnet moments`.
#[derive(Args, Debug, Clone)]
pub struct MomentsArgs {
    /// Paper network.
    #[arg(long, value_enum, default_value_t = Net::BnFf, conflicts_with = "model")]
    pub net: Net,
    /// Analyse an EfficientNet preset at init instead.
    #[arg(long)]
    pub model: Option<Preset>,
    /// EfficientNet normalization.
    #[arg(long, value_enum, default_value_t = NormChoice::Bn, requires = "model")]
    pub norm: NormChoice,
    /// EfficientNet input resolution.
    #[arg(long, default_value_t = 64, requires = "model")]
    pub image_size: usize,
    /// EfficientNet width multiplier override (e.g. 0.25 for a small model).
    #[arg(long, requires = "model")]
    pub width_mult: Option<f64>,
    /// EfficientNet depth multiplier override.
    #[arg(long, requires = "model")]
    pub depth_mult: Option<f64>,
    /// EfficientNet finite-difference step of the perturbation.
    #[arg(long, default_value_t = 1e-2, requires = "model")]
    pub fd_step: f64,
    /// Layers after the first (feed-forward) or residual units (bn-res).
    #[arg(long, default_value_t = 200)]
    pub depth: usize,
    /// Channels.
    #[arg(long, default_value_t = 512)]
    pub width: usize,
    /// Batch size (one simulation = one batch).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Independent simulations (fresh weights, inputs, perturbation each).
    #[arg(long, default_value_t = 100)]
    pub sims: usize,
    /// Kernel size (odd; 1 = fully connected on flattened images).
    #[arg(long, default_value_t = 3)]
    pub kernel: usize,
    /// Layers per residual branch (bn-res).
    #[arg(long, default_value_t = 2)]
    pub res_depth: usize,
    /// GroupNorm groups (gn-ff).
    #[arg(long, default_value_t = 4)]
    pub groups: usize,
    /// Normalization epsilon.
    #[arg(long, default_value_t = 1e-3)]
    pub eps: f32,
    /// Moments every this many layers (default: depth / 100, at least 1).
    #[arg(long)]
    pub every: Option<usize>,
    /// Skip effective ranks (the costliest statistic).
    #[arg(long)]
    pub no_reff: bool,
    /// Random norm affine parameters gamma ~ N(1, s^2), beta ~ N(0, s^2) (paper 2: 0.2).
    #[arg(long, default_value_t = 0.0)]
    pub affine_std: f64,
    /// Input.
    #[arg(long, value_enum, default_value_t = InputKind::FashionMnist)]
    pub input: InputKind,
    /// Fashion-MNIST folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Input standardization over the batch (default: the paper's, per-feature with
    /// --kernel 1, where the images are flattened into features, and per-channel for
    /// convolutions). EfficientNet inputs are always standardized per channel.
    #[arg(long, value_enum, conflicts_with = "model")]
    pub standardize: Option<Standardize>,
    /// Gaussian input size (default 28, the Fashion-MNIST size).
    #[arg(long, default_value_t = 28)]
    pub input_size: usize,
    /// Seed of weights, inputs and perturbations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/moments")]
    pub out: PathBuf,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

fn input_source(a: &MomentsArgs) -> Result<InputSource> {
    match a.input {
        InputKind::FashionMnist => {
            let dir = a
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
            InputSource::fashion_mnist(&dir)
        }
        InputKind::Gaussian => Ok(InputSource::gaussian(a.input_size, a.input_size, 1)),
    }
}

fn progress(quiet: bool, t0: std::time::Instant) -> impl FnMut(usize, usize) {
    move |done, total| {
        if !quiet && (done == total || done.is_power_of_two() || done % 10 == 0) {
            let el = t0.elapsed().as_secs_f64();
            eprintln!(
                "simulation {done}/{total}: {el:.1} s elapsed, {:.1} s left",
                el / done as f64 * (total - done) as f64
            );
        }
    }
}

/// Run `effnet moments`.
pub fn run(gpu: &Gpu, a: &MomentsArgs) -> Result<()> {
    if a.sims == 0 {
        return Err(Error::Config("--sims must be at least 1".into()));
    }
    let input = input_source(a)?;
    let t0 = std::time::Instant::now();
    if let Some(model) = a.model {
        let mut cfg = EffnetConfig::new(model.name(), a.norm);
        cfg.image_size = a.image_size;
        cfg.batch = a.batch;
        cfg.width_mult = a.width_mult;
        cfg.depth_mult = a.depth_mult;
        cfg.reff = !a.no_reff;
        cfg.fd_step = a.fd_step;
        cfg.seed = a.seed;
        let run = effnet::run_effnet(gpu, &cfg, &input, a.sims, progress(a.quiet, t0))?;
        output::write_effnet(&a.out, &cfg, &run)?;
        let c = run.collapse;
        println!(
            "{} {} at {}px, batch {}, {} sims on {}: {} layers in {:.1} s -> {}",
            cfg.preset,
            cfg.norm.name(),
            cfg.image_size,
            cfg.batch,
            a.sims,
            gpu.info.name,
            run.taps.len(),
            t0.elapsed().as_secs_f64(),
            a.out.display()
        );
        let chi = run.table.means("chi");
        println!(
            "channel-constant share of conv outputs: mean {:.4}, deeper half {:.4}, max {:.4}; \
             of norm outputs {:.4}; chi at the last layer {:.4}",
            c.conv_mean,
            c.conv_deep_half,
            c.conv_max,
            c.norm_mean,
            chi.last().copied().unwrap_or(f64::NAN)
        );
        return Ok(());
    }
    let mut cfg = NetConfig::new(a.net);
    cfg.depth = a.depth;
    cfg.width = a.width;
    cfg.batch = a.batch;
    cfg.kernel = a.kernel;
    cfg.res_depth = a.res_depth;
    cfg.groups = a.groups;
    cfg.eps = a.eps;
    cfg.every = a.every.unwrap_or((a.depth / 100).max(1));
    cfg.reff = !a.no_reff;
    cfg.affine_std = a.affine_std;
    cfg.seed = a.seed;
    cfg.standardize = a.standardize;
    let run = moments::run_net(gpu, &cfg, &input, a.sims, progress(a.quiet, t0))?;
    output::write_net(&a.out, &cfg, &run.table, &run.fits)?;
    let f = &run.fits;
    println!(
        "{} depth {} width {} batch {} k {} {} sims ({}, standardized {}) on {}: {:.1} s -> {}",
        cfg.net.name(),
        cfg.depth,
        cfg.width,
        cfg.batch,
        cfg.kernel,
        a.sims,
        input.kind.name(),
        cfg.standardization().name(),
        gpu.info.name,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    if let Some(w) = run.divergence_warning() {
        eprintln!("warning: {w}");
    }
    println!(
        "chi at depth {}: {:.4e}; ln chi vs depth: slope {:.4} (x{:.4} per layer), R^2 {:.5}; \
         ln chi vs ln depth: slope {:.4}, R^2 {:.5}",
        cfg.depth,
        f.chi_last,
        f.log_chi_vs_depth.slope,
        f.chi_factor_per_layer,
        f.log_chi_vs_depth.r2,
        f.log_chi_vs_log_depth.slope,
        f.log_chi_vs_log_depth.r2
    );
    println!(
        "increments (first rows / deeper half): dchi {:.4} / {:.4}, norm step {:.4} / {:.4}, \
         activation step {:.4} / {:.4}{}",
        f.dchi_first,
        f.dchi_last_half,
        f.dchi_norm_first,
        f.dchi_norm_last_half,
        f.dchi_act_first,
        f.dchi_act_last_half,
        f.tau
            .map_or(String::new(), |t| format!("; power-law tau {t:.4}"))
    );
    println!(
        "reff(x) {:.3} -> {:.3}, reff(dx) {:.3} -> {:.3}, mu4(z) {:.3} -> {:.3}, nu1(|z|) \
         {:.3} -> {:.3}, channel-constant share (conv) {:.4} -> {:.4}",
        f.reff_x.0,
        f.reff_x.1,
        f.reff_dx.0,
        f.reff_dx.1,
        f.mu4_z.0,
        f.mu4_z.1,
        f.nu1_z.0,
        f.nu1_z.1,
        f.share_ch_conv.0,
        f.share_ch_conv.1
    );
    Ok(())
}
