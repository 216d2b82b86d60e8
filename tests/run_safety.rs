//! A run is never lost: refused fresh runs over a previous one, the run folder's lock,
//! stale partial checkpoints, SIGINT/SIGTERM (real child processes), validated flags,
//! resume compatibility and history, the FixRes rule and --data-dir in `effnet eval`, and
//! checkpoints that never hold non-finite values. Tiny models on Fashion-MNIST (CI
//! installs dataset-fashion-mnist).
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use effnet::cli::train::{self as cli, EvalArgs, TrainArgs};
use effnet::train::run_dir::{Mode, RunDir};
use effnet::util::safetensors::SafeTensors;

/// Later flags override earlier ones (the tests add to a base configuration).
#[derive(Parser)]
#[command(args_override_self = true)]
struct Wrap {
    #[command(flatten)]
    a: TrainArgs,
}

/// The tiny configuration every run here uses, plus `extra`.
const TINY: [&str; 16] = [
    "--width",
    "0.25",
    "--depth",
    "0.25",
    "--image-size",
    "16",
    "--batch",
    "16",
    "--warmup-epochs",
    "0",
    "--log-every",
    "1",
    "--eval-limit",
    "32",
    "--schedule",
    "constant",
];

fn argv(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = TINY.iter().map(|s| s.to_string()).collect();
    v.extend(["--run-dir".to_string(), dir.display().to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn args(dir: &Path, extra: &[&str]) -> TrainArgs {
    let mut v = vec!["t".to_string()];
    v.extend(argv(dir, extra));
    Wrap::parse_from(v).a
}

fn train(dir: &Path, extra: &[&str]) -> effnet::Result<()> {
    cli::run(common::gpu(), &args(dir, extra)).map(|_| ())
}

fn have_data() -> bool {
    let ok = Path::new(effnet::data::FASHION_MNIST_DIR).exists();
    if !ok && std::env::var("CI").is_ok() {
        panic!("CI must install dataset-fashion-mnist");
    }
    ok
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-safety-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn meta(dir: &Path, key: &str) -> String {
    let st = SafeTensors::load(&dir.join("checkpoint.safetensors")).unwrap();
    st.metadata[key].clone()
}

fn logged_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Every numeric flag out of range, and every unknown name, is refused naming the flag;
/// nothing is trained (no GPU or data needed).
#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let dir = tmp("flags");
    let cases: &[(&[&str], &str)] = &[
        (&["--lr", "nan"], "--lr NaN"),
        (&["--lr=-1"], "--lr -1"),
        (&["--lr", "0"], "--lr 0"),
        (&["--lr", "1e39"], "--lr 1e39: must be"),
        (&["--epochs", "nan"], "--epochs NaN"),
        (&["--epochs", "0"], "--epochs 0"),
        (
            &["--epochs", "1e300"],
            "--epochs 1e300: must be a number > 0 and at most 1e6 (for a run of a set length",
        ),
        (&["--warmup-epochs", "1e7"], "--warmup-epochs 1e7"),
        (&["--max-steps", "0"], "--max-steps 0"),
        (&["--weight-decay=-1"], "--weight-decay -1"),
        (&["--weight-decay", "inf"], "--weight-decay inf"),
        (&["--label-smoothing", "1"], "--label-smoothing 1"),
        (&["--warmup-epochs", "inf"], "--warmup-epochs inf"),
        (&["--ema-decay", "1"], "--ema-decay 1"),
        (&["--ema-decay", "nan"], "--ema-decay NaN"),
        (&["--log-every", "0"], "--log-every 0"),
        (&["--checkpoint-every", "0"], "--checkpoint-every 0"),
        (&["--eval-every", "nan"], "--eval-every NaN"),
        (&["--eval-limit", "0"], "--eval-limit 0"),
        (&["--batch", "0"], "--batch 0"),
        (
            &["--workers", "100000"],
            "--workers 100000 is more than 256",
        ),
        (&["--image-size", "4"], "--image-size 4"),
        (
            &["--image-size", "16x4"],
            "--image-size 16x4: must be N or HxW",
        ),
        (&["--image-size", "9000x16"], "each side in 8..=8192"),
        (
            &["--image-size", "24x40", "--finetune-size", "24x48"],
            "width: size 48 breaks the train % 32 == test % 32",
        ),
        (&["--width", "nan"], "--width NaN"),
        (&["--width", "0"], "--width 0"),
        (&["--depth=-1"], "--depth -1"),
        (&["--dropout", "1.5"], "--dropout 1.5"),
        (&["--drop-connect=-0.1"], "--drop-connect -0.1"),
        (
            &["--finetune-size", "40"],
            "size 40 breaks the train % 32 == test % 32",
        ),
        (
            &["--finetune-size", "48", "--finetune-lr", "nan"],
            "--finetune-lr NaN",
        ),
        (
            &["--finetune-size", "48", "--finetune-epochs", "0"],
            "--finetune-epochs 0",
        ),
        (
            &["--finetune-size", "48", "--finetune-stages", "9"],
            "--finetune-stages 9",
        ),
    ];
    for (extra, want) in cases {
        let a = args(&dir, extra);
        let e = match cli::train_config(&a) {
            Err(e) => e.to_string(),
            Ok(cfg) => match a.finetune_size {
                Some(ft) => cli::finetune_config(&a, &cfg, ft)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
                None => cli::model_config(&a, 10, 1)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            },
        };
        assert!(e.contains(want), "{extra:?}: got '{e}'");
    }
    // Names are checked by clap, with the valid values listed.
    for bad in [
        ["--norm", "batchnorm"],
        ["--optimizer", "adam"],
        ["--schedule", "linear"],
        ["--dataset", "imagenet"],
    ] {
        let mut v = vec!["t".to_string()];
        v.extend(argv(&dir, &bad));
        let e = Wrap::try_parse_from(v).err().expect("refused").to_string();
        assert!(e.contains("possible values"), "{bad:?}: {e}");
    }
    // Sizes that are not N or HxW are refused by the parser, with the forms it takes.
    for bad in ["0x5", "axb", "24x", "0"] {
        let mut v = vec!["t".to_string()];
        v.extend(argv(&dir, &["--image-size", bad]));
        let e = Wrap::try_parse_from(v).err().expect("refused").to_string();
        assert!(
            e.contains("--image-size") && e.contains("is not N or HxW"),
            "{bad}: {e}"
        );
    }
    let a = args(&dir, &["--image-size", "24x40", "--finetune-size", "56x40"]);
    let cfg = cli::train_config(&a).unwrap();
    assert_eq!((cfg.image_size.h, cfg.image_size.w), (24, 40));
    cli::finetune_config(&a, &cfg, a.finetune_size.unwrap()).unwrap();
    for bad in [
        &["--resume", "--overwrite"][..],
        &["--allow-schedule-change"],
    ] {
        let mut v = vec!["t".to_string()];
        v.extend(argv(&dir, bad));
        assert!(Wrap::try_parse_from(v).is_err(), "{bad:?} accepted");
    }
    assert!(!dir.exists(), "a refused command created its run folder");
}

/// A fresh run never overwrites a previous one; --overwrite replaces it (no mixed
/// metrics); --resume refuses incompatible changes naming each, refuses schedule changes
/// unless allowed, drops log records past the checkpoint, keeps the history, and refuses
/// a corrupt checkpoint; a misspelled folder is an error that creates nothing.
#[test]
fn run_folder_lifecycle() {
    if !have_data() {
        return;
    }
    let dir = tmp("lifecycle");
    let ckpt = dir.join("checkpoint.safetensors");
    train(&dir, &["--max-steps", "2", "--norm", "gn"]).unwrap();
    let first = std::fs::read(&ckpt).unwrap();
    let e = train(&dir, &["--max-steps", "2", "--norm", "gn"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds a previous run") && e.contains("--resume") && e.contains("--overwrite"),
        "{e}"
    );
    assert_eq!(std::fs::read(&ckpt).unwrap(), first, "checkpoint touched");

    // Incompatible changes, each named.
    let e = train(
        &dir,
        &[
            "--max-steps",
            "2",
            "--norm",
            "ln",
            "--resume",
            "--batch",
            "8",
            "--image-size",
            "48",
            "--optimizer",
            "sgd",
            "--seed",
            "3",
        ],
    )
    .unwrap_err()
    .to_string();
    for want in [
        "--batch",
        "--image-size",
        "--optimizer",
        "--seed",
        "model norm",
    ] {
        assert!(e.contains(want), "{want} not named: {e}");
    }
    // A schedule change needs permission.
    let e = train(&dir, &["--max-steps", "3", "--norm", "gn", "--resume"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--allow-schedule-change") && e.contains("--max-steps"),
        "{e}"
    );

    // A record logged after the checkpoint by a killed session is dropped on resume.
    let mut log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    log.push_str("{\"step\":7,\"epoch\":0.0,\"loss\":1.0,\"lr\":0.0,\"img_per_s\":0.0}\n");
    std::fs::write(dir.join("metrics.jsonl"), log).unwrap();
    train(
        &dir,
        &[
            "--max-steps",
            "3",
            "--norm",
            "gn",
            "--resume",
            "--allow-schedule-change",
            "--lr",
            "0.001",
        ],
    )
    .unwrap();
    assert_eq!(meta(&dir, "step"), "3");
    assert_eq!(logged_steps(&dir), vec![1, 2, 3]);
    let h: serde_json::Value = serde_json::from_str(&meta(&dir, "config_history")).unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["step"], 0);
    assert_eq!(h[1]["step"], 2);
    assert_eq!(h[1]["train_config"]["lr"], 0.001);
    assert!(h[0]["train_config"]["lr"] != h[1]["train_config"]["lr"]);

    // A checkpoint whose bytes changed after it was written is refused by its checksum.
    let good = std::fs::read(&ckpt).unwrap();
    let mut bytes = good.clone();
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
    let off = header["w/conv_stem.weight"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    bytes[8 + hlen + off..8 + hlen + off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&ckpt, &bytes).unwrap();
    let e = train(&dir, &["--max-steps", "3", "--norm", "gn", "--resume"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    // A consistent file holding a NaN weight (re-saved with a valid checksum) is refused
    // on resume by the finiteness check, naming the tensor.
    std::fs::write(&ckpt, &good).unwrap();
    let mut st = effnet::util::safetensors::SafeTensors::load(&ckpt).unwrap();
    st.tensors.get_mut("w/conv_stem.weight").unwrap().data[0] = f32::NAN;
    st.save(&ckpt).unwrap();
    let e = train(&dir, &["--max-steps", "3", "--norm", "gn", "--resume"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("w/conv_stem.weight") && e.contains("corrupt"),
        "{e}"
    );

    // --overwrite starts over: only the new run's records remain.
    train(&dir, &["--max-steps", "1", "--norm", "gn", "--overwrite"]).unwrap();
    assert_eq!(logged_steps(&dir), vec![1]);
    assert_eq!(meta(&dir, "step"), "1");

    // A misspelled folder: an error that names the folder next to it, creating nothing.
    let typo = dir.with_file_name(format!(
        "{}-typo",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let e = train(&typo, &["--max-steps", "1", "--norm", "gn", "--resume"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nothing to resume") && e.contains(&dir.display().to_string()),
        "{e}"
    );
    assert!(!typo.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Warm-up as long as the whole run is refused; --max-steps sets the schedule's length
/// (the cosine decays to ~0 at the last step instead of staying near the peak).
#[test]
fn max_steps_sets_the_schedule_length() {
    if !have_data() {
        return;
    }
    let dir = tmp("schedule");
    let e = train(
        &dir,
        &["--max-steps", "4", "--warmup-epochs", "1", "--norm", "gn"],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--warmup-epochs 1") && e.contains("whole run of 4 steps"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    train(
        &dir,
        &[
            "--max-steps",
            "4",
            "--norm",
            "gn",
            "--schedule",
            "cosine",
            "--lr",
            "0.002",
        ],
    )
    .unwrap();
    let lrs: Vec<f64> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"]
                .as_f64()
                .unwrap()
        })
        .collect();
    // lr at the 4th (last) step: 0.5 * peak * (1 + cos(pi * 3/4)).
    let want = 0.5 * 0.002 * (1.0 + (std::f64::consts::PI * 0.75).cos());
    assert!((lrs[3] - want).abs() < 1e-9, "{lrs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The folder's lock: a second opener in this process and a second `effnet train`
/// process are refused with the holder's pid; the lock goes with the holder.
#[test]
fn second_process_is_refused_naming_the_holder() {
    let dir = tmp("lock");
    let held = RunDir::open(&dir, Mode::Fresh).unwrap();
    let e = RunDir::open(&dir, Mode::Fresh).unwrap_err().to_string();
    let who = format!("process {}", std::process::id());
    assert!(e.contains("is in use by") && e.contains(&who), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_effnet"))
        .arg("train")
        .args(argv(&dir, &["--max-steps", "1"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&who), "{err}");
    drop(held);
    RunDir::open(&dir, Mode::Fresh).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A build without the `mpi` feature started by an MPI launcher as one of several ranks
/// refuses to train (K copies would each train alone and fight over the folder), naming
/// the feature; it touches nothing.
#[cfg(not(feature = "mpi"))]
#[test]
fn ranks_of_a_build_without_mpi_are_refused() {
    let dir = tmp("nompi");
    let out = Command::new(env!("CARGO_BIN_EXE_effnet"))
        .arg("train")
        .args(argv(&dir, &["--max-steps", "1"]))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("built without MPI") && err.contains("--features mpi"),
        "{err}"
    );
    assert!(!dir.exists(), "the refused run created {}", dir.display());
}

/// Partial checkpoints of killed writers are removed when a run opens its folder (and
/// its fine-tune folders); other files stay.
#[test]
fn stale_partial_checkpoints_are_removed() {
    let dir = tmp("stale");
    std::fs::create_dir_all(dir.join("finetune-48")).unwrap();
    let stale = [
        dir.join(".checkpoint.safetensors.tmp4242"),
        dir.join("finetune-48/.checkpoint.safetensors.tmp17"),
    ];
    for p in &stale {
        std::fs::write(p, b"partial").unwrap();
    }
    let other = dir.join(".model.safetensors.tmp1");
    std::fs::write(&other, b"someone else's").unwrap();
    let d = RunDir::open(&dir, Mode::Fresh).unwrap();
    assert_eq!(d.removed_temps, stale.to_vec());
    assert!(stale.iter().all(|p| !p.exists()) && other.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A training child process with its stdout lines.
struct Run {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn(dir: &Path, extra: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_effnet"))
        .arg("train")
        .args(argv(dir, extra))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    Run { child, lines }
}

impl Run {
    /// Wait until the progress line of `step` (or a later one) was printed.
    fn wait_for_step(&self, step: u64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let n = l
                    .strip_prefix("step")
                    .and_then(|r| r.trim_start().split('/').next())
                    .and_then(|n| n.parse::<u64>().ok());
                if n.is_some_and(|n| n >= step) {
                    return;
                }
            }
        }
        panic!("no progress line for step {step}");
    }

    fn signal(&self, sigs: &str) {
        let pid = self.child.id();
        let cmd: Vec<String> = sigs
            .split(',')
            .map(|s| format!("kill -{s} {pid}"))
            .collect();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(cmd.join("; "))
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn finish(self) -> (Option<i32>, String) {
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// First SIGINT: the step finishes, a checkpoint is written, exit 130; the same command
/// with --resume continues from it, and SIGTERM stops that one with exit 143 and a later
/// checkpoint.
#[test]
fn first_signal_checkpoints_and_exits_130_or_143() {
    if !have_data() {
        return;
    }
    let dir = tmp("signal");
    let long = [
        "--max-steps",
        "1000",
        "--checkpoint-every",
        "500",
        "--norm",
        "gn",
    ];
    let r = spawn(&dir, &long);
    r.wait_for_step(2);
    r.signal("INT");
    let (code, err) = r.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains("stopped by SIGINT") && err.contains("--resume"),
        "{err}"
    );
    let s1: u64 = meta(&dir, "step").parse().unwrap();
    assert!((2..500).contains(&s1), "checkpoint at step {s1}");

    let mut again = long.to_vec();
    again.push("--resume");
    let r = spawn(&dir, &again);
    r.wait_for_step(s1 + 1);
    r.signal("TERM");
    let (code, err) = r.finish();
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    let s2: u64 = meta(&dir, "step").parse().unwrap();
    assert!(s2 > s1, "{s2} <= {s1}");
    // A closed terminal (SIGHUP). Before: killed with no checkpoint, exit 129.
    let r = spawn(&dir, &again);
    r.wait_for_step(s2 + 1);
    r.signal("HUP");
    let (code, err) = r.finish();
    assert_eq!(code, Some(129), "{err}");
    assert!(err.contains("stopped by SIGHUP"), "{err}");
    let s3: u64 = meta(&dir, "step").parse().unwrap();
    assert!(s3 > s2, "{s3} <= {s2}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second signal right after the first ends the process at once, without waiting for
/// the step and its checkpoint.
#[test]
fn second_signal_exits_at_once() {
    if !have_data() {
        return;
    }
    let dir = tmp("signal2");
    let r = spawn(
        &dir,
        &[
            "--max-steps",
            "1000",
            "--checkpoint-every",
            "500",
            "--norm",
            "gn",
        ],
    );
    r.wait_for_step(1);
    r.signal("TERM,INT");
    let (code, err) = r.finish();
    assert!(matches!(code, Some(130) | Some(143)), "{code:?} {err}");
    assert!(!err.contains("stopped by"), "took the graceful path: {err}");
    assert!(!dir.join("checkpoint.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An update that makes the weights non-finite although the step's loss was finite (SGD
/// with an absurd learning rate) writes no checkpoint and says the learning rate is the
/// likely cause.
#[test]
fn non_finite_weights_are_never_checkpointed() {
    if !have_data() {
        return;
    }
    let dir = tmp("nan");
    let e = train(
        &dir,
        &[
            "--max-steps",
            "3",
            "--checkpoint-every",
            "1",
            "--optimizer",
            "sgd",
            "--lr",
            "3e38",
            "--norm",
            "bn",
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("non-finite") && e.contains("learning rate") && e.contains("not written"),
        "{e}"
    );
    assert!(!dir.join("checkpoint.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `effnet eval` keeps the FixRes rule for --image-size, and --data-dir evaluates a
/// checkpoint whose recorded dataset folder is gone (a copy on another machine).
#[test]
fn eval_image_size_rule_and_data_dir() {
    if !have_data() {
        return;
    }
    let dir = tmp("eval");
    // Train on a copy of the dataset (links), then remove the copy.
    let copy = tmp("eval-data");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(effnet::data::FASHION_MNIST_DIR).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), copy.join(e.file_name())).unwrap();
    }
    let d = copy.display().to_string();
    train(
        &dir,
        &["--max-steps", "1", "--norm", "gn", "--data-dir", &d],
    )
    .unwrap();
    std::fs::remove_dir_all(&copy).unwrap();
    let eval = |image_size: Option<usize>, data_dir: Option<&str>| {
        cli::eval(
            common::gpu(),
            &EvalArgs {
                checkpoint: dir.clone(),
                raw: false,
                image_size: image_size.map(Into::into),
                data_dir: data_dir.map(PathBuf::from),
                limit: Some(16),
                precision: effnet::cli::precision::PrecisionArg::F32,
            },
        )
    };
    let e = eval(None, None).unwrap_err().to_string();
    assert!(e.contains("--data-dir"), "{e}");
    let e = eval(Some(40), Some(effnet::data::FASHION_MNIST_DIR))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--image-size") && e.contains("48"), "{e}");
    let r = eval(Some(48), Some(effnet::data::FASHION_MNIST_DIR)).unwrap();
    assert_eq!(r.images, 16);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `checkpoint::save` refuses a model holding a NaN or an infinity anywhere (weights,
/// average, BatchNorm statistics), naming the tensor, and leaves the previous checkpoint
/// as it was.
#[test]
fn checkpoint_save_refuses_non_finite_values() {
    use effnet::models::{ModelConfig, NormChoice};
    use effnet::nn::ParamId;
    use effnet::train::checkpoint;
    use effnet::train::model::Trainable;
    let gpu = common::gpu();
    let mut cfg = ModelConfig::preset("b0").unwrap();
    cfg.width = 0.25;
    cfg.depth = 0.25;
    cfg.norm = NormChoice::Bn;
    cfg.classes = 10;
    cfg.in_channels = 1;
    let m = effnet::models::efficientnet::EfficientNet::new(gpu, &cfg, 2, 16).unwrap();
    m.store()
        .initialize(gpu, &mut effnet::util::Rng::new(1), 0.0)
        .unwrap();
    let dir = tmp("save");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    checkpoint::save(&path, gpu, &m, Default::default()).unwrap();
    let good = std::fs::read(&path).unwrap();
    let store = m.store();
    let last = store.defs.len() - 1;
    let ema = store.tensor_of(&store.ema, ParamId(last)).clone();
    let (name, running) = m.state_tensors().remove(1);
    for (t, bad, tensor) in [
        (
            store.w(ParamId(0)).clone(),
            f32::NAN,
            format!("w/{}", store.defs[0].name),
        ),
        (ema, f32::INFINITY, format!("ema/{}", store.defs[last].name)),
        (running, f32::NEG_INFINITY, format!("state/{name}")),
    ] {
        let before = gpu.read(&t).unwrap();
        let mut v = before.clone();
        let mid = v.len() / 2;
        v[mid] = bad;
        gpu.write_f32(&t, &v).unwrap();
        let e = checkpoint::save(&path, gpu, &m, Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&tensor) && e.contains("not written"), "{e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "previous checkpoint changed"
        );
        gpu.write_f32(&t, &before).unwrap();
    }
    checkpoint::save(&path, gpu, &m, Default::default()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The progress line carries the time left once it is measured.
#[test]
fn progress_line_shows_the_eta() {
    use effnet::train::trainer::{format_duration, progress_line, Progress};
    let mut p = Progress {
        step: 20,
        total: 4680,
        epoch: 20.0 / 468.0,
        loss: Some((2.25, 20)),
        lr: 0.002,
        img_per_s: 19.1,
        data_wait: 0.05,
        eta_s: None,
    };
    assert!(
        progress_line(&p).ends_with("ETA ..."),
        "{}",
        progress_line(&p)
    );
    p.eta_s = Some(8.7 * 3600.0);
    let line = progress_line(&p);
    assert!(
        line.starts_with("step     20/4680")
            && line.contains("data-wait   5%")
            && line.ends_with("ETA 8h42m"),
        "{line}"
    );
    assert_eq!(format_duration(125.0), "2m05s");
    assert_eq!(format_duration(9.4), "9s");
}

/// A stop during the final evaluation leaves a checkpoint of the last step and no eval
/// record; `--resume` then does the owed evaluation instead of exiting with none.
#[test]
fn resume_does_an_interrupted_evaluation() {
    if !have_data() {
        return;
    }
    let dir = tmp("owed-eval");
    train(&dir, &["--max-steps", "2", "--norm", "gn"]).unwrap();
    let eval = dir.join("eval.jsonl");
    let first = std::fs::read_to_string(&eval).unwrap();
    assert_eq!(first.lines().count(), 1, "{first}");
    // What an interrupted evaluation leaves: the checkpoint of step 2, no record of it.
    std::fs::write(&eval, "").unwrap();
    train(&dir, &["--max-steps", "2", "--norm", "gn", "--resume"]).unwrap();
    let again = std::fs::read_to_string(&eval).unwrap();
    assert_eq!(again, first, "the owed evaluation gives the same record");
    // A complete run resumed again evaluates nothing more.
    train(&dir, &["--max-steps", "2", "--norm", "gn", "--resume"]).unwrap();
    assert_eq!(std::fs::read_to_string(&eval).unwrap(), first);
    let _ = std::fs::remove_dir_all(&dir);
}
