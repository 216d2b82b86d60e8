//! Elementwise, reduction and loss ops through the harness on the adapter at hand.
mod common;

#[test]
fn activations() {
    common::assert_cases_pass("relu");
    common::assert_cases_pass("silu");
    common::assert_cases_pass("sigmoid");
}

#[test]
fn residual_add() {
    common::assert_cases_pass("residual_add");
}

#[test]
fn channel_scale() {
    common::assert_cases_pass("channel_scale");
}

#[test]
fn reductions() {
    common::assert_cases_pass("sum[");
    common::assert_cases_pass("mean[");
}

#[test]
fn softmax_xent() {
    common::assert_cases_pass("softmax_xent");
}

/// NaN, +inf and -inf are counted, the largest f32, subnormals and -0 are not, into the
/// requested slot, across workgroups.
#[test]
fn count_nonfinite() {
    common::assert_cases_pass("count_nonfinite");
}

/// The count the checkpoint writer relies on: a planted NaN in one of several tensors is
/// reported in that tensor's slot only.
#[test]
fn count_nonfinite_names_the_tensor() {
    let gpu = common::gpu();
    let a = gpu.upload(&[1.0, 2.0, 3.0], &[3]).unwrap();
    let mut v = vec![0.5f32; 1000];
    v[777] = f32::NAN;
    v[3] = f32::NEG_INFINITY;
    let b = gpu.upload(&v, &[1000]).unwrap();
    let c = gpu.upload(&[f32::MAX, -0.0, 1e-40], &[3]).unwrap();
    let counts = effnet::ops::finite::count_each(gpu, &[&a, &b, &c]).unwrap();
    assert_eq!(counts, vec![0, 2, 0]);
}

#[test]
fn input_normalize() {
    // Forward against the f64 reference; the op has no backward (its input is data).
    common::assert_cases_pass("input_normalize");
}

#[test]
fn input_normalize_refuses_what_it_cannot_do() {
    use effnet::ops::input::{normalize, NormalizeParams};
    let gpu = common::gpu();
    let px = gpu.zeros(&[6]).unwrap();
    let y = gpu.zeros(&[1, 2, 4, 3]).unwrap();
    let mut rec = effnet::Recorder::new(gpu);
    let (m, s) = ([0.5f32; 3], [0.25f32; 3]);
    normalize(&mut rec, &px, &y, &m, &s).unwrap();
    // Too few packed words for the output.
    let short = gpu.zeros(&[5]).unwrap();
    assert!(normalize(&mut rec, &short, &y, &m, &s).is_err());
    // Channel count that is not the output's last dimension.
    assert!(normalize(&mut rec, &px, &y, &[0.5; 2], &[0.25; 2]).is_err());
    // Degenerate statistics and too many channels.
    let e = NormalizeParams::new(24, &[0.5; 3], &[0.25, 0.0, 0.25]).unwrap_err();
    assert!(e.to_string().contains("not a positive number"), "{e}");
    assert!(NormalizeParams::new(24, &[0.5; 5], &[0.25; 5]).is_err());
    assert!(NormalizeParams::new(24, &[f32::NAN; 3], &[0.25; 3]).is_err());
}

/// The f16-storage variants (activations, residual add, row and channel scales, sums and
/// their broadcast, the fused normalizations, convolutions, GEMM, linear layers, global
/// average pooling, squeeze-excitation, input normalization) against the f64 reference
/// forward and backward, at the f16 tolerances of `Tolerance::f16_storage` (skipped on an
/// adapter without SHADER_F16).
#[test]
fn f16_storage_variants() {
    if !common::gpu().features.shader_f16 {
        return;
    }
    common::assert_cases_pass("/f16");
}

/// The loss-scaled cross-entropy: dlogits is exactly the unscaled one times the scale the
/// scaler state holds (a power of two), the loss itself unchanged; an empty state is
/// refused.
#[test]
fn softmax_xent_scaled_by_the_loss_scale() {
    use effnet::ops::loss::{softmax_xent, softmax_xent_scaled};
    use effnet::train::loss_scale::{ScalerConfig, ScalerState};
    let gpu = common::gpu();
    let (n, k) = (5, 11);
    let mut rng = effnet::util::Rng::new(9);
    let z: Vec<f32> = rng
        .normals_f32(n * k, 2.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let logits = gpu.upload(&z, &[n, k]).unwrap();
    let labels = gpu.upload_u32(&[0, 3, 10, 7, 7], &[n]).unwrap();
    let dloss = gpu.upload(&[1.0 / n as f32; 5], &[n]).unwrap();
    let out = || (gpu.zeros(&[n]).unwrap(), gpu.zeros(&[n, k]).unwrap());
    let ((l0, d0), (l1, d1)) = (out(), out());
    let state = ScalerState {
        scale: 4096.0,
        ..ScalerState::initial(&ScalerConfig::default())
    };
    let scaler = gpu.upload_u32(&state.to_words(), &[8]).unwrap();
    let mut rec = effnet::Recorder::new(gpu);
    softmax_xent(&mut rec, &logits, &labels, &dloss, &l0, &d0, 0.1).unwrap();
    softmax_xent_scaled(&mut rec, &logits, &labels, &dloss, &l1, &d1, 0.1, &scaler).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    assert_eq!(gpu.read(&l0).unwrap(), gpu.read(&l1).unwrap());
    let want: Vec<f32> = gpu.read(&d0).unwrap().iter().map(|v| v * 4096.0).collect();
    assert_eq!(gpu.read(&d1).unwrap(), want);
    let empty = gpu.zeros(&[0]).unwrap();
    let mut rec = effnet::Recorder::new(gpu);
    let e = softmax_xent_scaled(&mut rec, &logits, &labels, &dloss, &l1, &d1, 0.1, &empty)
        .unwrap_err()
        .to_string();
    assert!(e.contains("loss scaler state is empty"), "{e}");
}
