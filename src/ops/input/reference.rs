//! f64 reference of the input normalization.

/// `(x / 255 - mean[c]) / std[c]` for u8 values `x` in NHWC order with `mean.len()`
/// channels (element `i` has channel `i % c`).
pub fn normalize(pixels: &[u8], mean: &[f32], std: &[f32]) -> Vec<f64> {
    let c = mean.len();
    pixels
        .iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 / 255.0 - mean[i % c] as f64) / std[i % c] as f64)
        .collect()
}
