//! The loader's worker pool and image decoding: any worker count gives the same bytes,
//! reduced-size JPEG decoding, and bad files (corrupt, truncated, vanished, huge headers)
//! stop the run naming the file or are skipped and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use effnet::data::decode::{self, ImageDecoder};
use effnet::data::synth::{self, SynthSpec};
use effnet::data::{self, Batch, Loader, LoaderConfig, Pixels, Transform};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-loader-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny tree: 3 classes x `per` JPEGs of 64x48 (train/ only).
fn tiny_tree(name: &str, per: usize) -> PathBuf {
    let d = tmpdir(name);
    let spec = SynthSpec {
        classes: 3,
        train_per_class: per,
        val_per_class: 0,
        width: 64,
        height: 48,
        ..SynthSpec::default()
    };
    synth::write_tree(&d, &spec).unwrap();
    d.join("train")
}

fn cfg(workers: usize, transform: Transform) -> LoaderConfig {
    LoaderConfig {
        batch: 4,
        image_size: 16.into(),
        transform,
        shuffle: true,
        drop_last: true,
        seed: 3,
        workers,
        skip_bad_images: false,
        limit: None,
    }
}

fn all_batches(ds: &Arc<data::Dataset>, c: LoaderConfig, epochs: usize) -> Vec<Batch> {
    let mut l = Loader::start(ds.clone(), c, 0, 0, Some(epochs)).unwrap();
    let mut v = Vec::new();
    while let Some(b) = l.next_batch().unwrap() {
        v.push(b);
    }
    v
}

fn same(a: &[Batch], b: &[Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.epoch, x.index, x.valid), (y.epoch, y.index, y.valid));
        assert!(x.pixels == y.pixels, "pixels of batch {} differ", x.index);
        assert_eq!(x.labels, y.labels);
    }
}

#[test]
fn one_two_and_four_workers_give_identical_batches() {
    let dir = tiny_tree("workers", 8);
    let ds = Arc::new(data::load_folder(&dir, 16).unwrap());
    for t in [
        Transform::RandomResizedCrop { min_area: 0.08 },
        Transform::Eval { crop: 0.875 },
    ] {
        let one = all_batches(&ds, cfg(1, t), 2);
        assert_eq!(one.len(), 2 * 6);
        assert!(one
            .iter()
            .all(|b| b.valid == 4 && b.pixels.len() == 4 * 16 * 16 * 3));
        for w in [2, 4] {
            same(&one, &all_batches(&ds, cfg(w, t), 2));
        }
        // The synchronous path gives the same bytes as the workers.
        let order = data::epoch_order(ds.len(), &cfg(1, t), 1);
        let b = data::make_batch(&ds, &cfg(1, t), &order, 1, 2).unwrap();
        same(&one[8..9], &[b]);
    }
    // Resuming mid-epoch with another worker count continues the same sequence.
    let one = all_batches(
        &ds,
        cfg(1, Transform::RandomResizedCrop { min_area: 0.08 }),
        2,
    );
    let mut r = Loader::start(
        ds.clone(),
        cfg(3, Transform::RandomResizedCrop { min_area: 0.08 }),
        1,
        1,
        Some(2),
    )
    .unwrap();
    let mut rest = Vec::new();
    while let Some(b) = r.next_batch().unwrap() {
        rest.push(b);
    }
    same(&one[7..], &rest);
    // In-memory datasets too.
    let mem = Arc::new(memory_dataset(40));
    let c = |w| LoaderConfig {
        transform: Transform::PadCropFlip { pad: 2 },
        ..cfg(w, Transform::Eval { crop: 1.0 })
    };
    let one = all_batches(&mem, c(1), 2);
    same(&one, &all_batches(&mem, c(2), 2));
    same(&one, &all_batches(&mem, c(4), 2));
}

fn memory_dataset(n: usize) -> data::Dataset {
    data::Dataset {
        pixels: Pixels::Memory((0..n * 12 * 12).map(|i| (i * 7 % 251) as u8).collect()),
        labels: (0..n as u32).map(|i| i % 3).collect(),
        h: 12,
        w: 12,
        c: 1,
        classes: vec!["a".into(), "b".into(), "c".into()],
    }
}

#[test]
fn fewer_batches_than_workers_starts_fewer_workers() {
    let ds = Arc::new(memory_dataset(9));
    let c = LoaderConfig {
        transform: Transform::PadCropFlip { pad: 2 },
        workers: 8,
        ..cfg(1, Transform::Eval { crop: 1.0 })
    };
    let l = Loader::start(ds.clone(), c.clone(), 0, 0, Some(3)).unwrap();
    assert_eq!((l.per_epoch, l.workers), (2, 2));
    drop(l);
    let one = all_batches(
        &ds,
        LoaderConfig {
            workers: 1,
            ..c.clone()
        },
        3,
    );
    same(&one, &all_batches(&ds, c.clone(), 3));
    // Fewer images than one batch: refused with the fix.
    let tiny = Arc::new(memory_dataset(3));
    let e = Loader::start(tiny, c, 0, 0, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("fewer than one batch") && e.contains("--batch"),
        "{e}"
    );
}

#[test]
fn jpegs_decode_at_reduced_size_when_the_crop_allows() {
    assert_eq!(decode::scale_for(375.0, 500.0, 224), 1);
    assert_eq!(decode::scale_for(375.0, 500.0, 96), 2);
    assert_eq!(decode::scale_for(375.0, 500.0, 64), 4);
    assert_eq!(decode::scale_for(375.0, 500.0, 32), 8);
    let d = tmpdir("scaled");
    let spec = SynthSpec {
        width: 131,
        height: 97,
        ..SynthSpec::default()
    };
    let px = synth::synth_image(&spec, 1, &mut effnet::util::Rng::new(1));
    let f = d.join("a.jpg");
    synth::write_jpeg(&f, &px, 131, 97, 95).unwrap();
    let mut dec = ImageDecoder::new();
    assert_eq!(dec.open(&f).unwrap(), (97, 131));
    let full = dec.decode(1).unwrap();
    assert_eq!((full.h, full.w, full.scale), (97, 131, 1));
    let full_px = dec.pixels().to_vec();
    assert_eq!(full_px.len(), 97 * 131 * 3);
    // 1/2 decodes at full size (no faster with the reduced-size decoder), 1/4 reduces.
    assert_eq!(dec.decode(2).unwrap().scale, 1);
    let q = dec.decode(4).unwrap();
    assert_eq!((q.h, q.w, q.scale), (25, 33, 4));
    // The reduced image is the full one averaged over 4x4 blocks (within JPEG error).
    let mut err = 0.0;
    for y in 0..24 {
        for x in 0..32 {
            for c in 0..3 {
                let mut m = 0.0;
                for dy in 0..4 {
                    for dx in 0..4 {
                        m += full_px[((4 * y + dy) * 131 + 4 * x + dx) * 3 + c] as f64 / 16.0;
                    }
                }
                err += (m - dec.pixels()[(y * 33 + x) * 3 + c] as f64).abs();
            }
        }
    }
    let mean = err / (24.0 * 32.0 * 3.0);
    assert!(mean < 6.0, "mean abs difference {mean}");
}

fn corrupt(path: &Path) {
    // Keep the header, scramble the entropy-coded data and cut the end off.
    let mut b = std::fs::read(path).unwrap();
    let n = b.len();
    b.truncate(n * 2 / 3);
    for v in b[n / 3..].iter_mut() {
        *v = 0xFF;
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn bad_image_mid_epoch_names_the_file_or_is_skipped_and_counted() {
    let dir = tiny_tree("bad", 4);
    let ds = Arc::new(data::load_folder(&dir, 16).unwrap());
    let Pixels::Files(files) = &ds.pixels else {
        unreachable!()
    };
    let bad = files[5].clone();
    corrupt(&bad);
    let gone = files[9].clone();
    std::fs::remove_file(&gone).unwrap();
    let c = LoaderConfig {
        shuffle: false,
        ..cfg(2, Transform::Eval { crop: 1.0 })
    };
    // Batches 0 and the rest of the epoch before it are fine; batch 1 holds file 5.
    let mut l = Loader::start(ds.clone(), c.clone(), 0, 0, Some(1)).unwrap();
    assert_eq!(l.next_batch().unwrap().unwrap().valid, 4);
    let e = l.next_batch().unwrap_err().to_string();
    assert!(
        e.contains(&bad.display().to_string())
            && e.contains("--skip-bad-images")
            && e.contains("batch 1 of epoch 0"),
        "{e}"
    );
    // Skipping: the batches keep their place, bad rows are left out and reported.
    let c = LoaderConfig {
        skip_bad_images: true,
        ..c
    };
    let v = all_batches(&ds, c, 1);
    assert_eq!(v.len(), 3);
    assert_eq!(v.iter().map(|b| b.valid).collect::<Vec<_>>(), [4, 3, 3]);
    let skipped: Vec<&PathBuf> = v
        .iter()
        .flat_map(|b| b.skipped.iter().map(|s| &s.0))
        .collect();
    assert_eq!(skipped, [&bad, &gone]);
    assert!(
        v[2].skipped[0].1.contains("cannot read"),
        "{:?}",
        v[2].skipped
    );
    // Padding rows after the valid ones are zero.
    assert!(v[1].pixels[3 * 16 * 16 * 3..].iter().all(|&p| p == 0));
}

#[test]
fn truncated_and_oversized_jpegs_are_refused_before_decoding() {
    let d = tmpdir("trunc");
    let spec = SynthSpec {
        width: 64,
        height: 48,
        ..SynthSpec::default()
    };
    let px = synth::synth_image(&spec, 0, &mut effnet::util::Rng::new(2));
    let f = d.join("t.jpg");
    synth::write_jpeg(&f, &px, 64, 48, 90).unwrap();
    let good = std::fs::read(&f).unwrap();
    let mut dec = ImageDecoder::new();
    // Truncated half-way through the scan.
    std::fs::write(&f, &good[..good.len() / 2]).unwrap();
    dec.open(&f).unwrap();
    let e = dec.decode(1).unwrap_err();
    assert!(e.contains("truncated") || e.contains("corrupt"), "{e}");
    // A header claiming 60000 x 60000 pixels is refused at the header.
    let mut huge = good.clone();
    let sof = huge
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    std::fs::write(&f, &huge).unwrap();
    let e = dec.open(&f).unwrap_err();
    assert!(e.contains("header"), "{e}");
    // Not an image at all.
    std::fs::write(&f, b"GIF89a....").unwrap();
    assert!(dec.open(&f).unwrap_err().contains("signature"));
}

#[test]
fn unreadable_folder_is_named() {
    let d = tmpdir("notdir");
    let file = d.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let e = data::load_folder(&file, 16).unwrap_err().to_string();
    assert!(e.contains("plain-file") && e.contains("cannot list"), "{e}");
    let e = data::load_folder(&d.join("missing"), 16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing") && e.contains("cannot list"), "{e}");
}
