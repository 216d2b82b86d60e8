//! The training loop: loader workers -> u8 upload -> one recorded, single-submission step
//! (input normalization, forward,
//! loss, backward, fused optimizer update, Proxy Norm statistics, weight average) -> loss
//! read back asynchronously every few steps -> atomic checkpoints, JSONL metrics, an
//! evaluation per epoch with the weight average, and PNG curves at the end.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::input_stage::InputStage;
use super::metrics::{EvalRecord, MetricsLog, StepRecord};
use super::model::Trainable;
use super::optim::{self, Optimizer, Segment};
use super::schedule::{Decay, Schedule};
use crate::data::{self, Batch, Dataset, Loader, LoaderConfig, Transform};
use crate::error::{Error, Result};
use crate::gpu::{Arena, Gpu, Readback, Recorder, Submitted};
use crate::util::plot::{self, Chart, Series};
use crate::util::Rng;

/// Which dataset to train on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST IDX files (Debian package dataset-fashion-mnist).
    FashionMnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// Image-folder tree with `train/` and `test/` (or `val/`) sub-folders.
    Folder,
}

impl DatasetKind {
    /// Parse `fashion-mnist`, `cifar10`, `folder`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "fashion-mnist" | "fashion_mnist" | "mnist" => Self::FashionMnist,
            "cifar10" | "cifar-10" => Self::Cifar10,
            "folder" | "imagefolder" => Self::Folder,
            _ => {
                return Err(Error::Config(format!(
                    "unknown dataset '{s}': use fashion-mnist, cifar10 or folder"
                )))
            }
        })
    }
}

/// Everything that defines a run (stored in checkpoints).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Dataset.
    pub dataset: DatasetKind,
    /// Dataset folder (None: the dataset's default location).
    pub data_dir: Option<PathBuf>,
    /// Training resolution.
    pub image_size: usize,
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
            Ok((
                data::load_idx_dir(&dir, true)?,
                data::load_idx_dir(&dir, false)?,
            ))
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
            let test = ["test", "val"]
                .iter()
                .map(|s| dir.join(s))
                .find(|p| p.is_dir())
                .ok_or_else(|| Error::file(&dir, "needs train/ and test/ (or val/) sub-folders"))?;
            let train = data::load_folder(&dir.join("train"), cfg.image_size)?;
            let test = data::load_folder(&test, cfg.image_size)?;
            if train.classes != test.classes {
                return Err(Error::file(&dir, "train and test class folders differ"));
            }
            Ok((train, test))
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
/// with `mean` / `std`. The loader's workers decode ahead of the GPU.
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
    let n = limit.map_or(ds.len(), |l| l.min(ds.len()));
    let mut lc = lc.clone();
    lc.limit = Some(n);
    lc.shuffle = false;
    lc.drop_last = false;
    let mut loader = Loader::start(ds.clone(), lc, 0, 0, Some(1))?;
    let mut stage = InputStage::new(gpu, model, mean, std)?;
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut loss, mut c1, mut c5) = (0.0f64, 0usize, 0usize);
    let mut seen = 0usize;
    while let Some(b) = loader.next_batch()? {
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

/// Swap the weights with their average (call again to swap back).
pub fn swap_ema(gpu: &Gpu, model: &dyn Trainable, backup: &Arena) -> Result<()> {
    let s = model.store();
    let mut rec = Recorder::new(gpu);
    for ((w, e), b) in s.w.chunks.iter().zip(&s.ema.chunks).zip(&backup.chunks) {
        rec.copy(w, b)?;
        rec.copy(e, w)?;
        rec.copy(b, e)?;
    }
    rec.submit()?.wait(gpu)
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
    rb: Readback,
    valid: usize,
}

/// How a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Initialize the parameters from the seed.
    Fresh,
    /// Continue from the run folder's checkpoint (fresh if there is none).
    Resume,
    /// Keep the weights already in the model (e.g. a fine-tune from a trained run);
    /// optimizer state starts from zero.
    Keep,
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

/// Train `model` per `cfg`, in `run_dir`. `model_meta` (the model configuration as JSON)
/// goes into checkpoints. `start` says where the parameters come from.
#[allow(clippy::too_many_arguments)]
pub fn train(
    gpu: &Gpu,
    model: &mut dyn Trainable,
    cfg: &TrainConfig,
    train_ds: Arc<Dataset>,
    test_ds: &Arc<Dataset>,
    norm_stats: (&[f32], &[f32]),
    run_dir: &Path,
    start: Start,
    model_meta: &str,
    classes: usize,
    quiet: bool,
) -> Result<TrainSummary> {
    let t_start = Instant::now();
    let segments: Vec<Segment> = if cfg.head_only {
        model.store().segments_for(|d| model.is_head_param(&d.name))
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
    // The schedule spans the configured epochs; --max-steps only stops the run early (so a
    // run stopped and resumed follows the same learning-rate curve).
    let planned = ((cfg.epochs * per_epoch as f64).round() as usize).max(1);
    let total = cfg.max_steps.map_or(planned, |m| m.min(planned));
    let schedule = Schedule {
        lr: cfg.lr,
        warmup_epochs: cfg.warmup_epochs,
        decay: cfg.decay,
        steps_per_epoch: per_epoch,
        total_steps: planned,
    };
    std::fs::create_dir_all(run_dir)
        .map_err(|e| Error::file(run_dir, format!("cannot create run folder: {e}")))?;
    let ckpt = checkpoint_path(run_dir);
    let mut rng = Rng::new(cfg.seed ^ 0xD80F);
    let mut step: u64 = 0;
    if start == Start::Resume && ckpt.exists() {
        let meta = checkpoint::load(&ckpt, gpu, model.store(), &model.state_tensors())?;
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
        if !quiet {
            println!("resumed from {} at step {step}", ckpt.display());
        }
    } else if start == Start::Keep {
        // Weights come from the caller; optimizer state starts from scratch.
        let s = model.store();
        for (s1, s2) in s.s1.chunks.iter().zip(&s.s2.chunks) {
            gpu.write_f32(s1, &vec![0.0; s1.len()])?;
            gpu.write_f32(s2, &vec![cfg.optimizer.s2_init(); s2.len()])?;
        }
    } else {
        let mut init = Rng::new(cfg.seed);
        model
            .store()
            .initialize(gpu, &mut init, cfg.optimizer.s2_init())?;
    }
    // Derived state (Proxy Norm statistics) from the current parameters.
    let mut rec = Recorder::new(gpu);
    model.record_after_update(&mut rec)?;
    rec.submit()?.wait(gpu)?;
    let lc = loader_config(cfg, &train_ds, true);
    let elc = loader_config(cfg, test_ds, false);
    let (e0, b0) = ((step as usize) / per_epoch, (step as usize) % per_epoch);
    let mut loader = Loader::start(train_ds.clone(), lc, e0, b0, None)?;
    let mut stage = InputStage::new(gpu, model, norm_stats.0, norm_stats.1)?;
    let (mut skipped, mut reported) = (0usize, std::collections::HashSet::new());
    let mut steps_log = MetricsLog::open(run_dir, "metrics.jsonl")?;
    let mut eval_log = MetricsLog::open(run_dir, "eval.jsonl")?;
    let shapes: Vec<Vec<usize>> = model.store().defs.iter().map(|d| d.shape.clone()).collect();
    let backup = Arena::new(gpu, &shapes)?;

    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut inflight: VecDeque<Submitted> = VecDeque::new();
    let mut last_loss = f64::NAN;
    let mut last_good_step = step;
    let mut images = 0usize;
    let mut train_time = 0.0f64;
    let mut first_step_seconds = 0.0;
    let mut window = (Instant::now(), 0usize, loader.waited());
    let start_step = step;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut final_eval = None;

    while (step as usize) < total {
        let t0 = Instant::now();
        let b = loader
            .next_batch()?
            .ok_or_else(|| Error::Config("the loader stopped early".into()))?;
        skipped += b.skipped.len();
        report_skipped(&b, &mut reported);
        // Bound the work in flight: at most two steps queued on the GPU.
        while inflight.len() >= 2 {
            inflight.pop_front().expect("non-empty").wait(gpu)?;
        }
        let slot = stage.upload(gpu, model, &b)?;
        let valid = b.valid;
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
        {
            let s = model.store();
            optim::update(
                &mut rec,
                &cfg.optimizer,
                &segments,
                &s.w.chunks,
                &s.g.chunks,
                &s.s1.chunks,
                &s.s2.chunks,
                lr,
                cfg.weight_decay as f32,
                step + 1,
                1.0,
            )?;
        }
        model.record_after_update(&mut rec)?;
        if cfg.ema_decay > 0.0 {
            let s = model.store();
            optim::ema(&mut rec, &s.w.chunks, &s.ema.chunks, cfg.ema_decay as f32)?;
        }
        let submitted = rec.submit()?;
        stage.submitted(slot, &submitted);
        inflight.push_back(submitted);
        step += 1;
        images += valid;
        window.1 += valid;
        if step == start_step + 1 {
            inflight.back().expect("just pushed").wait(gpu)?;
            first_step_seconds = t_start.elapsed().as_secs_f64();
        }
        let epoch_end = (step as usize).is_multiple_of(per_epoch);
        let want_ckpt = step.is_multiple_of(cfg.checkpoint_every.max(1) as u64)
            || epoch_end
            || step as usize == total;
        if step.is_multiple_of(cfg.log_every.max(1) as u64) || want_ckpt {
            pending.push_back(Pending {
                step,
                rb: gpu.read_async(model.loss_rows())?,
                valid,
            });
        }
        let window_s = window.0.elapsed().as_secs_f64().max(1e-9);
        let rate = window.1 as f64 / window_s;
        // Share of the window's wall time spent blocked on the loader.
        let wait_share = ((loader.waited() - window.2).as_secs_f64() / window_s).min(1.0);
        let lr_of = |s: u64| schedule.lr_at(s as usize - 1);
        let mut track = Tracker {
            last_loss: &mut last_loss,
            last_good: &mut last_good_step,
            log: &mut steps_log,
            lr_of: &lr_of,
            rate,
            per_epoch,
        };
        drain(gpu, &mut pending, false, &mut track)?;
        train_time += t0.elapsed().as_secs_f64();
        if want_ckpt {
            // Never write a checkpoint before this step's loss is known to be finite.
            let tw = Instant::now();
            drain(gpu, &mut pending, true, &mut track)?;
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
            meta.insert("model_config".to_string(), model_meta.to_string());
            meta.insert("norm_mean".to_string(), format!("{:?}", norm_stats.0));
            meta.insert("norm_std".to_string(), format!("{:?}", norm_stats.1));
            meta.insert(
                CLASS_NAMES_KEY.to_string(),
                serde_json::to_string(&train_ds.classes).expect("json"),
            );
            checkpoint::save(&ckpt, gpu, model.store(), &model.state_tensors(), meta)?;
            train_time += tw.elapsed().as_secs_f64();
        }
        let log_now = step.is_multiple_of(cfg.log_every.max(1) as u64) || step as usize == total;
        if !quiet && (log_now || tty) {
            // The loss shown is the latest one read back (asynchronously, so it may lag).
            let shown = if last_loss.is_nan() {
                "    ...".to_string()
            } else {
                format!("{last_loss:>8.4} (step {last_good_step})")
            };
            let line = format!(
                "step {step:>6}/{total} epoch {:>6.2} loss {shown} lr {:.5} {:>8.1} img/s \
                 data-wait {:>3.0}%",
                step as f64 / per_epoch as f64,
                lr,
                rate,
                100.0 * wait_share
            );
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
        let epoch_f = step as f64 / per_epoch as f64;
        let eval_now = step as usize == total
            || (epoch_end
                && cfg.eval_every > 0.0
                && (epoch_f / cfg.eval_every).fract().abs() < 1e-9);
        if eval_now {
            for p in inflight.drain(..) {
                p.wait(gpu)?;
            }
            let use_ema = cfg.ema_decay > 0.0;
            if use_ema {
                swap_ema(gpu, model, &backup)?;
            }
            let r = evaluate(
                gpu,
                model,
                test_ds,
                &elc,
                cfg.eval_limit,
                classes,
                norm_stats.0,
                norm_stats.1,
            );
            if use_ema {
                swap_ema(gpu, model, &backup)?;
            }
            let r = r?;
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
            final_eval = Some(r);
        }
    }
    for p in inflight.drain(..) {
        p.wait(gpu)?;
    }
    let lr_of = |s: u64| schedule.lr_at(s as usize - 1);
    let mut track = Tracker {
        last_loss: &mut last_loss,
        last_good: &mut last_good_step,
        log: &mut steps_log,
        lr_of: &lr_of,
        rate: 0.0,
        per_epoch,
    };
    drain(gpu, &mut pending, true, &mut track)?;
    let workers = loader.workers;
    let data_wait = loader.waited().as_secs_f64() / train_time.max(1e-9);
    drop(loader);
    if skipped > 0 && !quiet {
        println!("skipped {skipped} unreadable image files (--skip-bad-images)");
    }
    let _ = plot_run(run_dir);
    Ok(TrainSummary {
        steps: step,
        last_loss,
        eval: final_eval,
        img_per_s: images as f64 / train_time.max(1e-9),
        train_seconds: train_time,
        first_step_seconds,
        data_wait: data_wait.min(1.0),
        skipped_images: skipped,
        workers,
    })
}

struct Tracker<'a> {
    last_loss: &'a mut f64,
    last_good: &'a mut u64,
    log: &'a mut MetricsLog,
    lr_of: &'a dyn Fn(u64) -> f64,
    rate: f64,
    per_epoch: usize,
}

/// Consume finished loss readbacks in order (all of them, waiting, when `block`).
fn drain(gpu: &Gpu, pending: &mut VecDeque<Pending>, block: bool, t: &mut Tracker) -> Result<()> {
    while let Some(p) = pending.front() {
        let vals = if block {
            let p = pending.pop_front().expect("non-empty");
            let v = p.rb.wait(gpu)?;
            finish(&v, p.step, p.valid, t)?;
            continue;
        } else {
            match p.rb.try_take(gpu)? {
                Some(v) => v,
                None => break,
            }
        };
        let p = pending.pop_front().expect("non-empty");
        finish(&vals, p.step, p.valid, t)?;
    }
    Ok(())
}

fn finish(v: &[f32], step: u64, valid: usize, t: &mut Tracker) -> Result<()> {
    let (last_loss, last_good, log, lr_of, rate, per_epoch) = (
        &mut *t.last_loss,
        &mut *t.last_good,
        &mut *t.log,
        t.lr_of,
        t.rate,
        t.per_epoch,
    );
    let mean = v[..valid.min(v.len())]
        .iter()
        .map(|&x| x as f64)
        .sum::<f64>()
        / valid.max(1) as f64;
    if !mean.is_finite() {
        return Err(Error::Config(format!(
            "the training loss became {mean} at or before step {step} (last finite reading at \
             step {}). The last checkpoint holds the state of a step whose loss was finite. \
             Lower --lr, add warm-up (--warmup-epochs), or check the data; resume with --resume",
            *last_good
        )));
    }
    *last_loss = mean;
    *last_good = step;
    log.log(&StepRecord {
        step,
        epoch: step as f64 / per_epoch as f64,
        loss: mean,
        lr: lr_of(step),
        img_per_s: rate,
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
