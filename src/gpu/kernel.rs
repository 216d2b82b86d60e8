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
use super::tensor::{Dtype, Tensor};
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

/// The line an f32 shader names its activation storage type with; the f16 variant of the
/// module has `alias act_t = f16;` there, under `enable f16;`.
pub const ACT_ALIAS_F32: &str = "alias act_t = f32;";

/// Source of the variant of a shader that stores activations as `act` (see
/// [`super::precision`]): the f32 source unchanged, or for f16 the same text with `enable
/// f16;` first and its [`ACT_ALIAS_F32`] line (exactly one) rewritten to `alias act_t =
/// f16;`.
pub fn variant_source(path: &str, act: Dtype) -> Result<String> {
    let src = shader_source(path)?;
    match act {
        Dtype::F32 => Ok(src),
        Dtype::F16 => {
            let n = src.lines().filter(|l| l.trim() == ACT_ALIAS_F32).count();
            if n != 1 {
                return Err(Error::Shader {
                    shader: path.into(),
                    msg: format!(
                        "an f16 variant needs exactly one `{ACT_ALIAS_F32}` line, found {n}"
                    ),
                });
            }
            let mut out = String::from("enable f16;\n");
            for line in src.lines() {
                if line.trim() == ACT_ALIAS_F32 {
                    out.push_str("alias act_t = f16;");
                } else {
                    out.push_str(line);
                }
                out.push('\n');
            }
            Ok(out)
        }
    }
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
    /// The storage bindings (numbered as in WGSL: 1, 2, ...) whose element type is the
    /// shader's `act_t`: activations and activation gradients, f16 in the kernel's f16
    /// variant. Empty: the kernel has only its f32 form. The recorder picks the variant
    /// from the tensors bound there (all f32 or all f16) and refuses an f16 tensor
    /// anywhere else; `tests/kernel_contract.rs` reflects the f16 variant and requires
    /// exactly these bindings to hold f16.
    pub f16_bindings: &'static [u32],
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
                f16_bindings: &[],
            },
            _params: PhantomData,
        }
    }

    /// The same kernel with an f16 variant whose `act_t` bindings are `bindings` (see
    /// [`KernelDef::f16_bindings`]).
    pub const fn with_f16(mut self, bindings: &'static [u32]) -> Self {
        self.def.f16_bindings = bindings;
        self
    }

    /// The untyped definition (what registries and tests list).
    pub const fn def(&self) -> &KernelDef {
        &self.def
    }
}

impl KernelDef {
    /// The storage precisions this kernel is built in: f32, and f16 when it has an f16
    /// variant.
    pub fn variants(&self) -> &'static [Dtype] {
        if self.f16_bindings.is_empty() {
            &[Dtype::F32]
        } else {
            &[Dtype::F32, Dtype::F16]
        }
    }

    /// The variant the tensors `bindings` select: f16 when the [`Self::f16_bindings`] hold
    /// f16 tensors, f32 when they hold f32 ones. An error names the binding when they
    /// disagree, or when an f16 tensor is bound where the kernel reads f32 or u32 words
    /// (it would read two halves as one word).
    pub fn variant_for(&self, bindings: &[&Tensor]) -> Result<Dtype> {
        let mut act: Option<(u32, Dtype)> = None;
        for (i, t) in bindings.iter().enumerate() {
            let b = i as u32 + 1;
            if self.f16_bindings.contains(&b) {
                match act {
                    None => act = Some((b, t.dtype())),
                    Some((b0, d)) if d != t.dtype() => {
                        return Err(self.error(format!(
                            "binding {b0} holds an {} tensor and binding {b} an {} one: a \
                             kernel's activations are all f32 or all f16",
                            d.name(),
                            t.dtype().name()
                        )))
                    }
                    Some(_) => {}
                }
            } else if t.dtype() == Dtype::F16 {
                return Err(self.error(format!(
                    "binding {b} takes 4-byte words (f32 or u32) but holds an f16 tensor of \
                     shape {:?}",
                    t.shape()
                )));
            }
        }
        Ok(act.map_or(Dtype::F32, |(_, d)| d))
    }

    fn error(&self, msg: String) -> Error {
        Error::Shader {
            shader: format!("{}::{}", self.shader, self.entry),
            msg,
        }
    }

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

type Key = (&'static str, &'static str, Dtype, Vec<(String, u64)>);

/// Lazily built pipelines keyed by shader, entry, storage variant and override constants.
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<Key, Pipeline>>,
    modules: Mutex<HashMap<(&'static str, Dtype), wgpu::ShaderModule>>,
}

/// Size of the uniform block bound at binding 0 of every kernel, bytes.
pub const PARAMS_BYTES: u64 = 256;

impl Gpu {
    /// The f32 pipeline for `def` with the given override constants, built on first use.
    pub fn pipeline(&self, def: &'static KernelDef, constants: &[(&str, f64)]) -> Result<Pipeline> {
        self.pipeline_variant(def, constants, Dtype::F32)
    }

    /// The pipeline of `def`'s variant storing activations as `act` (see
    /// [`KernelDef::variants`]), built on first use. An f16 variant needs the kernel to
    /// have one and the device to have `SHADER_F16`.
    pub fn pipeline_variant(
        &self,
        def: &'static KernelDef,
        constants: &[(&str, f64)],
        act: Dtype,
    ) -> Result<Pipeline> {
        def.check_constants(constants)?;
        if !def.variants().contains(&act) {
            return Err(def.error(format!(
                "has no {} variant (declare its activation bindings with Kernel::with_f16)",
                act.name()
            )));
        }
        if act == Dtype::F16 && !self.features.shader_f16 {
            return Err(def.error(format!(
                "its f16 variant needs SHADER_F16, which adapter '{}' does not offer; use \
                 --precision f32",
                self.info.name
            )));
        }
        let mut key_consts: Vec<(String, u64)> = constants
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_bits()))
            .collect();
        key_consts.sort();
        let key = (def.shader, def.entry, act, key_consts);
        if let Some(p) = self.pipelines.map.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(def.shader, act)?;
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

    fn module(&self, shader: &'static str, act: Dtype) -> Result<wgpu::ShaderModule> {
        if let Some(m) = self.pipelines.modules.lock().unwrap().get(&(shader, act)) {
            return Ok(m.clone());
        }
        let src = variant_source(shader, act)?;
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
            .insert((shader, act), m.clone());
        Ok(m)
    }
}
