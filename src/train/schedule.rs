//! Learning-rate schedules: linear warm-up, then exponential (x`rate` every `every`
//! epochs, staircase) or cosine decay to zero.

use serde::{Deserialize, Serialize};

/// Decay after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Decay {
    /// lr * rate^floor(epoch / every) (EfficientNet: 0.97 every 2.4 epochs).
    Exponential {
        /// Factor per period.
        rate: f64,
        /// Period in epochs.
        every: f64,
    },
    /// Cosine from lr to 0 over the run.
    Cosine,
    /// Constant.
    Constant,
}

/// A learning-rate schedule over steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up length in epochs (linear from 0).
    pub warmup_epochs: f64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Total steps of the run.
    pub total_steps: usize,
}

impl Schedule {
    /// Learning rate for (0-based) `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let spe = self.steps_per_epoch.max(1) as f64;
        let epoch = step as f64 / spe;
        let warm = self.warmup_epochs * spe;
        if (step as f64) < warm {
            return self.lr * (step as f64 + 1.0) / warm;
        }
        match self.decay {
            Decay::Exponential { rate, every } => {
                self.lr * rate.powf(((epoch - self.warmup_epochs).max(0.0) / every).floor())
            }
            Decay::Cosine => {
                let span = (self.total_steps as f64 - warm).max(1.0);
                let t = ((step as f64 - warm) / span).clamp(0.0, 1.0);
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Decay::Constant => self.lr,
        }
    }
}
