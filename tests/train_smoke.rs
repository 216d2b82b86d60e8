//! End-to-end training on Fashion-MNIST with a tiny model: the loss decreases, a resumed
//! run equals an uninterrupted one bit for bit, and a corrupt dataset file gives a clear
//! error. Needs the Debian package dataset-fashion-mnist (CI installs it).
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use effnet::cli::precision::PrecisionArg;
use effnet::cli::train::{model_config, train_config, TrainArgs};
use effnet::models::efficientnet::EfficientNet;
use effnet::nn::model::Trainable;
use effnet::train::run_dir::{Mode, RunDir};
use effnet::train::trainer;
use effnet::util::safetensors::SafeTensors;

/// Later flags override earlier ones (tests add to a base configuration).
#[derive(Parser)]
#[command(args_override_self = true)]
struct Wrap {
    #[command(flatten)]
    a: TrainArgs,
}

fn args(extra: &[&str]) -> TrainArgs {
    let mut v = vec!["t"];
    v.extend(common::TINY_TRAIN);
    v.extend([
        "--optimizer",
        "adamw",
        "--eval-limit",
        "64",
        // Exact f32 results (bit-exact resumes, trainer and eval agreeing); the mixed
        // tests override it.
        "--precision",
        "f32",
    ]);
    v.extend_from_slice(extra);
    Wrap::parse_from(v).a
}

fn have_data() -> bool {
    let ok = Path::new(effnet::data::FASHION_MNIST_DIR).exists();
    if !ok && std::env::var("CI").is_ok() {
        panic!("CI must install dataset-fashion-mnist");
    }
    ok
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(a: &TrainArgs, dir: &Path, resume: bool) -> trainer::TrainSummary {
    run_with(a, dir, resume, |_| {}).unwrap()
}

/// [`run`] with the configuration adjusted by `tweak`, returning the trainer's result.
fn run_with(
    a: &TrainArgs,
    dir: &Path,
    resume: bool,
    tweak: impl FnOnce(&mut trainer::TrainConfig),
) -> effnet::error::Result<trainer::TrainSummary> {
    let (start, mode) = if resume {
        // The split run changes --max-steps, which sets the schedule's length (constant
        // here, so the learning rates are the same).
        let s = trainer::Start::Resume {
            allow_schedule_change: true,
        };
        (s, Mode::Resume)
    } else {
        (trainer::Start::Fresh, Mode::Fresh)
    };
    let path = dir;
    let dir = RunDir::open(dir, mode).unwrap();
    let gpu = common::gpu();
    let mut cfg = train_config(a).unwrap();
    // As `effnet train` decides it: the flag, else on a resume the run's own.
    let cli = TrainArgs {
        run_dir: path.to_path_buf(),
        resume,
        ..a.clone()
    };
    cfg.precision = effnet::cli::train::train_precision(gpu, &cli)?.precision;
    tweak(&mut cfg);
    let (tr, te) = trainer::load_datasets(&cfg).unwrap();
    let (mean, std) = ([0.2860f32], [0.3530f32]);
    let mcfg = model_config(a, tr.classes.len(), tr.c).unwrap();
    let mut m =
        EfficientNet::with_precision(gpu, &mcfg, cfg.batch, cfg.image_size, cfg.precision).unwrap();
    trainer::train(
        gpu,
        &mut m,
        &cfg,
        Arc::new(tr),
        &Arc::new(te),
        (&mean, &std),
        &dir,
        start,
        "{}",
        10,
        true,
    )
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// One field of every metrics.jsonl record.
fn metric(dir: &Path, key: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[key].clone())
        .collect()
}

/// Every tensor of two checkpoints equal bit for bit, and the same metadata under `keys`.
fn same_checkpoints(a: &Path, b: &Path, keys: &[&str], what: &str) {
    let a = SafeTensors::load(&a.join("checkpoint.safetensors")).unwrap();
    let b = SafeTensors::load(&b.join("checkpoint.safetensors")).unwrap();
    for k in keys {
        assert_eq!(
            a.metadata.get(*k),
            b.metadata.get(*k),
            "{what}: metadata {k}"
        );
    }
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        let u = &b.tensors[name];
        let same = t
            .data
            .iter()
            .zip(&u.data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{what}: {name} differs");
    }
}

/// Mixed precision on the tiny model: the loss is finite and falls, metrics.jsonl carries
/// the loss scale and the skipped-step count; a run split by a resume equals a straight
/// one bit for bit (parameters, optimizer state, average and the scaler's state); its
/// checkpoint continues in f32 from exactly its parameters.
#[test]
fn mixed_precision_trains_and_resumes_bit_exactly() {
    if !have_data() {
        return;
    }
    let (straight, split) = (tmp("mixed-straight"), tmp("mixed-split"));
    let mixed = |steps: &str| {
        args(&[
            "--norm",
            "ln-pn",
            "--max-steps",
            steps,
            "--ema-decay",
            "0.9",
            "--precision",
            "mixed",
        ])
    };
    let s = run(&mixed("40"), &straight, false);
    assert_eq!(s.steps, 40);
    let l = losses(&straight);
    assert!(l.iter().all(|v| v.is_finite()), "{l:?}");
    let first: f64 = l[..8].iter().sum::<f64>() / 8.0;
    let last: f64 = l[l.len() - 8..].iter().sum::<f64>() / 8.0;
    assert!(
        last < first - 0.1,
        "mixed loss did not fall: {first:.4} -> {last:.4}"
    );
    let scales = metric(&straight, "loss_scale");
    let skipped = metric(&straight, "skipped_steps");
    assert!(
        scales.iter().all(|v| v.as_f64().is_some_and(|s| s >= 1.0)),
        "{scales:?}"
    );
    assert!(skipped.iter().all(|v| v.as_u64().is_some()), "{skipped:?}");
    // Split at step 20 and resumed (the precision is the run's own without the flag).
    run(&mixed("20"), &split, false);
    let again = TrainArgs {
        precision: None,
        ..mixed("40")
    };
    run(&again, &split, true);
    same_checkpoints(
        &straight,
        &split,
        &["step", "rng", trainer::META_LOSS_SCALER],
        "mixed resume",
    );
    assert_eq!(losses(&straight)[20..], losses(&split)[20..]);
    // The mixed checkpoint resumed in f32: loaded bit for bit, and training goes on.
    let gpu = common::gpu();
    let a = args(&["--norm", "ln-pn", "--max-steps", "44", "--ema-decay", "0.9"]);
    let mcfg = model_config(&a, 10, 1).unwrap();
    let mut m = EfficientNet::new(gpu, &mcfg, 16, 16).unwrap();
    let ckpt = trainer::checkpoint_path(&split);
    effnet::train::checkpoint::load(&ckpt, gpu, &mut m).unwrap();
    let file = SafeTensors::load(&ckpt).unwrap();
    for (i, d) in m.store().defs.iter().enumerate() {
        let got = gpu.read(m.store().w(effnet::nn::ParamId(i))).unwrap();
        let want = &file.tensors[&format!("w/{}", d.name)].data;
        assert!(
            got.iter()
                .zip(want)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{} not loaded exactly into the f32 model",
            d.name
        );
    }
    let s = run(&a, &split, true);
    assert_eq!(s.steps, 44);
    assert!(s.last_loss.is_finite());
    let st = SafeTensors::load(&ckpt).unwrap();
    assert!(!st.metadata.contains_key(trainer::META_LOSS_SCALER));
    assert!(metric(&split, "loss_scale")[40..]
        .iter()
        .all(|v| v.is_null()));
    let _ = std::fs::remove_dir_all(&straight);
    let _ = std::fs::remove_dir_all(&split);
}

/// A loss whose gradient overflows f16 at every scale (the scaler pinned at 1e30) skips
/// every step and stops after STUCK_STEPS of them at the smallest scale, saying so.
#[test]
fn mixed_precision_stops_when_every_scale_overflows() {
    if !have_data() {
        return;
    }
    let dir = tmp("mixed-stuck");
    let a = args(&["--norm", "gn", "--max-steps", "30", "--precision", "mixed"]);
    let e = run_with(&a, &dir, false, |c| {
        c.loss_scale = Some(effnet::train::loss_scale::ScalerConfig {
            init: 1e30,
            min_scale: 1e30,
            max_scale: 1e30,
            ..Default::default()
        })
    })
    .expect_err("a run skipping every step must stop")
    .to_string();
    assert!(
        e.contains("even at the smallest loss scale") && e.contains("--precision f32"),
        "{e}"
    );
    let skipped = metric(&dir, "skipped_steps");
    let n = skipped.len() as u64;
    assert!(n <= trainer::STUCK_STEPS as u64 + 1, "ran {n} steps");
    assert_eq!(skipped.last().and_then(|v| v.as_u64()), Some(n));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loss_decreases() {
    if !have_data() {
        return;
    }
    let dir = tmp("decrease");
    let a = args(&["--norm", "gn", "--max-steps", "48"]);
    let s = run(&a, &dir, false);
    assert_eq!(s.steps, 48);
    let l = losses(&dir);
    assert_eq!(l.len(), 48);
    let first: f64 = l[..8].iter().sum::<f64>() / 8.0;
    let last: f64 = l[l.len() - 8..].iter().sum::<f64>() / 8.0;
    assert!(
        last < first - 0.1,
        "loss did not decrease: first {first:.4}, last {last:.4}"
    );
    assert!(dir.join("checkpoint.safetensors").exists());
    assert!(dir.join("curves.png").exists());
    assert!(s.eval.is_some());
}

#[test]
fn resume_is_bit_exact() {
    if !have_data() {
        return;
    }
    let k = 3;
    let straight = tmp("straight");
    let split = tmp("split");
    for norm in ["bn", "ln-pn"] {
        let full = args(&[
            "--norm",
            norm,
            "--max-steps",
            &(2 * k).to_string(),
            "--ema-decay",
            "0.9",
        ]);
        let half = args(&[
            "--norm",
            norm,
            "--max-steps",
            &k.to_string(),
            "--ema-decay",
            "0.9",
        ]);
        // Any loader worker count gives the same batches: the straight run uses one, the
        // split run two, then three after the resume.
        let workers = |a: &TrainArgs, n| TrainArgs {
            workers: Some(n),
            ..a.clone()
        };
        run(&workers(&full, 1), &straight, false);
        run(&workers(&half, 2), &split, false);
        run(&workers(&full, 3), &split, true);
        let a = SafeTensors::load(&straight.join("checkpoint.safetensors")).unwrap();
        assert_eq!(a.metadata.get("step"), Some(&(2 * k).to_string()));
        same_checkpoints(&straight, &split, &["step", "rng"], norm);
        let la = losses(&straight);
        let lb = losses(&split);
        assert_eq!(
            la[la.len() - k..],
            lb[lb.len() - k..],
            "{norm}: loss trajectories differ"
        );
        let _ = std::fs::remove_dir_all(&straight);
        let _ = std::fs::remove_dir_all(&split);
    }
}

#[test]
fn corrupt_dataset_gives_clear_error() {
    let gpu = common::gpu();
    let dir = tmp("corrupt-data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        b"\x1f\x8b\x08garbage",
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), b"junk").unwrap();
    let d = dir.to_string_lossy().to_string();
    let a = args(&["--data-dir", &d, "--max-steps", "1"]);
    let e = effnet::cli::train::run(gpu, &a).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("corrupt"),
        "{e}"
    );
}

#[test]
fn finetune_trains_only_the_head_and_chosen_stages() {
    if !have_data() {
        return;
    }
    use effnet::nn::ParamId;
    use effnet::train::model::Trainable;
    let gpu = common::gpu();
    let a = args(&["--norm", "ln-pn", "--max-steps", "3", "--ema-decay", "0"]);
    let mut cfg = train_config(&a).unwrap();
    let (tr, te) = trainer::load_datasets(&cfg).unwrap();
    let mcfg = model_config(&a, tr.classes.len(), tr.c).unwrap();
    let mut m = EfficientNet::new(gpu, &mcfg, cfg.batch, 48).unwrap();
    m.set_finetune_stages(&[7]).unwrap();
    assert!(m.set_finetune_stages(&[9]).is_err());
    m.set_finetune_stages(&[7]).unwrap();
    m.store()
        .initialize(gpu, &mut effnet::util::Rng::new(1), 0.0)
        .unwrap();
    let n = m.store().defs.len();
    let before: Vec<Vec<f32>> = (0..n)
        .map(|i| gpu.read(m.store().w(ParamId(i))).unwrap())
        .collect();
    cfg.image_size = 48.into();
    cfg.head_only = true;
    cfg.eval_preprocessing = true;
    let dir = RunDir::open(&tmp("finetune"), Mode::Fresh).unwrap();
    let (mean, std) = ([0.2860f32], [0.3530f32]);
    let s = trainer::train(
        gpu,
        &mut m,
        &cfg,
        Arc::new(tr),
        &Arc::new(te),
        (&mean, &std),
        &dir,
        trainer::Start::Keep,
        "{}",
        10,
        true,
    )
    .unwrap();
    assert_eq!(s.steps, 3);
    let mut changed = 0;
    for (i, old) in before.iter().enumerate() {
        let name = m.store().defs[i].name.clone();
        let after = gpu.read(m.store().w(ParamId(i))).unwrap();
        if m.is_head_param(&name) {
            changed += (&after != old) as usize;
        } else {
            assert_eq!(&after, old, "{name} changed although frozen");
        }
    }
    assert!(
        m.is_head_param("blocks.6.0.conv_pw.weight")
            && !m.is_head_param("blocks.5.0.conv_pw.weight")
    );
    assert!(changed > 5, "only {changed} trained tensors changed");
}

/// The trainer's own evaluation and `effnet eval` of the checkpoint it wrote agree
/// exactly, for BatchNorm, LN+PN and GN+PN, with the weight average and with the raw
/// weights: both rebuild the Proxy Norm statistics of the weights they evaluate, and
/// swap the BatchNorm statistics' average in with the weights'. The BatchNorm run also
/// checks that the average covers the running statistics with the warm-up decay, and that
/// `effnet export` writes `num_batches_tracked`.
#[test]
fn trainer_and_eval_agree_on_the_same_checkpoint() {
    if !have_data() {
        return;
    }
    let gpu = common::gpu();
    for norm in ["bn", "ln-pn", "gn-pn"] {
        for ema in ["0.9", "0"] {
            let dir = tmp(&format!("agree-{norm}-{ema}"));
            // BatchNorm on the depthwise B0, which has a timm equivalent to export to.
            let model = if norm == "bn" { "b0" } else { "b0-g16" };
            let mut a = args(&[
                "--model",
                model,
                "--norm",
                norm,
                "--max-steps",
                "1",
                "--ema-decay",
                ema,
            ]);
            a.run_dir = dir.clone();
            let out = effnet::cli::train::run(gpu, &a).unwrap();
            let trained = out[0].1.eval.clone().expect("final evaluation");
            let raw = ema == "0";
            let evaluated = effnet::cli::train::eval(
                gpu,
                &effnet::cli::train::EvalArgs {
                    checkpoint: dir.clone(),
                    raw,
                    image_size: None,
                    data_dir: None,
                    limit: Some(64),
                    precision: PrecisionArg::F32,
                },
            )
            .unwrap();
            assert_eq!(
                (evaluated.loss.to_bits(), &evaluated.confusion),
                (trained.loss.to_bits(), &trained.confusion),
                "{norm}, raw {raw}: effnet eval gives loss {} vs the trainer's {}",
                evaluated.loss,
                trained.loss
            );
            if norm == "bn" && !raw {
                let st = SafeTensors::load(&dir.join("checkpoint.safetensors")).unwrap();
                // One update of the average with the warm-up decay min(0.9, 2/11) from
                // the initial statistics (mean 0, variance 1).
                let d1 = 2.0f64 / 11.0;
                for (stat, init) in [("running_mean", 0.0), ("running_var", 1.0)] {
                    let s = &st.tensors[&format!("state/bn1.{stat}")].data;
                    let avg = &st.tensors[&format!("state_ema/bn1.{stat}")].data;
                    for (x, m) in s.iter().zip(avg) {
                        let want = d1 * init + (1.0 - d1) * *x as f64;
                        assert!((*m as f64 - want).abs() < 1e-6, "{stat}: {m} vs {want}");
                    }
                }
                let out = dir.join("timm.safetensors");
                effnet::interop::export_checkpoint(
                    &dir.join("checkpoint.safetensors"),
                    &out,
                    false,
                )
                .unwrap();
                let t = SafeTensors::load(&out).unwrap();
                let nbt = &t.tensors["blocks.0.0.bn1.num_batches_tracked"];
                assert_eq!((nbt.shape.len(), nbt.data[0]), (0, 1.0));
                assert_eq!(
                    t.tensors["bn1.running_var"].data,
                    st.tensors["state_ema/bn1.running_var"].data
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// A tiny image-folder dataset: 3 classes of 64x48 JPEGs, 16 train and 4 val images each.
fn folder_tree(name: &str) -> PathBuf {
    let d = tmp(name);
    let spec = effnet::data::synth::SynthSpec {
        classes: 3,
        train_per_class: 16,
        val_per_class: 4,
        width: 64,
        height: 48,
        ..Default::default()
    };
    effnet::data::synth::write_tree(&d, &spec).unwrap();
    d
}

#[test]
fn folder_dataset_trains_with_workers_and_keeps_class_names() {
    let gpu = common::gpu();
    let data = folder_tree("folder-data");
    let run_dir = tmp("folder-run");
    let (d, r) = (data.to_string_lossy(), run_dir.to_string_lossy());
    let a = args(&[
        "--dataset",
        "folder",
        "--data-dir",
        &d,
        "--max-steps",
        "3",
        "--workers",
        "2",
        // 3 steps an epoch: every round(0.67 x 3) = 2 steps, and at the end.
        "--eval-every",
        "0.67",
        "--run-dir",
        &r,
    ]);
    let out = effnet::cli::train::run(gpu, &a).unwrap();
    let s = &out[0].1;
    assert_eq!((s.steps, s.workers, s.skipped_images), (3, 2, 0));
    let eval_steps: Vec<u64> = std::fs::read_to_string(run_dir.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        eval_steps,
        [2, 3],
        "a fraction of an epoch evaluates mid-epoch"
    );
    assert!((0.0..=1.0).contains(&s.data_wait), "{}", s.data_wait);
    assert!(s.last_loss.is_finite());
    // The class list travels in the checkpoint; eval reads it (and checks the test set).
    let st = SafeTensors::load(&trainer::checkpoint_path(&run_dir)).unwrap();
    assert_eq!(
        trainer::class_names(&st.metadata).unwrap(),
        ["class_000", "class_001", "class_002"]
    );
    let e = effnet::cli::train::EvalArgs {
        checkpoint: run_dir.clone(),
        raw: true,
        image_size: None,
        data_dir: None,
        limit: None,
        precision: PrecisionArg::F32,
    };
    let r = effnet::cli::train::eval(gpu, &e).unwrap();
    assert_eq!(r.images, 12);
    // A checkpoint whose classes are not the test set's is refused.
    for split in ["train", "val"] {
        let d = data.join(split);
        std::fs::rename(d.join("class_002"), d.join("class_zzz")).unwrap();
    }
    let err = effnet::cli::train::eval(gpu, &e).unwrap_err().to_string();
    assert!(
        err.contains("class_zzz") && err.contains("trained on"),
        "{err}"
    );
}

/// `--image-size HxW` end to end on an image folder (random-resized crops of that aspect
/// ratio, centre crops at evaluation): the checkpoint stores the size as `{"h", "w"}`,
/// `effnet eval` evaluates at it, and a run resumed halfway equals an uninterrupted one
/// bit for bit.
#[test]
fn non_square_run_trains_evaluates_and_resumes_bit_exactly() {
    let gpu = common::gpu();
    let data = folder_tree("rect-data");
    let (straight, split) = (tmp("rect-straight"), tmp("rect-split"));
    let d = data.to_string_lossy().to_string();
    let go = |dir: &Path, steps: &str, more: &[&str]| {
        let r = dir.to_string_lossy().to_string();
        let mut v = vec![
            "--dataset",
            "folder",
            "--data-dir",
            &d,
            "--norm",
            "bn",
            "--image-size",
            "16x24",
            "--max-steps",
            steps,
            "--run-dir",
            &r,
        ];
        v.extend_from_slice(more);
        effnet::cli::train::run(gpu, &args(&v)).unwrap()
    };
    let out = go(&straight, "4", &[]);
    assert_eq!(out[0].1.steps, 4);
    go(&split, "2", &[]);
    go(&split, "4", &["--resume", "--allow-schedule-change"]);
    let a = SafeTensors::load(&trainer::checkpoint_path(&straight)).unwrap();
    let b = SafeTensors::load(&trainer::checkpoint_path(&split)).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&a.metadata["train_config"]).unwrap();
    assert_eq!(cfg["image_size"], serde_json::json!({"h": 16, "w": 24}));
    assert_eq!(a.metadata.get("step"), b.metadata.get("step"));
    for (name, t) in &a.tensors {
        let same = t
            .data
            .iter()
            .zip(&b.tensors[name].data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} differs after resume");
    }
    let e = effnet::cli::train::EvalArgs {
        checkpoint: straight.clone(),
        raw: true,
        image_size: Some("48x24".parse().unwrap()),
        data_dir: None,
        limit: None,
        precision: PrecisionArg::F32,
    };
    assert_eq!(effnet::cli::train::eval(gpu, &e).unwrap().images, 12);
    for dir in [&data, &straight, &split] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn corrupt_image_mid_run_stops_naming_it_or_is_skipped() {
    let gpu = common::gpu();
    let data = folder_tree("folder-bad");
    let bad = data.join("train/class_001/00003.jpg");
    let b = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &b[..b.len() / 3]).unwrap();
    let (d, r) = (
        data.to_string_lossy().to_string(),
        tmp("folder-bad-run").to_string_lossy().to_string(),
    );
    let base = [
        "--dataset",
        "folder",
        "--data-dir",
        &d,
        "--max-steps",
        "3",
        "--workers",
        "2",
        "--run-dir",
        &r,
    ];
    let e = effnet::cli::train::run(gpu, &args(&base))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("00003.jpg") && e.contains("--skip-bad-images"),
        "{e}"
    );
    let mut skip = base.to_vec();
    skip.push("--skip-bad-images");
    // The failed run left its metrics behind; the retry replaces them.
    skip.push("--overwrite");
    let out = effnet::cli::train::run(gpu, &args(&skip)).unwrap();
    // Three steps = one epoch of 48 images: the bad one is met once.
    assert_eq!((out[0].1.steps, out[0].1.skipped_images), (3, 1));
}

/// A training image that no decoder reads is met first by the start-up statistics: it
/// stops the run naming the file and the flag, and `--skip-bad-images` leaves it out there
/// as well as in the batches. A run stopped by a bad image mid-epoch continues with
/// `--resume --skip-bad-images`.
#[test]
fn undecodable_image_is_skipped_from_start_and_on_resume() {
    let gpu = common::gpu();
    let data = folder_tree("folder-garbage");
    let bad = data.join("train/class_000/00002.jpg");
    std::fs::write(&bad, b"garbage").unwrap();
    let (d, r) = (
        data.to_string_lossy().to_string(),
        tmp("folder-garbage-run").to_string_lossy().to_string(),
    );
    let base = [
        "--dataset",
        "folder",
        "--data-dir",
        &d,
        "--max-steps",
        "6",
        "--checkpoint-every",
        "1",
        "--seed",
        "1",
        "--run-dir",
        &r,
    ];
    let e = effnet::cli::train::run(gpu, &args(&base))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("00002.jpg") && e.contains("--skip-bad-images"),
        "{e}"
    );
    // Now a file the statistics' decoder reads but the loader's does not (a truncated
    // JPEG), so the run stops mid-epoch after a checkpoint.
    let trunc = data.join("train/class_001/00003.jpg");
    let b = std::fs::read(&trunc).unwrap();
    std::fs::write(&trunc, &b[..b.len() / 3]).unwrap();
    std::fs::copy(data.join("train/class_000/00001.jpg"), &bad).unwrap();
    let mut fresh = base.to_vec();
    fresh.push("--overwrite");
    let e = effnet::cli::train::run(gpu, &args(&fresh))
        .unwrap_err()
        .to_string();
    assert!(e.contains("00003.jpg"), "{e}");
    let mut resume = base.to_vec();
    resume.extend(["--resume", "--skip-bad-images"]);
    let out = effnet::cli::train::run(gpu, &args(&resume)).unwrap();
    assert_eq!(out[0].1.steps, 6);
    assert!(out[0].1.skipped_images >= 1);
    // And a garbage file with the flag from the start: left out of the statistics and
    // the batches.
    std::fs::write(&bad, b"garbage").unwrap();
    let mut skip = fresh.clone();
    skip.push("--skip-bad-images");
    let out = effnet::cli::train::run(gpu, &args(&skip)).unwrap();
    assert_eq!(out[0].1.steps, 6);
    assert!(out[0].1.skipped_images >= 2, "{}", out[0].1.skipped_images);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

/// `train --init` from an exported (timm-named) checkpoint with `--freeze-stages 2
/// --freeze-bn`: the stem and stages 1-2 keep the file's weights bit for bit, every
/// BatchNorm keeps the file's running statistics, later stages train, and a resumed
/// fine-tune equals an uninterrupted one bit for bit.
#[test]
fn finetune_from_init_freezes_and_resumes_bit_exactly() {
    if !have_data() {
        return;
    }
    let gpu = common::gpu();
    let (src, straight, split) = (tmp("init-src"), tmp("init-straight"), tmp("init-split"));
    let model = ["--model", "efficientnet_b0", "--ema-decay", "0.9"];
    let with = |dir: &Path, extra: &[&str]| {
        let d = dir.display().to_string();
        let mut v: Vec<&str> = model.to_vec();
        v.extend_from_slice(extra);
        let mut a = args(&v);
        a.run_dir = PathBuf::from(d);
        a
    };
    effnet::cli::train::run(gpu, &with(&src, &["--max-steps", "2"])).unwrap();
    let file = src.join("export.safetensors");
    effnet::interop::export_checkpoint(&src.join("checkpoint.safetensors"), &file, false).unwrap();
    let f = file.display().to_string();
    let ft = |steps: &str| -> Vec<String> {
        [
            "--init",
            &f,
            "--freeze-stages",
            "2",
            "--freeze-bn",
            "--max-steps",
            steps,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    effnet::cli::train::run(gpu, &with(&straight, &strs(&ft("4")))).unwrap();
    effnet::cli::train::run(gpu, &with(&split, &strs(&ft("2")))).unwrap();
    let mut resume = ft("4");
    resume.extend(["--resume".into(), "--allow-schedule-change".into()]);
    effnet::cli::train::run(gpu, &with(&split, &strs(&resume))).unwrap();

    let s = SafeTensors::load(&src.join("checkpoint.safetensors")).unwrap();
    let a = SafeTensors::load(&straight.join("checkpoint.safetensors")).unwrap();
    let b = SafeTensors::load(&split.join("checkpoint.safetensors")).unwrap();
    let bits = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
    assert_eq!(a.metadata.get("step"), Some(&"4".to_string()));
    // timm's model, PyTorch momentum 0.1: stated in effnet's convention.
    assert!(
        a.metadata["bn_momentum"].contains("m = 0.9;"),
        "{:?}",
        a.metadata
    );
    assert!(a.metadata["bn_momentum"].contains("momentum=0.1)"));
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        assert!(
            bits(&t.data, &b.tensors[name].data),
            "{name} differs after resume"
        );
    }
    let (mut frozen, mut trained) = (0, 0);
    for (name, t) in &a.tensors {
        let Some(n) = name.strip_prefix("w/") else {
            continue;
        };
        let init = &s.tensors[&format!("ema/{n}")].data;
        let is_frozen = n.starts_with("conv_stem.")
            || n.starts_with("bn1.")
            || n.starts_with("blocks.0.")
            || n.starts_with("blocks.1.");
        if is_frozen {
            assert!(bits(&t.data, init), "frozen {n} changed");
            frozen += 1;
        } else if n.ends_with(".weight") && !bits(&t.data, init) {
            trained += 1;
        }
    }
    assert!(
        frozen > 10 && trained > 20,
        "{frozen} frozen, {trained} trained"
    );
    for (name, t) in a.tensors.iter().filter(|(n, _)| n.starts_with("state/")) {
        let init = &s.tensors[&format!("state_ema/{}", &name["state/".len()..])].data;
        assert!(bits(&t.data, init), "frozen BatchNorm {name} changed");
    }
    for d in [&src, &straight, &split] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `--model` takes timm names (their norm and conventions), `--gn-group-size` sets
/// GroupNorm by channels per group (timm's convention), and flags that contradict the
/// model are refused.
#[test]
fn timm_model_names_and_gn_group_size() {
    let cfg = |extra: &[&str]| model_config(&args(extra), 10, 1);
    let c = cfg(&["--model", "efficientnet_b0_gn"]).unwrap();
    assert_eq!((c.norm_eps, c.gn_group_size), (1e-5, Some(8)));
    let c = cfg(&["--model", "b0", "--norm", "gn", "--gn-group-size", "8"]).unwrap();
    assert_eq!(c.norm_groups(32), 4);
    assert_eq!(
        effnet::interop::timm_equivalent(&c).unwrap().name,
        "efficientnet_b0_gn"
    );
    let c = cfg(&["--model", "b0", "--norm", "gn", "--gn-groups", "2"]).unwrap();
    assert_eq!((c.gn_group_size, c.norm_groups(32)), (None, 2));
    assert_eq!(cfg(&["--model", "b0"]).unwrap().norm.name(), "ln-pn");
    for (extra, want) in [
        (
            &["--model", "b0", "--norm", "bn", "--gn-group-size", "8"][..],
            "--norm gn",
        ),
        (
            &["--model", "b0", "--norm", "gn", "--gn-group-size", "7"][..],
            "7 channels per group",
        ),
        (
            &["--model", "efficientnet_b0", "--norm", "ln"][..],
            "preset b0",
        ),
        (
            &["--model", "b0-g16", "--norm", "gn", "--freeze-bn"][..],
            "--freeze-bn",
        ),
    ] {
        let e = cfg(extra).unwrap_err().to_string();
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    let e = train_config(&args(&["--freeze-stages", "8"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("7 stages"), "{e}");
}
