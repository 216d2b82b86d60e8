//! Proxy Norm statistics (SPEC §C.1-C.2): per channel, the mean `mu~` and inverse standard
//! deviation `s~` of `act(gamma * Y + beta)` for a Gaussian proxy `Y ~ N(pshift,
//! (1 + pscale)^2)`, estimated on 200 fixed Gaussian quantiles, and the exact gradient of
//! those statistics with respect to `gamma`, `beta`, `pshift` and `pscale`.
//!
//! The optimizer calls [`proxy_stats`] once per step after the weight update and stores
//! `mu~`, `s~`; the fused normalization forward ([`super::norm::forward`]) reads them. The
//! norm backward produces `dmu~`, `ds~` ([`super::norm::NormGrads`]) and
//! [`proxy_stats_backward`] chains them back to the four parameters.
//!
//! Quantiles: `u_i = sqrt(2) * erfinv(2 (i + 0.5) / 200 - 1)`, computed here in f64
//! ([`quantiles`]) and embedded, rounded to f32, in `shaders/proxy_norm/stats.wgsl` (a test
//! checks the table against this function).

use super::act::Act;
use super::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use crate::error::{Error, Result};
use crate::gpu::{groups_for, Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

/// Number of Gaussian quantiles the proxy statistics average over.
pub const PROXY_POINTS: usize = 200;

/// Epsilon added to the proxy variance (`--proxy-epsilon`, SPEC §C.1).
pub const PROXY_EPS: f32 = 0.03;

/// Activation codes the proxy kernels are built with (identity, ReLU, SiLU, sigmoid).
const ACT_CODES: [f64; 4] = [0.0, 1.0, 2.0, 3.0];

const HAS_GAMMA: u32 = 1;
const HAS_BETA: u32 = 2;
const HAS_DS: u32 = 4;
const WRITE0: u32 = 8;
const WRITE1: u32 = 16;
const PART1: u32 = 32;

const ALL_READ_TWO_WRITE: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::ReadWrite,
];

static STATS: KernelDef = KernelDef {
    shader: "proxy_norm/stats.wgsl",
    entry: "proxy_stats",
    bindings: ALL_READ_TWO_WRITE,
    overrides: &[("ACT", &ACT_CODES)],
};
static STATS_BWD: KernelDef = KernelDef {
    shader: "proxy_norm/stats.wgsl",
    entry: "proxy_stats_backward",
    bindings: ALL_READ_TWO_WRITE,
    overrides: &[("ACT", &ACT_CODES)],
};

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&STATS, &STATS_BWD];

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

/// The proxy parameters of one layer (all per channel, `c` entries).
#[derive(Clone, Copy, Debug)]
pub struct ProxyParams<'a> {
    /// The activation the Proxy Norm wraps (SiLU in EfficientNet).
    pub act: Act,
    /// Channels.
    pub c: usize,
    /// Proxy variance epsilon (normally [`PROXY_EPS`]).
    pub eps: f32,
    /// The activation's input scale gamma (None: 1, the layer has no scale).
    pub gamma: Option<&'a Tensor>,
    /// The activation's input shift beta (None: 0, the layer has no shift).
    pub beta: Option<&'a Tensor>,
    /// Proxy shift beta~ (learnable, init 0).
    pub pshift: &'a Tensor,
    /// Proxy scale gamma~ (learnable, init 0; the proxy std is 1 + gamma~).
    pub pscale: &'a Tensor,
}

/// Where [`proxy_stats_backward`] puts its gradients.
#[derive(Clone, Copy, Debug)]
pub struct ProxyGrads<'a> {
    /// d loss / d gamma: the proxy-path gradient is ADDED (it already holds the direct
    /// gradient from the norm backward). None when the layer has no scale.
    pub dgamma: Option<&'a Tensor>,
    /// d loss / d beta, ADDED like `dgamma`. None when the layer has no shift.
    pub dbeta: Option<&'a Tensor>,
    /// d loss / d pshift, WRITTEN (the statistics are its only path).
    pub dpshift: &'a Tensor,
    /// d loss / d pscale, WRITTEN.
    pub dpscale: &'a Tensor,
}

fn check_params(p: &ProxyParams) -> Result<()> {
    let c = p.c;
    let bad = |t: Option<&Tensor>| t.is_some_and(|t| t.len() != c);
    if c == 0 || p.pshift.len() != c || p.pscale.len() != c || bad(p.gamma) || bad(p.beta) {
        return Err(Error::Shape(format!(
            "proxy statistics over {c} channels: every parameter must have {c} entries"
        )));
    }
    Ok(())
}

fn base_flags(p: &ProxyParams) -> u32 {
    let mut f = 0;
    if p.gamma.is_some() {
        f |= HAS_GAMMA;
    }
    if p.beta.is_some() {
        f |= HAS_BETA;
    }
    f
}

/// Record the proxy statistics `mu~` (into `mu`) and `s~` (into `s`), `c` entries each.
pub fn proxy_stats(rec: &mut Recorder, p: &ProxyParams, mu: &Tensor, s: &Tensor) -> Result<()> {
    check_params(p)?;
    if mu.len() != p.c || s.len() != p.c {
        return Err(Error::Shape(format!(
            "proxy statistics outputs {:?}, {:?} for {} channels",
            mu.shape(),
            s.shape(),
            p.c
        )));
    }
    let ph = p.pshift;
    rec.dispatch(
        &STATS,
        &[("ACT", p.act.code())],
        &[
            p.c as u32,
            base_flags(p),
            p.eps.to_bits(),
            PROXY_POINTS as u32,
        ],
        &[
            p.gamma.unwrap_or(ph),
            p.beta.unwrap_or(ph),
            ph,
            p.pscale,
            ph,
            ph,
            mu,
            s,
        ],
        Grid::Linear(groups_for(p.c, 64)),
    )
}

/// Record the exact chain of `dmu~` and `ds~` (None: zero, e.g. when the layer drops the
/// s~ factor and nothing else uses it) through [`proxy_stats`]: adds into `dgamma`,
/// `dbeta` and writes `dpshift`, `dpscale` (see [`ProxyGrads`]). Two small dispatches.
pub fn proxy_stats_backward(
    rec: &mut Recorder,
    p: &ProxyParams,
    dmu: &Tensor,
    ds: Option<&Tensor>,
    grads: &ProxyGrads,
) -> Result<()> {
    check_params(p)?;
    let c = p.c;
    let wrong = |t: &Tensor| t.len() != c;
    if wrong(dmu)
        || ds.is_some_and(wrong)
        || wrong(grads.dpshift)
        || wrong(grads.dpscale)
        || grads.dgamma.is_some_and(wrong)
        || grads.dbeta.is_some_and(wrong)
    {
        return Err(Error::Shape(format!(
            "proxy statistics backward over {c} channels: every gradient must have {c} entries"
        )));
    }
    let mut flags = base_flags(p);
    if ds.is_some() {
        flags |= HAS_DS;
    }
    let ph = p.pshift;
    let reads = [
        p.gamma.unwrap_or(ph),
        p.beta.unwrap_or(ph),
        ph,
        p.pscale,
        dmu,
        ds.unwrap_or(dmu),
    ];
    let grid = Grid::Linear(groups_for(c, 64));
    let consts = [("ACT", p.act.code())];
    // Part 0: gamma and beta (only those the layer has and the caller wants).
    let dg = grads.dgamma.filter(|_| p.gamma.is_some());
    let db = grads.dbeta.filter(|_| p.beta.is_some());
    if let Some(first) = dg.or(db) {
        let mut f = flags;
        if dg.is_some() {
            f |= WRITE0;
        }
        if db.is_some() {
            f |= WRITE1;
        }
        // An absent output aliases the present one; the shader never writes it.
        let (o0, o1) = (dg.unwrap_or(first), db.unwrap_or(first));
        rec.dispatch(
            &STATS_BWD,
            &consts,
            &[c as u32, f, p.eps.to_bits(), PROXY_POINTS as u32],
            &[
                reads[0], reads[1], reads[2], reads[3], reads[4], reads[5], o0, o1,
            ],
            grid,
        )?;
    }
    // Part 1: the proxy shift and scale.
    rec.dispatch(
        &STATS_BWD,
        &consts,
        &[
            c as u32,
            flags | PART1 | WRITE0 | WRITE1,
            p.eps.to_bits(),
            PROXY_POINTS as u32,
        ],
        &[
            reads[0],
            reads[1],
            reads[2],
            reads[3],
            reads[4],
            reads[5],
            grads.dpshift,
            grads.dpscale,
        ],
        grid,
    )
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

/// Harness case for the proxy statistics alone: inputs (gamma, beta if present, pshift,
/// pscale), outputs (mu~, s~).
pub struct ProxyStatsCase {
    /// Activation.
    pub act: Act,
    /// Channels.
    pub c: usize,
    /// With gamma and beta (otherwise 1 and 0).
    pub affine: bool,
}

impl ProxyStatsCase {
    fn split<'a>(&self, i: &'a [HostTensor]) -> ProxyRef<'a> {
        let k = if self.affine { 2 } else { 0 };
        ProxyRef {
            act: self.act,
            eps: PROXY_EPS as f64,
            gamma: self.affine.then(|| &i[0].data[..]),
            beta: self.affine.then(|| &i[1].data[..]),
            pshift: &i[k].data,
            pscale: &i[k + 1].data,
        }
    }
}

impl OpCase for ProxyStatsCase {
    fn name(&self) -> String {
        format!(
            "proxy_stats/{}{}[{}]",
            self.act.name(),
            if self.affine { "/affine" } else { "" },
            self.c
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let c = self.c;
        let mut v = Vec::new();
        if self.affine {
            let g: Vec<f64> = rng
                .normals_f32(c, 0.3)
                .into_iter()
                .map(|x| (1.0 + x) as f32 as f64)
                .collect();
            v.push(Input::diff(HostTensor::new(&[c], g)));
            v.push(Input::diff(HostTensor::randn(&[c], 0.5, rng)));
        }
        v.push(Input::diff(HostTensor::randn(&[c], 0.4, rng)));
        v.push(Input::diff(HostTensor::randn(&[c], 0.3, rng)));
        v
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let (mu, s) = proxy_stats_ref(&self.split(i));
        vec![
            HostTensor::new(&[self.c], mu),
            HostTensor::new(&[self.c], s),
        ]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let [dg, db, dsh, dsc] =
            proxy_stats_backward_ref(&self.split(i), &dy[0].data, Some(&dy[1].data));
        let c = [self.c];
        let mut v = Vec::new();
        if self.affine {
            v.push(Some(HostTensor::new(&c, dg)));
            v.push(Some(HostTensor::new(&c, db)));
        }
        v.push(Some(HostTensor::new(&c, dsh)));
        v.push(Some(HostTensor::new(&c, dsc)));
        v
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let t: Vec<Tensor> = i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?;
        let k = if self.affine { 2 } else { 0 };
        let p = ProxyParams {
            act: self.act,
            c: self.c,
            eps: PROXY_EPS,
            gamma: self.affine.then(|| &t[0]),
            beta: self.affine.then(|| &t[1]),
            pshift: &t[k],
            pscale: &t[k + 1],
        };
        let mu = gpu.zeros(&[self.c])?;
        let s = gpu.zeros(&[self.c])?;
        run_gpu(gpu, |r| proxy_stats(r, &p, &mu, &s))?;
        Ok(vec![gpu.read(&mu)?, gpu.read(&s)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let t: Vec<Tensor> = i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?;
        let k = if self.affine { 2 } else { 0 };
        let p = ProxyParams {
            act: self.act,
            c: self.c,
            eps: PROXY_EPS,
            gamma: self.affine.then(|| &t[0]),
            beta: self.affine.then(|| &t[1]),
            pshift: &t[k],
            pscale: &t[k + 1],
        };
        let dmu = dy[0].upload(gpu)?;
        let ds = dy[1].upload(gpu)?;
        let g: Vec<Tensor> = (0..4)
            .map(|_| gpu.zeros(&[self.c]))
            .collect::<Result<_>>()?;
        let grads = ProxyGrads {
            dgamma: Some(&g[0]),
            dbeta: Some(&g[1]),
            dpshift: &g[2],
            dpscale: &g[3],
        };
        run_gpu(gpu, |r| {
            proxy_stats_backward(r, &p, &dmu, Some(&ds), &grads)
        })?;
        let mut v = Vec::new();
        if self.affine {
            v.push(Some(gpu.read(&g[0])?));
            v.push(Some(gpu.read(&g[1])?));
        }
        v.push(Some(gpu.read(&g[2])?));
        v.push(Some(gpu.read(&g[3])?));
        Ok(v)
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 1e-5,
            backward: 1e-4,
            gradcheck: 1e-6,
        }
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for act in [Act::Silu, Act::Relu, Act::Identity] {
        v.push(Box::new(ProxyStatsCase {
            act,
            c: 37,
            affine: true,
        }));
    }
    v.push(Box::new(ProxyStatsCase {
        act: Act::Silu,
        c: 70,
        affine: false,
    }));
    v
}
