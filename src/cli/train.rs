//! `effnet train` and `effnet eval`: the main job, reduced-resolution training followed by a
//! FixRes-style fine-tune of the head at a higher resolution, and evaluation of a
//! checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::cli::precision::{self, Chosen, PrecisionArg};
use crate::data::Dataset;
use crate::dist::{agree, check_same, hash_bytes, Comm, Shard, Solo};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::interop::ModelName;
use crate::models::efficientnet::EfficientNet;
use crate::models::{ImageSize, ModelConfig, NormChoice};
use crate::nn::model::Trainable;
use crate::train::checkpoint;
use crate::train::optim::Optimizer;
use crate::train::run_dir::{Mode, RunDir};
use crate::train::schedule::Decay;
use crate::train::stop;
use crate::train::trainer::{
    self, AverageSwap, DatasetKind, Parallel, Start, TrainConfig, TrainSummary,
};
use crate::util::safetensors::SafeTensors;

/// The most loader threads `--workers` takes.
const MAX_WORKERS: usize = 256;

/// Optimizer names of `--optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerArg {
    /// SGD with momentum 0.9.
    Sgd,
    /// SGD with Nesterov momentum 0.9.
    #[value(alias = "sgd-nesterov")]
    Nesterov,
    /// RMSProp in TensorFlow's form (decay 0.9, momentum 0.9, eps 1e-3).
    Rmsprop,
    /// AdamW (0.9, 0.999, eps 1e-8) with decoupled weight decay.
    Adamw,
}

impl OptimizerArg {
    /// The optimizer with its default hyper-parameters.
    pub fn optimizer(self) -> Optimizer {
        let name = match self {
            Self::Sgd => "sgd",
            Self::Nesterov => "nesterov",
            Self::Rmsprop => "rmsprop",
            Self::Adamw => "adamw",
        };
        Optimizer::parse(name).expect("every optimizer name parses")
    }
}

/// Decay names of `--schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// Cosine from the peak to 0 over the run.
    Cosine,
    /// x0.97 every 2.4 epochs (the EfficientNet recipe).
    #[value(alias = "exp")]
    Exponential,
    /// Constant after warm-up.
    Constant,
}

impl ScheduleArg {
    /// The decay it names.
    pub fn decay(self) -> Decay {
        match self {
            Self::Cosine => Decay::Cosine,
            Self::Exponential => Decay::Exponential {
                rate: 0.97,
                every: 2.4,
            },
            Self::Constant => Decay::Constant,
        }
    }
}

/// Options of `effnet train`.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = train_help())]
pub struct TrainArgs {
    /// Model: an effnet preset, b0..b7 (depthwise, expansion 6) or b0-g16..b7-g16 (16
    /// channels per group, expansion 4), or a timm name (efficientnet_b0..b7,
    /// efficientnet_b0_gn, efficientnet_b0_g8_gn; see the mapping below).
    #[arg(long, default_value = "b0-g16")]
    pub model: ModelName,
    /// Normalization (default: ln-pn for effnet presets, the named model's for timm
    /// names).
    #[arg(long, value_enum)]
    pub norm: Option<NormChoice>,
    /// GroupNorm (gn, gn-pn): channels per group (timm's `group_size` convention), so a
    /// layer of C channels gets C / N groups; every layer width must be a multiple of N.
    #[arg(long, conflicts_with = "gn_groups")]
    pub gn_group_size: Option<usize>,
    /// GroupNorm (gn, gn-pn): groups per layer (the largest divisor of the layer's
    /// channels not above N; effnet's default is 4).
    #[arg(long)]
    pub gn_groups: Option<usize>,
    /// Width multiplier override (e.g. 0.25 for a tiny model).
    #[arg(long)]
    pub width: Option<f64>,
    /// Depth multiplier override.
    #[arg(long)]
    pub depth: Option<f64>,
    /// Dataset.
    #[arg(long, value_enum, default_value = "fashion-mnist")]
    pub dataset: DatasetKind,
    /// Dataset folder (default for fashion-mnist: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Training resolution: `N` (N x N) or `HxW` (height x width, e.g. 24x40; crops take
    /// that aspect ratio). See the train%32 == test%32 rule below, which holds per side.
    #[arg(long, default_value = "32")]
    pub image_size: ImageSize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Epochs (the run's length unless --max-steps is given).
    #[arg(long, default_value_t = 10.0)]
    pub epochs: f64,
    /// The run's length in steps: when given it replaces --epochs, and the learning-rate
    /// schedule (warm-up, then decay to the end) spans exactly these steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimizerArg,
    /// Peak learning rate (default: 0.1 x batch/256 for SGD, 0.016 x batch/256 for
    /// RMSProp, 2e-3 for AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay, not applied to norm and bias parameters (default: 5e-5 L2 for SGD,
    /// 1e-5 L2 for RMSProp, 0.05 decoupled for AdamW).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Label smoothing, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f64,
    /// Warm-up epochs (linear from 0 to the peak learning rate).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_epochs: f64,
    /// Decay after warm-up.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// Decay of the weight average used for evaluation, in [0, 1) (0 disables it). It
    /// warms up as TensorFlow's ExponentialMovingAverage with num_updates does: update t
    /// (1-based) uses min(decay, (1 + t) / (10 + t)). BatchNorm running statistics are
    /// averaged with the weights.
    #[arg(long, default_value_t = 0.998)]
    pub ema_decay: f64,
    /// Dropout before the classifier, in [0, 1) (default: the preset's).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Final drop-connect rate, in [0, 1).
    #[arg(long, default_value_t = 0.2)]
    pub drop_connect: f64,
    /// Run folder (checkpoint, metrics.jsonl, eval.jsonl, curves.png). A folder that
    /// holds a run is refused unless --resume or --overwrite says what to do with it.
    #[arg(long, default_value = "runs/fashion-mnist")]
    pub run_dir: PathBuf,
    /// Continue from the run folder's checkpoint (an error if it has none). The flags
    /// must match the run's; schedule flags may differ with --allow-schedule-change.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start a new run in a folder that holds one, deleting its checkpoint, metrics and
    /// curves (here and in its finetune-* folders).
    #[arg(long)]
    pub overwrite: bool,
    /// With --resume: accept a different schedule (--lr, --epochs, --max-steps,
    /// --warmup-epochs, --schedule, --weight-decay, --label-smoothing, --ema-decay); the
    /// change is recorded in the checkpoint's config_history.
    #[arg(long, requires = "resume")]
    pub allow_schedule_change: bool,
    /// Read the loss back every N steps (N >= 1).
    #[arg(long, default_value_t = 20)]
    pub log_every: usize,
    /// Checkpoint every N steps (N >= 1), and at every epoch end, at the end and on
    /// Ctrl-C / SIGTERM.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Evaluate every N epochs (0: only at the end; a fraction such as 0.25 evaluates
    /// mid-epoch, every round(N x steps per epoch) steps).
    #[arg(long, default_value_t = 1.0)]
    pub eval_every: f64,
    /// Evaluate on at most N test images.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// After training, fine-tune the head at this resolution with evaluation
    /// preprocessing (FixRes; SPEC §B.4), `N` or `HxW`. Must satisfy train % 32 ==
    /// finetune % 32 (per side).
    #[arg(long)]
    pub finetune_size: Option<ImageSize>,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 1.0)]
    pub finetune_epochs: f64,
    /// Stages (1..7) trained with the head when fine-tuning, e.g. `6,7` (the paper's
    /// `block6`, `block7` option); default: the head only.
    #[arg(long, value_delimiter = ',')]
    pub finetune_stages: Vec<usize>,
    /// Fine-tuning learning rate (cosine schedule).
    #[arg(long, default_value_t = 0.01)]
    pub finetune_lr: f64,
    /// Loader worker threads decoding and augmenting batches (default: available cores
    /// minus one). Any count gives the same batches.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Skip image files that cannot be read or decoded (each named once, all counted)
    /// instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_images: bool,
    /// Start from these weights instead of the seed: a timm state dict (safetensors, e.g.
    /// from `effnet export` or timm's `save_file(model.state_dict())`) or an effnet training
    /// checkpoint (file or run folder; its weight average). Every tensor with the model's
    /// shape is loaded; the classifier is re-initialized when the class count differs and
    /// a 3-channel stem is summed for 1-channel images; what was loaded, re-initialized or
    /// left out is printed. The file is read at step 0 only (--resume continues from the
    /// run's checkpoint).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Freeze the stem and stages 1..=N (0..7; 0: nothing): no gradient and no update for
    /// their parameters. Their norms still run in training mode (BatchNorm on batch
    /// statistics, updating the running statistics).
    #[arg(long, default_value_t = 0)]
    pub freeze_stages: usize,
    /// BatchNorm in eval mode while training (timm's frozen BN for fine-tuning): the
    /// running statistics stay as loaded and normalize the batch; gradients flow through
    /// them as constants; `num_batches_tracked` does not advance. BatchNorm models only.
    #[arg(long)]
    pub freeze_bn: bool,
    /// Data-parallel runs (`mpirun -np K effnet train`, built with `--features mpi`):
    /// compare a hash of the parameters across the ranks every N steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub hash_every: usize,
    /// Data-parallel runs: seconds a rank waits in one collective for the others before
    /// it stops the run (a rank that hung or died); longer than rank 0's longest
    /// checkpoint or evaluation.
    #[arg(long, default_value_t = 600.0)]
    pub collective_timeout: f64,
    /// Storage precision: auto (mixed where the adapter has SHADER_F16 and the f16 kernels
    /// pass a start-up check, else f32), f32, or mixed (f16 activations and gradients, f32
    /// weights and accumulation, dynamic loss scaling). Default: auto for a new run, the
    /// run's own precision for --resume.
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
}

/// The long help of `effnet train`: FixRes, then the model-name mapping.
fn train_help() -> String {
    format!("{FIXRES_HELP}\n\n{}", crate::interop::names::mapping_help())
}

const FIXRES_HELP: &str = "\
Reduced-resolution training and fine-tuning (paper 1, FixRes):
  Train at a lower --image-size, then fine-tune only the head (conv_head, its norm and the
  classifier; add stages with --finetune-stages 6,7) for --finetune-epochs at
  --finetune-size with evaluation preprocessing, and
  evaluate at that size. Choose sizes with train % 32 == test % 32 (e.g. 160 -> 224,
  176 -> 240, 196 -> 260, 224 -> 288; 16 -> 48 or 32 -> 64 for 28-px Fashion-MNIST): the
  network's stride-32 grid then lines up the same way at both sizes, and the apparent
  object size seen in training (random crops enlarge objects) matches the one at test.
  effnet refuses sizes that break the rule. Non-square sizes (HxW, e.g. 24x40 -> 56x72)
  keep it per side.";

/// Build the model configuration from the arguments.
pub fn model_config(a: &TrainArgs, classes: usize, in_channels: usize) -> Result<ModelConfig> {
    let mut bad = Vec::new();
    for (flag, v) in [("width", a.width), ("depth", a.depth)] {
        if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
            bad.push(format!("--{flag} {v}: must be a finite number > 0"));
        }
    }
    for (flag, v) in [
        ("dropout", a.dropout),
        ("drop-connect", Some(a.drop_connect)),
    ] {
        if let Some(v) = v.filter(|v| !(0.0..1.0).contains(v)) {
            bad.push(format!("--{flag} {v}: must be in [0, 1)"));
        }
    }
    if !bad.is_empty() {
        return Err(Error::Config(bad.join("; ")));
    }
    let mut cfg = a.model.config();
    match (a.model, a.norm) {
        (ModelName::Timm(t), Some(n)) if n != cfg.norm => {
            return Err(Error::Config(format!(
                "--norm {}: {} is the timm model with {} norm; for another norm use the \
                 preset {} (effnet's conventions) with --norm {}",
                n.name(),
                t.name,
                cfg.norm.name(),
                t.preset,
                n.name()
            )))
        }
        (ModelName::Preset(_), n) => cfg.norm = n.unwrap_or(NormChoice::LnPn),
        _ => {}
    }
    if a.gn_group_size.is_some() || a.gn_groups.is_some() {
        if !matches!(cfg.norm, NormChoice::Gn | NormChoice::GnPn) {
            return Err(Error::Config(format!(
                "--gn-group-size / --gn-groups set GroupNorm's groups; the model's norm is {} \
                 (use --norm gn or gn-pn)",
                cfg.norm.name()
            )));
        }
        if let Some(g) = a.gn_group_size {
            if g == 0 {
                return Err(Error::Config("--gn-group-size 0: must be >= 1".into()));
            }
            cfg.gn_group_size = Some(g);
        }
        if let Some(g) = a.gn_groups {
            if g == 0 {
                return Err(Error::Config("--gn-groups 0: must be >= 1".into()));
            }
            cfg.gn_groups = g;
            cfg.gn_group_size = None;
        }
    }
    if a.freeze_bn && cfg.norm != NormChoice::Bn {
        return Err(Error::Config(format!(
            "--freeze-bn: the model's norm is {}; only BatchNorm has running statistics to \
             freeze",
            cfg.norm.name()
        )));
    }
    if let Some(w) = a.width {
        cfg.width = w;
        cfg.name = format!("{}-w{w}", cfg.name);
    }
    if let Some(d) = a.depth {
        cfg.depth = d;
    }
    if let Some(d) = a.dropout {
        cfg.dropout = d;
    }
    cfg.drop_connect = a.drop_connect;
    cfg.classes = classes;
    cfg.in_channels = in_channels;
    cfg.validate()?;
    Ok(cfg)
}

/// The run configuration from the arguments, validated ([`TrainConfig::validate`]).
pub fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let optimizer = a.optimizer.optimizer();
    let lr = a.lr.unwrap_or(match optimizer {
        Optimizer::Sgd { .. } => 0.1 * a.batch as f64 / 256.0,
        Optimizer::Rmsprop { .. } => 0.016 * a.batch as f64 / 256.0,
        Optimizer::Adamw { .. } => 2e-3,
    });
    let weight_decay = a.weight_decay.unwrap_or(match optimizer {
        Optimizer::Sgd { .. } => 5e-5,
        Optimizer::Rmsprop { .. } => 1e-5,
        Optimizer::Adamw { .. } => 0.05,
    });
    if a.workers == Some(0) {
        return Err(Error::Config(
            "--workers must be at least 1 (leave it out for the default)".into(),
        ));
    }
    // Each worker is a thread holding a batch of pixels; past a few per core they only
    // contend (more than one per core helps only storage that stalls).
    if let Some(w) = a.workers.filter(|&w| w > MAX_WORKERS) {
        return Err(Error::Config(format!(
            "--workers {w} is more than {MAX_WORKERS} loader threads (each holds a batch of \
             pixels); this machine has {} cores: leave --workers out for the default",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )));
    }
    let cfg = TrainConfig {
        dataset: a.dataset,
        data_dir: a.data_dir.clone(),
        image_size: a.image_size,
        batch: a.batch,
        epochs: a.epochs,
        max_steps: a.max_steps,
        optimizer,
        lr,
        weight_decay,
        label_smoothing: a.label_smoothing,
        warmup_epochs: a.warmup_epochs,
        decay: a.schedule.decay(),
        ema_decay: a.ema_decay,
        log_every: a.log_every,
        checkpoint_every: a.checkpoint_every,
        eval_every: a.eval_every,
        eval_limit: a.eval_limit,
        seed: a.seed,
        head_only: false,
        eval_preprocessing: false,
        workers: a.workers.unwrap_or(0),
        skip_bad_images: a.skip_bad_images,
        init: a.init.clone(),
        freeze_stages: a.freeze_stages,
        freeze_bn: a.freeze_bn,
        // Resolved on the adapter by `run` (`auto`, and a resume without the flag).
        precision: match a.precision {
            Some(PrecisionArg::Mixed) => Precision::Mixed,
            _ => Precision::F32,
        },
        loss_scale: None,
    };
    if a.freeze_stages > 7 {
        return Err(Error::Config(format!(
            "--freeze-stages {}: EfficientNet has 7 stages (0..7 may be frozen)",
            a.freeze_stages
        )));
    }
    if let Some(s) = a.finetune_stages.iter().find(|&&s| s <= a.freeze_stages) {
        return Err(Error::Config(format!(
            "--finetune-stages {s} is frozen by --freeze-stages {}",
            a.freeze_stages
        )));
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The fine-tuning phase's configuration (FixRes): the head at `size` with evaluation
/// preprocessing, a cosine schedule without warm-up or weight decay.
pub fn finetune_config(a: &TrainArgs, cfg: &TrainConfig, size: ImageSize) -> Result<TrainConfig> {
    check_fixres_size(a.image_size, size)?;
    if let Some(s) = a.finetune_stages.iter().find(|&&s| !(1..=7).contains(&s)) {
        return Err(Error::Config(format!(
            "--finetune-stages {s}: EfficientNet stages are 1..7"
        )));
    }
    let mut f = cfg.clone();
    f.image_size = size;
    f.head_only = true;
    f.eval_preprocessing = true;
    f.epochs = a.finetune_epochs;
    f.max_steps = None;
    f.lr = a.finetune_lr;
    f.warmup_epochs = 0.0;
    f.decay = Decay::Cosine;
    f.weight_decay = 0.0;
    f.validate().map_err(|e| {
        Error::Config(
            e.to_string()
                .replace("--epochs", "--finetune-epochs")
                .replace("--lr", "--finetune-lr")
                .replace("--image-size", "--finetune-size"),
        )
    })?;
    Ok(f)
}

/// [`check_fixres`] per side, for `H x W` sizes.
pub fn check_fixres_size(train: ImageSize, test: ImageSize) -> Result<()> {
    let side = |t: usize, s: usize, name: &str| {
        check_fixres(t, s).map_err(|e| match (train.is_square() && test.is_square(), e) {
            (false, Error::Config(m)) => Error::Config(format!("{name}: {m}")),
            (_, e) => e,
        })
    };
    side(train.h, test.h, "height")?;
    side(train.w, test.w, "width")
}

/// Check the FixRes size rule between the training size and a test (or fine-tune) size.
pub fn check_fixres(train: usize, test: usize) -> Result<()> {
    if train % 32 != test % 32 {
        let below = test - (test + 32 - train % 32) % 32;
        let above = below + 32;
        let near = if below >= 8 {
            format!("{below} or {above}")
        } else {
            above.to_string()
        };
        return Err(Error::Config(format!(
            "size {test} breaks the train % 32 == test % 32 rule with the training size \
             {train} ({} vs {}); the nearest sizes that keep it are {near}",
            train % 32,
            test % 32,
        )));
    }
    Ok(())
}

/// The precision of `effnet train`: `--precision` when given; on `--resume` without it,
/// the run's own (from its checkpoint); else `auto`.
pub fn train_precision(gpu: &Gpu, a: &TrainArgs) -> Result<Chosen> {
    if let (None, true) = (a.precision, a.resume) {
        let ckpt = trainer::checkpoint_path(&a.run_dir);
        if ckpt.is_file() {
            let st = SafeTensors::load(&ckpt)?;
            let stored = st
                .metadata
                .get("train_config")
                .and_then(|s| serde_json::from_str::<TrainConfig>(s).ok())
                .map(|c| c.precision);
            if let Some(p) = stored {
                let arg = match p {
                    Precision::F32 => PrecisionArg::F32,
                    Precision::Mixed => PrecisionArg::Mixed,
                };
                return precision::choose(gpu, arg).map(|c| Chosen {
                    why: "the run's own, resumed".into(),
                    ..c
                });
            }
        }
    }
    precision::choose(gpu, a.precision.unwrap_or(PrecisionArg::Auto))
}

/// The run folder mode the flags ask for.
fn mode_of(a: &TrainArgs) -> Mode {
    if a.resume {
        Mode::Resume
    } else if a.overwrite {
        Mode::Overwrite
    } else {
        Mode::Fresh
    }
}

fn opened(dir: &RunDir, quiet: bool) {
    if !quiet {
        for p in &dir.removed_temps {
            println!(
                "removed {}, a partial checkpoint left by a killed writer",
                p.display()
            );
        }
    }
}

/// Run `effnet train`: lock the run folder for the whole process (training and
/// fine-tuning), stop cleanly on the first SIGINT/SIGTERM, train, then fine-tune.
pub fn run(gpu: &Gpu, a: &TrainArgs) -> Result<Vec<(String, TrainSummary)>> {
    run_ranked(gpu, a, &Solo)
}

/// [`run`] as one rank of `comm` (`mpirun -np K effnet train`, see `docs/distributed.md`):
/// `--batch` is the global batch, split evenly over the ranks; rank 0 holds the run folder
/// and prints; every rank checks that the others run the same binary and configuration.
/// With a world of one this is [`run`].
pub fn run_ranked(
    gpu: &Gpu,
    a: &TrainArgs,
    comm: &dyn Comm,
) -> Result<Vec<(String, TrainSummary)>> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let root = rank == 0;
    let shard = Shard::of(a.batch, rank, ranks)?;
    let mut cfg = train_config(a)?;
    let chosen = train_precision(gpu, a)?;
    cfg.precision = chosen.precision;
    // Every flag is checked before anything is trained, the fine-tune's included.
    let fcfg = a
        .finetune_size
        .map(|ft| finetune_config(a, &cfg, ft))
        .transpose()?;
    // Only rank 0 holds (and writes into) the run folder.
    let run_dir = agree(
        comm,
        "opening the run folder",
        root.then(|| RunDir::open(&a.run_dir, mode_of(a)))
            .transpose(),
    )?;
    if let Some(d) = &run_dir {
        opened(d, false);
    }
    stop::install()?;
    let data = agree(
        comm,
        "loading the data",
        (|| {
            let (train_ds, test_ds) = trainer::load_datasets(&cfg)?;
            let stats = train_ds.channel_stats(cfg.skip_bad_images)?;
            Ok((train_ds, test_ds, stats))
        })(),
    )?;
    let (train_ds, test_ds, (mean, std)) = data;
    let classes = train_ds.classes.len();
    let mcfg = model_config(a, classes, train_ds.c)?;
    let (params, macs) = crate::models::totals(&mcfg, cfg.image_size);
    if root {
        println!(
            "effnet: {} ({}) {:.2}M params, {:.1} MMACs/image at {}px, batch {}, {} on {} ({:?})",
            mcfg.name,
            mcfg.norm.name(),
            params as f64 / 1e6,
            macs as f64 / 1e6,
            cfg.image_size,
            cfg.batch,
            clap::ValueEnum::to_possible_value(&a.optimizer)
                .map_or_else(String::new, |v| v.get_name().to_string()),
            gpu.info.name,
            gpu.info.backend
        );
        println!(
            "data: {} train / {} test images, {} classes; run folder {}; {}",
            train_ds.len(),
            test_ds.len(),
            classes,
            a.run_dir.display(),
            chosen.header()
        );
    }
    let meta = serde_json::to_string(&mcfg).expect("json");
    if ranks > 1 {
        check_same_run(comm, &cfg, &fcfg, &meta, (&mean, &std), train_ds.len())?;
    }
    let (train_ds, test_ds) = (Arc::new(train_ds), Arc::new(test_ds));
    let mut model = agree(
        comm,
        "building the model",
        EfficientNet::with_precision(gpu, &mcfg, shard.len, cfg.image_size, cfg.precision),
    )?;
    model.set_shard(shard)?;
    let mut out = Vec::new();
    let start = if a.resume {
        Start::Resume {
            allow_schedule_change: a.allow_schedule_change,
        }
    } else if let Some(init) = &a.init {
        // The seed's initialization first: what the file does not hold keeps it.
        trainer::initialize_fresh(gpu, &mut model, &cfg)?;
        let r = crate::interop::init::init_from_file(gpu, &mut model, init)?;
        if root {
            println!("{}", r.summary());
        }
        Start::Keep
    } else {
        Start::Fresh
    };
    let par = Parallel {
        comm,
        shard,
        hash_every: a.hash_every,
    };
    let s = train_on(
        gpu,
        &mut model,
        &cfg,
        (&train_ds, &test_ds, (&mean, &std)),
        (&a.run_dir, run_dir.as_ref()),
        start,
        (&meta, classes),
        &par,
    )?;
    if root {
        report("train", &s);
    }
    out.push(("train".to_string(), s));
    if let (Some(ft), Some(fcfg)) = (a.finetune_size, fcfg) {
        // FixRes: a model at the fine-tune resolution, initialized from the weight average
        // of the trained run, training the head with evaluation preprocessing. A resumed
        // run resumes its fine-tune too when that had written a checkpoint.
        let dir = a.run_dir.join(format!("finetune-{ft}"));
        // Rank 0 decides (its run folder has the checkpoints).
        let resume_ft = a.resume && trainer::checkpoint_path(&dir).is_file();
        let resume_ft = comm.gather_u64("the fine-tune's start", resume_ft as u64)?[0] != 0;
        let fdir = agree(
            comm,
            "opening the fine-tune's run folder",
            root.then(|| {
                RunDir::open(
                    &dir,
                    if resume_ft {
                        Mode::Resume
                    } else {
                        Mode::Overwrite
                    },
                )
            })
            .transpose(),
        )?;
        if let Some(d) = &fdir {
            opened(d, false);
        }
        let mut fmodel = agree(
            comm,
            "building the fine-tune's model",
            EfficientNet::with_precision(gpu, &mcfg, shard.len, ft, fcfg.precision),
        )?;
        fmodel.set_shard(shard)?;
        fmodel.set_finetune_stages(&a.finetune_stages)?;
        let fstart = if resume_ft {
            start
        } else {
            // Rank 0 reads the trained run; the trainer gives the other ranks its weights.
            let init = run_dir.as_ref().map(|d| -> Result<()> {
                let src = SafeTensors::load(&d.checkpoint())?;
                init_from_average(gpu, &mut fmodel, &src)
            });
            agree(comm, "loading the trained run", init.transpose())?;
            Start::Keep
        };
        if root {
            println!(
                "fine-tuning the head at {ft}px for {} epochs (FixRes)",
                a.finetune_epochs
            );
        }
        let s = train_on(
            gpu,
            &mut fmodel,
            &fcfg,
            (&train_ds, &test_ds, (&mean, &std)),
            (&dir, fdir.as_ref()),
            fstart,
            (&meta, classes),
            &par,
        )?;
        if root {
            report("finetune", &s);
        }
        out.push((format!("finetune-{ft}"), s));
    }
    Ok(out)
}

/// Data the trainer reads: the training and test sets and the channel statistics.
type Data<'a> = (&'a Arc<Dataset>, &'a Arc<Dataset>, (&'a [f32], &'a [f32]));

/// One training phase, on one process or as one rank of several.
#[allow(clippy::too_many_arguments)]
fn train_on(
    gpu: &Gpu,
    model: &mut EfficientNet,
    cfg: &TrainConfig,
    (train_ds, test_ds, stats): Data,
    (dir, run_dir): (&Path, Option<&RunDir>),
    start: Start,
    (meta, classes): (&str, usize),
    par: &Parallel,
) -> Result<TrainSummary> {
    match run_dir {
        Some(d) if par.comm.size() == 1 => trainer::train(
            gpu,
            model,
            cfg,
            train_ds.clone(),
            test_ds,
            stats,
            d,
            start,
            meta,
            classes,
            false,
        ),
        _ => trainer::train_parallel(
            gpu,
            model,
            cfg,
            train_ds.clone(),
            test_ds,
            stats,
            (dir, run_dir),
            start,
            meta,
            classes,
            par.comm.rank() != 0,
            par,
        ),
    }
}

/// Refuse to start unless every rank runs the same binary with the same configuration
/// and data (a rank started with other flags, another build, or another dataset copy would
/// train something else and silently corrupt the average).
fn check_same_run(
    comm: &dyn Comm,
    cfg: &TrainConfig,
    fcfg: &Option<TrainConfig>,
    model_meta: &str,
    (mean, std): (&[f32], &[f32]),
    images: usize,
) -> Result<()> {
    let exe = std::env::current_exe()
        .and_then(std::fs::read)
        .map(|b| hash_bytes(&b))
        .unwrap_or(0);
    check_same(
        comm,
        "the effnet binary",
        "Run the same build on every rank (one path on a shared folder, or the same \
         commit built the same way on each host)",
        exe,
    )?;
    let text = serde_json::json!({
        "train": cfg,
        "finetune": fcfg,
        "model": model_meta,
        "mean": mean,
        "std": std,
        "images": images,
    })
    .to_string();
    check_same(
        comm,
        "the configuration (flags, model, dataset statistics)",
        "Give every rank the same flags and the same dataset (mpirun passes one command \
         line to all ranks; check per-host EFFNET_* variables and dataset copies)",
        hash_bytes(text.as_bytes()),
    )
}

/// Copy a checkpoint's weight average (or weights) into a model's weights and average, its
/// averaged state tensors (or raw ones) into both the state and its average, and its
/// `num_batches_tracked`; then rebuild the derived state. The trainer resets the optimizer
/// state.
fn init_from_average(gpu: &Gpu, model: &mut EfficientNet, src: &SafeTensors) -> Result<()> {
    let store = model.store();
    for (i, d) in store.defs.iter().enumerate() {
        let t = src
            .tensors
            .get(&format!("ema/{}", d.name))
            .or_else(|| src.tensors.get(&format!("w/{}", d.name)))
            .ok_or_else(|| Error::Config(format!("checkpoint lacks {}", d.name)))?;
        let id = crate::nn::ParamId(i);
        gpu.write_f32(store.w(id), &t.data)?;
        gpu.write_f32(store.tensor_of(&store.ema, id), &t.data)?;
    }
    for ((name, t), (_, avg)) in model.state_tensors().iter().zip(&model.state_average()) {
        let v = src
            .tensors
            .get(&format!("state_ema/{name}"))
            .or_else(|| src.tensors.get(&format!("state/{name}")));
        if let Some(v) = v {
            gpu.write_f32(t, &v.data)?;
            gpu.write_f32(avg, &v.data)?;
        }
    }
    let tracked = src
        .metadata
        .get(checkpoint::META_BATCHES_TRACKED)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    model.set_batches_tracked(tracked);
    model.rebuild_derived(gpu)
}

fn report(what: &str, s: &TrainSummary) {
    print!(
        "{what}: {} steps, {:.1} img/s over {:.1} s of training ({:.0}% of it waiting for \
         data, {} loader workers), first step after {:.2} s",
        s.steps,
        s.img_per_s,
        s.train_seconds,
        100.0 * s.data_wait,
        s.workers,
        s.first_step_seconds
    );
    match &s.eval {
        Some(e) => println!(
            "; test top-1 {:.2}%, top-5 {:.2}%",
            100.0 * e.top1,
            100.0 * e.top5
        ),
        None => println!(),
    }
}

/// Options of `effnet eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Run folder or checkpoint file.
    pub checkpoint: PathBuf,
    /// Evaluate the raw weights instead of their average.
    #[arg(long)]
    pub raw: bool,
    /// Resolution, `N` or `HxW` (default: the run's training resolution); must keep the
    /// FixRes rule train % 32 == test % 32 with it, per side.
    #[arg(long)]
    pub image_size: Option<ImageSize>,
    /// Dataset folder, for a checkpoint evaluated on another machine (default: the one
    /// the run trained on, as recorded in the checkpoint).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on at most N images (N >= 1).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Storage precision of the activations (see `effnet train --help`; the checkpoint's
    /// weights are f32 whatever the run's precision).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
}

/// Parse a `[0.1, 0.2]` metadata list of `n` finite floats.
fn float_list(path: &Path, key: &str, s: &str, n: usize) -> Result<Vec<f32>> {
    let v: Option<Vec<f32>> = s
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .map(|s| s.split(',').map(|v| v.trim().parse::<f32>().ok()).collect())
        .and_then(|v: Option<Vec<f32>>| v)
        .filter(|v| v.len() == n && v.iter().all(|x| x.is_finite()));
    v.ok_or_else(|| {
        Error::file(
            path,
            format!(
                "bad {key} metadata '{s}' (want {n} finite numbers): the checkpoint is corrupt"
            ),
        )
    })
}

/// Run `effnet eval`: top-1, top-5 and the confusion matrix.
pub fn eval(gpu: &Gpu, a: &EvalArgs) -> Result<trainer::EvalResult> {
    if a.limit == Some(0) {
        return Err(Error::Config("--limit 0: must be >= 1".into()));
    }
    let path = if a.checkpoint.is_dir() {
        trainer::checkpoint_path(&a.checkpoint)
    } else {
        a.checkpoint.clone()
    };
    let st = SafeTensors::load(&path)?;
    let get = |k: &str| {
        st.metadata.get(k).cloned().ok_or_else(|| {
            Error::file(&path, format!("not an effnet training checkpoint (no {k})"))
        })
    };
    let mut cfg: TrainConfig = serde_json::from_str(&get("train_config")?)
        .map_err(|e| Error::file(&path, format!("bad train_config: {e}")))?;
    cfg.validate().map_err(|e| {
        Error::file(
            &path,
            format!(
                "the stored training configuration is invalid ({e}): the checkpoint is corrupt"
            ),
        )
    })?;
    let mcfg: ModelConfig = serde_json::from_str(&get("model_config")?)
        .map_err(|e| Error::file(&path, format!("bad model_config: {e}")))?;
    let c = mcfg.in_channels;
    let mean = float_list(&path, "norm_mean", &get("norm_mean")?, c)?;
    let std = float_list(&path, "norm_std", &get("norm_std")?, c)?;
    if let Some(s) = a.image_size {
        if !s.in_range() {
            return Err(Error::Config(format!(
                "--image-size {s}: each side must be in {}..={} pixels",
                crate::models::size::MIN_SIDE,
                crate::models::size::MAX_SIDE
            )));
        }
        check_fixres_size(cfg.image_size, s)
            .map_err(|e| Error::Config(format!("--image-size: {e}")))?;
        cfg.image_size = s;
    }
    if let Some(d) = &a.data_dir {
        cfg.data_dir = Some(d.clone());
    }
    let (_, test) = trainer::load_datasets(&cfg).map_err(|e| {
        if a.data_dir.is_none() {
            Error::Config(format!(
                "{e}\n(this is the dataset the run trained on; to evaluate on a copy \
                 elsewhere, give its folder with --data-dir)"
            ))
        } else {
            e
        }
    })?;
    let classes = trainer::class_names(&st.metadata).unwrap_or_else(|| test.classes.clone());
    if classes != test.classes {
        let k = (0..)
            .find(|&k| classes.get(k) != test.classes.get(k))
            .unwrap_or(0);
        return Err(Error::file(
            &path,
            format!(
                "the checkpoint was trained on {} classes, the test set has {}; class {k} is \
                 {:?} in the checkpoint and {:?} in the test set: evaluate on the dataset it \
                 was trained on",
                classes.len(),
                test.classes.len(),
                classes.get(k).map_or("(none)", |s| s.as_str()),
                test.classes.get(k).map_or("(none)", |s| s.as_str()),
            ),
        ));
    }
    let test = Arc::new(test);
    let chosen = precision::choose(gpu, a.precision)?;
    println!("{}", chosen.header());
    let size = cfg.image_size;
    let mut model = EfficientNet::with_precision(gpu, &mcfg, cfg.batch, size, chosen.precision)?;
    checkpoint::load(&path, gpu, &mut model)?;
    if !a.raw {
        AverageSwap::new(gpu, &model)?.swap(gpu, &model)?;
    }
    let lc = trainer::loader_config(&cfg, &test, false);
    let r = trainer::evaluate(
        gpu,
        &mut model,
        &test,
        &lc,
        a.limit,
        mcfg.classes,
        &mean,
        &std,
    )?;
    println!(
        "{}: {} images at {}px ({} weights): top-1 {:.2}%  top-5 {:.2}%  loss {:.4}",
        path.display(),
        r.images,
        cfg.image_size,
        if a.raw { "raw" } else { "averaged" },
        100.0 * r.top1,
        100.0 * r.top5,
        r.loss
    );
    println!("confusion matrix (rows: true class, columns: predicted):");
    for (i, row) in r.confusion.iter().enumerate() {
        let name = classes.get(i).cloned().unwrap_or_default();
        println!(
            "{:>12} {}",
            name,
            row.iter().map(|v| format!("{v:>5}")).collect::<String>()
        );
    }
    Ok(r)
}
