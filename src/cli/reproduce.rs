//! `effnet reproduce norms|fixres|moments`: the papers' comparisons, one command each
//! ([`crate::reproduce`]; docs/papers.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::data::FASHION_MNIST_DIR;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::NormChoice;
use crate::moments::{InputKind, InputSource};
use crate::reproduce::fixres::FixresConfig;
use crate::reproduce::moments::{experiments, MomentsConfig};
use crate::reproduce::norms::{NormsConfig, ALL_NORMS};
use crate::reproduce::{self, Mode, Recipe, Report, Scale};
use crate::train::trainer::DatasetKind;

/// Options of `effnet reproduce`.
#[derive(Args, Debug, Clone)]
pub struct ReproduceArgs {
    /// Which comparison.
    #[command(subcommand)]
    pub what: Reproduction,
}

/// The comparisons.
#[derive(Subcommand, Debug, Clone)]
pub enum Reproduction {
    /// Train every normalization (bn, gn, ln, ln-pn, gn-pn) with the same recipe and
    /// seeds: top-1 mean and spread, losses, img/s (norms.md/json/png).
    Norms(NormsArgs),
    /// Train at a reduced resolution and fine-tune the head at the test one, against
    /// training at the test resolution, same steps: accuracy, time, cost ratio
    /// (fixres.md/json/png).
    Fixres(FixresArgs),
    /// Paper 3's moments (vanilla, bn-ff, bn-res) and paper 2's LN collapse beside the
    /// reference code's published values (moments.md/json/png).
    Moments(MomentsReproArgs),
}

/// The training recipe shared by `norms` and `fixres`; each flag overrides the scale's.
#[derive(Args, Debug, Clone)]
pub struct RecipeArgs {
    /// quick: sized for minutes on lavapipe (G16-B0 at width 0.25 and depth 0.5,
    /// Fashion-MNIST, 300 steps of batch 32); paper: the papers' model, resolution and
    /// recipe (G16-B0, 224 px, RMSProp, 350 epochs of batch 768 on an ImageNet folder).
    #[arg(long, value_enum, default_value = "quick")]
    pub scale: Scale,
    /// Model preset.
    #[arg(long)]
    pub model: Option<String>,
    /// Width multiplier.
    #[arg(long)]
    pub width: Option<f64>,
    /// Depth multiplier.
    #[arg(long)]
    pub depth: Option<f64>,
    /// Dataset.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Dataset folder (the papers' scale: an ImageNet folder with train/ and val/).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Epochs per run (replaces the scale's step count).
    #[arg(long, conflicts_with = "max_steps")]
    pub epochs: Option<f64>,
    /// Steps per run.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Evaluate on at most N test images.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Seeds per variant (0..K).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Continue a reproduction: finished runs are reused, interrupted ones resumed from
    /// their checkpoints, missing ones started.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Delete the previous runs in the output folder and start over.
    #[arg(long)]
    pub overwrite: bool,
    /// More `effnet train` flags for every run, after `--` (e.g. `-- --optimizer sgd
    /// --lr 0.05`); they override the scale's recipe.
    #[arg(last = true)]
    pub train_flags: Vec<String>,
}

/// Options of `effnet reproduce norms`.
#[derive(Args, Debug, Clone)]
pub struct NormsArgs {
    /// Norms to train (comma separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub norms: Vec<NormChoice>,
    /// Training resolution.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Output folder (one run folder per norm and seed, and the report files).
    #[arg(long, default_value = "runs/reproduce/norms")]
    pub out: PathBuf,
    /// The recipe.
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// Options of `effnet reproduce fixres`.
#[derive(Args, Debug, Clone)]
pub struct FixresArgs {
    /// Normalization (the paper's released configs: gn and ln-pn).
    #[arg(long, value_enum, default_value = "gn")]
    pub norm: NormChoice,
    /// Reduced training resolution (quick: 32; paper: 160, B0's "Half").
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Test resolution: the native run trains at it and the fine-tune runs at it; must
    /// keep train % 32 == test % 32 (quick: 64; paper: 224).
    #[arg(long)]
    pub test_size: Option<usize>,
    /// Fine-tune epochs (quick: 0.05, about 94 steps of batch 32; paper: 2).
    #[arg(long)]
    pub finetune_epochs: Option<f64>,
    /// Output folder.
    #[arg(long, default_value = "runs/reproduce/fixres")]
    pub out: PathBuf,
    /// The recipe.
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// Options of `effnet reproduce moments`.
#[derive(Args, Debug, Clone)]
pub struct MomentsReproArgs {
    /// quick: the fully connected cases at the paper's width, batch and depth with 4
    /// simulations, the convolutional BN net over 20 layers at width 64, the LN collapse at
    /// width 256 (minutes on lavapipe); paper: SPEC §D.3's sizes and simulation counts.
    #[arg(long, value_enum, default_value = "quick")]
    pub scale: Scale,
    /// Run only these experiments (comma separated): bn-res-fc, bn-res-conv, bn-ff-fc,
    /// bn-ff-conv, vanilla-fc, vanilla-conv, ln-ff, ln-pn-ff.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Simulations of every experiment (default: the scale's).
    #[arg(long)]
    pub sims: Option<usize>,
    /// Input: fashion-mnist or gaussian.
    #[arg(long, default_value = "fashion-mnist")]
    pub input: String,
    /// Fashion-MNIST folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output folder (one `effnet moments` folder per experiment, and the report files).
    #[arg(long, default_value = "runs/reproduce/moments")]
    pub out: PathBuf,
    /// No per-simulation progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Flags the reproduction sets itself (or takes as its own flags), refused after `--`.
const RESERVED: [&str; 17] = [
    "norm",
    "seed",
    "run-dir",
    "resume",
    "overwrite",
    "model",
    "width",
    "depth",
    "dataset",
    "data-dir",
    "image-size",
    "batch",
    "epochs",
    "max-steps",
    "eval-limit",
    "finetune-size",
    "finetune-epochs",
];

/// Merge `effnet train` flags: `user` flags replace the `base` ones of the same name
/// (`base` is `--flag value` pairs).
pub fn merge_flags(base: &[String], user: &[String]) -> Vec<String> {
    let name = |a: &str| {
        a.strip_prefix("--")
            .map(|n| n.split('=').next().unwrap_or(n).to_string())
    };
    let given: Vec<String> = user.iter().filter_map(|a| name(a)).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < base.len() {
        let n = name(&base[i]);
        let takes_value = base.get(i + 1).is_some_and(|v| !v.starts_with("--"));
        let step = if takes_value { 2 } else { 1 };
        if !n.is_some_and(|n| given.contains(&n)) {
            out.extend(base[i..i + step].iter().cloned());
        }
        i += step;
    }
    out.extend(user.iter().cloned());
    out
}

impl RecipeArgs {
    /// The recipe: the scale's, with every given flag in its place.
    pub fn recipe(&self, image_size: Option<usize>) -> Result<Recipe> {
        for f in &self.train_flags {
            if let Some(n) = f
                .strip_prefix("--")
                .map(|n| n.split('=').next().unwrap_or(n))
            {
                if RESERVED.contains(&n) {
                    return Err(Error::Config(format!(
                        "--{n} after `--`: the reproduction sets it for every run{}",
                        if ["norm", "seed", "run-dir", "resume", "overwrite"].contains(&n) {
                            String::new()
                        } else {
                            format!("; give it before `--` (effnet reproduce ... --{n} VALUE)")
                        }
                    )));
                }
            }
        }
        let mut r = Recipe::of(self.scale);
        if let Some(m) = &self.model {
            r.model = m.clone();
        }
        if self.width.is_some() {
            r.width = self.width;
        }
        if self.depth.is_some() {
            r.depth = self.depth;
        }
        if let Some(d) = self.dataset {
            r.dataset = d;
        }
        if self.data_dir.is_some() {
            r.data_dir = self.data_dir.clone();
        }
        if let Some(b) = self.batch {
            r.batch = b;
        }
        if let Some(e) = self.epochs {
            r.epochs = e;
            r.max_steps = None;
        }
        if self.max_steps.is_some() {
            r.max_steps = self.max_steps;
        }
        if self.eval_limit.is_some() {
            r.eval_limit = self.eval_limit;
        }
        if let Some(s) = image_size {
            r.image_size = s;
        }
        r.extra = merge_flags(&r.extra, &self.train_flags);
        Ok(r)
    }

    /// Seeds: the given count, else 2 (quick: a spread) or 1 (paper).
    pub fn seeds(&self) -> usize {
        self.seeds.unwrap_or(match self.scale {
            Scale::Quick => 2,
            Scale::Paper => 1,
        })
    }

    /// The run-folder mode.
    pub fn mode(&self) -> Mode {
        if self.resume {
            Mode::Resume
        } else if self.overwrite {
            Mode::Overwrite
        } else {
            Mode::Fresh
        }
    }
}

/// The norm comparison of the arguments.
pub fn norms_config(a: &NormsArgs) -> Result<NormsConfig> {
    Ok(NormsConfig {
        recipe: a.recipe.recipe(a.image_size)?,
        norms: if a.norms.is_empty() {
            ALL_NORMS.to_vec()
        } else {
            a.norms.clone()
        },
        seeds: a.recipe.seeds(),
        out: a.out.clone(),
        mode: a.recipe.mode(),
    })
}

/// The FixRes comparison of the arguments.
pub fn fixres_config(a: &FixresArgs) -> Result<FixresConfig> {
    let paper = a.recipe.scale == Scale::Paper;
    let lo = a.image_size.unwrap_or(if paper { 160 } else { 32 });
    Ok(FixresConfig {
        recipe: a.recipe.recipe(Some(lo))?,
        norm: a.norm.name().into(),
        test_size: a.test_size.unwrap_or(if paper { 224 } else { 64 }),
        finetune_epochs: a.finetune_epochs.unwrap_or(if paper { 2.0 } else { 0.05 }),
        seeds: a.recipe.seeds(),
        out: a.out.clone(),
        mode: a.recipe.mode(),
    })
}

/// The moments reproduction of the arguments.
pub fn moments_config(a: &MomentsReproArgs) -> Result<MomentsConfig> {
    let mut exps = experiments(a.scale);
    if !a.only.is_empty() {
        let names: Vec<&str> = exps.iter().map(|e| e.name).collect();
        if let Some(bad) = a.only.iter().find(|o| !names.contains(&o.as_str())) {
            return Err(Error::Config(format!(
                "--only {bad}: the {} scale runs {}",
                if a.scale == Scale::Quick {
                    "quick"
                } else {
                    "paper"
                },
                names.join(", ")
            )));
        }
        exps.retain(|e| a.only.iter().any(|o| o == e.name));
    }
    if let Some(s) = a.sims {
        if s == 0 {
            return Err(Error::Config("--sims must be at least 1".into()));
        }
        exps.iter_mut().for_each(|e| e.sims = s);
    }
    Ok(MomentsConfig {
        experiments: exps,
        out: a.out.clone(),
        quiet: a.quiet,
    })
}

/// The command line, with the program named `effnet`.
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if !args.is_empty() {
        args[0] = "effnet".into();
    }
    args.join(" ")
}

/// Run `effnet reproduce`.
pub fn run(gpu: &Gpu, a: &ReproduceArgs) -> Result<Report> {
    let cmd = command_line();
    let (report, out, name) = match &a.what {
        Reproduction::Norms(n) => {
            crate::train::stop::install()?;
            let cfg = norms_config(n)?;
            (reproduce::norms::run(gpu, &cfg, &cmd)?, cfg.out, "norms")
        }
        Reproduction::Fixres(f) => {
            crate::train::stop::install()?;
            let cfg = fixres_config(f)?;
            (reproduce::fixres::run(gpu, &cfg, &cmd)?, cfg.out, "fixres")
        }
        Reproduction::Moments(m) => {
            let cfg = moments_config(m)?;
            let input = match InputKind::parse(&m.input)? {
                InputKind::FashionMnist => InputSource::fashion_mnist(
                    &m.data_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR)),
                )?,
                InputKind::Gaussian => InputSource::gaussian(28, 28, 1),
            };
            (
                reproduce::moments::run(gpu, &cfg, &input, &cmd)?,
                cfg.out,
                "moments",
            )
        }
    };
    println!("\n{}", report.to_markdown());
    println!(
        "wrote {0}/{1}.md, {0}/{1}.json and {0}/{1}.png",
        out.display(),
        name
    );
    Ok(report)
}
