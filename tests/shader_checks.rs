//! Shaders run without wgpu's runtime checks (no index clamping, no loop counters, no
//! guarded division) because every kernel is in bounds by construction (each shader's
//! "Bounds" comment). The proof: every harness case the selftest runs, and a training
//! step of a small model, give the same bits with the checks and without them. A hidden
//! out-of-bounds index into a workgroup or private array would read the clamped element
//! in one run and another in the other; a division by zero or a runaway loop would differ
//! too. (Injecting one out-of-bounds workgroup read into `reduce/sum_axis.wgsl` makes the
//! first test fail.)
//!
//! What this cannot show on lavapipe: storage-buffer indices. wgpu leaves those to the
//! driver when it offers robustBufferAccess2 (lavapipe and most desktop Vulkan drivers
//! do), in both modes, so an out-of-bounds buffer read returns zero either way. Those
//! indices rest on the shaders' bounds arguments and on the harness, which compares every
//! output with an f64 reference on shapes that are not tile multiples and poisons outputs
//! with NaN before the kernels overwrite them. On Metal, DX12 and Vulkan drivers without
//! robustBufferAccess2, the checks would clamp buffer indices too; run
//! `EFFNET_SHADER_CHECKS=1 effnet selftest` there against a plain run to compare.

use std::sync::OnceLock;

use effnet::cli::bench_train::Bencher;
use effnet::gpu::Precision;
use effnet::models::{ModelConfig, NormChoice};
use effnet::nn::model::Trainable;
use effnet::ops::harness::gpu_results;
use effnet::{Gpu, GpuOptions};

fn device(checks: bool) -> Gpu {
    let g = Gpu::new(&GpuOptions {
        shader_checks: Some(checks),
        ..GpuOptions::from_env()
    })
    .expect("a GPU adapter");
    assert_eq!(g.shader_checks, checks);
    g
}

/// The device pair both tests share, with the runtime checks and without. Each device
/// builds a pipeline once (its cache is per device), so the kernels the training step and
/// the harness cases have in common are compiled once per mode, not once per test; on
/// lavapipe, compiling pipelines (LLVM) is most of this binary's time.
fn devices() -> &'static (Gpu, Gpu) {
    static DEVICES: OnceLock<(Gpu, Gpu)> = OnceLock::new();
    DEVICES.get_or_init(|| (device(true), device(false)))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_case_is_bit_identical_with_and_without_runtime_checks() {
    let (checked, unchecked) = devices();
    let f16 = checked.features.shader_f16 && unchecked.features.shader_f16;
    if !f16 {
        println!(
            "skipping the /f16 cases: adapter '{}' does not offer SHADER_F16",
            checked.info.name
        );
    }
    let (mut n, mut skipped) = (0, 0);
    let mut differ = Vec::new();
    for case in effnet::ops::cases() {
        if !f16 && case.name().ends_with("/f16") {
            skipped += 1;
            continue;
        }
        let a = gpu_results(checked, case.as_ref(), effnet::selftest::SEED).unwrap();
        let b = gpu_results(unchecked, case.as_ref(), effnet::selftest::SEED).unwrap();
        let same_fwd =
            a.0.len() == b.0.len() && a.0.iter().zip(&b.0).all(|(x, y)| bits(x) == bits(y));
        let same_bwd = a.1.len() == b.1.len()
            && a.1.iter().zip(&b.1).all(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => bits(x) == bits(y),
                (None, None) => true,
                _ => false,
            });
        if !(same_fwd && same_bwd) {
            differ.push(case.name());
        }
        n += 1;
    }
    assert!(n > 70, "only {n} cases ({skipped} /f16 cases skipped)");
    assert!(
        differ.is_empty(),
        "results differ with and without runtime checks (a kernel reads or writes out of \
         bounds, divides by zero or loops without end): {differ:?}"
    );
}

/// The loss, every weight and the optimizer state after one training step.
fn one_step(gpu: &Gpu, norm: NormChoice) -> Vec<Vec<u32>> {
    let mut cfg = ModelConfig::preset("b0-g16").unwrap();
    cfg.width = 0.25;
    cfg.depth = 0.25;
    cfg.norm = norm;
    cfg.classes = 10;
    let mut b = Bencher::from_config(gpu, &cfg, 2, 32, Precision::F32).unwrap();
    b.train_step(gpu, 1).unwrap().wait(gpu).unwrap();
    let m = b.model();
    let mut out = vec![bits(&gpu.read(m.loss_rows()).unwrap())];
    let s = m.store();
    for arena in [&s.w, &s.s1, &s.s2, &s.ema] {
        for c in &arena.chunks {
            out.push(bits(&gpu.read(c).unwrap()));
        }
    }
    out
}

#[test]
fn a_training_step_is_bit_identical_with_and_without_runtime_checks() {
    let (checked, unchecked) = devices();
    for norm in [NormChoice::Bn, NormChoice::LnPn] {
        let a = one_step(checked, norm);
        let b = one_step(unchecked, norm);
        assert_eq!(a.len(), b.len());
        assert!(
            a == b,
            "{norm:?}: a training step differs with and without runtime checks"
        );
    }
}
