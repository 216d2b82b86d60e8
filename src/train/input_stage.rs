//! The upload of batches: u8 pixels into one of two GPU slots, and the normalization
//! kernel that turns a slot into the model's f32 input as the first dispatch of a step.
//!
//! Two slots, so that while step k reads slot k mod 2 the pixels of batch k+1 are written
//! to the other one (wgpu copies them from its staging memory at the next submission,
//! with no dependency on the reads of step k). Before a slot is overwritten, the step that
//! last read it must be finished: [`InputStage::upload`] waits for that submission (with
//! the trainer's bound of two steps in flight it has always finished already, so the wait
//! returns at once; the check keeps the ring correct under any bound).

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder, Submitted, Tensor};
use crate::ops::input::{self, NormalizeParams};

use super::model::Trainable;

/// The pixel slots of one model.
pub struct InputStage {
    slots: [Tensor; 2],
    last_reader: [Option<wgpu::SubmissionIndex>; 2],
    next: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// Which slot a step reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(usize);

impl InputStage {
    /// Slots sized for `model`'s input, normalizing with `mean` / `std` per channel.
    pub fn new(gpu: &Gpu, model: &dyn Trainable, mean: &[f32], std: &[f32]) -> Result<Self> {
        NormalizeParams::new(model.input().len(), mean, std)?;
        let words = input::padded_pixel_bytes(model.input().len()) / 4;
        Ok(Self {
            slots: [gpu.zeros(&[words])?, gpu.zeros(&[words])?],
            last_reader: [None, None],
            next: 0,
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }

    /// Queue the batch's pixels into the next slot, and its labels and loss weights into
    /// the model (rows past `b.valid` weigh 0). Returns the slot the step must read.
    pub fn upload(&mut self, gpu: &Gpu, model: &dyn Trainable, b: &Batch) -> Result<Slot> {
        self.upload_weighted(gpu, model, b, b.valid)
    }

    /// [`Self::upload`] with real rows weighing `1 / global_valid`: the real rows of the
    /// whole global batch in a data-parallel run, so that the ranks' summed gradients are
    /// the exact mean over the global batch even when shards hold different numbers of
    /// real rows.
    pub fn upload_weighted(
        &mut self,
        gpu: &Gpu,
        model: &dyn Trainable,
        b: &Batch,
        global_valid: usize,
    ) -> Result<Slot> {
        let k = self.next;
        self.next = (k + 1) % self.slots.len();
        if let Some(idx) = self.last_reader[k].take() {
            gpu.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(idx),
                    timeout: None,
                })
                .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
        }
        if b.pixels.len() as u64 != self.slots[k].bytes() {
            return Err(Error::Shape(format!(
                "a batch of {} pixel bytes for a model input of {:?}",
                b.pixels.len(),
                model.input().shape()
            )));
        }
        gpu.write_bytes(&self.slots[k], &b.pixels)?;
        gpu.write_u32(model.labels(), &b.labels)?;
        let w: Vec<f32> = (0..model.batch())
            .map(|i| {
                if i < b.valid {
                    1.0 / global_valid as f32
                } else {
                    0.0
                }
            })
            .collect();
        gpu.write_f32(model.loss_weights(), &w)?;
        Ok(Slot(k))
    }

    /// Record the normalization of `slot` into the model's input.
    pub fn record(&self, rec: &mut Recorder, slot: Slot, model: &dyn Trainable) -> Result<()> {
        input::normalize(
            rec,
            &self.slots[slot.0],
            model.input(),
            &self.mean,
            &self.std,
        )
    }

    /// Note the submission that reads `slot` (the next upload into it waits for it).
    pub fn submitted(&mut self, slot: Slot, s: &Submitted) {
        self.last_reader[slot.0] = Some(s.index.clone());
    }
}
