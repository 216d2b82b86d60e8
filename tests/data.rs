//! Dataset readers, clear errors on bad files, and loader determinism.
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use effnet::data::{self, Loader, LoaderConfig, Transform};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_gz(path: &Path, bytes: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

fn idx_images(n: usize, h: usize, w: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, h, w] {
        b.extend_from_slice(&(v as u32).to_be_bytes());
    }
    b.extend((0..n * h * w).map(|i| (i % 251) as u8));
    b
}

fn idx_labels(n: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(n as u32).to_be_bytes());
    b.extend((0..n).map(|i| (i % 10) as u8));
    b
}

fn synthetic_idx(dir: &Path, n: usize) {
    write_gz(
        &dir.join("train-images-idx3-ubyte.gz"),
        &idx_images(n, 28, 28),
    );
    write_gz(&dir.join("train-labels-idx1-ubyte.gz"), &idx_labels(n));
}

#[test]
fn reads_idx_gzip_and_raw() {
    let d = tmpdir("idx");
    synthetic_idx(&d, 20);
    let ds = data::load_idx_dir(&d, true).unwrap();
    assert_eq!((ds.len(), ds.h, ds.w, ds.c), (20, 28, 28, 1));
    assert_eq!(ds.labels[13], 3);
    // Raw (uncompressed) files are accepted too.
    let r = tmpdir("idx-raw");
    std::fs::write(r.join("t10k-images-idx3-ubyte"), idx_images(5, 28, 28)).unwrap();
    std::fs::write(r.join("t10k-labels-idx1-ubyte"), idx_labels(5)).unwrap();
    assert_eq!(data::load_idx_dir(&r, false).unwrap().len(), 5);
}

#[test]
fn corrupt_and_missing_files_name_the_file_and_the_fix() {
    let d = tmpdir("corrupt");
    synthetic_idx(&d, 20);
    // Truncate the image file: valid gzip of a short payload.
    let mut short = idx_images(20, 28, 28);
    short.truncate(1000);
    write_gz(&d.join("train-images-idx3-ubyte.gz"), &short);
    let e = data::load_idx_dir(&d, true).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("truncated or corrupt"),
        "{e}"
    );
    // Garbage that is not gzip nor IDX.
    std::fs::write(
        d.join("train-images-idx3-ubyte.gz"),
        b"\x1f\x8bnot really gzip",
    )
    .unwrap();
    let e = data::load_idx_dir(&d, true).unwrap_err().to_string();
    assert!(e.contains("corrupt gzip"), "{e}");
    // Missing files name the package that provides them.
    let empty = tmpdir("missing");
    let e = data::load_idx_dir(&empty, true).unwrap_err().to_string();
    assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    // Labels that do not match the images.
    let m = tmpdir("mismatch");
    write_gz(
        &m.join("train-images-idx3-ubyte.gz"),
        &idx_images(20, 28, 28),
    );
    write_gz(&m.join("train-labels-idx1-ubyte.gz"), &idx_labels(19));
    let e = data::load_idx_dir(&m, true).unwrap_err().to_string();
    assert!(e.contains("do not belong together"), "{e}");
}

#[test]
fn reads_cifar10_binary() {
    let d = tmpdir("cifar");
    let mut rec = Vec::new();
    for k in 0..3u8 {
        rec.push(k);
        rec.extend(std::iter::repeat_n(k * 10, 3072));
    }
    std::fs::write(d.join("test_batch.bin"), &rec).unwrap();
    let ds = data::load_cifar10(&d, false).unwrap();
    assert_eq!((ds.len(), ds.c, ds.h), (3, 3, 32));
    assert_eq!(ds.image(2).unwrap().0[5], 20);
    std::fs::write(d.join("test_batch.bin"), &rec[..3000]).unwrap();
    let e = data::load_cifar10(&d, false).unwrap_err().to_string();
    assert!(e.contains("test_batch.bin") && e.contains("3073"), "{e}");
}

#[test]
fn reads_image_folders() {
    let d = tmpdir("folder");
    for (ci, name) in ["cat", "dog"].iter().enumerate() {
        std::fs::create_dir_all(d.join(name)).unwrap();
        for k in 0..2 {
            let img = image::RgbImage::from_fn(20 + k, 16, |x, _| {
                image::Rgb([x as u8 * 10, ci as u8 * 100, 7])
            });
            img.save(d.join(name).join(format!("{k}.png"))).unwrap();
        }
    }
    std::fs::write(d.join("dog").join("broken.png"), b"nope").unwrap();
    let ds = data::load_folder(&d, 32).unwrap();
    assert_eq!(ds.classes, vec!["cat", "dog"]);
    assert_eq!(ds.len(), 5);
    let (px, h, w) = ds.image(1).unwrap();
    assert_eq!((h, w, px.len()), (16, 21, 16 * 21 * 3));
    let e = ds.image(4).unwrap_err().to_string();
    assert!(
        e.contains("broken.png") && e.contains("cannot decode"),
        "{e}"
    );
}

fn cfg(seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch: 4,
        image_size: 32.into(),
        transform: Transform::PadCropFlip { pad: 4 },
        shuffle: true,
        drop_last: true,
        seed,
        workers: 1,
        skip_bad_images: false,
        limit: None,
    }
}

#[test]
fn loader_is_deterministic_and_resumable() {
    let d = tmpdir("loader");
    synthetic_idx(&d, 18);
    let ds = Arc::new(data::load_idx_dir(&d, true).unwrap());
    let mut a = Loader::start(ds.clone(), cfg(7), 0, 0, Some(3)).unwrap();
    assert_eq!(a.per_epoch, 4);
    let mut all = Vec::new();
    while let Some(b) = a.next_batch().unwrap() {
        assert_eq!(b.pixels.len(), 4 * 32 * 32);
        all.push(b);
    }
    assert_eq!(all.len(), 12);
    // Resume at epoch 1, batch 2: identical batches.
    let mut r = Loader::start(ds.clone(), cfg(7), 1, 2, Some(3)).unwrap();
    for want in &all[6..] {
        let got = r.next_batch().unwrap().unwrap();
        assert_eq!((got.epoch, got.index), (want.epoch, want.index));
        assert_eq!(got.pixels, want.pixels);
        assert_eq!(got.labels, want.labels);
    }
    // Another seed gives other batches; epochs differ from each other.
    let mut o = Loader::start(ds, cfg(8), 0, 0, Some(1)).unwrap();
    assert_ne!(o.next_batch().unwrap().unwrap().pixels, all[0].pixels);
    assert_ne!(all[0].labels, all[4].labels);
}

#[test]
fn eval_transform_is_exact_resize() {
    // A constant image stays constant through the eval resize.
    let src = vec![51u8; 28 * 28];
    let mut dst = vec![0u8; 32 * 32];
    let mut rng = effnet::util::Rng::new(1);
    data::augment::apply(
        Transform::Eval { crop: 1.0 },
        &src,
        28,
        28,
        1,
        32.into(),
        &mut rng,
        &mut dst,
    );
    assert_eq!(dst[5 * 32 + 5], 51);
}

#[test]
fn real_fashion_mnist_when_installed() {
    let dir = Path::new(data::FASHION_MNIST_DIR);
    if !dir.exists() {
        eprintln!("skipping: {} not installed", dir.display());
        return;
    }
    let test = data::load_idx_dir(dir, false).unwrap();
    assert_eq!((test.len(), test.h, test.w), (10_000, 28, 28));
    let (mean, std) = test.channel_stats(false).unwrap();
    assert!(
        (mean[0] - 0.286).abs() < 0.01 && (std[0] - 0.353).abs() < 0.01,
        "{mean:?} {std:?}"
    );
}

/// Crops take the output's aspect ratio (width / height): the evaluation crop and the
/// padded crop exactly, the random-resized crop within [3/4, 4/3] of it; square outputs
/// keep the square crops, draw for draw. A non-square batch is `h x w` pixels per image.
#[test]
fn crops_follow_the_output_aspect_ratio() {
    use data::augment::plan;
    use effnet::models::ImageSize;
    let out = ImageSize::new(16, 24);
    let aspect = 1.5;
    let rect = |t, h, w, out| plan(t, h, w, out, &mut effnet::util::Rng::new(3)).0;
    let e = rect(Transform::Eval { crop: 0.875 }, 300, 400, out);
    assert!((e.w / e.h - aspect).abs() < 1e-9 && (e.w - 0.875 * 400.0).abs() < 1e-9);
    assert!((e.y0 - (300.0 - e.h) / 2.0).abs() < 1e-9);
    let tall = rect(Transform::Eval { crop: 1.0 }, 400, 300, out);
    assert_eq!((tall.w, tall.h), (300.0, 200.0));
    let p = rect(Transform::PadCropFlip { pad: 3 }, 28, 28, out);
    assert!((p.w / p.h - aspect).abs() < 1e-9 && p.w == 28.0);
    let mut rng = effnet::util::Rng::new(5);
    for _ in 0..200 {
        let (r, _) = plan(
            Transform::RandomResizedCrop { min_area: 0.08 },
            300,
            400,
            out,
            &mut rng,
        );
        let a = r.w / r.h;
        assert!(
            (0.75 * aspect - 1e-9..=4.0 / 3.0 * aspect + 1e-9).contains(&a),
            "{a}"
        );
        assert!(r.y0 >= 0.0 && r.x0 >= 0.0 && r.y0 + r.h <= 300.0 && r.x0 + r.w <= 400.0);
    }
    // Square outputs: the shorter side, as before.
    let sq = rect(
        Transform::Eval { crop: 1.0 },
        300,
        400,
        ImageSize::square(32),
    );
    assert_eq!((sq.x0, sq.y0, sq.w, sq.h), (50.0, 0.0, 300.0, 300.0));
    // A loader batch of 16x24 images.
    let d = tmpdir("rect-loader");
    synthetic_idx(&d, 8);
    let ds = Arc::new(data::load_idx_dir(&d, true).unwrap());
    let c = LoaderConfig {
        image_size: out,
        ..cfg(1)
    };
    let b = Loader::start(ds, c, 0, 0, Some(1))
        .unwrap()
        .next_batch()
        .unwrap()
        .unwrap();
    assert_eq!(b.pixels.len(), 4 * 16 * 24);
    assert!(b.pixels.iter().any(|&v| v != 0));
}
