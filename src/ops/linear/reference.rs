//! f64 CPU reference of the linear layer, as products of the GEMM reference.

use super::LinearSpec;
use crate::ops::gemm::{gemm_ref, GemmSpec};

/// f64 reference forward: `y = x . W (+ b)`, x `[rows, cin]`, W `[cin, cout]`.
pub fn forward_ref(s: &LinearSpec, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    gemm_ref(&GemmSpec::new(s.rows, s.cout, s.cin), x, w, bias, None)
}

/// f64 reference backward: `(dx, dw, dbias)` given `dy` (dbias is the per-column sum of
/// dy, whether or not the layer has a bias).
pub fn backward_ref(
    s: &LinearSpec,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dx = gemm_ref(
        &GemmSpec {
            trans_b: true,
            ..GemmSpec::new(s.rows, s.cin, s.cout)
        },
        dy,
        w,
        None,
        None,
    );
    let dw = gemm_ref(
        &GemmSpec {
            trans_a: true,
            ..GemmSpec::new(s.cin, s.cout, s.rows)
        },
        x,
        dy,
        None,
        None,
    );
    let mut db = vec![0.0; s.cout];
    for (j, v) in dy.iter().enumerate() {
        db[j % s.cout] += v;
    }
    (dx, dw, db)
}
