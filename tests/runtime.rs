//! The GPU runtime: grids past one dimension, arenas, readback, recorder batching, errors.
mod common;

use effnet::gpu::{Arena, Grid, Recorder};
use effnet::models::efficientnet::EfficientNet;
use effnet::ops::act::{self, Act};
use effnet::{Gpu, GpuOptions};

#[test]
fn grid_linearisation_dims() {
    assert_eq!(Grid::Linear(10).dims(65535), (10, 1, 1));
    assert_eq!(Grid::Linear(65536).dims(65535), (65535, 2, 1));
    assert_eq!(Grid::Linear(100).dims(7), (7, 15, 1));
    assert_eq!(Grid::Linear(0).dims(7), (0, 0, 0));
}

#[test]
fn folded_grid_covers_every_element() {
    // A private device whose grid cap is lowered to 3 workgroups per dimension, so a
    // 10,000-element activation needs a 3 x 14 grid.
    let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
    gpu.set_grid_dim_cap(3);
    let n = 10_000;
    let x: Vec<f32> = (0..n).map(|i| i as f32 - 5000.0).collect();
    let xt = gpu.upload(&x, &[n]).unwrap();
    let yt = gpu.zeros(&[n]).unwrap();
    let mut rec = Recorder::new(&gpu);
    act::forward(&mut rec, Act::Relu, &xt, &yt).unwrap();
    rec.submit().unwrap().wait(&gpu).unwrap();
    let y = gpu.read(&yt).unwrap();
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(a.max(0.0), *b);
    }
}

#[test]
fn tensor_larger_than_one_grid_dimension() {
    // 65,536 workgroups of 256: past the 65,535 per-dimension limit of every adapter.
    let gpu = common::gpu();
    let n = 65_536 * 256 + 17;
    let x: Vec<f32> = (0..n).map(|i| ((i % 7) as f32) - 3.0).collect();
    let xt = gpu.upload(&x, &[n]).unwrap();
    let yt = gpu.zeros(&[n]).unwrap();
    let mut rec = Recorder::new(gpu);
    act::forward(&mut rec, Act::Relu, &xt, &yt).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let y = gpu.read(&yt).unwrap();
    assert_eq!(y[n - 1], x[n - 1].max(0.0));
    assert!(x.iter().zip(&y).all(|(a, b)| a.max(0.0) == *b));
}

#[test]
fn arena_packs_aligned_and_roundtrips() {
    let gpu = common::gpu();
    let shapes = vec![vec![3, 3], vec![5], vec![2, 2, 2], vec![1]];
    let arena = Arena::new(gpu, &shapes).unwrap();
    let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
    for (t, s) in arena.tensors.iter().zip(&shapes) {
        assert_eq!(t.shape(), &s[..]);
    }
    for (k, t) in arena.tensors.iter().enumerate() {
        let v: Vec<f32> = (0..t.len()).map(|i| (k * 100 + i) as f32).collect();
        gpu.write_f32(t, &v).unwrap();
    }
    for (k, t) in arena.tensors.iter().enumerate() {
        let v = gpu.read(t).unwrap();
        assert_eq!(
            v,
            (0..t.len())
                .map(|i| (k * 100 + i) as f32)
                .collect::<Vec<_>>()
        );
    }
    assert!(arena
        .tensors
        .iter()
        .all(|t| format!("{t:?}").contains("offset")));
    let _ = align;
}

#[test]
fn many_dispatches_one_submit_and_async_readback() {
    // 600 dispatches cross several uniform pages; the chain x -> relu -> ... must hold.
    let gpu = common::gpu();
    let x: Vec<f32> = (0..1000).map(|i| i as f32 - 500.0).collect();
    let a = gpu.upload(&x, &[1000]).unwrap();
    let b = gpu.zeros(&[1000]).unwrap();
    let mut rec = Recorder::new(gpu);
    for k in 0..600 {
        let (src, dst) = if k % 2 == 0 { (&a, &b) } else { (&b, &a) };
        act::forward(&mut rec, Act::Relu, src, dst).unwrap();
    }
    assert_eq!(rec.dispatch_count(), 600);
    rec.submit().unwrap();
    let rb = gpu.read_async(&a).unwrap();
    let y = rb.wait(gpu).unwrap();
    assert!(x.iter().zip(&y).all(|(p, q)| p.max(0.0) == *q));
}

#[test]
fn profiling_reports_each_dispatch() {
    let gpu = common::gpu();
    if !gpu.features.timestamp_query {
        return;
    }
    let x = gpu.upload(&[1.0; 64], &[64]).unwrap();
    let y = gpu.zeros(&[64]).unwrap();
    let mut rec = Recorder::new(gpu).with_profiling(true);
    rec.set_tag("layer0");
    act::forward(&mut rec, Act::Silu, &x, &y).unwrap();
    act::forward(&mut rec, Act::Relu, &y, &x).unwrap();
    let t = rec.submit().unwrap().timings(gpu).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].label, "act_forward");
    assert_eq!(t[0].tag, "layer0");
    assert!(t.iter().all(|k| k.ns >= 0.0));
}

#[test]
fn user_errors_are_clear() {
    let gpu = common::gpu();
    // Shape mismatch.
    let e = gpu.upload(&[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(e.to_string().contains("do not fill shape"), "{e}");
    // A tensor over the adapter's binding limit.
    let too_big = (gpu.max_binding_bytes() / 4 + 1) as usize;
    let e = gpu.zeros(&[too_big]).unwrap_err();
    assert!(e.to_string().contains("Reduce the batch size"), "{e}");
    // Unknown adapter.
    let e = Gpu::new(&GpuOptions {
        adapter: Some("no-such-adapter-xyz".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("no adapter name contains"), "{e}");
    // Unknown backend.
    let e = Gpu::new(&GpuOptions {
        backend: Some("nonsense".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("unknown backend"), "{e}");
}

/// f16 tensors: uploads round to nearest and read back widened exactly, odd lengths
/// (a padding half) survive upload, copy, clear and readback, and the tensor's size and
/// cost count two bytes an element.
#[test]
fn f16_tensors_roundtrip() {
    use effnet::gpu::Dtype;
    let gpu = common::gpu();
    if !gpu.features.shader_f16 {
        return;
    }
    let v = [1.0f32, -2.5, 65504.0, 1.0 / 3.0, 1e-8, 7e4, 0.0];
    let t = gpu.upload_as(&v, &[7], Dtype::F16).unwrap();
    assert_eq!((t.dtype(), t.bytes()), (Dtype::F16, 14));
    let back = gpu.read(&t).unwrap();
    let want: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    assert_eq!(back, want);
    assert_eq!(back[2], 65504.0);
    assert!(
        back[5].is_infinite(),
        "past f16's range: inf, as a kernel store makes it"
    );
    let u = gpu.zeros_of(&[7], Dtype::F16).unwrap();
    let mut rec = Recorder::new(gpu);
    rec.copy(&t, &u).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    assert_eq!(gpu.read(&u).unwrap(), want);
    let mut rec = Recorder::new(gpu);
    rec.clear(&u);
    rec.submit().unwrap().wait(gpu).unwrap();
    assert_eq!(gpu.read(&u).unwrap(), vec![0.0; 7]);
    // A copy across element types is refused, and so is reading f16 as u32.
    let f = gpu.zeros(&[7]).unwrap();
    let mut rec = Recorder::new(gpu);
    let e = rec.copy(&t, &f).unwrap_err().to_string();
    assert!(e.contains("7 f16 elements into 7 f32"), "{e}");
    assert!(gpu.read_u32(&t).is_err());
}

/// The recorder picks a kernel's variant from the tensors bound to its activation
/// bindings and refuses mixtures: f16 and f32 activations in one dispatch, or an f16
/// tensor where the kernel reads 4-byte words.
#[test]
fn kernel_variant_follows_the_tensors() {
    use effnet::gpu::Dtype;
    use effnet::ops::reduce::{self, Axes};
    let gpu = common::gpu();
    if !gpu.features.shader_f16 {
        return;
    }
    let x = gpu.upload_as(&[-1.0, 0.5, 2.0], &[3], Dtype::F16).unwrap();
    let y = gpu.zeros_of(&[3], Dtype::F16).unwrap();
    let y32 = gpu.zeros(&[3]).unwrap();
    let mut rec = Recorder::new(gpu);
    act::forward(&mut rec, Act::Relu, &x, &y).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    assert_eq!(gpu.read(&y).unwrap(), vec![0.0, 0.5, 2.0]);
    let mut rec = Recorder::new(gpu);
    let e = act::forward(&mut rec, Act::Relu, &x, &y32)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("binding 1 holds an f16 tensor and binding 2 an f32 one"),
        "{e}"
    );
    // The sum's output is f32 by contract: an f16 one is refused.
    let ax = Axes { o: 1, m: 3, i: 1 };
    let out16 = gpu.zeros_of(&[1], Dtype::F16).unwrap();
    let e = reduce::sum_axis(&mut rec, &x, None, &out16, ax, 1.0, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("binding 3 takes 4-byte words"), "{e}");
    let out = gpu.zeros(&[1]).unwrap();
    reduce::sum_axis(&mut rec, &x, None, &out, ax, 1.0, None).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    assert_eq!(gpu.read(&out).unwrap(), vec![1.5]);
}

/// A device opened without SHADER_F16 (the feature masked, as on an adapter without
/// it): `--precision mixed` is refused with the reason and the fix, an f16 variant does
/// not build, and the f16 harness cases are skipped rather than failed.
#[test]
fn mixed_precision_needs_shader_f16() {
    use effnet::gpu::{Dtype, Precision};
    let gpu = Gpu::new(&GpuOptions {
        masked_features: wgpu::Features::SHADER_F16,
        ..GpuOptions::from_env()
    })
    .unwrap();
    assert!(!gpu.features.shader_f16);
    assert!(Precision::F32.check_supported(&gpu).is_ok());
    let e = Precision::Mixed
        .check_supported(&gpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--precision mixed needs f16 in shaders (wgpu feature SHADER_F16)")
            && e.contains("use --precision f32"),
        "{e}"
    );
    let x = gpu.zeros_of(&[4], Dtype::F16).unwrap();
    let y = gpu.zeros_of(&[4], Dtype::F16).unwrap();
    let mut rec = Recorder::new(&gpu);
    let e = act::forward(&mut rec, Act::Silu, &x, &y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs SHADER_F16"), "{e}");
    let f16_case = effnet::ops::cases()
        .into_iter()
        .find(|c| c.activations() == Dtype::F16)
        .expect("an f16 case");
    assert!(effnet::ops::check(&gpu, f16_case.as_ref(), 1)
        .unwrap()
        .is_empty());
    // The model refuses to build in mixed precision, before allocating anything.
    let mut cfg = effnet::models::Preset {
        scale: 0,
        g16: true,
    }
    .config();
    cfg.width = 0.25;
    cfg.depth = 0.25;
    let size = effnet::models::ImageSize::square(16);
    let e = match EfficientNet::with_precision(&gpu, &cfg, 2, size, Precision::Mixed) {
        Ok(_) => panic!("a mixed-precision model built without SHADER_F16"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("SHADER_F16") && e.contains("--precision f32"),
        "{e}"
    );
    // --precision mixed is a clear error; auto falls back to f32 and says why.
    use effnet::cli::precision::{choose, PrecisionArg};
    let e = choose(&gpu, PrecisionArg::Mixed).unwrap_err().to_string();
    assert!(e.contains("--precision mixed needs f16"), "{e}");
    let auto = choose(&gpu, PrecisionArg::Auto).unwrap();
    assert_eq!(auto.precision, Precision::F32);
    assert!(auto.header().contains("no SHADER_F16"), "{}", auto.header());
    // `effnet train --precision mixed` stops at the flag, naming it.
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        a: effnet::cli::train::TrainArgs,
    }
    let dir = std::env::temp_dir().join(format!("effnet-nof16-{}", std::process::id()));
    let a = <Wrap as clap::Parser>::parse_from([
        "t",
        "--precision",
        "mixed",
        "--run-dir",
        dir.to_str().unwrap(),
    ])
    .a;
    let e = effnet::cli::train::run(&gpu, &a).unwrap_err().to_string();
    assert!(e.contains("--precision mixed needs f16"), "{e}");
    assert!(!dir.exists(), "the refused run created its folder");
}
