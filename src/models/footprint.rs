//! What a built model needs on the adapter, estimated from its configuration before any
//! buffer is allocated, and the check against what the adapter can hold: its largest
//! buffer and binding, and on CPU and integrated adapters (lavapipe, WARP, SwiftShader,
//! laptop GPUs) the host memory available.
//!
//! The estimate counts what [`EfficientNet::new`](super::efficientnet::EfficientNet::new)
//! allocates in bulk: the five parameter-sized arenas (weights, gradients, two optimizer
//! moments, the weight average) and one activation and one gradient tensor per node
//! output. It leaves out the layers' small saved statistics and scratch, so it is a lower
//! bound (tests/input_safety.rs checks it is within 20% of what is really allocated): a
//! model it refuses can never fit.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, MemoryBudget, Precision};
use crate::models::config::ModelConfig;
use crate::models::size::ImageSize;

/// Parameter-sized arenas a built model holds (weights, gradients, first and second
/// optimizer moments, weight average); the trainer adds one more for the average swap.
pub const PARAM_COPIES: u64 = 5;

/// Bytes a model needs, for a batch size, resolution and precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters.
    pub params: u64,
    /// Bytes of the parameter-sized arenas ([`PARAM_COPIES`] copies).
    pub param_bytes: u64,
    /// Bytes of the activations and their gradients.
    pub activation_bytes: u64,
    /// Bytes of the largest single tensor (one buffer binding).
    pub largest_tensor_bytes: u64,
}

impl Footprint {
    /// Everything: parameters and activations.
    pub fn total_bytes(&self) -> u64 {
        self.param_bytes.saturating_add(self.activation_bytes)
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn too_large(cfg: &ModelConfig, batch: usize, image: ImageSize) -> Error {
    Error::TooLarge(format!(
        "model {} at batch {batch} and {image}px is too large to plan (its sizes overflow \
         64-bit arithmetic); reduce the batch size or image size",
        cfg.name
    ))
}

/// Estimate the footprint of `cfg` built for `batch` images of `image` x `image` pixels.
/// All arithmetic is checked: sizes that overflow are an error, never a wrapped number.
pub fn estimate(cfg: &ModelConfig, batch: usize, image: usize) -> Result<Footprint> {
    estimate_size(cfg, batch, ImageSize::square(image))
}

/// [`estimate`] for `h x w` images.
pub fn estimate_size(cfg: &ModelConfig, batch: usize, image: ImageSize) -> Result<Footprint> {
    estimate_at(cfg, batch, image, Precision::F32)
}

/// [`estimate_size`] with activations and their gradients stored at
/// `precision.activations()`, except the f32 tail after the global pool (pooled features,
/// dropout, logits) that the model keeps f32 in every precision. Parameters and their
/// arenas are f32 in every precision.
pub fn estimate_at(
    cfg: &ModelConfig,
    batch: usize,
    image: ImageSize,
    precision: Precision,
) -> Result<Footprint> {
    cfg.check_ranges()?;
    let overflow = || too_large(cfg, batch, image);
    let b = batch as u64;
    // Elements of a [batch, h, w, c] activation.
    let act = |hw: ImageSize, c: usize| -> Result<u64> {
        b.checked_mul(hw.h as u64)
            .and_then(|v| v.checked_mul(hw.w as u64))
            .and_then(|v| v.checked_mul(c as u64))
            .ok_or_else(overflow)
    };
    let mut acts = 0u64; // activation elements
    let mut extra_grads = 0u64; // gradient elements beyond one per activation
    let mut largest = 0u64; // elements
    let mut add = |n: u64, copies: u64| -> Result<()> {
        acts = n
            .checked_mul(copies)
            .and_then(|v| acts.checked_add(v))
            .ok_or_else(overflow)?;
        largest = largest.max(n);
        Ok(())
    };
    let input = act(image, cfg.in_channels)?;
    add(input, 1)?;
    let mut hw = image.strided(2);
    let stem = cfg.stem_width();
    add(act(hw, stem)?, 2)?; // conv, norm
    let mut weights = vec![9 * cfg.in_channels as u64 * stem as u64];
    for blk in cfg.blocks() {
        let block_in = act(hw, blk.cin)?;
        if blk.expand != 1 {
            add(act(hw, blk.mid)?, 2)?;
            weights.push(blk.cin as u64 * blk.mid as u64);
        }
        hw = hw.strided(blk.stride);
        add(act(hw, blk.mid)?, 2)?; // spatial conv, norm
        add(act(hw, blk.mid)?, 1)?; // squeeze-excitation
        add(act(hw, blk.cout)?, 2)?; // projection conv, norm
        let cpg = (blk.mid / blk.groups) as u64;
        weights.push((blk.k * blk.k) as u64 * cpg * blk.mid as u64);
        weights.push(blk.mid as u64 * blk.se_hidden as u64);
        weights.push(blk.mid as u64 * blk.cout as u64);
        if blk.residual {
            add(act(hw, blk.cout)?, 1)?; // sum
            extra_grads = extra_grads.checked_add(block_in).ok_or_else(overflow)?;
        }
    }
    let head = cfg.head_width();
    let last = cfg.blocks().last().map_or(stem, |x| x.cout);
    add(act(hw, head)?, 2)?; // head conv, norm
    let largest_act = largest;
    // One gradient per activation but the input, plus one per residual branch.
    let elements = acts
        .checked_mul(2)
        .and_then(|v| v.checked_sub(input))
        .and_then(|v| v.checked_add(extra_grads))
        .ok_or_else(overflow)?;
    // The f32 tail: pool, dropout, logits, each with its gradient.
    let one = ImageSize::square(1);
    let tail = act(one, head)?
        .checked_mul(if cfg.dropout > 0.0 { 2 } else { 1 })
        .and_then(|v| v.checked_add(act(one, cfg.classes).ok()?))
        .and_then(|v| v.checked_mul(2))
        .ok_or_else(overflow)?;
    weights.push(last as u64 * head as u64);
    weights.push(head as u64 * cfg.classes as u64);
    // Parameters do not depend on the resolution: count them at the smallest one.
    let params = crate::models::totals(cfg, 8).0 as u64;
    let act_size = precision.activations().size();
    let largest = largest_act
        .checked_mul(act_size)
        .ok_or_else(overflow)?
        .max(weights.into_iter().max().unwrap_or(0).saturating_mul(4));
    let activation_bytes = elements
        .checked_mul(act_size)
        .and_then(|v| v.checked_add(tail.checked_mul(4)?))
        .ok_or_else(overflow)?;
    Ok(Footprint {
        params,
        param_bytes: params.checked_mul(4 * PARAM_COPIES).ok_or_else(overflow)?,
        activation_bytes,
        largest_tensor_bytes: largest,
    })
}

impl Footprint {
    /// Refuse, with the numbers, a footprint the adapter cannot hold (see
    /// [`Self::check_limits`]); `what` names the model in the message.
    pub fn check(&self, gpu: &Gpu, what: &str) -> Result<()> {
        self.check_limits(
            gpu.max_binding_bytes(),
            gpu.memory_budget().as_ref(),
            &gpu.info.name,
            what,
        )
    }

    /// Refuse a footprint whose largest tensor exceeds `max_binding` bytes (the adapter's
    /// largest buffer binding), or whose total exceeds the memory `budget` where one is
    /// known. `adapter` and `what` name the adapter and the model in the message.
    pub fn check_limits(
        &self,
        max_binding: u64,
        budget: Option<&MemoryBudget>,
        adapter: &str,
        what: &str,
    ) -> Result<()> {
        if self.largest_tensor_bytes > max_binding {
            return Err(Error::TooLarge(format!(
                "{what}: its largest tensor needs {:.2} GiB but this adapter ('{adapter}') \
                 binds at most {:.2} GiB per buffer (max_buffer_size and \
                 max_storage_buffer_binding_size). Reduce the batch size or image size, or use \
                 a smaller model",
                gib(self.largest_tensor_bytes),
                gib(max_binding)
            )));
        }
        if let Some(budget) = budget {
            if self.total_bytes() > budget.bytes {
                return Err(Error::TooLarge(format!(
                    "{what} needs at least {:.2} GiB ({} parameters: {:.2} GiB for weights, \
                     gradients, optimizer state and average; {:.2} GiB of activations and \
                     their gradients) but this adapter ('{adapter}') has {:.2} GiB: {}. Reduce \
                     the batch size or image size, or use a smaller model",
                    gib(self.total_bytes()),
                    self.params,
                    gib(self.param_bytes),
                    gib(self.activation_bytes),
                    gib(budget.bytes),
                    budget.source
                )));
            }
        }
        Ok(())
    }
}
