//! One loader worker's batch building: for each image of a batch, read and decode it (at a
//! reduced size when the crop allows), crop, resize and flip it into its row of the
//! batch's u8 NHWC pixels. The decoder, the resizer and their buffers live as long as the
//! worker, so nothing is allocated per image by effnet itself (the JPEG decoders keep
//! small per-image tables of their own).

use std::path::Path;
use std::time::{Duration, Instant};

use fast_image_resize as fir;

use super::augment::{self, Rect};
use super::dataset::{Dataset, Pixels};
use super::decode::{self, ImageDecoder};
use super::loader::{mix, Batch, LoaderConfig};
use crate::dist::Shard;
use crate::error::{Error, Result};
use crate::models::ImageSize;
use crate::util::Rng;

/// Time spent per stage while building batches (summed over images).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// Images built.
    pub images: usize,
    /// Reading files and parsing their headers.
    pub read: Duration,
    /// Decoding pixels.
    pub decode: Duration,
    /// Cropping, resizing and flipping into the batch.
    pub resize: Duration,
    /// Compressed bytes read.
    pub file_bytes: u64,
    /// Images decoded at scale 1/1, 1/2, 1/4, 1/8.
    pub scales: [usize; 4],
}

impl StageTimes {
    /// Add another worker's or batch's times.
    pub fn add(&mut self, o: &StageTimes) {
        self.images += o.images;
        self.read += o.read;
        self.decode += o.decode;
        self.resize += o.resize;
        self.file_bytes += o.file_bytes;
        for (a, b) in self.scales.iter_mut().zip(o.scales) {
            *a += b;
        }
    }
}

/// A worker's reusable state.
pub struct BatchBuilder {
    decoder: ImageDecoder,
    resizer: fir::Resizer,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes of a batch's pixels: `batch * h * w * c` rounded up to whole u32 words (the GPU
/// reads them four per word).
pub fn batch_bytes(batch: usize, size: impl Into<ImageSize>, c: usize) -> usize {
    crate::ops::input::padded_pixel_bytes(batch * size.into().pixels() * c)
}

impl BatchBuilder {
    /// A builder with empty buffers.
    pub fn new() -> Self {
        Self {
            decoder: ImageDecoder::new(),
            resizer: fir::Resizer::new(),
        }
    }

    /// Build batch `index` of `epoch` from the samples `order` lists (deterministic: a pure
    /// function of the dataset, the configuration, the epoch and the index). `pixels` is a
    /// buffer to reuse for the batch's pixels.
    pub fn build(
        &mut self,
        ds: &Dataset,
        cfg: &LoaderConfig,
        order: &[usize],
        epoch: usize,
        index: usize,
        pixels: Vec<u8>,
    ) -> Result<Batch> {
        let whole = Shard::whole(cfg.batch);
        self.build_shard(ds, cfg, whole, order, epoch, index, pixels)
    }

    /// Build one rank's rows of global batch `index` of `epoch`: rows `shard.offset ..
    /// shard.offset + shard.len` of the batch of `shard.global` rows that [`Self::build`]
    /// would build with `cfg.batch = shard.global`, with the same pixels (each image's
    /// augmentation depends only on the seed, the epoch and the image). `cfg.batch` must be
    /// `shard.len`; `valid` counts this shard's real rows.
    #[allow(clippy::too_many_arguments)]
    pub fn build_shard(
        &mut self,
        ds: &Dataset,
        cfg: &LoaderConfig,
        shard: Shard,
        order: &[usize],
        epoch: usize,
        index: usize,
        mut pixels: Vec<u8>,
    ) -> Result<Batch> {
        if shard.len != cfg.batch || shard.offset + shard.len > shard.global {
            return Err(Error::Shape(format!(
                "a shard of rows {}..{} of a batch of {} for a loader batch of {}",
                shard.offset,
                shard.offset + shard.len,
                shard.global,
                cfg.batch
            )));
        }
        let s = cfg.image_size;
        let c = ds.c;
        let per = s.pixels() * c;
        pixels.clear();
        pixels.resize(batch_bytes(cfg.batch, s, c), 0);
        let mut labels = vec![0u32; cfg.batch];
        let mut skipped = Vec::new();
        let mut times = StageTimes::default();
        let start = index * shard.global + shard.offset;
        let count = cfg.batch.min(order.len().saturating_sub(start));
        let mut row = 0;
        for &i in order.get(start..start + count).unwrap_or(&[]) {
            let mut rng = Rng::new(mix(cfg.seed, epoch as u64, i as u64 + 1));
            let dst = &mut pixels[row * per..(row + 1) * per];
            match &ds.pixels {
                Pixels::Memory(p) => {
                    let src = &p[i * ds.h * ds.w * c..(i + 1) * ds.h * ds.w * c];
                    let t = Instant::now();
                    augment::apply(cfg.transform, src, ds.h, ds.w, c, s, &mut rng, dst);
                    times.resize += t.elapsed();
                }
                Pixels::Files(files) => {
                    let path = &files[i];
                    match self.file_image(path, cfg, c, &mut rng, dst, &mut times) {
                        Ok(()) => {}
                        Err(e) if cfg.skip_bad_images => {
                            skipped.push((path.clone(), e));
                            continue;
                        }
                        Err(e) => {
                            return Err(Error::file(
                                path,
                                format!(
                                    "{e} (batch {index} of epoch {epoch}); remove or replace \
                                     the file, or pass --skip-bad-images to skip and count \
                                     such files"
                                ),
                            ))
                        }
                    }
                }
            }
            labels[row] = ds.labels[i];
            row += 1;
            times.images += 1;
        }
        // Rows of skipped images stay zero and count as padding.
        pixels[row * per..count * per].fill(0);
        Ok(Batch {
            pixels,
            labels,
            valid: row,
            epoch,
            index,
            skipped,
            times,
        })
    }

    fn file_image(
        &mut self,
        path: &Path,
        cfg: &LoaderConfig,
        c: usize,
        rng: &mut Rng,
        dst: &mut [u8],
        times: &mut StageTimes,
    ) -> std::result::Result<(), String> {
        if c != 3 {
            return Err(format!("file datasets are RGB, not {c} channels"));
        }
        let out = cfg.image_size;
        let t0 = Instant::now();
        let (h, w) = self.decoder.open(path)?;
        times.file_bytes += self.decoder.file_bytes() as u64;
        let (rect, flip) = augment::plan(cfg.transform, h, w, out, rng);
        let scale = decode::scale_for(rect.h, rect.w, out);
        let t1 = Instant::now();
        let d = self.decoder.decode(scale)?;
        times.scales[d.scale.trailing_zeros() as usize] += 1;
        let t2 = Instant::now();
        // The crop in the decoded image's pixels, clamped to it.
        let (fy, fx) = (d.h as f64 / h as f64, d.w as f64 / w as f64);
        let r = Rect {
            y0: (rect.y0 * fy).clamp(0.0, d.h as f64 - 1.0),
            x0: (rect.x0 * fx).clamp(0.0, d.w as f64 - 1.0),
            h: rect.h * fy,
            w: rect.w * fx,
        };
        let (rh, rw) = (r.h.min(d.h as f64 - r.y0), r.w.min(d.w as f64 - r.x0));
        let src = fir::images::ImageRef::new(
            d.w as u32,
            d.h as u32,
            self.decoder.pixels(),
            fir::PixelType::U8x3,
        )
        .map_err(|e| format!("decoded buffer does not match {}x{}: {e}", d.w, d.h))?;
        let mut dimg = fir::images::Image::from_slice_u8(
            out.w as u32,
            out.h as u32,
            dst,
            fir::PixelType::U8x3,
        )
        .map_err(|e| format!("batch row is not {}x{} RGB: {e}", out.h, out.w))?;
        let opts = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear))
            .crop(r.x0, r.y0, rw, rh);
        self.resizer
            .resize(&src, &mut dimg, &opts)
            .map_err(|e| format!("resize failed: {e}"))?;
        if flip {
            for line in dst.chunks_exact_mut(out.w * 3) {
                flip_row(line);
            }
        }
        let t3 = Instant::now();
        times.read += t1 - t0;
        times.decode += t2 - t1;
        times.resize += t3 - t2;
        Ok(())
    }
}

/// Mirror one row of RGB pixels in place.
fn flip_row(line: &mut [u8]) {
    let n = line.len() / 3;
    for k in 0..n / 2 {
        let (a, b) = (3 * k, 3 * (n - 1 - k));
        for ch in 0..3 {
            line.swap(a + ch, b + ch);
        }
    }
}
