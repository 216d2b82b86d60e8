//! Softmax cross-entropy with label smoothing (forward and gradient fused in one pass).

mod cases;
mod reference;

pub use cases::{cases, XentCase};
pub use reference::softmax_xent_ref;

use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Access, Cost, Grid, Kernel, KernelDef, Recorder, Tensor};

uniform_block! {
    /// Parameters of `loss/softmax_xent.wgsl`.
    pub(super) struct XentParams {
        pub rows: u32,
        pub k: u32,
        pub eps: f32,
    }
}

static XENT: Kernel<XentParams> = Kernel::new(
    "loss/softmax_xent.wgsl",
    "softmax_xent",
    &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::Read,
    ],
    &[("SCALED", &[0.0, 1.0])],
);

/// Record per-row losses and logit gradients. `logits` [N, K], `labels` [N] (u32, each
/// < K: the caller validates labels on the host), `dloss` [N] (1/N for a mean loss),
/// `loss` [N], `dlogits` [N, K]; `eps` is the label smoothing.
pub fn softmax_xent(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    dloss: &Tensor,
    loss: &Tensor,
    dlogits: &Tensor,
    eps: f32,
) -> Result<()> {
    xent(rec, logits, labels, dloss, loss, dlogits, eps, None)
}

/// [`softmax_xent`] with `dlogits` multiplied by the dynamic loss scale: word 0 of the
/// loss scaler's state `scaler` (f32 bits; `train::loss_scale`), read on the GPU so the
/// step needs no host sync. `loss` is not scaled.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_scaled(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    dloss: &Tensor,
    loss: &Tensor,
    dlogits: &Tensor,
    eps: f32,
    scaler: &Tensor,
) -> Result<()> {
    if scaler.is_empty() {
        return Err(Error::Shape(
            "softmax cross-entropy: the loss scaler state is empty".into(),
        ));
    }
    xent(rec, logits, labels, dloss, loss, dlogits, eps, Some(scaler))
}

#[allow(clippy::too_many_arguments)]
fn xent(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    dloss: &Tensor,
    loss: &Tensor,
    dlogits: &Tensor,
    eps: f32,
    scaler: Option<&Tensor>,
) -> Result<()> {
    let sh = logits.shape();
    if sh.len() != 2
        || labels.len() != sh[0]
        || loss.len() != sh[0]
        || dloss.len() != sh[0]
        || dlogits.len() != logits.len()
    {
        return Err(Error::Shape(format!(
            "softmax cross-entropy of logits {:?} with labels {:?}",
            sh,
            labels.shape()
        )));
    }
    // Unscaled: a read-only placeholder the kernel never reads.
    let (sc, scaled) = match scaler {
        Some(s) => (s, 1.0),
        None => (labels, 0.0),
    };
    rec.dispatch(
        &XENT,
        &[("SCALED", scaled)],
        &XentParams {
            rows: sh[0] as u32,
            k: sh[1] as u32,
            eps,
        },
        &[logits, labels, dloss, loss, dlogits, sc],
        Grid::Linear(sh[0] as u32),
        // Max, exponentials, their sum, the smoothed loss and the gradient: ~8 per logit.
        Cost::f32s(
            8.0 * logits.len() as f64,
            logits.len() + 2 * sh[0],
            sh[0] + logits.len(),
        ),
    )
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&XENT.def];
