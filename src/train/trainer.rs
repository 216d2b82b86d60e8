//! The training loop: loader workers -> u8 upload -> one recorded, single-submission step
//! (input normalization, forward,
//! loss, backward, fused optimizer update, Proxy Norm statistics, weight average) -> loss
//! read back asynchronously every few steps -> atomic checkpoints (never with non-finite
//! values), JSONL metrics, an evaluation per epoch with the weight average, and PNG curves
//! at the end. SIGINT/SIGTERM stop it after the current step with a checkpoint
//! ([`super::stop`]); a resumed run refuses incompatible changes and records each session
//! in the checkpoint's configuration history.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::input_stage::InputStage;
use super::loss_scale::{LossScaler, ScalerConfig, ScalerState};
use super::metrics::{self, EvalRecord, MetricsLog, StepRecord};
use super::model::Trainable;
use super::optim::{self, Optimizer, Segment};
use super::run_dir::RunDir;
use super::schedule::{Decay, Schedule};
use super::stop::{self, StopSignal};
use crate::data::{self, Batch, Dataset, Loader, LoaderConfig, Transform};
use crate::dist::{agree, check_same, hash_bytes, sum_in_buckets, Comm, Shard, Solo};
use crate::error::{Error, Result};
use crate::gpu::{Arena, Gpu, Precision, Readback, Recorder, Submitted, Tensor};
use crate::models::size::{MAX_SIDE, MIN_SIDE};
use crate::models::ImageSize;
use crate::util::plot::{self, Chart, Series};
use crate::util::Rng;

/// Which dataset to train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST IDX files (Debian package dataset-fashion-mnist).
    #[value(alias = "fashion_mnist", alias = "mnist")]
    FashionMnist,
    /// CIFAR-10 binary batches.
    #[value(alias = "cifar-10")]
    Cifar10,
    /// Image-folder tree with `train/` and `test/` (or `val/`) sub-folders.
    #[value(alias = "imagefolder")]
    Folder,
}

/// Everything that defines a run (stored in checkpoints).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Dataset.
    pub dataset: DatasetKind,
    /// Dataset folder (None: the dataset's default location).
    pub data_dir: Option<PathBuf>,
    /// Training resolution, `H x W` (a single integer in checkpoints of square runs).
    pub image_size: ImageSize,
    /// Batch size.
    pub batch: usize,
    /// Epochs to train.
    pub epochs: f64,
    /// Stop after this many steps (None: epochs decide).
    pub max_steps: Option<usize>,
    /// Optimizer.
    pub optimizer: Optimizer,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay (L2 for SGD/RMSProp, decoupled for AdamW).
    pub weight_decay: f64,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Warm-up epochs.
    pub warmup_epochs: f64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Per-step decay of the weight average used for evaluation (0 disables it).
    pub ema_decay: f64,
    /// Read the loss back every this many steps.
    pub log_every: usize,
    /// Write a checkpoint every this many steps (and at every epoch end).
    pub checkpoint_every: usize,
    /// Evaluate every this many epochs (0: only at the end).
    pub eval_every: f64,
    /// Evaluate on at most this many test images (None: all).
    pub eval_limit: Option<usize>,
    /// Seed of initialization, shuffling, augmentation and dropout.
    pub seed: u64,
    /// Train only the head (conv_head, its norm, classifier): the fine-tuning phase.
    pub head_only: bool,
    /// Train with evaluation preprocessing (FixRes fine-tuning).
    pub eval_preprocessing: bool,
    /// Loader worker threads (0: [`data::default_workers`]); does not change the batches.
    #[serde(default)]
    pub workers: usize,
    /// Skip image files that cannot be read or decoded (each reported once, all counted)
    /// instead of stopping at the first one.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// The file the weights were initialized from (`--init`; read at step 0 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Stem and stages 1..=N get no gradient and no update (`--freeze-stages`; 0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub freeze_stages: usize,
    /// Every BatchNorm in eval mode while training (`--freeze-bn`): running statistics
    /// fixed, gradients flowing through them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub freeze_bn: bool,
    /// Storage precision (`--precision`; f32 for runs written before it existed). The
    /// model must be built at it; resuming in the other precision is allowed.
    #[serde(default, skip_serializing_if = "is_f32")]
    pub precision: Precision,
    /// The dynamic loss scaler's constants in mixed precision (None: GradScaler's,
    /// [`ScalerConfig::default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<ScalerConfig>,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

/// Checkpoint metadata key of the loss scaler's state (JSON [`ScalerState`]; absent in f32
/// runs, and in checkpoints older than mixed precision).
pub const META_LOSS_SCALER: &str = "loss_scaler";

/// Consecutive steps that overflow at the smallest loss scale before a mixed-precision run
/// stops ([`ScalerState::stuck`]).
pub const STUCK_STEPS: u32 = 8;

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// Numbers the kernels take as f32 must fit it.
const F32_MAX: f64 = f32::MAX as f64;

/// The most epochs (and warm-up epochs) a run takes: far beyond any real run, and small
/// enough that epochs times steps per epoch stays an exact step count.
pub const MAX_EPOCHS: f64 = 1e6;

impl TrainConfig {
    /// Check every value against its valid range; the error names each flag that is out
    /// of range. Configurations read back from checkpoints go through the same check.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        let mut want = |ok: bool, flag: &str, v: &dyn std::fmt::Display, rule: &str| {
            if !ok {
                bad.push(format!("--{flag} {v}: must be {rule}"));
            }
        };
        let unit = |v: f64| (0.0..1.0).contains(&v);
        want(
            self.image_size.in_range(),
            "image-size",
            &self.image_size,
            &format!("N or HxW (height x width) with each side in {MIN_SIDE}..={MAX_SIDE}"),
        );
        want(self.batch >= 1, "batch", &self.batch, ">= 1");
        want(
            self.epochs > 0.0 && self.epochs <= MAX_EPOCHS,
            "epochs",
            &Num(self.epochs),
            &format!(
                "a number > 0 and at most {MAX_EPOCHS:e} (for a run of a set length in steps, \
                 give --max-steps)"
            ),
        );
        if let Some(m) = self.max_steps {
            want(m >= 1, "max-steps", &m, ">= 1");
        }
        want(
            self.lr > 0.0 && self.lr <= F32_MAX,
            "lr",
            &Num(self.lr),
            "a finite number > 0 (and within f32 range)",
        );
        want(
            self.weight_decay >= 0.0 && self.weight_decay <= F32_MAX,
            "weight-decay",
            &Num(self.weight_decay),
            "a finite number >= 0",
        );
        want(
            unit(self.label_smoothing),
            "label-smoothing",
            &Num(self.label_smoothing),
            "in [0, 1)",
        );
        want(
            self.warmup_epochs >= 0.0 && self.warmup_epochs <= MAX_EPOCHS,
            "warmup-epochs",
            &Num(self.warmup_epochs),
            &format!("a number >= 0 and at most {MAX_EPOCHS:e}"),
        );
        if let Decay::Exponential { rate, every } = self.decay {
            want(
                rate > 0.0 && rate <= 1.0 && every.is_finite() && every > 0.0,
                "schedule",
                &format!("exponential (rate {rate}, every {every})"),
                "a rate in (0, 1] every finite > 0 epochs",
            );
        }
        want(
            unit(self.ema_decay),
            "ema-decay",
            &Num(self.ema_decay),
            "in [0, 1)",
        );
        want(self.log_every >= 1, "log-every", &self.log_every, ">= 1");
        want(
            self.checkpoint_every >= 1,
            "checkpoint-every",
            &self.checkpoint_every,
            ">= 1 (checkpoints are also written at every epoch end and on Ctrl-C)",
        );
        want(
            self.eval_every.is_finite() && self.eval_every >= 0.0,
            "eval-every",
            &Num(self.eval_every),
            "a finite number >= 0 (0: only at the end)",
        );
        if let Some(l) = self.eval_limit {
            want(l >= 1, "eval-limit", &l, ">= 1");
        }
        if let Some(Err(e)) = self.loss_scale.map(|c| c.validate()) {
            bad.push(e.to_string());
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(bad.join("; ")))
        }
    }
}

/// A number from the command line as an error message shows it: as `{}` prints it, except
/// in scientific notation where that would be hundreds of digits (`--epochs 1e300`) or a
/// long fraction.
struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.0.abs();
        if a.is_finite() && a != 0.0 && !(1e-4..1e7).contains(&a) {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Result of an evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    /// Images evaluated.
    pub images: usize,
    /// Mean cross-entropy (no smoothing).
    pub loss: f64,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Confusion matrix [true][predicted].
    pub confusion: Vec<Vec<usize>>,
}

/// Load the train and test splits of the configured dataset.
pub fn load_datasets(cfg: &TrainConfig) -> Result<(Dataset, Dataset)> {
    match cfg.dataset {
        DatasetKind::FashionMnist => {
            let dir = cfg
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(data::FASHION_MNIST_DIR));
            data::load_idx_splits(&dir)
        }
        DatasetKind::Cifar10 => {
            let dir = cfg.data_dir.clone().ok_or_else(|| {
                Error::Config("CIFAR-10 needs --data-dir (the cifar-10-batches-bin folder)".into())
            })?;
            Ok((
                data::load_cifar10(&dir, true)?,
                data::load_cifar10(&dir, false)?,
            ))
        }
        DatasetKind::Folder => {
            let dir = cfg
                .data_dir
                .clone()
                .ok_or_else(|| Error::Config("an image-folder dataset needs --data-dir".into()))?;
            data::load_folder_splits(&dir, cfg.image_size)
        }
    }
}

/// Loader settings for training or evaluation.
pub fn loader_config(cfg: &TrainConfig, ds: &Dataset, train: bool) -> LoaderConfig {
    let small = ds.h <= 64 && matches!(ds.pixels, data::Pixels::Memory(_));
    let transform = if !train || cfg.eval_preprocessing {
        Transform::Eval {
            crop: if small { 1.0 } else { 0.875 },
        }
    } else if small {
        Transform::PadCropFlip { pad: ds.h / 8 }
    } else {
        Transform::RandomResizedCrop { min_area: 0.08 }
    };
    LoaderConfig {
        batch: cfg.batch,
        image_size: cfg.image_size,
        transform,
        shuffle: train,
        drop_last: train,
        seed: cfg.seed,
        workers: if cfg.workers == 0 {
            data::default_workers()
        } else {
            cfg.workers
        },
        skip_bad_images: cfg.skip_bad_images,
        limit: None,
    }
}

/// Evaluate on `ds` (padded last batch, only real rows counted), normalizing the pixels
/// with `mean` / `std`; the loader's workers decode ahead of the GPU. Stops with
/// [`Error::Interrupted`] between batches after a SIGINT/SIGTERM (see [`stop`]).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    gpu: &Gpu,
    model: &mut dyn Trainable,
    ds: &Arc<Dataset>,
    lc: &LoaderConfig,
    limit: Option<usize>,
    classes: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<EvalResult> {
    let whole = Shard::whole(model.batch());
    evaluate_in(
        gpu,
        model,
        ds,
        lc,
        limit,
        classes,
        (mean, std),
        whole,
        &Solo,
    )
}

/// [`evaluate`] of this rank's `shard` of every global batch, the counts summed over the
/// ranks of `comm` (every rank gets the whole test set's result).
#[allow(clippy::too_many_arguments)]
fn evaluate_in(
    gpu: &Gpu,
    model: &mut dyn Trainable,
    ds: &Arc<Dataset>,
    lc: &LoaderConfig,
    limit: Option<usize>,
    classes: usize,
    (mean, std): (&[f32], &[f32]),
    shard: Shard,
    comm: &dyn Comm,
) -> Result<EvalResult> {
    let n = limit.map_or(ds.len(), |l| l.min(ds.len()));
    if n == 0 {
        return Err(Error::Config(format!(
            "nothing to evaluate: the test set has {} images and the limit is {limit:?}",
            ds.len()
        )));
    }
    if let Some((i, &y)) = ds
        .labels
        .iter()
        .enumerate()
        .find(|(_, &y)| y as usize >= classes)
    {
        return Err(Error::Config(format!(
            "test image {i} has label {y} but the model has {classes} classes (0..={}): the \
             test set does not belong to the data this model was trained on",
            classes.saturating_sub(1)
        )));
    }
    let mut lc = lc.clone();
    lc.limit = Some(n);
    lc.shuffle = false;
    lc.drop_last = false;
    lc.batch = shard.len;
    let mut loader = Loader::start_shard(ds.clone(), lc, shard, 0, 0, Some(1))?;
    let mut stage = InputStage::new(gpu, model, mean, std)?;
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut loss, mut c1, mut c5) = (0.0f64, 0usize, 0usize);
    let mut seen = 0usize;
    while let Some(b) = loader.next_batch()? {
        if let Some(sig) = stop::requested() {
            return Err(Error::Interrupted {
                code: sig.exit_code(),
                msg: format!("{} during evaluation: stopped", sig.name()),
            });
        }
        report_skipped(&b, &mut Default::default());
        let slot = stage.upload(gpu, model, &b)?;
        let mut rec = Recorder::new(gpu);
        stage.record(&mut rec, slot, model)?;
        model.record_eval(&mut rec)?;
        stage.submitted(slot, &rec.submit()?);
        let logits = gpu.read(model.logits())?;
        seen += b.valid;
        for r in 0..b.valid {
            let z = &logits[r * classes..(r + 1) * classes];
            let y = b.labels[r] as usize;
            let mx = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = mx + z.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
            loss += lse - z[y] as f64;
            let mut idx: Vec<usize> = (0..classes).collect();
            idx.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap_or(std::cmp::Ordering::Equal));
            c1 += (idx[0] == y) as usize;
            c5 += idx.iter().take(5).any(|&k| k == y) as usize;
            confusion[y][idx[0]] += 1;
        }
        loader.recycle(b);
    }
    if comm.size() > 1 {
        // Sum the counts over the ranks (exact: integers and f64 sums well below 2^53).
        let mut local = vec![loss, c1 as f64, c5 as f64, seen as f64];
        local.extend(confusion.iter().flatten().map(|&c| c as f64));
        let mut all = vec![0.0; local.len()];
        comm.sum_f64("the evaluation's counts", &local, &mut all)?;
        (loss, c1, c5, seen) = (all[0], all[1] as usize, all[2] as usize, all[3] as usize);
        for (c, v) in confusion.iter_mut().flatten().zip(&all[4..]) {
            *c = *v as usize;
        }
    }
    Ok(EvalResult {
        images: seen,
        loss: loss / seen.max(1) as f64,
        top1: c1 as f64 / seen.max(1) as f64,
        top5: c5 as f64 / seen.max(1) as f64,
        confusion,
    })
}

/// Print a warning for each image file of `b` that was skipped and not reported before.
fn report_skipped(b: &Batch, reported: &mut std::collections::HashSet<PathBuf>) {
    for (p, why) in &b.skipped {
        if reported.insert(p.clone()) {
            eprintln!("warning: skipped {}: {why}", p.display());
        }
    }
}

/// Swapping a model's weights and state tensors with their weight average, through
/// scratch space allocated once.
pub struct AverageSwap {
    params: Arena,
    state: Vec<Tensor>,
}

impl AverageSwap {
    /// Scratch space for `model`.
    pub fn new(gpu: &Gpu, model: &dyn Trainable) -> Result<Self> {
        let shapes: Vec<Vec<usize>> = model.store().defs.iter().map(|d| d.shape.clone()).collect();
        let state = model
            .state_tensors()
            .iter()
            .map(|(_, t)| gpu.zeros(t.shape()))
            .collect::<Result<_>>()?;
        Ok(Self {
            params: Arena::new(gpu, &shapes)?,
            state,
        })
    }

    /// Swap the weights with their average and the state tensors (BatchNorm running
    /// statistics) with theirs, then rebuild the derived state (Proxy Norm statistics)
    /// for the weights now in place. Call again to swap back.
    pub fn swap(&self, gpu: &Gpu, model: &dyn Trainable) -> Result<()> {
        let s = model.store();
        let mut rec = Recorder::new(gpu);
        let pairs =
            s.w.chunks
                .iter()
                .zip(&s.ema.chunks)
                .zip(&self.params.chunks);
        for ((w, e), b) in pairs {
            rec.copy(w, b)?;
            rec.copy(e, w)?;
            rec.copy(b, e)?;
        }
        let (state, avg) = (model.state_tensors(), model.state_average());
        for (((_, w), (_, e)), b) in state.iter().zip(&avg).zip(&self.state) {
            rec.copy(w, b)?;
            rec.copy(e, w)?;
            rec.copy(b, e)?;
        }
        rec.submit()?.wait(gpu)?;
        model.rebuild_derived(gpu)
    }
}

/// A run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    /// Steps trained in total (including before a resume).
    pub steps: u64,
    /// Last mean training loss read back.
    pub last_loss: f64,
    /// Final evaluation (weight average if enabled).
    pub eval: Option<EvalResult>,
    /// Training images per second over this session (excluding evaluation).
    pub img_per_s: f64,
    /// Wall-clock seconds spent training in this session (excluding evaluation).
    pub train_seconds: f64,
    /// Seconds from start to the end of the first step (start-up latency).
    pub first_step_seconds: f64,
    /// Share of the training time spent waiting for the loader (0..1).
    pub data_wait: f64,
    /// Image files skipped as unreadable (each time one was met).
    pub skipped_images: usize,
    /// Loader worker threads used.
    pub workers: usize,
}

struct Pending {
    step: u64,
    loss: Loss,
    valid: usize,
    /// Mixed precision: the loss scaler's state after the step, being read back.
    scaler: Option<Readback>,
}

/// A step's training loss on its way to the host.
enum Loss {
    /// The per-row losses, being read back (one process).
    Rows(Readback),
    /// The mean over the global batch, already summed over the ranks.
    Mean(f64),
}

/// How a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Initialize the parameters from the seed.
    Fresh,
    /// Continue from the run folder's checkpoint (an error when it has none). The
    /// configuration must match the checkpoint's; schedule settings (learning rate,
    /// epochs, steps, warm-up, decay, weight decay, label smoothing, weight-average decay)
    /// may differ only when `allow_schedule_change`.
    Resume {
        /// Accept schedule changes (`--allow-schedule-change`).
        allow_schedule_change: bool,
    },
    /// Keep the weights already in the model (e.g. a fine-tune from a trained run);
    /// optimizer state starts from zero.
    Keep,
}

/// Initialize the parameters from `cfg.seed` (what [`Start::Fresh`] does): weights,
/// optimizer state, the state's weight average at the state's initial values, no
/// batches tracked. `train --init` calls it before loading a file over it.
pub fn initialize_fresh(gpu: &Gpu, model: &mut dyn Trainable, cfg: &TrainConfig) -> Result<()> {
    let mut init = Rng::new(cfg.seed);
    model
        .store()
        .initialize(gpu, &mut init, cfg.optimizer.s2_init())?;
    // The weight average of the state starts at the state's initial values.
    let mut rec = Recorder::new(gpu);
    for ((_, t), (_, a)) in model.state_tensors().iter().zip(&model.state_average()) {
        rec.copy(t, a)?;
    }
    rec.submit()?.wait(gpu)?;
    model.set_batches_tracked(0);
    Ok(())
}

/// Checkpoint metadata key of the class names (a JSON array, index = label).
pub const CLASS_NAMES_KEY: &str = "class_names";

/// The class names stored in a checkpoint's metadata, if any (checkpoints written before
/// they were stored, or by other tools, have none). Names that are not a JSON array of
/// strings are ignored.
pub fn class_names(meta: &BTreeMap<String, String>) -> Option<Vec<String>> {
    serde_json::from_str(meta.get(CLASS_NAMES_KEY)?).ok()
}

/// Checkpoint file of a run folder.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.safetensors")
}

/// Settings that may change on resume without asking: they do not change what is trained.
/// `skip_bad_images` is among them: a run stopped by an unreadable image continues with it.
/// `precision` is among them: a mixed run may continue in f32 (its weights are f32) and
/// the other way round.
const FREE_KEYS: [&str; 9] = [
    "init",
    "precision",
    "log_every",
    "workers",
    "skip_bad_images",
    "checkpoint_every",
    "eval_every",
    "eval_limit",
    "data_dir",
];
/// Settings that change the schedule: allowed on resume with `--allow-schedule-change`.
const SCHEDULE_KEYS: [&str; 8] = [
    "lr",
    "epochs",
    "max_steps",
    "warmup_epochs",
    "decay",
    "weight_decay",
    "label_smoothing",
    "ema_decay",
];

/// The command-line flag that sets a [`TrainConfig`] field.
fn flag_of(key: &str) -> String {
    match key {
        "decay" => "--schedule".into(),
        "head_only" | "eval_preprocessing" => format!("{key} (fine-tuning phase)"),
        k => format!("--{}", k.replace('_', "-")),
    }
}

/// Differences between a stored and a new configuration, as (key, old, new), both JSON
/// objects (every key of either).
fn json_diff(old: &serde_json::Value, new: &serde_json::Value) -> Vec<(String, String, String)> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), show(a.get(k)), show(b.get(k))))
        .collect()
}

/// Check that a resumed run continues the stored one: the model and everything that
/// decides what is trained must be equal; schedule settings only with permission.
fn check_resume(
    ckpt: &Path,
    meta: &BTreeMap<String, String>,
    cfg: &TrainConfig,
    model_meta: &str,
    norm_stats: (&str, &str),
    allow_schedule_change: bool,
) -> Result<()> {
    let parse = |k: &str| -> Result<serde_json::Value> {
        let s = meta
            .get(k)
            .ok_or_else(|| Error::file(ckpt, format!("metadata has no {k}")))?;
        serde_json::from_str(s).map_err(|e| Error::file(ckpt, format!("bad {k} metadata: {e}")))
    };
    let stored_cfg = parse("train_config")?;
    let stored_model = parse("model_config")?;
    // Through text, as the stored one was (f32 fields print their shortest form).
    let new_cfg: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(cfg).expect("json")).expect("json");
    let new_model: serde_json::Value = serde_json::from_str(model_meta).expect("model json");
    let mut refused = Vec::new();
    let mut schedule = Vec::new();
    for (k, a, b) in json_diff(&stored_model, &new_model) {
        refused.push(format!("model {k}: {a} in the checkpoint, {b} now"));
    }
    for (k, a, b) in json_diff(&stored_cfg, &new_cfg) {
        let line = format!("{}: {a} in the checkpoint, {b} now", flag_of(&k));
        if FREE_KEYS.contains(&k.as_str()) {
            continue;
        } else if SCHEDULE_KEYS.contains(&k.as_str()) {
            schedule.push(line);
        } else {
            refused.push(line);
        }
    }
    for (key, now) in [("norm_mean", norm_stats.0), ("norm_std", norm_stats.1)] {
        let then = meta.get(key).map_or("(absent)", |s| s.as_str());
        if then != now {
            refused.push(format!(
                "training data: channel {} {then} in the checkpoint, {now} now (other files \
                 under --data-dir?)",
                if key == "norm_mean" {
                    "means"
                } else {
                    "deviations"
                }
            ));
        }
    }
    if !refused.is_empty() {
        return Err(Error::file(
            ckpt,
            format!(
                "cannot resume: this command differs from the run in the checkpoint in what \
                 is trained:\n  {}\nRepeat the run's own flags with --resume{}, or start a new \
                 run (--overwrite, or another --run-dir)",
                refused.join("\n  "),
                last_command(meta)
                    .map_or(String::new(), |c| format!(" (it was started with: {c})"))
            ),
        ));
    }
    if !schedule.is_empty() && !allow_schedule_change {
        return Err(Error::file(
            ckpt,
            format!(
                "cannot resume: the schedule differs from the checkpoint's:\n  {}\nAdd \
                 --allow-schedule-change to continue with the new schedule (recorded in the \
                 checkpoint's config_history), or repeat the run's own flags",
                schedule.join("\n  ")
            ),
        ));
    }
    Ok(())
}

/// The command line of the last session recorded in a checkpoint's history.
fn last_command(meta: &BTreeMap<String, String>) -> Option<String> {
    let h: serde_json::Value = serde_json::from_str(meta.get("config_history")?).ok()?;
    Some(h.as_array()?.last()?["command"].as_str()?.to_string())
}

/// The configuration history with this session appended: one entry per session (fresh
/// start, resume, fine-tune), with the step it started at, its command line and its
/// configuration.
fn history_with(prev: Option<&String>, step: u64, cfg: &TrainConfig) -> String {
    let mut h: Vec<serde_json::Value> = prev
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    h.push(serde_json::json!({
        "step": step,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "train_config": cfg,
    }));
    serde_json::to_string(&h).expect("json")
}

/// "1h05m", "4m07s", "12s".
pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// What the progress line shows.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Steps of the run.
    pub total: usize,
    /// Epochs done (fractional).
    pub epoch: f64,
    /// Latest loss read back, with its step (the readback is asynchronous, so it lags).
    pub loss: Option<(f64, u64)>,
    /// Learning rate of the step.
    pub lr: f64,
    /// Training images per second since the last log line.
    pub img_per_s: f64,
    /// Share of the time since the last log line spent waiting for the loader.
    pub data_wait: f64,
    /// Estimated seconds to the end of training (None until measured).
    pub eta_s: Option<f64>,
}

/// The progress line (without the in-place bar drawn on terminals).
pub fn progress_line(p: &Progress) -> String {
    let loss = match p.loss {
        Some((l, s)) => format!("{l:>8.4} (step {s})"),
        None => "    ...".to_string(),
    };
    let eta = p.eta_s.map_or("ETA ...".to_string(), |s| {
        format!("ETA {}", format_duration(s))
    });
    format!(
        "step {:>6}/{} epoch {:>6.2} loss {loss} lr {:.5} {:>8.1} img/s data-wait {:>3.0}% {eta}",
        p.step,
        p.total,
        p.epoch,
        p.lr,
        p.img_per_s,
        100.0 * p.data_wait
    )
}

/// What the trainer knows when the loss or the weights stop being finite.
#[derive(Clone, Copy)]
struct Context {
    start: Start,
    start_step: u64,
    lr: f64,
    last_ckpt: Option<u64>,
}

impl Context {
    /// Where the last good state is.
    fn kept(&self) -> String {
        match self.last_ckpt {
            Some(s) => format!("The checkpoint at step {s} holds finite weights."),
            None => "No checkpoint was written.".to_string(),
        }
    }

    /// The likely cause of a non-finite loss read at `step`, and what to do.
    fn loss_cause(&self, step: u64) -> String {
        if step == self.start_step + 1 && self.start == Start::Fresh {
            "It is the very first step, before any update, so the learning rate is not the \
             cause: check the data (--dataset, --data-dir) and the model flags."
                .into()
        } else if step == self.start_step + 1 && matches!(self.start, Start::Resume { .. }) {
            "It is the first step after resuming, before any update: the checkpoint may be \
             corrupt, or the data differs from the run's. Resume from an intact copy, or \
             start over with --overwrite."
                .into()
        } else if matches!(self.start, Start::Resume { .. })
            && self.last_ckpt == Some(self.start_step)
        {
            // Nothing was checkpointed since the resume: the loaded state (optimizer
            // moments included, which only the updates read) is as likely as the schedule.
            format!(
                "{} If resuming again diverges at the same step, the checkpoint of step {} \
                 (its optimizer state, which only the updates read) may be corrupt: resume \
                 from an intact copy, or start over with --overwrite.",
                self.diverged(),
                self.start_step
            )
        } else {
            self.diverged()
        }
    }

    fn diverged(&self) -> String {
        let then = if self.last_ckpt.is_some() {
            "then continue from that checkpoint with --resume --allow-schedule-change, or \
             start over with --overwrite"
        } else {
            "then start over with --overwrite"
        };
        format!(
            "Training diverged: the learning rate (peak {:e}) is most likely too high for \
             this model and batch, or the warm-up too short. Lower --lr or lengthen \
             --warmup-epochs, {then}.",
            self.lr
        )
    }
}

/// The error for a stop on `sig` after `step`.
fn interrupted(sig: StopSignal, step: u64, saved: Option<&Path>) -> Error {
    let what = match saved {
        Some(p) => format!(
            "checkpoint at step {step} written to {}; continue with the same command and \
             --resume",
            p.display()
        ),
        None => "no step had been trained, nothing was saved".to_string(),
    };
    Error::Interrupted {
        code: sig.exit_code(),
        msg: format!("stopped by {}: {what}", sig.name()),
    }
}

/// Refuse normalization statistics that would make every input non-finite.
fn check_norm_stats(mean: &[f32], std: &[f32]) -> Result<()> {
    for (c, (m, s)) in mean.iter().zip(std).enumerate() {
        if !m.is_finite() || !s.is_finite() || *s <= 0.0 {
            return Err(Error::Config(format!(
                "the training images' channel {c} has mean {m} and standard deviation {s}: \
                 inputs normalized with them would not be finite. The dataset is empty or \
                 corrupt; check --dataset and --data-dir"
            )));
        }
    }
    Ok(())
}

/// Train `model` per `cfg`, in the locked `run_dir`. `model_meta` (the model
/// configuration as JSON) goes into checkpoints. `start` says where the parameters come
/// from.
///
/// The run lasts `--max-steps` steps when set, else `--epochs` epochs; the learning-rate
/// schedule spans exactly that length.
#[allow(clippy::too_many_arguments)]
pub fn train(
    gpu: &Gpu,
    model: &mut dyn Trainable,
    cfg: &TrainConfig,
    train_ds: Arc<Dataset>,
    test_ds: &Arc<Dataset>,
    norm_stats: (&[f32], &[f32]),
    run_dir: &RunDir,
    start: Start,
    model_meta: &str,
    classes: usize,
    quiet: bool,
) -> Result<TrainSummary> {
    train_in(
        gpu,
        model,
        cfg,
        train_ds,
        test_ds,
        norm_stats,
        (run_dir.path(), Some(run_dir)),
        start,
        model_meta,
        classes,
        quiet,
        None,
    )
}

/// One rank of a data-parallel run (see [`crate::dist`] and `docs/distributed.md`).
pub struct Parallel<'a> {
    /// The ranks.
    pub comm: &'a dyn Comm,
    /// This rank's rows of every global batch (`cfg.batch` rows); the model's batch is
    /// `shard.len` and its dropout masks must follow the shard.
    pub shard: Shard,
    /// Compare a hash of the parameters across the ranks every this many steps (and at
    /// the end).
    pub hash_every: usize,
}

/// [`train`] as one rank of a data-parallel run: `cfg.batch` is the global batch, split
/// into `par.shard`s; gradients are summed over the ranks before every update (each row
/// weighs 1 / the global batch's real rows, so the sum is the global mean); rank 0, the
/// only one given the locked `run_dir`, writes the checkpoints, metrics and curves, and
/// every rank starts from rank 0's parameters and state. A signal on any rank stops all of
/// them at the same step boundary. `dir` is the run folder's path on every rank (for
/// messages).
#[allow(clippy::too_many_arguments)]
pub fn train_parallel(
    gpu: &Gpu,
    model: &mut dyn Trainable,
    cfg: &TrainConfig,
    train_ds: Arc<Dataset>,
    test_ds: &Arc<Dataset>,
    norm_stats: (&[f32], &[f32]),
    run_dir: (&Path, Option<&RunDir>),
    start: Start,
    model_meta: &str,
    classes: usize,
    quiet: bool,
    par: &Parallel,
) -> Result<TrainSummary> {
    if (par.comm.rank() == 0) != run_dir.1.is_some() {
        return Err(Error::Config(
            "rank 0, and only rank 0, holds the run folder".into(),
        ));
    }
    if par.hash_every == 0 {
        return Err(Error::Config("--hash-every must be at least 1".into()));
    }
    train_in(
        gpu,
        model,
        cfg,
        train_ds,
        test_ds,
        norm_stats,
        run_dir,
        start,
        model_meta,
        classes,
        quiet,
        Some(par),
    )
}

#[allow(clippy::too_many_arguments)]
fn train_in(
    gpu: &Gpu,
    model: &mut dyn Trainable,
    cfg: &TrainConfig,
    train_ds: Arc<Dataset>,
    test_ds: &Arc<Dataset>,
    norm_stats: (&[f32], &[f32]),
    (dir, run_dir): (&Path, Option<&RunDir>),
    start: Start,
    model_meta: &str,
    classes: usize,
    quiet: bool,
    par: Option<&Parallel>,
) -> Result<TrainSummary> {
    let t_start = Instant::now();
    cfg.validate()?;
    if model.precision() != cfg.precision {
        return Err(Error::Config(format!(
            "the model was built in {} precision but the run is configured for {}: build it \
             with EfficientNet::with_precision at the run's precision",
            model.precision().name(),
            cfg.precision.name()
        )));
    }
    check_norm_stats(norm_stats.0, norm_stats.1)?;
    model.set_frozen_stages(cfg.freeze_stages)?;
    model.freeze_bn(cfg.freeze_bn)?;
    let root = run_dir.is_some();
    let (comm, shard): (&dyn Comm, Shard) = match par {
        Some(p) => (p.comm, p.shard),
        None => (&Solo, Shard::whole(cfg.batch)),
    };
    if shard.global != cfg.batch || model.batch() != shard.len {
        return Err(Error::Shape(format!(
            "a model of batch {} training rows {}..{} of a global batch of {} (--batch {})",
            model.batch(),
            shard.offset,
            shard.offset + shard.len,
            shard.global,
            cfg.batch
        )));
    }
    let segments: Vec<Segment> = if cfg.head_only || cfg.freeze_stages > 0 {
        model.store().segments_for(|d| {
            (!cfg.head_only || model.is_head_param(&d.name)) && !model.is_frozen_param(&d.name)
        })
    } else {
        model.store().segments.clone()
    };
    let per_epoch = data::batches_per_epoch(train_ds.len(), cfg.batch, true);
    if per_epoch == 0 {
        return Err(Error::Config(format!(
            "{} training images is less than one batch of {}",
            train_ds.len(),
            cfg.batch
        )));
    }
    // --max-steps sets the run's length, and the schedule spans the run.
    let total = cfg
        .max_steps
        .unwrap_or_else(|| ((cfg.epochs * per_epoch as f64).round() as usize).max(1));
    let schedule = Schedule {
        lr: cfg.lr,
        warmup_epochs: cfg.warmup_epochs,
        decay: cfg.decay,
        steps_per_epoch: per_epoch,
        total_steps: total,
    };
    let warm_steps = cfg.warmup_epochs * per_epoch as f64;
    if warm_steps >= total as f64 && cfg.warmup_epochs > 0.0 {
        return Err(Error::Config(format!(
            "--warmup-epochs {} is {} steps, as long as the whole run of {total} steps: the \
             learning rate would never leave its warm-up. Use --warmup-epochs {:.2} or less",
            cfg.warmup_epochs,
            warm_steps.round(),
            0.1 * total as f64 / per_epoch as f64
        )));
    }
    let ckpt = checkpoint_path(dir);
    let norm_text = (format!("{:?}", norm_stats.0), format!("{:?}", norm_stats.1));
    // Metadata every checkpoint of this run carries.
    let fixed_meta: BTreeMap<String, String> = [
        ("model_config", model_meta.to_string()),
        ("norm_mean", norm_text.0.clone()),
        ("norm_std", norm_text.1.clone()),
        (
            CLASS_NAMES_KEY,
            serde_json::to_string(&train_ds.classes).expect("json"),
        ),
    ]
    .into_iter()
    .chain(
        // The BatchNorm momentum's convention, stated (the model configuration holds m).
        serde_json::from_str::<serde_json::Value>(model_meta)
            .ok()
            .and_then(|v| v.get("bn_momentum")?.as_f64())
            .map(|m| {
                (
                    "bn_momentum",
                    crate::interop::arch::bn_momentum_statement(m),
                )
            }),
    )
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut rng = Rng::new(cfg.seed ^ 0xD80F);
    let mut step: u64 = 0;
    let mut history = None;
    let mut last_ckpt = None;
    let mut scaler_state: Option<ScalerState> = None;
    let resumed = matches!(start, Start::Resume { .. });
    // Rank 0 loads (or initializes) the run; the other ranks receive its state below.
    let loaded: Result<()> = (|| {
        match start {
            Start::Resume { .. } if !root => {}
            Start::Resume {
                allow_schedule_change,
            } => {
                if !ckpt.is_file() {
                    return Err(Error::file(
                        dir,
                        "nothing to resume: no checkpoint.safetensors here",
                    ));
                }
                let meta = checkpoint::load(&ckpt, gpu, model)?;
                check_resume(
                    &ckpt,
                    &meta,
                    cfg,
                    model_meta,
                    (&norm_text.0, &norm_text.1),
                    allow_schedule_change,
                )?;
                step = meta
                    .get("step")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::file(&ckpt, "metadata has no step"))?;
                let st: Vec<u64> = meta
                    .get("rng")
                    .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
                    .unwrap_or_default();
                if st.len() != 4 {
                    return Err(Error::file(&ckpt, "metadata has no RNG state"));
                }
                rng = Rng::from_state([st[0], st[1], st[2], st[3]]);
                history = meta.get("config_history").cloned();
                // A mixed run's scaler state (an f32 run, or one from before mixed
                // precision, has none: a mixed session then starts at the initial scale).
                scaler_state = meta
                    .get(META_LOSS_SCALER)
                    .map(|s| {
                        serde_json::from_str::<ScalerState>(s)
                            .map_err(|e| {
                                Error::file(&ckpt, format!("bad {META_LOSS_SCALER} metadata: {e}"))
                            })
                            .and_then(|st| {
                                ScalerState::from_words(&st.to_words())
                                    .map_err(|e| Error::file(&ckpt, e.to_string()))
                            })
                    })
                    .transpose()?;
                last_ckpt = Some(step);
                // Records past the checkpoint were written by the interrupted session and are
                // about to be written again.
                for log in ["metrics.jsonl", "eval.jsonl"] {
                    metrics::truncate_after(&dir.join(log), step)?;
                }
                if !quiet {
                    println!("resumed from {} at step {step}", ckpt.display());
                }
            }
            Start::Keep => {
                // Weights come from the caller; optimizer state starts from scratch.
                let s = model.store();
                for (s1, s2) in s.s1.chunks.iter().zip(&s.s2.chunks) {
                    gpu.write_f32(s1, &vec![0.0; s1.len()])?;
                    gpu.write_f32(s2, &vec![cfg.optimizer.s2_init(); s2.len()])?;
                }
            }
            Start::Fresh => initialize_fresh(gpu, model, cfg)?,
        }
        Ok(())
    })();
    agree(comm, "loading the run's starting state", loaded)?;
    if par.is_some() {
        let mut st = rng.state();
        broadcast_state(gpu, model, comm, &mut step, &mut st)?;
        rng = Rng::from_state(st);
        if resumed {
            last_ckpt = Some(step);
        }
    }
    let history = history_with(history.as_ref(), step, cfg);
    model.rebuild_derived(gpu)?;
    // Mixed precision: the dynamic loss scaler, whose state the loss gradient, the
    // gradient check, the update and the weight average read on the GPU.
    let scaler = match cfg.precision {
        Precision::F32 => None,
        Precision::Mixed => {
            let c = cfg.loss_scale.unwrap_or_default();
            let st = scaler_state.unwrap_or_else(|| ScalerState::initial(&c));
            Some(LossScaler::new(gpu, c, &st, &cfg.optimizer, total as u64)?)
        }
    };
    if let (Some(sc), Some(_)) = (&scaler, par) {
        // Every rank starts from rank 0's scale (the same summed gradients then keep the
        // ranks' scalers equal).
        let mut w = gpu.read_u32(&sc.state)?;
        comm.broadcast("the loss scaler", bytemuck::cast_slice_mut(&mut w))?;
        gpu.write_u32(&sc.state, &w)?;
    }
    model.set_loss_scale(scaler.as_ref().map(|s| s.state.clone()));
    let mut lc = loader_config(cfg, &train_ds, true);
    lc.batch = shard.len;
    let mut elc = loader_config(cfg, test_ds, false);
    elc.batch = shard.len;
    let (e0, b0) = ((step as usize) / per_epoch, (step as usize) % per_epoch);
    let mut loader = Loader::start_shard(train_ds.clone(), lc, shard, e0, b0, None)?;
    let mut stage = InputStage::new(gpu, model, norm_stats.0, norm_stats.1)?;
    let (mut skipped, mut reported) = (0usize, std::collections::HashSet::new());
    let open_log = |name: &str| match root {
        true => MetricsLog::open(dir, name),
        false => Ok(MetricsLog::discard()),
    };
    let steps_log = open_log("metrics.jsonl")?;
    let eval_path = dir.join("eval.jsonl");
    let mut eval_log = open_log("eval.jsonl")?;
    let swap = AverageSwap::new(gpu, model)?;
    let (state, state_avg): (Vec<Tensor>, Vec<Tensor>) = model
        .state_tensors()
        .into_iter()
        .zip(model.state_average())
        .map(|((_, t), (_, a))| (t, a))
        .unzip();

    let mut inflight: VecDeque<Submitted> = VecDeque::new();
    let mut images = 0usize;
    let mut train_time = 0.0f64;
    let mut first_step_seconds = 0.0;
    let mut window = (Instant::now(), 0usize, loader.waited());
    let start_step = step;
    let mut first_done: Option<Instant> = None;
    let cpu_adapter = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut final_eval = None;
    let mut track = Tracker {
        pending: VecDeque::new(),
        last_loss: f64::NAN,
        last_good: step,
        log: steps_log,
        schedule: &schedule,
        rate: 0.0,
        ctx: Context {
            start,
            start_step,
            lr: cfg.lr,
            last_ckpt,
        },
        scaler: scaler.as_ref().map(|s| s.config),
    };

    // Evaluations come at the end and every --eval-every epochs, rounded to whole steps (at
    // least one, so a fraction of an epoch evaluates mid-epoch), each after a checkpoint of
    // the same step.
    let eval_interval =
        (cfg.eval_every > 0.0).then(|| ((cfg.eval_every * per_epoch as f64).round() as u64).max(1));
    let eval_due =
        |step: u64| step as usize == total || eval_interval.is_some_and(|n| step.is_multiple_of(n));
    let mut run_eval = |model: &mut dyn Trainable, step: u64| -> Result<EvalResult> {
        let epoch_f = step as f64 / per_epoch as f64;
        let use_ema = cfg.ema_decay > 0.0;
        if use_ema {
            swap.swap(gpu, model)?;
        }
        let r = evaluate_in(
            gpu,
            model,
            test_ds,
            &elc,
            cfg.eval_limit,
            classes,
            norm_stats,
            shard,
            comm,
        );
        if use_ema {
            swap.swap(gpu, model)?;
        }
        let r = r.map_err(|e| match e {
            Error::Interrupted { code, .. } => {
                let sig = StopSignal::from_exit_code(code).unwrap_or(StopSignal::Terminate);
                interrupted(sig, step, Some(&ckpt))
            }
            e => e,
        })?;
        eval_log.log(&EvalRecord {
            step,
            epoch: epoch_f,
            loss: r.loss,
            top1: r.top1,
            top5: r.top5,
            weights: if use_ema { "ema".into() } else { "raw".into() },
        })?;
        if !quiet {
            if tty && step as usize != total {
                println!();
            }
            println!(
                "eval  step {step} epoch {epoch_f:.2}: top-1 {:.2}% top-5 {:.2}% loss {:.4} ({} images{})",
                100.0 * r.top1,
                100.0 * r.top5,
                r.loss,
                r.images,
                if use_ema { ", weight average" } else { "" }
            );
        }
        Ok(r)
    };
    // A resumed run whose evaluation at the checkpoint's step was interrupted (or never
    // written) does it first.
    if resumed && step > 0 && eval_due(step) && !metrics::has_step(&eval_path, step)? {
        final_eval = Some(run_eval(model, step)?);
    }
    while (step as usize) < total {
        let t0 = Instant::now();
        // In a data-parallel run the ranks agree, before each step, on the real rows of the
        // global batch and on whether any of them received a stop signal.
        let mut next = None;
        let sig = match par {
            None => stop::requested(),
            Some(_) => {
                let b = loader
                    .next_batch()?
                    .ok_or_else(|| Error::Config("the loader stopped early".into()))?;
                let (global_valid, sig) = step_agreement(comm, b.valid)?;
                next = Some((b, global_valid));
                sig
            }
        };
        if let Some(sig) = sig {
            // The previous step is complete; save it unless that just happened.
            track.drain_all(gpu, &mut inflight)?;
            if root && step > start_step && track.ctx.last_ckpt != Some(step) {
                save_checkpoint(
                    gpu,
                    model,
                    &ckpt,
                    step,
                    &rng,
                    cfg,
                    &fixed_meta,
                    &history,
                    &track.ctx,
                    scaler.as_ref(),
                )?;
            }
            if !quiet && tty {
                println!();
            }
            let saved = (step > 0).then_some(ckpt.as_path());
            return Err(interrupted(sig, step, saved));
        }
        let (b, global_valid) = match next {
            Some(n) => n,
            None => {
                let b = loader
                    .next_batch()?
                    .ok_or_else(|| Error::Config("the loader stopped early".into()))?;
                let v = b.valid;
                (b, v)
            }
        };
        skipped += b.skipped.len();
        report_skipped(&b, &mut reported);
        // Bound the work in flight: at most two steps queued on the GPU.
        while inflight.len() >= 2 {
            inflight.pop_front().expect("non-empty").wait(gpu)?;
        }
        let slot = stage.upload_weighted(gpu, model, &b, global_valid)?;
        let (valid, local_valid) = (global_valid, b.valid);
        // The pixels are in wgpu's staging memory now: the buffer can be refilled.
        loader.recycle(b);
        let lr = schedule.lr_at(step as usize) as f32;
        let mut rec = Recorder::new(gpu);
        stage.record(&mut rec, slot, model)?;
        model.record_train_step(
            &mut rec,
            &mut rng,
            cfg.label_smoothing as f32,
            cfg.head_only,
        )?;
        // Whether this step's loss is read (the same on every rank).
        let epoch_end = (step as usize + 1).is_multiple_of(per_epoch);
        let want_ckpt = (step + 1).is_multiple_of(cfg.checkpoint_every as u64)
            || epoch_end
            || eval_due(step + 1);
        let want_loss = (step + 1).is_multiple_of(cfg.log_every as u64) || want_ckpt;
        let mut host_loss = None;
        if par.is_some() {
            // Data parallelism: finish backward, sum the gradients over the ranks on the
            // host, and record the update in a second submission.
            let sub = rec.submit()?;
            stage.submitted(slot, &sub);
            host_loss = all_reduce_gradients(
                gpu,
                model,
                comm,
                &segments,
                want_loss.then_some(local_valid),
            )?
            .map(|sum| sum / valid.max(1) as f64);
            rec = Recorder::new(gpu);
        }
        let sc = scaler.as_ref();
        let (wd, t) = (cfg.weight_decay as f32, step + 1);
        optim::update_step(
            &mut rec,
            sc,
            &cfg.optimizer,
            &segments,
            model.store(),
            lr,
            wd,
            t,
        )?;
        model.record_after_update(&mut rec)?;
        if cfg.ema_decay > 0.0 {
            let s = model.store();
            let d = optim::ema_decay_at(cfg.ema_decay, step + 1) as f32;
            optim::ema_step(&mut rec, sc, &s.w.chunks, &s.ema.chunks, d)?;
            optim::ema_step(&mut rec, sc, &state, &state_avg, d)?;
        }
        if let Some(sc) = &scaler {
            sc.record_update(&mut rec)?;
        }
        let submitted = rec.submit()?;
        if par.is_none() {
            stage.submitted(slot, &submitted);
        }
        inflight.push_back(submitted);
        step += 1;
        if let Some(p) = par {
            if step.is_multiple_of(p.hash_every as u64) || step as usize == total {
                check_parameters(gpu, model, comm, step)?;
            }
        }
        images += valid;
        window.1 += valid;
        if step == start_step + 1 {
            inflight.back().expect("just pushed").wait(gpu)?;
            first_step_seconds = t_start.elapsed().as_secs_f64();
            first_done = Some(Instant::now());
        }
        if want_loss {
            track.pending.push_back(Pending {
                step,
                loss: match host_loss {
                    Some(mean) => Loss::Mean(mean),
                    None => Loss::Rows(gpu.read_async(model.loss_rows())?),
                },
                valid,
                scaler: scaler.as_ref().map(|s| s.read_async(gpu)).transpose()?,
            });
        }
        let window_s = window.0.elapsed().as_secs_f64().max(1e-9);
        let rate = window.1 as f64 / window_s;
        // Share of the window's wall time spent blocked on the loader.
        let wait_share = ((loader.waited() - window.2).as_secs_f64() / window_s).min(1.0);
        track.rate = rate;
        track.drain(gpu, false)?;
        train_time += t0.elapsed().as_secs_f64();
        if want_ckpt {
            // Never write a checkpoint before this step's loss is known to be finite.
            let tw = Instant::now();
            track.drain(gpu, true)?;
            if root {
                save_checkpoint(
                    gpu,
                    model,
                    &ckpt,
                    step,
                    &rng,
                    cfg,
                    &fixed_meta,
                    &history,
                    &track.ctx,
                    scaler.as_ref(),
                )?;
            }
            track.ctx.last_ckpt = Some(step);
            train_time += tw.elapsed().as_secs_f64();
        }
        // Seconds per step since the first (which includes pipeline builds).
        let eta_s = first_done.filter(|_| step > start_step + 1).map(|t| {
            t.elapsed().as_secs_f64() / (step - start_step - 1) as f64
                * (total as u64 - step) as f64
        });
        if cpu_adapter && !quiet && step == start_step + 6 && (total as u64) > step {
            if tty {
                println!();
            }
            println!(
                "note: {} is a CPU (software) adapter: the remaining {} steps will take about \
                 {} at this rate (plus evaluations). For a quick check instead, try \
                 `effnet train --width 0.25 --depth 0.25 --image-size 16 --batch 32 \
                 --max-steps 300 --warmup-epochs 0 --run-dir runs/quick`",
                gpu.info.name,
                total as u64 - step,
                format_duration(eta_s.unwrap_or(0.0))
            );
        }
        let log_now = step.is_multiple_of(cfg.log_every as u64) || step as usize == total;
        if !quiet && (log_now || tty) {
            let line = progress_line(&Progress {
                step,
                total,
                epoch: step as f64 / per_epoch as f64,
                loss: (!track.last_loss.is_nan()).then_some((track.last_loss, track.last_good)),
                lr: lr as f64,
                img_per_s: rate,
                data_wait: wait_share,
                eta_s,
            });
            if tty {
                // A progress bar redrawn in place; a plain line per log step otherwise.
                let done = step as f64 / total as f64;
                let filled = (done * 30.0).round() as usize;
                print!(
                    "\r[{}{}] {line}",
                    "=".repeat(filled),
                    " ".repeat(30 - filled.min(30))
                );
                if step as usize == total {
                    println!();
                }
                let _ = std::io::Write::flush(&mut std::io::stdout());
            } else {
                println!("{line}");
            }
            if log_now {
                window = (Instant::now(), 0, loader.waited());
            }
        }
        if eval_due(step) {
            for p in inflight.drain(..) {
                p.wait(gpu)?;
            }
            final_eval = Some(run_eval(model, step)?);
        }
    }
    track.drain_all(gpu, &mut inflight)?;
    let workers = loader.workers;
    let data_wait = loader.waited().as_secs_f64() / train_time.max(1e-9);
    drop(loader);
    if skipped > 0 && !quiet {
        println!("skipped {skipped} unreadable image files (--skip-bad-images)");
    }
    if root {
        let _ = plot_run(dir);
    }
    Ok(TrainSummary {
        steps: step,
        last_loss: track.last_loss,
        eval: final_eval,
        img_per_s: images as f64 / train_time.max(1e-9),
        train_seconds: train_time,
        first_step_seconds,
        data_wait: data_wait.min(1.0),
        skipped_images: skipped,
        workers,
    })
}

/// Elements per all-reduce message (16 MiB of f32): bounds each message and lets the
/// reduction of one bucket proceed while the next is still being staged.
const BUCKET: usize = 1 << 22;

/// Before a data-parallel step: the real rows of the global batch (this rank has
/// `valid`), and the first stop signal any rank has received.
fn step_agreement(comm: &dyn Comm, valid: usize) -> Result<(usize, Option<StopSignal>)> {
    let mut local = [valid as f64, 0.0, 0.0, 0.0];
    if let Some(sig) = stop::requested() {
        let i = StopSignal::ALL.iter().position(|&s| s == sig).unwrap_or(1);
        local[1 + i] = 1.0;
    }
    let mut all = [0.0; 4];
    comm.sum_f64("the agreement before a step", &local, &mut all)?;
    let sig = StopSignal::ALL
        .into_iter()
        .enumerate()
        .find(|(i, _)| all[1 + i] > 0.0)
        .map(|(_, s)| s);
    Ok((all[0] as usize, sig))
}

/// Sum the gradients of the trained `segments` over the ranks: read each arena chunk
/// back (all readbacks are queued at once), all-reduce its segments in buckets on the
/// host, and write it back before the update's submission. With `loss_valid` (this
/// rank's real rows), also returns the global sum of the per-row losses.
fn all_reduce_gradients(
    gpu: &Gpu,
    model: &dyn Trainable,
    comm: &dyn Comm,
    segments: &[Segment],
    loss_valid: Option<usize>,
) -> Result<Option<f64>> {
    let g = &model.store().g;
    let mut chunks: Vec<usize> = segments.iter().map(|s| s.chunk).collect();
    chunks.dedup();
    let reads = chunks
        .iter()
        .map(|&c| Ok((c, gpu.read_async(&g.chunks[c])?)))
        .collect::<Result<Vec<_>>>()?;
    let loss = loss_valid
        .map(|_| gpu.read_async(model.loss_rows()))
        .transpose()?;
    for (c, rb) in reads {
        let mut v = rb.wait(gpu)?;
        for seg in segments.iter().filter(|s| s.chunk == c) {
            sum_in_buckets(
                comm,
                "the gradient all-reduce",
                &mut v[seg.start..seg.end],
                BUCKET,
            )?;
        }
        gpu.write_f32(&g.chunks[c], &v)?;
    }
    match (loss, loss_valid) {
        (Some(rb), Some(n)) => {
            let rows = rb.wait(gpu)?;
            let local: f64 = rows[..n.min(rows.len())].iter().map(|&x| x as f64).sum();
            let mut sum = [0.0];
            comm.sum_f64("the loss all-reduce", &[local], &mut sum)?;
            Ok(Some(sum[0]))
        }
        _ => Ok(None),
    }
}

/// Check that every rank holds the same parameters after `step` (a hash of the weight
/// arena, compared across the ranks).
fn check_parameters(gpu: &Gpu, model: &dyn Trainable, comm: &dyn Comm, step: u64) -> Result<()> {
    let mut h = 0u64;
    for c in &model.store().w.chunks {
        let v = gpu.read(c)?;
        h = h.rotate_left(5) ^ hash_bytes(bytemuck::cast_slice(&v));
    }
    check_same(
        comm,
        "the parameters",
        &format!(
            "The replicas diverged by step {step}: the ranks run different builds or \
             adapters whose kernels round differently, or a rank's memory is corrupt. The \
             last checkpoint holds rank 0's parameters; resume from it"
        ),
        h,
    )
}

/// Give every rank rank 0's training state: weights, optimizer state, weight average,
/// state tensors and their average, the step, the RNG state and the batch count.
fn broadcast_state(
    gpu: &Gpu,
    model: &mut dyn Trainable,
    comm: &dyn Comm,
    step: &mut u64,
    rng: &mut [u64; 4],
) -> Result<()> {
    let root = comm.rank() == 0;
    let mut head: Vec<u64> = vec![
        *step,
        rng[0],
        rng[1],
        rng[2],
        rng[3],
        model.batches_tracked(),
    ];
    comm.broadcast("the starting state", bytemuck::cast_slice_mut(&mut head))?;
    *step = head[0];
    rng.copy_from_slice(&head[1..5]);
    model.set_batches_tracked(head[5]);
    let s = model.store();
    let (state, avg) = (model.state_tensors(), model.state_average());
    let tensors = [&s.w, &s.s1, &s.s2, &s.ema]
        .into_iter()
        .flat_map(|a| a.chunks.iter())
        .chain(state.iter().map(|(_, t)| t))
        .chain(avg.iter().map(|(_, t)| t));
    for t in tensors {
        let mut v = if root {
            gpu.read(t)?
        } else {
            vec![0.0f32; t.len()]
        };
        // MPI counts are 32-bit: broadcast in pieces of at most 1 GiB.
        for part in bytemuck::cast_slice_mut::<f32, u8>(&mut v).chunks_mut(1 << 30) {
            comm.broadcast("the starting state", part)?;
        }
        if !root {
            gpu.write_f32(t, &v)?;
        }
    }
    Ok(())
}

/// Write the checkpoint of `step`, refusing non-finite weights with the likely cause.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    gpu: &Gpu,
    model: &dyn Trainable,
    ckpt: &Path,
    step: u64,
    rng: &Rng,
    cfg: &TrainConfig,
    fixed: &BTreeMap<String, String>,
    history: &str,
    ctx: &Context,
    scaler: Option<&LossScaler>,
) -> Result<()> {
    if let Some(bad) = checkpoint::non_finite(gpu, model)? {
        return Err(Error::Config(format!(
            "the weights became non-finite by step {step} ({bad}) although the loss read \
             back was finite; this checkpoint was not written. {} {}",
            ctx.kept(),
            ctx.diverged()
        )));
    }
    let mut meta = BTreeMap::new();
    meta.insert("step".to_string(), step.to_string());
    meta.insert(
        "rng".to_string(),
        rng.state().map(|v| v.to_string()).join(","),
    );
    meta.insert(
        "train_config".to_string(),
        serde_json::to_string(cfg).expect("json"),
    );
    meta.extend(fixed.iter().map(|(k, v)| (k.clone(), v.clone())));
    meta.insert("config_history".to_string(), history.to_string());
    if let Some(sc) = scaler {
        let st = sc.read(gpu)?;
        meta.insert(
            META_LOSS_SCALER.to_string(),
            serde_json::to_string(&st).expect("json"),
        );
    }
    checkpoint::save(ckpt, gpu, model, meta)
}

/// The loss readbacks on their way to the host and what consuming them updates: the last
/// loss and the last step whose loss was finite, the step log, and what its records are
/// computed from.
struct Tracker<'a> {
    /// Readbacks not yet consumed, oldest first.
    pending: VecDeque<Pending>,
    /// Latest loss read back (NaN before the first).
    last_loss: f64,
    /// The step of `last_loss` (the run's start step before the first).
    last_good: u64,
    /// `metrics.jsonl`.
    log: MetricsLog,
    schedule: &'a Schedule,
    /// Images per second, for the records written next.
    rate: f64,
    ctx: Context,
    /// Mixed precision: the loss scaler's constants.
    scaler: Option<ScalerConfig>,
}

impl Tracker<'_> {
    /// The learning rate of (1-based) step `step`.
    fn lr_of(&self, step: u64) -> f64 {
        self.schedule.lr_at(step as usize - 1)
    }

    /// Consume finished loss readbacks in order (all of them, waiting, when `block`).
    fn drain(&mut self, gpu: &Gpu, block: bool) -> Result<()> {
        while let Some(p) = self.pending.front() {
            let ready = match &p.loss {
                Loss::Mean(_) => None,
                Loss::Rows(_) if block => None,
                Loss::Rows(rb) => match rb.try_take(gpu)? {
                    Some(v) => Some(v),
                    None => break,
                },
            };
            let p = self.pending.pop_front().expect("non-empty");
            let mean = match (p.loss, ready) {
                (Loss::Mean(m), _) => m,
                (Loss::Rows(_), Some(v)) => row_mean(&v, p.valid),
                (Loss::Rows(rb), None) => row_mean(&rb.wait(gpu)?, p.valid),
            };
            // Submitted with the loss's readback, so ready at about the same time.
            let scaler = match p.scaler {
                Some(rb) => {
                    let words: Vec<u32> = rb.wait(gpu)?.iter().map(|v| v.to_bits()).collect();
                    Some(ScalerState::from_words(&words)?)
                }
                None => None,
            };
            finish(mean, p.step, scaler, self)?;
        }
        Ok(())
    }

    /// Wait for every submitted step, then consume every readback (at a stop and at the
    /// end of the run; the records written carry no image rate).
    fn drain_all(&mut self, gpu: &Gpu, inflight: &mut VecDeque<Submitted>) -> Result<()> {
        for p in inflight.drain(..) {
            p.wait(gpu)?;
        }
        self.rate = 0.0;
        self.drain(gpu, true)
    }
}

/// The mean of the first `valid` per-row losses.
fn row_mean(v: &[f32], valid: usize) -> f64 {
    v[..valid.min(v.len())]
        .iter()
        .map(|&x| x as f64)
        .sum::<f64>()
        / valid.max(1) as f64
}

fn finish(mean: f64, step: u64, scaler: Option<ScalerState>, t: &mut Tracker) -> Result<()> {
    let (lr, rate, per_epoch) = (t.lr_of(step), t.rate, t.schedule.steps_per_epoch);
    let (last_loss, last_good, log) = (&mut t.last_loss, &mut t.last_good, &mut t.log);
    if !mean.is_finite() {
        let since = if step == *last_good + 1 || step == t.ctx.start_step + 1 {
            format!("at step {step}")
        } else {
            format!(
                "at or before step {step} (last finite reading at step {})",
                *last_good
            )
        };
        let mixed = if t.scaler.is_some() {
            " In mixed precision an f16 activation may also have overflowed (f16 stops at \
             65504): if --precision f32 trains, the model's activations outgrow f16."
        } else {
            ""
        };
        return Err(Error::Config(format!(
            "the training loss became {mean} {since}. {} {}{mixed}",
            t.ctx.kept(),
            t.ctx.loss_cause(step)
        )));
    }
    if let (Some(st), Some(c)) = (scaler, t.scaler) {
        st.stuck(&c, STUCK_STEPS).map_err(|e| {
            Error::Config(format!(
                "training stopped at step {step}: {e}. {}",
                t.ctx.kept()
            ))
        })?;
    }
    *last_loss = mean;
    *last_good = step;
    log.log(&StepRecord {
        step,
        epoch: step as f64 / per_epoch as f64,
        loss: mean,
        lr,
        img_per_s: rate,
        loss_scale: scaler.map(|s| s.scale),
        skipped_steps: scaler.map(|s| s.skipped),
    })
}

/// Plot the loss and accuracy curves of a run folder into `curves.png`.
pub fn plot_run(run_dir: &Path) -> Result<()> {
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run_dir.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let steps = read("metrics.jsonl");
    let evals = read("eval.jsonl");
    let pts = |v: &[serde_json::Value], x: &str, y: &str, scale: f64| -> Vec<(f64, f64)> {
        v.iter()
            .filter_map(|r| Some((r[x].as_f64()?, r[y].as_f64()? * scale)))
            .collect()
    };
    let loss = Chart {
        title: "LOSS".into(),
        x_label: "epoch".into(),
        series: vec![
            Series::new("train", pts(&steps, "epoch", "loss", 1.0)),
            Series::new("test", pts(&evals, "epoch", "loss", 1.0)),
        ],
        ..Default::default()
    };
    let acc = Chart {
        title: "TEST ACCURACY %".into(),
        x_label: "epoch".into(),
        series: vec![
            Series::new("top-1", pts(&evals, "epoch", "top1", 100.0)),
            Series::new("top-5", pts(&evals, "epoch", "top5", 100.0)),
        ],
        ..Default::default()
    };
    plot::save_png(&run_dir.join("curves.png"), &[loss, acc])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(start: Start, last_ckpt: Option<u64>) -> Context {
        Context {
            start,
            start_step: 40,
            lr: 1e-3,
            last_ckpt,
        }
    }

    #[test]
    fn nan_messages_name_the_likely_cause() {
        let resume = Start::Resume {
            allow_schedule_change: false,
        };
        assert!(ctx(Start::Fresh, None)
            .loss_cause(41)
            .contains("learning rate is not the cause"));
        assert!(ctx(resume, Some(40))
            .loss_cause(41)
            .contains("checkpoint may be corrupt"));
        // Diverging a few steps after a resume, with no checkpoint since: the loaded
        // optimizer state is named beside the learning rate.
        let m = ctx(resume, Some(40)).loss_cause(45);
        assert!(
            m.contains("learning rate") && m.contains("checkpoint of step 40"),
            "{m}"
        );
        // Once this session has checkpointed, the checkpoint is not suspected.
        let m = ctx(resume, Some(44)).loss_cause(47);
        assert!(m.contains("learning rate") && !m.contains("corrupt"), "{m}");
    }
}
