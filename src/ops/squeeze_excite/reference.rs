//! f64 CPU reference of squeeze-excitation (forward with its intermediates, and backward).

use super::SeSpec;
use crate::ops::act::{self, Act};
use crate::ops::pool;

fn sigmoid(v: f64) -> f64 {
    act::sigmoid(v)
}

/// f64 reference forward; returns `(y, pooled, h1, a1, h2, gate)`.
#[allow(clippy::type_complexity)]
pub fn forward_ref(
    s: &SeSpec,
    x: &[f64],
    w1: &[f64],
    b1: &[f64],
    w2: &[f64],
    b2: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, hd, hw) = (s.n, s.c, s.hidden, s.h * s.w);
    let pooled = pool::forward_ref(&s.gap(), x);
    let mut h1 = vec![0.0; n * hd];
    for i in 0..n {
        for j in 0..hd {
            h1[i * hd + j] = b1[j]
                + (0..c)
                    .map(|k| pooled[i * c + k] * w1[k * hd + j])
                    .sum::<f64>();
        }
    }
    let a1: Vec<f64> = h1.iter().map(|&v| Act::Silu.f(v)).collect();
    let mut h2 = vec![0.0; n * c];
    for i in 0..n {
        for j in 0..c {
            h2[i * c + j] = b2[j] + (0..hd).map(|k| a1[i * hd + k] * w2[k * c + j]).sum::<f64>();
        }
    }
    let gate: Vec<f64> = h2.iter().map(|&v| sigmoid(v)).collect();
    let y = (0..x.len())
        .map(|k| x[k] * gate[(k / (hw * c)) * c + k % c])
        .collect();
    (y, pooled, h1, a1, h2, gate)
}

/// f64 reference backward; returns `(dx, dw1, db1, dw2, db2)`.
#[allow(clippy::type_complexity)]
pub fn backward_ref(
    s: &SeSpec,
    x: &[f64],
    w1: &[f64],
    b1: &[f64],
    w2: &[f64],
    b2: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, hd, hw) = (s.n, s.c, s.hidden, s.h * s.w);
    let (_, pooled, h1, a1, h2, gate) = forward_ref(s, x, w1, b1, w2, b2);
    let mut dgate = vec![0.0; n * c];
    for k in 0..x.len() {
        dgate[(k / (hw * c)) * c + k % c] += dy[k] * x[k];
    }
    let dh2: Vec<f64> = (0..n * c)
        .map(|k| dgate[k] * Act::Sigmoid.df(h2[k]))
        .collect();
    let mut dw2 = vec![0.0; hd * c];
    let mut db2 = vec![0.0; c];
    let mut da1 = vec![0.0; n * hd];
    for i in 0..n {
        for j in 0..c {
            let g = dh2[i * c + j];
            db2[j] += g;
            for k in 0..hd {
                dw2[k * c + j] += a1[i * hd + k] * g;
                da1[i * hd + k] += w2[k * c + j] * g;
            }
        }
    }
    let dh1: Vec<f64> = (0..n * hd).map(|k| da1[k] * Act::Silu.df(h1[k])).collect();
    let mut dw1 = vec![0.0; c * hd];
    let mut db1 = vec![0.0; hd];
    let mut dpooled = vec![0.0; n * c];
    for i in 0..n {
        for j in 0..hd {
            let g = dh1[i * hd + j];
            db1[j] += g;
            for k in 0..c {
                dw1[k * hd + j] += pooled[i * c + k] * g;
                dpooled[i * c + k] += w1[k * hd + j] * g;
            }
        }
    }
    let dx = (0..x.len())
        .map(|k| {
            let nc = (k / (hw * c)) * c + k % c;
            dy[k] * gate[nc] + dpooled[nc] / hw as f64
        })
        .collect();
    (dx, dw1, db1, dw2, db2)
}
