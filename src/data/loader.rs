//! The loader: a pool of worker threads, each building whole batches ahead of the GPU.
//! Every batch is a pure function of (seed, epoch, batch index), so any number of workers
//! gives the same bytes, and a resumed run sees exactly the batches an uninterrupted one
//! would. Batches are NHWC u8; the GPU normalizes them (`ops::input`).
//!
//! Worker `w` of `N` builds the batches whose sequence number (counted from the batch the
//! loader starts at) is `w mod N` and hands them over through its own bounded channel; the
//! consumer takes them round-robin, so they arrive in order without any reordering buffer.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::augment::Transform;
use super::builder::{BatchBuilder, StageTimes};
use super::dataset::Dataset;
use crate::dist::Shard;
use crate::error::{Error, Result};
use crate::models::ImageSize;
use crate::util::Rng;

/// What the loader produces.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch: usize,
    /// Output resolution, `H x W`.
    pub image_size: ImageSize,
    /// Preprocessing.
    pub transform: Transform,
    /// Shuffle each epoch.
    pub shuffle: bool,
    /// Drop the last incomplete batch (training) or pad it (evaluation).
    pub drop_last: bool,
    /// Seed of the shuffling and augmentation streams.
    pub seed: u64,
    /// Worker threads (at least 1; more than the batches of an epoch are not started).
    pub workers: usize,
    /// Skip (and report in [`Batch::skipped`]) image files that cannot be read or decoded,
    /// instead of stopping with an error naming the file.
    pub skip_bad_images: bool,
    /// Use only the first this many samples of each epoch's order (evaluation limits).
    pub limit: Option<usize>,
}

/// The default worker count: the available cores minus one (for the thread driving the
/// GPU), at least 1.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

/// One batch: NHWC u8 pixels padded to the batch size (padding rows are zero, label 0).
#[derive(Clone, Debug)]
pub struct Batch {
    /// Pixels, `batch * h * w * c` bytes rounded up to a multiple of 4.
    pub pixels: Vec<u8>,
    /// Labels, `batch`.
    pub labels: Vec<u32>,
    /// Rows that are real images (the first `valid`; the rest is padding).
    pub valid: usize,
    /// Epoch this batch belongs to.
    pub epoch: usize,
    /// Index of the batch within its epoch.
    pub index: usize,
    /// Image files skipped (with `skip_bad_images`) and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Time spent building this batch, per stage.
    pub times: StageTimes,
}

/// Batches in one epoch.
pub fn batches_per_epoch(n: usize, batch: usize, drop_last: bool) -> usize {
    if drop_last {
        n / batch
    } else {
        n.div_ceil(batch)
    }
}

pub(crate) fn mix(a: u64, b: u64, c: u64) -> u64 {
    a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17)
        ^ c.wrapping_mul(0x1656_67B1_9E37_79F9).rotate_left(41)
}

/// The order of samples in `epoch` (truncated to the configuration's limit).
pub fn epoch_order(n: usize, cfg: &LoaderConfig, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if cfg.shuffle {
        Rng::new(mix(cfg.seed, epoch as u64, 0xE90C)).shuffle(&mut order);
    }
    order.truncate(cfg.limit.unwrap_or(n));
    order
}

/// Build batch `index` of `epoch` on the calling thread (deterministic; same bytes as the
/// loader's workers give).
pub fn make_batch(
    ds: &Dataset,
    cfg: &LoaderConfig,
    order: &[usize],
    epoch: usize,
    index: usize,
) -> Result<Batch> {
    BatchBuilder::new().build(ds, cfg, order, epoch, index, Vec::new())
}

/// Epoch orders shared by the workers (each is computed once, by the first worker that
/// needs it; the two most recent are kept).
#[derive(Default)]
struct Orders(Mutex<Vec<(usize, Arc<Vec<usize>>)>>);

impl Orders {
    fn get(&self, n: usize, cfg: &LoaderConfig, epoch: usize) -> Arc<Vec<usize>> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, o)) = v.iter().find(|(e, _)| *e == epoch) {
            return o.clone();
        }
        let o = Arc::new(epoch_order(n, cfg, epoch));
        v.push((epoch, o.clone()));
        if v.len() > 2 {
            v.sort_by_key(|(e, _)| *e);
            v.remove(0);
        }
        o
    }
}

/// Pixel buffers handed back by the consumer for reuse.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// Worker threads producing batches ahead of the consumer.
pub struct Loader {
    rxs: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    pool: Pool,
    waited: Duration,
    /// Batches per epoch.
    pub per_epoch: usize,
    /// Worker threads running.
    pub workers: usize,
}

/// Batches each worker may have finished ahead of the consumer.
const DEPTH: usize = 2;

impl Loader {
    /// Start producing from (`epoch`, `index`) on; `epochs` bounds the run (None: forever).
    /// Starts `min(cfg.workers, batches per epoch)` workers.
    pub fn start(
        ds: Arc<Dataset>,
        cfg: LoaderConfig,
        epoch: usize,
        index: usize,
        epochs: Option<usize>,
    ) -> Result<Loader> {
        let whole = Shard::whole(cfg.batch);
        Self::start_shard(ds, cfg, whole, epoch, index, epochs)
    }

    /// [`Loader::start`] for one rank of a data-parallel run: every batch holds this
    /// rank's `shard` of the global batch of `shard.global` rows (see
    /// [`BatchBuilder::build_shard`]); epochs count global batches. `cfg.batch` must be
    /// `shard.len`.
    pub fn start_shard(
        ds: Arc<Dataset>,
        cfg: LoaderConfig,
        shard: Shard,
        epoch: usize,
        index: usize,
        epochs: Option<usize>,
    ) -> Result<Loader> {
        let n = cfg.limit.map_or(ds.len(), |l| l.min(ds.len()));
        let per_epoch = batches_per_epoch(n, shard.global, cfg.drop_last);
        if per_epoch == 0 {
            return Err(Error::Config(format!(
                "the dataset has {n} images, fewer than one batch of {}; lower --batch",
                shard.global
            )));
        }
        if cfg.workers == 0 {
            return Err(Error::Config("--workers must be at least 1".into()));
        }
        // A dataset with fewer batches per epoch than workers: the extra workers would only
        // hold batches of later epochs in memory.
        let workers = cfg.workers.min(per_epoch);
        let cfg = Arc::new(cfg);
        let orders = Arc::new(Orders::default());
        let pool: Pool = Arc::default();
        let mut rxs = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(DEPTH);
            let (ds, cfg, orders, pool) = (ds.clone(), cfg.clone(), orders.clone(), pool.clone());
            let h = std::thread::Builder::new()
                .name(format!("effnet-loader-{w}"))
                .spawn(move || {
                    let mut builder = BatchBuilder::new();
                    let mut seq = w;
                    loop {
                        let e = epoch + (index + seq) / per_epoch;
                        let b = (index + seq) % per_epoch;
                        if epochs.is_some_and(|m| e >= m) {
                            return;
                        }
                        let order = orders.get(ds.len(), &cfg, e);
                        let buf = pool
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .pop()
                            .unwrap_or_default();
                        let batch = builder.build_shard(&ds, &cfg, shard, &order, e, b, buf);
                        let failed = batch.is_err();
                        if tx.send(batch).is_err() || failed {
                            return;
                        }
                        seq += workers;
                    }
                })
                .map_err(|e| Error::Config(format!("cannot start a loader thread: {e}")))?;
            rxs.push(rx);
            handles.push(h);
        }
        Ok(Loader {
            rxs,
            handles,
            next: 0,
            pool,
            waited: Duration::ZERO,
            per_epoch,
            workers,
        })
    }

    /// The next batch (None when a bounded run is over).
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        let t = Instant::now();
        let r = self.rxs[self.next % self.rxs.len()].recv();
        self.waited += t.elapsed();
        self.next += 1;
        match r {
            Ok(b) => b.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Hand a consumed batch's pixel buffer back for reuse.
    pub fn recycle(&self, b: Batch) {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < self.rxs.len() * (DEPTH + 1) {
            p.push(b.pixels);
        }
    }

    /// Total time [`Loader::next_batch`] has spent waiting for batches.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the producers (their sends fail once the receivers are gone), then join.
        self.rxs.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
