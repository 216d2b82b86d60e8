//! f64 CPU reference of Proxy Norm's statistics and their gradients, and the f64 Gaussian
//! quantiles the kernels embed.

use super::PROXY_POINTS;
use crate::ops::act::Act;

/// f64 error function by its Taylor series (accurate to ~1e-15 for |x| <= 3, the range
/// the quantiles need).
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > 1e-18 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x2 / n;
        sum += term / (2.0 * n + 1.0);
        if n > 200.0 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// f64 standard normal quantile for `p` in [1e-4, 1 - 1e-4], by Newton's method on the
/// CDF from a rational start (Abramowitz & Stegun 26.2.23).
pub fn normal_quantile(p: f64) -> f64 {
    assert!(
        (1e-4..=1.0 - 1e-4).contains(&p),
        "normal_quantile: p = {p} out of range"
    );
    let (q, sign) = if p < 0.5 { (p, -1.0) } else { (1.0 - p, 1.0) };
    let t = (-2.0 * q.ln()).sqrt();
    let mut u = sign
        * (t - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t));
    for _ in 0..8 {
        let cdf = 0.5 * (1.0 + erf_series(u / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * u * u).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let step = (cdf - p) / pdf;
        u -= step;
        if step.abs() < 1e-16 {
            break;
        }
    }
    u
}

/// The 200 proxy quantiles `u_i = sqrt(2) * erfinv(2 (i + 0.5) / 200 - 1)` in f64.
pub fn quantiles() -> Vec<f64> {
    (0..PROXY_POINTS)
        .map(|i| normal_quantile((i as f64 + 0.5) / PROXY_POINTS as f64))
        .collect()
}
/// f64 reference inputs of the proxy statistics, per channel.
#[derive(Clone, Copy, Debug)]
pub struct ProxyRef<'a> {
    /// Activation.
    pub act: Act,
    /// Variance epsilon.
    pub eps: f64,
    /// gamma (None: 1).
    pub gamma: Option<&'a [f64]>,
    /// beta (None: 0).
    pub beta: Option<&'a [f64]>,
    /// Proxy shift.
    pub pshift: &'a [f64],
    /// Proxy scale.
    pub pscale: &'a [f64],
}

impl ProxyRef<'_> {
    fn channel(&self, c: usize) -> (f64, f64, f64, f64) {
        (
            self.gamma.map_or(1.0, |g| g[c]),
            self.beta.map_or(0.0, |b| b[c]),
            self.pshift[c],
            1.0 + self.pscale[c],
        )
    }

    /// (mu~, s~, points' activations) of channel `c`.
    fn moments(&self, c: usize, u: &[f64]) -> (f64, f64) {
        let (g, b, sh, sc) = self.channel(c);
        let k = u.len() as f64;
        let a: Vec<f64> = u
            .iter()
            .map(|&u| self.act.f(g * (sc * u + sh) + b))
            .collect();
        let mu = a.iter().sum::<f64>() / k;
        let var = a.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / k;
        (mu, 1.0 / (var + self.eps).sqrt())
    }
}

/// f64 reference of [`proxy_stats`]: (mu~, s~) per channel.
pub fn proxy_stats_ref(p: &ProxyRef) -> (Vec<f64>, Vec<f64>) {
    let u = quantiles();
    (0..p.pshift.len()).map(|c| p.moments(c, &u)).unzip()
}

/// f64 reference gradients of [`proxy_stats`]: (dgamma, dbeta, dpshift, dpscale) for
/// upstream `dmu`, `ds` (None: zero).
pub fn proxy_stats_backward_ref(p: &ProxyRef, dmu: &[f64], ds: Option<&[f64]>) -> [Vec<f64>; 4] {
    let u = quantiles();
    let k = u.len() as f64;
    let cn = p.pshift.len();
    let mut out = [vec![0.0; cn], vec![0.0; cn], vec![0.0; cn], vec![0.0; cn]];
    for c in 0..cn {
        let (g, b, sh, sc) = p.channel(c);
        let (mu, s) = p.moments(c, &u);
        let gvar = ds.map_or(0.0, |d| d[c]) * s * s * s;
        for &ui in &u {
            let v = sc * ui + sh;
            let z = g * v + b;
            let dz = (dmu[c] - gvar * (p.act.f(z) - mu)) / k * p.act.df(z);
            out[0][c] += dz * v;
            out[1][c] += dz;
            out[2][c] += dz * g;
            out[3][c] += dz * g * ui;
        }
    }
    out
}
