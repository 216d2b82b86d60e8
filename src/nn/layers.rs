//! Layers: each owns its parameter ids and the small tensors it keeps between passes
//! (saved statistics, scratch, running statistics, proxy statistics), and records its
//! forward and backward dispatches.

use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::nn::{Init, NormChoice, ParamBuilder, ParamId, ParamKind, ParamStore};
use crate::ops::act::Act;
use crate::ops::conv::{self, ConvSpec, Padding};
use crate::ops::linear::{self, LinearSpec};
use crate::ops::norm::{self, NormGrads, NormKind, NormParams, NormSpec};
use crate::ops::proxy_norm::{self, ProxyGrads, ProxyParams, PROXY_EPS};

fn scratch(gpu: &Gpu, len: usize) -> Result<Option<Tensor>> {
    if len == 0 {
        Ok(None)
    } else {
        gpu.zeros(&[len]).map(Some)
    }
}

/// A convolution: pointwise (1x1, dense, stride 1) ones run as a tiled GEMM, the others as
/// the grouped convolution kernels. Weights `[k, k, cin/groups, cout]`, He-normal init
/// (fan-out), no bias by default.
pub struct ConvLayer {
    spec: ConvSpec,
    lin: Option<LinearSpec>,
    w: ParamId,
    b: Option<ParamId>,
    scratch: Option<Tensor>,
}

impl ConvLayer {
    /// Register the layer's parameters and allocate its scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        pb: &mut ParamBuilder,
        name: &str,
        n: usize,
        h: usize,
        w: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        let spec = ConvSpec {
            n,
            h,
            w,
            cin,
            cout,
            k,
            stride,
            groups,
            bias,
            padding: Padding::Symmetric,
        };
        spec.validate()?;
        let lin = (k == 1 && stride == 1 && groups == 1).then_some(LinearSpec {
            rows: n * h * w,
            cin,
            cout,
            bias,
        });
        let fan_out = (k * k * cout / groups) as f64;
        let wid = pb.add(
            format!("{name}.weight"),
            &spec.weight_shape(),
            ParamKind::Weight,
            Init::Normal((2.0 / fan_out).sqrt()),
        );
        let b = bias.then(|| {
            pb.add(
                format!("{name}.bias"),
                &[cout],
                ParamKind::Bias,
                Init::Zeros,
            )
        });
        let len = match &lin {
            Some(l) => l.scratch_len(),
            None => spec.scratch_len(),
        };
        Ok(Self {
            spec,
            lin,
            w: wid,
            b,
            scratch: scratch(gpu, len)?,
        })
    }

    /// With this padding (TensorFlow "SAME" for the `tf_` models); the output size, the
    /// kernels and the buffers are the same either way.
    pub fn with_padding(mut self, padding: Padding) -> Result<Self> {
        self.spec.padding = padding;
        self.spec.validate()?;
        Ok(self)
    }

    /// The convolution's shape.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Weight parameter.
    pub fn weight(&self) -> ParamId {
        self.w
    }

    /// Record y = conv(x).
    pub fn forward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        let bias = self.b.map(|b| s.w(b));
        match &self.lin {
            Some(l) => linear::forward(rec, l, x, s.w(self.w), bias, y),
            None => conv::forward(rec, &self.spec, x, s.w(self.w), bias, y),
        }
    }

    /// Record the weight (and bias) gradient, and dx when asked.
    pub fn backward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        let db = self.b.map(|b| s.g(b));
        match &self.lin {
            Some(l) => {
                if let Some(dx) = dx {
                    linear::backward_data(rec, l, dy, s.w(self.w), dx)?;
                }
                linear::backward_weight(rec, l, x, dy, s.g(self.w), db, self.scratch.as_ref())
            }
            None => {
                if let Some(dx) = dx {
                    conv::backward_data(rec, &self.spec, dy, s.w(self.w), dx)?;
                }
                conv::backward_weight(
                    rec,
                    &self.spec,
                    x,
                    dy,
                    s.g(self.w),
                    db,
                    self.scratch.as_ref(),
                )
            }
        }
    }
}

/// A fully connected layer `y = x W + b` on `[n, cin]` rows; weight `[cin, cout]` with
/// uniform(+-1/sqrt(cin)) init (PyTorch's default range), zero bias.
pub struct LinearLayer {
    spec: LinearSpec,
    w: ParamId,
    b: ParamId,
    scratch: Option<Tensor>,
}

impl LinearLayer {
    /// Register parameters.
    pub fn new(
        gpu: &Gpu,
        pb: &mut ParamBuilder,
        name: &str,
        rows: usize,
        cin: usize,
        cout: usize,
    ) -> Result<Self> {
        let spec = LinearSpec {
            rows,
            cin,
            cout,
            bias: true,
        };
        let w = pb.add(
            format!("{name}.weight"),
            &[cin, cout],
            ParamKind::Weight,
            Init::Uniform(1.0 / (cin as f64).sqrt()),
        );
        let b = pb.add(
            format!("{name}.bias"),
            &[cout],
            ParamKind::Bias,
            Init::Zeros,
        );
        Ok(Self {
            spec,
            w,
            b,
            scratch: scratch(gpu, spec.scratch_len())?,
        })
    }

    /// Record y = x W + b.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        linear::forward(rec, &self.spec, x, s.w(self.w), Some(s.w(self.b)), y)
    }

    /// Record dW, db and (when asked) dx.
    pub fn backward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        if let Some(dx) = dx {
            linear::backward_data(rec, &self.spec, dy, s.w(self.w), dx)?;
        }
        linear::backward_weight(
            rec,
            &self.spec,
            x,
            dy,
            s.g(self.w),
            Some(s.g(self.b)),
            self.scratch.as_ref(),
        )
    }
}

/// Where a normalization sits in an EfficientNet block (decides activation, affine parts
/// and Proxy Norm placement, SPEC §C.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormRole {
    /// Followed by SiLU (stem, expand, depthwise): PN-Act(SiLU) under Proxy Norm.
    Act,
    /// The projection norm: no activation; under Proxy Norm, LayerNorm with scale only.
    Projection,
    /// The head: PN-Act(SiLU) without the s~ factor under Proxy Norm.
    Head,
}

/// Normalization fused with affine, activation and (optionally) Proxy Norm.
pub struct NormActLayer {
    name: String,
    spec: NormSpec,
    gamma: Option<ParamId>,
    beta: Option<ParamId>,
    proxy: Option<(ParamId, ParamId)>,
    running: Option<(Tensor, Tensor)>,
    /// The weight average's running statistics (averaged like the parameters).
    running_avg: Option<(Tensor, Tensor)>,
    proxy_stats: Option<(Tensor, Tensor)>,
    proxy_grads: Option<(Tensor, Tensor)>,
    saved: Tensor,
    scratch: Tensor,
}

impl NormActLayer {
    /// Register the layer's parameters and allocate its statistics buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        pb: &mut ParamBuilder,
        name: &str,
        n: usize,
        hw: usize,
        c: usize,
        choice: NormChoice,
        groups: usize,
        eps: f64,
        role: NormRole,
    ) -> Result<Self> {
        let kind = match choice {
            NormChoice::Bn => NormKind::Batch,
            NormChoice::Ln | NormChoice::LnPn => NormKind::layer(),
            NormChoice::Gn | NormChoice::GnPn => NormKind::Group { groups },
        };
        let act = if role == NormRole::Projection {
            Act::Identity
        } else {
            Act::Silu
        };
        let mut spec = NormSpec::new(n, hw, c, kind).with_act(act);
        spec.eps = eps as f32;
        if choice.proxy() {
            match role {
                NormRole::Projection => spec = spec.with_affine(true, false),
                NormRole::Act => spec = spec.with_proxy(true),
                NormRole::Head => spec = spec.with_proxy(false),
            }
        }
        spec.validate()?;
        let gamma = spec
            .scale
            .then(|| pb.add(format!("{name}.weight"), &[c], ParamKind::Gamma, Init::Ones));
        let beta = spec
            .shift
            .then(|| pb.add(format!("{name}.bias"), &[c], ParamKind::Beta, Init::Zeros));
        let proxy = spec.proxy.map(|_| {
            (
                pb.add(
                    format!("{name}.proxy_shift"),
                    &[c],
                    ParamKind::Proxy,
                    Init::Zeros,
                ),
                pb.add(
                    format!("{name}.proxy_scale"),
                    &[c],
                    ParamKind::Proxy,
                    Init::Zeros,
                ),
            )
        });
        let running_pair = |gpu: &Gpu| -> Result<Option<(Tensor, Tensor)>> {
            if kind == NormKind::Batch {
                Ok(Some((gpu.zeros(&[c])?, gpu.upload(&vec![1.0; c], &[c])?)))
            } else {
                Ok(None)
            }
        };
        let running = running_pair(gpu)?;
        let running_avg = running_pair(gpu)?;
        let pair = |gpu: &Gpu| -> Result<Option<(Tensor, Tensor)>> {
            if proxy.is_some() {
                Ok(Some((gpu.zeros(&[c])?, gpu.zeros(&[c])?)))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            name: name.to_string(),
            spec,
            gamma,
            beta,
            proxy,
            running,
            running_avg,
            proxy_stats: pair(gpu)?,
            proxy_grads: pair(gpu)?,
            saved: gpu.zeros(&[spec.saved_len()])?,
            scratch: gpu.zeros(&[spec.scratch_len().max(1)])?,
        })
    }

    /// The normalization's spec.
    pub fn spec(&self) -> &NormSpec {
        &self.spec
    }

    /// The layer's name (timm's, e.g. `blocks.1.0.bn2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Freeze (or unfreeze) a BatchNorm's statistics: training passes then normalize with
    /// the running statistics, leave them unchanged, and backpropagate with them held
    /// constant (PyTorch's BatchNorm in `eval()` mode under autograd). Refused for the other
    /// kinds, which keep no running statistics.
    pub fn set_frozen(&mut self, frozen: bool) -> Result<()> {
        let spec = self.spec.with_frozen(frozen);
        spec.validate()?;
        self.spec = spec;
        Ok(())
    }

    /// Set the BatchNorm running-statistics momentum (TF convention, see
    /// [`NormSpec::momentum`]); no effect on the other kinds.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.spec.momentum = momentum as f32;
        self
    }

    fn params<'a>(&'a self, s: &'a ParamStore) -> NormParams<'a> {
        NormParams {
            gamma: self.gamma.map(|g| s.w(g)),
            beta: self.beta.map(|b| s.w(b)),
            running_mean: self.running.as_ref().map(|r| &r.0),
            running_var: self.running.as_ref().map(|r| &r.1),
            proxy_mu: self.proxy_stats.as_ref().map(|p| &p.0),
            proxy_s: self.proxy_stats.as_ref().map(|p| &p.1),
        }
    }

    fn proxy_params<'a>(&'a self, s: &'a ParamStore) -> Option<ProxyParams<'a>> {
        self.proxy.map(|(ps, pc)| ProxyParams {
            act: self.spec.act,
            c: self.spec.c,
            eps: PROXY_EPS,
            gamma: self.gamma.map(|g| s.w(g)),
            beta: self.beta.map(|b| s.w(b)),
            pshift: s.w(ps),
            pscale: s.w(pc),
        })
    }

    /// Record the fused forward.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        training: bool,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        norm::forward(
            rec,
            &self.spec,
            training,
            x,
            &self.params(s),
            y,
            &self.saved,
            &self.scratch,
        )
    }

    /// Record the fused backward, chaining the Proxy Norm statistics' gradient to gamma,
    /// beta and the proxy shift and scale.
    pub fn backward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        let apply_scale = self.spec.proxy.is_some_and(|p| p.apply_scale);
        let grads = NormGrads {
            dgamma: self.gamma.map(|g| s.g(g)),
            dbeta: self.beta.map(|b| s.g(b)),
            dmu: self.proxy_grads.as_ref().map(|p| &p.0),
            ds: self
                .proxy_grads
                .as_ref()
                .filter(|_| apply_scale)
                .map(|p| &p.1),
        };
        norm::backward(
            rec,
            &self.spec,
            x,
            dy,
            &self.params(s),
            &self.saved,
            dx,
            &grads,
            &self.scratch,
        )?;
        if let (Some(pp), Some((dmu, ds)), Some((ps, pc))) =
            (self.proxy_params(s), &self.proxy_grads, self.proxy)
        {
            let pg = ProxyGrads {
                dgamma: self.gamma.map(|g| s.g(g)),
                dbeta: self.beta.map(|b| s.g(b)),
                dpshift: s.g(ps),
                dpscale: s.g(pc),
            };
            proxy_norm::proxy_stats_backward(rec, &pp, dmu, apply_scale.then_some(ds), &pg)?;
        }
        Ok(())
    }

    /// Record the proxy statistics from the current parameters (after each update).
    pub fn after_update(&self, rec: &mut Recorder, s: &ParamStore) -> Result<()> {
        if let (Some(pp), Some((mu, sd))) = (self.proxy_params(s), &self.proxy_stats) {
            proxy_norm::proxy_stats(rec, &pp, mu, sd)?;
        }
        Ok(())
    }

    /// Checkpointed state: BatchNorm running statistics.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.named_running(&self.running)
    }

    /// The weight average's twins of [`Self::state`] (same names and order), averaged
    /// with the parameters so the averaged model evaluates with averaged statistics.
    pub fn state_average(&self) -> Vec<(String, Tensor)> {
        self.named_running(&self.running_avg)
    }

    fn named_running(&self, r: &Option<(Tensor, Tensor)>) -> Vec<(String, Tensor)> {
        match r {
            Some((m, v)) => vec![
                (format!("{}.running_mean", self.name), m.clone()),
                (format!("{}.running_var", self.name), v.clone()),
            ],
            None => Vec::new(),
        }
    }
}

/// Squeeze-excitation: pool, 1x1 (+bias) to `hidden`, SiLU, 1x1 (+bias) back, sigmoid gate,
/// channel scale. Parameters named like timm's `se.conv_reduce` / `se.conv_expand`.
pub struct SeLayer {
    spec: se::SeSpec,
    w1: ParamId,
    b1: ParamId,
    w2: ParamId,
    b2: ParamId,
    saved: se::SeSaved,
    tmp: se::SeTemp,
    scratch: Option<Tensor>,
}

use crate::ops::squeeze_excite as se;

impl SeLayer {
    /// Register parameters and allocate the saved and temporary tensors.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        pb: &mut ParamBuilder,
        name: &str,
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        hidden: usize,
    ) -> Result<Self> {
        let spec = se::SeSpec { n, h, w, c, hidden };
        let w1 = pb.add(
            format!("{name}.conv_reduce.weight"),
            &[c, hidden],
            ParamKind::Weight,
            Init::Normal((2.0 / hidden as f64).sqrt()),
        );
        let b1 = pb.add(
            format!("{name}.conv_reduce.bias"),
            &[hidden],
            ParamKind::Bias,
            Init::Zeros,
        );
        let w2 = pb.add(
            format!("{name}.conv_expand.weight"),
            &[hidden, c],
            ParamKind::Weight,
            Init::Normal((2.0 / c as f64).sqrt()),
        );
        let b2 = pb.add(
            format!("{name}.conv_expand.bias"),
            &[c],
            ParamKind::Bias,
            Init::Zeros,
        );
        Ok(Self {
            saved: se::SeSaved::new(gpu, &spec)?,
            tmp: se::SeTemp::new(gpu, &spec)?,
            scratch: scratch(gpu, spec.scratch_len())?,
            spec,
            w1,
            b1,
            w2,
            b2,
        })
    }

    fn weights<'a>(&self, s: &'a ParamStore) -> se::SeWeights<'a> {
        se::SeWeights {
            w1: s.w(self.w1),
            b1: s.w(self.b1),
            w2: s.w(self.w2),
            b2: s.w(self.b2),
        }
    }

    /// Record y = x * gate(x).
    pub fn forward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        se::forward(
            rec,
            &self.spec,
            x,
            &self.weights(s),
            y,
            &self.saved,
            self.scratch.as_ref(),
        )
    }

    /// Record dx and the parameter gradients.
    pub fn backward(
        &self,
        rec: &mut Recorder,
        s: &ParamStore,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        let g = se::SeGrads {
            dw1: s.g(self.w1),
            db1: s.g(self.b1),
            dw2: s.g(self.w2),
            db2: s.g(self.b2),
        };
        se::backward(
            rec,
            &self.spec,
            x,
            &self.weights(s),
            &self.saved,
            dy,
            dx,
            &g,
            &self.tmp,
            self.scratch.as_ref(),
        )
    }
}
