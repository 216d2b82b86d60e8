//! Adapter discovery and choice, device creation with the adapter's own limits, and the
//! [`Gpu`] handle every other module records work through.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::kernel::PipelineCache;
use super::uniforms::UniformPool;
use crate::error::{Error, Result};

/// How to choose an adapter. Empty fields fall back to the environment
/// (`EFFNET_ADAPTER`, `WGPU_BACKEND`) and then to the high-performance adapter on
/// Vulkan, Metal or DX12 (OpenGL only when asked for, or when nothing else exists).
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name (e.g. `llvmpipe`, `H100`).
    pub adapter: Option<String>,
    /// Backend list as wgpu spells it: `vulkan`, `metal`, `dx12`, `gl`, comma separated.
    pub backend: Option<String>,
    /// Build shader modules with wgpu's runtime checks (bounds clamping, loop counters,
    /// guarded integer division). Off by default: effnet's kernels are in bounds by
    /// construction and run faster without them. `None` reads `EFFNET_SHADER_CHECKS`
    /// (`0`, `false`, `no`, `off`, `f`, `n` or empty: off; anything else: on).
    pub shader_checks: Option<bool>,
    /// Optional features not to enable even where the adapter has them: tests open a
    /// device as one without `SHADER_F16` would be (`--precision mixed` must then refuse).
    pub masked_features: wgpu::Features,
}

impl GpuOptions {
    /// Options from the environment only (`EFFNET_ADAPTER`, `WGPU_BACKEND`).
    pub fn from_env() -> Self {
        Self::default().with_env()
    }

    /// Fill unset fields from `EFFNET_ADAPTER` and `WGPU_BACKEND`.
    pub fn with_env(mut self) -> Self {
        if self.adapter.is_none() {
            self.adapter = std::env::var("EFFNET_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty());
        }
        if self.backend.is_none() {
            self.backend = std::env::var("WGPU_BACKEND").ok().filter(|s| !s.is_empty());
        }
        if self.shader_checks.is_none() {
            self.shader_checks = std::env::var("EFFNET_SHADER_CHECKS")
                .ok()
                .map(|v| truthy(&v));
        }
        self
    }

    fn backends(&self) -> Result<wgpu::Backends> {
        match &self.backend {
            None => Ok(wgpu::Backends::PRIMARY),
            Some(list) => {
                let b = wgpu::Backends::from_comma_list(list);
                if b.is_empty() {
                    Err(Error::Config(format!(
                        "unknown backend '{list}': use vulkan, metal, dx12 or gl"
                    )))
                } else {
                    Ok(b)
                }
            }
        }
    }
}

/// The reading of a boolean environment variable clap also uses for flags: off for `0`,
/// `false`, `no`, `off`, `f`, `n` (any case) and the empty string, on for anything else.
fn truthy(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "false" | "no" | "off" | "f" | "n")
}

/// What `effnet info` prints about one adapter.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    /// Adapter name as the driver reports it.
    pub name: String,
    /// Backend (Vulkan, Metal, Dx12, Gl).
    pub backend: String,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: String,
    /// Driver name and version string.
    pub driver: String,
}

fn summarize(info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
    }
}

/// The limits effnet reads, as requested from (and granted by) the adapter.
#[derive(Clone, Debug, Serialize)]
pub struct LimitsSummary {
    /// Largest storage-buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Storage buffers one compute stage may bind.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Workgroups per grid dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Workgroup memory, bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Offset alignment for storage bindings, bytes.
    pub min_storage_buffer_offset_alignment: u32,
    /// Offset alignment for uniform bindings, bytes.
    pub min_uniform_buffer_offset_alignment: u32,
    /// Smallest and largest subgroup size the adapter reports.
    pub subgroup_size: (u32, u32),
}

/// Optional features effnet uses when present.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct FeatureSet {
    /// Timestamp queries at compute-pass boundaries (per-kernel profiling).
    pub timestamp_query: bool,
    /// Subgroup operations in shaders.
    pub subgroup: bool,
    /// `f16` in shaders.
    pub shader_f16: bool,
}

/// Everything `effnet info` reports.
#[derive(Clone, Debug, Serialize)]
pub struct GpuReport {
    /// Every adapter found on the compiled-in backends.
    pub adapters: Vec<AdapterSummary>,
    /// The adapter chosen.
    pub chosen: AdapterSummary,
    /// Its limits as granted.
    pub limits: LimitsSummary,
    /// Optional features enabled.
    pub features: FeatureSet,
    /// Whether shader modules carry wgpu's runtime checks (see
    /// [`GpuOptions::shader_checks`]).
    pub shader_checks: bool,
}

/// The device handle: adapter, device, queue, granted limits and features, the pipeline
/// cache and the uniform page pool. Cheap to share by reference; all methods take `&self`.
pub struct Gpu {
    /// The wgpu instance (kept alive for the device's lifetime).
    pub instance: wgpu::Instance,
    /// The adapter the device was created on.
    pub adapter: wgpu::Adapter,
    /// The logical device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Adapter info.
    pub info: wgpu::AdapterInfo,
    /// Limits granted to the device (the adapter's own).
    pub limits: wgpu::Limits,
    /// Optional features enabled on the device.
    pub features: FeatureSet,
    /// Shader modules are built with wgpu's runtime checks (see
    /// [`GpuOptions::shader_checks`]).
    pub shader_checks: bool,
    pub(crate) pipelines: PipelineCache,
    pub(crate) uniforms: UniformPool,
    /// Largest grid dimension the recorder uses (normally the adapter's limit; tests lower
    /// it to exercise linearised 2-D grids on small tensors).
    pub(crate) grid_dim_cap: std::sync::atomic::AtomicU32,
    /// Bytes of storage buffers allocated through this handle so far (effnet plans every
    /// buffer up front and frees none during training, so this is its peak footprint).
    pub(crate) allocated: std::sync::atomic::AtomicU64,
    errors: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
    // Let Vulkan and DX12 refuse allocations past 95% of the driver's memory budget with an
    // out-of-memory error (which effnet reports) instead of swapping or losing the device.
    desc.memory_budget_thresholds.for_resource_creation = Some(95);
    wgpu::Instance::new(desc)
}

const NO_ADAPTER_HELP: &str = "no GPU adapter found. effnet needs a Vulkan, Metal, DX12 or GL \
driver. On Debian/Ubuntu without a GPU, install the software Vulkan driver: \
`sudo apt-get install -y mesa-vulkan-drivers` (gives lavapipe/llvmpipe). \
`effnet info` lists what is visible.";

/// List every adapter visible on the given backends.
pub fn list_adapters(opts: &GpuOptions) -> Result<Vec<AdapterSummary>> {
    let backends = opts.backends()?;
    let instance = new_instance(backends);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    Ok(adapters.iter().map(|a| summarize(&a.get_info())).collect())
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

impl Gpu {
    /// Create a device on the adapter chosen by `opts` (see [`GpuOptions`]).
    pub fn new(opts: &GpuOptions) -> Result<Self> {
        Self::new_nth(opts, 0)
    }

    /// [`Gpu::new`] for the `nth` process on a host (data-parallel ranks): without an
    /// adapter name, the adapters of the best kind (type and backend) are taken in turn,
    /// `nth` modulo their count, so ranks on a host with several GPUs take distinct ones.
    /// With a name, every rank takes the adapter it names.
    pub fn new_nth(opts: &GpuOptions, nth: usize) -> Result<Self> {
        let opts = opts.clone().with_env();
        let backends = opts.backends()?;
        let mut instance = new_instance(backends);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
        if adapters.is_empty() && opts.backend.is_none() {
            // No Vulkan/Metal/DX12 adapter: fall back to OpenGL (ES).
            instance = new_instance(wgpu::Backends::GL);
            adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::GL));
        }
        if adapters.is_empty() {
            return Err(Error::NoAdapter(NO_ADAPTER_HELP.into()));
        }
        let adapter = match &opts.adapter {
            Some(want) => {
                let w = want.to_lowercase();
                let names: Vec<String> = adapters
                    .iter()
                    .map(|a| {
                        let i = a.get_info();
                        format!("{} ({:?})", i.name, i.backend)
                    })
                    .collect();
                adapters
                    .into_iter()
                    .filter(|a| a.get_info().name.to_lowercase().contains(&w))
                    .min_by_key(|a| backend_rank(a.get_info().backend))
                    .ok_or_else(|| {
                        Error::NoAdapter(format!(
                            "no adapter name contains '{want}'; found: {}. Pick one with \
                             --adapter <substring> or EFFNET_ADAPTER",
                            names.join(", ")
                        ))
                    })?
            }
            None => {
                let rank = |a: &wgpu::Adapter| {
                    let i = a.get_info();
                    (type_rank(i.device_type), backend_rank(i.backend))
                };
                let best = adapters.iter().map(rank).min().expect("non-empty");
                let mut same: Vec<wgpu::Adapter> =
                    adapters.into_iter().filter(|a| rank(a) == best).collect();
                let k = nth % same.len();
                same.swap_remove(k)
            }
        };
        Self::from_adapter(
            instance,
            adapter,
            opts.shader_checks.unwrap_or(false),
            opts.masked_features,
        )
    }

    fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        shader_checks: bool,
        masked: wgpu::Features,
    ) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let available = adapter.features() - masked;
        let mut wanted = wgpu::Features::empty();
        for f in [
            wgpu::Features::TIMESTAMP_QUERY,
            wgpu::Features::SUBGROUP,
            wgpu::Features::SHADER_F16,
        ] {
            if available.contains(f) {
                wanted |= f;
            }
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("effnet"),
            required_features: wanted,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::NoAdapter(format!(
                "adapter '{}' ({:?}) refused a device: {e}. Try another with --adapter",
                info.name, info.backend
            ))
        })?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let features = FeatureSet {
            timestamp_query: wanted.contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroup: wanted.contains(wgpu::Features::SUBGROUP),
            shader_f16: wanted.contains(wgpu::Features::SHADER_F16),
        };
        let grid = limits.max_compute_workgroups_per_dimension;
        Ok(Self {
            instance,
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            shader_checks,
            pipelines: PipelineCache::default(),
            uniforms: UniformPool::default(),
            grid_dim_cap: std::sync::atomic::AtomicU32::new(grid),
            allocated: std::sync::atomic::AtomicU64::new(0),
            errors,
        })
    }

    /// Summary of the chosen adapter.
    pub fn summary(&self) -> AdapterSummary {
        summarize(&self.info)
    }

    /// Limits effnet reads, as granted.
    pub fn limits_summary(&self) -> LimitsSummary {
        let l = &self.limits;
        LimitsSummary {
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
            min_uniform_buffer_offset_alignment: l.min_uniform_buffer_offset_alignment,
            subgroup_size: (self.info.subgroup_min_size, self.info.subgroup_max_size),
        }
    }

    /// The full `effnet info` report.
    pub fn report(&self) -> Result<GpuReport> {
        let every = new_instance(wgpu::Backends::all());
        let all = pollster::block_on(every.enumerate_adapters(wgpu::Backends::all()));
        Ok(GpuReport {
            adapters: all.iter().map(|a| summarize(&a.get_info())).collect(),
            chosen: self.summary(),
            limits: self.limits_summary(),
            features: self.features,
            shader_checks: self.shader_checks,
        })
    }

    /// Largest binding (bytes) one tensor may occupy: the adapter's limit, and never 4 GiB
    /// or more, so every element index of every binding (< 2^30) fits a shader's u32 with
    /// room to spare (the kernels' bounds arguments rely on it).
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            .min(u32::MAX as u64 / 4 * 4)
    }

    /// Lower the grid-dimension cap (tests use this to force linearised 2-D grids).
    pub fn set_grid_dim_cap(&self, cap: u32) {
        let cap = cap.clamp(1, self.limits.max_compute_workgroups_per_dimension);
        self.grid_dim_cap
            .store(cap, std::sync::atomic::Ordering::Relaxed);
    }

    /// The grid-dimension cap in force.
    pub fn grid_dim_cap(&self) -> u32 {
        self.grid_dim_cap.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of tensors and arenas allocated so far (see the field's docs).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
        self.check_errors()
    }

    /// Poll the device until `done()` holds. Map callbacks may run on whichever thread
    /// polls, so after our submission finishes we may still have to wait for another
    /// thread to finish delivering them.
    pub fn wait_for(&self, done: impl Fn() -> bool) -> Result<()> {
        let start = std::time::Instant::now();
        while !done() {
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
            if done() {
                break;
            }
            if start.elapsed() > std::time::Duration::from_secs(600) {
                return Err(Error::Device("a readback did not complete in 600 s".into()));
            }
            std::thread::yield_now();
        }
        self.check_errors()
    }

    /// Turn any uncaptured wgpu error into an [`Error::Device`].
    pub fn check_errors(&self) -> Result<()> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            Ok(())
        } else {
            let msg = errs.join("\n");
            errs.clear();
            Err(Error::Device(msg))
        }
    }
}
