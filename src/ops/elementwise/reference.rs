//! f64 CPU reference of the elementwise ops.

/// f64 reference of [`super::residual_add`]: `y = a + s[n] * b`, `per` elements per sample.
pub fn residual_add_ref(a: &[f64], b: &[f64], s: &[f64], per: usize) -> Vec<f64> {
    (0..a.len()).map(|k| a[k] + s[k / per] * b[k]).collect()
}

/// f64 reference gradients of [`super::residual_add`]: `(da, db) = (dy, dy * s[n])`.
pub fn residual_add_backward_ref(dy: &[f64], s: &[f64], per: usize) -> (Vec<f64>, Vec<f64>) {
    let db = (0..dy.len()).map(|k| dy[k] * s[k / per]).collect();
    (dy.to_vec(), db)
}

/// f64 reference of [`super::channel_scale`]: `y[n, p, c] = x[n, p, c] * s[n, c]`.
pub fn channel_scale_ref(x: &[f64], s: &[f64], hw: usize, c: usize) -> Vec<f64> {
    (0..x.len())
        .map(|k| x[k] * s[(k / (hw * c)) * c + k % c])
        .collect()
}

/// f64 reference gradients of [`super::channel_scale`]: `(dx, ds)` with `dx = dy * s` and
/// `ds[n, c] = sum_p dy * x`.
pub fn channel_scale_backward_ref(
    x: &[f64],
    s: &[f64],
    dy: &[f64],
    hw: usize,
    c: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut ds = vec![0.0; s.len()];
    for (k, d) in dx.iter_mut().enumerate() {
        let sc = (k / (hw * c)) * c + k % c;
        *d = dy[k] * s[sc];
        ds[sc] += dy[k] * x[k];
    }
    (dx, ds)
}
