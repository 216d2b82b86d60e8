//! `--precision auto|f32|mixed` of `train`, `eval`, `predict`, `profile` and `bench train`,
//! and the start-up check behind `auto`: mixed precision where the adapter has
//! `SHADER_F16` and the f16 variants of the model's kernel families (activation, grouped
//! convolution, GEMM, residual add) agree with their f32 variants on a tiny input, f32
//! otherwise. The check runs a few tiny dispatches once per adapter, driver and effnet
//! binary, and its verdict is cached in `<cache dir>/effnet/precision.json` beside the
//! peak cache ([`crate::bench::peak`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::{Dtype, Gpu, Precision, Recorder};
use crate::ops::act::{self, Act};
use crate::ops::conv::{self, ConvSpec, Padding};
use crate::ops::elementwise;
use crate::ops::linear::{self, LinearSpec};
use crate::util::Rng;

/// The `--precision` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// Mixed where the adapter has SHADER_F16 and the f16 kernels pass a start-up check
    /// (cached per adapter, driver and binary), f32 otherwise.
    Auto,
    /// Everything in f32.
    F32,
    /// f16 activations and activation gradients, f32 weights and accumulation, dynamic
    /// loss scaling; refused without SHADER_F16.
    Mixed,
}

/// The precision a command runs in, and why (for its header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The precision.
    pub precision: Precision,
    /// Why: the flag, or what the start-up check found.
    pub why: String,
}

impl Chosen {
    /// `mixed (auto: ...)`, for a run header.
    pub fn header(&self) -> String {
        format!("precision {} ({})", self.precision.name(), self.why)
    }
}

/// Largest relative difference between an f16 variant's output and its f32 variant's that
/// the start-up check accepts: a few f16 roundings of O(1) values (unit roundoff 4.9e-4)
/// through a 27-term dot product pass it, a wrong kernel (garbage, zeros, the f32 bits
/// read as f16) does not.
const CHECK_TOLERANCE: f64 = 2e-2;

/// Resolve `arg` on `gpu`: `f32` as given, `mixed` if the adapter has `SHADER_F16` (a
/// clear error otherwise), `auto` through the cached start-up check.
pub fn choose(gpu: &Gpu, arg: PrecisionArg) -> Result<Chosen> {
    match arg {
        PrecisionArg::F32 => Ok(Chosen {
            precision: Precision::F32,
            why: "--precision f32".into(),
        }),
        PrecisionArg::Mixed => {
            Precision::Mixed.check_supported(gpu)?;
            Ok(Chosen {
                precision: Precision::Mixed,
                why: "--precision mixed".into(),
            })
        }
        PrecisionArg::Auto => Ok(auto(gpu)),
    }
}

/// What `auto` picks on `gpu`.
fn auto(gpu: &Gpu) -> Chosen {
    if !gpu.features.shader_f16 {
        return Chosen {
            precision: Precision::F32,
            why: "auto: the adapter has no SHADER_F16".into(),
        };
    }
    let verdict = cached_check(gpu);
    match verdict {
        Ok(()) => Chosen {
            precision: Precision::Mixed,
            why: "auto: SHADER_F16 and the f16 kernels pass the start-up check".into(),
        },
        Err(e) => Chosen {
            precision: Precision::F32,
            why: format!("auto: the f16 kernels fail the start-up check: {e}"),
        },
    }
}

/// One cached verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    key: String,
    /// None: passed; Some(why): failed.
    failure: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    entries: Vec<Entry>,
}

/// The cache file, or None when the platform has no cache directory.
fn cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("effnet").join("precision.json"))
}

/// The adapter's peak-cache key plus the running binary (its size and modification time):
/// a rebuilt effnet, whose kernels may differ, checks again.
fn cache_key(gpu: &Gpu) -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} bytes, modified {t}", m.len())
        })
        .unwrap_or_else(|_| "unknown binary".into());
    format!("{} | binary {exe}", crate::bench::peak::cache_key(gpu))
}

fn read_cache(path: &Path) -> CacheFile {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The check's verdict from the cache, or measured now (and cached; a cache that cannot
/// be read is replaced, one that cannot be written is reported, not fatal).
fn cached_check(gpu: &Gpu) -> std::result::Result<(), String> {
    let key = cache_key(gpu);
    let path = cache_path();
    let mut cache = path.as_deref().map(read_cache).unwrap_or_default();
    if let Some(e) = cache.entries.iter().find(|e| e.key == key) {
        return e.failure.clone().map_or(Ok(()), Err);
    }
    // One line for the run header (kernel messages may carry wrapped whitespace).
    let failure = startup_check(gpu).err().map(|e| {
        e.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    });
    if let Some(p) = &path {
        cache.entries.retain(|e| e.key != key);
        cache.entries.push(Entry {
            key,
            failure: failure.clone(),
        });
        let bytes = serde_json::to_vec_pretty(&cache).expect("serializable");
        let written = p
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| Error::file(p, e.to_string()))
            .and_then(|_| crate::util::safetensors::atomic_write(p, &bytes));
        if let Err(e) = written {
            eprintln!("effnet: could not cache the precision check: {e}");
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Run each checked kernel family in f32 and in f16 storage on the same tiny input and
/// compare: an error names the first family whose f16 variant fails to build or run, or
/// disagrees. A handful of dispatches on tensors of a few hundred values.
pub fn startup_check(gpu: &Gpu) -> Result<()> {
    Precision::Mixed.check_supported(gpu)?;
    let mut rng = Rng::new(12);
    let (n, h, c) = (2usize, 4usize, 16usize);
    let x: Vec<f32> = (0..n * h * h * c).map(|_| rng.normal() as f32).collect();
    let conv = ConvSpec {
        n,
        h,
        w: h,
        cin: c,
        cout: c,
        k: 3,
        stride: 1,
        groups: 4,
        bias: false,
        padding: Padding::Symmetric,
    };
    let cw: Vec<f32> = (0..conv.weight_len())
        .map(|_| 0.2 * rng.normal() as f32)
        .collect();
    let lin = LinearSpec {
        rows: n * h * h,
        cin: c,
        cout: c,
        bias: false,
    };
    let lw: Vec<f32> = (0..c * c).map(|_| 0.25 * rng.normal() as f32).collect();
    let ones = gpu.upload(&vec![1.0; n], &[n])?;
    let shape = [n, h, h, c];
    // Each family: its output from an input of `dtype`.
    let run = |family: &str, dtype: Dtype| -> Result<Vec<f32>> {
        let xt = gpu.upload_as(&x, &shape, dtype)?;
        let y = gpu.zeros_of(&shape, dtype)?;
        let mut rec = Recorder::new(gpu);
        match family {
            "activation (SiLU)" => act::forward(&mut rec, Act::Silu, &xt, &y)?,
            "grouped convolution" => {
                let w = gpu.upload(&cw, &conv.weight_shape())?;
                conv::forward(&mut rec, &conv, &xt, &w, None, &y)?
            }
            "GEMM (1x1 convolution)" => {
                let w = gpu.upload(&lw, &[c, c])?;
                linear::forward(&mut rec, &lin, &xt, &w, None, &y)?
            }
            _ => elementwise::residual_add(&mut rec, &xt, &xt, &ones, &y)?,
        }
        rec.submit()?.wait(gpu)?;
        gpu.check_errors()?;
        gpu.read(&y)
    };
    for family in [
        "activation (SiLU)",
        "grouped convolution",
        "GEMM (1x1 convolution)",
        "residual add",
    ] {
        let want = run(family, Dtype::F32)?;
        let got = run(family, Dtype::F16).map_err(|e| {
            Error::Config(format!(
                "the {family} kernel's f16 variant does not run: {e}"
            ))
        })?;
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| ((a - b) as f64).abs() / scale)
            .fold(
                0.0f64,
                |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
            );
        if worst > CHECK_TOLERANCE {
            return Err(Error::Config(format!(
                "the {family} kernel's f16 variant differs from its f32 variant by {worst:.2e} \
                 (relative to the largest value; at most {CHECK_TOLERANCE:e} allowed)"
            )));
        }
    }
    Ok(())
}
