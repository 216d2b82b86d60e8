//! WGSL sources, kernel definitions and the pipeline cache.
//!
//! Every `.wgsl` file under `shaders/` is embedded at build time. A line
//! `//!include <path>` pulls in another file (shared helpers such as the linearised grid
//! index). Pipelines are built lazily, once per (shader, entry point, override constants),
//! with an explicit bind-group layout: binding 0 is the uniform parameter block (a
//! [`Uniform`] struct), bindings 1.. are storage buffers in the order of
//! [`KernelDef::bindings`].
//!
//! Shader modules are built without wgpu's runtime checks (no index clamping, no loop
//! counters, no guarded integer division) unless the device was made with
//! [`GpuOptions::shader_checks`](super::GpuOptions::shader_checks) (`EFFNET_SHADER_CHECKS=1`).
//! That is sound only because every kernel keeps its indices in bounds, its loops finite
//! and its divisors non-zero by construction: each shader states why in a "Bounds"
//! comment, from what its launcher checks (tensor lengths against the op's spec, sizes at
//! least 1 where they divide). Every binding is under 4 GiB
//! ([`Gpu::max_binding_bytes`]), so element indices stay below 2^30 and u32 index
//! arithmetic (sums of non-negative products no larger than the final index) cannot
//! overflow. `tests/shader_checks.rs` runs every harness case and a training step both ways
//! and requires bit-identical results.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use super::context::Gpu;
use super::uniform::{Uniform, UniformLayout};
use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/shader_files.rs"));

/// Raw text of a shader file (before includes are expanded).
pub fn raw_source(path: &str) -> Option<&'static str> {
    SHADER_FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, s)| *s)
}

/// Source of a shader with `//!include` lines expanded (recursively, once per file).
pub fn shader_source(path: &str) -> Result<String> {
    let mut seen = Vec::new();
    let mut out = String::new();
    expand(path, &mut seen, &mut out)?;
    Ok(out)
}

fn expand(path: &str, seen: &mut Vec<String>, out: &mut String) -> Result<()> {
    if seen.iter().any(|s| s == path) {
        return Ok(());
    }
    seen.push(path.to_string());
    let src = raw_source(path).ok_or_else(|| Error::Shader {
        shader: path.into(),
        msg: "no such file under shaders/".into(),
    })?;
    for line in src.lines() {
        if let Some(inc) = line.trim().strip_prefix("//!include ") {
            expand(inc.trim(), seen, out)?;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(())
}

/// How a kernel uses one storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
}

/// A compute entry point, its parameter block and the storage bindings it takes (binding
/// 1, 2, ... in order). Made by [`Kernel::new`], which fills in `params` from the Rust
/// parameter struct.
#[derive(Debug)]
pub struct KernelDef {
    /// Path under shaders/.
    pub shader: &'static str,
    /// Entry point name.
    pub entry: &'static str,
    /// Storage bindings after the uniform block.
    pub bindings: &'static [Access],
    /// Every value effnet passes for each `override` constant. Pipelines refuse other
    /// values, and the portability test translates every combination, so what runs is
    /// exactly what is tested.
    pub overrides: &'static [(&'static str, &'static [f64])],
    /// Layout of the uniform block at binding 0 (the Rust struct's).
    pub params: &'static UniformLayout,
}

/// A kernel whose uniform block is the Rust struct `P`: [`crate::gpu::Recorder::dispatch`]
/// takes a `&P`, so a launcher cannot pass another kernel's parameters.
#[derive(Debug)]
pub struct Kernel<P> {
    /// The untyped definition (what registries and tests list).
    pub def: KernelDef,
    _params: PhantomData<fn() -> P>,
}

impl<P: Uniform> Kernel<P> {
    /// A kernel: its shader file (under shaders/), entry point, storage bindings (binding
    /// 1, 2, ...) and the values it uses for each override constant.
    pub const fn new(
        shader: &'static str,
        entry: &'static str,
        bindings: &'static [Access],
        overrides: &'static [(&'static str, &'static [f64])],
    ) -> Self {
        Self {
            def: KernelDef {
                shader,
                entry,
                bindings,
                overrides,
                params: P::LAYOUT,
            },
            _params: PhantomData,
        }
    }

    /// The untyped definition (what registries and tests list).
    pub const fn def(&self) -> &KernelDef {
        &self.def
    }
}

impl KernelDef {
    /// Every combination of override values this kernel is built with.
    pub fn override_combinations(&self) -> Vec<Vec<(&'static str, f64)>> {
        let mut combos: Vec<Vec<(&'static str, f64)>> = vec![Vec::new()];
        for (name, values) in self.overrides {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((*name, *v));
                        c
                    })
                })
                .collect();
        }
        combos
    }

    fn check_constants(&self, constants: &[(&str, f64)]) -> Result<()> {
        for (k, v) in constants {
            let ok = self
                .overrides
                .iter()
                .any(|(name, values)| name == k && values.contains(v));
            if !ok {
                return Err(Error::Shader {
                    shader: format!("{}::{}", self.shader, self.entry),
                    msg: format!(
                        "override {k} = {v} is not among the values declared in its KernelDef \
                         (add it there so the portability test covers it)"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A built pipeline with its layout.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) label: &'static str,
}

type Key = (&'static str, &'static str, Vec<(String, u64)>);

/// Lazily built pipelines keyed by shader, entry and override constants.
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<Key, Pipeline>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
}

/// Size of the uniform block bound at binding 0 of every kernel, bytes.
pub const PARAMS_BYTES: u64 = 256;

impl Gpu {
    /// The pipeline for `def` with the given override constants, built on first use.
    pub fn pipeline(&self, def: &'static KernelDef, constants: &[(&str, f64)]) -> Result<Pipeline> {
        def.check_constants(constants)?;
        let mut key_consts: Vec<(String, u64)> = constants
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_bits()))
            .collect();
        key_consts.sort();
        let key = (def.shader, def.entry, key_consts);
        if let Some(p) = self.pipelines.map.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(def.shader)?;
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, a) in def.bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *a == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(def.entry),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(def.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(def.entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(def.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                shader: format!("{}::{}", def.shader, def.entry),
                msg: e.to_string(),
            });
        }
        let p = Pipeline {
            pipeline,
            layout,
            label: def.entry,
        };
        self.pipelines.map.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }

    fn module(&self, shader: &'static str) -> Result<wgpu::ShaderModule> {
        if let Some(m) = self.pipelines.modules.lock().unwrap().get(shader) {
            return Ok(m.clone());
        }
        let src = shader_source(shader)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(shader),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        let m = if self.shader_checks {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: wgpu's runtime checks guard against out-of-bounds indices, endless
            // loops and integer division by zero (or i32::MIN / -1). effnet's shaders rule
            // all three out by construction: every shader's "Bounds" comment says why each
            // index is in range, each loop bounded and each divisor non-zero given what its
            // launcher guarantees, and tests/shader_checks.rs runs every harness case and a
            // training step with and without the checks and requires identical bits.
            unsafe {
                self.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                shader: shader.into(),
                msg: e.to_string(),
            });
        }
        self.pipelines
            .modules
            .lock()
            .unwrap()
            .insert(shader, m.clone());
        Ok(m)
    }
}
