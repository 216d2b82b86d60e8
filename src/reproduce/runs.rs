//! Training runs of a reproduction. Every run is exactly an `effnet train` command: its
//! flags are parsed by `effnet train`'s own parser and handed to [`crate::cli::train::run`],
//! so a reproduction trains with the same loop, checks and run folders as the main job,
//! and each run can be repeated alone with the command it prints.
//!
//! A finished run leaves `reproduce.json` (its summary) in its run folder, so a
//! reproduction continued with `--resume` reuses finished runs, resumes interrupted ones
//! from their checkpoints and starts the missing ones.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::cli::train::{self, TrainArgs};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// What to do with run folders that already hold runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Refuse to start when any run folder holds a run.
    Fresh,
    /// Continue: reuse finished runs, resume interrupted ones, start missing ones.
    Resume,
    /// Delete previous runs and start over.
    Overwrite,
}

/// Summary file of a finished run inside its run folder.
pub const DONE_FILE: &str = "reproduce.json";

/// One phase of a run (`train`, or the FixRes fine-tune `finetune-<size>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Phase {
    /// `train` or `finetune-<size>`.
    pub name: String,
    /// Resolution of this phase.
    pub image_size: usize,
    /// Steps trained.
    pub steps: u64,
    /// Test top-1 at the end (weight average when enabled).
    pub top1: f64,
    /// Test top-5 at the end.
    pub top5: f64,
    /// Test loss at the end.
    pub test_loss: f64,
    /// Last training loss read back.
    pub last_loss: f64,
    /// Training images per second (excluding evaluation).
    pub img_per_s: f64,
    /// Seconds of training (excluding evaluation).
    pub train_seconds: f64,
}

/// A finished training run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainRun {
    /// Short name (e.g. `gn-s0`).
    pub name: String,
    /// Its run folder.
    pub dir: PathBuf,
    /// The `effnet train` flags (without `--run-dir`, `--resume`, `--overwrite`).
    pub args: Vec<String>,
    /// Its phases in order.
    pub phases: Vec<Phase>,
}

impl TrainRun {
    /// The phase named `name`.
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// The `effnet train` command of this run.
    pub fn command(&self) -> String {
        train_command(&self.args, &self.dir)
    }
}

/// `effnet train <args> --run-dir <dir>` as a shell line.
pub fn train_command(args: &[String], dir: &Path) -> String {
    let mut s = String::from("effnet train");
    for a in args {
        s.push(' ');
        s.push_str(&shell_word(a));
    }
    s.push_str(" --run-dir ");
    s.push_str(&shell_word(&dir.display().to_string()));
    s
}

fn shell_word(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,=:+".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

#[derive(Parser)]
#[command(name = "effnet train", no_binary_name = true)]
struct TrainCommand {
    #[command(flatten)]
    args: TrainArgs,
}

/// Parse `effnet train` flags (as the command line would) into [`TrainArgs`]; the error
/// is clap's message, naming the flag.
pub fn parse_train_args(args: &[String]) -> Result<TrainArgs> {
    TrainCommand::try_parse_from(args)
        .map(|c| c.args)
        .map_err(|e| Error::Config(format!("effnet train {}: {}", args.join(" "), e.render())))
}

/// Check the `effnet train` flags of a run as `effnet train` would (its parser and its
/// configuration checks), before anything trains. A refused flag's message says how a
/// reproduction passes train flags (after `--`).
pub fn check_train_args(args: &[String]) -> Result<TrainArgs> {
    let ta = parse_train_args(args)?;
    let cfg = train::train_config(&ta).map_err(flag_hint)?;
    if let Some(ft) = ta.finetune_size {
        train::finetune_config(&ta, &cfg, ft).map_err(flag_hint)?;
    }
    Ok(ta)
}

/// A refused `effnet train` flag's message, with how a reproduction passes train flags.
fn flag_hint(e: Error) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!(
            "{m} (a reproduction passes `effnet train` flags to every run after `--`, e.g. \
             `effnet reproduce norms --max-steps 20 -- --warmup-epochs 0`)"
        )),
        e => e,
    }
}

/// Files that show a folder holds (part of) a run.
fn holds_run(dir: &Path) -> bool {
    [
        DONE_FILE,
        "checkpoint.safetensors",
        "metrics.jsonl",
        "eval.jsonl",
    ]
    .iter()
    .any(|f| dir.join(f).exists())
}

/// Check every run of a reproduction before anything trains: each `(run folder, effnet
/// train flags)` as `effnet train` would ([`check_train_args`]), and in `Mode::Fresh` that
/// no folder holds a previous run ([`check_fresh`]).
pub fn check_runs(
    runs: impl IntoIterator<Item = (PathBuf, Vec<String>)>,
    mode: Mode,
) -> Result<()> {
    let mut dirs = Vec::new();
    for (dir, mut argv) in runs {
        argv.extend(["--run-dir".into(), dir.display().to_string()]);
        check_train_args(&argv)?;
        dirs.push(dir);
    }
    if mode == Mode::Fresh {
        check_fresh(&dirs)?;
    }
    Ok(())
}

/// Check, before anything trains, that `Mode::Fresh` finds no previous run in `dirs`.
pub fn check_fresh(dirs: &[PathBuf]) -> Result<()> {
    let held: Vec<String> = dirs
        .iter()
        .filter(|d| holds_run(d))
        .map(|d| d.display().to_string())
        .collect();
    if held.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{} already hold{} runs of a previous reproduction. Continue it with --resume \
             (finished runs are reused, interrupted ones resumed), start over with \
             --overwrite (deletes them), or choose another --out",
            held.join(", "),
            if held.len() == 1 { "s" } else { "" }
        )))
    }
}

/// Run `effnet train <args> --run-dir <dir>` (plus `--resume` or `--overwrite` as `mode`
/// and the folder's state say), or reuse the folder's finished run under `Mode::Resume`
/// when it was trained with the same flags.
pub fn run(gpu: &Gpu, name: &str, dir: &Path, args: &[String], mode: Mode) -> Result<TrainRun> {
    let done = dir.join(DONE_FILE);
    if mode == Mode::Resume && done.is_file() {
        let text = std::fs::read_to_string(&done)
            .map_err(|e| Error::file(&done, format!("cannot read: {e}")))?;
        let prev: TrainRun = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                &done,
                format!("not a reproduction summary ({e}): delete it to train this run again"),
            )
        })?;
        if prev.args == args {
            println!("== {name}: finished before, reusing {}", done.display());
            return Ok(prev);
        }
        return Err(Error::file(
            &done,
            format!(
                "this run was trained with other flags ({}), not {}: use --overwrite to \
                 train it again with the new ones, or another --out",
                prev.args.join(" "),
                args.join(" ")
            ),
        ));
    }
    let mut argv: Vec<String> = args.to_vec();
    argv.push("--run-dir".into());
    argv.push(dir.display().to_string());
    match mode {
        Mode::Resume if dir.join("checkpoint.safetensors").is_file() => {
            argv.push("--resume".into())
        }
        Mode::Fresh => {}
        // A folder without a checkpoint may still hold logs of a run killed early.
        Mode::Resume | Mode::Overwrite => argv.push("--overwrite".into()),
    }
    let ta = parse_train_args(&argv)?;
    println!("== {name}: {}", train_command(args, dir));
    let out = train::run(gpu, &ta).map_err(flag_hint)?;
    let phases = out
        .into_iter()
        .map(|(phase, s)| {
            let e = s.eval.as_ref();
            Phase {
                image_size: phase
                    .strip_prefix("finetune-")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(ta.image_size.h),
                name: phase,
                steps: s.steps,
                top1: e.map_or(f64::NAN, |e| e.top1),
                top5: e.map_or(f64::NAN, |e| e.top5),
                test_loss: e.map_or(f64::NAN, |e| e.loss),
                last_loss: s.last_loss,
                img_per_s: s.img_per_s,
                train_seconds: s.train_seconds,
            }
        })
        .collect();
    let run = TrainRun {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        args: args.to_vec(),
        phases,
    };
    let text = serde_json::to_string_pretty(&run)
        .map_err(|e| Error::Config(format!("cannot serialize the run summary: {e}")))?;
    std::fs::write(&done, text).map_err(|e| Error::file(&done, format!("cannot write: {e}")))?;
    Ok(run)
}

/// `(x, y)` points of `x_key`, `y_key` (times `scale`) from a JSONL metrics file (missing
/// file or lines: none).
pub fn curve(path: &Path, x_key: &str, y_key: &str, scale: f64) -> Vec<(f64, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| Some((r[x_key].as_f64()?, r[y_key].as_f64()? * scale)))
        .collect()
}

/// The mean curve of several runs' curves, at the x values of the first (runs of the same
/// recipe log at the same steps).
pub fn mean_curve(curves: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let Some(first) = curves.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let ys: Vec<f64> = curves
                .iter()
                .filter_map(|c| c.get(i).filter(|p| (p.0 - x).abs() < 1e-9).map(|p| p.1))
                .collect();
            (x, ys.iter().sum::<f64>() / ys.len().max(1) as f64)
        })
        .collect()
}
