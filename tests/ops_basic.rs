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
