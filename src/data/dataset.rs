//! In-memory image datasets (u8 pixels, HWC) and their readers: Fashion-MNIST / MNIST IDX
//! (gzip or raw), CIFAR-10 binary batches, and image-folder trees (one folder per class).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where images come from.
#[derive(Clone, Debug)]
pub enum Pixels {
    /// Decoded images, `n * h * w * c` bytes, HWC per image.
    Memory(Vec<u8>),
    /// Image files decoded on demand by the loader thread (resized to `h` x `w`).
    Files(Vec<PathBuf>),
}

/// A labelled image dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Pixels.
    pub pixels: Pixels,
    /// Class index per image.
    pub labels: Vec<u32>,
    /// Image height (for files: the size images are decoded to before augmentation).
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Channels (1 or 3).
    pub c: usize,
    /// Class names.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Per-channel mean and standard deviation of the pixels in [0, 1] (over a sample of
    /// at most 10,000 images for file datasets).
    pub fn channel_stats(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = self.c;
        let mut s = vec![0f64; c];
        let mut s2 = vec![0f64; c];
        let mut cnt = 0f64;
        let mut add = |px: &[u8]| {
            for (i, &v) in px.iter().enumerate() {
                let x = v as f64 / 255.0;
                s[i % c] += x;
                s2[i % c] += x * x;
            }
            cnt += (px.len() / c) as f64;
        };
        match &self.pixels {
            Pixels::Memory(p) => add(p),
            Pixels::Files(files) => {
                let step = (files.len() / 10_000).max(1);
                for f in files.iter().step_by(step) {
                    add(&decode_file(f, self.c)?.0);
                }
            }
        }
        let mean: Vec<f32> = s.iter().map(|v| (v / cnt) as f32).collect();
        let std = s2
            .iter()
            .zip(&mean)
            .map(|(v, &m)| ((v / cnt - (m as f64).powi(2)).max(1e-12).sqrt()) as f32)
            .collect();
        Ok((mean, std))
    }

    /// The u8 HWC pixels of image `i` with its height and width (file images keep their
    /// own size; augmentation crops and resizes them).
    pub fn image(&self, i: usize) -> Result<(Vec<u8>, usize, usize)> {
        let per = self.h * self.w * self.c;
        match &self.pixels {
            Pixels::Memory(p) => Ok((p[i * per..(i + 1) * per].to_vec(), self.h, self.w)),
            Pixels::Files(f) => decode_file(&f[i], self.c),
        }
    }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::file(
                    path,
                    format!(
                        "corrupt gzip data ({e}); delete the file and reinstall or re-download it"
                    ),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Read an IDX image file (magic 0x00000803): returns (n, h, w, pixels).
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let b = read_maybe_gz(path)?;
    if b.len() < 16 || be32(&b, 0) != 0x0803 {
        return Err(Error::file(
            path,
            "not an IDX image file (expected magic 0x00000803); is this the right file?",
        ));
    }
    let (n, h, w) = (
        be32(&b, 4) as usize,
        be32(&b, 8) as usize,
        be32(&b, 12) as usize,
    );
    if b.len() != 16 + n * h * w {
        return Err(Error::file(
            path,
            format!(
                "truncated or corrupt: header says {n} images of {h}x{w} ({} bytes) but the \
                 file holds {}; reinstall or re-download it",
                16 + n * h * w,
                b.len()
            ),
        ));
    }
    Ok((n, h, w, b[16..].to_vec()))
}

/// Read an IDX label file (magic 0x00000801).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>> {
    let b = read_maybe_gz(path)?;
    if b.len() < 8 || be32(&b, 0) != 0x0801 {
        return Err(Error::file(
            path,
            "not an IDX label file (expected magic 0x00000801); is this the right file?",
        ));
    }
    let n = be32(&b, 4) as usize;
    if b.len() != 8 + n {
        return Err(Error::file(
            path,
            format!(
                "truncated or corrupt: header says {n} labels, file holds {}",
                b.len() - 8
            ),
        ));
    }
    Ok(b[8..].iter().map(|&v| v as u32).collect())
}

/// Default location of the Debian package `dataset-fashion-mnist`.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for cand in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&cand);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::file(
        dir.join(format!("{stem}.gz")),
        format!(
            "missing. Fashion-MNIST needs {stem}[.gz] in {}; on Debian/Ubuntu run \
             `sudo apt-get install dataset-fashion-mnist` (files go to {FASHION_MNIST_DIR}) or \
             pass --data-dir with the four IDX files",
            dir.display()
        ),
    ))
}

/// Load Fashion-MNIST (or MNIST: same IDX layout) train or test split from `dir`.
pub fn load_idx_dir(dir: &Path, train: bool) -> Result<Dataset> {
    let prefix = if train { "train" } else { "t10k" };
    let ip = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (n, h, w, px) = read_idx_images(&ip)?;
    let labels = read_idx_labels(&lp)?;
    if labels.len() != n {
        return Err(Error::file(
            &lp,
            format!(
                "{} labels for {n} images in {}: the files do not belong together",
                labels.len(),
                ip.display()
            ),
        ));
    }
    let k = labels.iter().max().map_or(0, |m| m + 1) as usize;
    if k > 256 {
        return Err(Error::file(&lp, "labels out of range"));
    }
    Ok(Dataset {
        pixels: Pixels::Memory(px),
        labels,
        h,
        w,
        c: 1,
        classes: if k <= 10 {
            FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            (0..k).map(|i| i.to_string()).collect()
        },
    })
}

/// CIFAR-10 class names.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Load CIFAR-10 binary batches (`data_batch_{1..5}.bin` or `test_batch.bin`) from `dir`
/// (or its `cifar-10-batches-bin` subfolder). Records are 1 label byte + 3072 CHW bytes.
pub fn load_cifar10(dir: &Path, train: bool) -> Result<Dataset> {
    let base = if dir.join("cifar-10-batches-bin").is_dir() {
        dir.join("cifar-10-batches-bin")
    } else {
        dir.to_path_buf()
    };
    let names: Vec<String> = if train {
        (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
    } else {
        vec!["test_batch.bin".into()]
    };
    let mut px = Vec::new();
    let mut labels = Vec::new();
    for name in names {
        let p = base.join(&name);
        let b = std::fs::read(&p).map_err(|e| {
            Error::file(
                &p,
                format!("cannot read ({e}); --data-dir must hold CIFAR-10's binary version"),
            )
        })?;
        if b.is_empty() || b.len() % 3073 != 0 {
            return Err(Error::file(
                &p,
                format!("{} bytes is not a whole number of 3073-byte CIFAR-10 records: corrupt or wrong file", b.len()),
            ));
        }
        for rec in b.chunks_exact(3073) {
            if rec[0] > 9 {
                return Err(Error::file(
                    &p,
                    format!("label {} out of range 0..9: corrupt file", rec[0]),
                ));
            }
            labels.push(rec[0] as u32);
            for i in 0..1024 {
                for ch in 0..3 {
                    px.push(rec[1 + ch * 1024 + i]);
                }
            }
        }
    }
    Ok(Dataset {
        pixels: Pixels::Memory(px),
        labels,
        h: 32,
        w: 32,
        c: 3,
        classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}

/// An image-folder tree: `dir/<class>/<image>.{png,jpg,jpeg}`; classes sorted by name.
/// Images are decoded on demand (at their own size) by the loader thread; `size` is the
/// nominal size recorded in [`Dataset::h`] / [`Dataset::w`].
pub fn load_folder(dir: &Path, size: usize) -> Result<Dataset> {
    let mut classes: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| {
            Error::file(
                dir,
                format!(
                    "cannot list ({e}); --data-dir must be a folder with one sub-folder per class"
                ),
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.len() < 2 {
        return Err(Error::file(
            dir,
            "an image-folder dataset needs at least two class sub-folders",
        ));
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (ci, c) in classes.iter().enumerate() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(c))
            .map_err(|e| Error::file(dir.join(c), format!("cannot list: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .collect();
        v.sort();
        labels.extend(std::iter::repeat_n(ci as u32, v.len()));
        files.extend(v);
    }
    if files.is_empty() {
        return Err(Error::file(
            dir,
            "no PNG or JPEG images found in the class folders",
        ));
    }
    Ok(Dataset {
        pixels: Pixels::Files(files),
        labels,
        h: size,
        w: size,
        c: 3,
        classes,
    })
}

/// Decode an image file to u8 HWC with `c` channels: (pixels, height, width).
pub fn decode_file(path: &Path, c: usize) -> Result<(Vec<u8>, usize, usize)> {
    let img = image::open(path).map_err(|e| {
        Error::file(
            path,
            format!("cannot decode image ({e}); remove or replace the file"),
        )
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let px = if c == 1 {
        img.to_luma8().into_raw()
    } else {
        img.to_rgb8().into_raw()
    };
    Ok((px, h, w))
}
