//! f64 CPU reference of global average pooling.

use super::GapSpec;
use crate::ops::reduce;

/// f64 reference of [`forward`].
pub fn forward_ref(s: &GapSpec, x: &[f64]) -> Vec<f64> {
    reduce::sum_axis_ref(x, None, s.axes(), 1.0 / (s.h * s.w) as f64)
}
