//! Launchers refuse tensors and sizes their kernels would index out of bounds (or divide
//! by zero) with: the shaders run without wgpu's runtime checks, so these checks are what
//! keeps a wrong call from reading or writing outside a buffer. Each case returns an
//! error (no panic, nothing recorded).
mod common;

use effnet::gpu::{Arena, Recorder};
use effnet::moments::kernels as mk;
use effnet::ops::act::{self, Act};
use effnet::ops::reduce::{self, Axes};
use effnet::train::optim::{self, Optimizer, Segment};

fn err_contains(r: effnet::Result<()>, what: &str) {
    let e = r.expect_err("the launcher must refuse this");
    assert!(e.to_string().contains(what), "{e}");
}

/// GEMM's product of two f16 activations (a weight gradient) takes no bias: refused,
/// naming where the bias gradient comes from, before anything is recorded (and before any
/// f16 pipeline is needed, so on every adapter).
#[test]
fn gemm_of_two_f16_activations_refuses_a_bias() {
    use effnet::gpu::Dtype;
    use effnet::ops::gemm::{gemm, GemmSpec};
    let gpu = common::gpu();
    let s = GemmSpec::new(4, 3, 5);
    let a = gpu.zeros_of(&[4, 5], Dtype::F16).unwrap();
    let b = gpu.zeros_of(&[5, 3], Dtype::F16).unwrap();
    let c = gpu.zeros(&[4, 3]).unwrap();
    let bias = gpu.zeros(&[3]).unwrap();
    let mut rec = Recorder::new(gpu);
    err_contains(
        gemm(&mut rec, &s, &a, &b, Some(&bias), &c),
        "takes no bias; add the bias gradient with reduce::sum_axis",
    );
    assert_eq!(rec.dispatch_count(), 0);
}

#[test]
fn activations_need_equal_lengths() {
    let gpu = common::gpu();
    let x = gpu.zeros(&[100]).unwrap();
    let short = gpu.zeros(&[10]).unwrap();
    let mut rec = Recorder::new(gpu);
    err_contains(
        act::forward(&mut rec, Act::Relu, &x, &short),
        "different sizes",
    );
    err_contains(
        act::backward(&mut rec, Act::Silu, &x, &x, &short),
        "different sizes",
    );
    err_contains(
        act::backward(&mut rec, Act::Silu, &x, &short, &x),
        "different sizes",
    );
    assert_eq!(rec.dispatch_count(), 0);
}

#[test]
fn broadcast_checks_both_tensors() {
    let gpu = common::gpu();
    let ax = Axes { o: 2, m: 5, i: 3 };
    let dy = gpu.zeros(&[6]).unwrap();
    let dx = gpu.zeros(&[30]).unwrap();
    let small = gpu.zeros(&[4]).unwrap();
    let mut rec = Recorder::new(gpu);
    err_contains(
        reduce::broadcast(&mut rec, &small, &dx, ax, 1.0),
        "broadcast",
    );
    err_contains(
        reduce::broadcast(&mut rec, &dy, &small, ax, 1.0),
        "broadcast",
    );
    reduce::broadcast(&mut rec, &dy, &dx, ax, 1.0).unwrap();
    assert_eq!(rec.dispatch_count(), 1);
}

#[test]
fn optimizer_segments_stay_inside_their_chunks() {
    let gpu = common::gpu();
    let arena = |n| Arena::new(gpu, &[vec![n]]).unwrap();
    let (w, g, s1, s2) = (arena(64), arena(64), arena(64), arena(64));
    let opt = Optimizer::parse("sgd").unwrap();
    let run = |segs: &[Segment]| {
        let mut rec = Recorder::new(gpu);
        optim::update(
            &mut rec, &opt, segs, &w.chunks, &g.chunks, &s1.chunks, &s2.chunks, 0.1, 0.0, 1, 1.0,
        )
    };
    let seg = |chunk, start, end| Segment {
        chunk,
        start,
        end,
        decay: false,
    };
    run(&[seg(0, 0, 64)]).unwrap();
    let past = w.chunks[0].len() + 1;
    err_contains(run(&[seg(0, 0, past)]), "outside its arena chunks");
    err_contains(run(&[seg(1, 0, 8)]), "outside its arena chunks");
    err_contains(run(&[seg(0, 9, 8)]), "outside its arena chunks");
    // The weight average needs chunks like the weights'.
    let avg = arena(1000);
    let mut rec = Recorder::new(gpu);
    err_contains(
        optim::ema(&mut rec, &w.chunks, &avg.chunks, 0.9),
        "weight average",
    );
}

#[test]
fn moment_kernels_refuse_empty_or_mismatched_sizes() {
    let gpu = common::gpu();
    let t = gpu.zeros(&[24]).unwrap();
    let none = gpu.zeros(&[0]).unwrap();
    let mut rec = Recorder::new(gpu);
    // An empty image used to divide by zero on the host (and in the shader).
    err_contains(
        mk::wrap_pad(&mut rec, &none, &none, [1, 0, 4, 1], 1),
        "empty image",
    );
    // wo = 0 with ho > 0 used to underflow `wo - 1`.
    let out = gpu.zeros(&[0]).unwrap();
    mk::crop(&mut rec, &t, &out, 1, (4, 6), (2, 0), 1, 0, 1).unwrap();
    // hw = 0 used to divide by zero.
    err_contains(
        mk::seg_scale(&mut rec, &none, &t, None, &none, 0, 3, 0),
        "normalization perturbation",
    );
    // A per-channel tensor over 0 channels would make the shader divide by zero.
    err_contains(
        mk::act_jvp(&mut rec, Act::Relu, &t, &t, Some(&none), &t, 0),
        "0 channels",
    );
    err_contains(
        mk::pn_act(&mut rec, Act::Relu, &t, &none, &none, &t, 0),
        "0 channels",
    );
    assert_eq!(rec.dispatch_count(), 0);
}

#[test]
fn squeeze_excitation_backward_checks_its_saved_gate() {
    use effnet::ops::squeeze_excite::{self as se, SeGrads, SeSaved, SeSpec, SeTemp, SeWeights};
    let gpu = common::gpu();
    let s = SeSpec {
        n: 2,
        h: 3,
        w: 3,
        c: 8,
        hidden: 2,
    };
    let t = |shape: &[usize]| gpu.zeros(shape).unwrap();
    let (x, dy, dx) = (t(&[2, 3, 3, 8]), t(&[2, 3, 3, 8]), t(&[2, 3, 3, 8]));
    let (w1, b1, w2, b2) = (t(&[8, 2]), t(&[2]), t(&[2, 8]), t(&[8]));
    let p = SeWeights {
        w1: &w1,
        b1: &b1,
        w2: &w2,
        b2: &b2,
    };
    let (dw1, db1, dw2, db2) = (t(&[8, 2]), t(&[2]), t(&[2, 8]), t(&[8]));
    let g = SeGrads {
        dw1: &dw1,
        db1: &db1,
        dw2: &dw2,
        db2: &db2,
    };
    // A gate of a block with fewer channels: only the fused dx kernel reads it, past its
    // end.
    let saved = SeSaved {
        gate: t(&[2, 4]),
        ..SeSaved::new(gpu, &s).unwrap()
    };
    let tmp = SeTemp::new(gpu, &s).unwrap();
    let scratch = t(&[s.scratch_len().max(1)]);
    let mut rec = Recorder::new(gpu);
    let r = se::backward(
        &mut rec,
        &s,
        &x,
        &p,
        &saved,
        &dy,
        &dx,
        &g,
        &tmp,
        Some(&scratch),
    );
    let e = r.expect_err("a gate of the wrong size must be refused");
    assert!(e.to_string().contains("gate"), "{e}");
}

#[test]
fn nonfinite_count_needs_its_slot() {
    let gpu = common::gpu();
    let x = gpu.zeros(&[300]).unwrap();
    let counts = gpu.upload_u32(&[0, 0], &[2]).unwrap();
    let mut rec = Recorder::new(gpu);
    err_contains(
        effnet::ops::finite::count_nonfinite(&mut rec, &x, &counts, 2),
        "slot 2",
    );
    effnet::ops::finite::count_nonfinite(&mut rec, &x, &counts, 1).unwrap();
    assert_eq!(rec.dispatch_count(), 1);
}
