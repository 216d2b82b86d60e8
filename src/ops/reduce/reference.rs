//! f64 CPU reference of the axis sums.

use super::Axes;

/// f64 reference: out[o, i] = scale * sum_m x[o, m, i] * (y or 1).
pub fn sum_axis_ref(x: &[f64], y: Option<&[f64]>, ax: Axes, scale: f64) -> Vec<f64> {
    let mut out = vec![0.0; ax.o * ax.i];
    for o in 0..ax.o {
        for m in 0..ax.m {
            for i in 0..ax.i {
                let k = (o * ax.m + m) * ax.i + i;
                out[o * ax.i + i] += x[k] * y.map_or(1.0, |y| y[k]);
            }
        }
    }
    out.iter_mut().for_each(|v| *v *= scale);
    out
}
