//! Untrusted input never panics and never allocates what a header claims (issue 17, items
//! 6-9, 11, 13, 14): IDX labels and sizes, CIFAR records, safetensors strictness and
//! checksums, model configurations read from files, the footprint check, image-folder
//! listing, and `predict --arch`. Every file is generated here.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use effnet::cli::predict;
use effnet::data::{self, Dataset, Pixels};
use effnet::gpu::{MemoryBudget, Precision};
use effnet::models::efficientnet::EfficientNet;
use effnet::models::{footprint, ModelConfig, NormChoice};
use effnet::util::safetensors::{SafeTensors, CHECKSUM_KEY};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-safety-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: u32, h: u32, w: u32, payload: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, h, w] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..payload).map(|i| (i % 251) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// A gzip IDX pair in `dir` for `prefix` (`train` or `t10k`) with 4x4 images.
fn write_idx(dir: &Path, prefix: &str, labels: &[u8]) {
    let n = labels.len() as u32;
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        gz(&idx_images(n, 4, 4, labels.len() * 16)),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        gz(&idx_labels(labels)),
    )
    .unwrap();
}

fn ten_classes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 10) as u8).collect()
}

// ---- item 6: IDX labels ----

#[test]
fn idx_label_bit_flips_are_refused_naming_file_and_index() {
    let d = tmpdir("idx-flip");
    // A flipped high bit: label 3 -> 131. Before: a 131-class model without a word.
    let mut labels = ten_classes(2000);
    labels[57] = 131;
    write_idx(&d, "train", &labels);
    let e = data::load_idx_dir(&d, true).unwrap_err().to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte.gz")
            && e.contains("label 131 of image 57")
            && e.contains("0.1%"),
        "{e}"
    );
    // A flip that lands just past the classes (8 -> 10): one image cannot make a class.
    let mut labels = ten_classes(2000);
    labels[8] = 10;
    write_idx(&d, "train", &labels);
    let e = data::load_idx_dir(&d, true).unwrap_err().to_string();
    assert!(e.contains("label 10 of image 8"), "{e}");
    // The rule still admits datasets with more classes (EMNIST-style, 47).
    let labels: Vec<u8> = (0..47 * 30).map(|i| (i % 47) as u8).collect();
    write_idx(&d, "train", &labels);
    let ds = data::load_idx_dir(&d, true).unwrap();
    assert_eq!(ds.classes.len(), 47);
    let ten: Vec<u32> = ten_classes(100).into_iter().map(u32::from).collect();
    assert_eq!(data::dataset::idx_class_count(&ten), 10);
}

#[test]
fn test_labels_outside_the_training_classes_are_refused_at_load() {
    let d = tmpdir("idx-test-label");
    write_idx(&d, "train", &ten_classes(200));
    let mut test = ten_classes(50);
    test[3] = 12;
    write_idx(&d, "t10k", &test);
    // The train and eval commands both load through trainer::load_datasets.
    let a = train_args(&["--data-dir", d.to_str().unwrap()]);
    let cfg = effnet::cli::train::train_config(&a).unwrap();
    let e = effnet::train::trainer::load_datasets(&cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte.gz")
            && e.contains("label 12 of image 3")
            && e.contains("training labels"),
        "{e}"
    );
    test[3] = 3;
    write_idx(&d, "t10k", &test);
    let (tr, te) = effnet::train::trainer::load_datasets(&cfg).unwrap();
    assert_eq!((tr.classes.len(), te.classes.len()), (10, 10));
}

#[test]
fn evaluate_refuses_labels_the_model_lacks_and_empty_test_sets() {
    // Before: an index out of bounds panic in every evaluation; "top-1 0.00%" for none.
    let gpu = common::gpu();
    let mut cfg = ModelConfig::preset("b0-g16").unwrap();
    cfg.width = 0.25;
    cfg.depth = 0.25;
    cfg.classes = 10;
    cfg.in_channels = 1;
    let mut model = EfficientNet::new(gpu, &cfg, 2, 16).unwrap();
    let ds = std::sync::Arc::new(Dataset {
        pixels: Pixels::Memory(vec![0; 3 * 16 * 16]),
        labels: vec![1, 12, 3],
        h: 16,
        w: 16,
        c: 1,
        classes: (0..13).map(|i| i.to_string()).collect(),
    });
    let a = train_args(&["--batch", "2", "--image-size", "16"]);
    let tc = effnet::cli::train::train_config(&a).unwrap();
    let lc = effnet::train::trainer::loader_config(&tc, &ds, false);
    let (mean, std) = ([0.5f32], [0.25f32]);
    let e = effnet::train::trainer::evaluate(gpu, &mut model, &ds, &lc, None, 10, &mean, &std)
        .unwrap_err()
        .to_string();
    assert!(e.contains("test image 1 has label 12"), "{e}");
    let e = effnet::train::trainer::evaluate(gpu, &mut model, &ds, &lc, Some(0), 13, &mean, &std)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to evaluate"), "{e}");
}

fn train_args(extra: &[&str]) -> effnet::cli::train::TrainArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: effnet::cli::train::TrainArgs,
    }
    let mut v = vec!["t"];
    v.extend_from_slice(extra);
    Wrap::parse_from(v).a
}

// ---- items 7, 8: size arithmetic on headers ----

#[test]
fn idx_headers_that_wrap_or_claim_too_much_are_refused() {
    let d = tmpdir("idx-wrap");
    // n * h * w = 2^31 * 2^31 * 4 = 2^64 wraps to 0 = the payload of a header-only file.
    // Before: accepted as 2^31 images with no pixels, then a panic in the loader.
    let p = d.join("train-images-idx3-ubyte");
    std::fs::write(&p, idx_images(1 << 31, 1 << 31, 4, 0)).unwrap();
    let e = data::dataset::read_idx_images(&p).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("claims"),
        "{e}"
    );
    // A small gzip file claiming far more than deflate can expand to: refused before any
    // buffer of that size exists.
    let p = d.join("big-images-idx3-ubyte.gz");
    std::fs::write(&p, gz(&idx_images(1 << 30, 28, 28, 100))).unwrap();
    let t = Instant::now();
    let e = data::dataset::read_idx_images(&p).unwrap_err().to_string();
    assert!(
        e.contains("claims") && t.elapsed().as_secs_f64() < 1.0,
        "{e}"
    );
    // A header that claims 0 images.
    write_idx(&d, "train", &[]);
    let e = data::load_idx_dir(&d, true).unwrap_err().to_string();
    assert!(e.contains("holds no images"), "{e}");
    // Bytes past what the header says.
    let p = d.join("long-labels-idx1-ubyte");
    let mut b = idx_labels(&[1, 2, 3]);
    b.push(4);
    std::fs::write(&p, b).unwrap();
    let e = data::dataset::read_idx_labels(&p).unwrap_err().to_string();
    assert!(e.contains("truncated or corrupt"), "{e}");
}

#[test]
fn cifar_errors_name_the_record() {
    let d = tmpdir("cifar-record");
    let mut rec = Vec::new();
    for k in 0..3u8 {
        rec.push(if k == 2 { 200 } else { k });
        rec.extend(std::iter::repeat_n(k, 3072));
    }
    std::fs::write(d.join("test_batch.bin"), &rec).unwrap();
    let e = data::load_cifar10(&d, false).unwrap_err().to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("label 200 of record 2"),
        "{e}"
    );
}

/// A safetensors file from a hand-written header and data section.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn safetensors_shape_products_that_overflow_are_refused() {
    // [2^62, 1, 8, 8] F32 with no data: the product wraps to 0 bytes. Before: accepted,
    // then `predict --input` panicked indexing it.
    let d = tmpdir("st-overflow");
    let p = d.join("input.safetensors");
    let h = r#"{"input":{"dtype":"F32","shape":[4611686018427387904,1,8,8],"data_offsets":[0,0]}}"#;
    std::fs::write(&p, raw_safetensors(h, &[])).unwrap();
    let e = SafeTensors::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("input.safetensors") && e.contains("bad header"),
        "{e}"
    );
}

// ---- item 11: strict safetensors ----

fn small_st() -> SafeTensors {
    let mut st = SafeTensors::default();
    st.insert("a", &[2, 3], (0..6).map(|i| i as f32).collect());
    st.insert("b", &[4], vec![0.5, -1.0, 2.0, 8.0]);
    st.metadata.insert("step".into(), "7".into());
    st
}

#[test]
fn safetensors_reads_as_strictly_as_the_reference_reader() {
    let d = tmpdir("st-strict");
    let p = d.join("x.safetensors");
    let st = small_st();
    st.save(&p).unwrap();
    assert_eq!(SafeTensors::load(&p).unwrap(), st);
    let good = std::fs::read(&p).unwrap();
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    // One byte inserted into the data section shifts every tensor. Before: accepted, and
    // `predict` printed NaN%.
    let mut ins = good.clone();
    ins.insert(8 + hlen + 5, 0x41);
    std::fs::write(&p, &ins).unwrap();
    let e = SafeTensors::load(&p).unwrap_err().to_string();
    assert!(e.contains("holds 41 after its header"), "{e}");
    // Trailing bytes.
    let mut tail = good.clone();
    tail.extend_from_slice(b"junk");
    std::fs::write(&p, &tail).unwrap();
    assert!(SafeTensors::load(&p).is_err());
    // Overlapping ranges, and a gap, with sizes that match their shapes.
    let data: Vec<u8> = (0..16).collect();
    for h in [
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#,
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"__metadata__":{"n":3}}"#,
    ] {
        std::fs::write(&p, raw_safetensors(h, &data)).unwrap();
        let e = SafeTensors::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a valid safetensors file"), "{h}: {e}");
    }
    // A file without a checksum (timm, PyTorch) is read unchecked.
    let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    std::fs::write(&p, raw_safetensors(h, &data)).unwrap();
    assert_eq!(SafeTensors::load(&p).unwrap().tensors["a"].shape, vec![4]);
}

#[test]
fn checkpoint_checksum_catches_flipped_bits_and_header_edits() {
    let d = tmpdir("st-crc");
    let p = d.join("x.safetensors");
    small_st().save(&p).unwrap();
    let good = std::fs::read(&p).unwrap();
    let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat);
    assert!(find(&good, CHECKSUM_KEY.as_bytes()).is_some());
    // A flipped bit in a value. Before: loaded as a different number.
    let mut flip = good.clone();
    let last = flip.len() - 3;
    flip[last] ^= 0x10;
    std::fs::write(&p, &flip).unwrap();
    let e = SafeTensors::load(&p).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    // A shape edit that keeps the size ([2,3] -> [3,2]) and a metadata edit.
    for (from, to) in [("[2,3]", "[3,2]"), ("\"7\"", "\"8\"")] {
        let at = find(&good, from.as_bytes()).expect("in the header");
        let mut edited = good.clone();
        edited[at..at + to.len()].copy_from_slice(to.as_bytes());
        std::fs::write(&p, &edited).unwrap();
        let e = SafeTensors::load(&p).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{from}: {e}");
    }
}

// ---- item 9: model configurations from files, and the footprint ----

#[test]
fn model_config_bounds_width_depth_and_counts() {
    let base = ModelConfig::preset("b0-g16").unwrap();
    for (edit, field) in [
        (
            (|c: &mut ModelConfig| c.depth = 1e6) as fn(&mut ModelConfig),
            "depth",
        ),
        (|c| c.width = 1e3, "width"),
        (|c| c.width = f64::NAN, "width"),
        (|c| c.depth = 1e-12, "stage without blocks"),
        (|c| c.classes = 1 << 40, "classes"),
        (|c| c.in_channels = 0, "in_channels"),
        (|c| c.expand = 1000, "expand"),
        (|c| c.dropout = 1.0, "dropout"),
    ] {
        let mut c = base.clone();
        edit(&mut c);
        let t = Instant::now();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(field) && e.contains("Bounds"), "{field}: {e}");
        assert!(t.elapsed().as_secs_f64() < 0.1, "{field}: slow refusal");
    }
    // Every preset and timm architecture is inside the bounds.
    for i in 0..8 {
        ModelConfig::preset(&format!("b{i}"))
            .unwrap()
            .validate()
            .unwrap();
        let g16 = ModelConfig::preset(&format!("b{i}-g16")).unwrap();
        g16.check_ranges().unwrap();
    }
    for a in effnet::interop::arch::TIMM_ARCHS {
        effnet::interop::config_from_timm(a.name).unwrap();
    }
    // The command line goes through the same check.
    let a = train_args(&["--depth", "1000000"]);
    let e = effnet::cli::train::model_config(&a, 10, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth 1000000"), "{e}");
}

fn config_only_checkpoint(dir: &Path, cfg: &ModelConfig) -> PathBuf {
    let mut st = SafeTensors::default();
    st.metadata
        .insert("model_config".into(), serde_json::to_string(cfg).unwrap());
    let p = dir.join("checkpoint.safetensors");
    st.save(&p).unwrap();
    p
}

#[test]
fn checkpoint_metadata_with_depth_1e6_is_refused_quickly() {
    // Before: accepted, then `predict` grew to 22.7 GB planning a million-block model.
    let d = tmpdir("depth-1e6");
    let mut cfg = ModelConfig::preset("b0-g16").unwrap();
    cfg.depth = 1e6;
    cfg.classes = 10;
    let p = config_only_checkpoint(&d, &cfg);
    let t = Instant::now();
    let e = predict::resolve("b0-g16", &p, false)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("depth 1000000"),
        "{e}"
    );
    assert!(t.elapsed().as_secs_f64() < 1.0);
}

#[test]
fn footprint_refuses_with_numbers_before_allocating() {
    let mut cfg = ModelConfig::preset("b0").unwrap();
    cfg.classes = 10;
    let f = footprint::estimate(&cfg, 128, 224).unwrap();
    // Against a stated budget (as on lavapipe, where it is the host's memory).
    let budget = MemoryBudget {
        bytes: 1 << 30,
        source: "test".into(),
    };
    let e = f
        .check_limits(u64::MAX, Some(&budget), "test adapter", "b0")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs at least") && e.contains("GiB") && e.contains("has 1.00 GiB"),
        "{e}"
    );
    let e = f
        .check_limits(1 << 20, None, "test adapter", "b0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("largest tensor"), "{e}");
    // Sizes that overflow 64 bits are an error, not a wrapped number.
    assert!(footprint::estimate(&cfg, usize::MAX / 2, 1 << 20).is_err());
    // On the adapter: refused before anything is allocated (a device of its own, so that
    // tests running alongside do not move its allocation counter).
    let gpu = &effnet::Gpu::new(&effnet::GpuOptions::from_env()).unwrap();
    let before = gpu.allocated_bytes();
    let t = Instant::now();
    let Err(e) = EfficientNet::new(gpu, &cfg, 1 << 16, 1024) else {
        panic!("a model of 2^16 images at 1024 px was built");
    };
    assert!(matches!(e, effnet::Error::TooLarge(_)), "{e}");
    assert_eq!(gpu.allocated_bytes(), before);
    assert!(t.elapsed().as_secs_f64() < 1.0);
}

#[test]
fn footprint_is_a_close_lower_bound_of_what_is_allocated() {
    // A device of its own: its allocation counter sees only this test's models.
    let gpu = &effnet::Gpu::new(&effnet::GpuOptions::from_env()).unwrap();
    for (norm, dropout) in [
        (NormChoice::Bn, 0.2),
        (NormChoice::LnPn, 0.0),
        (NormChoice::Gn, 0.2),
    ] {
        let mut cfg = ModelConfig::preset("b0-g16").unwrap();
        cfg.width = 0.5;
        cfg.depth = 0.5;
        cfg.norm = norm;
        cfg.dropout = dropout;
        cfg.classes = 10;
        let (batch, image) = (4, 64);
        let mut est_act = Vec::new();
        // Mixed precision only allocates here (no kernel runs), so it needs SHADER_F16
        // alone.
        let mixed = gpu.features.shader_f16.then_some(Precision::Mixed);
        for p in std::iter::once(Precision::F32).chain(mixed) {
            let size = effnet::models::ImageSize::square(image);
            let est = footprint::estimate_at(&cfg, batch, size, p).unwrap();
            let before = gpu.allocated_bytes();
            let model = EfficientNet::with_precision(gpu, &cfg, batch, size, p).unwrap();
            let real = gpu.allocated_bytes() - before;
            drop(model);
            let r = est.total_bytes() as f64 / real as f64;
            eprintln!(
                "{norm:?} {}: estimate {} of {real} bytes allocated ({r:.3})",
                p.name(),
                est.total_bytes()
            );
            assert!(
                (0.8..=1.0).contains(&r),
                "{norm:?} {}: estimate {est:?}, allocated {real} ({r:.3})",
                p.name()
            );
            est_act.push(est.activation_bytes as f64);
        }
        // f16 activations: half the bytes, but for the small f32 tail after the pool.
        if let [f32_bytes, mixed_bytes] = est_act[..] {
            assert!(mixed_bytes < 0.51 * f32_bytes, "{est_act:?}");
        }
    }
}

// ---- item 13: image folders ----

fn png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(path)
        .unwrap();
}

fn folder_tree(root: &Path, split: &str, classes: &[&str]) {
    for c in classes {
        let d = root.join(split).join(c);
        std::fs::create_dir_all(&d).unwrap();
        png(&d.join("a.png"), 12, 10);
        png(&d.join("b.png"), 9, 14);
    }
}

#[test]
fn folder_datasets_skip_hidden_entries_and_name_what_is_wrong() {
    let root = tmpdir("folders");
    folder_tree(&root, "train", &["cat", "dog"]);
    folder_tree(&root, "test", &["cat", "dog"]);
    // Jupyter's folder and macOS resource forks are neither classes nor images.
    // Before: `.ipynb_checkpoints` became a class.
    for split in ["train", "test"] {
        let hidden = root.join(split).join(".ipynb_checkpoints");
        std::fs::create_dir_all(&hidden).unwrap();
        png(&hidden.join("x.png"), 8, 8);
        std::fs::write(
            root.join(split).join("cat").join("._a.png"),
            b"\0\x05\x16\x07",
        )
        .unwrap();
    }
    let (tr, te) = data::load_folder_splits(&root, 32).unwrap();
    assert_eq!(tr.classes, vec!["cat", "dog"]);
    assert_eq!((tr.len(), te.len()), (4, 4));
    // An empty class folder is an error naming it. Before: a class with no images.
    std::fs::create_dir_all(root.join("train").join("emu")).unwrap();
    let e = data::load_folder_splits(&root, 32).unwrap_err().to_string();
    assert!(
        e.contains("emu") && e.contains("holds no PNG or JPEG"),
        "{e}"
    );
    // Splits with other classes say which. Before: "train and test class folders differ".
    png(&root.join("train").join("emu").join("a.png"), 8, 8);
    folder_tree(&root, "test", &["owl"]);
    let e = data::load_folder_splits(&root, 32).unwrap_err().to_string();
    assert!(
        e.contains("only in train/: emu") && e.contains("only in test/: owl"),
        "{e}"
    );
    std::fs::remove_dir_all(root.join("test").join("owl")).unwrap();
    folder_tree(&root, "test", &["emu"]);
    data::load_folder_splits(&root, 32).unwrap();
    // A corrupt test image is found at load. Before: after a full epoch of training.
    let bad = root.join("test").join("dog").join("c.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let e = data::load_folder_splits(&root, 32).unwrap_err().to_string();
    assert!(e.contains("c.png") && e.contains("image header"), "{e}");
    std::fs::copy(root.join("test").join("dog").join("a.png"), &bad).unwrap();
    data::load_folder_splits(&root, 32).unwrap();
    // A class behind a dangling link. Before: the class silently vanished.
    std::os::unix::fs::symlink("/nonexistent-effnet-class", root.join("train").join("zzz"))
        .unwrap();
    let e = data::load_folder_splits(&root, 32).unwrap_err().to_string();
    assert!(e.contains("zzz") && e.contains("does not exist"), "{e}");
}

// ---- items 11, 14: predict ----

#[test]
fn predict_arch_that_disagrees_with_the_file_names_both() {
    let d = tmpdir("predict-arch");
    let mut cfg = ModelConfig::preset("b3-g16").unwrap();
    cfg.classes = 10;
    let p = config_only_checkpoint(&d, &cfg);
    // Before: accepted (same group size and expansion) and the file's b3 was built.
    let e = predict::resolve("b0-g16", &p, false)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("--arch b0-g16") && e.contains("b3-g16") && e.contains("pass --arch b3-g16"),
        "{e}"
    );
    assert!(predict::resolve("b3-g16", &p, false).is_ok());
    // A width override of the named preset is that preset.
    let mut cfg = ModelConfig::preset("b0-g16").unwrap();
    cfg.width = 0.25;
    cfg.name = "b0-g16-w0.25".into();
    cfg.classes = 10;
    let p = config_only_checkpoint(&d, &cfg);
    assert!(predict::resolve("b0-g16", &p, false).is_ok());
    let e = predict::resolve("b1-g16", &p, false)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("pass --arch b0-g16"), "{e}");
    // A timm name stands for its effnet preset and the preset's overrides.
    let mut cfg = ModelConfig::preset("b0").unwrap();
    cfg.width = 0.25;
    cfg.name = "b0-w0.25".into();
    cfg.classes = 10;
    let p = config_only_checkpoint(&d, &cfg);
    assert!(predict::resolve("efficientnet_b0", &p, false).is_ok());
}

#[test]
fn predict_checks_training_checkpoint_shapes_as_eval_does() {
    let gpu = common::gpu();
    let d = tmpdir("predict-shapes");
    let mut cfg = ModelConfig::preset("b0-g16").unwrap();
    cfg.width = 0.25;
    cfg.depth = 0.25;
    cfg.classes = 10;
    cfg.in_channels = 1;
    cfg.name = "b0-g16-w0.25".into();
    let model = EfficientNet::new(gpu, &cfg, 1, 16).unwrap();
    let p = d.join("checkpoint.safetensors");
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("model_config".into(), serde_json::to_string(&cfg).unwrap());
    effnet::train::checkpoint::save(&p, gpu, &model, meta).unwrap();
    let input = vec![0.0f32; 16 * 16];
    let r = predict::resolve("b0-g16", &p, false).unwrap();
    predict::logits(gpu, &r, &input, 1, 16, 1).unwrap();
    // A preprocessed input holding a NaN. Before: every class printed as "NaN%", exit 0.
    let mut x = SafeTensors::default();
    let mut v = vec![0.5f32; 2 * 16 * 16];
    v[16 * 16 + 3] = f32::NAN;
    x.insert("input", &[2, 1, 16, 16], v);
    let xp = d.join("nan-input.safetensors");
    x.save(&xp).unwrap();
    let pa = predict::PredictArgs {
        arch: "b0-g16".into(),
        weights: p.clone(),
        input: vec![xp],
        output: None,
        top_k: 3,
        batch: 2,
        image_size: None,
        crop_pct: 0.875,
        labels: None,
        raw: false,
        precision: effnet::cli::precision::PrecisionArg::F32,
    };
    let e = predict::run(gpu, &pa).expect_err("refused").to_string();
    assert!(
        e.contains("nan-input.safetensors") && e.contains("non-finite") && e.contains("image 1"),
        "{e}"
    );
    // Transpose one weight's shape (same size). Before: loaded, scrambling that layer.
    let mut st = SafeTensors::load(&p).unwrap();
    let t = st.tensors.get_mut("ema/classifier.weight").unwrap();
    t.shape.reverse();
    let shape = t.shape.clone();
    st.save(&p).unwrap();
    let r = predict::resolve("b0-g16", &p, false).unwrap();
    let e = predict::logits(gpu, &r, &input, 1, 16, 1)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("classifier.weight") && e.contains(&format!("{shape:?}")),
        "{e}"
    );
}

#[test]
fn predict_refuses_images_that_would_resize_to_gigabytes() {
    // A 1 x 65535 image resized so its short side is 256 px would be 256 x 16.7M pixels.
    let d = tmpdir("predict-aspect");
    let p = d.join("tall.png");
    png(&p, 1, 65535);
    let t = Instant::now();
    let e = predict::preprocess(
        &p,
        224,
        0.875,
        &predict::IMAGENET_MEAN,
        &predict::IMAGENET_STD,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tall.png") && e.contains("1x65535"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 2.0);
}

#[test]
fn timm_names_and_empty_tensors_cannot_claim_huge_models() {
    // A state dict of zero-sized tensors whose names claim 10^12 blocks per stage and
    // whose classifier holds no data. Before: a layer plan of trillions of blocks.
    let mut st = SafeTensors::default();
    st.insert("conv_stem.weight", &[32, 3, 3, 3], vec![0.0; 864]);
    st.insert("classifier.weight", &[10, 0], vec![]);
    for (s, r) in [1usize, 2, 2, 3, 3, 4, 1].iter().enumerate() {
        let j = r * 1_000_000_000_000 - 1;
        st.insert(format!("blocks.{s}.{j}.conv_pwl.weight"), &[0, 8], vec![]);
    }
    let base = effnet::interop::config_from_timm("efficientnet_b0").unwrap();
    let t = Instant::now();
    let e = effnet::interop::infer_config(&base, &st)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range") && e.contains("depth"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 1.0);
}
