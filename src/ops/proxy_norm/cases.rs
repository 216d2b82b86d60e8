//! Harness cases of Proxy Norm's statistics alone (the fused norm + PN cases live in
//! [`crate::ops::norm`]'s cases, composed with these statistics).

use super::{
    proxy_stats, proxy_stats_backward, proxy_stats_backward_ref, proxy_stats_ref, ProxyGrads,
    ProxyParams, ProxyRef, PROXY_EPS,
};
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::ops::act::Act;
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
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
