//! Optimizers as one fused update per parameter-arena chunk and decay segment: SGD
//! (momentum, Nesterov), RMSProp in TensorFlow's form (SPEC §B.3), and AdamW; plus the
//! exponential weight average. f64 references for tests.

use serde::{Deserialize, Serialize};

use super::loss_scale::{LossScaler, STATE_WORDS};
use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Gpu, Grid, Kernel, KernelDef, Recorder, Tensor,
};
pub use crate::nn::params::Segment;
use crate::nn::ParamStore;

uniform_block! {
    /// Parameters of `optim/update.wgsl`.
    pub(super) struct UpdateParams {
        pub start: u32,
        pub end: u32,
        pub lr: f32,
        pub wd: f32,
        /// Momentum (SGD, RMSProp) or beta1 (AdamW).
        pub b1: f32,
        /// RMSProp decay or AdamW beta2.
        pub b2: f32,
        pub eps: f32,
        /// AdamW 1 / (1 - beta1^t).
        pub c1: f32,
        /// AdamW 1 / (1 - beta2^t).
        pub c2: f32,
        /// Multiplies the gradient (e.g. loss-scale undo).
        pub gscale: f32,
        /// The step (1-based) `c1` and `c2` are for.
        pub step: u32,
        /// Steps the AdamW bias table covers (mixed precision; 0 when none is bound).
        pub bias_steps: u32,
    }
}

uniform_block! {
    /// Parameters of `optim/ema.wgsl`.
    pub(super) struct EmaParams {
        pub n: u32,
        pub decay: f32,
    }
}

static UPDATE: Kernel<UpdateParams> = Kernel::new(
    "optim/update.wgsl",
    "optim_update",
    &[
        Access::ReadWrite,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::Read,
        Access::Read,
    ],
    &[("ALGO", &[0.0, 1.0, 2.0, 3.0]), ("SCALED", &[0.0, 1.0])],
);
static EMA: Kernel<EmaParams> = Kernel::new(
    "optim/ema.wgsl",
    "ema_update",
    &[Access::Read, Access::ReadWrite, Access::Read],
    &[("SCALED", &[0.0, 1.0])],
);

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&UPDATE.def, &EMA.def];

/// Optimizer algorithm and its hyper-parameters (learning rate comes from the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with momentum (optionally Nesterov); L2 weight decay added to the gradient.
    Sgd {
        /// Momentum.
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// RMSProp as TensorFlow computes it: ms = decay*ms + (1-decay)*g^2,
    /// mom = momentum*mom + lr*g/sqrt(ms+eps), w -= mom; ms starts at 1 as in TF.
    Rmsprop {
        /// Decay of the squared-gradient average.
        decay: f32,
        /// Momentum.
        momentum: f32,
        /// Epsilon (inside the square root).
        eps: f32,
    },
    /// AdamW with decoupled weight decay.
    Adamw {
        /// beta1.
        beta1: f32,
        /// beta2.
        beta2: f32,
        /// Epsilon.
        eps: f32,
    },
}

impl Optimizer {
    /// Parse `sgd`, `nesterov`, `rmsprop`, `adamw` with the usual defaults.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "sgd" => Self::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            "nesterov" | "sgd-nesterov" => Self::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            "rmsprop" => Self::Rmsprop {
                decay: 0.9,
                momentum: 0.9,
                eps: 1e-3,
            },
            "adamw" => Self::Adamw {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            _ => {
                return Err(Error::Config(format!(
                    "unknown optimizer '{s}': use sgd, nesterov, rmsprop or adamw"
                )))
            }
        })
    }

    /// Initial value of the second state slot (TF's RMSProp starts its mean square at 1).
    pub fn s2_init(&self) -> f32 {
        match self {
            Self::Rmsprop { .. } => 1.0,
            _ => 0.0,
        }
    }

    /// Nominal floating-point operations of one parameter's update (for [`Cost`]).
    fn flops_per_param(&self) -> f64 {
        match self {
            Self::Sgd {
                nesterov: false, ..
            } => 4.0,
            Self::Sgd { nesterov: true, .. } => 6.0,
            Self::Rmsprop { .. } => 10.0,
            Self::Adamw { .. } => 14.0,
        }
    }

    fn algo(&self) -> f64 {
        match self {
            Self::Sgd {
                nesterov: false, ..
            } => 0.0,
            Self::Sgd { nesterov: true, .. } => 1.0,
            Self::Rmsprop { .. } => 2.0,
            Self::Adamw { .. } => 3.0,
        }
    }

    /// (b1, b2, eps, c1, c2) kernel constants at step `t` (1-based).
    fn consts(&self, t: u64) -> [f32; 5] {
        match *self {
            Self::Sgd { momentum, .. } => [momentum, 0.0, 0.0, 1.0, 1.0],
            Self::Rmsprop {
                decay,
                momentum,
                eps,
            } => [momentum, decay, eps, 1.0, 1.0],
            Self::Adamw { beta1, beta2, eps } => {
                let c1 = 1.0 / (1.0 - (beta1 as f64).powi(t as i32));
                let c2 = 1.0 / (1.0 - (beta2 as f64).powi(t as i32));
                [beta1, beta2, eps, c1 as f32, c2 as f32]
            }
        }
    }

    /// f64 reference of one step on one element: returns (w, s1, s2).
    #[allow(clippy::too_many_arguments)]
    pub fn step_ref(
        &self,
        w: f64,
        g: f64,
        s1: f64,
        s2: f64,
        lr: f64,
        wd: f64,
        t: u64,
    ) -> (f64, f64, f64) {
        match *self {
            Self::Sgd { momentum, nesterov } => {
                let g = g + wd * w;
                let m = momentum as f64 * s1 + g;
                let step = if nesterov { g + momentum as f64 * m } else { m };
                (w - lr * step, m, s2)
            }
            Self::Rmsprop {
                decay,
                momentum,
                eps,
            } => {
                let g = g + wd * w;
                let ms = decay as f64 * s2 + (1.0 - decay as f64) * g * g;
                let mom = momentum as f64 * s1 + lr * g / (ms + eps as f64).sqrt();
                (w - mom, mom, ms)
            }
            Self::Adamw { beta1, beta2, eps } => {
                let (b1, b2) = (beta1 as f64, beta2 as f64);
                let m = b1 * s1 + (1.0 - b1) * g;
                let v = b2 * s2 + (1.0 - b2) * g * g;
                let mh = m / (1.0 - b1.powi(t as i32));
                let vh = v / (1.0 - b2.powi(t as i32));
                (w - lr * (mh / (vh.sqrt() + eps as f64) + wd * w), m, v)
            }
        }
    }
}

/// Most steps a [`BiasTable`] may cover (32 MiB of corrections), for betas so close to 1
/// that their corrections stay above 1 in f32 for longer than that.
const MAX_BIAS_STEPS: u64 = 1 << 22;

/// AdamW's bias corrections `(c1, c2)` of steps 1, 2, ... on the GPU, for the
/// mixed-precision update: there the loss scaler decides on the GPU whether a step is
/// skipped, and as in PyTorch (whose `GradScaler` skips `optimizer.step()`, so Adam's
/// step count stays) a skipped step does not count. The update of step `s` after `k`
/// skipped ones reads the corrections of step `s - k` here, values exactly as
/// [`Optimizer`] computes them for the f32 update.
#[derive(Debug)]
pub struct BiasTable {
    /// `c1, c2` of step 1, then step 2, ...
    table: Tensor,
    /// Steps covered.
    steps: u32,
    /// Whether the last step's corrections are both 1 in f32 (then so are all later ones).
    complete: bool,
}

impl BiasTable {
    /// The table of `opt` for a run of `steps` steps: up to `steps`, or to the first step
    /// whose corrections both round to 1 in f32 if that comes sooner. None for SGD and
    /// RMSProp (no step count); an error for betas whose corrections stay above 1 for
    /// more steps than [`MAX_BIAS_STEPS`] when the run is longer.
    pub fn new(gpu: &Gpu, opt: &Optimizer, steps: u64) -> Result<Option<Self>> {
        let Some((values, complete)) = bias_corrections(opt, steps)? else {
            return Ok(None);
        };
        let table = gpu.upload(&values, &[values.len()])?;
        Ok(Some(Self {
            table,
            steps: (values.len() / 2) as u32,
            complete,
        }))
    }
}

/// The corrections of [`BiasTable::new`] as `c1, c2` per step, and whether they end at
/// `(1, 1)`. None unless `opt` is AdamW.
pub fn bias_corrections(opt: &Optimizer, steps: u64) -> Result<Option<(Vec<f32>, bool)>> {
    if !matches!(opt, Optimizer::Adamw { .. }) {
        return Ok(None);
    }
    let mut values = Vec::new();
    for t in 1..=steps.clamp(1, u32::MAX as u64) {
        if t > MAX_BIAS_STEPS {
            return Err(Error::Config(format!(
                "optimizer {opt:?}: its bias corrections stay above 1 for more than \
                 {MAX_BIAS_STEPS} steps, too many to tabulate for mixed precision; use \
                 betas further from 1, or --precision f32"
            )));
        }
        let [_, _, _, c1, c2] = opt.consts(t);
        values.extend([c1, c2]);
        if c1 == 1.0 && c2 == 1.0 {
            return Ok(Some((values, true)));
        }
    }
    Ok(Some((values, false)))
}

/// Record one optimizer step over every segment. `w`, `g`, `s1`, `s2` are the chunk
/// tensors of the parameter, gradient and two state arenas (same layout).
#[allow(clippy::too_many_arguments)]
pub fn update(
    rec: &mut Recorder,
    opt: &Optimizer,
    segments: &[Segment],
    w: &[Tensor],
    g: &[Tensor],
    s1: &[Tensor],
    s2: &[Tensor],
    lr: f32,
    wd: f32,
    step: u64,
    gscale: f32,
) -> Result<()> {
    update_with(rec, opt, segments, w, g, s1, s2, lr, wd, step, gscale, None)
}

/// The update of one training step over `store`'s arenas and `segments`: [`update`] in
/// f32, or with a loss `scaler` (mixed precision) the non-finite check of every gradient
/// chunk then [`update_scaled`]. The caller records [`LossScaler::record_update`] after
/// the weight average ([`ema_step`]).
#[allow(clippy::too_many_arguments)]
pub fn update_step(
    rec: &mut Recorder,
    scaler: Option<&LossScaler>,
    opt: &Optimizer,
    segments: &[Segment],
    store: &ParamStore,
    lr: f32,
    wd: f32,
    step: u64,
) -> Result<()> {
    let (w, g, s1, s2) = (
        &store.w.chunks,
        &store.g.chunks,
        &store.s1.chunks,
        &store.s2.chunks,
    );
    match scaler {
        Some(sc) => {
            sc.record_check(rec, g)?;
            update_scaled(rec, opt, segments, w, g, s1, s2, lr, wd, step, 1.0, sc)
        }
        None => update(rec, opt, segments, w, g, s1, s2, lr, wd, step, 1.0),
    }
}

/// The weight average of one training step: [`ema`], or [`ema_scaled`] with a loss
/// `scaler` (skipped with the update).
pub fn ema_step(
    rec: &mut Recorder,
    scaler: Option<&LossScaler>,
    w: &[Tensor],
    avg: &[Tensor],
    decay: f32,
) -> Result<()> {
    match scaler {
        Some(sc) => ema_scaled(rec, w, avg, decay, sc),
        None => ema(rec, w, avg, decay),
    }
}

/// [`update`] for gradients that carry the dynamic loss scale of `scaler` (mixed
/// precision): the whole step is skipped when the scaler's check found a non-finite
/// gradient, else each gradient is multiplied by `gscale / scale`. Decided on the GPU.
/// AdamW's step count leaves out the steps skipped before (its corrections come from the
/// scaler's [`BiasTable`]), as PyTorch's `GradScaler` skips `optimizer.step()`.
#[allow(clippy::too_many_arguments)]
pub fn update_scaled(
    rec: &mut Recorder,
    opt: &Optimizer,
    segments: &[Segment],
    w: &[Tensor],
    g: &[Tensor],
    s1: &[Tensor],
    s2: &[Tensor],
    lr: f32,
    wd: f32,
    step: u64,
    gscale: f32,
    scaler: &LossScaler,
) -> Result<()> {
    update_with(
        rec,
        opt,
        segments,
        w,
        g,
        s1,
        s2,
        lr,
        wd,
        step,
        gscale,
        Some((&scaler.state, scaler.bias.as_ref())),
    )
}

/// The scaler state as a kernel binds it: checked to hold its 8 words (the kernels read
/// words 0 and 3), or a placeholder (`fallback`, never read with SCALED = 0).
fn scaler_binding<'a>(
    scaler: Option<&'a Tensor>,
    fallback: &'a Tensor,
) -> Result<(&'a Tensor, f64)> {
    match scaler {
        None => Ok((fallback, 0.0)),
        Some(s) if s.len() == STATE_WORDS && s.dtype() == crate::gpu::Dtype::F32 => Ok((s, 1.0)),
        Some(s) => Err(Error::Shape(format!(
            "loss scaler state of shape {:?}, expected {STATE_WORDS} words",
            s.shape()
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn update_with(
    rec: &mut Recorder,
    opt: &Optimizer,
    segments: &[Segment],
    w: &[Tensor],
    g: &[Tensor],
    s1: &[Tensor],
    s2: &[Tensor],
    lr: f32,
    wd: f32,
    step: u64,
    gscale: f32,
    scaler: Option<(&Tensor, Option<&BiasTable>)>,
) -> Result<()> {
    let step = step.max(1);
    let [b1, b2, eps, c1, c2] = opt.consts(step);
    // Mixed-precision AdamW reads the corrections of its own step count from the table.
    let bias = match (scaler, opt) {
        (Some((_, table)), Optimizer::Adamw { .. }) => {
            let b = table.ok_or_else(|| {
                Error::Config(
                    "mixed-precision AdamW needs the loss scaler's bias table (LossScaler::new \
                     with the optimizer)"
                        .into(),
                )
            })?;
            if step > b.steps as u64 && !b.complete {
                return Err(Error::Config(format!(
                    "AdamW bias table covers {} steps, step {step} was recorded (the loss \
                     scaler was made for a shorter run)",
                    b.steps
                )));
            }
            Some(b)
        }
        _ => None,
    };
    let state = scaler.map(|(s, _)| s);
    for s in segments {
        let c = s.chunk;
        // The kernel touches [start, end) of all four chunks: keep that in bounds.
        let fits = |t: &[Tensor]| t.get(c).is_some_and(|t| s.end <= t.len());
        if s.start > s.end || !(fits(w) && fits(g) && fits(s1) && fits(s2)) {
            return Err(Error::Shape(format!(
                "optimizer segment {s:?} lies outside its arena chunks"
            )));
        }
        let n = s.end - s.start;
        if n == 0 {
            continue;
        }
        let wdv = if s.decay { wd } else { 0.0 };
        let (sc, scaled) = scaler_binding(state, &g[c])?;
        let table = bias.map_or(&g[c], |b| &b.table);
        rec.dispatch(
            &UPDATE,
            &[("ALGO", opt.algo()), ("SCALED", scaled)],
            &UpdateParams {
                start: s.start as u32,
                end: s.end as u32,
                lr,
                wd: wdv,
                b1,
                b2,
                eps,
                c1,
                c2,
                gscale,
                step: step.min(u32::MAX as u64) as u32,
                bias_steps: bias.map_or(0, |b| b.steps),
            },
            &[&w[c], &g[c], &s1[c], &s2[c], sc, table],
            Grid::Linear(groups_for(n, 256)),
            // w, g and both state slots read, w and the state slots written.
            Cost::f32s(opt.flops_per_param() * n as f64, 4 * n, 3 * n),
        )?;
    }
    Ok(())
}

/// The weight average's decay for its `updates`-th update (1-based), with the warm-up of
/// TensorFlow's `ExponentialMovingAverage(num_updates=...)`:
/// `min(decay, (1 + updates) / (10 + updates))`. Early averages then follow the weights
/// closely instead of keeping the initialization for thousands of steps (with 0.998 and no
/// warm-up, 37% of the initial weights remain after 500 steps).
pub fn ema_decay_at(decay: f64, updates: u64) -> f64 {
    let t = updates as f64;
    decay.min((1.0 + t) / (10.0 + t))
}

/// Record avg = decay * avg + (1 - decay) * w over whole chunks.
pub fn ema(rec: &mut Recorder, w: &[Tensor], avg: &[Tensor], decay: f32) -> Result<()> {
    ema_with(rec, w, avg, decay, None)
}

/// [`ema`] of a mixed-precision step: skipped on the GPU when `scaler` found a non-finite
/// gradient (the weights did not move, so neither does their average).
pub fn ema_scaled(
    rec: &mut Recorder,
    w: &[Tensor],
    avg: &[Tensor],
    decay: f32,
    scaler: &LossScaler,
) -> Result<()> {
    ema_with(rec, w, avg, decay, Some(&scaler.state))
}

fn ema_with(
    rec: &mut Recorder,
    w: &[Tensor],
    avg: &[Tensor],
    decay: f32,
    scaler: Option<&Tensor>,
) -> Result<()> {
    if w.len() != avg.len() || w.iter().zip(avg).any(|(a, b)| a.len() != b.len()) {
        return Err(Error::Shape(
            "weight average: the average arena's chunks differ from the weights'".into(),
        ));
    }
    for (wc, ac) in w.iter().zip(avg) {
        let n = wc.len();
        let (sc, scaled) = scaler_binding(scaler, wc)?;
        rec.dispatch(
            &EMA,
            &[("SCALED", scaled)],
            &EmaParams { n: n as u32, decay },
            &[wc, ac, sc],
            Grid::Linear(groups_for(n, 256)),
            Cost::f32s(3.0 * n as f64, 2 * n, n),
        )?;
    }
    Ok(())
}
