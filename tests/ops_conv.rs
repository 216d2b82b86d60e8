//! Grouped convolutions, GEMM / linear, global average pooling and squeeze-excitation:
//! values and gradients against the f64 references (and the references against finite
//! differences) through the harness, plus the kernel-choice rules, the PyTorch weight
//! layout, determinism, dispatch counts, folded grids and user errors.
mod common;

use effnet::gpu::Recorder;
use effnet::ops::conv::{self, ConvCase, ConvKernel, ConvSpec, Padding};
use effnet::ops::gemm::{self, GemmSpec};
use effnet::ops::{check, OpCase};
use effnet::util::Rng;
use effnet::{Gpu, GpuOptions};

#[allow(clippy::too_many_arguments)]
fn spec(
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
) -> ConvSpec {
    ConvSpec {
        n,
        h,
        w,
        cin,
        cout,
        k,
        stride,
        groups,
        bias: false,
        padding: Padding::Symmetric,
    }
}

#[test]
fn gemm_transposes_accumulate_bias_ragged() {
    common::assert_cases_pass("gemm[");
}

#[test]
fn linear_layers() {
    common::assert_cases_pass("linear[");
}

#[test]
fn conv_depthwise() {
    common::assert_cases_pass("conv[dw");
}

#[test]
fn conv_grouped_dense_and_pointwise() {
    common::assert_cases_pass("conv[grp");
}

/// TensorFlow "SAME" padding in the three directions of every kernel family, against the
/// f64 reference and finite differences.
#[test]
fn conv_tf_same_padding() {
    common::assert_cases_pass("conv[tf-dw");
    common::assert_cases_pass("conv[tf-grp");
}

/// The zeros "SAME" puts above / left of an axis, as TensorFlow computes them:
/// `total = max((ceil(n / s) - 1) * s + k - n, 0)`, `total / 2` before, the rest after.
#[test]
fn tf_same_padding_amounts() {
    // (size, k, stride, zeros before); symmetric is always k / 2.
    for (n, k, st, before) in [
        (224, 3, 2, 0),
        (225, 3, 2, 1),
        (112, 5, 2, 1),
        (113, 5, 2, 2),
        (7, 5, 1, 2),
        (28, 3, 1, 1),
        (1, 3, 2, 1),
        (2, 3, 2, 0),
        (8, 1, 2, 0),
    ] {
        assert_eq!(
            Padding::TfSame.before(n, k, st),
            before,
            "n {n} k {k} s {st}"
        );
        assert_eq!(Padding::Symmetric.before(n, k, st), k / 2);
    }
    let s = ConvSpec {
        padding: Padding::TfSame,
        ..spec(1, 10, 9, 4, 4, 3, 2, 4)
    };
    assert_eq!((s.pad_top(), s.pad_left()), (0, 1));
    assert_eq!(s.out_hw(), (5, 5));
}

#[test]
fn global_average_pool() {
    common::assert_cases_pass("gap[");
}

#[test]
fn squeeze_excitation() {
    common::assert_cases_pass("squeeze_excite[");
}

#[test]
fn kernel_choice_rules() {
    use ConvKernel::*;
    // Depthwise: direct everywhere.
    assert_eq!(
        spec(2, 8, 8, 96, 96, 3, 2, 96).kernels(),
        [Direct, Direct, Direct]
    );
    // G16 (and G8): implicit GEMM everywhere.
    assert_eq!(spec(2, 8, 8, 64, 64, 5, 1, 4).kernels(), [ImplicitGemm; 3]);
    assert_eq!(spec(2, 8, 8, 64, 64, 3, 1, 8).kernels(), [ImplicitGemm; 3]);
    // The stem (3 input channels): backward data is direct.
    assert_eq!(
        spec(2, 8, 8, 3, 32, 3, 2, 1).kernels(),
        [ImplicitGemm, Direct, ImplicitGemm]
    );
    // 1x1 dense: plain GEMMs (weight gradient on the split implicit GEMM).
    assert_eq!(
        spec(2, 8, 8, 16, 96, 1, 1, 1).kernels(),
        [Gemm, Gemm, ImplicitGemm]
    );
}

#[test]
fn spec_geometry_and_validation() {
    let s = spec(1, 7, 8, 6, 9, 3, 2, 3);
    assert_eq!(s.out_hw(), (4, 4));
    assert_eq!(s.weight_shape(), vec![3, 3, 2, 9]);
    assert_eq!(s.macs(), 16 * 9 * 9 * 2);
    assert!(s.validate().is_ok());
    for bad in [
        ConvSpec { k: 4, ..s },
        ConvSpec { stride: 3, ..s },
        ConvSpec { groups: 4, ..s },
        ConvSpec { groups: 0, ..s },
        ConvSpec { h: 0, ..s },
    ] {
        assert!(bad.validate().is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn pytorch_weight_layout() {
    let s = ConvSpec {
        bias: true,
        ..spec(1, 5, 4, 6, 9, 3, 1, 3)
    };
    let n = s.weight_len();
    let pt: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let ours = conv::weight_from_pytorch(&s, &pt);
    assert_eq!(conv::weight_to_pytorch(&s, &ours), pt);
    // PyTorch [co, ci, ky, kx] = [7, 1, 2, 0] lands at ours [ky, kx, ci, co].
    let (gi, k) = (2, 3);
    let pt_idx = ((7 * gi + 1) * k + 2) * k;
    assert_eq!(ours[((2 * k) * gi + 1) * 9 + 7], pt[pt_idx]);

    // The reference equals a convolution written directly in PyTorch's layout.
    let mut rng = Rng::new(3);
    let x = rng.normals_f32(s.n * s.h * s.w * s.cin, 1.0);
    let wp = rng.normals_f32(n, 1.0);
    let b = rng.normals_f32(s.cout, 1.0);
    let w: Vec<f64> =
        conv::weight_from_pytorch(&s, &wp.iter().map(|&v| v as f32).collect::<Vec<_>>())
            .iter()
            .map(|&v| v as f64)
            .collect();
    let y = conv::forward_ref(&s, &x, &w, Some(&b));
    let (ho, wo) = s.out_hw();
    for oy in 0..ho {
        for ox in 0..wo {
            for co in 0..s.cout {
                let g = co / 3;
                let mut acc = b[co];
                for ci in 0..gi {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) =
                                (oy as isize + ky as isize - 1, ox as isize + kx as isize - 1);
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            let xi = ((iy as usize) * s.w + ix as usize) * s.cin + g * gi + ci;
                            acc += x[xi] * wp[((co * gi + ci) * k + ky) * k + kx];
                        }
                    }
                }
                let yi = (oy * wo + ox) * s.cout + co;
                assert!((y[yi] - acc).abs() < 1e-9, "y[{yi}] = {} vs {acc}", y[yi]);
            }
        }
    }
}

#[test]
fn one_dispatch_per_direction_whatever_the_groups() {
    let gpu = common::gpu();
    for s in [
        spec(1, 9, 9, 128, 128, 3, 1, 128),
        spec(1, 9, 9, 256, 256, 3, 2, 16),
        spec(1, 9, 9, 64, 64, 5, 1, 1),
    ] {
        let x = gpu.zeros(&s.in_shape()).unwrap();
        let w = gpu.zeros(&s.weight_shape()).unwrap();
        let y = gpu.zeros(&s.out_shape()).unwrap();
        let scratch = gpu.zeros(&[s.scratch_len().max(1)]).unwrap();
        let mut rec = Recorder::new(gpu);
        conv::forward(&mut rec, &s, &x, &w, None, &y).unwrap();
        assert_eq!(rec.dispatch_count(), 1);
        conv::backward_data(&mut rec, &s, &y, &w, &x).unwrap();
        assert_eq!(rec.dispatch_count(), 2);
        conv::backward_weight(&mut rec, &s, &x, &y, &w, None, Some(&scratch)).unwrap();
        let passes = if s.scratch_len() > 0 { 2 } else { 1 };
        assert_eq!(rec.dispatch_count(), 2 + passes, "{}", s.label());
        rec.submit().unwrap().wait(gpu).unwrap();
    }
}

#[test]
fn split_weight_gradient_is_deterministic() {
    let gpu = common::gpu();
    for s in [
        ConvSpec {
            bias: true,
            ..spec(2, 30, 30, 32, 32, 3, 1, 2)
        },
        ConvSpec {
            bias: true,
            ..spec(2, 33, 31, 6, 6, 5, 1, 6)
        },
    ] {
        assert!(s.wgrad_splits() > 1, "{} should split", s.label());
        let mut rng = Rng::new(9);
        let xs: Vec<f32> = rng
            .normals_f32(s.n * s.h * s.w * s.cin, 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let gs: Vec<f32> = rng
            .normals_f32(s.out_pixels() * s.cout, 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let x = gpu.upload(&xs, &s.in_shape()).unwrap();
        let g = gpu.upload(&gs, &s.out_shape()).unwrap();
        let scratch = gpu.zeros(&[s.scratch_len()]).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let dw = gpu.zeros(&s.weight_shape()).unwrap();
            let db = gpu.zeros(&[s.cout]).unwrap();
            let mut rec = Recorder::new(gpu);
            conv::backward_weight(&mut rec, &s, &x, &g, &dw, Some(&db), Some(&scratch)).unwrap();
            rec.submit().unwrap().wait(gpu).unwrap();
            runs.push((gpu.read(&dw).unwrap(), gpu.read(&db).unwrap()));
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&runs[0].0), bits(&runs[1].0));
        assert_eq!(bits(&runs[0].1), bits(&runs[1].1));
    }
}

#[test]
fn folded_grids_cover_every_tile() {
    // A private device whose grid is capped at 3 workgroups per dimension: every kernel
    // (direct, implicit GEMM, split weight gradient and its reduction, GEMM) runs on a
    // linearised 2-D grid.
    let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
    gpu.set_grid_dim_cap(3);
    let cases: Vec<Box<dyn OpCase>> = vec![
        Box::new(ConvCase::new(ConvSpec {
            bias: true,
            ..spec(2, 37, 35, 5, 5, 3, 1, 5)
        })),
        Box::new(ConvCase::new(spec(2, 21, 19, 32, 32, 3, 2, 2))),
        Box::new(ConvCase::new(ConvSpec {
            bias: true,
            ..spec(2, 9, 7, 13, 70, 1, 1, 1)
        })),
    ];
    for case in &cases {
        for r in check(&gpu, case.as_ref(), 7).unwrap() {
            assert!(r.pass, "{}", effnet::selftest::format_line(&r));
        }
    }
}

#[test]
fn user_errors_are_clear() {
    let gpu = common::gpu();
    let s = ConvSpec {
        bias: true,
        ..spec(2, 40, 40, 8, 8, 3, 1, 8)
    };
    assert!(s.scratch_len() > 0);
    let x = gpu.zeros(&s.in_shape()).unwrap();
    let w = gpu.zeros(&s.weight_shape()).unwrap();
    let b = gpu.zeros(&[s.cout]).unwrap();
    let y = gpu.zeros(&s.out_shape()).unwrap();
    let mut rec = Recorder::new(gpu);
    let e = conv::backward_weight(&mut rec, &s, &x, &y, &w, Some(&b), None).unwrap_err();
    assert!(e.to_string().contains("scratch"), "{e}");
    let e = conv::forward(&mut rec, &s, &b, &w, Some(&b), &y).unwrap_err();
    assert!(e.to_string().contains("shape"), "{e}");
    let e = conv::forward(&mut rec, &s, &x, &w, None, &y).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    let e = conv::forward(&mut rec, &ConvSpec { k: 2, ..s }, &x, &w, Some(&b), &y).unwrap_err();
    assert!(e.to_string().contains("odd"), "{e}");
    let g = GemmSpec::new(3, 4, 5);
    let a = gpu.zeros(&[3, 6]).unwrap();
    let e = gemm::gemm(&mut rec, &g, &a, &a, None, &a).unwrap_err();
    assert!(e.to_string().contains("gemm"), "{e}");
}
