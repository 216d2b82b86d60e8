//! Squeeze-excitation on NHWC activations:
//! `pooled = mean_{h,w} x`, `h1 = pooled . w1 + b1`, `a1 = silu(h1)`, `h2 = a1 . w2 + b2`,
//! `gate = sigmoid(h2)`, `y = x * gate[n, c]`, with `w1 [c, hidden]`, `w2 [hidden, c]`.
//!
//! Forward records 6 dispatches (7 when the pooling is split) and keeps `pooled`, `h1`,
//! `a1`, `h2` and `gate` in an [`SeSaved`] for the backward pass, which also reads `x`.
//! Backward uses the temporaries of an [`SeTemp`] and ends in one fused kernel for
//! `dx = dy * gate + dpooled / (h*w)`. Nothing is allocated inside the launchers.

use super::act::{self, Act};
use super::elementwise;
use super::linear::{self, LinearSpec};
use super::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use super::pool::{self, GapSpec};
use super::reduce;
use crate::error::{Error, Result};
use crate::gpu::{groups_for, Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

static SE_DX: KernelDef = KernelDef {
    shader: "squeeze_excite/backward_data.wgsl",
    entry: "se_backward_data",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[],
};

/// One squeeze-excitation block on `[n, h, w, c]` with hidden width `hidden`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeSpec {
    /// Batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Hidden width of the bottleneck.
    pub hidden: usize,
}

impl SeSpec {
    fn gap(&self) -> GapSpec {
        GapSpec {
            n: self.n,
            h: self.h,
            w: self.w,
            c: self.c,
        }
    }

    /// The squeeze layer `[c] -> [hidden]`.
    pub fn fc1(&self) -> LinearSpec {
        LinearSpec {
            rows: self.n,
            cin: self.c,
            cout: self.hidden,
            bias: true,
        }
    }

    /// The excite layer `[hidden] -> [c]`.
    pub fn fc2(&self) -> LinearSpec {
        LinearSpec {
            rows: self.n,
            cin: self.hidden,
            cout: self.c,
            bias: true,
        }
    }

    /// Elements of scratch [`forward`] and [`backward`] need (one buffer serves both).
    pub fn scratch_len(&self) -> usize {
        self.gap()
            .scratch_len()
            .max(self.fc1().scratch_len())
            .max(self.fc2().scratch_len())
    }

    /// Activation elements `n*h*w*c`.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// True when the activation is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The block's parameters.
pub struct SeWeights<'a> {
    /// `[c, hidden]`.
    pub w1: &'a Tensor,
    /// `[hidden]`.
    pub b1: &'a Tensor,
    /// `[hidden, c]`.
    pub w2: &'a Tensor,
    /// `[c]`.
    pub b2: &'a Tensor,
}

/// Gradients of the block's parameters (overwritten by [`backward`]).
pub struct SeGrads<'a> {
    /// `[c, hidden]`.
    pub dw1: &'a Tensor,
    /// `[hidden]`.
    pub db1: &'a Tensor,
    /// `[hidden, c]`.
    pub dw2: &'a Tensor,
    /// `[c]`.
    pub db2: &'a Tensor,
}

/// What [`forward`] keeps for [`backward`] (all small: `[n, c]` or `[n, hidden]`).
pub struct SeSaved {
    /// Pooled input `[n, c]`.
    pub pooled: Tensor,
    /// Squeeze pre-activation `[n, hidden]`.
    pub h1: Tensor,
    /// Squeeze activation `silu(h1)` `[n, hidden]`.
    pub a1: Tensor,
    /// Excite pre-activation `[n, c]`.
    pub h2: Tensor,
    /// Gate `sigmoid(h2)` `[n, c]`.
    pub gate: Tensor,
}

impl SeSaved {
    /// Allocate for a spec.
    pub fn new(gpu: &Gpu, s: &SeSpec) -> Result<Self> {
        Ok(Self {
            pooled: gpu.zeros(&[s.n, s.c])?,
            h1: gpu.zeros(&[s.n, s.hidden])?,
            a1: gpu.zeros(&[s.n, s.hidden])?,
            h2: gpu.zeros(&[s.n, s.c])?,
            gate: gpu.zeros(&[s.n, s.c])?,
        })
    }
}

/// Backward temporaries (free again once [`backward`] has run).
pub struct SeTemp {
    /// `[n, c]`.
    pub dgate: Tensor,
    /// `[n, c]`.
    pub dh2: Tensor,
    /// `[n, hidden]`.
    pub da1: Tensor,
    /// `[n, hidden]`.
    pub dh1: Tensor,
    /// `[n, c]`.
    pub dpooled: Tensor,
}

impl SeTemp {
    /// Allocate for a spec.
    pub fn new(gpu: &Gpu, s: &SeSpec) -> Result<Self> {
        Ok(Self {
            dgate: gpu.zeros(&[s.n, s.c])?,
            dh2: gpu.zeros(&[s.n, s.c])?,
            da1: gpu.zeros(&[s.n, s.hidden])?,
            dh1: gpu.zeros(&[s.n, s.hidden])?,
            dpooled: gpu.zeros(&[s.n, s.c])?,
        })
    }
}

fn check_x(s: &SeSpec, ts: &[&Tensor]) -> Result<()> {
    if s.n == 0 || s.h == 0 || s.w == 0 || s.c == 0 || s.hidden == 0 {
        return Err(Error::Config(format!(
            "squeeze-excitation {s:?}: empty size"
        )));
    }
    for t in ts {
        if t.len() != s.len() {
            return Err(Error::Shape(format!(
                "squeeze-excitation {s:?}: activation of shape {:?}",
                t.shape()
            )));
        }
    }
    Ok(())
}

/// Record the forward pass `y = x * sigmoid(fc2(silu(fc1(mean x))))`, filling `saved`.
/// `scratch` must hold [`SeSpec::scratch_len`] elements when that is non-zero.
pub fn forward(
    rec: &mut Recorder,
    s: &SeSpec,
    x: &Tensor,
    p: &SeWeights,
    y: &Tensor,
    saved: &SeSaved,
    scratch: Option<&Tensor>,
) -> Result<()> {
    check_x(s, &[x, y])?;
    let x4 = x.reshape(&[s.n, s.h, s.w, s.c])?;
    pool::forward(rec, &s.gap(), x, &saved.pooled, scratch)?;
    linear::forward(rec, &s.fc1(), &saved.pooled, p.w1, Some(p.b1), &saved.h1)?;
    act::forward(rec, Act::Silu, &saved.h1, &saved.a1)?;
    linear::forward(rec, &s.fc2(), &saved.a1, p.w2, Some(p.b2), &saved.h2)?;
    act::forward(rec, Act::Sigmoid, &saved.h2, &saved.gate)?;
    elementwise::channel_scale(rec, &x4, &saved.gate, y)
}

/// Record the backward pass: `dx` and the parameter gradients (all overwritten) from
/// `dy`, the input `x` and what [`forward`] saved. `scratch` as for [`forward`].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    rec: &mut Recorder,
    s: &SeSpec,
    x: &Tensor,
    p: &SeWeights,
    saved: &SeSaved,
    dy: &Tensor,
    dx: &Tensor,
    g: &SeGrads,
    tmp: &SeTemp,
    scratch: Option<&Tensor>,
) -> Result<()> {
    check_x(s, &[x, dy, dx])?;
    // dgate[n, c] = sum_p dy * x
    reduce::sum_axis(rec, dy, Some(x), &tmp.dgate, s.gap().axes(), 1.0, scratch)?;
    act::backward(rec, Act::Sigmoid, &saved.h2, &tmp.dgate, &tmp.dh2)?;
    linear::backward_weight(
        rec,
        &s.fc2(),
        &saved.a1,
        &tmp.dh2,
        g.dw2,
        Some(g.db2),
        scratch,
    )?;
    linear::backward_data(rec, &s.fc2(), &tmp.dh2, p.w2, &tmp.da1)?;
    act::backward(rec, Act::Silu, &saved.h1, &tmp.da1, &tmp.dh1)?;
    linear::backward_weight(
        rec,
        &s.fc1(),
        &saved.pooled,
        &tmp.dh1,
        g.dw1,
        Some(g.db1),
        scratch,
    )?;
    linear::backward_data(rec, &s.fc1(), &tmp.dh1, p.w1, &tmp.dpooled)?;
    let n = s.len();
    rec.dispatch(
        &SE_DX,
        &[],
        &[
            n as u32,
            (s.h * s.w) as u32,
            s.c as u32,
            (1.0 / (s.h * s.w) as f32).to_bits(),
        ],
        &[dy, &saved.gate, &tmp.dpooled, dx],
        Grid::Linear(groups_for(n, 256)),
    )
}

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

/// Harness case: one squeeze-excitation block (gradients to x and all four parameters).
pub struct SeCase {
    /// The block.
    pub spec: SeSpec,
}

impl OpCase for SeCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "squeeze_excite[{}x{}x{}x{} hidden {}]",
            s.n, s.h, s.w, s.c, s.hidden
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        vec![
            Input::diff(HostTensor::randn(&[s.n, s.h, s.w, s.c], 1.0, rng)),
            Input::diff(HostTensor::randn(
                &[s.c, s.hidden],
                1.0 / (s.c as f64).sqrt(),
                rng,
            )),
            Input::diff(HostTensor::randn(&[s.hidden], 0.5, rng)),
            Input::diff(HostTensor::randn(
                &[s.hidden, s.c],
                1.0 / (s.hidden as f64).sqrt(),
                rng,
            )),
            Input::diff(HostTensor::randn(&[s.c], 0.5, rng)),
        ]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let s = &self.spec;
        let (y, ..) = forward_ref(
            s, &i[0].data, &i[1].data, &i[2].data, &i[3].data, &i[4].data,
        );
        vec![HostTensor::new(&i[0].shape, y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let (dx, dw1, db1, dw2, db2) = backward_ref(
            s,
            &i[0].data,
            &i[1].data,
            &i[2].data,
            &i[3].data,
            &i[4].data,
            &dy[0].data,
        );
        [dx, dw1, db1, dw2, db2]
            .into_iter()
            .zip(i)
            .map(|(d, t)| Some(HostTensor::new(&t.shape, d)))
            .collect()
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let s = &self.spec;
        let t: Vec<Tensor> = i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?;
        let y = gpu.zeros(&i[0].shape)?;
        let saved = SeSaved::new(gpu, s)?;
        let scratch = gpu.zeros(&[s.scratch_len().max(1)])?;
        let p = SeWeights {
            w1: &t[1],
            b1: &t[2],
            w2: &t[3],
            b2: &t[4],
        };
        run_gpu(gpu, |r| {
            forward(r, s, &t[0], &p, &y, &saved, Some(&scratch))
        })?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let s = &self.spec;
        let t: Vec<Tensor> = i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?;
        let g = dy[0].upload(gpu)?;
        let y = gpu.zeros(&i[0].shape)?;
        let saved = SeSaved::new(gpu, s)?;
        let tmp = SeTemp::new(gpu, s)?;
        let scratch = gpu.zeros(&[s.scratch_len().max(1)])?;
        let grads: Vec<Tensor> = i
            .iter()
            .map(|h| gpu.zeros(&h.shape))
            .collect::<Result<_>>()?;
        let p = SeWeights {
            w1: &t[1],
            b1: &t[2],
            w2: &t[3],
            b2: &t[4],
        };
        let gr = SeGrads {
            dw1: &grads[1],
            db1: &grads[2],
            dw2: &grads[3],
            db2: &grads[4],
        };
        run_gpu(gpu, |r| {
            forward(r, s, &t[0], &p, &y, &saved, Some(&scratch))?;
            backward(
                r,
                s,
                &t[0],
                &p,
                &saved,
                &g,
                &grads[0],
                &gr,
                &tmp,
                Some(&scratch),
            )
        })?;
        grads.iter().map(|d| Ok(Some(gpu.read(d)?))).collect()
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 2e-5,
            // Central differences of a loss summed over ~10^4 outputs lose ~6 digits to
            // rounding on the small squeeze-weight gradients.
            gradcheck: 2e-5,
        }
    }
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&SE_DX];

/// Harness cases: odd sizes, batch 1, a hidden width of 1, and a long pooling (split).
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(SeCase {
            spec: SeSpec {
                n: 2,
                h: 5,
                w: 3,
                c: 7,
                hidden: 3,
            },
        }),
        Box::new(SeCase {
            spec: SeSpec {
                n: 1,
                h: 47,
                w: 45,
                c: 6,
                hidden: 1,
            },
        }),
    ]
}
