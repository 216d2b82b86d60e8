//! `effnet bench data`: images per second of the loader on an image-folder dataset, in
//! total and per stage (read, decode, crop + resize, normalization), for each worker count
//! asked. `bench train --data-dir` prints the same figure beside the GPU step's.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::data::{self, Loader, LoaderConfig, StageTimes, Transform};
use crate::error::{Error, Result};

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct DataBench {
    /// Worker threads.
    pub workers: usize,
    /// Images built.
    pub images: usize,
    /// Wall-clock seconds from starting the loader to the last batch.
    pub seconds: f64,
    /// Images per second delivered to the consumer (all workers).
    pub img_s: f64,
    /// `img_s / workers`.
    pub img_s_per_worker: f64,
    /// Per core: reading files and parsing headers.
    pub read_img_s: f64,
    /// Per core: decoding.
    pub decode_img_s: f64,
    /// Per core: crop, resize and flip into the batch.
    pub resize_img_s: f64,
    /// Per core, for reference: u8 -> normalized f32 on the CPU (what the loader did
    /// before the GPU took it over; not part of `img_s`).
    pub cpu_normalize_img_s: f64,
    /// Mean compressed file size, bytes.
    pub mean_file_bytes: f64,
    /// Share of images decoded at 1/1, 1/2, 1/4, 1/8 scale.
    pub scale_shares: [f64; 4],
}

/// The dataset a bench reads: `dir/train` when it exists, else `dir` itself (one
/// sub-folder per class either way).
pub fn bench_dataset(dir: &Path, image_size: usize) -> Result<data::Dataset> {
    let train = dir.join("train");
    data::load_folder(if train.is_dir() { &train } else { dir }, image_size)
}

fn per_s(images: usize, d: std::time::Duration) -> f64 {
    images as f64 / d.as_secs_f64().max(1e-9)
}

/// Measure the loader with each worker count in `workers`, building `batches` batches of
/// `batch` at `image_size` with training (random-resized-crop) or evaluation
/// preprocessing.
pub fn run(
    ds: &Arc<data::Dataset>,
    image_size: usize,
    batch: usize,
    workers: &[usize],
    batches: usize,
    eval: bool,
) -> Result<Vec<DataBench>> {
    if !matches!(ds.pixels, data::Pixels::Files(_)) {
        return Err(Error::Config(
            "bench data measures image-folder datasets".into(),
        ));
    }
    let mut out = Vec::new();
    for &w in workers {
        let cfg = LoaderConfig {
            batch,
            image_size: image_size.into(),
            transform: if eval {
                Transform::Eval { crop: 0.875 }
            } else {
                Transform::RandomResizedCrop { min_area: 0.08 }
            },
            shuffle: true,
            drop_last: true,
            seed: 0,
            workers: w,
            skip_bad_images: false,
            limit: None,
        };
        let t = Instant::now();
        let mut loader = Loader::start(ds.clone(), cfg, 0, 0, None)?;
        let mut times = StageTimes::default();
        let mut last = None;
        for _ in 0..batches.max(1) {
            let b = loader
                .next_batch()?
                .ok_or_else(|| Error::Config("the loader stopped early".into()))?;
            times.add(&b.times);
            if let Some(prev) = last.replace(b) {
                loader.recycle(prev);
            }
        }
        let seconds = t.elapsed().as_secs_f64();
        let workers = loader.workers;
        drop(loader);
        let b = last.expect("at least one batch");
        // The CPU normalization the loader used to do, timed on the last batch.
        let mut f = vec![0f32; batch * image_size * image_size * ds.c];
        let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
        let reps = 5;
        let tn = Instant::now();
        for _ in 0..reps {
            for (i, (y, &x)) in f.iter_mut().zip(&b.pixels).enumerate() {
                let c = i % 3;
                *y = (x as f32 / 255.0 - mean[c]) / std[c];
            }
            std::hint::black_box(&f);
        }
        let norm = per_s(reps * batch, tn.elapsed());
        let n = times.images.max(1);
        out.push(DataBench {
            workers,
            images: times.images,
            seconds,
            img_s: times.images as f64 / seconds.max(1e-9),
            img_s_per_worker: times.images as f64 / seconds.max(1e-9) / workers as f64,
            read_img_s: per_s(times.images, times.read),
            decode_img_s: per_s(times.images, times.decode),
            resize_img_s: per_s(times.images, times.resize),
            cpu_normalize_img_s: norm,
            mean_file_bytes: times.file_bytes as f64 / n as f64,
            scale_shares: times.scales.map(|s| s as f64 / n as f64),
        });
    }
    Ok(out)
}

/// One line per measurement.
pub fn format_line(r: &DataBench, image_size: usize) -> String {
    format!(
        "workers {:>2}: {:>7.1} img/s ({:.1} per worker) at {image_size}px over {} images; \
         per core: read {:.0}, decode {:.0}, crop+resize {:.0} img/s (CPU f32 normalize, now \
         on the GPU: {:.0} img/s); {:.0} KB/file; decoded at 1/1 {:.0}%, 1/2 {:.0}%, 1/4 \
         {:.0}%, 1/8 {:.0}%",
        r.workers,
        r.img_s,
        r.img_s_per_worker,
        r.images,
        r.read_img_s,
        r.decode_img_s,
        r.resize_img_s,
        r.cpu_normalize_img_s,
        r.mean_file_bytes / 1000.0,
        100.0 * r.scale_shares[0],
        100.0 * r.scale_shares[1],
        100.0 * r.scale_shares[2],
        100.0 * r.scale_shares[3],
    )
}

/// `effnet bench data` (and the loader half of `bench train --data-dir`): load the
/// dataset, measure each worker count (default: [`data::default_workers`]) over `batches`
/// batches, print a line (or JSON) per count.
pub fn main(
    data_dir: Option<std::path::PathBuf>,
    image_size: usize,
    batch: usize,
    workers: &[usize],
    batches: usize,
    json: bool,
) -> Result<Vec<DataBench>> {
    let dir = data_dir.ok_or_else(|| {
        Error::Config(
            "bench data needs --data-dir (an image folder; `cargo run --release --example \
             gen_jpegs -- DIR` makes one)"
                .into(),
        )
    })?;
    let workers = if workers.is_empty() {
        vec![data::default_workers()]
    } else {
        workers.to_vec()
    };
    if workers.contains(&0) || batch == 0 || image_size == 0 {
        return Err(Error::Config(
            "--workers, --batch and --image-size must be at least 1".into(),
        ));
    }
    let ds = Arc::new(bench_dataset(&dir, image_size)?);
    if !json {
        println!(
            "loader on {} ({} images, {} classes), batch {batch}, {batches} batches per worker count",
            dir.display(),
            ds.len(),
            ds.classes.len()
        );
    }
    let rs = run(&ds, image_size, batch, &workers, batches, false)?;
    for r in &rs {
        if json {
            println!("{}", serde_json::to_string(r).expect("serializable"));
        } else {
            println!("{}", format_line(r, image_size));
        }
    }
    Ok(rs)
}
