//! Every WGSL file is parsed and validated by naga (no GPU needed), and every kernel, with
//! every combination of override constants effnet uses and in each storage variant it has
//! (f32, and f16 for the mixed-precision kernels), is translated by naga's SPIR-V
//! (Vulkan), MSL (Metal) and HLSL (DX12) back ends. A failure names the shader, entry
//! point, variant, constants and back end.

use effnet::gpu::{shader_source, variant_source, Dtype, KernelDef, SHADER_FILES};

fn validate(path: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    validate_variant(path, Dtype::F32)
}

fn validate_variant(path: &str, act: Dtype) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = variant_source(path, act).unwrap_or_else(|e| panic!("{path}: {e}"));
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{path}: WGSL parse error:\n{}", e.emit_to_string(&src)));
    // Validate the f32 variant with no optional capabilities: effnet's base path must not
    // need any. The f16 variant needs exactly f16 (wgpu's SHADER_F16).
    let caps = match act {
        Dtype::F32 => naga::valid::Capabilities::empty(),
        Dtype::F16 => naga::valid::Capabilities::SHADER_FLOAT16,
    };
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{path}: naga validation error:\n{}", e.emit_to_string(&src)));
    (module, info)
}

#[test]
fn every_wgsl_file_parses_and_validates() {
    let disk: Vec<String> = walk(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/shaders"
    )));
    assert!(!disk.is_empty());
    let embedded: Vec<&str> = SHADER_FILES.iter().map(|(p, _)| *p).collect();
    for f in &disk {
        assert!(
            embedded.contains(&f.as_str()),
            "{f} is not embedded (rebuild)"
        );
        // Include-only pieces are validated as part of the kernels that include them.
        if !is_include(f) {
            validate(f);
        }
    }
}

/// Files that are only pulled into kernels by `//!include`: shared helpers under common/
/// and `*.inc.wgsl` pieces of an op's shaders.
fn is_include(path: &str) -> bool {
    path.starts_with("common/") || path.ends_with(".inc.wgsl")
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "wgsl") {
                out.push(
                    p.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_kernel_file_is_dispatched_somewhere() {
    let used: Vec<&str> = effnet::kernels::all().iter().map(|k| k.shader).collect();
    let mut included = Vec::new();
    for (path, src) in SHADER_FILES {
        for line in src.lines() {
            if let Some(inc) = line.trim().strip_prefix("//!include ") {
                included.push(inc.trim().to_string());
            }
        }
        if is_include(path) {
            continue;
        }
        assert!(used.contains(path), "{path} has no KernelDef: dead shader?");
    }
    for (path, _) in SHADER_FILES {
        if is_include(path) {
            assert!(
                included.iter().any(|i| i == path),
                "{path} is included by no shader: dead include?"
            );
        }
    }
}

fn translate(def: &KernelDef, act: Dtype, consts: &[(&str, f64)]) -> Result<(), String> {
    let (module, info) = validate_variant(def.shader, act);
    let mut pc = naga::back::PipelineConstants::default();
    for (k, v) in consts {
        pc.insert(k.to_string(), *v);
    }
    let ep = (naga::ShaderStage::Compute, def.entry);
    let (m, i) = naga::back::pipeline_constants::process_overrides(&module, &info, Some(ep), &pc)
        .map_err(|e| format!("override processing: {e}"))?;

    // SPIR-V (Vulkan)
    let spv_opts = naga::back::spv::Options::default();
    let spv_pipe = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: def.entry.to_string(),
    };
    naga::back::spv::write_vec(&m, &i, &spv_opts, Some(&spv_pipe))
        .map_err(|e| format!("SPIR-V: {e}"))?;

    // MSL (Metal)
    let msl_opts = naga::back::msl::Options {
        lang_version: (2, 1),
        fake_missing_bindings: true,
        ..Default::default()
    };
    let msl_pipe = naga::back::msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, def.entry.to_string())),
        ..Default::default()
    };
    naga::back::msl::write_string(&m, &i, &msl_opts, &msl_pipe).map_err(|e| format!("MSL: {e}"))?;

    // HLSL (DX12)
    let hlsl_opts = naga::back::hlsl::Options {
        // 16-bit types need shader model 6.2, which wgpu's DX12 backend requires for
        // SHADER_F16; the f32 variants keep 6.0.
        shader_model: match act {
            Dtype::F32 => naga::back::hlsl::ShaderModel::V6_0,
            Dtype::F16 => naga::back::hlsl::ShaderModel::V6_2,
        },
        fake_missing_bindings: true,
        ..Default::default()
    };
    let hlsl_pipe = naga::back::hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, def.entry.to_string())),
    };
    let mut out = String::new();
    naga::back::hlsl::Writer::new(&mut out, &hlsl_opts, &hlsl_pipe)
        .write(&m, &i, None)
        .map_err(|e| format!("HLSL: {e}"))?;
    Ok(())
}

#[test]
fn every_kernel_translates_to_spirv_msl_hlsl() {
    let mut failures = Vec::new();
    let mut n = 0;
    let mut n_f16 = 0;
    for def in effnet::kernels::all() {
        for &act in def.variants() {
            for combo in def.override_combinations() {
                n += 1;
                n_f16 += usize::from(act == Dtype::F16);
                if let Err(e) = translate(def, act, &combo) {
                    failures.push(format!(
                        "{}::{} [{}] {:?}: {e}",
                        def.shader,
                        def.entry,
                        act.name(),
                        combo
                    ));
                }
            }
        }
    }
    assert!(n > 0);
    assert!(n_f16 > 0, "no kernel has an f16 variant");
    assert!(
        failures.is_empty(),
        "translation failures:\n{}",
        failures.join("\n")
    );
}

/// The f16 variant of a kernel is its f32 text with `enable f16;` first and the
/// `act_t` alias rewritten, nothing else; a shader without the alias has no f16 variant.
#[test]
fn f16_variant_rewrites_only_the_alias() {
    let f32_src = shader_source("act/forward.wgsl").unwrap();
    let f16_src = variant_source("act/forward.wgsl", Dtype::F16).unwrap();
    assert_eq!(f16_src.lines().next(), Some("enable f16;"));
    let changed: Vec<(&str, &str)> = f32_src
        .lines()
        .zip(f16_src.lines().skip(1))
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![("alias act_t = f32;", "alias act_t = f16;")],
        "only the alias line differs"
    );
    let e = variant_source("optim/ema.wgsl", Dtype::F16).unwrap_err();
    assert!(
        e.to_string().contains("exactly one `alias act_t = f32;`"),
        "{e}"
    );
}
