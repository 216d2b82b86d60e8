//! Synthetic image-folder datasets (photos are not packaged): ImageNet-style class folders
//! of JPEGs with smooth, class-dependent colour patterns plus pixel noise, for the loader
//! bench (`examples/gen_jpegs.rs`) and, at a tiny size, the tests. Deterministic per seed.

use std::path::Path;

use crate::error::{Error, Result};
use crate::util::Rng;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    /// Class folders (`class_000`, `class_001`, ...).
    pub classes: usize,
    /// Images per class in `train/`.
    pub train_per_class: usize,
    /// Images per class in `val/` (0: no `val/`).
    pub val_per_class: usize,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// JPEG quality (1..100).
    pub quality: u8,
    /// Amplitude of the uniform pixel noise (0..255); it sets the compressed size, as
    /// texture does in photos.
    pub noise: f32,
    /// Seed.
    pub seed: u64,
}

impl Default for SynthSpec {
    /// 500x375 at quality 90 with noise giving files of roughly the size of ImageNet's.
    fn default() -> Self {
        Self {
            classes: 10,
            train_per_class: 100,
            val_per_class: 10,
            width: 500,
            height: 375,
            quality: 90,
            noise: 12.0,
            seed: 0,
        }
    }
}

/// RGB pixels of one synthetic image of class `class`.
pub fn synth_image(spec: &SynthSpec, class: usize, rng: &mut Rng) -> Vec<u8> {
    let (w, h) = (spec.width, spec.height);
    // Class sets the base frequencies and hues; each image jitters them and the phase.
    let base = class as f32 * 0.7 + 1.0;
    let fx: [f32; 3] = std::array::from_fn(|c| {
        (0.004 + 0.003 * ((base + c as f32) % 5.0)) * (0.8 + 0.4 * rng.uniform() as f32)
    });
    let fy: [f32; 3] = std::array::from_fn(|c| {
        (0.003 + 0.002 * ((base * 1.3 + c as f32) % 7.0)) * (0.8 + 0.4 * rng.uniform() as f32)
    });
    let phase: [f32; 3] = std::array::from_fn(|_| std::f32::consts::TAU * rng.uniform() as f32);
    let scale = 2.0 * std::f32::consts::PI;
    // Separable pattern: a(x) * b(y) per channel, plus a diagonal gradient.
    let ax: Vec<[f32; 3]> = (0..w)
        .map(|x| std::array::from_fn(|c| (scale * fx[c] * x as f32 + phase[c]).sin()))
        .collect();
    let by: Vec<[f32; 3]> = (0..h)
        .map(|y| std::array::from_fn(|c| (scale * fy[c] * y as f32 + phase[c] * 0.5).cos()))
        .collect();
    let mut px = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let g = 40.0 * ((x + y) as f32 / (w + h) as f32 - 0.5);
            for c in 0..3 {
                let noise = spec.noise * (rng.uniform() as f32 - 0.5) * 2.0;
                let v = 128.0 + 80.0 * ax[x][c] * by[y][c] + g + noise;
                px[(y * w + x) * 3 + c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    px
}

/// Encode RGB pixels as a JPEG file.
pub fn write_jpeg(path: &Path, px: &[u8], w: usize, h: usize, quality: u8) -> Result<()> {
    let f = std::fs::File::create(path)
        .map_err(|e| Error::file(path, format!("cannot create: {e}")))?;
    let mut out = std::io::BufWriter::new(f);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(px, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::file(path, format!("cannot encode JPEG: {e}")))
}

/// Write `root/train/<class>/<n>.jpg` (and `root/val/...`); returns the files written.
pub fn write_tree(root: &Path, spec: &SynthSpec) -> Result<usize> {
    let mut n = 0;
    for (split, per) in [("train", spec.train_per_class), ("val", spec.val_per_class)] {
        if per == 0 {
            continue;
        }
        for class in 0..spec.classes {
            let dir = root.join(split).join(format!("class_{class:03}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::file(&dir, format!("cannot create: {e}")))?;
            for k in 0..per {
                let mut rng = Rng::new(
                    spec.seed
                        ^ ((class as u64) << 32)
                        ^ (k as u64)
                        ^ ((split == "val") as u64) << 63,
                );
                let px = synth_image(spec, class, &mut rng);
                write_jpeg(
                    &dir.join(format!("{k:05}.jpg")),
                    &px,
                    spec.width,
                    spec.height,
                    spec.quality,
                )?;
                n += 1;
            }
        }
    }
    Ok(n)
}
