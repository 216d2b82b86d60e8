//! A seeded mutation fuzzer over every parser of untrusted files (issue 17, item 18): an
//! effnet checkpoint and a timm-style state dict (safetensors), an IDX pair (gzip and
//! raw), a CIFAR-10 batch, a PNG and a JPEG. Each gets at least 300 mutants, spread over
//! bit flips, truncations, one-byte insertions and header field edits (a field set to
//! another value, keeping the file otherwise consistent: safetensors header lengths and
//! PNG chunk CRCs are recomputed, gzip payloads recompressed). For every mutant:
//!
//! - the parser never panics, and allocates at most [`ALLOC_BOUND`] bytes (a counting
//!   allocator measures each call), whatever a header claims;
//! - where the format can detect damage, a mutant loads to exactly the original values or
//!   is refused: effnet checkpoints (checksum), gzip IDX (gzip's CRC-32), PNG (chunk
//!   CRCs and zlib's Adler-32) for every mutation but header edits with a recomputed CRC,
//!   which must load as the edited header says or be refused;
//! - where it cannot (no checksum: raw IDX, CIFAR-10, JPEG's entropy-coded data, a timm
//!   state dict's data), what loads must be consistent with what the bytes say: a CIFAR
//!   mutant differs from the original in at most the one record it touched (or is a
//!   whole-record prefix of it), a raw IDX mutant's pixels differ at most at the mutated
//!   byte, a JPEG decodes to the dimensions its header states with a full pixel buffer,
//!   and a state dict's tensors have the sizes their shapes say.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;

use effnet::data;
use effnet::util::safetensors::{SafeTensors, CHECKSUM_KEY};
use effnet::util::Rng;

/// Most bytes one parse may allocate at once (the files are a few KiB; headers may claim
/// terabytes). The image crate's own decoding limit is 512 MiB; these small images stay
/// far below it.
const ALLOC_BOUND: usize = 64 << 20;

/// Mutants per parser (a quarter per kind of mutation).
const MUTANTS: usize = 320;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn note_free(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        note_alloc(new);
        let p = unsafe { System.realloc(ptr, layout, new) };
        note_free(layout.size());
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f`, returning its result (None if it panicked) and the most bytes it held at once.
fn measured<T>(f: impl FnOnce() -> T) -> (Option<T>, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    let peak = PEAK.with(|p| p.get()) - base;
    (r, peak)
}

/// A header edit: what it did, the mutated bytes, and the original byte positions it
/// changed (None when the length changes).
type Edit = (String, Vec<u8>, Option<Vec<usize>>);

/// One mutation: what it did (for messages) and the mutated bytes.
struct Mutant {
    what: String,
    bytes: Vec<u8>,
    /// Byte positions of the original that differ in the mutant (flips and plain field
    /// edits; None for length changes).
    changed: Option<Vec<usize>>,
}

/// Bit flips, truncations and insertions at random positions; header edits come from
/// each format's `edit`.
fn mutate(rng: &mut Rng, orig: &[u8], i: usize, edit: &dyn Fn(&mut Rng) -> Edit) -> Mutant {
    match i % 4 {
        0 => {
            let at = rng.below(orig.len());
            let bit = rng.below(8);
            let mut b = orig.to_vec();
            b[at] ^= 1 << bit;
            Mutant {
                what: format!("flip bit {bit} of byte {at}"),
                bytes: b,
                changed: Some(vec![at]),
            }
        }
        1 => {
            let len = rng.below(orig.len());
            Mutant {
                what: format!("truncate to {len} bytes"),
                bytes: orig[..len].to_vec(),
                changed: None,
            }
        }
        2 => {
            let at = rng.below(orig.len() + 1);
            let v = rng.below(256) as u8;
            let mut b = orig.to_vec();
            b.insert(at, v);
            Mutant {
                what: format!("insert {v:#04x} at {at}"),
                bytes: b,
                changed: None,
            }
        }
        _ => {
            let (what, bytes, changed) = edit(rng);
            Mutant {
                what,
                bytes,
                changed,
            }
        }
    }
}

/// A value to put in a header field: small, off by one, or huge.
fn field_value(rng: &mut Rng, orig: u64) -> u64 {
    match rng.below(7) {
        0 => 0,
        1 => 1,
        2 => orig.wrapping_add(1),
        3 => orig.saturating_sub(1),
        4 => 1 << 31,
        5 => u32::MAX as u64,
        _ => rng.next_u64() >> rng.below(64),
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the mutants of one parser; `check` gets the mutant and returns Err(reason) when
/// the property fails. Panics and over-allocation are checked here.
fn fuzz(
    name: &str,
    seed: u64,
    orig: &[u8],
    edit: &dyn Fn(&mut Rng) -> Edit,
    mut check: impl FnMut(&Mutant) -> (Result<(), String>, bool, usize),
) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let (mut refused, mut loaded) = (0, 0);
    for i in 0..MUTANTS {
        let m = mutate(&mut rng, orig, i, edit);
        let (verdict, was_loaded, peak) = check(&m);
        if was_loaded {
            loaded += 1;
        } else {
            refused += 1;
        }
        if let Err(why) = verdict {
            failures.push(format!("{name} mutant {i} ({}): {why}", m.what));
        } else if peak > ALLOC_BOUND {
            failures.push(format!(
                "{name} mutant {i} ({}): allocated {peak} bytes at once",
                m.what
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {MUTANTS} mutants failed (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{name}: {MUTANTS} mutants, {loaded} loaded, {refused} refused");
    (loaded, refused)
}

// ---- safetensors ----

fn checkpoint() -> SafeTensors {
    let mut st = SafeTensors::default();
    let mut rng = Rng::new(5);
    for (name, shape) in [
        ("w/conv_stem.weight", vec![3, 3, 1, 8]),
        ("w/bn1.weight", vec![8]),
        ("ema/conv_stem.weight", vec![3, 3, 1, 8]),
        ("ema/bn1.weight", vec![8]),
        ("state/bn1.running_var", vec![8]),
    ] {
        let n = shape.iter().product();
        let v = rng.normals_f32(n, 1.0).iter().map(|&x| x as f32).collect();
        st.insert(name, &shape, v);
    }
    st.metadata.insert("step".into(), "500".into());
    st.metadata.insert(
        "model_config".into(),
        r#"{"name":"b0-g16","width":0.25,"depth":0.25}"#.into(),
    );
    st
}

fn same_tensors(a: &SafeTensors, b: &SafeTensors) -> bool {
    a.tensors.len() == b.tensors.len()
        && a.tensors.iter().all(|(k, t)| {
            b.tensors.get(k).is_some_and(|u| {
                u.shape == t.shape
                    && u.data.len() == t.data.len()
                    && u.data
                        .iter()
                        .zip(&t.data)
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            })
        })
}

/// Header edits: a number of the JSON header replaced, the length field recomputed.
fn safetensors_edit(orig: &[u8]) -> impl Fn(&mut Rng) -> Edit + '_ {
    move |rng| {
        let hlen = u64::from_le_bytes(orig[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&orig[8..8 + hlen]).unwrap();
        let runs: Vec<(usize, usize)> = {
            let b = header.as_bytes();
            let mut v = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i].is_ascii_digit() {
                    let s = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    v.push((s, i));
                } else {
                    i += 1;
                }
            }
            v
        };
        let (s, e) = runs[rng.below(runs.len())];
        let old: u64 = header[s..e].parse().unwrap_or(0);
        let new = field_value(rng, old);
        let h = format!("{}{new}{}", &header[..s], &header[e..]);
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&orig[8 + hlen..]);
        (format!("header number {old} at {s} -> {new}"), b, None)
    }
}

#[test]
fn fuzz_safetensors_checkpoint() {
    let dir = tmp("st");
    let p = dir.join("checkpoint.safetensors");
    let orig_st = checkpoint();
    orig_st.save(&p).unwrap();
    let orig = std::fs::read(&p).unwrap();
    assert_eq!(SafeTensors::load(&p).unwrap(), orig_st);
    let edit = safetensors_edit(&orig);
    fuzz("safetensors checkpoint", 0x5afe, &orig, &edit, |m| {
        std::fs::write(&p, &m.bytes).unwrap();
        let (r, peak) = measured(|| SafeTensors::load(&p));
        let verdict = match &r {
            None => Err("panicked".to_string()),
            Some(Err(_)) => Ok(()),
            Some(Ok(st)) => {
                // A mutation confined to the checksum entry may leave the file unchecked:
                // then the tensors and every other entry must still be the original's.
                let key_intact = m
                    .bytes
                    .windows(CHECKSUM_KEY.len())
                    .any(|w| w == CHECKSUM_KEY.as_bytes());
                let meta_ok = orig_st
                    .metadata
                    .iter()
                    .all(|(k, v)| st.metadata.get(k) == Some(v))
                    && (st.metadata.len() == orig_st.metadata.len() || !key_intact);
                if same_tensors(st, &orig_st) && meta_ok {
                    Ok(())
                } else {
                    Err("loaded with other values".into())
                }
            }
        };
        (verdict, matches!(r, Some(Ok(_))), peak)
    });
}

#[test]
fn fuzz_safetensors_state_dict_without_checksum() {
    // timm / PyTorch files carry no checksum: flipped data bits load as other values. What
    // must hold: no panic, bounded allocation, and sizes consistent with the shapes.
    let dir = tmp("st-timm");
    let p = dir.join("model.safetensors");
    let mut hdr = String::from("{");
    let mut data = Vec::new();
    for (i, (name, dtype, shape, width)) in [
        ("conv_stem.weight", "F32", vec![8, 3, 3, 3], 4),
        ("bn1.weight", "F16", vec![8], 2),
        ("bn1.num_batches_tracked", "I64", vec![], 8),
        ("classifier.weight", "BF16", vec![4, 8], 2),
    ]
    .iter()
    .enumerate()
    {
        let n: usize = shape.iter().product::<usize>() * width;
        let s = data.len();
        data.extend((0..n).map(|k| (k * 7 + i) as u8));
        if i > 0 {
            hdr.push(',');
        }
        hdr.push_str(&format!(
            r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{s},{}]}}"#,
            data.len()
        ));
    }
    hdr.push('}');
    let mut orig = (hdr.len() as u64).to_le_bytes().to_vec();
    orig.extend_from_slice(hdr.as_bytes());
    orig.extend_from_slice(&data);
    std::fs::write(&p, &orig).unwrap();
    assert_eq!(SafeTensors::load(&p).unwrap().tensors.len(), 4);
    let edit = safetensors_edit(&orig);
    fuzz("safetensors state dict", 0x717, &orig, &edit, |m| {
        std::fs::write(&p, &m.bytes).unwrap();
        let (r, peak) = measured(|| SafeTensors::load(&p));
        let verdict = match &r {
            None => Err("panicked".to_string()),
            Some(Err(_)) => Ok(()),
            Some(Ok(st)) => st
                .tensors
                .iter()
                .find(|(_, t)| t.data.len() != t.shape.iter().product::<usize>())
                .map_or(Ok(()), |(k, _)| {
                    Err(format!("{k}: size does not match its shape"))
                }),
        };
        (verdict, matches!(r, Some(Ok(_))), peak)
    });
}

// ---- IDX ----

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_pair(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut img = vec![0, 0, 8, 3];
    for v in [n as u32, 6, 5] {
        img.extend_from_slice(&v.to_be_bytes());
    }
    img.extend((0..n * 30).map(|i| (i * 31 % 256) as u8));
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    lab.extend((0..n).map(|i| (i % 10) as u8));
    (img, lab)
}

/// An IDX header field (magic or a size) set to another value; `wrap` recompresses.
fn idx_edit<'a>(
    payload: &'a [u8],
    fields: usize,
    wrap: &'a dyn Fn(&[u8]) -> Vec<u8>,
) -> impl Fn(&mut Rng) -> Edit + 'a {
    move |rng| {
        let f = rng.below(fields);
        let old = u32::from_be_bytes(payload[4 * f..4 * f + 4].try_into().unwrap());
        let mut new = field_value(rng, old as u64) as u32;
        if new == old {
            new ^= 1;
        }
        let mut b = payload.to_vec();
        b[4 * f..4 * f + 4].copy_from_slice(&new.to_be_bytes());
        let changed = (4 * f..4 * f + 4).collect();
        (
            format!("IDX field {f}: {old} -> {new}"),
            wrap(&b),
            Some(changed),
        )
    }
}

fn pixels(ds: &data::Dataset) -> &[u8] {
    match &ds.pixels {
        data::Pixels::Memory(p) => p,
        data::Pixels::Files(_) => &[],
    }
}

#[test]
fn fuzz_idx_gzip_pair() {
    let dir = tmp("idx-gz");
    let (img, lab) = idx_pair(60);
    let (gi, gl) = (gz(&img), gz(&lab));
    let ip = dir.join("train-images-idx3-ubyte.gz");
    let lp = dir.join("train-labels-idx1-ubyte.gz");
    std::fs::write(&ip, &gi).unwrap();
    std::fs::write(&lp, &gl).unwrap();
    let orig = data::load_idx_dir(&dir, true).unwrap();
    let wrap = |b: &[u8]| gz(b);
    // Half the mutants hit the image file, half the label file.
    for (which, file, payload, fields, seed) in [
        ("images", &ip, &img, 4, 0x1d3u64),
        ("labels", &lp, &lab, 2, 0x1d1),
    ] {
        let gzipped = std::fs::read(file).unwrap();
        let edit = idx_edit(payload, fields, &wrap);
        fuzz(&format!("IDX gzip {which}"), seed, &gzipped, &edit, |m| {
            std::fs::write(file, &m.bytes).unwrap();
            let (r, peak) = measured(|| data::load_idx_dir(&dir, true));
            let verdict = match &r {
                None => Err("panicked".to_string()),
                Some(Err(_)) => Ok(()),
                Some(Ok(ds)) => {
                    if pixels(ds) == pixels(&orig)
                        && ds.labels == orig.labels
                        && (ds.h, ds.w, ds.classes.len()) == (orig.h, orig.w, orig.classes.len())
                    {
                        Ok(())
                    } else {
                        Err("loaded with other values".into())
                    }
                }
            };
            (verdict, matches!(r, Some(Ok(_))), peak)
        });
        std::fs::write(file, &gzipped).unwrap();
    }
}

#[test]
fn fuzz_idx_raw_pair() {
    // Raw IDX has no checksum: a flipped pixel bit loads as another pixel. What must
    // hold: the mutant differs from the original at most where the bytes changed.
    let dir = tmp("idx-raw");
    let (img, lab) = idx_pair(60);
    let ip = dir.join("train-images-idx3-ubyte");
    let lp = dir.join("train-labels-idx1-ubyte");
    std::fs::write(&ip, &img).unwrap();
    std::fs::write(&lp, &lab).unwrap();
    let orig = data::load_idx_dir(&dir, true).unwrap();
    let wrap = |b: &[u8]| b.to_vec();
    for (which, file, payload, fields, header, seed) in [
        ("images", &ip, &img, 4, 16, 0x2d3u64),
        ("labels", &lp, &lab, 2, 8, 0x2d1),
    ] {
        let edit = idx_edit(payload, fields, &wrap);
        fuzz(&format!("IDX raw {which}"), seed, payload, &edit, |m| {
            std::fs::write(file, &m.bytes).unwrap();
            let (r, peak) = measured(|| data::load_idx_dir(&dir, true));
            let verdict = match &r {
                None => Err("panicked".to_string()),
                Some(Err(_)) => Ok(()),
                Some(Ok(ds)) => {
                    let (got, want): (Vec<u8>, Vec<u8>) = if which == "images" {
                        (pixels(ds).to_vec(), pixels(&orig).to_vec())
                    } else {
                        (
                            ds.labels.iter().map(|&v| v as u8).collect(),
                            orig.labels.iter().map(|&v| v as u8).collect(),
                        )
                    };
                    let diff: Vec<usize> = (0..got.len().max(want.len()))
                        .filter(|&i| got.get(i) != want.get(i))
                        .map(|i| i + header)
                        .collect();
                    match &m.changed {
                        Some(c) if diff.iter().all(|i| c.contains(i)) => Ok(()),
                        _ if diff.is_empty() => Ok(()),
                        _ => Err(format!("differs at {diff:?}")),
                    }
                }
            };
            (verdict, matches!(r, Some(Ok(_))), peak)
        });
        std::fs::write(file, payload).unwrap();
    }
}

// ---- CIFAR-10 ----

#[test]
fn fuzz_cifar10_batch() {
    // No checksum: a mutant may load, but only differing from the original in the record
    // the mutation touched, or as a prefix of whole records; every label stays in 0..9.
    let dir = tmp("cifar");
    let p = dir.join("test_batch.bin");
    let mut orig = Vec::new();
    for r in 0..4usize {
        orig.push((r * 3 % 10) as u8);
        orig.extend((0..3072).map(|i| ((i * 13 + r) % 256) as u8));
    }
    std::fs::write(&p, &orig).unwrap();
    let base = data::load_cifar10(&dir, false).unwrap();
    let edit = |rng: &mut Rng| {
        // The header of a record is its label byte.
        let r = rng.below(4);
        let v = rng.below(256) as u8;
        let mut b = orig.clone();
        b[r * 3073] = v;
        (
            format!("label of record {r} -> {v}"),
            b,
            Some(vec![r * 3073]),
        )
    };
    fuzz("CIFAR-10", 0xc1fa, &orig, &edit, |m| {
        std::fs::write(&p, &m.bytes).unwrap();
        let (r, peak) = measured(|| data::load_cifar10(&dir, false));
        let verdict = match &r {
            None => Err("panicked".to_string()),
            Some(Err(_)) => Ok(()),
            Some(Ok(ds)) => {
                let n = ds.len();
                let records_differing: Vec<usize> = (0..n)
                    .filter(|&i| {
                        i >= base.len()
                            || ds.labels[i] != base.labels[i]
                            || ds.image(i).unwrap().0 != base.image(i).unwrap().0
                    })
                    .collect();
                let touched: Vec<usize> = m.changed.iter().flatten().map(|&b| b / 3073).collect();
                if ds.labels.iter().any(|&l| l > 9) {
                    Err("label out of range".into())
                } else if (m.changed.is_none() && n < base.len() && records_differing.is_empty())
                    || (n == base.len() && records_differing.iter().all(|r| touched.contains(r)))
                {
                    Ok(()) // a whole-record prefix, or differences only where it changed
                } else {
                    Err(format!("records {records_differing:?} differ"))
                }
            }
        };
        (verdict, matches!(r, Some(Ok(_))), peak)
    });
}

// ---- PNG and JPEG ----

fn test_image() -> image::RgbImage {
    image::RgbImage::from_fn(24, 20, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 12) as u8, ((x * y) % 256) as u8])
    })
}

/// The PNG chunk (offset, length) holding byte `at`, for recomputing its CRC.
fn png_chunks(b: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut at = 8;
    while at + 12 <= b.len() {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if at + 12 + len > b.len() {
            break;
        }
        v.push((at, len));
        at += 12 + len;
    }
    v
}

#[test]
fn fuzz_png() {
    let dir = tmp("png");
    let p = dir.join("img.png");
    test_image().save(&p).unwrap();
    let orig = std::fs::read(&p).unwrap();
    let want = data::dataset::decode_file(&p, 3).unwrap();
    // IHDR fields (width, height, bit depth, colour type, compression, filter, interlace)
    // set to other values with the chunk's CRC recomputed, as a deliberate edit would.
    let edit = |rng: &mut Rng| {
        let (c, _) = png_chunks(&orig)[0];
        let fields = [(8, 4), (12, 4), (16, 1), (17, 1), (18, 1), (19, 1), (20, 1)];
        let (off, w) = fields[rng.below(fields.len())];
        let at = c + off;
        let old = orig[at..at + w]
            .iter()
            .fold(0u64, |a, &x| (a << 8) | x as u64);
        let new = field_value(rng, old) & if w == 4 { 0xffff_ffff } else { 0xff };
        let mut b = orig.clone();
        for k in 0..w {
            b[at + k] = (new >> (8 * (w - 1 - k))) as u8;
        }
        let crc = crc32fast::hash(&b[c + 4..c + 8 + 13]);
        b[c + 8 + 13..c + 12 + 13].copy_from_slice(&crc.to_be_bytes());
        (format!("IHDR byte {off}: {old} -> {new}"), b, None)
    };
    fuzz("PNG", 0x9e6, &orig, &edit, |m| {
        std::fs::write(&p, &m.bytes).unwrap();
        let (r, peak) = measured(|| data::dataset::decode_file(&p, 3));
        let header_edit = m.what.starts_with("IHDR");
        let verdict = match &r {
            None => Err("panicked".to_string()),
            Some(Err(_)) => Ok(()),
            Some(Ok(got)) if *got == want => Ok(()),
            Some(Ok((px, h, w))) if header_edit => {
                // A consistent header edit: the image the edited header describes.
                let dims = image::ImageReader::open(&p)
                    .and_then(|r| r.with_guessed_format())
                    .ok()
                    .and_then(|r| r.into_dimensions().ok());
                if dims == Some((*w as u32, *h as u32)) && px.len() == w * h * 3 {
                    Ok(())
                } else {
                    Err(format!("decoded {w}x{h} against header {dims:?}"))
                }
            }
            Some(Ok(_)) => Err("decoded to other pixels".into()),
        };
        (verdict, matches!(r, Some(Ok(_))), peak)
    });
}

#[test]
fn fuzz_jpeg() {
    // JPEG has no checksum: a flipped bit in the entropy-coded data decodes to other
    // pixels without any error. What is asserted: no panic, bounded allocation, and a
    // decoded image has the dimensions its header states and a full pixel buffer.
    let dir = tmp("jpeg");
    let p = dir.join("img.jpg");
    test_image().save(&p).unwrap();
    let orig = std::fs::read(&p).unwrap();
    let sof = orig
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("baseline JPEG");
    // Header edits: the frame's precision, height, width or component count.
    let edit = |rng: &mut Rng| {
        let fields = [(4, 1), (5, 2), (7, 2), (9, 1)];
        let (off, w) = fields[rng.below(fields.len())];
        let at = sof + off;
        let old = orig[at..at + w]
            .iter()
            .fold(0u64, |a, &x| (a << 8) | x as u64);
        let new = field_value(rng, old) & if w == 2 { 0xffff } else { 0xff };
        let mut b = orig.clone();
        for k in 0..w {
            b[at + k] = (new >> (8 * (w - 1 - k))) as u8;
        }
        (format!("SOF0 byte {off}: {old} -> {new}"), b, None)
    };
    fuzz("JPEG", 0x1be6, &orig, &edit, |m| {
        std::fs::write(&p, &m.bytes).unwrap();
        let (r, peak) = measured(|| data::dataset::decode_file(&p, 3));
        let verdict = match &r {
            None => Err("panicked".to_string()),
            Some(Err(_)) => Ok(()),
            Some(Ok((px, h, w))) => {
                let dims = image::ImageReader::open(&p)
                    .and_then(|r| r.with_guessed_format())
                    .ok()
                    .and_then(|r| r.into_dimensions().ok());
                if dims == Some((*w as u32, *h as u32)) && px.len() == w * h * 3 {
                    Ok(())
                } else {
                    Err(format!("decoded {w}x{h} against header {dims:?}"))
                }
            }
        };
        (verdict, matches!(r, Some(Ok(_))), peak)
    });
}
