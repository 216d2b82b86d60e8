//! Whole-model gradient check: the gradient the recorded backward produces, projected on a
//! random direction, against a central difference of the GPU loss along that direction.
mod common;

use effnet::gpu::Recorder;
use effnet::models::efficientnet::EfficientNet;
use effnet::models::{ImageSize, ModelConfig, NormChoice};
use effnet::nn::ParamId;
use effnet::train::model::Trainable;
use effnet::util::Rng;

fn tiny(norm: &str) -> ModelConfig {
    let mut c = ModelConfig::preset("b0-g16").unwrap();
    c.width = 0.25;
    c.depth = 0.25;
    c.norm = NormChoice::parse(norm).unwrap();
    c.classes = 5;
    c.in_channels = 1;
    c.dropout = 0.0;
    c.drop_connect = 0.0;
    c
}

/// The loss at the current weights: forward and loss only, as the analytic gradient's
/// training step computes them (dropout and drop-connect are off in [`tiny`]).
fn loss(gpu: &effnet::Gpu, m: &mut EfficientNet) -> f64 {
    let mut rec = Recorder::new(gpu);
    m.record_loss(&mut rec, 0.1).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let rows = gpu.read(m.loss_rows()).unwrap();
    rows.iter().map(|&v| v as f64).sum::<f64>() / rows.len() as f64
}

/// Per-tensor directional gradient checks of a tiny model at batch 16 and 16 x 16 pixels.
fn check(norm: &str, frozen: bool) {
    check_model(&tiny(norm), frozen, 16, ImageSize::square(16));
}

/// Per-tensor directional gradient checks of a tiny model; with `frozen`, BatchNorm in
/// eval mode (running statistics drawn at random, then held constant), and the check that
/// neither the training step nor the loss evaluations change them.
fn check_model(cfg: &ModelConfig, frozen: bool, b: usize, size: ImageSize) {
    let gpu = common::gpu();
    let norm = cfg.norm.name();
    let mut m = EfficientNet::with_size(gpu, cfg, b, size).unwrap();
    assert_eq!(m.input().shape(), [b, size.h, size.w, 1]);
    let mut rng = Rng::new(5);
    m.store().initialize(gpu, &mut rng, 0.0).unwrap();
    let mut state0 = Vec::new();
    if frozen {
        m.set_bn_frozen(true).unwrap();
        assert!(m.bn_frozen());
        for (name, t) in m.state_tensors() {
            let v: Vec<f32> = if name.ends_with("running_var") {
                (0..t.len())
                    .map(|_| (0.4 * rng.normal()).exp() as f32)
                    .collect()
            } else {
                (0..t.len()).map(|_| 0.5 * rng.normal() as f32).collect()
            };
            gpu.write_f32(&t, &v).unwrap();
            state0.push((name, v));
        }
    }
    let x: Vec<f32> = (0..m.input().len()).map(|_| rng.normal() as f32).collect();
    gpu.write_f32(m.input(), &x).unwrap();
    gpu.write_u32(
        m.labels(),
        &(0..b as u32).map(|i| i % 5).collect::<Vec<_>>(),
    )
    .unwrap();
    gpu.write_f32(m.loss_weights(), &vec![1.0 / b as f32; b])
        .unwrap();
    let mut rec = Recorder::new(gpu);
    m.record_after_update(&mut rec).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    // Analytic gradient, from a full training step.
    let mut rec = Recorder::new(gpu);
    m.record_train_step(&mut rec, &mut Rng::new(0), 0.1, false)
        .unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let l0 = gpu
        .read(m.loss_rows())
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .sum::<f64>();
    let n = m.store().defs.len();
    let w0: Vec<Vec<f32>> = (0..n)
        .map(|i| gpu.read(m.store().w(ParamId(i))).unwrap())
        .collect();
    let g: Vec<Vec<f32>> = (0..n)
        .map(|i| gpu.read(m.store().g(ParamId(i))).unwrap())
        .collect();
    // Per-tensor directional checks on a few tensors of each kind, then all at once.
    let mut worst: f64 = 0.0;
    let mut report = Vec::new();
    // Every third tensor (all kinds appear), to keep the test short on lavapipe.
    let picks: Vec<usize> = (0..n).filter(|i| i % 3 == 0).collect();
    for &i in picks.iter() {
        let dname = m.store().defs[i].name.clone();
        let v: Vec<f32> = (0..w0[i].len()).map(|_| rng.normal() as f32).collect();
        let dot: f64 = v
            .iter()
            .zip(&g[i])
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let norm_w: f64 = w0[i]
            .iter()
            .map(|a| (*a as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1.0);
        let norm_v: f64 = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let h = 1e-3 * norm_w.max(10.0) / norm_v;
        let set = |m: &mut EfficientNet, t: f64| {
            let w: Vec<f32> = w0[i]
                .iter()
                .zip(&v)
                .map(|(a, b)| (*a as f64 + t * *b as f64) as f32)
                .collect();
            gpu.write_f32(m.store().w(ParamId(i)), &w).unwrap();
            let mut rec = Recorder::new(gpu);
            m.record_after_update(&mut rec).unwrap();
            rec.submit().unwrap().wait(gpu).unwrap();
        };
        set(&mut m, h);
        let lp = loss(gpu, &mut m);
        set(&mut m, -h);
        let lm = loss(gpu, &mut m);
        set(&mut m, 0.0);
        let fd = (lp - lm) / (2.0 * h);
        // Below ~3e-3 the f32 loss difference is noise (e.g. biases that a following
        // BatchNorm cancels have an exact gradient of 0): compare absolutely there.
        let err = (fd - dot).abs() / (fd.abs().max(dot.abs()).max(3e-3));
        if err > 0.1 {
            report.push(format!(
                "{dname}: analytic {dot:.6e} fd {fd:.6e} rel {err:.3}"
            ));
        }
        worst = worst.max(err);
    }
    assert!(l0.is_finite());
    if frozen {
        let state: Vec<(String, Vec<f32>)> = m
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n, gpu.read(&t).unwrap()))
            .collect();
        assert_eq!(
            state, state0,
            "a frozen BatchNorm changed its running statistics"
        );
        assert_eq!(m.batches_tracked(), 0, "frozen BatchNorm tracked batches");
    }
    assert!(
        report.is_empty(),
        "{norm}: gradient mismatches:\n{}",
        report.join("\n")
    );
}

#[test]
fn bn_gradients() {
    check("bn", false);
}

/// Eval-mode (frozen) BatchNorm: gradients through the fixed running statistics match
/// finite differences, and the statistics stay untouched.
#[test]
fn frozen_bn_gradients() {
    check("bn", true);
}

/// A non-square input (24 x 40: H != W in the stem, every stage, the SE and the pooling,
/// even and odd sides along the way) with TensorFlow "SAME" padding (asymmetric at stride
/// 2 on the even sides 24, 12, 6 and 40, 20, 10); one test for both, as each whole-model
/// check costs about 25 s on lavapipe. (Smaller inputs leave BatchNorm a handful of
/// values per channel in the last stages at batch 4, where a finite difference is too
/// crude.)
#[test]
fn non_square_tf_same_gradients() {
    check_model(
        &tiny("bn").with_tf_padding(),
        false,
        4,
        ImageSize::new(24, 40),
    );
}

/// The padding choice reaches the kernels: the same weights and input give another stem
/// output with TensorFlow "SAME" padding than with symmetric padding (24 x 40, stride 2:
/// one zero row above and column left less).
#[test]
fn tf_same_padding_reaches_the_kernels() {
    let gpu = common::gpu();
    let size = ImageSize::new(24, 40);
    let stem = |cfg: &ModelConfig| -> Vec<f32> {
        let mut m = EfficientNet::with_size(gpu, cfg, 2, size).unwrap();
        m.store().initialize(gpu, &mut Rng::new(3), 0.0).unwrap();
        let mut rng = Rng::new(4);
        let x: Vec<f32> = (0..m.input().len()).map(|_| rng.normal() as f32).collect();
        gpu.write_f32(m.input(), &x).unwrap();
        let mut rec = Recorder::new(gpu);
        m.record_after_update(&mut rec).unwrap();
        m.record_eval(&mut rec).unwrap();
        rec.submit().unwrap().wait(gpu).unwrap();
        let outs = m.node_outputs();
        assert_eq!(outs[0].kind, "conv");
        gpu.read(outs[0].tensor).unwrap()
    };
    let mut sym = tiny("bn");
    sym.norm_eps = effnet::models::config::TF_NORM_EPS;
    let a = stem(&sym);
    let b = stem(&tiny("bn").with_tf_padding());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(
        diff > 0.1,
        "tf-same and symmetric stem outputs agree to {diff}"
    );
}

#[test]
fn frozen_bn_is_refused_without_batch_norm() {
    let gpu = common::gpu();
    let mut m = EfficientNet::new(gpu, &tiny("gn"), 2, 16).unwrap();
    let e = m.set_bn_frozen(true).unwrap_err().to_string();
    assert!(e.contains("only BatchNorm"), "{e}");
}

#[test]
fn ln_pn_gradients() {
    check("ln-pn", false);
}

#[test]
fn gn_gradients() {
    check("gn", false);
}
