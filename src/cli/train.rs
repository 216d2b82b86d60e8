//! `effnet train` and `effnet eval`: the main job, reduced-resolution training followed by a
//! FixRes-style fine-tune of the head at a higher resolution, and evaluation of a
//! checkpoint.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::efficientnet::EfficientNet;
use crate::models::{ModelConfig, NormChoice};
use crate::nn::model::Trainable;
use crate::train::checkpoint;
use crate::train::optim::Optimizer;
use crate::train::schedule::Decay;
use crate::train::trainer::{self, DatasetKind, Start, TrainConfig, TrainSummary};
use crate::util::safetensors::SafeTensors;

/// Options of `effnet train`.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = FIXRES_HELP)]
pub struct TrainArgs {
    /// Model preset: b0..b7 (depthwise, expansion 6) or b0-g16..b7-g16 (16 channels per
    /// group, expansion 4).
    #[arg(long, default_value = "b0-g16")]
    pub model: String,
    /// Normalization: bn, gn, ln, ln-pn (LayerNorm + Proxy Norm), gn-pn.
    #[arg(long, default_value = "ln-pn")]
    pub norm: String,
    /// Width multiplier override (e.g. 0.25 for a tiny model).
    #[arg(long)]
    pub width: Option<f64>,
    /// Depth multiplier override.
    #[arg(long)]
    pub depth: Option<f64>,
    /// Dataset: fashion-mnist, cifar10, folder.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Dataset folder (default for fashion-mnist: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Training resolution (see the train%32 == test%32 rule below).
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Epochs.
    #[arg(long, default_value_t = 10.0)]
    pub epochs: f64,
    /// Stop after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Optimizer: sgd, nesterov, rmsprop (TF style), adamw.
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Peak learning rate (default: 0.1 x batch/256 for SGD, 0.016 x batch/256 for
    /// RMSProp, 2e-3 for AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay, not applied to norm and bias parameters (default: 5e-5 L2 for SGD,
    /// 1e-5 L2 for RMSProp, 0.05 decoupled for AdamW).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f64,
    /// Warm-up epochs.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_epochs: f64,
    /// Decay after warm-up: cosine, exponential (x0.97 every 2.4 epochs), constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Per-step decay of the weight average used for evaluation (0 disables).
    #[arg(long, default_value_t = 0.998)]
    pub ema_decay: f64,
    /// Dropout before the classifier (default: the preset's).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Final drop-connect rate.
    #[arg(long, default_value_t = 0.2)]
    pub drop_connect: f64,
    /// Run folder (checkpoint, metrics.jsonl, eval.jsonl, curves.png).
    #[arg(long, default_value = "runs/fashion-mnist")]
    pub run_dir: PathBuf,
    /// Continue from the run folder's checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Read the loss back every N steps.
    #[arg(long, default_value_t = 20)]
    pub log_every: usize,
    /// Checkpoint every N steps (and at every epoch end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Evaluate every N epochs (0: only at the end).
    #[arg(long, default_value_t = 1.0)]
    pub eval_every: f64,
    /// Evaluate on at most N test images.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// After training, fine-tune the head at this resolution with evaluation
    /// preprocessing (FixRes; SPEC §B.4). Must satisfy train % 32 == finetune % 32.
    #[arg(long)]
    pub finetune_size: Option<usize>,
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
  effnet refuses sizes that break the rule.";

/// Build the model configuration from the arguments.
pub fn model_config(a: &TrainArgs, classes: usize, in_channels: usize) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::preset(&a.model)?;
    cfg.norm = NormChoice::parse(&a.norm)?;
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

/// The run configuration from the arguments.
pub fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let optimizer = Optimizer::parse(&a.optimizer)?;
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
    let decay = match a.schedule.as_str() {
        "cosine" => Decay::Cosine,
        "exponential" | "exp" => Decay::Exponential {
            rate: 0.97,
            every: 2.4,
        },
        "constant" => Decay::Constant,
        s => {
            return Err(Error::Config(format!(
                "unknown schedule '{s}': use cosine, exponential or constant"
            )))
        }
    };
    if a.batch == 0 || a.image_size < 8 {
        return Err(Error::Config(
            "--batch must be >= 1 and --image-size >= 8".into(),
        ));
    }
    Ok(TrainConfig {
        dataset: DatasetKind::parse(&a.dataset)?,
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
        decay,
        ema_decay: a.ema_decay,
        log_every: a.log_every,
        checkpoint_every: a.checkpoint_every,
        eval_every: a.eval_every,
        eval_limit: a.eval_limit,
        seed: a.seed,
        head_only: false,
        eval_preprocessing: false,
    })
}

/// Check the FixRes size rule.
pub fn check_fixres(train: usize, test: usize) -> Result<()> {
    if train % 32 != test % 32 {
        return Err(Error::Config(format!(
            "fine-tune size {test} breaks the train % 32 == test % 32 rule with training size \
             {train} ({} vs {}); try {}",
            train % 32,
            test % 32,
            train + 32 * test.saturating_sub(train).div_ceil(32).max(1)
        )));
    }
    Ok(())
}

/// Run `effnet train`.
pub fn run(gpu: &Gpu, a: &TrainArgs) -> Result<Vec<(String, TrainSummary)>> {
    let cfg = train_config(a)?;
    if let Some(ft) = a.finetune_size {
        check_fixres(a.image_size, ft)?;
    }
    let (train_ds, test_ds) = trainer::load_datasets(&cfg)?;
    let (mean, std) = train_ds.channel_stats()?;
    let classes = train_ds.classes.len();
    let mcfg = model_config(a, classes, train_ds.c)?;
    let (params, macs) = crate::models::totals(&mcfg, cfg.image_size);
    println!(
        "effnet: {} ({}) {:.2}M params, {:.1} MMACs/image at {}px, batch {}, {} on {} ({:?})",
        mcfg.name,
        mcfg.norm.name(),
        params as f64 / 1e6,
        macs as f64 / 1e6,
        cfg.image_size,
        cfg.batch,
        a.optimizer,
        gpu.info.name,
        gpu.info.backend
    );
    println!(
        "data: {} train / {} test images, {} classes; run folder {}",
        train_ds.len(),
        test_ds.len(),
        classes,
        a.run_dir.display()
    );
    let train_ds = Arc::new(train_ds);
    let meta = serde_json::to_string(&mcfg).expect("json");
    let mut model = EfficientNet::new(gpu, &mcfg, cfg.batch, cfg.image_size)?;
    let mut out = Vec::new();
    let s = trainer::train(
        gpu,
        &mut model,
        &cfg,
        train_ds.clone(),
        &test_ds,
        (&mean, &std),
        &a.run_dir,
        if a.resume {
            Start::Resume
        } else {
            Start::Fresh
        },
        &meta,
        classes,
        false,
    )?;
    report("train", &s);
    out.push(("train".to_string(), s));
    if let Some(ft) = a.finetune_size {
        // FixRes: a model at the fine-tune resolution, initialized from the weight average
        // of the trained run, training the head with evaluation preprocessing.
        let dir = a.run_dir.join(format!("finetune-{ft}"));
        let mut fcfg = cfg.clone();
        fcfg.image_size = ft;
        fcfg.head_only = true;
        fcfg.eval_preprocessing = true;
        fcfg.epochs = a.finetune_epochs;
        fcfg.max_steps = None;
        fcfg.lr = a.finetune_lr;
        fcfg.warmup_epochs = 0.0;
        fcfg.decay = Decay::Cosine;
        fcfg.weight_decay = 0.0;
        let mut fmodel = EfficientNet::new(gpu, &mcfg, cfg.batch, ft)?;
        fmodel.set_finetune_stages(&a.finetune_stages)?;
        let src = SafeTensors::load(&trainer::checkpoint_path(&a.run_dir))?;
        init_from_average(gpu, &fmodel, &src)?;
        println!(
            "fine-tuning the head at {ft}px for {} epochs (FixRes)",
            a.finetune_epochs
        );
        let s = trainer::train(
            gpu,
            &mut fmodel,
            &fcfg,
            train_ds,
            &test_ds,
            (&mean, &std),
            &dir,
            Start::Keep,
            &meta,
            classes,
            false,
        )?;
        report("finetune", &s);
        out.push((format!("finetune-{ft}"), s));
    }
    Ok(out)
}

/// Copy a checkpoint's weight average (or weights) into a model's weights and average, and
/// its state tensors (the trainer resets the optimizer state).
fn init_from_average(gpu: &Gpu, model: &EfficientNet, src: &SafeTensors) -> Result<()> {
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
    for (name, t) in model.state_tensors() {
        if let Some(v) = src.tensors.get(&format!("state/{name}")) {
            gpu.write_f32(&t, &v.data)?;
        }
    }
    Ok(())
}

fn report(what: &str, s: &TrainSummary) {
    print!(
        "{what}: {} steps, {:.1} img/s over {:.1} s of training, first step after {:.2} s",
        s.steps, s.img_per_s, s.train_seconds, s.first_step_seconds
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
    /// Resolution (default: the run's training resolution).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Evaluate on at most N images.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Run `effnet eval`: top-1, top-5 and the confusion matrix.
pub fn eval(gpu: &Gpu, a: &EvalArgs) -> Result<trainer::EvalResult> {
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
    let mcfg: ModelConfig = serde_json::from_str(&get("model_config")?)
        .map_err(|e| Error::file(&path, format!("bad model_config: {e}")))?;
    let parse = |s: String| -> Vec<f32> {
        s.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    let (mean, std) = (parse(get("norm_mean")?), parse(get("norm_std")?));
    if let Some(s) = a.image_size {
        cfg.image_size = s;
    }
    let (_, test) = trainer::load_datasets(&cfg)?;
    let mut model = EfficientNet::new(gpu, &mcfg, cfg.batch, cfg.image_size)?;
    checkpoint::load(&path, gpu, model.store(), &model.state_tensors())?;
    let shapes: Vec<Vec<usize>> = model.store().defs.iter().map(|d| d.shape.clone()).collect();
    let backup = crate::gpu::Arena::new(gpu, &shapes)?;
    if !a.raw {
        trainer::swap_ema(gpu, &model, &backup)?;
    }
    let lc = trainer::loader_config(&cfg, &test, &mean, &std, false);
    let r = trainer::evaluate(gpu, &mut model, &test, &lc, a.limit, mcfg.classes)?;
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
        let name = test.classes.get(i).cloned().unwrap_or_default();
        println!(
            "{:>12} {}",
            name,
            row.iter().map(|v| format!("{v:>5}")).collect::<String>()
        );
    }
    Ok(r)
}
