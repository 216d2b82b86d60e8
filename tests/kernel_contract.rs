//! The kernel contract, checked with no GPU: every kernel effnet dispatches is reflected
//! from its WGSL with naga and held against its Rust definition: the uniform block's field
//! names, order, offsets, scalar types and size against the `#[repr(C)]` parameter struct;
//! the storage bindings the entry point uses, and their read/write access, against the
//! launcher's binding list; at most 8 storage buffers per stage (WebGPU's default limit);
//! and the override constants the module declares against the values the kernel declares
//! for them; and for a kernel with an f16 variant, that the variant's f16 storage bindings
//! are exactly those its definition lists (`KernelDef::f16_bindings`, from which the
//! recorder picks the variant and refuses misplaced f16 tensors).

use effnet::gpu::{
    shader_source, variant_source, Access, Dtype, KernelDef, Scalar, UniformField, UniformLayout,
};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ScalarKind, StorageAccess, TypeInner};

/// WebGPU's default `maxStorageBuffersPerShaderStage` (docs/portability.md).
const MAX_STORAGE_BUFFERS: usize = 8;

/// A uniform member's type: its scalar and lane count (1, or N for a vecN).
fn field_type(inner: &TypeInner) -> Option<(Scalar, usize)> {
    match inner {
        TypeInner::Vector { size, scalar } => {
            scalar_of(&TypeInner::Scalar(*scalar)).map(|s| (s, *size as usize))
        }
        _ => scalar_of(inner).map(|s| (s, 1)),
    }
}

fn scalar_of(inner: &TypeInner) -> Option<Scalar> {
    match inner {
        TypeInner::Scalar(s) if s.width == 4 => match s.kind {
            ScalarKind::Uint => Some(Scalar::U32),
            ScalarKind::Sint => Some(Scalar::I32),
            ScalarKind::Float => Some(Scalar::F32),
            _ => None,
        },
        _ => None,
    }
}

/// Every way `def` disagrees with its shader (empty when it keeps the contract).
fn contract_errors(def: &KernelDef) -> Vec<String> {
    let mut errs = Vec::new();
    let name = format!("{}::{}", def.shader, def.entry);
    let src = match shader_source(def.shader) {
        Ok(s) => s,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let module = match naga::front::wgsl::parse_str(&src) {
        Ok(m) => m,
        Err(e) => return vec![format!("{name}: {}", e.emit_to_string(&src))],
    };
    let info = match Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module)
    {
        Ok(i) => i,
        Err(e) => return vec![format!("{name}: {}", e.emit_to_string(&src))],
    };
    let Some(ep) = module.entry_points.iter().position(|e| e.name == def.entry) else {
        return vec![format!("{name}: no such entry point")];
    };
    let uses = info.get_entry_point(ep);

    if def.bindings.len() > MAX_STORAGE_BUFFERS {
        errs.push(format!(
            "{name}: {} storage buffers, over the {MAX_STORAGE_BUFFERS} every WebGPU adapter offers",
            def.bindings.len()
        ));
    }

    let mut declared = vec![None; def.bindings.len()];
    let mut uniform_seen = false;
    for (h, g) in module.global_variables.iter() {
        let Some(rb) = &g.binding else { continue };
        let used = !uses[h].is_empty();
        let gname = g.name.as_deref().unwrap_or("?");
        if rb.group != 0 {
            errs.push(format!("{name}: {gname} is in bind group {}", rb.group));
            continue;
        }
        if rb.binding == 0 {
            uniform_seen |= used;
            if g.space != AddressSpace::Uniform {
                errs.push(format!(
                    "{name}: binding 0 ({gname}) is not the uniform block"
                ));
                continue;
            }
            errs.extend(
                check_uniform(&module, g.ty, def.params)
                    .into_iter()
                    .map(|e| format!("{name}: uniform block: {e}")),
            );
            continue;
        }
        let k = rb.binding as usize - 1;
        let access = match g.space {
            AddressSpace::Storage { access } if access == StorageAccess::LOAD => Access::Read,
            AddressSpace::Storage { access }
                if access == StorageAccess::LOAD | StorageAccess::STORE =>
            {
                Access::ReadWrite
            }
            other => {
                errs.push(format!(
                    "{name}: binding {} ({gname}) is {other:?}, not a read or read_write storage buffer",
                    rb.binding
                ));
                continue;
            }
        };
        match def.bindings.get(k) {
            Some(want) => {
                declared[k] = Some(gname.to_string());
                if *want != access {
                    errs.push(format!(
                        "{name}: binding {} ({gname}) is {access:?} in WGSL, {want:?} in the launcher",
                        rb.binding
                    ));
                }
            }
            None if used => errs.push(format!(
                "{name}: the entry point uses binding {} ({gname}) but the launcher binds only {}",
                rb.binding,
                def.bindings.len()
            )),
            None => {}
        }
    }
    if !uniform_seen {
        errs.push(format!(
            "{name}: the entry point does not read its uniform block"
        ));
    }
    for (k, d) in declared.iter().enumerate() {
        if d.is_none() {
            errs.push(format!(
                "{name}: the launcher binds binding {} but the shader declares nothing there",
                k + 1
            ));
        }
    }

    // Override constants: the module's and the kernel's domain name the same constants, and
    // every declared value fits the constant's type.
    let module_overrides: Vec<(String, Option<Scalar>)> = module
        .overrides
        .iter()
        .map(|(_, o)| {
            (
                o.name.clone().unwrap_or_default(),
                scalar_of(&module.types[o.ty].inner),
            )
        })
        .collect();
    for (oname, values) in def.overrides {
        match module_overrides.iter().find(|(n, _)| n == oname) {
            None => errs.push(format!(
                "{name}: override {oname} has declared values but the shader has no such override"
            )),
            Some((_, ty)) => {
                for v in *values {
                    let ok = match ty {
                        Some(Scalar::U32) => {
                            v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(v)
                        }
                        Some(Scalar::I32) => {
                            v.fract() == 0.0 && (i32::MIN as f64..=i32::MAX as f64).contains(v)
                        }
                        Some(Scalar::F32) => v.is_finite(),
                        None => false,
                    };
                    if !ok {
                        errs.push(format!(
                            "{name}: override {oname} = {v} does not fit its type {ty:?}"
                        ));
                    }
                }
            }
        }
    }
    for (oname, _) in &module_overrides {
        if !def.overrides.iter().any(|(n, _)| n == oname) {
            errs.push(format!(
                "{name}: the shader's override {oname} has no declared values (declare the one value \
                 used, so the portability test translates what runs)"
            ));
        }
    }
    errs.extend(f16_binding_errors(def, &name, &src));
    errs
}

/// The storage bindings of `def`'s f16 variant whose array elements are f16 against
/// `def.f16_bindings`; a shader naming `act_t` must declare its f16 bindings.
fn f16_binding_errors(def: &KernelDef, name: &str, f32_src: &str) -> Vec<String> {
    let has_alias = f32_src
        .lines()
        .any(|l| l.trim() == effnet::gpu::kernel::ACT_ALIAS_F32);
    if def.f16_bindings.is_empty() {
        return if has_alias {
            vec![format!(
                "{name}: the shader names act_t but the kernel declares no f16 bindings \
                 (Kernel::with_f16)"
            )]
        } else {
            Vec::new()
        };
    }
    let src = match variant_source(def.shader, Dtype::F16) {
        Ok(s) => s,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let module = match naga::front::wgsl::parse_str(&src) {
        Ok(m) => m,
        Err(e) => return vec![format!("{name} [f16]: {}", e.emit_to_string(&src))],
    };
    let mut half = Vec::new();
    for (_, g) in module.global_variables.iter() {
        let (Some(rb), AddressSpace::Storage { .. }) = (&g.binding, g.space) else {
            continue;
        };
        if let TypeInner::Array { base, .. } = module.types[g.ty].inner {
            if let TypeInner::Scalar(s) = module.types[base].inner {
                if s.kind == ScalarKind::Float && s.width == 2 {
                    half.push(rb.binding);
                }
            }
        }
    }
    half.sort();
    let mut want = def.f16_bindings.to_vec();
    want.sort();
    if half != want {
        vec![format!(
            "{name}: the f16 variant stores f16 at bindings {half:?}, the kernel declares {want:?}"
        )]
    } else {
        Vec::new()
    }
}

/// The WGSL struct at `ty` against the Rust layout.
fn check_uniform(
    module: &naga::Module,
    ty: naga::Handle<naga::Type>,
    rust: &UniformLayout,
) -> Vec<String> {
    let TypeInner::Struct { members, span } = &module.types[ty].inner else {
        return vec!["not a struct".into()];
    };
    let mut errs = Vec::new();
    let wgsl: Vec<UniformField> = members
        .iter()
        .map(|m| {
            let (scalar, lanes) = field_type(&module.types[m.ty].inner).unwrap_or((Scalar::U32, 0));
            UniformField {
                name: "",
                offset: m.offset as usize,
                scalar,
                lanes,
            }
        })
        .collect();
    if members.len() != rust.fields.len() {
        errs.push(format!(
            "WGSL has {} fields, {} has {}",
            members.len(),
            rust.name,
            rust.fields.len()
        ));
    }
    for (i, (m, r)) in members.iter().zip(rust.fields).enumerate() {
        let mname = m.name.as_deref().unwrap_or("?");
        if mname != r.name {
            errs.push(format!(
                "field {i} is `{mname}` in WGSL, `{}` in {}",
                r.name, rust.name
            ));
        }
        if field_type(&module.types[m.ty].inner).is_none() {
            errs.push(format!("field `{mname}` is not a 32-bit scalar or vector"));
        } else if (wgsl[i].scalar, wgsl[i].lanes) != (r.scalar, r.lanes) {
            errs.push(format!(
                "field `{mname}` is {:?} x{} in WGSL, {:?} x{} in {}",
                wgsl[i].scalar, wgsl[i].lanes, r.scalar, r.lanes, rust.name
            ));
        }
        if wgsl[i].offset != r.offset {
            errs.push(format!(
                "field `{mname}` is at byte {} in WGSL, {} in {}",
                wgsl[i].offset, r.offset, rust.name
            ));
        }
    }
    if *span as usize != rust.size {
        errs.push(format!(
            "WGSL struct is {span} bytes, {} is {}",
            rust.name, rust.size
        ));
    }
    errs
}

#[test]
fn every_kernel_keeps_its_contract() {
    let mut errs = Vec::new();
    let kernels = effnet::kernels::all();
    assert!(kernels.len() > 30, "the registry lost kernels");
    for def in &kernels {
        errs.extend(contract_errors(def));
    }
    assert!(
        errs.is_empty(),
        "kernel contract broken:\n{}",
        errs.join("\n")
    );
}

#[test]
fn every_kernel_is_registered_once() {
    let kernels = effnet::kernels::all();
    for (i, a) in kernels.iter().enumerate() {
        for b in &kernels[i + 1..] {
            assert!(
                !(a.shader == b.shader && a.entry == b.entry),
                "{}::{} is registered twice",
                a.shader,
                a.entry
            );
        }
    }
}

/// A copy of a real kernel's definition with one thing changed.
fn altered(
    shader: &str,
    entry: &str,
    change: impl FnOnce(
        &mut (
            Vec<UniformField>,
            Vec<Access>,
            Vec<(&'static str, &'static [f64])>,
        ),
    ),
) -> Vec<String> {
    let real = effnet::kernels::all()
        .into_iter()
        .find(|k| k.shader == shader && k.entry == entry)
        .expect("kernel registered");
    let mut parts = (
        real.params.fields.to_vec(),
        real.bindings.to_vec(),
        real.overrides.to_vec(),
    );
    change(&mut parts);
    let fields: &'static [UniformField] = Box::leak(parts.0.into_boxed_slice());
    // The real size unless fields were added or dropped (then 4 bytes each).
    let size = if fields.len() == real.params.fields.len() {
        real.params.size
    } else {
        fields.len() * 4
    };
    let params: &'static UniformLayout = Box::leak(Box::new(UniformLayout {
        name: "Altered",
        size,
        fields,
    }));
    let def = KernelDef {
        shader: real.shader,
        entry: real.entry,
        bindings: Box::leak(parts.1.into_boxed_slice()),
        overrides: Box::leak(parts.2.into_boxed_slice()),
        params,
        f16_bindings: real.f16_bindings,
    };
    contract_errors(&def)
}

#[test]
fn the_check_catches_each_kind_of_mismatch() {
    let conv = ("conv/forward_igemm.wgsl", "conv_forward_igemm");
    // The unaltered kernel passes.
    assert!(altered(conv.0, conv.1, |_| {}).is_empty());
    // Two parameters swapped (same types: only the names can tell).
    let e = altered(conv.0, conv.1, |(f, _, _)| {
        let (a, b) = (f[1].name, f[2].name);
        f[1].name = b;
        f[2].name = a;
    });
    assert!(e.iter().any(|m| m.contains("field 1 is `oh`")), "{e:?}");
    // A parameter dropped: every later offset shifts.
    let e = altered(conv.0, conv.1, |(f, _, _)| {
        f.remove(3);
        for (i, x) in f.iter_mut().enumerate() {
            x.offset = 4 * i;
        }
    });
    assert!(e.iter().any(|m| m.contains("fields")), "{e:?}");
    // An f32 passed where the shader reads a u32.
    let e = altered("norm/forward.wgsl", "norm_forward", |(f, _, _)| {
        f[0].scalar = Scalar::F32;
    });
    assert!(
        e.iter().any(|m| m.contains("is U32 x1 in WGSL, F32 x1")),
        "{e:?}"
    );
    // A vec4 declared as a scalar (the input normalization's per-channel means).
    let e = altered("input/normalize.wgsl", "normalize", |(f, _, _)| {
        let mean = f.iter_mut().find(|x| x.name == "mean").unwrap();
        mean.lanes = 1;
    });
    assert!(
        e.iter().any(|m| m.contains("is F32 x4 in WGSL, F32 x1")),
        "{e:?}"
    );
    // An output bound read-only, and a binding missing.
    let e = altered(conv.0, conv.1, |(_, b, _)| b[3] = Access::Read);
    assert!(
        e.iter().any(|m| m.contains("ReadWrite in WGSL, Read")),
        "{e:?}"
    );
    let e = altered(conv.0, conv.1, |(_, b, _)| {
        b.pop();
    });
    assert!(e.iter().any(|m| m.contains("uses binding 4")), "{e:?}");
    // A ninth storage buffer.
    let e = altered("norm/forward.wgsl", "norm_forward", |(_, b, _)| {
        b.push(Access::Read)
    });
    assert!(e.iter().any(|m| m.contains("storage buffers")), "{e:?}");
    // An override renamed, and one without declared values.
    let e = altered(conv.0, conv.1, |(_, _, o)| o[0].0 = "BKK");
    assert!(e.iter().any(|m| m.contains("no such override")), "{e:?}");
    assert!(
        e.iter()
            .any(|m| m.contains("override BK has no declared values")),
        "{e:?}"
    );
    // An override value outside its type.
    let e = altered(conv.0, conv.1, |(_, _, o)| o[0].1 = &[-1.0]);
    assert!(e.iter().any(|m| m.contains("does not fit")), "{e:?}");
}

#[test]
fn every_kernel_states_its_bounds() {
    // Shaders run without wgpu's runtime checks, so each one says why its indices are in
    // bounds, its loops finite and its divisors non-zero (in its own text or in a body it
    // includes).
    let missing: Vec<String> = effnet::kernels::all()
        .iter()
        .filter(|d| {
            !shader_source(d.shader)
                .map(|s| s.contains("// Bounds"))
                .unwrap_or(false)
        })
        .map(|d| format!("{}::{}", d.shader, d.entry))
        .collect();
    assert!(missing.is_empty(), "no \"// Bounds\" comment: {missing:?}");
}

/// A misdeclared f16 binding list is caught, and so is a shader naming act_t whose kernel
/// declares no f16 variant.
#[test]
fn the_check_catches_wrong_f16_bindings() {
    let real = effnet::kernels::all()
        .into_iter()
        .find(|k| k.shader == "act/backward.wgsl")
        .expect("kernel registered");
    assert!(contract_errors(real).is_empty());
    let with = |f16_bindings: &'static [u32]| KernelDef {
        f16_bindings,
        bindings: real.bindings,
        overrides: real.overrides,
        ..*real
    };
    let e = contract_errors(&with(&[1, 3]));
    assert!(
        e.iter()
            .any(|m| m.contains("stores f16 at bindings [1, 2, 3], the kernel declares [1, 3]")),
        "{e:?}"
    );
    let e = contract_errors(&with(&[]));
    assert!(
        e.iter().any(|m| m.contains("declares no f16 bindings")),
        "{e:?}"
    );
}
