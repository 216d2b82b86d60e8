//! f64 CPU reference of the fused normalization: forward (with BatchNorm's running update)
//! and backward.

use super::{NormKind, NormSpec};

/// f64 reference parameters (slices of `c` values).
#[derive(Clone, Copy, Debug, Default)]
pub struct RefParams<'a> {
    /// gamma (None: 1).
    pub gamma: Option<&'a [f64]>,
    /// beta (None: 0).
    pub beta: Option<&'a [f64]>,
    /// BatchNorm (running mean, running variance).
    pub running: Option<(&'a [f64], &'a [f64])>,
    /// Proxy (mu~, s~); s~ is ignored without `apply_scale`.
    pub proxy: Option<(&'a [f64], &'a [f64])>,
}

/// What [`forward_ref`] returns.
#[derive(Clone, Debug)]
pub struct RefForward {
    /// Output.
    pub y: Vec<f64>,
    /// Statistics used: mean per segment (the running mean in BatchNorm evaluation).
    pub mean: Vec<f64>,
    /// Reciprocal standard deviation per segment.
    pub rstd: Vec<f64>,
    /// Updated running (mean, variance) after a BatchNorm training forward.
    pub running: Option<(Vec<f64>, Vec<f64>)>,
}

/// What [`backward_ref`] returns (per-channel gradients are zero where not applicable).
#[derive(Clone, Debug)]
pub struct RefBackward {
    /// d loss / d x.
    pub dx: Vec<f64>,
    /// d loss / d gamma.
    pub dgamma: Vec<f64>,
    /// d loss / d beta.
    pub dbeta: Vec<f64>,
    /// d loss / d mu~.
    pub dmu: Vec<f64>,
    /// d loss / d s~.
    pub ds: Vec<f64>,
}

impl NormSpec {
    /// Segment of flat element `i`.
    fn segment_of(&self, i: usize) -> usize {
        let c = i % self.c;
        match self.kind {
            NormKind::Batch => c,
            NormKind::Group { groups } => (i / (self.hw * self.c)) * groups + c / (self.c / groups),
        }
    }

    /// Batch statistics (mean, biased variance) per segment.
    fn moments_ref(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let s = self.segments();
        let k = self.segment_len() as f64;
        let mut mean = vec![0.0; s];
        for (i, v) in x.iter().enumerate() {
            mean[self.segment_of(i)] += v;
        }
        mean.iter_mut().for_each(|m| *m /= k);
        let mut var = vec![0.0; s];
        for (i, v) in x.iter().enumerate() {
            let sg = self.segment_of(i);
            var[sg] += (v - mean[sg]) * (v - mean[sg]);
        }
        var.iter_mut().for_each(|v| *v /= k);
        (mean, var)
    }
}

/// f64 reference of [`forward`].
pub fn forward_ref(spec: &NormSpec, training: bool, x: &[f64], p: &RefParams) -> RefForward {
    let eps = spec.eps as f64;
    let eval_bn = spec.uses_running_stats(training);
    let (mean, var) = if eval_bn {
        let (m, v) = p
            .running
            .expect("evaluation or frozen BatchNorm needs running statistics");
        (m.to_vec(), v.to_vec())
    } else {
        spec.moments_ref(x)
    };
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let running = match (spec.kind, training, p.running) {
        (NormKind::Batch, true, Some((rm, rv))) if !spec.frozen => {
            let m = spec.momentum as f64;
            Some((
                rm.iter()
                    .zip(&mean)
                    .map(|(r, b)| m * r + (1.0 - m) * b)
                    .collect(),
                rv.iter()
                    .zip(&var)
                    .map(|(r, b)| m * r + (1.0 - m) * b * spec.unbiased_factor())
                    .collect(),
            ))
        }
        _ => None,
    };
    let y = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i % spec.c;
            let s = spec.segment_of(i);
            let z = (v - mean[s]) * rstd[s] * p.gamma.map_or(1.0, |g| g[c])
                + p.beta.map_or(0.0, |b| b[c]);
            let a = spec.act.f(z);
            match (spec.proxy, p.proxy) {
                (Some(pm), Some((mu, sc))) => {
                    (a - mu[c]) * if pm.apply_scale { sc[c] } else { 1.0 }
                }
                _ => a,
            }
        })
        .collect();
    RefForward {
        y,
        mean,
        rstd,
        running,
    }
}

/// f64 reference of [`backward`] (training-mode statistics recomputed from `x`; a frozen
/// BatchNorm's running statistics, `p.running`, held constant).
pub fn backward_ref(spec: &NormSpec, x: &[f64], dy: &[f64], p: &RefParams) -> RefBackward {
    let eps = spec.eps as f64;
    let (mean, var) = if spec.frozen {
        let (m, v) = p
            .running
            .expect("frozen BatchNorm needs running statistics");
        (m.to_vec(), v.to_vec())
    } else {
        spec.moments_ref(x)
    };
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let c = spec.c;
    let (proxy, apply) = match spec.proxy {
        Some(pm) => (true, pm.apply_scale),
        None => (false, false),
    };
    let mut r = RefBackward {
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
        dmu: vec![0.0; c],
        ds: vec![0.0; c],
    };
    let s_count = spec.segments();
    let mut m1 = vec![0.0; s_count];
    let mut m2 = vec![0.0; s_count];
    let mut dxh = vec![0.0; x.len()];
    let mut xh = vec![0.0; x.len()];
    for i in 0..x.len() {
        let ch = i % c;
        let s = spec.segment_of(i);
        let gm = p.gamma.map_or(1.0, |g| g[ch]);
        xh[i] = (x[i] - mean[s]) * rstd[s];
        let z = gm * xh[i] + p.beta.map_or(0.0, |b| b[ch]);
        let (mu, sc) = p.proxy.map_or((0.0, 1.0), |(m, s)| (m[ch], s[ch]));
        let sc = if apply { sc } else { 1.0 };
        let dz = dy[i] * sc * spec.act.df(z);
        r.dgamma[ch] += dz * xh[i];
        r.dbeta[ch] += dz;
        if proxy {
            r.dmu[ch] -= sc * dy[i];
            if apply {
                r.ds[ch] += dy[i] * (spec.act.f(z) - mu);
            }
        }
        dxh[i] = gm * dz;
        m1[s] += dxh[i];
        m2[s] += dxh[i] * xh[i];
    }
    let k = spec.segment_len() as f64;
    for i in 0..x.len() {
        let s = spec.segment_of(i);
        r.dx[i] = if spec.frozen {
            rstd[s] * dxh[i]
        } else {
            rstd[s] * (dxh[i] - m1[s] / k - xh[i] * m2[s] / k)
        };
    }
    if !spec.scale {
        r.dgamma.iter_mut().for_each(|v| *v = 0.0);
    }
    if !spec.shift {
        r.dbeta.iter_mut().for_each(|v| *v = 0.0);
    }
    r
}
