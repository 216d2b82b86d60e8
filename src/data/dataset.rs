//! In-memory image datasets (u8 pixels, HWC) and their readers: Fashion-MNIST / MNIST IDX
//! (gzip or raw), CIFAR-10 binary batches, and image-folder trees (one folder per class).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::models::ImageSize;

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
    /// at most 10,000 images for file datasets). With `skip_bad` a sampled file that does
    /// not decode is left out of the sample (the loader counts it when it meets it);
    /// without, it is an error naming the file and both ways out.
    pub fn channel_stats(&self, skip_bad: bool) -> Result<(Vec<f32>, Vec<f32>)> {
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
                    match decode_file(f, self.c) {
                        Ok((px, _, _)) => add(&px),
                        Err(_) if skip_bad => {}
                        Err(Error::File { path, msg }) => {
                            return Err(Error::File {
                                path,
                                msg: format!(
                                    "{msg} (met while measuring the training set's channel \
                                     statistics), or pass --skip-bad-images to skip and count \
                                     unreadable images"
                                ),
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
                if cnt == 0.0 {
                    return Err(Error::Config(format!(
                        "none of the {} sampled training images decodes",
                        files.len().div_ceil(step)
                    )));
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

/// Deflate's largest compression ratio (about 1032:1: a 258-byte match costs at least two
/// bits), so a gzip file of `n` bytes never holds more than `1032 * n` bytes of payload.
const MAX_GZIP_RATIO: u64 = 1032;

/// Read an IDX file (gzip or raw) of unsigned bytes with `dims` dimensions: checks the
/// magic `0x000008nn`, computes the payload size from the header without overflow, and
/// refuses a header that claims more than the file can hold before allocating anything.
/// Returns the dimensions and the payload.
fn read_idx(path: &Path, dims: usize, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let cannot = |e: std::io::Error| Error::file(path, format!("cannot read: {e}"));
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    let file_len = f.metadata().map_err(cannot)?.len();
    let mut magic2 = [0u8; 2];
    let gz = file_len >= 2 && {
        f.read_exact(&mut magic2).map_err(cannot)?;
        magic2 == [0x1f, 0x8b]
    };
    std::io::Seek::rewind(&mut f).map_err(cannot)?;
    let buffered = std::io::BufReader::with_capacity(1 << 16, f);
    let mut r: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let read_err = |e: std::io::Error| {
        if gz {
            Error::file(
                path,
                format!("corrupt gzip data ({e}); delete the file and reinstall or re-download it"),
            )
        } else {
            Error::file(
                path,
                format!("truncated or unreadable ({e}); reinstall or re-download it"),
            )
        }
    };
    let magic = 0x0800 | dims as u32;
    let not_idx = || {
        Error::file(
            path,
            format!(
                "not an IDX {what} file (expected magic 0x{magic:08x}); is this the right file?"
            ),
        )
    };
    let header_len = 4 + 4 * dims as u64;
    let mut header = vec![0u8; header_len as usize];
    if let Err(e) = r.read_exact(&mut header) {
        return Err(if !gz && e.kind() == std::io::ErrorKind::UnexpectedEof {
            not_idx()
        } else {
            read_err(e)
        });
    }
    if be32(&header, 0) != magic {
        return Err(not_idx());
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| be32(&header, 4 + 4 * d) as usize)
        .collect();
    let payload = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    // What the file can hold: its length (raw) or the deflate bound (gzip).
    let room = if gz {
        file_len.saturating_mul(MAX_GZIP_RATIO)
    } else {
        file_len - header_len.min(file_len)
    };
    let dims_text = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ");
    let payload = match payload {
        Some(p) if p <= room && usize::try_from(p).is_ok() => p,
        _ => {
            return Err(Error::file(
                path,
                format!(
                    "truncated or corrupt: the header claims {dims_text} {what} bytes, more than \
                     this {file_len}-byte file can hold; reinstall or re-download it"
                ),
            ))
        }
    };
    // The buffer grows with the data actually read: a lying header allocates nothing.
    let mut data = Vec::with_capacity(payload.min(1 << 26) as usize);
    r.take(payload + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 != payload {
        return Err(Error::file(
            path,
            format!(
                "truncated or corrupt: header says {dims_text} ({} bytes after the header) but \
                 the file holds {}{}; reinstall or re-download it",
                payload,
                if data.len() as u64 > payload {
                    "more"
                } else {
                    "only "
                },
                if data.len() as u64 > payload {
                    String::new()
                } else {
                    data.len().to_string()
                }
            ),
        ));
    }
    Ok((shape, data))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Read an IDX image file (magic 0x00000803): returns (n, h, w, pixels).
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (s, px) = read_idx(path, 3, "image")?;
    Ok((s[0], s[1], s[2], px))
}

/// Read an IDX label file (magic 0x00000801).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>> {
    let (_, b) = read_idx(path, 1, "label")?;
    Ok(b.iter().map(|&v| v as u32).collect())
}

/// Smallest share of the training images a class of an IDX dataset must hold (0.1%).
pub const MIN_CLASS_SHARE: f64 = 0.001;

/// The class count of an IDX training set. IDX files carry no class count, so effnet
/// derives it by this rule: the classes are the labels 0, 1, 2, ... up to (not including)
/// the first one that holds fewer than [`MIN_CLASS_SHARE`] of the images (and at least
/// one image). Every training label must then lie below the count (see
/// [`check_idx_labels`]). A flipped bit in the label file of a 10-class dataset makes a
/// label such as 131 held by one image: it is reported, never turned into a 131-class
/// model.
pub fn idx_class_count(labels: &[u32]) -> usize {
    let mut counts = [0usize; 256];
    for &l in labels {
        counts[(l as usize).min(255)] += 1;
    }
    let min = idx_min_count(labels.len());
    counts.iter().take_while(|&&c| c >= min).count()
}

fn idx_min_count(n: usize) -> usize {
    ((n as f64 * MIN_CLASS_SHARE).ceil() as usize).max(1)
}

/// Check that every label of an IDX label file is below `classes`; the error names the
/// file, the image index and the rule. `train` says whether `classes` came from these
/// labels ([`idx_class_count`]) or from the training set.
pub fn check_idx_labels(path: &Path, labels: &[u32], classes: usize, train: bool) -> Result<()> {
    let Some((i, &v)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    else {
        return Ok(());
    };
    let range = match classes {
        0 => "no classes".to_string(),
        k => format!("the {k} classes 0..={}", k - 1),
    };
    let why = if train {
        let held = labels.iter().filter(|&&l| l as usize == classes).count();
        format!(
            "IDX files carry no class count: effnet takes the labels 0, 1, 2, ... up to the \
             first that holds fewer than {:.1}% of the training images (here {} of {}), and \
             label {classes} holds {held}",
            100.0 * MIN_CLASS_SHARE,
            idx_min_count(labels.len()),
            labels.len()
        )
    } else {
        "the classes are those of the training labels".to_string()
    };
    Err(Error::file(
        path,
        format!(
            "label {v} of image {i} is outside {range} ({why}). A flipped bit or a label file \
             from another dataset does this: reinstall or re-download it"
        ),
    ))
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

/// Load Fashion-MNIST (or MNIST: same IDX layout) train or test split from `dir`; its
/// classes follow from its own labels by the rule of [`idx_class_count`].
pub fn load_idx_dir(dir: &Path, train: bool) -> Result<Dataset> {
    load_idx_split(dir, train, None)
}

/// Load both splits of an IDX dataset: the classes follow from the training labels
/// ([`idx_class_count`]) and every test label must be one of them.
pub fn load_idx_splits(dir: &Path) -> Result<(Dataset, Dataset)> {
    let train = load_idx_split(dir, true, None)?;
    let test = load_idx_split(dir, false, Some(train.classes.len()))?;
    let test = Dataset {
        classes: train.classes.clone(),
        ..test
    };
    Ok((train, test))
}

/// One split; `classes` is the training set's class count (None: derive it from these
/// labels).
fn load_idx_split(dir: &Path, train: bool, classes: Option<usize>) -> Result<Dataset> {
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
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::file(
            &ip,
            format!("holds no images ({n} of {h}x{w}); reinstall or re-download it"),
        ));
    }
    let k = classes.unwrap_or_else(|| idx_class_count(&labels));
    check_idx_labels(&lp, &labels, k, classes.is_none())?;
    Ok(Dataset {
        pixels: Pixels::Memory(px),
        labels,
        h,
        w,
        c: 1,
        classes: if k == FASHION_CLASSES.len() {
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
        let cannot = |e: std::io::Error| {
            Error::file(
                &p,
                format!("cannot read ({e}); --data-dir must hold CIFAR-10's binary version"),
            )
        };
        // Check the size before reading: whole 3073-byte records only.
        let len = std::fs::metadata(&p).map_err(cannot)?.len();
        let not_records = |len: u64| {
            Error::file(
                &p,
                format!(
                    "{len} bytes is not a whole number of 3073-byte CIFAR-10 records: corrupt \
                     or wrong file"
                ),
            )
        };
        if len == 0 || len % 3073 != 0 {
            return Err(not_records(len));
        }
        let b = std::fs::read(&p).map_err(cannot)?;
        if b.len() as u64 != len {
            return Err(not_records(b.len() as u64));
        }
        px.reserve(b.len() / 3073 * 3072);
        for (r, rec) in b.chunks_exact(3073).enumerate() {
            if rec[0] > 9 {
                return Err(Error::file(
                    &p,
                    format!(
                        "label {} of record {r} (byte {}) is out of range 0..9: corrupt file",
                        rec[0],
                        r * 3073
                    ),
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

/// True for names that start with a dot (`.ipynb_checkpoints`, `.DS_Store`, macOS `._x.jpg`
/// resource forks): never classes nor images.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// The class folders of an image-folder split: its sub-folders that are not hidden,
/// sorted by name, as (name, path).
fn class_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut classes: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| {
            Error::file(
                dir,
                format!(
                    "cannot list ({e}); --data-dir must be a folder with one sub-folder per class"
                ),
            )
        })?
        .map(|e| {
            let e = e.map_err(|err| Error::file(dir, format!("cannot list: {err}")))?;
            let path = e.path();
            if is_hidden(&e.file_name()) {
                return Ok(None);
            }
            if path.is_dir() {
                return Ok(Some((e.file_name().to_string_lossy().into_owned(), path)));
            }
            // A class folder behind a dangling link would silently drop a class (and
            // renumber the ones after it).
            if e.file_type().is_ok_and(|t| t.is_symlink()) && std::fs::metadata(&path).is_err() {
                return Err(Error::file(
                    &path,
                    "is a link to something that does not exist: fix or remove the link \
                     (a class must be a folder of images)",
                ));
            }
            Ok(None)
        })
        .filter_map(Result::transpose)
        .collect::<Result<_>>()?;
    classes.sort();
    Ok(classes)
}

/// The images of a class folder: its PNG and JPEG files that are not hidden, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok())
        .filter(|e| !is_hidden(&e.file_name()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// An image-folder tree: `dir/<class>/<image>.{png,jpg,jpeg}`; classes sorted by name.
/// Hidden folders and files (names starting with a dot) are skipped; a class folder with
/// no image is an error naming it (skipping it would silently renumber the classes after
/// it, and the other split's). Images are decoded on demand (at their own size) by the
/// loader thread; `size` is the nominal size recorded in [`Dataset::h`] / [`Dataset::w`].
pub fn load_folder(dir: &Path, size: impl Into<ImageSize>) -> Result<Dataset> {
    let size = size.into();
    let folders = class_folders(dir)?;
    if folders.len() < 2 {
        return Err(Error::file(
            dir,
            format!(
                "an image-folder dataset needs at least two class sub-folders; found {}",
                folders.len()
            ),
        ));
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (ci, (_, path)) in folders.iter().enumerate() {
        let v = image_files(path)?;
        if v.is_empty() {
            return Err(Error::file(
                path,
                "class folder holds no PNG or JPEG image: add images or remove the folder",
            ));
        }
        labels.extend(std::iter::repeat_n(ci as u32, v.len()));
        files.extend(v);
    }
    Ok(Dataset {
        pixels: Pixels::Files(files),
        labels,
        h: size.h,
        w: size.w,
        c: 3,
        classes: folders.into_iter().map(|(name, _)| name).collect(),
    })
}

/// Load an image-folder dataset's `train/` and `test/` (or `val/`) splits: both must have
/// the same class folders (the error lists the ones only one split has), and every test
/// image's header must decode ([`check_image_headers`]), so a corrupt test image is found
/// at start instead of at the first evaluation.
pub fn load_folder_splits(dir: &Path, size: impl Into<ImageSize>) -> Result<(Dataset, Dataset)> {
    let size = size.into();
    let test_dir = ["test", "val"]
        .iter()
        .map(|s| dir.join(s))
        .find(|p| p.is_dir())
        .ok_or_else(|| Error::file(dir, "needs train/ and test/ (or val/) sub-folders"))?;
    let train = load_folder(&dir.join("train"), size)?;
    let test = load_folder(&test_dir, size)?;
    if train.classes != test.classes {
        let only = |a: &Dataset, b: &Dataset| -> String {
            let v: Vec<&str> = a
                .classes
                .iter()
                .filter(|c| !b.classes.contains(c))
                .map(|c| c.as_str())
                .collect();
            if v.is_empty() {
                "none".into()
            } else {
                v.join(", ")
            }
        };
        return Err(Error::file(
            dir,
            format!(
                "train and test class folders differ: only in train/: {}; only in {}/: {}. \
                 Both splits need the same class folders",
                only(&train, &test),
                test_dir.file_name().unwrap_or_default().to_string_lossy(),
                only(&test, &train)
            ),
        ));
    }
    check_image_headers(&test)?;
    Ok((train, test))
}

/// Check that every image file of `ds` has a header that decodes to a known format and a
/// non-empty size. Reads only the headers (a few hundred bytes per file), so a file whose
/// header is corrupt is found at once; damage past the header is found when decoding.
pub fn check_image_headers(ds: &Dataset) -> Result<()> {
    let Pixels::Files(files) = &ds.pixels else {
        return Ok(());
    };
    for p in files {
        let dims = image::ImageReader::open(p)
            .and_then(|r| r.with_guessed_format())
            .map_err(image::ImageError::IoError)
            .and_then(|r| r.into_dimensions());
        match dims {
            Ok((w, h)) if w > 0 && h > 0 => {}
            Ok((w, h)) => {
                return Err(Error::file(
                    p,
                    format!("image is {w}x{h}: remove or replace the file"),
                ))
            }
            Err(e) => {
                return Err(Error::file(
                    p,
                    format!("cannot read the image header ({e}): remove or replace the file"),
                ))
            }
        }
    }
    Ok(())
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
