//! Dynamic loss scaling for mixed precision, kept on the GPU (no host sync per step), with
//! the rules of PyTorch's `torch.amp.GradScaler`: start at 2^16, and each step either
//! skip the update and halve the scale when any parameter gradient is inf or NaN, or apply
//! the gradient divided by the scale and double the scale after 2000 finite steps in a row.
//!
//! The state is one 8-word GPU tensor (layout in `shaders/optim/loss_scale.wgsl` and
//! [`ScalerState`]). A step records, after the backward:
//! [`LossScaler::record_check`] (count the non-finite values of every gradient chunk into
//! the state), [`update_scaled`](super::optim::update_scaled) and
//! [`ema_scaled`](super::optim::ema_scaled) (both skip when the count is non-zero, the
//! update divides by the scale), then [`LossScaler::record_update`] (the scale rule). The
//! host reads the state back asynchronously ([`LossScaler::read_async`]) with the loss,
//! for `metrics.jsonl` and for the stop of a run that keeps overflowing at the minimum
//! scale ([`ScalerState::stuck`]); checkpoints store [`ScalerState::to_words`].

use serde::{Deserialize, Serialize};

use super::optim::{BiasTable, Optimizer};
use crate::error::{Error, Result};
use crate::gpu::{
    uniform_block, Access, Cost, Gpu, Grid, Kernel, KernelDef, Precision, Readback, Recorder,
    Tensor,
};
use crate::ops::finite::count_nonfinite;

/// Words of the scaler state tensor.
pub const STATE_WORDS: usize = 8;

/// Slot of the non-finite count in the state (what the optimizer tests).
pub const FOUND_SLOT: usize = 3;

uniform_block! {
    /// Parameters of `optim/loss_scale.wgsl`.
    pub(super) struct LossScaleParams {
        pub interval: u32,
        pub backoff: f32,
        pub growth: f32,
        pub min_scale: f32,
        pub max_scale: f32,
    }
}

static UPDATE: Kernel<LossScaleParams> = Kernel::new(
    "optim/loss_scale.wgsl",
    "loss_scale_update",
    &[Access::ReadWrite],
    &[],
);

/// The kernels of this module (for the portability and contract tests).
pub static KERNELS: &[&KernelDef] = &[&UPDATE.def];

/// The scaling rule's constants. [`Default`] is GradScaler's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerConfig {
    /// Scale of the first step (GradScaler: 2^16).
    pub init: f32,
    /// Finite steps in a row before the scale grows (GradScaler: 2000).
    pub interval: u32,
    /// Factor applied on overflow (GradScaler: 0.5).
    pub backoff: f32,
    /// Factor applied after `interval` finite steps (GradScaler: 2).
    pub growth: f32,
    /// Smallest scale. GradScaler has none (its scale can halve to 0); effnet stops at 1:
    /// a gradient that overflows unscaled is one the f32 engine would also see overflow,
    /// so halving further only hides a divergence that [`ScalerState::stuck`] reports.
    pub min_scale: f32,
    /// Largest scale (2^24): past it the scaled f16 gradients of even tiny losses would
    /// overflow, so growing further only costs skipped steps.
    pub max_scale: f32,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        Self {
            init: 65536.0,
            interval: 2000,
            backoff: 0.5,
            growth: 2.0,
            min_scale: 1.0,
            max_scale: 16_777_216.0,
        }
    }
}

impl ScalerConfig {
    /// An error naming the bad field, unless every constant is usable: scales finite,
    /// positive and ordered, backoff in (0, 1), growth above 1, interval at least 1.
    pub fn validate(&self) -> Result<()> {
        let ok_scale = |v: f32| v.is_finite() && v > 0.0;
        let why = if !ok_scale(self.min_scale) || !ok_scale(self.max_scale) {
            Some("min_scale and max_scale must be finite and positive")
        } else if self.min_scale > self.max_scale {
            Some("min_scale exceeds max_scale")
        } else if !(self.min_scale..=self.max_scale).contains(&self.init) {
            Some("init must lie in [min_scale, max_scale]")
        } else if !(self.backoff > 0.0 && self.backoff < 1.0) {
            Some("backoff must lie in (0, 1)")
        } else if !(self.growth > 1.0 && self.growth.is_finite()) {
            Some("growth must be finite and above 1")
        } else if self.interval == 0 {
            Some("interval must be at least 1")
        } else {
            None
        };
        match why {
            Some(w) => Err(Error::Config(format!("loss scaler {self:?}: {w}"))),
            None => Ok(()),
        }
    }
}

/// The scaler's state as the host sees it (the GPU tensor's words decoded).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// The scale the next step's loss gradient is multiplied by.
    pub scale: f32,
    /// Finite steps since the scale last changed.
    pub good_steps: u32,
    /// Steps skipped (update and weight average) because a gradient was not finite.
    pub skipped: u32,
    /// Consecutive skipped steps at the minimum scale.
    pub at_min: u32,
}

impl ScalerState {
    /// The state before the first step.
    pub fn initial(cfg: &ScalerConfig) -> Self {
        Self {
            scale: cfg.init,
            good_steps: 0,
            skipped: 0,
            at_min: 0,
        }
    }

    /// The GPU tensor's words (the non-finite count cleared).
    pub fn to_words(&self) -> [u32; STATE_WORDS] {
        [
            self.scale.to_bits(),
            self.good_steps,
            self.skipped,
            0,
            self.at_min,
            0,
            0,
            0,
        ]
    }

    /// Decode the GPU tensor's words (as read back, or from a checkpoint). An error says
    /// what is wrong: a word count other than [`STATE_WORDS`], or a scale that is not a
    /// positive finite number.
    pub fn from_words(words: &[u32]) -> Result<Self> {
        if words.len() != STATE_WORDS {
            return Err(Error::Config(format!(
                "loss scaler state has {} words, expected {STATE_WORDS}",
                words.len()
            )));
        }
        let scale = f32::from_bits(words[0]);
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::Config(format!(
                "loss scaler state holds scale {scale}, not a positive finite number"
            )));
        }
        Ok(Self {
            scale,
            good_steps: words[1],
            skipped: words[2],
            at_min: words[4],
        })
    }

    /// The state after one step that found `nonfinite` non-finite gradient values: the f64
    /// free reference of `shaders/optim/loss_scale.wgsl` (the rule is exact in f32: powers
    /// of two times powers of two).
    pub fn step_ref(&self, nonfinite: u32, cfg: &ScalerConfig) -> Self {
        let mut s = *self;
        if nonfinite != 0 {
            let was_min = s.scale <= cfg.min_scale;
            s.scale = (s.scale * cfg.backoff).max(cfg.min_scale);
            s.good_steps = 0;
            s.skipped = s.skipped.saturating_add(1);
            s.at_min = if was_min {
                s.at_min.saturating_add(1)
            } else {
                0
            };
        } else {
            s.at_min = 0;
            s.good_steps += 1;
            if s.good_steps >= cfg.interval {
                s.scale = (s.scale * cfg.growth).min(cfg.max_scale);
                s.good_steps = 0;
            }
        }
        s
    }

    /// An error (the run's stop message) when the last `limit` steps all overflowed at the
    /// minimum scale: the loss or its gradient is not finite however small the scale, so
    /// the model has diverged (the NaN stop of an f32 run, reached through the scaler).
    pub fn stuck(&self, cfg: &ScalerConfig, limit: u32) -> Result<()> {
        if self.at_min >= limit {
            return Err(Error::Config(format!(
                "the gradients held inf or NaN in each of the last {} steps even at the \
                 smallest loss scale ({}), so every update was skipped ({} skipped in all): \
                 the model has diverged, not merely overflowed f16. Lower the learning rate, \
                 or train with --precision f32 to see where the values blow up",
                self.at_min, cfg.min_scale, self.skipped
            )));
        }
        Ok(())
    }
}

/// The GPU side of the scaler: its state tensor and rule.
#[derive(Debug)]
pub struct LossScaler {
    /// The 8-word state (u32 words; word 0 is the f32 scale).
    pub state: Tensor,
    /// The rule's constants.
    pub config: ScalerConfig,
    /// AdamW's bias corrections by applied step (None for the other optimizers): a
    /// skipped step leaves Adam's step count as it was.
    pub bias: Option<BiasTable>,
}

impl LossScaler {
    /// A scaler in `state` (the initial one, or one restored from a checkpoint) for
    /// updates by `opt` over a run of at most `steps` steps.
    pub fn new(
        gpu: &Gpu,
        config: ScalerConfig,
        state: &ScalerState,
        opt: &Optimizer,
        steps: u64,
    ) -> Result<Self> {
        config.validate()?;
        let bias = BiasTable::new(gpu, opt, steps)?;
        let state = gpu.upload_u32(&state.to_words(), &[STATE_WORDS])?;
        Ok(Self {
            state,
            config,
            bias,
        })
    }

    /// A scaler with GradScaler's constants at its initial state for a model at
    /// `precision` updated by `opt` for up to `steps` steps, or none in f32 (benchmarks
    /// and profiles; the trainer restores its state from checkpoints).
    pub fn for_precision(
        gpu: &Gpu,
        precision: Precision,
        opt: &Optimizer,
        steps: u64,
    ) -> Result<Option<Self>> {
        match precision {
            Precision::F32 => Ok(None),
            Precision::Mixed => {
                let c = ScalerConfig::default();
                Self::new(gpu, c, &ScalerState::initial(&c), opt, steps).map(Some)
            }
        }
    }

    /// Record the count of the non-finite values of every gradient chunk into the state
    /// (the optimizer's skip flag). Runs after the backward, before the update.
    pub fn record_check(&self, rec: &mut Recorder, grads: &[Tensor]) -> Result<()> {
        for g in grads {
            count_nonfinite(rec, g, &self.state, FOUND_SLOT)?;
        }
        Ok(())
    }

    /// Record the scale rule (after the update and the weight average, which read the
    /// flag it clears).
    pub fn record_update(&self, rec: &mut Recorder) -> Result<()> {
        let c = &self.config;
        rec.dispatch(
            &UPDATE,
            &[],
            &LossScaleParams {
                interval: c.interval,
                backoff: c.backoff,
                growth: c.growth,
                min_scale: c.min_scale,
                max_scale: c.max_scale,
            },
            &[&self.state],
            Grid::Dims(1, 1, 1),
            Cost {
                flops: 4.0,
                bytes: 2.0 * 4.0 * 5.0,
            },
        )
    }

    /// Start reading the state back (submitted now; decode with
    /// [`ScalerState::from_words`] on the words once ready).
    pub fn read_async(&self, gpu: &Gpu) -> Result<Readback> {
        gpu.read_async(&self.state)
    }

    /// Read the state back, blocking.
    pub fn read(&self, gpu: &Gpu) -> Result<ScalerState> {
        ScalerState::from_words(&gpu.read_u32(&self.state)?)
    }
}
