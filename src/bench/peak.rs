//! `effnet bench peak`: the two ceilings of the roofline on this adapter, measured with
//! simple kernels: the copy bandwidth (vec4 loads and stores over a buffer far larger than
//! any cache) and the f32 FMA rate (eight independent FMA chains per thread, no memory
//! traffic). Measured once per adapter, driver and shader-check setting and cached in
//! `<cache dir>/effnet/peak.json` (`$XDG_CACHE_HOME` or `~/.cache` on Linux); `--refresh`
//! measures again. A cache that cannot be read or parsed is reported and replaced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{time_dispatches, Timed};
use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Access, Cost, Gpu, Grid, Kernel, KernelDef, Recorder, Tensor};

uniform_block! {
    /// Parameters of `bench/copy.wgsl`.
    pub(super) struct CopyParams {
        /// vec4 elements.
        pub n: u32,
        /// vec4s per thread.
        pub per: u32,
        /// Threads in the grid.
        pub stride: u32,
    }
}

uniform_block! {
    /// Parameters of `bench/fma.wgsl`.
    pub(super) struct FmaParams {
        /// Threads (outputs).
        pub n: u32,
        /// Steps per chain.
        pub iters: u32,
        /// Multiplier (< 1).
        pub m: f32,
        /// Addend.
        pub c: f32,
    }
}

static COPY: Kernel<CopyParams> = Kernel::new(
    "bench/copy.wgsl",
    "peak_copy",
    &[Access::Read, Access::ReadWrite],
    &[],
);
static FMA: Kernel<FmaParams> =
    Kernel::new("bench/fma.wgsl", "peak_fma", &[Access::ReadWrite], &[]);

/// The kernels of the peak probes (for the portability and contract tests).
pub static KERNELS: &[&KernelDef] = &[&COPY.def, &FMA.def];

/// The FMA probe's multiplier and addend (every chain tends to `C / (1 - M)`).
pub const FMA_M: f32 = 0.999;
/// See [`FMA_M`].
pub const FMA_C: f32 = 0.001;
/// Independent chains per thread of the FMA probe.
pub const FMA_CHAINS: usize = 8;

/// Workgroups of the copy probe (each thread then loops over its share).
const COPY_GROUPS: u32 = 4096;
/// Threads of the FMA probe.
const FMA_THREADS: usize = 256 * 2048;

/// Record one copy of `n4` vec4s from `src` to `dst` (each at least `4 * n4` floats).
pub fn copy(rec: &mut Recorder, src: &Tensor, dst: &Tensor, n4: usize) -> Result<()> {
    if src.len() < 4 * n4 || dst.len() < 4 * n4 || n4 >= u32::MAX as usize / 2 {
        return Err(Error::Shape(format!(
            "peak copy of {n4} vec4s between tensors of {} and {} floats",
            src.len(),
            dst.len()
        )));
    }
    let threads = 256 * COPY_GROUPS as usize;
    rec.dispatch(
        &COPY,
        &[],
        &CopyParams {
            n: n4 as u32,
            per: n4.div_ceil(threads) as u32,
            stride: threads as u32,
        },
        &[src, dst],
        Grid::Linear(COPY_GROUPS),
        Cost::f32s(0.0, 4 * n4, 4 * n4),
    )
}

/// Record the FMA probe: `out.len()` threads, `iters` steps of [`FMA_CHAINS`] chains.
pub fn fma(rec: &mut Recorder, out: &Tensor, iters: usize) -> Result<()> {
    let n = out.len();
    if iters >= u32::MAX as usize {
        return Err(Error::Config(format!("FMA probe of {iters} steps")));
    }
    rec.dispatch(
        &FMA,
        &[],
        &FmaParams {
            n: n as u32,
            iters: iters as u32,
            m: FMA_M,
            c: FMA_C,
        },
        &[out],
        Grid::Linear(n.div_ceil(256) as u32),
        Cost::f32s(2.0 * (FMA_CHAINS * iters * n) as f64, 0, n),
    )
}

/// f64 reference of one thread of the FMA probe.
pub fn fma_ref(thread: usize, iters: usize) -> f64 {
    let (m, c) = (FMA_M as f64, FMA_C as f64);
    (0..FMA_CHAINS)
        .map(|k| {
            let mut a = (thread % 64) as f64 * 0.015625 + k as f64 * 0.125;
            for _ in 0..iters {
                a = a * m + c;
            }
            a
        })
        .sum()
}

/// The adapter's measured ceilings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Adapter, backend, driver and shader-check setting the numbers belong to.
    pub key: String,
    /// Copy bandwidth, GB/s (bytes read plus bytes written).
    pub copy_gbps: f64,
    /// f32 FMA rate, GFLOP/s (an FMA is 2).
    pub fma_gflops: f64,
    /// Bytes each copy moved.
    pub copy_bytes: f64,
    /// Seconds since the Unix epoch when measured.
    pub measured_at: u64,
}

impl Peak {
    /// The roofline floor of `cost`: the time it needs at best, ms.
    pub fn floor_ms(&self, cost: Cost) -> f64 {
        (cost.flops / (self.fma_gflops * 1e6)).max(cost.bytes / (self.copy_gbps * 1e6))
    }
}

/// What identifies an adapter for the cache.
pub fn cache_key(gpu: &Gpu) -> String {
    let i = &gpu.info;
    format!(
        "{} | {:?} | {} {} | vendor {:#x} device {:#x} | shader checks {} | effnet {}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        i.vendor,
        i.device,
        if gpu.shader_checks { "on" } else { "off" },
        env!("CARGO_PKG_VERSION")
    )
}

/// The cache file: `<cache dir>/effnet/peak.json`, or None when the platform has no cache
/// directory.
pub fn cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("effnet").join("peak.json"))
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    entries: Vec<Peak>,
}

/// Read the cache; a missing file is empty, an unreadable or corrupt one is an error
/// naming it.
fn read_cache(path: &Path) -> Result<CacheFile> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::file(
                path,
                format!("not a peak cache ({e}); delete it or run `effnet bench peak --refresh`"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CacheFile::default()),
        Err(e) => Err(Error::file(path, format!("cannot read: {e}"))),
    }
}

fn write_cache(path: &Path, cache: &CacheFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create the cache folder: {e}")))?;
    }
    let bytes = serde_json::to_vec_pretty(cache).expect("serializable");
    crate::util::safetensors::atomic_write(path, &bytes)
}

/// The cached peak for this adapter in `path`, if any (a corrupt cache counts as none,
/// with a warning on stderr).
pub fn cached(gpu: &Gpu, path: &Path) -> Option<Peak> {
    let key = cache_key(gpu);
    match read_cache(path) {
        Ok(c) => c.entries.into_iter().find(|p| p.key == key),
        Err(e) => {
            eprintln!("effnet: ignoring the peak cache: {e}");
            None
        }
    }
}

/// Store `peak` in the cache at `path`, replacing this adapter's entry (and a corrupt
/// file).
pub fn store(path: &Path, peak: &Peak) -> Result<()> {
    let mut cache = read_cache(path).unwrap_or_default();
    cache.entries.retain(|p| p.key != peak.key);
    cache.entries.push(peak.clone());
    write_cache(path, &cache)
}

/// The median time of one recorded probe, ms.
fn probe_ms(gpu: &Gpu, iters: usize, f: impl FnMut(&mut Recorder) -> Result<()>) -> Result<f64> {
    let t: Timed = time_dispatches(gpu, iters, f)?;
    Ok(t.total_ms)
}

/// Measure both ceilings now (about a second on a CPU adapter, less on a GPU).
pub fn measure(gpu: &Gpu, iters: usize) -> Result<Peak> {
    let iters = iters.max(3);
    // Copy: 128 MiB each way (or what one binding allows), far past any cache.
    let bytes = (128u64 << 20).min(gpu.max_binding_bytes() / 16 * 16);
    let n4 = (bytes / 16) as usize;
    let src = gpu.zeros(&[4 * n4])?;
    let dst = gpu.zeros(&[4 * n4])?;
    let copy_ms = probe_ms(gpu, iters, |r| copy(r, &src, &dst, n4))?;
    // FMA: double the steps until a run takes at least 20 ms, so launch overhead and
    // timer resolution do not count.
    let out = gpu.zeros(&[FMA_THREADS])?;
    let mut steps = 64;
    let mut fma_ms = probe_ms(gpu, 1, |r| fma(r, &out, steps))?;
    while fma_ms < 20.0 && steps < (1 << 20) {
        steps *= 2;
        fma_ms = probe_ms(gpu, 1, |r| fma(r, &out, steps))?;
    }
    fma_ms = probe_ms(gpu, iters, |r| fma(r, &out, steps))?;
    let flops = 2.0 * (FMA_CHAINS * steps * FMA_THREADS) as f64;
    let moved = 2.0 * bytes as f64;
    Ok(Peak {
        key: cache_key(gpu),
        copy_gbps: moved / copy_ms / 1e6,
        fma_gflops: flops / fma_ms / 1e6,
        copy_bytes: moved,
        measured_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// The peak for this adapter: from the cache unless `refresh`, else measured (and then
/// cached; a cache that cannot be written is reported, not fatal).
pub fn get(gpu: &Gpu, refresh: bool) -> Result<Peak> {
    let path = cache_path();
    if !refresh {
        if let Some(p) = path.as_deref().and_then(|p| cached(gpu, p)) {
            return Ok(p);
        }
    }
    let peak = measure(gpu, 5)?;
    if let Some(p) = &path {
        if let Err(e) = store(p, &peak) {
            eprintln!("effnet: could not cache the peak: {e}");
        }
    }
    Ok(peak)
}
