//! f64 CPU reference of the grouped convolution (forward, and the data, weight and bias
//! gradients), one loop nest over every tap.

use super::ConvSpec;

/// Visit every (output index, input index, weight index) product of the convolution.
fn for_each_tap(s: &ConvSpec, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = s.out_hw();
    let (gi, go, k) = (s.gi(), s.go(), s.k);
    let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
    for n in 0..s.n {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..s.cout {
                    let oi = ((n * ho + oy) * wo + ox) * s.cout + co;
                    let g = co / go;
                    for ky in 0..k {
                        let iy = (oy * s.stride + ky) as isize - pt;
                        if iy < 0 || iy >= s.h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (ox * s.stride + kx) as isize - pl;
                            if ix < 0 || ix >= s.w as isize {
                                continue;
                            }
                            let xb = ((n * s.h + iy as usize) * s.w + ix as usize) * s.cin + g * gi;
                            for ci in 0..gi {
                                f(oi, xb + ci, ((ky * k + kx) * gi + ci) * s.cout + co);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// f64 reference forward (layouts as [`forward`]).
pub fn forward_ref(s: &ConvSpec, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; s.out_pixels() * s.cout];
    for_each_tap(s, |o, i, wi| y[o] += x[i] * w[wi]);
    if let Some(b) = bias {
        for (j, v) in y.iter_mut().enumerate() {
            *v += b[j % s.cout];
        }
    }
    y
}

/// f64 reference backward: `(dx, dw, dbias)` given `dy` (dbias is the per-channel sum of
/// dy, whether or not the spec has a bias).
pub fn backward_ref(
    s: &ConvSpec,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for_each_tap(s, |o, i, wi| {
        dx[i] += dy[o] * w[wi];
        dw[wi] += dy[o] * x[i];
    });
    let mut db = vec![0.0; s.cout];
    for (j, v) in dy.iter().enumerate() {
        db[j % s.cout] += v;
    }
    (dx, dw, db)
}
