//! Host-side statistics of the moments analysis, all in f64: summaries over simulations
//! (mean, standard deviation, 16th / 84th percentiles), the effective rank of a channel
//! covariance (`trace / lambda_max`, lambda_max by Lanczos with full
//! reorthogonalization and Sturm bisection on the tridiagonal matrix), least-squares
//! fits (linear, power law, exponential) with R^2, and f64 reference moments.

/// Mean, standard deviation and percentiles of one statistic over simulations.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Mean over the finite values.
    pub mean: f64,
    /// Sample standard deviation (n - 1; 0 for a single value).
    pub std: f64,
    /// 16th percentile.
    pub p16: f64,
    /// 84th percentile.
    pub p84: f64,
    /// Number of finite values summarized.
    pub n: usize,
}

impl Summary {
    /// Summarize `values`, ignoring non-finite ones (all NaN when none is finite).
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Summary {
                mean: f64::NAN,
                std: f64::NAN,
                p16: f64::NAN,
                p84: f64::NAN,
                n: 0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Summary {
            mean,
            std,
            p16: percentile_sorted(&v, 16.0),
            p84: percentile_sorted(&v, 84.0),
            n,
        }
    }
}

/// The `q`-th percentile (0..=100) of ascending `sorted` values, linearly interpolated
/// between order statistics (numpy's default): position `q / 100 * (n - 1)`.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let f = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * f
        }
    }
}

/// The `q`-th percentile of unsorted values (non-finite values ignored).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, q)
}

/// Largest eigenvalue of the symmetric `n x n` row-major matrix `a` (f32, as read back
/// from the GPU), computed in f64 by Lanczos with full reorthogonalization (at most
/// `min(n, 80)` steps) and bisection on the tridiagonal matrix. Deterministic.
pub fn lambda_max(a: &[f32], n: usize) -> f64 {
    assert_eq!(
        a.len(),
        n * n,
        "lambda_max: matrix of {} for n = {n}",
        a.len()
    );
    if n == 0 {
        return f64::NAN;
    }
    let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    // Symmetrize (the GPU product is symmetric up to rounding).
    let at = |i: usize, j: usize| 0.5 * (a[i * n + j] + a[j * n + i]);
    let sym: Vec<f64> = (0..n * n).map(|k| at(k / n, k % n)).collect();
    let matvec = |x: &[f64], y: &mut [f64]| {
        for (i, yi) in y.iter_mut().enumerate() {
            let row = &sym[i * n..(i + 1) * n];
            *yi = row.iter().zip(x).map(|(r, v)| r * v).sum();
        }
    };
    let scale = (0..n).map(|i| sym[i * n + i].abs()).fold(0.0, f64::max);
    if scale == 0.0 || !scale.is_finite() {
        return if scale == 0.0 { 0.0 } else { f64::NAN };
    }
    let steps = n.min(80);
    // Deterministic start vector with components along every direction.
    let mut q: Vec<f64> = (0..n)
        .map(|i| 1.0 + 0.5 * ((i as f64 + 1.0) * 0.618_033_988_749_895).fract())
        .collect();
    let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    q.iter_mut().for_each(|v| *v /= norm);
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(steps);
    let mut alpha = Vec::with_capacity(steps);
    let mut beta: Vec<f64> = Vec::with_capacity(steps);
    let mut w = vec![0.0; n];
    for j in 0..steps {
        matvec(&q, &mut w);
        let aj: f64 = q.iter().zip(&w).map(|(a, b)| a * b).sum();
        alpha.push(aj);
        basis.push(q.clone());
        // Full reorthogonalization, twice (classical Gram-Schmidt, "twice is enough").
        for _ in 0..2 {
            for b in &basis {
                let d: f64 = b.iter().zip(&w).map(|(x, y)| x * y).sum();
                w.iter_mut().zip(b).for_each(|(wi, bi)| *wi -= d * bi);
            }
        }
        let bj = w.iter().map(|v| v * v).sum::<f64>().sqrt();
        if j + 1 == steps || bj <= 1e-12 * scale {
            break;
        }
        beta.push(bj);
        q = w.iter().map(|v| v / bj).collect();
    }
    tridiagonal_max_eigenvalue(&alpha, &beta)
}

/// Largest eigenvalue of the symmetric tridiagonal matrix with diagonal `d` and
/// off-diagonal `e` (`e.len() == d.len() - 1`), by Sturm-sequence bisection.
pub fn tridiagonal_max_eigenvalue(d: &[f64], e: &[f64]) -> f64 {
    let k = d.len();
    if k == 0 {
        return f64::NAN;
    }
    // Gershgorin bounds.
    let mut lo = f64::MAX;
    let mut hi = f64::MIN;
    for i in 0..k {
        let r = if i > 0 { e[i - 1].abs() } else { 0.0 } + e.get(i).map_or(0.0, |v| v.abs());
        lo = lo.min(d[i] - r);
        hi = hi.max(d[i] + r);
    }
    // Number of eigenvalues strictly below x.
    let below = |x: f64| -> usize {
        let mut count = 0;
        let mut q = 1.0f64;
        for i in 0..k {
            let off = if i > 0 { e[i - 1] * e[i - 1] } else { 0.0 };
            q = d[i] - x - if i > 0 { off / q } else { 0.0 };
            if q == 0.0 {
                q = -f64::EPSILON * (x.abs() + 1.0);
            }
            if q < 0.0 {
                count += 1;
            }
        }
        count
    };
    // The largest eigenvalue is the x where below(x) goes from k-1 to k.
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if below(mid) >= k {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Effective rank `trace / lambda_max` of a symmetric positive semi-definite `n x n`
/// matrix (NaN when the matrix is zero).
pub fn effective_rank(cov: &[f32], n: usize) -> f64 {
    let trace: f64 = (0..n).map(|i| cov[i * n + i] as f64).sum();
    let lmax = lambda_max(cov, n);
    if lmax > 0.0 && trace.is_finite() {
        trace / lmax
    } else {
        f64::NAN
    }
}

/// All eigenvalues of a small symmetric matrix (f64, row-major), ascending, by cyclic
/// Jacobi rotations: the O(n^3) reference [`lambda_max`] is tested against.
pub fn eigenvalues_jacobi(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = m[k * n + p];
                    let akq = m[k * n + q];
                    m[k * n + p] = c * akp - s * akq;
                    m[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = m[p * n + k];
                    let aqk = m[q * n + k];
                    m[p * n + k] = c * apk - s * aqk;
                    m[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| m[i * n + i]).collect();
    // NaN (from a non-finite matrix) sorts last instead of panicking.
    ev.sort_by(f64::total_cmp);
    ev
}

/// A least-squares line `y = slope * x + intercept` with its coefficient of determination.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LineFit {
    /// Slope.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// R^2 = 1 - SS_res / SS_tot (1 for a perfect fit).
    pub r2: f64,
    /// Points used.
    pub n: usize,
}

/// Least-squares line through the finite points `(x[i], y[i])`.
pub fn linear_fit(x: &[f64], y: &[f64]) -> LineFit {
    let pts: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (a, b))
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    let n = pts.len();
    if n < 2 {
        return LineFit {
            slope: f64::NAN,
            intercept: f64::NAN,
            r2: f64::NAN,
            n,
        };
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = pts.iter().map(|p| (p.1 - my) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_res: f64 = pts
        .iter()
        .map(|p| {
            let r = p.1 - (slope * p.0 + intercept);
            r * r
        })
        .sum();
    LineFit {
        slope,
        intercept,
        r2: if syy > 0.0 { 1.0 - ss_res / syy } else { 1.0 },
        n,
    }
}

/// Fit `log y = slope * x + c` (exponential growth in x; `exp(slope)` is the factor per
/// unit of x). Points with `y <= 0` are skipped.
pub fn exponential_fit(x: &[f64], y: &[f64]) -> LineFit {
    let ly: Vec<f64> = y
        .iter()
        .map(|&v| if v > 0.0 { v.ln() } else { f64::NAN })
        .collect();
    linear_fit(x, &ly)
}

/// Fit `log y = slope * log x + c` (a power law `y = C x^slope`). Points with `x <= 0` or
/// `y <= 0` are skipped.
pub fn power_law_fit(x: &[f64], y: &[f64]) -> LineFit {
    let lx: Vec<f64> = x
        .iter()
        .map(|&v| if v > 0.0 { v.ln() } else { f64::NAN })
        .collect();
    exponential_fit(&lx, y)
}

/// f64 moments of `t` viewed as `[rows, c]`, as the GPU reduction computes them:
/// `[nu1(|t|), nu2(t), mu2(t), mu4(t), mean_c m_c^2]` (centering per channel).
pub fn moments_ref(t: &[f64], c: usize) -> [f64; 5] {
    let rows = t.len() / c;
    let mut mean = vec![0.0; c];
    for (i, v) in t.iter().enumerate() {
        mean[i % c] += v;
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut out = [0.0; 5];
    for (i, &v) in t.iter().enumerate() {
        let d = v - mean[i % c];
        out[0] += v.abs();
        out[1] += v * v;
        out[2] += d * d;
        out[3] += d * d * d * d;
    }
    let k = t.len() as f64;
    for o in out.iter_mut().take(4) {
        *o /= k;
    }
    out[4] = mean.iter().map(|m| m * m).sum::<f64>() / c as f64;
    out
}

/// f64 effective rank of `t` viewed as `[rows, c]` (covariance of the centered rows).
pub fn effective_rank_ref(t: &[f64], c: usize) -> f64 {
    let rows = t.len() / c;
    let mut mean = vec![0.0; c];
    for (i, v) in t.iter().enumerate() {
        mean[i % c] += v / rows as f64;
    }
    let mut cov = vec![0.0; c * c];
    for r in 0..rows {
        for i in 0..c {
            let di = t[r * c + i] - mean[i];
            for j in 0..c {
                cov[i * c + j] += di * (t[r * c + j] - mean[j]);
            }
        }
    }
    let ev = eigenvalues_jacobi(&cov, c);
    let trace: f64 = ev.iter().sum();
    trace / ev[c - 1]
}
