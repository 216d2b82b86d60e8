//! The loader thread: decodes and augments batches ahead of the GPU through a bounded
//! channel. Every batch is a pure function of (seed, epoch, batch index), so a resumed run
//! sees exactly the batches an uninterrupted one would.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::{self, Transform};
use super::dataset::Dataset;
use crate::error::{Error, Result};
use crate::util::Rng;

/// What the loader produces.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch: usize,
    /// Output resolution (square).
    pub image_size: usize,
    /// Preprocessing.
    pub transform: Transform,
    /// Shuffle each epoch.
    pub shuffle: bool,
    /// Drop the last incomplete batch (training) or pad it (evaluation).
    pub drop_last: bool,
    /// Seed of the shuffling and augmentation streams.
    pub seed: u64,
    /// Per-channel mean used for normalization.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation used for normalization.
    pub std: Vec<f32>,
}

/// One batch, NHWC f32, padded to the batch size (padding rows have label 0).
#[derive(Clone, Debug)]
pub struct Batch {
    /// Images, `batch * size * size * c`.
    pub images: Vec<f32>,
    /// Labels, `batch`.
    pub labels: Vec<u32>,
    /// Rows that are real images (the rest is padding).
    pub valid: usize,
    /// Epoch this batch belongs to.
    pub epoch: usize,
    /// Index of the batch within its epoch.
    pub index: usize,
}

/// Batches in one epoch.
pub fn batches_per_epoch(n: usize, batch: usize, drop_last: bool) -> usize {
    if drop_last {
        n / batch
    } else {
        n.div_ceil(batch)
    }
}

fn mix(a: u64, b: u64, c: u64) -> u64 {
    a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17)
        ^ c.wrapping_mul(0x1656_67B1_9E37_79F9).rotate_left(41)
}

/// The order of samples in `epoch`.
pub fn epoch_order(n: usize, cfg: &LoaderConfig, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if cfg.shuffle {
        Rng::new(mix(cfg.seed, epoch as u64, 0xE90C)).shuffle(&mut order);
    }
    order
}

/// Build batch `index` of `epoch` (deterministic).
pub fn make_batch(
    ds: &Dataset,
    cfg: &LoaderConfig,
    order: &[usize],
    epoch: usize,
    index: usize,
) -> Result<Batch> {
    let s = cfg.image_size;
    let c = ds.c;
    let per = s * s * c;
    let mut images = vec![0f32; cfg.batch * per];
    let mut labels = vec![0u32; cfg.batch];
    let start = index * cfg.batch;
    let valid = cfg.batch.min(order.len().saturating_sub(start));
    for r in 0..valid {
        let i = order[start + r];
        let (px, h, w) = ds.image(i)?;
        let mut rng = Rng::new(mix(cfg.seed, epoch as u64, i as u64 + 1));
        augment::apply(
            cfg.transform,
            &px,
            h,
            w,
            c,
            s,
            &cfg.mean,
            &cfg.std,
            &mut rng,
            &mut images[r * per..(r + 1) * per],
        );
        labels[r] = ds.labels[i];
    }
    Ok(Batch {
        images,
        labels,
        valid,
        epoch,
        index,
    })
}

/// A background thread producing batches, `depth` ahead of the consumer.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
    /// Batches per epoch.
    pub per_epoch: usize,
}

impl Loader {
    /// Start producing from (`epoch`, `index`) on; `epochs` bounds the run (None: forever).
    pub fn start(
        ds: Arc<Dataset>,
        cfg: LoaderConfig,
        epoch: usize,
        index: usize,
        epochs: Option<usize>,
    ) -> Result<Loader> {
        let per_epoch = batches_per_epoch(ds.len(), cfg.batch, cfg.drop_last);
        if per_epoch == 0 {
            return Err(Error::Config(format!(
                "the dataset has {} images, fewer than one batch of {}; lower --batch",
                ds.len(),
                cfg.batch
            )));
        }
        let (tx, rx) = sync_channel(4);
        let handle = std::thread::Builder::new()
            .name("effnet-loader".into())
            .spawn(move || {
                let (mut e, mut b) = (epoch, index);
                let mut order = epoch_order(ds.len(), &cfg, e);
                loop {
                    if epochs.is_some_and(|n| e >= n) {
                        return;
                    }
                    let batch = make_batch(&ds, &cfg, &order, e, b);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                    b += 1;
                    if b == per_epoch {
                        b = 0;
                        e += 1;
                        order = epoch_order(ds.len(), &cfg, e);
                    }
                }
            })
            .map_err(|e| Error::Config(format!("cannot start the loader thread: {e}")))?;
        Ok(Loader {
            rx,
            handle: Some(handle),
            per_epoch,
        })
    }

    /// The next batch (None when a bounded run is over).
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        match self.rx.recv() {
            Ok(b) => b.map(Some),
            Err(_) => Ok(None),
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the producer, then join it.
        let (_tx, rx) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
