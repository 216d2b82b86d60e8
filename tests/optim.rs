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

/// Dynamic loss scaling on the GPU, step by step against the host rule
/// (`ScalerState::step_ref`, GradScaler's): growth after `interval` finite steps, halving
/// on an inf or NaN gradient down to the minimum, the skip counter, the count of overflows
/// at the minimum and the stop it leads to. The scaled update (SGD with momentum and
/// weight decay, and AdamW) leaves the weights, both optimizer slots and the weight
/// average untouched on overflow and otherwise divides the gradient by the scale; AdamW's
/// bias correction counts only the steps applied, as PyTorch's GradScaler skips
/// `optimizer.step()`.
#[test]
fn loss_scaler_follows_grad_scaler() {
    for opt in ["sgd", "adamw"] {
        scaled_steps(Optimizer::parse(opt).unwrap());
    }
}

fn scaled_steps(opt: Optimizer) {
    use effnet::train::loss_scale::{LossScaler, ScalerConfig, ScalerState};
    let gpu = common::gpu();
    let cfg = ScalerConfig {
        init: 8.0,
        interval: 3,
        min_scale: 1.0,
        max_scale: 32.0,
        ..ScalerConfig::default()
    };
    let scaler = LossScaler::new(gpu, cfg, &ScalerState::initial(&cfg), &opt, 19).unwrap();
    let n = 300;
    let shapes = vec![vec![n]];
    let arena = || Arena::new(gpu, &shapes).unwrap();
    let (w, g, s1, s2, avg) = (arena(), arena(), arena(), arena(), arena());
    let mut rng = Rng::new(5);
    let mut hw: Vec<f64> = rng.normals_f32(n, 1.0);
    let (mut h1, mut h2) = (vec![0.0; n], vec![opt.s2_init() as f64; n]);
    let mut havg = vec![0.0; n];
    gpu.write_f32(
        &w.tensors[0],
        &hw.iter().map(|&v| v as f32).collect::<Vec<_>>(),
    )
    .unwrap();
    gpu.write_f32(&s2.tensors[0], &vec![opt.s2_init(); n])
        .unwrap();
    let segs = [Segment {
        chunk: 0,
        start: 0,
        end: n,
        decay: true,
    }];
    let (lr, wd) = (0.1f32, 0.01f32);
    // 3 finite steps grow 8 -> 16; then overflows down to the minimum and two at it
    // (inf and NaN alternate), a finite step, growth capped at max_scale.
    let bad = [
        false, false, false, true, false, true, true, true, true, true, false, false, false, false,
        false, false, false, false, false,
    ];
    let mut host = ScalerState::initial(&cfg);
    let mut applied = 0;
    let read = |t: &Arena| -> Vec<f32> { gpu.read(&t.tensors[0]).unwrap() };
    for (t, &is_bad) in bad.iter().enumerate() {
        let raw: Vec<f64> = rng.normals_f32(n, 1.0);
        // The scaled gradient the backward would produce (exact: powers of two).
        let mut scaled: Vec<f32> = raw.iter().map(|&v| v as f32 * host.scale).collect();
        if is_bad {
            scaled[17] = if t % 2 == 0 { f32::INFINITY } else { f32::NAN };
        }
        gpu.write_f32(&g.tensors[0], &scaled).unwrap();
        let before = [read(&w), read(&s1), read(&s2), read(&avg)];
        let mut rec = Recorder::new(gpu);
        scaler.record_check(&mut rec, &g.chunks).unwrap();
        optim::update_scaled(
            &mut rec,
            &opt,
            &segs,
            &w.chunks,
            &g.chunks,
            &s1.chunks,
            &s2.chunks,
            lr,
            wd,
            t as u64 + 1,
            1.0,
            &scaler,
        )
        .unwrap();
        optim::ema_scaled(&mut rec, &w.chunks, &avg.chunks, 0.5, &scaler).unwrap();
        scaler.record_update(&mut rec).unwrap();
        rec.submit().unwrap().wait(gpu).unwrap();
        let after = [read(&w), read(&s1), read(&s2), read(&avg)];
        if is_bad {
            assert_eq!(
                before, after,
                "{opt:?} step {t}: a skipped step changed state"
            );
        } else {
            // Adam's step count: the updates applied, this one included.
            applied += 1;
            for i in 0..n {
                let (a, b, c) =
                    opt.step_ref(hw[i], raw[i], h1[i], h2[i], lr as f64, wd as f64, applied);
                (hw[i], h1[i], h2[i]) = (a, b, c);
                havg[i] = 0.5 * havg[i] + 0.5 * hw[i];
            }
        }
        host = host.step_ref(u32::from(is_bad), &cfg);
        let dev = scaler.read(gpu).unwrap();
        assert_eq!(dev, host, "step {t}");
        for ((name, got), want) in ["weights", "slot 1", "slot 2", "weight average"]
            .iter()
            .zip(&after)
            .zip([&hw, &h1, &h2, &havg])
        {
            let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
            let err = effnet::ops::harness::normalized_error(&got, want);
            assert!(err < 1e-6, "{opt:?} step {t}: {name} off by {err}");
        }
        if t == 2 {
            assert_eq!(dev.scale, 16.0, "grew after 3 finite steps");
        }
        if t == 9 {
            // 16 -> 8 -> (finite) -> 4 -> 2 -> 1 -> 1 -> 1: two overflows at the minimum.
            assert_eq!((dev.scale, dev.at_min, dev.skipped), (1.0, 2, 6));
            let e = dev.stuck(&cfg, 2).unwrap_err().to_string();
            assert!(e.contains("even at the smallest loss scale (1)"), "{e}");
            assert!(dev.stuck(&cfg, 3).is_ok());
        }
    }
    assert_eq!(host.scale, 8.0, "1 -> 2 -> 4 -> 8 over 9 finite steps");
    assert_eq!(host.at_min, 0);
}

/// AdamW's bias-correction table for mixed precision: the f32 values of
/// 1 / (1 - beta^t) step by step, cut at the run's length, or where both reach 1 (and
/// stay 1 in f32 ever after, which the update relies on past the table's end); SGD has
/// none; betas too close to 1 for a long run are refused with the way out.
#[test]
fn adamw_bias_table() {
    let opt = Optimizer::parse("adamw").unwrap();
    // As the f32 update computes them, in f64 from the f32 betas.
    let c = |beta: f32, t: u64| (1.0 / (1.0 - (beta as f64).powi(t as i32))) as f32;
    let (short, done) = optim::bias_corrections(&opt, 5).unwrap().unwrap();
    assert_eq!(short.len(), 10);
    assert!(!done);
    assert_eq!(short[8..], [c(0.9, 5), c(0.999, 5)]);
    let (full, done) = optim::bias_corrections(&opt, u64::MAX).unwrap().unwrap();
    assert!(done);
    let steps = (full.len() / 2) as u64;
    // beta2 = 0.999 decides: 0.999^t falls below 2^-24 after about 16.6k steps.
    assert!((16_000..17_000).contains(&steps), "{steps}");
    assert_eq!(full[..10], short[..]);
    assert_eq!(full[full.len() - 2..], [1.0, 1.0]);
    assert!(
        full[full.len() - 3] > 1.0,
        "the table ends at the first (1, 1)"
    );
    for t in [steps, steps + 1, 10 * steps] {
        assert_eq!((c(0.9, t), c(0.999, t)), (1.0, 1.0), "step {t}");
    }
    assert!(
        optim::bias_corrections(&Optimizer::parse("sgd").unwrap(), 9)
            .unwrap()
            .is_none()
    );
    let slow = Optimizer::Adamw {
        beta1: 0.9,
        beta2: 0.9999999,
        eps: 1e-8,
    };
    let e = optim::bias_corrections(&slow, u64::MAX)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--precision f32"), "{e}");
}

/// Scaler states that cannot be used are refused with the reason: a checkpoint's words of
/// the wrong count or a scale that is not positive and finite, and rule constants out of
/// range.
#[test]
fn loss_scaler_refuses_bad_state_and_config() {
    use effnet::train::loss_scale::{ScalerConfig, ScalerState, STATE_WORDS};
    let cfg = ScalerConfig::default();
    assert_eq!((cfg.init, cfg.interval), (65536.0, 2000));
    let s = ScalerState::initial(&cfg);
    assert_eq!(ScalerState::from_words(&s.to_words()).unwrap(), s);
    let e = ScalerState::from_words(&[0; 3]).unwrap_err().to_string();
    assert!(e.contains("has 3 words, expected 8"), "{e}");
    for bad in [0.0f32, -1.0, f32::INFINITY, f32::NAN] {
        let mut w = [0u32; STATE_WORDS];
        w[0] = bad.to_bits();
        let e = ScalerState::from_words(&w).unwrap_err().to_string();
        assert!(e.contains("not a positive finite number"), "{e}");
    }
    for (c, why) in [
        (
            ScalerConfig {
                backoff: 1.0,
                ..cfg
            },
            "backoff",
        ),
        (ScalerConfig { growth: 1.0, ..cfg }, "growth"),
        (ScalerConfig { interval: 0, ..cfg }, "interval"),
        (ScalerConfig { init: 0.5, ..cfg }, "init"),
        (
            ScalerConfig {
                min_scale: f32::NAN,
                ..cfg
            },
            "min_scale",
        ),
    ] {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
}
