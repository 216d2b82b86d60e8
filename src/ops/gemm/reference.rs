//! f64 CPU reference of the GEMM.

use super::GemmSpec;

/// f64 reference of [`gemm`]: returns op(A) . op(B) (+ bias) (+ c0).
pub fn gemm_ref(
    s: &GemmSpec,
    a: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    c0: Option<&[f64]>,
) -> Vec<f64> {
    let mut c = vec![0.0; s.m * s.n];
    for i in 0..s.m {
        for j in 0..s.n {
            let mut acc = 0.0;
            for l in 0..s.k {
                let av = if s.trans_a {
                    a[l * s.m + i]
                } else {
                    a[i * s.k + l]
                };
                let bv = if s.trans_b {
                    b[j * s.k + l]
                } else {
                    b[l * s.n + j]
                };
                acc += av * bv;
            }
            if let Some(bb) = bias {
                acc += bb[j];
            }
            if let (true, Some(c0)) = (s.accumulate, c0) {
                acc += c0[i * s.n + j];
            }
            c[i * s.n + j] = acc;
        }
    }
    c
}
