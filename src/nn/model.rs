//! What the trainer needs from a model: its parameters, the tensors it reads inputs and
//! labels from, and recorders for a training step and an evaluation forward pass.

use crate::error::Result;
use crate::gpu::{Gpu, Precision, Recorder, Tensor};
use crate::nn::ParamStore;
use crate::util::Rng;

/// A model the trainer can drive. All buffers are planned at build time for a fixed batch
/// size; nothing is allocated per step.
pub trait Trainable {
    /// Parameters with gradient, optimizer-state and average arenas.
    fn store(&self) -> &ParamStore;
    /// Non-parameter state saved in checkpoints (e.g. BatchNorm running statistics).
    fn state_tensors(&self) -> Vec<(String, Tensor)>;
    /// The weight average's twins of [`Trainable::state_tensors`] (same names, shapes
    /// and order), averaged with the parameters.
    fn state_average(&self) -> Vec<(String, Tensor)>;
    /// Training-mode forward passes run so far (PyTorch's BatchNorm
    /// `num_batches_tracked`; every norm layer has seen the same number).
    fn batches_tracked(&self) -> u64;
    /// Set the count of [`Trainable::batches_tracked`] (after loading weights).
    fn set_batches_tracked(&mut self, n: u64);
    /// Batch size the buffers were planned for.
    fn batch(&self) -> usize;
    /// Input tensor [batch, height, width, channels] (the trainer writes images here).
    fn input(&self) -> &Tensor;
    /// Label tensor [batch] u32.
    fn labels(&self) -> &Tensor;
    /// Per-row loss weights [batch] (1/valid for real rows, 0 for padding).
    fn loss_weights(&self) -> &Tensor;
    /// Per-row loss [batch] written by the training step.
    fn loss_rows(&self) -> &Tensor;
    /// Logits [batch, classes] written by both passes.
    fn logits(&self) -> &Tensor;
    /// Record forward (training mode), loss and backward. `rng` draws dropout and
    /// drop-connect masks. Backward stops at the first node whose parameters are trained
    /// when `head_only` (fine-tuning the head).
    fn record_train_step(
        &mut self,
        rec: &mut Recorder,
        rng: &mut Rng,
        label_smoothing: f32,
        head_only: bool,
    ) -> Result<()>;
    /// Record an evaluation forward pass (running statistics, no dropout).
    fn record_eval(&mut self, rec: &mut Recorder) -> Result<()>;
    /// The storage precision of the activations and their gradients.
    fn precision(&self) -> Precision;
    /// Multiply the loss gradient of training steps by the scale held in this loss scaler
    /// state tensor ([`crate::train::loss_scale::LossScaler::state`]; mixed precision), or
    /// not (`None`).
    fn set_loss_scale(&mut self, scaler: Option<Tensor>);
    /// Record work that must follow each optimizer update: state derived from the
    /// parameters (Proxy Norm statistics).
    fn record_after_update(&self, rec: &mut Recorder) -> Result<()>;
    /// Rebuild the state derived from the parameters, now. Every change to the weights
    /// outside a training step (loading a checkpoint or weights, swapping in the weight
    /// average and back) calls this, so no stale derived state is ever evaluated.
    fn rebuild_derived(&self, gpu: &Gpu) -> Result<()> {
        let mut rec = Recorder::new(gpu);
        self.record_after_update(&mut rec)?;
        rec.submit()?.wait(gpu)
    }
    /// Names of the parameters trained when fine-tuning (the head, plus any stages chosen
    /// with [`Trainable::set_finetune_stages`]).
    fn is_head_param(&self, name: &str) -> bool;
    /// Also train these stages (1-based) when fine-tuning; the backward pass then stops at
    /// the first of them.
    fn set_finetune_stages(&mut self, stages: &[usize]) -> Result<()>;
    /// Freeze the stem and stages 1..=`n` (0: nothing): the backward pass stops at the
    /// first trained node, so they get no gradient, and the trainer leaves their
    /// parameters out of the update. Their norms still run as in training (BatchNorm on
    /// batch statistics, updating its running statistics) unless BatchNorm is frozen.
    fn set_frozen_stages(&mut self, n: usize) -> Result<()>;
    /// Whether a parameter belongs to the frozen stem or stages
    /// ([`Trainable::set_frozen_stages`]).
    fn is_frozen_param(&self, name: &str) -> bool;
    /// Put every BatchNorm in eval mode while training (`true`: running statistics fixed,
    /// gradients through them as constants, `num_batches_tracked` unchanged) or back in
    /// training mode. `true` is refused for models without BatchNorm.
    fn freeze_bn(&mut self, frozen: bool) -> Result<()>;
}
