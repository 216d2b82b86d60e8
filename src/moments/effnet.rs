//! The moments analysis through an EfficientNet at initialization
//! ([`crate::models::efficientnet::EfficientNet`], any preset and normalization), plus the
//! share of each layer's power that is channel-wise constant (paper 2's LayerNorm
//! collapse, SPEC §C.3).
//!
//! Per simulation the model's parameters are drawn afresh (its own initializers, the
//! Proxy Norm statistics recomputed), a batch `x` and a perturbation `v ~ N(0, 1)` are
//! drawn, and the forward pass runs in training mode (BatchNorm on batch statistics).
//!
//! The perturbation of every layer output is the exact directional derivative of the
//! model's own forward pass, by a central finite difference
//! `dx^l = (f^l(x + h v) - f^l(x - h v)) / (2 h)` (three forward passes; error O(h^2)).
//! Unlike the paper networks' propagation (statistics held constant), this derivative
//! includes the dependence of the normalization statistics on the input: it is the
//! Jacobian-vector product of the network as it runs. docs/moments.md discusses the
//! difference.
//!
//! Power decomposition of a layer output `t[n, p, c]` (p: positions): with `m_c` the
//! channel mean over the batch and positions and `m_nc` the per-sample spatial mean,
//! `E t^2 = mean_c m_c^2 + mean_nc (m_nc - m_c)^2 + E (t - m_nc)^2`: the channel-wise
//! constant share (constant over inputs and positions: the LN collapse), the instance
//! share and the spatial share.

use std::collections::BTreeMap;

use super::analysis::Table;
use super::kernels::{self, MomentPlan, MomentScratch, MOMENT_VALUES};
use super::nets::{mix_key, InputSource, Standardize};
use super::stats::{self, Summary};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Readback, Recorder, Tensor};
use crate::models::efficientnet::EfficientNet;
use crate::models::{ModelConfig, NormChoice};
use crate::nn::model::Trainable;
use crate::ops::reduce::{self, Axes};
use crate::util::Rng;

/// Configuration of an EfficientNet moments analysis.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EffnetConfig {
    /// Preset (`b0`..`b7`, `b0-g16`..`b7-g16`).
    pub preset: String,
    /// Normalization.
    pub norm: NormChoice,
    /// Input resolution.
    pub image_size: usize,
    /// Batch size.
    pub batch: usize,
    /// Width multiplier override (small models for CI).
    pub width_mult: Option<f64>,
    /// Depth multiplier override.
    pub depth_mult: Option<f64>,
    /// Effective ranks at normalization outputs with at most `reff_max_channels`.
    pub reff: bool,
    /// Largest channel count whose covariance is formed.
    pub reff_max_channels: usize,
    /// Finite-difference step `h` (relative to the unit-variance input).
    pub fd_step: f64,
    /// Seed of parameters, inputs and perturbations.
    pub seed: u64,
}

impl EffnetConfig {
    /// Defaults: batch 32, image 64, effective ranks up to 512 channels, h = 1e-2, seed 0.
    pub fn new(preset: &str, norm: NormChoice) -> EffnetConfig {
        EffnetConfig {
            preset: preset.to_string(),
            norm,
            image_size: 64,
            batch: 32,
            width_mult: None,
            depth_mult: None,
            reff: true,
            reff_max_channels: 512,
            fd_step: 1e-2,
            seed: 0,
        }
    }

    /// The model configuration (`in_channels` from the input, 10 classes).
    pub fn model_config(&self, in_channels: usize) -> Result<ModelConfig> {
        let mut m = ModelConfig::preset(&self.preset)?;
        m.norm = self.norm;
        if let Some(w) = self.width_mult {
            m.width = w;
        }
        if let Some(d) = self.depth_mult {
            m.depth = d;
        }
        m.in_channels = in_channels;
        m.classes = 10;
        m.validate()?;
        Ok(m)
    }
}

/// One analysed layer output of the model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tap {
    /// Node kind (`conv`, `norm`, `se`, `add`).
    pub kind: &'static str,
    /// Description (convolution shape, norm kind).
    pub label: String,
    /// Shape `[n, h, w, c]`.
    pub shape: Vec<usize>,
}

/// Moments of one simulation, per tap.
#[derive(Clone, Debug)]
pub struct EffnetSim {
    /// Signal moments `[nu1(|x|), nu2, mu2, mu4, mean_c m_c^2]`.
    pub x: Vec<[f64; MOMENT_VALUES]>,
    /// `nu2(dx)` of the finite-difference perturbation.
    pub dx_nu2: Vec<f64>,
    /// Power of the per-sample spatial means around the channel means.
    pub inst: Vec<f64>,
    /// Effective rank of the signal (NaN where not computed).
    pub reff_x: Vec<f64>,
    /// Effective rank of the perturbation.
    pub reff_dx: Vec<f64>,
    /// `nu2(v) / mu2(x^0)` of the input.
    pub input_ratio: f64,
}

impl EffnetSim {
    /// Normalized sensitivity of tap `i`.
    pub fn chi(&self, i: usize) -> f64 {
        ((self.dx_nu2[i] / self.x[i][2]) / self.input_ratio).sqrt()
    }
}

/// Summary of the channel-wise constant share (the LN collapse statistic).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Collapse {
    /// Mean over convolution outputs (pre-activations) of the channel-constant share.
    pub conv_mean: f64,
    /// The same over the deeper half of the convolution outputs.
    pub conv_deep_half: f64,
    /// Largest per-layer mean share over convolution outputs.
    pub conv_max: f64,
    /// Mean over normalization outputs (post-activation).
    pub norm_mean: f64,
}

/// Everything an EfficientNet analysis produces.
pub struct EffnetRun {
    /// The analysed layer outputs.
    pub taps: Vec<Tap>,
    /// Per-layer summaries (rows: taps in graph order, 1-based).
    pub table: Table,
    /// The collapse statistic.
    pub collapse: Collapse,
    /// Per-simulation records.
    pub sims: Vec<EffnetSim>,
}

struct TapBufs {
    plan: MomentPlan,
    plan_nc: MomentPlan,
    means: Tensor,
    snapshot: Tensor,
    cov: Option<(Tensor, Tensor)>,
}

/// Run the analysis: `sims` simulations, `progress(done, total)` after each.
pub fn run_effnet(
    gpu: &Gpu,
    cfg: &EffnetConfig,
    input: &InputSource,
    sims: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<EffnetRun> {
    if cfg.fd_step.is_nan() || cfg.fd_step <= 0.0 || cfg.batch == 0 {
        return Err(Error::Config(
            "the finite-difference step and the batch must be positive".into(),
        ));
    }
    let mcfg = cfg.model_config(input.c)?;
    let mut model = EfficientNet::new(gpu, &mcfg, cfg.batch, cfg.image_size)?;
    let outs = model.node_outputs();
    let keep: Vec<usize> = outs
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o.kind, "conv" | "norm" | "se" | "add"))
        .map(|(i, _)| i)
        .collect();
    let taps: Vec<Tap> = keep
        .iter()
        .map(|&i| Tap {
            kind: outs[i].kind,
            label: outs[i].label.clone(),
            shape: outs[i].tensor.shape().to_vec(),
        })
        .collect();
    drop(outs);
    let n = cfg.batch;
    let mut bufs = Vec::with_capacity(taps.len());
    let mut scratch_len = 1;
    let mut sum_len = 1;
    let mut cmax = 1;
    // One centered copy and one difference buffer per distinct tap size.
    let mut by_size: BTreeMap<usize, (Tensor, Tensor)> = BTreeMap::new();
    for t in &taps {
        let (hw, c) = (t.shape[1] * t.shape[2], t.shape[3]);
        let plan = MomentPlan::new(n * hw, c);
        let plan_nc = MomentPlan::new(n, c);
        scratch_len = scratch_len
            .max(plan.scratch_len())
            .max(plan_nc.scratch_len());
        sum_len = sum_len.max(Axes { o: n, m: hw, i: c }.scratch_len());
        cmax = cmax.max(c);
        let numel = n * hw * c;
        if let std::collections::btree_map::Entry::Vacant(e) = by_size.entry(numel) {
            e.insert((gpu.zeros(&[numel])?, gpu.zeros(&[numel])?));
        }
        let cov = if cfg.reff && t.kind == "norm" && c <= cfg.reff_max_channels {
            Some((gpu.zeros(&[c, c])?, gpu.zeros(&[c, c])?))
        } else {
            None
        };
        bufs.push(TapBufs {
            plan,
            plan_nc,
            means: gpu.zeros(&[n, 1, 1, c])?,
            snapshot: gpu.zeros(&t.shape)?,
            cov,
        });
    }
    let ws = MomentScratch {
        part: gpu.zeros(&[scratch_len])?,
        mean: gpu.zeros(&[cmax])?,
    };
    let sum_scratch = gpu.zeros(&[sum_len])?;
    let record = gpu.zeros(&[taps.len() * 3 * MOMENT_VALUES])?;
    let slot = |i: usize, kind: usize| (i * 3 + kind) * MOMENT_VALUES;
    let h = cfg.fd_step;

    let mut records = Vec::with_capacity(sims);
    for sim in 0..sims {
        // Fresh parameters and derived Proxy Norm statistics.
        let mut init = Rng::new(mix_key(cfg.seed, sim as u64, 0x11));
        model.store().initialize(gpu, &mut init, 0.0)?;
        let mut rec = Recorder::new(gpu);
        model.record_after_update(&mut rec)?;
        rec.submit()?;
        let mut rng = Rng::new(mix_key(cfg.seed, sim as u64, 0x22));
        let (x0, v) = input.sample_at(
            &mut rng,
            n,
            cfg.image_size,
            cfg.image_size,
            Standardize::PerChannel,
        )?;
        let x0d: Vec<f64> = x0.iter().map(|&a| a as f64).collect();
        let input_ratio = (v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / v.len() as f64)
            / stats::moments_ref(&x0d, input.c)[2];
        let shifted = |sign: f64| -> Vec<f32> {
            x0.iter()
                .zip(&v)
                .map(|(&a, &b)| (a as f64 + sign * h * b as f64) as f32)
                .collect()
        };
        let tensors = |m: &EfficientNet| -> Vec<Tensor> {
            let outs = m.node_outputs();
            keep.iter().map(|&i| outs[i].tensor.clone()).collect()
        };

        // Pass 1: x - h v, kept in the snapshots.
        gpu.write_f32(model.input(), &shifted(-1.0))?;
        let mut rec = Recorder::new(gpu);
        rec.clear(&record);
        model.record_forward(&mut rec, true)?;
        for (t, b) in tensors(&model).iter().zip(&bufs) {
            rec.copy(t, &b.snapshot)?;
        }
        rec.submit()?;

        // Pass 2: x + h v; dx = (f(x + h v) - f(x - h v)) / 2h.
        gpu.write_f32(model.input(), &shifted(1.0))?;
        let mut rec = Recorder::new(gpu);
        model.record_forward(&mut rec, true)?;
        let inv = (1.0 / (2.0 * h)) as f32;
        for (i, (t, b)) in tensors(&model).iter().zip(&bufs).enumerate() {
            let (centered, diff) = &by_size[&t.len()];
            let diff = diff.reshape(t.shape())?;
            kernels::axpby(&mut rec, inv, t, -inv, &b.snapshot, &diff)?;
            kernels::moments(
                &mut rec,
                &diff,
                &b.plan,
                b.cov.is_some(),
                &ws,
                &record,
                slot(i, 1),
            )?;
            if let Some((_, cdx)) = &b.cov {
                let centered = centered.reshape(t.shape())?;
                kernels::covariance(&mut rec, &diff, &b.plan, &ws, &centered, cdx)?;
            }
        }
        rec.submit()?;

        // Pass 3: x itself.
        gpu.write_f32(model.input(), &x0)?;
        let mut rec = Recorder::new(gpu);
        model.record_forward(&mut rec, true)?;
        for (i, (t, b)) in tensors(&model).iter().zip(&bufs).enumerate() {
            kernels::moments(&mut rec, t, &b.plan, true, &ws, &record, slot(i, 0))?;
            if let Some((cx, _)) = &b.cov {
                let centered = by_size[&t.len()].0.reshape(t.shape())?;
                kernels::covariance(&mut rec, t, &b.plan, &ws, &centered, cx)?;
            }
            let s = t.shape();
            if s[1] * s[2] > 1 {
                let ax = Axes {
                    o: s[0],
                    m: s[1] * s[2],
                    i: s[3],
                };
                reduce::sum_axis(
                    &mut rec,
                    t,
                    None,
                    &b.means,
                    ax,
                    1.0 / ax.m as f32,
                    Some(&sum_scratch),
                )?;
                kernels::moments(
                    &mut rec,
                    &b.means,
                    &b.plan_nc,
                    true,
                    &ws,
                    &record,
                    slot(i, 2),
                )?;
            }
        }
        rec.submit()?;
        let mut pending: Vec<(usize, usize, usize, Readback)> = Vec::new();
        for (i, b) in bufs.iter().enumerate() {
            if let Some((cx, cdx)) = &b.cov {
                let c = b.plan.c;
                pending.push((i, 0, c, gpu.read_async(cx)?));
                pending.push((i, 1, c, gpu.read_async(cdx)?));
            }
        }
        let rv = gpu.read(&record)?;
        let mut reff_x = vec![f64::NAN; taps.len()];
        let mut reff_dx = vec![f64::NAN; taps.len()];
        let mut mats = Vec::new();
        for (i, which, c, rb) in pending {
            mats.push((i, which, c, rb.wait(gpu)?));
        }
        let ranks: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = mats
                .iter()
                .map(|(_, _, c, m)| s.spawn(move || stats::effective_rank(m, *c)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("eigenvalue thread"))
                .collect()
        });
        for ((i, which, _, _), r) in mats.iter().zip(ranks) {
            if *which == 0 {
                reff_x[*i] = r;
            } else {
                reff_dx[*i] = r;
            }
        }
        let val = |off: usize, k: usize| rv[off + k] as f64;
        let mut x = Vec::with_capacity(taps.len());
        let mut dx_nu2 = Vec::with_capacity(taps.len());
        let mut inst = Vec::with_capacity(taps.len());
        for (i, t) in taps.iter().enumerate() {
            let mut m = [0.0; MOMENT_VALUES];
            for (k, o) in m.iter_mut().enumerate() {
                *o = val(slot(i, 0), k);
            }
            dx_nu2.push(val(slot(i, 1), 1));
            inst.push(if t.shape[1] * t.shape[2] > 1 {
                val(slot(i, 2), 2)
            } else {
                m[2]
            });
            x.push(m);
        }
        records.push(EffnetSim {
            x,
            dx_nu2,
            inst,
            reff_x,
            reff_dx,
            input_ratio,
        });
        progress(sim + 1, sims);
    }
    let table = effnet_table(&taps, &records);
    let collapse = collapse(&taps, &table);
    Ok(EffnetRun {
        taps,
        table,
        collapse,
        sims: records,
    })
}

/// Per-layer table: columns `chi`, `nu1`, `nu2`, `mu2`, `mu4`, `kurt`, `share_ch`
/// (channel-wise constant share of the power), `share_inst` (per-sample constant share),
/// `share_spatial`, `reff_x`, `reff_dx`; rows are the taps (1-based), labelled
/// `<kind>:<description>`.
pub fn effnet_table(taps: &[Tap], sims: &[EffnetSim]) -> Table {
    let mut t = Table::new("layer", (1..=taps.len()).map(|i| i as f64).collect());
    t.labels = Some(
        taps.iter()
            .map(|p| format!("{}:{}", p.kind, p.label))
            .collect(),
    );
    let per = |f: &dyn Fn(&EffnetSim, usize) -> f64| -> Vec<Vec<f64>> {
        sims.iter()
            .map(|s| (0..taps.len()).map(|i| f(s, i)).collect())
            .collect()
    };
    t.add("chi", &per(&|s, i| s.chi(i)));
    t.add("nu1", &per(&|s, i| s.x[i][0]));
    t.add("nu2", &per(&|s, i| s.x[i][1]));
    t.add("mu2", &per(&|s, i| s.x[i][2]));
    t.add("mu4", &per(&|s, i| s.x[i][3]));
    t.add("kurt", &per(&|s, i| s.x[i][3] / (s.x[i][2] * s.x[i][2])));
    t.add("share_ch", &per(&|s, i| s.x[i][4] / s.x[i][1]));
    t.add("share_inst", &per(&|s, i| s.inst[i] / s.x[i][1]));
    t.add(
        "share_spatial",
        &per(&|s, i| (s.x[i][2] - s.inst[i]) / s.x[i][1]),
    );
    t.add("reff_x", &per(&|s, i| s.reff_x[i]));
    t.add("reff_dx", &per(&|s, i| s.reff_dx[i]));
    t
}

fn collapse(taps: &[Tap], table: &Table) -> Collapse {
    let share = table.means("share_ch");
    let of = |kind: &str| -> Vec<f64> {
        taps.iter()
            .zip(&share)
            .filter(|(t, _)| t.kind == kind)
            .map(|(_, s)| *s)
            .collect()
    };
    let conv = of("conv");
    let deep = &conv[conv.len() / 2..];
    Collapse {
        conv_mean: Summary::of(&conv).mean,
        conv_deep_half: Summary::of(deep).mean,
        conv_max: conv.iter().cloned().fold(f64::NAN, f64::max),
        norm_mean: Summary::of(&of("norm")).mean,
    }
}
