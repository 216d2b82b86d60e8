//! Fused optimizer steps against the f64 reference, and schedules.
mod common;

use effnet::gpu::{Arena, Recorder};
use effnet::train::optim::{self, Optimizer, Segment};
use effnet::train::schedule::{Decay, Schedule};
use effnet::util::Rng;

fn run(opt: Optimizer) {
    let gpu = common::gpu();
    let n = 1000;
    let shapes = vec![vec![n]];
    let (w, g, s1, s2) = (
        Arena::new(gpu, &shapes).unwrap(),
        Arena::new(gpu, &shapes).unwrap(),
        Arena::new(gpu, &shapes).unwrap(),
        Arena::new(gpu, &shapes).unwrap(),
    );
    let mut rng = Rng::new(3);
    let mut hw: Vec<f64> = rng.normals_f32(n, 1.0);
    let mut h1 = vec![0.0; n];
    let mut h2 = vec![opt.s2_init() as f64; n];
    gpu.write_f32(
        &w.tensors[0],
        &hw.iter().map(|&v| v as f32).collect::<Vec<_>>(),
    )
    .unwrap();
    gpu.write_f32(&s2.tensors[0], &vec![opt.s2_init(); n])
        .unwrap();
    // Decay on the first 600 elements only (weights), none on the rest (norm, bias).
    let segs = vec![
        Segment {
            chunk: 0,
            start: 0,
            end: 600,
            decay: true,
        },
        Segment {
            chunk: 0,
            start: 600,
            end: n,
            decay: false,
        },
    ];
    let (lr, wd) = (0.05f32, 0.01f32);
    for t in 1..=5u64 {
        let grad: Vec<f64> = rng.normals_f32(n, 1.0);
        gpu.write_f32(
            &g.tensors[0],
            &grad.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        )
        .unwrap();
        let mut rec = Recorder::new(gpu);
        optim::update(
            &mut rec, &opt, &segs, &w.chunks, &g.chunks, &s1.chunks, &s2.chunks, lr, wd, t, 1.0,
        )
        .unwrap();
        rec.submit().unwrap().wait(gpu).unwrap();
        for i in 0..n {
            let d = if i < 600 { wd as f64 } else { 0.0 };
            let (a, b, c) = opt.step_ref(hw[i], grad[i], h1[i], h2[i], lr as f64, d, t);
            hw[i] = a;
            h1[i] = b;
            h2[i] = c;
        }
    }
    let got = gpu.read(&w.tensors[0]).unwrap();
    let err = effnet::ops::harness::normalized_error(
        &got.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &hw,
    );
    assert!(err < 1e-5, "{opt:?}: error {err}");
}

#[test]
fn sgd_momentum() {
    run(Optimizer::parse("sgd").unwrap());
}

#[test]
fn sgd_nesterov() {
    run(Optimizer::parse("nesterov").unwrap());
}

#[test]
fn rmsprop_tf() {
    run(Optimizer::parse("rmsprop").unwrap());
}

#[test]
fn adamw() {
    run(Optimizer::parse("adamw").unwrap());
}

#[test]
fn ema_update() {
    let gpu = common::gpu();
    let w = gpu.upload(&[1.0, 2.0, 3.0], &[3]).unwrap();
    let a = gpu.upload(&[0.0, 0.0, 0.0], &[3]).unwrap();
    let mut rec = Recorder::new(gpu);
    optim::ema(&mut rec, &[w], std::slice::from_ref(&a), 0.75).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    assert_eq!(gpu.read(&a).unwrap(), vec![0.25, 0.5, 0.75]);
}

#[test]
fn schedules() {
    let s = Schedule {
        lr: 1.0,
        warmup_epochs: 1.0,
        decay: Decay::Exponential {
            rate: 0.97,
            every: 2.4,
        },
        steps_per_epoch: 10,
        total_steps: 100,
    };
    assert!((s.lr_at(0) - 0.1).abs() < 1e-12);
    assert!((s.lr_at(9) - 1.0).abs() < 1e-12);
    assert_eq!(s.lr_at(10), 1.0);
    assert!((s.lr_at(10 + 24) - 0.97).abs() < 1e-12);
    assert!((s.lr_at(10 + 48) - 0.97 * 0.97).abs() < 1e-12);
    let c = Schedule {
        decay: Decay::Cosine,
        ..s
    };
    assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
    assert!((c.lr_at(55) - 0.5).abs() < 1e-12);
    assert!(c.lr_at(100) < 1e-12);
    assert!(Optimizer::parse("lion").is_err());
}

/// The weight average's warm-up: min(decay, (1 + t) / (10 + t)) for the t-th update.
#[test]
fn ema_warm_up_rule() {
    use effnet::train::optim::ema_decay_at;
    assert!((ema_decay_at(0.998, 1) - 2.0 / 11.0).abs() < 1e-15);
    assert!((ema_decay_at(0.998, 100) - 101.0 / 110.0).abs() < 1e-15);
    assert_eq!(ema_decay_at(0.998, 100_000), 0.998);
    assert_eq!(ema_decay_at(0.1, 1), 0.1);
    // After 500 updates from the default, the initialization's share is tiny (it was
    // 0.998^500 = 37% without warm-up).
    let init_share: f64 = (1..=500).map(|t| ema_decay_at(0.998, t)).product();
    assert!(init_share < 1e-3, "{init_share}");
}
