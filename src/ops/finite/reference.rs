//! f64 reference of the non-finite count.

/// f64 reference of [`count_nonfinite`]: how many values are NaN or infinite.
pub fn count_nonfinite_ref(x: &[f64]) -> usize {
    x.iter().filter(|v| !v.is_finite()).count()
}
