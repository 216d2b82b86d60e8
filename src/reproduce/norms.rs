//! `effnet reproduce norms`: every normalization trained with the same recipe and seeds
//! (papers 1 and 2: GN, LN+PN and BN on G16-EfficientNet; GN+PN and LN+PN "match or
//! exceed" BN). Writes `norms.md`, `norms.json` and `norms.png` (training loss per step,
//! and test top-1 per epoch, or per seed for runs shorter than an epoch).

use std::path::PathBuf;
use std::time::Instant;

use super::report::{fmt, mean_std, Report};
use super::runs::{self, Mode, TrainRun};
use super::Recipe;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::models::NormChoice;
use crate::util::plot::{save_png, Chart, Series};

/// Every normalization, in the order of the tables.
pub const ALL_NORMS: [NormChoice; 5] = [
    NormChoice::Bn,
    NormChoice::Gn,
    NormChoice::Ln,
    NormChoice::LnPn,
    NormChoice::GnPn,
];

/// A norm comparison.
#[derive(Clone, Debug)]
pub struct NormsConfig {
    /// The shared recipe.
    pub recipe: Recipe,
    /// Norms to train.
    pub norms: Vec<NormChoice>,
    /// Seeds 0..seeds per norm.
    pub seeds: usize,
    /// Output folder (one run folder per norm and seed: `<norm>/seed-<s>`).
    pub out: PathBuf,
    /// What to do with previous runs.
    pub mode: Mode,
}

impl NormsConfig {
    /// The run folder of `norm` and `seed`.
    pub fn run_dir(&self, norm: NormChoice, seed: usize) -> PathBuf {
        self.out.join(norm.name()).join(format!("seed-{seed}"))
    }

    /// The `effnet train` flags of `norm` and `seed`.
    pub fn run_args(&self, norm: NormChoice, seed: usize) -> Vec<String> {
        let mut a = self.recipe.args();
        a.extend([
            "--norm".into(),
            norm.name().into(),
            "--seed".into(),
            seed.to_string(),
        ]);
        a
    }

    /// Check everything before training: the recipe, every run's flags, the run folders.
    pub fn validate(&self) -> Result<()> {
        use crate::error::Error;
        if self.norms.is_empty() || self.seeds == 0 {
            return Err(Error::Config(
                "--norms must name at least one norm and --seeds must be >= 1".into(),
            ));
        }
        self.recipe.validate()?;
        let all = self
            .norms
            .iter()
            .flat_map(|&n| (0..self.seeds).map(move |s| (self.run_dir(n, s), self.run_args(n, s))));
        runs::check_runs(all, self.mode)
    }
}

/// Results of one norm over its seeds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NormResult {
    /// The norm.
    pub norm: NormChoice,
    /// Test top-1 per seed.
    pub top1: Vec<f64>,
    /// Mean test top-1.
    pub top1_mean: f64,
    /// Sample standard deviation of the test top-1 over seeds.
    pub top1_std: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// Mean last training loss.
    pub train_loss: f64,
    /// Mean training images per second.
    pub img_per_s: f64,
    /// Mean training seconds per run.
    pub train_seconds: f64,
}

/// Train every norm and seed, then write `norms.md`, `norms.json` and `norms.png` into
/// `cfg.out`. `command` is the command line, for the report.
pub fn run(gpu: &Gpu, cfg: &NormsConfig, command: &str) -> Result<Report> {
    cfg.validate()?;
    let t0 = Instant::now();
    let total = cfg.norms.len() * cfg.seeds;
    let mut all: Vec<(NormChoice, Vec<TrainRun>)> = Vec::new();
    for &n in &cfg.norms {
        let mut per = Vec::new();
        for s in 0..cfg.seeds {
            let k = all.iter().map(|(_, r)| r.len()).sum::<usize>() + per.len() + 1;
            let name = format!("{} seed {s} (run {k}/{total})", n.name());
            per.push(runs::run(
                gpu,
                &name,
                &cfg.run_dir(n, s),
                &cfg.run_args(n, s),
                cfg.mode,
            )?);
        }
        all.push((n, per));
    }
    let results: Vec<NormResult> = all
        .iter()
        .map(|(n, rs)| {
            let ph: Vec<_> = rs.iter().filter_map(|r| r.phase("train")).collect();
            let col =
                |f: &dyn Fn(&runs::Phase) -> f64| -> Vec<f64> { ph.iter().map(|p| f(p)).collect() };
            let top1 = col(&|p| p.top1);
            let (m, sd) = mean_std(&top1);
            NormResult {
                norm: *n,
                top1_mean: m,
                top1_std: sd,
                top1,
                test_loss: mean_std(&col(&|p| p.test_loss)).0,
                train_loss: mean_std(&col(&|p| p.last_loss)).0,
                img_per_s: mean_std(&col(&|p| p.img_per_s)).0,
                train_seconds: mean_std(&col(&|p| p.train_seconds)).0,
            }
        })
        .collect();
    let rows = results
        .iter()
        .map(|r| {
            vec![
                r.norm.name().to_string(),
                format!(
                    "{} ± {}",
                    fmt(100.0 * r.top1_mean, 2),
                    fmt(100.0 * r.top1_std, 2)
                ),
                r.top1
                    .iter()
                    .map(|v| fmt(100.0 * v, 2))
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt(r.test_loss, 4),
                fmt(r.train_loss, 4),
                fmt(r.img_per_s, 1),
                fmt(r.train_seconds, 1),
            ]
        })
        .collect();
    let first = &all[0].1[0];
    let ema = runs::parse_train_args(&first.args)
        .map(|a| a.ema_decay > 0.0)
        .unwrap_or(true);
    let notes = vec![
        format!(
            "Every run is `{}` with its --norm and --seed (seeds 0..{}).",
            super::runs::train_command(&cfg.recipe.args(), &cfg.out.join("<norm>/seed-<s>")),
            cfg.seeds
        ),
        format!(
            "Top-1 and test loss: the final evaluation{}; std is the sample standard \
             deviation over seeds (0 for one seed).",
            if ema { ", with the weight average" } else { "" }
        ),
        format!(
            "img/s and seconds are training only (no evaluation) on {}; on a shared or CPU \
             adapter they are indicative.",
            gpu.info.name
        ),
    ];
    let columns = [
        "norm",
        "test top-1 % (mean ± std)",
        "top-1 % per seed",
        "test loss",
        "last train loss",
        "img/s",
        "train s / run",
    ];
    let title = "Normalizations compared at equal recipe and seeds";
    let report = Report {
        rows,
        notes,
        results: serde_json::json!({
            "recipe": cfg.recipe,
            "recipe_args": cfg.recipe.args(),
            "seeds": cfg.seeds,
            "norms": results,
            "runs": all.iter().flat_map(|(_, r)| r.iter()).collect::<Vec<_>>(),
        }),
        ..Report::new(title, command, gpu, t0, &columns)
    };
    report.write(&cfg.out, "norms")?;
    save_png(&cfg.out.join("norms.png"), &charts(&all))?;
    Ok(report)
}

/// Training loss per step (mean over seeds) and test top-1 per epoch when the runs
/// evaluated more than once, else per seed.
fn charts(all: &[(NormChoice, Vec<TrainRun>)]) -> Vec<Chart> {
    let mut loss = Vec::new();
    let mut acc = Vec::new();
    let mut per_seed = Vec::new();
    let mut multi = true;
    for (n, rs) in all {
        let losses: Vec<_> = rs
            .iter()
            .map(|r| runs::curve(&r.dir.join("metrics.jsonl"), "step", "loss", 1.0))
            .collect();
        loss.push(Series::new(
            n.name().to_uppercase(),
            runs::mean_curve(&losses),
        ));
        let evals: Vec<_> = rs
            .iter()
            .map(|r| runs::curve(&r.dir.join("eval.jsonl"), "epoch", "top1", 100.0))
            .collect();
        multi &= evals.iter().all(|e| e.len() >= 2);
        acc.push(Series::new(
            n.name().to_uppercase(),
            runs::mean_curve(&evals),
        ));
        per_seed.push(Series::new(
            n.name().to_uppercase(),
            rs.iter()
                .enumerate()
                .filter_map(|(s, r)| r.phase("train").map(|p| (s as f64, 100.0 * p.top1)))
                .collect(),
        ));
    }
    let loss = Chart {
        title: "TRAINING LOSS (MEAN OVER SEEDS)".into(),
        x_label: "step".into(),
        series: loss,
        ..Default::default()
    };
    let acc = if multi {
        Chart {
            title: "TEST TOP-1 % (MEAN OVER SEEDS)".into(),
            x_label: "epoch".into(),
            series: acc,
            ..Default::default()
        }
    } else {
        Chart {
            title: "TEST TOP-1 % PER SEED".into(),
            x_label: "seed".into(),
            series: per_seed,
            ..Default::default()
        }
    };
    vec![loss, acc]
}
