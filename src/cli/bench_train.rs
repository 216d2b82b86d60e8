//! `effnet bench train`: images per second of a whole training step (forward, loss,
//! backward, optimizer, Proxy Norm statistics, weight average) and of inference, with the
//! GPU memory effnet allocated, for one model, batch and resolution.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{Gpu, Precision, Recorder};
use crate::models::efficientnet::EfficientNet;
use crate::models::{footprint, ImageSize, ModelConfig, NormChoice, Preset};
use crate::nn::model::Trainable;
use crate::train::loss_scale::LossScaler;
use crate::train::optim::{self, Optimizer};
use crate::util::Rng;

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    /// Model preset.
    pub model: String,
    /// Norm.
    pub norm: String,
    /// Batch.
    pub batch: usize,
    /// Resolution.
    pub image_size: usize,
    /// Adapter name.
    pub adapter: String,
    /// Storage precision of the activations (`f32` or `mixed`).
    pub precision: String,
    /// Training images per second (steady state, submissions pipelined).
    pub train_img_s: f64,
    /// Inference images per second.
    pub infer_img_s: f64,
    /// Bytes of GPU buffers effnet allocated (all planned at build; peak).
    pub gpu_bytes: u64,
    /// Of which (estimated from the configuration, as the model's size check does): the
    /// f32 parameter arenas (weights, gradients, optimizer moments, weight average).
    pub param_bytes: u64,
    /// Of which (estimated likewise): the activations and their gradients.
    pub activation_bytes: u64,
    /// Seconds from building the model to the end of the first training step.
    pub startup_s: f64,
    /// Dispatches one training step records.
    pub dispatches: usize,
    /// Shader modules built with wgpu's runtime checks.
    pub shader_checks: bool,
}

/// A model ready to be stepped with synthetic data.
pub struct Bencher {
    model: EfficientNet,
    /// The loss scaler of a mixed-precision model.
    scaler: Option<LossScaler>,
    opt: Optimizer,
    rng: Rng,
    dispatches: usize,
}

impl Bencher {
    /// Build a model with random weights and synthetic inputs.
    pub fn new(
        gpu: &Gpu,
        preset: Preset,
        norm: NormChoice,
        batch: usize,
        image: usize,
        classes: usize,
    ) -> Result<Self> {
        let mut cfg = preset.config();
        cfg.norm = norm;
        cfg.classes = classes;
        Self::from_config(gpu, &cfg, batch, image, Precision::F32)
    }

    /// Build from a full configuration, at `precision`.
    pub fn from_config(
        gpu: &Gpu,
        cfg: &ModelConfig,
        batch: usize,
        image: usize,
        precision: Precision,
    ) -> Result<Self> {
        let classes = cfg.classes;
        let size = ImageSize::square(image);
        let mut model = EfficientNet::with_precision(gpu, cfg, batch, size, precision)?;
        let opt = Optimizer::parse("adamw")?;
        // Benchmarks run any number of steps: the bias table runs to where it reaches 1.
        let scaler = LossScaler::for_precision(gpu, precision, &opt, u64::MAX)?;
        model.set_loss_scale(scaler.as_ref().map(|s| s.state.clone()));
        let mut rng = Rng::new(7);
        model.store().initialize(gpu, &mut rng, opt.s2_init())?;
        let x: Vec<f32> = (0..model.input().len())
            .map(|_| rng.normal() as f32)
            .collect();
        gpu.write_f32(model.input(), &x)?;
        let labels: Vec<u32> = (0..batch).map(|i| (i % classes) as u32).collect();
        gpu.write_u32(model.labels(), &labels)?;
        gpu.write_f32(model.loss_weights(), &vec![1.0 / batch as f32; batch])?;
        Ok(Self {
            model,
            scaler,
            opt,
            rng,
            dispatches: 0,
        })
    }

    /// Record and submit one training step (same work as the trainer's).
    pub fn train_step(&mut self, gpu: &Gpu, step: u64) -> Result<crate::gpu::Submitted> {
        let mut rec = Recorder::new(gpu);
        self.model
            .record_train_step(&mut rec, &mut self.rng, 0.1, false)?;
        let (s, sc) = (self.model.store(), self.scaler.as_ref());
        optim::update_step(&mut rec, sc, &self.opt, &s.segments, s, 1e-3, 0.05, step)?;
        self.model.record_after_update(&mut rec)?;
        optim::ema_step(&mut rec, sc, &s.w.chunks, &s.ema.chunks, 0.999)?;
        if let Some(sc) = sc {
            sc.record_update(&mut rec)?;
        }
        self.dispatches = rec.dispatch_count();
        rec.submit()
    }

    /// Dispatches the last training step recorded.
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    /// The model (its parameters, inputs and outputs).
    pub fn model(&self) -> &EfficientNet {
        &self.model
    }

    /// Record and submit one inference pass.
    pub fn infer(&mut self, gpu: &Gpu) -> Result<crate::gpu::Submitted> {
        let mut rec = Recorder::new(gpu);
        self.model.record_eval(&mut rec)?;
        rec.submit()
    }
}

/// Measure `steps` training steps and inference passes after a warm-up.
pub fn run(
    gpu: &Gpu,
    preset: Preset,
    norm: NormChoice,
    batch: usize,
    image: usize,
    steps: usize,
    precision: Precision,
) -> Result<TrainBench> {
    let t0 = Instant::now();
    let before = gpu.allocated_bytes();
    let mut cfg = preset.config();
    cfg.norm = norm;
    cfg.classes = 1000;
    let fp = footprint::estimate_at(&cfg, batch, ImageSize::square(image), precision)?;
    let mut b = Bencher::from_config(gpu, &cfg, batch, image, precision)?;
    b.train_step(gpu, 1)?.wait(gpu)?;
    let startup_s = t0.elapsed().as_secs_f64();
    let gpu_bytes = gpu.allocated_bytes() - before;
    let steps = steps.max(1);
    let t = Instant::now();
    let mut last = None;
    for k in 0..steps {
        // Keep at most two steps in flight, as the trainer does.
        let s = b.train_step(gpu, k as u64 + 2)?;
        if let Some(prev) = last.replace(s) {
            prev.wait(gpu)?;
        }
    }
    if let Some(s) = last {
        s.wait(gpu)?;
    }
    let train_img_s = (steps * batch) as f64 / t.elapsed().as_secs_f64();
    b.infer(gpu)?.wait(gpu)?;
    let t = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        let s = b.infer(gpu)?;
        if let Some(prev) = last.replace(s) {
            prev.wait(gpu)?;
        }
    }
    if let Some(s) = last {
        s.wait(gpu)?;
    }
    let infer_img_s = (steps * batch) as f64 / t.elapsed().as_secs_f64();
    Ok(TrainBench {
        model: preset.name().into(),
        norm: norm.name().into(),
        batch,
        image_size: image,
        adapter: gpu.info.name.clone(),
        precision: precision.name().into(),
        train_img_s,
        infer_img_s,
        gpu_bytes,
        param_bytes: fp.param_bytes,
        activation_bytes: fp.activation_bytes,
        startup_s,
        dispatches: b.dispatches(),
        shader_checks: gpu.shader_checks,
    })
}
