//! Harness cases of Proxy Norm's statistics alone (the fused norm + PN cases live in
//! [`crate::ops::norm`]'s cases, composed with these statistics).

use super::{
    proxy_stats, proxy_stats_backward, proxy_stats_backward_ref, proxy_stats_ref, ProxyGrads,
    ProxyParams, ProxyRef, PROXY_EPS,
};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::act::Act;
use crate::ops::harness::{upload_dy, HostTensor, Input, OpCase, Prepared, Tolerance};
use crate::util::Rng;

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
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let c = [self.c];
        Ok(Box::new(ProxyStatsRun {
            case: self,
            t: i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?,
            mu: gpu.zeros(&c)?,
            s: gpu.zeros(&c)?,
            dmu: upload_dy(gpu, dy, 0, &c)?,
            ds: upload_dy(gpu, dy, 1, &c)?,
            g: (0..4).map(|_| gpu.zeros(&c)).collect::<Result<_>>()?,
        }))
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 1e-5,
            backward: 1e-4,
            gradcheck: 1e-6,
        }
    }
}

/// The tensors of one [`ProxyStatsCase`] run.
struct ProxyStatsRun<'a> {
    case: &'a ProxyStatsCase,
    t: Vec<Tensor>,
    mu: Tensor,
    s: Tensor,
    dmu: Tensor,
    ds: Tensor,
    /// dgamma, dbeta, dpshift, dpscale.
    g: Vec<Tensor>,
}

impl ProxyStatsRun<'_> {
    fn params(&self) -> ProxyParams<'_> {
        let (t, affine) = (&self.t, self.case.affine);
        let k = if affine { 2 } else { 0 };
        ProxyParams {
            act: self.case.act,
            c: self.case.c,
            eps: PROXY_EPS,
            gamma: affine.then(|| &t[0]),
            beta: affine.then(|| &t[1]),
            pshift: &t[k],
            pscale: &t[k + 1],
        }
    }
}

impl Prepared for ProxyStatsRun<'_> {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        proxy_stats(r, &self.params(), &self.mu, &self.s)
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        let g = &self.g;
        let grads = ProxyGrads {
            dgamma: Some(&g[0]),
            dbeta: Some(&g[1]),
            dpshift: &g[2],
            dpscale: &g[3],
        };
        proxy_stats_backward(r, &self.params(), &self.dmu, Some(&self.ds), &grads)
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.mu)?, gpu.read(&self.s)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        let g = &self.g;
        let mut v = Vec::new();
        if self.case.affine {
            v.push(Some(gpu.read(&g[0])?));
            v.push(Some(gpu.read(&g[1])?));
        }
        v.push(Some(gpu.read(&g[2])?));
        v.push(Some(gpu.read(&g[3])?));
        Ok(v)
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
