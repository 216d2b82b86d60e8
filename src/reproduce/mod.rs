//! The papers' comparisons, one command each (`effnet reproduce norms|fixres|moments`).
//!
//! - [`norms`]: every normalization (bn, gn, ln, ln-pn, gn-pn) trained with the same recipe
//!   and seeds (papers 1 and 2);
//! - [`fixres`]: reduced-resolution training with a fine-tune at the test resolution
//!   against training at the test resolution, same number of steps (paper 1, SPEC §B.4);
//! - [`moments`]: the paper-3 measurements beside the values of moments-dnns' result
//!   files, and paper 2's LayerNorm collapse (SPEC §C.3, §D).
//!
//! Each writes `<name>.md` and `<name>.json` (a [`Report`]) and `<name>.png` into its
//! output folder. Training runs go through `effnet train`'s own code ([`runs`]); the
//! moments through [`crate::moments`]. `--scale quick` (the default) is sized to finish in
//! minutes on lavapipe, `--scale paper` sets the papers' sizes (a GPU's work).
//! docs/papers.md puts the numbers beside the papers' claims.

pub mod fixres;
pub mod moments;
pub mod norms;
pub mod report;
pub mod runs;

use std::path::PathBuf;

pub use report::Report;
pub use runs::Mode;

use crate::train::trainer::DatasetKind;

/// How large a reproduction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// Sized to finish in minutes on lavapipe (a small model, few steps, few simulations).
    Quick,
    /// The papers' sizes: their model, resolution and recipe, or their network sizes and
    /// simulation counts. A GPU's work (hours to days).
    Paper,
}

/// The training flags shared by every run of a comparison (the flags of `effnet train`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Recipe {
    /// `--model`.
    pub model: String,
    /// `--width` (None: the preset's).
    pub width: Option<f64>,
    /// `--depth` (None: the preset's).
    pub depth: Option<f64>,
    /// `--dataset`.
    pub dataset: DatasetKind,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--image-size`.
    pub image_size: usize,
    /// `--batch`.
    pub batch: usize,
    /// `--epochs` (used when `max_steps` is None).
    pub epochs: f64,
    /// `--max-steps`.
    pub max_steps: Option<usize>,
    /// `--eval-limit`.
    pub eval_limit: Option<usize>,
    /// Further `effnet train` flags (the scale's recipe, then the user's).
    pub extra: Vec<String>,
}

impl Recipe {
    /// The `effnet train` flags of this recipe.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--model".into(),
            self.model.clone(),
            "--dataset".into(),
            clap::ValueEnum::to_possible_value(&self.dataset)
                .map_or_else(String::new, |v| v.get_name().to_string()),
        ];
        if let Some(d) = &self.data_dir {
            a.extend(["--data-dir".into(), d.display().to_string()]);
        }
        if let Some(w) = self.width {
            a.extend(["--width".into(), w.to_string()]);
        }
        if let Some(d) = self.depth {
            a.extend(["--depth".into(), d.to_string()]);
        }
        a.extend([
            "--image-size".into(),
            self.image_size.to_string(),
            "--batch".into(),
            self.batch.to_string(),
        ]);
        match self.max_steps {
            Some(s) => a.extend(["--max-steps".into(), s.to_string()]),
            None => a.extend(["--epochs".into(), self.epochs.to_string()]),
        }
        if let Some(l) = self.eval_limit {
            a.extend(["--eval-limit".into(), l.to_string()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The quick recipe: G16-B0 at width 0.25 and depth 0.5 (every stage keeps a block),
    /// Fashion-MNIST at 32 px, batch 32, 300 AdamW steps with a short warm-up, evaluated
    /// at the end on 2,000 test images.
    pub fn quick() -> Recipe {
        Recipe {
            model: "b0-g16".into(),
            width: Some(0.25),
            depth: Some(0.5),
            dataset: DatasetKind::FashionMnist,
            data_dir: None,
            image_size: 32,
            batch: 32,
            epochs: 1.0,
            max_steps: Some(300),
            eval_limit: Some(2000),
            extra: ["--warmup-epochs", "0.02", "--log-every", "10"]
                .map(String::from)
                .to_vec(),
        }
    }

    /// The papers' recipe (SPEC §B.3) for G16-B0 at 224 px on an ImageNet folder:
    /// RMSProp (TensorFlow's form) at 2^-14 x batch, batch 768, 5 warm-up epochs, x0.97
    /// every 2.4 epochs, 350 epochs, weight decay 1e-5, label smoothing 0.1, a weight
    /// average. Differences from the paper's (no mixup or CutMix, RMSProp decay 0.9
    /// instead of 1 - 2^-14 x batch, a per-step weight average instead of one over epoch
    /// checkpoints) are listed in docs/papers.md.
    pub fn paper() -> Recipe {
        Recipe {
            model: "b0-g16".into(),
            width: None,
            depth: None,
            dataset: DatasetKind::Folder,
            data_dir: None,
            image_size: 224,
            batch: 768,
            epochs: 350.0,
            max_steps: None,
            eval_limit: None,
            extra: [
                "--optimizer",
                "rmsprop",
                "--lr",
                "0.046875",
                "--warmup-epochs",
                "5",
                "--schedule",
                "exponential",
                "--weight-decay",
                "1e-5",
                "--label-smoothing",
                "0.1",
                "--ema-decay",
                "0.9999",
                "--eval-every",
                "10",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    /// The recipe of `scale`.
    pub fn of(scale: Scale) -> Recipe {
        match scale {
            Scale::Quick => Recipe::quick(),
            Scale::Paper => Recipe::paper(),
        }
    }

    /// Check what the trainer cannot: a folder dataset needs its folder.
    pub fn validate(&self) -> crate::error::Result<()> {
        if self.dataset == DatasetKind::Folder && self.data_dir.is_none() {
            return Err(crate::error::Error::Config(
                "--dataset folder (the papers' scale trains on ImageNet) needs --data-dir, a \
                 folder with train/ and val/ (or test/) class folders; or run the recipe on a \
                 small dataset with --dataset fashion-mnist or cifar10"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Input channels and classes of the dataset (for MAC counts): 1 and 10 for
    /// Fashion-MNIST, 3 and 10 for CIFAR-10, 3 and 1000 for a folder (ImageNet).
    pub fn channels_classes(&self) -> (usize, usize) {
        match self.dataset {
            DatasetKind::FashionMnist => (1, 10),
            DatasetKind::Cifar10 => (3, 10),
            DatasetKind::Folder => (3, 1000),
        }
    }
}
