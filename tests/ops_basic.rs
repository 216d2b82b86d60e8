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
