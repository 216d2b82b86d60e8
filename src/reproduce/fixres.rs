//! `effnet reproduce fixres`: reduced-resolution training followed by a fine-tune of the
//! head at the test resolution (paper 1's "Half" + FixRes fine-tune, SPEC §B.4), against
//! training at the test resolution from the start with the same number of steps. Both use
//! `effnet train` (the low-resolution run with `--finetune-size`); the low-resolution
//! model is also evaluated at the test resolution without the fine-tune (the
//! train-test resolution discrepancy the fine-tune corrects). Writes `fixres.md`,
//! `fixres.json` and `fixres.png`.

use std::path::PathBuf;
use std::time::Instant;

use super::report::{fmt, mean_std, Report};
use super::runs::{self, Mode, TrainRun};
use super::Recipe;
use crate::cli::train::{check_fixres, EvalArgs};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::util::plot::{save_png, Chart, Series};

/// A FixRes comparison.
#[derive(Clone, Debug)]
pub struct FixresConfig {
    /// The shared recipe; its `image_size` is the reduced training resolution.
    pub recipe: Recipe,
    /// Normalization (`--norm`).
    pub norm: String,
    /// The test resolution: the native run trains at it, the fine-tune runs at it.
    pub test_size: usize,
    /// Fine-tune epochs (`--finetune-epochs`).
    pub finetune_epochs: f64,
    /// Seeds 0..seeds.
    pub seeds: usize,
    /// Output folder (`low-<L>/seed-<s>` and `native-<H>/seed-<s>`).
    pub out: PathBuf,
    /// What to do with previous runs.
    pub mode: Mode,
}

/// The two trainings of a seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// Train at the reduced size, fine-tune the head at the test size.
    Low,
    /// Train at the test size.
    Native,
}

impl FixresConfig {
    /// The run folder of an arm and seed.
    pub fn run_dir(&self, arm: Arm, seed: usize) -> PathBuf {
        let name = match arm {
            Arm::Low => format!("low-{}", self.recipe.image_size),
            Arm::Native => format!("native-{}", self.test_size),
        };
        self.out.join(name).join(format!("seed-{seed}"))
    }

    /// The `effnet train` flags of an arm and seed.
    pub fn run_args(&self, arm: Arm, seed: usize) -> Vec<String> {
        let mut r = self.recipe.clone();
        if arm == Arm::Native {
            r.image_size = self.test_size;
        }
        let mut a = r.args();
        a.extend(["--norm".into(), self.norm.clone()]);
        if arm == Arm::Low {
            a.extend([
                "--finetune-size".into(),
                self.test_size.to_string(),
                "--finetune-epochs".into(),
                self.finetune_epochs.to_string(),
            ]);
        }
        a.extend(["--seed".into(), seed.to_string()]);
        a
    }

    /// Check everything before training.
    pub fn validate(&self) -> Result<()> {
        if self.seeds == 0 {
            return Err(Error::Config("--seeds must be >= 1".into()));
        }
        if self.test_size <= self.recipe.image_size {
            return Err(Error::Config(format!(
                "--test-size {} must be larger than the training --image-size {}",
                self.test_size, self.recipe.image_size
            )));
        }
        check_fixres(self.recipe.image_size, self.test_size)
            .map_err(|e| Error::Config(format!("--test-size: {e}")))?;
        self.recipe.validate()?;
        let all = (0..self.seeds).flat_map(|s| {
            [Arm::Low, Arm::Native].map(|arm| (self.run_dir(arm, s), self.run_args(arm, s)))
        });
        runs::check_runs(all, self.mode)
    }
}

/// One row of the table, over seeds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Variant {
    /// What was trained and tested.
    pub name: String,
    /// Training resolution.
    pub train_size: usize,
    /// Test resolution.
    pub test_size: usize,
    /// Top-1 per seed.
    pub top1: Vec<f64>,
    /// Mean top-1.
    pub top1_mean: f64,
    /// Standard deviation over seeds.
    pub top1_std: f64,
    /// Mean training seconds (main phase) per seed.
    pub train_seconds: f64,
    /// Mean fine-tune seconds per seed.
    pub finetune_seconds: f64,
    /// Forward multiply-accumulates per training image of the main phase.
    pub macs_per_image: usize,
}

/// Train both arms for every seed, evaluate, and write the report files into `cfg.out`.
pub fn run(gpu: &Gpu, cfg: &FixresConfig, command: &str) -> Result<Report> {
    cfg.validate()?;
    let t0 = Instant::now();
    let (lo, hi) = (cfg.recipe.image_size, cfg.test_size);
    let mut low: Vec<TrainRun> = Vec::new();
    let mut native: Vec<TrainRun> = Vec::new();
    let mut low_at_hi = Vec::new();
    let total = 2 * cfg.seeds;
    for s in 0..cfg.seeds {
        let k = 2 * s + 1;
        let l = runs::run(
            gpu,
            &format!("{lo} px + fine-tune at {hi} px, seed {s} (run {k}/{total})"),
            &cfg.run_dir(Arm::Low, s),
            &cfg.run_args(Arm::Low, s),
            cfg.mode,
        )?;
        // The low-resolution model (before its fine-tune) at the test resolution.
        println!("== {lo} px model of seed {s} evaluated at {hi} px without the fine-tune");
        let r = crate::cli::train::eval(
            gpu,
            &EvalArgs {
                checkpoint: l.dir.clone(),
                raw: false,
                image_size: Some(hi.into()),
                data_dir: cfg.recipe.data_dir.clone(),
                limit: cfg.recipe.eval_limit,
                // As the runs themselves (their default).
                precision: crate::cli::precision::PrecisionArg::Auto,
            },
        )?;
        low_at_hi.push(r.top1);
        low.push(l);
        native.push(runs::run(
            gpu,
            &format!("{hi} px from the start, seed {s} (run {}/{total})", k + 1),
            &cfg.run_dir(Arm::Native, s),
            &cfg.run_args(Arm::Native, s),
            cfg.mode,
        )?);
    }
    let ft_name = format!("finetune-{hi}");
    let phase_vals = |rs: &[TrainRun], ph: &str, f: &dyn Fn(&runs::Phase) -> f64| -> Vec<f64> {
        rs.iter().map(|r| r.phase(ph).map_or(f64::NAN, f)).collect()
    };
    let macs = |size: usize| -> Result<usize> {
        let ta = runs::parse_train_args(&cfg.run_args(Arm::Low, 0))?;
        let (c, k) = cfg.recipe.channels_classes();
        let m = crate::cli::train::model_config(&ta, k, c)?;
        Ok(crate::models::totals(&m, size).1)
    };
    let (macs_lo, macs_hi) = (macs(lo)?, macs(hi)?);
    let variant = |name: &str, train: usize, test: usize, top1: Vec<f64>, ts: f64, fs: f64| {
        let (m, sd) = mean_std(&top1);
        Variant {
            name: name.into(),
            train_size: train,
            test_size: test,
            top1,
            top1_mean: m,
            top1_std: sd,
            train_seconds: ts,
            finetune_seconds: fs,
            macs_per_image: if train == lo { macs_lo } else { macs_hi },
        }
    };
    let lo_train_s = mean_std(&phase_vals(&low, "train", &|p| p.train_seconds)).0;
    let ft_s = mean_std(&phase_vals(&low, &ft_name, &|p| p.train_seconds)).0;
    let nat_s = mean_std(&phase_vals(&native, "train", &|p| p.train_seconds)).0;
    let variants = vec![
        variant(
            &format!("native: train at {hi}"),
            hi,
            hi,
            phase_vals(&native, "train", &|p| p.top1),
            nat_s,
            0.0,
        ),
        variant(
            &format!("train at {lo}, test at {lo}"),
            lo,
            lo,
            phase_vals(&low, "train", &|p| p.top1),
            lo_train_s,
            0.0,
        ),
        variant(
            &format!("train at {lo}, test at {hi} (no fine-tune)"),
            lo,
            hi,
            low_at_hi,
            lo_train_s,
            0.0,
        ),
        variant(
            &format!("train at {lo}, fine-tune head at {hi}"),
            lo,
            hi,
            phase_vals(&low, &ft_name, &|p| p.top1),
            lo_train_s,
            ft_s,
        ),
    ];
    let rows = variants
        .iter()
        .map(|v| {
            let total = v.train_seconds + v.finetune_seconds;
            vec![
                v.name.clone(),
                format!(
                    "{} ± {}",
                    fmt(100.0 * v.top1_mean, 2),
                    fmt(100.0 * v.top1_std, 2)
                ),
                v.top1
                    .iter()
                    .map(|t| fmt(100.0 * t, 2))
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt(v.train_seconds, 1),
                fmt(v.finetune_seconds, 1),
                fmt(total, 1),
                format!("{}x", fmt(total / nat_s, 3)),
                fmt(v.macs_per_image as f64 / 1e6, 1),
            ]
        })
        .collect();
    let low_steps = low
        .first()
        .and_then(|r| r.phase(&ft_name))
        .map_or(0, |p| p.steps);
    let notes = vec![
        format!(
            "Native: `{}`.",
            runs::train_command(&cfg.run_args(Arm::Native, 0), &cfg.run_dir(Arm::Native, 0))
        ),
        format!(
            "Reduced: `{}` ({} fine-tune steps of the head with evaluation preprocessing).",
            runs::train_command(&cfg.run_args(Arm::Low, 0), &cfg.run_dir(Arm::Low, 0)),
            low_steps
        ),
        format!(
            "Both arms train the same number of steps; the cost of the reduced arm is its \
             training plus its fine-tune. Forward MACs per image: {:.1} M at {lo} px against \
             {:.1} M at {hi} px ({:.3}x).",
            macs_lo as f64 / 1e6,
            macs_hi as f64 / 1e6,
            macs_lo as f64 / macs_hi as f64
        ),
        format!(
            "Seconds are training only (no evaluation) on {}; on a shared or CPU adapter they \
             are indicative.",
            gpu.info.name
        ),
    ];
    let columns = [
        "variant",
        "test top-1 % (mean ± std)",
        "top-1 % per seed",
        "train s",
        "fine-tune s",
        "total s",
        "time vs native",
        "forward MMACs / image",
    ];
    let title = format!("Reduced-resolution training + FixRes fine-tune ({lo} -> {hi} px)");
    let report = Report {
        rows,
        notes,
        results: serde_json::json!({
            "recipe": cfg.recipe,
            "norm": cfg.norm,
            "train_size": lo,
            "test_size": hi,
            "finetune_epochs": cfg.finetune_epochs,
            "variants": variants,
            "time_ratio": (lo_train_s + ft_s) / nat_s,
            "macs_ratio": macs_lo as f64 / macs_hi as f64,
            "runs": low.iter().chain(&native).collect::<Vec<_>>(),
        }),
        ..Report::new(title, command, gpu, t0, &columns)
    };
    report.write(&cfg.out, "fixres")?;
    save_png(
        &cfg.out.join("fixres.png"),
        &charts(&low, &native, &ft_name, &variants),
    )?;
    Ok(report)
}

/// Training loss per step of both arms (mean over seeds; the fine-tune follows the
/// reduced arm's steps), and test top-1 per seed of every variant.
fn charts(
    low: &[TrainRun],
    native: &[TrainRun],
    ft_name: &str,
    variants: &[Variant],
) -> Vec<Chart> {
    let mean = |rs: &[TrainRun], sub: Option<&str>, key: &str| {
        let cs: Vec<_> = rs
            .iter()
            .map(|r| {
                let dir = sub.map_or(r.dir.clone(), |s| r.dir.join(s));
                runs::curve(&dir.join("metrics.jsonl"), "step", key, 1.0)
            })
            .collect();
        runs::mean_curve(&cs)
    };
    let label_lo = low
        .first()
        .and_then(|r| r.phase("train"))
        .map_or(0, |p| p.image_size);
    let label_hi = native
        .first()
        .and_then(|r| r.phase("train"))
        .map_or(0, |p| p.image_size);
    let lo_steps = low
        .first()
        .and_then(|r| r.phase("train"))
        .map_or(0.0, |p| p.steps as f64);
    let ft: Vec<(f64, f64)> = mean(low, Some(ft_name), "loss")
        .into_iter()
        .map(|(s, l)| (s + lo_steps, l))
        .collect();
    let loss = Chart {
        title: "TRAINING LOSS (MEAN OVER SEEDS)".into(),
        x_label: "step".into(),
        series: vec![
            Series::new(format!("NATIVE {label_hi} PX"), mean(native, None, "loss")),
            Series::new(format!("TRAIN {label_lo} PX"), mean(low, None, "loss")),
            Series::new(format!("FINE-TUNE {label_hi} PX"), ft),
        ],
        ..Default::default()
    };
    let acc = Chart {
        title: "TEST TOP-1 % PER SEED".into(),
        x_label: "seed".into(),
        series: variants
            .iter()
            .map(|v| {
                Series::new(
                    format!("{} -> {}", v.train_size, v.test_size)
                        + if v.finetune_seconds > 0.0 { " FT" } else { "" },
                    v.top1
                        .iter()
                        .enumerate()
                        .map(|(s, t)| (s as f64, 100.0 * t))
                        .collect(),
                )
            })
            .collect(),
        ..Default::default()
    };
    vec![loss, acc]
}
