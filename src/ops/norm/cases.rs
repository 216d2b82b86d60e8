//! Harness cases of the fused normalization: BatchNorm, LayerNorm, GroupNorm and instance
//! norm with every activation and affine variant, long (multi-chunk) shapes, large means,
//! and LayerNorm / GroupNorm / BatchNorm + Proxy Norm composed with the proxy statistics.

use super::{
    backward, backward_ref, forward, forward_ref, NormGrads, NormKind, NormParams, NormSpec,
    RefParams,
};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::act::Act;
use crate::ops::harness::{upload_dy, HostTensor, Input, OpCase, Prepared, Tolerance};
use crate::ops::proxy_norm::{self, ProxyGrads, ProxyParams, ProxyRef, PROXY_EPS};
use crate::util::Rng;

/// Harness case: a training-mode normalization layer, composed with the proxy statistics
/// when Proxy Norm is on, so gradients to gamma, beta, the proxy shift and scale flow
/// through `mu~` and `s~` exactly. Inputs: x, then gamma, beta (if the spec has them),
/// then pshift, pscale (with Proxy Norm), then for a frozen BatchNorm the running mean and
/// variance (constants: no gradient flows to them). Output: y.
pub struct NormCase {
    /// The layer.
    pub spec: NormSpec,
    /// Offset added to x (tests robustness to a large mean).
    pub offset: f64,
}

/// Indices of the optional inputs of a [`NormCase`].
#[derive(Clone, Copy)]
struct Slots {
    gamma: Option<usize>,
    beta: Option<usize>,
    pshift: Option<usize>,
    pscale: Option<usize>,
    /// The running mean (the variance follows it) of a frozen BatchNorm.
    running: Option<usize>,
}

impl NormCase {
    fn slots(&self) -> Slots {
        let mut k = 1;
        let mut next = |on: bool| {
            on.then(|| {
                k += 1;
                k - 1
            })
        };
        let gamma = next(self.spec.scale);
        let beta = next(self.spec.shift);
        let pshift = next(self.spec.proxy.is_some());
        let pscale = next(self.spec.proxy.is_some());
        let running = next(self.spec.frozen);
        Slots {
            gamma,
            beta,
            pshift,
            pscale,
            running,
        }
    }

    fn shape(&self) -> [usize; 3] {
        [self.spec.n, self.spec.hw, self.spec.c]
    }

    fn proxy_ref<'a>(&self, i: &'a [HostTensor]) -> Option<ProxyRef<'a>> {
        let s = self.slots();
        self.spec.proxy.map(|_| ProxyRef {
            act: self.spec.act,
            eps: PROXY_EPS as f64,
            gamma: s.gamma.map(|k| &i[k].data[..]),
            beta: s.beta.map(|k| &i[k].data[..]),
            pshift: &i[s.pshift.unwrap()].data,
            pscale: &i[s.pscale.unwrap()].data,
        })
    }

    /// The frozen running (mean, variance) among the inputs.
    fn running_ref<'a>(&self, i: &'a [HostTensor]) -> Option<(&'a [f64], &'a [f64])> {
        self.slots()
            .running
            .map(|k| (&i[k].data[..], &i[k + 1].data[..]))
    }
}

/// GPU tensors of one [`NormCase`] run.
struct NormRun<'a> {
    case: &'a NormCase,
    x: Tensor,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
    pshift: Option<Tensor>,
    pscale: Option<Tensor>,
    mu: Tensor,
    s: Tensor,
    run_mean: Tensor,
    run_var: Tensor,
    y: Tensor,
    saved: Tensor,
    scratch: Tensor,
    dy: Tensor,
    dx: Tensor,
    /// dgamma, dbeta, dmu~, ds~, dpshift, dpscale.
    grads: [Tensor; 6],
}

impl<'a> NormRun<'a> {
    fn new(
        gpu: &Gpu,
        case: &'a NormCase,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Self> {
        let sl = case.slots();
        let up = |k: Option<usize>| k.map(|k| i[k].upload(gpu)).transpose();
        let c = case.spec.c;
        let (run_mean, run_var) = match sl.running {
            Some(k) => (i[k].upload(gpu)?, i[k + 1].upload(gpu)?),
            None => (gpu.zeros(&[c])?, gpu.upload(&vec![1.0; c], &[c])?),
        };
        let grads = (0..6)
            .map(|_| gpu.zeros(&[c]))
            .collect::<Result<Vec<_>>>()?
            .try_into()
            .expect("six tensors");
        Ok(Self {
            case,
            x: i[0].upload(gpu)?,
            gamma: up(sl.gamma)?,
            beta: up(sl.beta)?,
            pshift: up(sl.pshift)?,
            pscale: up(sl.pscale)?,
            mu: gpu.zeros(&[c])?,
            s: gpu.zeros(&[c])?,
            run_mean,
            run_var,
            y: gpu.zeros(&case.shape())?,
            saved: gpu.zeros(&[case.spec.saved_len()])?,
            scratch: gpu.zeros(&[case.spec.scratch_len()])?,
            dy: upload_dy(gpu, dy, 0, &case.shape())?,
            dx: gpu.zeros(&case.shape())?,
            grads,
        })
    }

    fn params(&self) -> NormParams<'_> {
        NormParams {
            gamma: self.gamma.as_ref(),
            beta: self.beta.as_ref(),
            running_mean: Some(&self.run_mean),
            running_var: Some(&self.run_var),
            proxy_mu: Some(&self.mu),
            proxy_s: Some(&self.s),
        }
    }

    fn proxy_params(&self) -> Option<ProxyParams<'_>> {
        let case = self.case;
        case.spec.proxy.map(|_| ProxyParams {
            act: case.spec.act,
            c: case.spec.c,
            eps: PROXY_EPS,
            gamma: self.gamma.as_ref(),
            beta: self.beta.as_ref(),
            pshift: self.pshift.as_ref().unwrap(),
            pscale: self.pscale.as_ref().unwrap(),
        })
    }
}

impl Prepared for NormRun<'_> {
    /// The proxy statistics (with Proxy Norm) and the training-mode forward.
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        if let Some(pp) = self.proxy_params() {
            proxy_norm::proxy_stats(r, &pp, &self.mu, &self.s)?;
        }
        forward(
            r,
            &self.case.spec,
            true,
            &self.x,
            &self.params(),
            &self.y,
            &self.saved,
            &self.scratch,
        )
    }
    /// The backward, and with Proxy Norm the statistics' backward (which adds into
    /// dgamma and dbeta).
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        let spec = &self.case.spec;
        let [dgamma, dbeta, dmu, ds, dpshift, dpscale] = &self.grads;
        let grads = NormGrads {
            dgamma: Some(dgamma),
            dbeta: Some(dbeta),
            dmu: Some(dmu),
            ds: Some(ds),
        };
        backward(
            r,
            spec,
            &self.x,
            &self.dy,
            &self.params(),
            &self.saved,
            &self.dx,
            &grads,
            &self.scratch,
        )?;
        if let Some(pp) = self.proxy_params() {
            let apply = spec.proxy.is_some_and(|m| m.apply_scale);
            let pg = ProxyGrads {
                dgamma: Some(dgamma),
                dbeta: Some(dbeta),
                dpshift,
                dpscale,
            };
            proxy_norm::proxy_stats_backward(r, &pp, dmu, apply.then_some(ds), &pg)?;
        }
        Ok(())
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        let sl = self.case.slots();
        let g = &self.grads;
        let mut out = vec![Some(gpu.read(&self.dx)?)];
        if sl.gamma.is_some() {
            out.push(Some(gpu.read(&g[0])?));
        }
        if sl.beta.is_some() {
            out.push(Some(gpu.read(&g[1])?));
        }
        if self.case.spec.proxy.is_some() {
            out.push(Some(gpu.read(&g[4])?));
            out.push(Some(gpu.read(&g[5])?));
        }
        Ok(out)
    }
}

fn f32_round(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

impl OpCase for NormCase {
    fn name(&self) -> String {
        let s = &self.spec;
        let affine = match (s.scale, s.shift) {
            (true, true) => "affine",
            (true, false) => "scale",
            (false, true) => "shift",
            (false, false) => "plain",
        };
        format!(
            "norm:{}/{}/{}[{}x{}x{}]",
            s.kind_name(),
            s.act.name(),
            affine,
            s.n,
            s.hw,
            s.c
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let c = self.spec.c;
        let sl = self.slots();
        let x = rng
            .normals_f32(self.spec.numel(), 1.5)
            .into_iter()
            .map(|v| v + self.offset)
            .collect();
        let mut v = vec![Input::diff(HostTensor::new(&self.shape(), f32_round(x)))];
        if sl.gamma.is_some() {
            let g = rng
                .normals_f32(c, 0.3)
                .into_iter()
                .map(|v| 1.0 + v)
                .collect();
            v.push(Input::diff(HostTensor::new(&[c], f32_round(g))));
        }
        if sl.beta.is_some() {
            v.push(Input::diff(HostTensor::randn(&[c], 0.4, rng)));
        }
        if sl.pshift.is_some() {
            v.push(Input::diff(HostTensor::randn(&[c], 0.3, rng)));
            v.push(Input::diff(HostTensor::randn(&[c], 0.2, rng)));
        }
        if sl.running.is_some() {
            // Statistics near, not at, the batch's own (x ~ offset + 1.5 N(0, 1)).
            let mean = rng
                .normals_f32(c, 0.5)
                .into_iter()
                .map(|v| v + self.offset)
                .collect();
            let var = rng
                .normals_f32(c, 0.4)
                .into_iter()
                .map(|v| 2.25 * v.exp())
                .collect();
            v.push(Input::constant(HostTensor::new(&[c], f32_round(mean))));
            v.push(Input::constant(HostTensor::new(&[c], f32_round(var))));
        }
        v
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let sl = self.slots();
        let stats = self.proxy_ref(i).map(|p| proxy_norm::proxy_stats_ref(&p));
        let p = RefParams {
            gamma: sl.gamma.map(|k| &i[k].data[..]),
            beta: sl.beta.map(|k| &i[k].data[..]),
            running: self.running_ref(i),
            proxy: stats.as_ref().map(|(m, s)| (&m[..], &s[..])),
        };
        let f = forward_ref(&self.spec, true, &i[0].data, &p);
        vec![HostTensor::new(&self.shape(), f.y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let sl = self.slots();
        let c = [self.spec.c];
        let pr = self.proxy_ref(i);
        let stats = pr.as_ref().map(proxy_norm::proxy_stats_ref);
        let p = RefParams {
            gamma: sl.gamma.map(|k| &i[k].data[..]),
            beta: sl.beta.map(|k| &i[k].data[..]),
            running: self.running_ref(i),
            proxy: stats.as_ref().map(|(m, s)| (&m[..], &s[..])),
        };
        let mut b = backward_ref(&self.spec, &i[0].data, &dy[0].data, &p);
        let mut out = vec![Some(HostTensor::new(&self.shape(), b.dx.clone()))];
        let mut proxy_grads = None;
        if let Some(pr) = pr {
            let apply = self.spec.proxy.is_some_and(|m| m.apply_scale);
            let [dg, db, dsh, dsc] =
                proxy_norm::proxy_stats_backward_ref(&pr, &b.dmu, apply.then_some(&b.ds[..]));
            b.dgamma.iter_mut().zip(dg).for_each(|(a, v)| *a += v);
            b.dbeta.iter_mut().zip(db).for_each(|(a, v)| *a += v);
            proxy_grads = Some((dsh, dsc));
        }
        if sl.gamma.is_some() {
            out.push(Some(HostTensor::new(&c, b.dgamma)));
        }
        if sl.beta.is_some() {
            out.push(Some(HostTensor::new(&c, b.dbeta)));
        }
        if let Some((dsh, dsc)) = proxy_grads {
            out.push(Some(HostTensor::new(&c, dsh)));
            out.push(Some(HostTensor::new(&c, dsc)));
        }
        out
    }
    fn output_shapes(&self, _: &[HostTensor]) -> Vec<Vec<usize>> {
        vec![self.shape().to_vec()]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        Ok(Box::new(NormRun::new(gpu, self, i, dy)?))
    }
    fn tolerance(&self) -> Tolerance {
        // Proxy Norm gradients sum 200-point chains that partly cancel: looser.
        let backward = if self.spec.proxy.is_some() {
            1e-4
        } else {
            3e-5
        };
        Tolerance {
            forward: 1e-5,
            backward,
            gradcheck: 1e-6,
        }
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    let mut add = |spec: NormSpec, offset: f64| v.push(Box::new(NormCase { spec, offset }));
    let acts = [Act::Silu, Act::Relu, Act::Identity];
    // BatchNorm (training): every activation with affine, no affine, scale only; a long
    // shape that takes the split (multi-chunk) statistics path; and BN + PN.
    let bn = NormSpec::new(4, 30, 6, NormKind::Batch);
    for act in acts {
        add(bn.with_act(act), 0.5);
    }
    add(bn.with_act(Act::Silu).with_affine(false, false), 0.5);
    add(bn.with_act(Act::Identity).with_affine(true, false), 0.5);
    add(
        NormSpec::new(4, 1600, 3, NormKind::Batch).with_act(Act::Silu),
        3.0,
    );
    add(bn.with_act(Act::Silu).with_proxy(true), 0.5);
    // A mean far from zero relative to the spread (|mean| / std ~ 13).
    add(
        NormSpec::new(3, 40, 4, NormKind::Batch).with_act(Act::Silu),
        20.0,
    );
    // Frozen BatchNorm (running statistics as constants): every activation, no affine,
    // scale only, the multi-chunk shape, a large mean, and with Proxy Norm.
    let frozen = bn.with_frozen(true);
    for act in acts {
        add(frozen.with_act(act), 0.5);
    }
    add(frozen.with_act(Act::Silu).with_affine(false, false), 0.5);
    add(frozen.with_act(Act::Identity).with_affine(true, false), 0.5);
    add(
        NormSpec::new(4, 1600, 3, NormKind::Batch)
            .with_frozen(true)
            .with_act(Act::Silu),
        3.0,
    );
    add(
        NormSpec::new(3, 40, 4, NormKind::Batch)
            .with_frozen(true)
            .with_act(Act::Silu),
        20.0,
    );
    add(frozen.with_act(Act::Silu).with_proxy(true), 0.5);
    // LayerNorm.
    let ln = NormSpec::new(3, 20, 8, NormKind::layer());
    for act in acts {
        add(ln.with_act(act), 0.5);
    }
    add(ln.with_act(Act::Silu).with_affine(false, false), 0.5);
    add(ln.with_act(Act::Identity).with_affine(true, false), 0.5);
    add(
        NormSpec::new(2, 2304, 4, NormKind::layer()).with_act(Act::Silu),
        3.0,
    );
    // GroupNorm with 4 groups.
    let gn = NormSpec::new(3, 20, 16, NormKind::Group { groups: 4 });
    for act in acts {
        add(gn.with_act(act), 0.5);
    }
    add(gn.with_act(Act::Silu).with_affine(false, false), 0.5);
    add(
        NormSpec::new(2, 50, 8, NormKind::Group { groups: 2 }).with_act(Act::Silu),
        20.0,
    );
    add(
        NormSpec::new(2, 600, 12, NormKind::Group { groups: 4 }).with_act(Act::Relu),
        2.0,
    );
    // Instance norm (G = C).
    let inorm = NormSpec::new(2, 30, 5, NormKind::instance(5));
    add(inorm.with_act(Act::Silu), 0.5);
    add(inorm.with_act(Act::Relu).with_affine(false, false), 0.5);
    // LayerNorm + Proxy Norm. (With the identity the shift cancels against mu~, so that
    // case has a scale only.)
    for act in [Act::Silu, Act::Relu] {
        add(ln.with_act(act).with_proxy(true), 0.5);
    }
    add(
        ln.with_act(Act::Identity)
            .with_affine(true, false)
            .with_proxy(true),
        0.5,
    );
    add(ln.with_act(Act::Silu).with_proxy(false), 0.5);
    add(
        ln.with_act(Act::Silu)
            .with_affine(false, false)
            .with_proxy(true),
        0.5,
    );
    // GroupNorm + Proxy Norm.
    for act in [Act::Silu, Act::Relu] {
        add(gn.with_act(act).with_proxy(true), 0.5);
    }
    add(gn.with_act(Act::Silu).with_proxy(false), 0.5);
    v
}
