//! EfficientNet as an explicit graph of layers with planned buffers: one activation and
//! one gradient tensor per node output, recorded forward and backward in one command
//! stream (no autograd tape, nothing allocated per step).

use crate::dist::Shard;
use crate::error::{Error, Result};
use crate::gpu::{Dtype, Gpu, Precision, Recorder, Tensor};
use crate::models::config::ModelConfig;
use crate::models::size::ImageSize;
use crate::nn::layers::{ConvLayer, LinearLayer, NormActLayer, NormRole, SeLayer};
use crate::nn::model::Trainable;
use crate::nn::norm::NormChoice;
use crate::nn::{ParamBuilder, ParamStore};
use crate::ops::{elementwise, loss, reduce};
use crate::util::Rng;

enum Node {
    Conv {
        l: ConvLayer,
        x: usize,
        y: usize,
    },
    Norm {
        l: NormActLayer,
        x: usize,
        y: usize,
    },
    Se {
        l: SeLayer,
        x: usize,
        y: usize,
    },
    /// Start of a residual block: in backward, grad[x] = grad[out] + grad[branch].
    Fork {
        x: usize,
        out: usize,
        branch: usize,
    },
    /// y = skip + mask[n] * branch (drop-connect; mask is 0 or 1/survival).
    Add {
        skip: usize,
        branch: usize,
        y: usize,
        mask: Tensor,
        rate: f64,
    },
    /// Global average pool [B,H,W,C] -> [B,1,1,C].
    Gap {
        x: usize,
        y: usize,
    },
    /// y = x * mask[n, c] (dropout; mask is 0 or 1/(1-p)).
    Dropout {
        x: usize,
        y: usize,
        mask: Tensor,
        rate: f64,
    },
    Linear {
        l: LinearLayer,
        x: usize,
        y: usize,
    },
}

/// Activation index of the network input.
const INPUT: usize = 0;

/// One node output of the graph (see [`EfficientNet::node_outputs`]).
pub struct NodeOutput<'a> {
    /// Kind: `conv`, `norm`, `se`, `add`, `gap`, `dropout` or `fc`.
    pub kind: &'static str,
    /// Short description: the convolution's shape, the norm's kind and activation.
    pub label: String,
    /// The output tensor (NHWC).
    pub tensor: &'a Tensor,
}

/// A built EfficientNet for a fixed batch size and resolution.
pub struct EfficientNet {
    /// Configuration.
    pub cfg: ModelConfig,
    /// Batch size.
    pub batch: usize,
    /// Input resolution (height x width).
    pub size: ImageSize,
    /// Storage precision of the activations and their gradients.
    pub precision: Precision,
    store: ParamStore,
    nodes: Vec<Node>,
    acts: Vec<Tensor>,
    /// Gradient slot of each activation (None for the input) and extra branch slots.
    grads: Vec<Option<Tensor>>,
    /// Where each node's input gradient goes (slot index).
    dx_slot: Vec<Option<usize>>,
    labels: Tensor,
    loss_w: Tensor,
    loss_rows: Tensor,
    ones: Tensor,
    /// The loss scaler's state in a mixed-precision run: the loss gradient is multiplied
    /// by its scale ([`Trainable::set_loss_scale`]).
    loss_scale: Option<Tensor>,
    head_start: usize,
    /// Node index where each stage's first block begins (index = stage number 1..=7).
    stage_start: [usize; 8],
    /// Stages trained besides the head when fine-tuning.
    finetune_stages: Vec<usize>,
    /// Stem and stages 1..=frozen_stages get no gradient ([`Trainable::set_frozen_stages`]).
    frozen_stages: usize,
    /// Training-mode forward passes so far (BatchNorm's `num_batches_tracked`).
    batches_tracked: u64,
    /// The rows of the global batch this model trains on (data parallelism): dropout and
    /// drop-connect masks are drawn for the global batch and this shard's rows kept.
    shard: Shard,
}

/// What [`EfficientNet::freeze_bn_where`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrozenBn {
    /// Names of the BatchNorm layers now frozen.
    pub frozen: Vec<String>,
    /// Names of the BatchNorm layers now training-mode.
    pub training: Vec<String>,
}

/// Builds the graph: registers parameters, allocates activations, appends nodes.
struct GraphBuilder<'a> {
    gpu: &'a Gpu,
    cfg: &'a ModelConfig,
    b: usize,
    pb: ParamBuilder,
    acts: Vec<Tensor>,
    shapes: Vec<[usize; 4]>,
    /// Element type of each activation (its gradient has the same).
    dtypes: Vec<Dtype>,
    /// `precision.activations()`: what [`Self::act`] allocates.
    act_dtype: Dtype,
    nodes: Vec<Node>,
}

impl GraphBuilder<'_> {
    /// A new activation tensor at the run's activation precision; returns its index.
    fn act(&mut self, s: [usize; 4]) -> Result<usize> {
        self.act_of(s, self.act_dtype)
    }

    /// A new activation tensor of element type `dtype`; returns its index.
    fn act_of(&mut self, s: [usize; 4], dtype: Dtype) -> Result<usize> {
        self.acts.push(self.gpu.zeros_of(&s, dtype)?);
        self.shapes.push(s);
        self.dtypes.push(dtype);
        Ok(self.acts.len() - 1)
    }

    /// A convolution (`conv` = kernel, stride, groups) followed by its fused norm; returns
    /// the norm's output index and the output resolution.
    fn conv_norm(
        &mut self,
        (conv_name, norm_name): (&str, &str),
        x: usize,
        hw: ImageSize,
        (cin, cout): (usize, usize),
        (k, stride, groups): (usize, usize, usize),
        role: NormRole,
    ) -> Result<(usize, ImageSize)> {
        let (gpu, cfg, b) = (self.gpu, self.cfg, self.b);
        let l = ConvLayer::new(
            gpu,
            &mut self.pb,
            conv_name,
            b,
            hw.h,
            hw.w,
            cin,
            cout,
            k,
            stride,
            groups,
            false,
        )?
        .with_padding(cfg.padding)?;
        let ho = hw.strided(stride);
        debug_assert_eq!(l.spec().out_hw(), (ho.h, ho.w));
        let y = self.act([b, ho.h, ho.w, cout])?;
        self.nodes.push(Node::Conv { l, x, y });
        let l = NormActLayer::new(
            gpu,
            &mut self.pb,
            norm_name,
            b,
            ho.pixels(),
            cout,
            cfg.norm,
            cfg.norm_groups(cout),
            cfg.norm_eps,
            role,
        )?
        .with_momentum(cfg.bn_momentum);
        let out = self.act([b, ho.h, ho.w, cout])?;
        self.nodes.push(Node::Norm { l, x: y, y: out });
        Ok((out, ho))
    }
}

impl EfficientNet {
    /// Build the graph for `image x image` inputs and allocate every buffer.
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, batch: usize, image: usize) -> Result<Self> {
        Self::with_size(gpu, cfg, batch, ImageSize::square(image))
    }

    /// Build the graph for `size.h x size.w` inputs (square or not) and allocate every
    /// buffer, all f32.
    pub fn with_size(gpu: &Gpu, cfg: &ModelConfig, batch: usize, size: ImageSize) -> Result<Self> {
        Self::with_precision(gpu, cfg, batch, size, Precision::F32)
    }

    /// Build the graph with activations and activation gradients stored at
    /// `precision.activations()` (f16 in mixed precision; the exceptions that stay f32 are
    /// stated where they are allocated). Parameters, their gradients, the optimizer state
    /// and every statistic stay f32. Mixed precision needs `SHADER_F16`.
    pub fn with_precision(
        gpu: &Gpu,
        cfg: &ModelConfig,
        batch: usize,
        size: ImageSize,
        precision: Precision,
    ) -> Result<Self> {
        cfg.validate()?;
        size.check_min()?;
        precision.check_supported(gpu)?;
        // Refuse what the adapter cannot hold before allocating anything.
        crate::models::footprint::estimate_at(cfg, batch, size, precision)?.check(
            gpu,
            &format!(
                "model {} at batch {batch} and {size}px ({} precision)",
                cfg.name,
                precision.name()
            ),
        )?;
        let b = batch;
        let mut g = GraphBuilder {
            gpu,
            cfg,
            b,
            pb: ParamBuilder::default(),
            acts: Vec::new(),
            shapes: Vec::new(),
            dtypes: Vec::new(),
            act_dtype: precision.activations(),
            nodes: Vec::new(),
        };
        let input = g.act([b, size.h, size.w, cfg.in_channels])?;
        debug_assert_eq!(input, INPUT);

        // Stem.
        let stem = cfg.stem_width();
        let (mut cur, mut hw) = g.conv_norm(
            ("conv_stem", "bn1"),
            input,
            size,
            (cfg.in_channels, stem),
            (3, 2, 1),
            NormRole::Act,
        )?;

        let mut stage_idx = [0usize; 8];
        let mut stage_start = [0usize; 8];
        let mut extra_slots = Vec::new();
        for blk in cfg.blocks() {
            let j = stage_idx[blk.stage];
            stage_idx[blk.stage] += 1;
            if j == 0 {
                stage_start[blk.stage] = g.nodes.len();
            }
            let p = format!("blocks.{}.{}", blk.stage - 1, j);
            let block_in = cur;
            let fork_at = g.nodes.len();
            if blk.residual {
                // Placeholder index fixed below once the block output exists.
                g.nodes.push(Node::Fork {
                    x: block_in,
                    out: 0,
                    branch: 0,
                });
            }
            let first_branch_node = g.nodes.len();
            // timm's names: a DS block (expansion 1) has conv_dw, bn1, se, conv_pw, bn2.
            let expands = blk.expand != 1;
            if expands {
                let names = (&*format!("{p}.conv_pw"), &*format!("{p}.bn1"));
                (cur, _) =
                    g.conv_norm(names, cur, hw, (blk.cin, blk.mid), (1, 1, 1), NormRole::Act)?;
            }
            let dw_norm = format!("{p}.{}", if expands { "bn2" } else { "bn1" });
            let names = (&*format!("{p}.conv_dw"), &*dw_norm);
            let conv = (blk.k, blk.stride, blk.groups);
            (cur, hw) = g.conv_norm(names, cur, hw, (blk.mid, blk.mid), conv, NormRole::Act)?;
            let l = SeLayer::new(
                gpu,
                &mut g.pb,
                &format!("{p}.se"),
                b,
                hw.h,
                hw.w,
                blk.mid,
                blk.se_hidden,
            )?;
            let y = g.act([b, hw.h, hw.w, blk.mid])?;
            g.nodes.push(Node::Se { l, x: cur, y });
            let (pwl, n3) = if expands {
                ("conv_pwl", "bn3")
            } else {
                ("conv_pw", "bn2")
            };
            let names = (&*format!("{p}.{pwl}"), &*format!("{p}.{n3}"));
            (cur, _) = g.conv_norm(
                names,
                y,
                hw,
                (blk.mid, blk.cout),
                (1, 1, 1),
                NormRole::Projection,
            )?;
            if blk.residual {
                let out = g.act([b, hw.h, hw.w, blk.cout])?;
                g.nodes.push(Node::Add {
                    skip: block_in,
                    branch: cur,
                    y: out,
                    mask: gpu.upload(&vec![1.0; b], &[b])?,
                    rate: blk.drop_connect,
                });
                extra_slots.push((fork_at, first_branch_node, block_in, out));
                cur = out;
            }
        }
        // Head.
        let last = cfg.blocks().last().map_or(stem, |x| x.cout);
        let head = cfg.head_width();
        let head_start = g.nodes.len();
        (cur, _) = g.conv_norm(
            ("conv_head", "bn2"),
            cur,
            hw,
            (last, head),
            (1, 1, 1),
            NormRole::Head,
        )?;
        // The pooled features stay f32 (so does everything after them: dropout, logits and
        // their gradients): the pool's sums accumulate in f32 and are written as they are,
        // the classifier's GEMM is [B, head] x [head, classes], too small for f16 storage
        // to matter, and the loss reads f32 logits and writes f32 dlogits that carry the
        // loss scale (a scaled dlogit could overflow f16 before any check sees it).
        let y = g.act_of([b, 1, 1, head], Dtype::F32)?;
        g.nodes.push(Node::Gap { x: cur, y });
        cur = y;
        if cfg.dropout > 0.0 {
            let y = g.act_of([b, 1, 1, head], Dtype::F32)?;
            g.nodes.push(Node::Dropout {
                x: cur,
                y,
                mask: gpu.upload(&vec![1.0; b * head], &[b, head])?,
                rate: cfg.dropout,
            });
            cur = y;
        }
        let l = LinearLayer::new(gpu, &mut g.pb, "classifier", b, head, cfg.classes)?;
        let y = g.act_of([b, 1, 1, cfg.classes], Dtype::F32)?;
        g.nodes.push(Node::Linear { l, x: cur, y });
        let GraphBuilder {
            pb,
            acts,
            shapes,
            dtypes,
            mut nodes,
            ..
        } = g;

        // Gradient slots: one per activation except the input, plus one per residual branch,
        // each of its activation's element type.
        let mut grads: Vec<Option<Tensor>> = shapes
            .iter()
            .zip(&dtypes)
            .enumerate()
            .map(|(i, (s, &d))| {
                if i == input {
                    Ok(None)
                } else {
                    gpu.zeros_of(s, d).map(Some)
                }
            })
            .collect::<Result<_>>()?;
        let mut dx_slot: Vec<Option<usize>> = nodes
            .iter()
            .map(|n| match n {
                Node::Conv { x, .. }
                | Node::Norm { x, .. }
                | Node::Se { x, .. }
                | Node::Gap { x, .. }
                | Node::Dropout { x, .. }
                | Node::Linear { x, .. } => Some(*x).filter(|&x| x != input),
                Node::Fork { x, .. } => Some(*x),
                Node::Add { branch, .. } => Some(*branch),
            })
            .collect();
        for (fork_at, first, block_in, out) in extra_slots {
            grads.push(Some(gpu.zeros_of(&shapes[block_in], dtypes[block_in])?));
            let slot = grads.len() - 1;
            dx_slot[first] = Some(slot);
            nodes[fork_at] = Node::Fork {
                x: block_in,
                out,
                branch: slot,
            };
        }
        let store = ParamStore::new(gpu, pb)?;
        Ok(Self {
            cfg: cfg.clone(),
            batch: b,
            size,
            precision,
            store,
            nodes,
            acts,
            grads,
            dx_slot,
            labels: gpu.zeros(&[b])?,
            loss_w: gpu.zeros(&[b])?,
            loss_rows: gpu.zeros(&[b])?,
            ones: gpu.upload(&vec![1.0; b], &[b])?,
            loss_scale: None,
            head_start,
            stage_start,
            finetune_stages: Vec::new(),
            frozen_stages: 0,
            batches_tracked: 0,
            shard: Shard::whole(b),
        })
    }

    /// Train on rows `shard.offset..` of a global batch of `shard.global` (one rank of a
    /// data-parallel run): the random masks of dropout and drop-connect are drawn for the
    /// whole global batch, from the same stream on every rank, and this shard's rows are
    /// used, so K ranks apply exactly the masks one process would.
    pub fn set_shard(&mut self, shard: Shard) -> Result<()> {
        if shard.len != self.batch || shard.offset + shard.len > shard.global {
            return Err(Error::Shape(format!(
                "rows {}..{} of a batch of {} for a model of batch {}",
                shard.offset,
                shard.offset + shard.len,
                shard.global,
                self.batch
            )));
        }
        self.shard = shard;
        Ok(())
    }

    /// Also compute the gradient of the loss with respect to the input in training steps
    /// (off by default: training never needs it; parity checks against PyTorch do).
    pub fn enable_input_grad(&mut self, gpu: &Gpu) -> Result<()> {
        if self.grads[INPUT].is_none() {
            let x = &self.acts[INPUT];
            self.grads[INPUT] = Some(gpu.zeros_of(x.shape(), x.dtype())?);
            for (k, n) in self.nodes.iter().enumerate() {
                if matches!(n, Node::Conv { x: INPUT, .. }) {
                    self.dx_slot[k] = Some(INPUT);
                }
            }
        }
        Ok(())
    }

    /// Freeze every BatchNorm layer's statistics (`true`: eval-mode BatchNorm while
    /// training, as timm fine-tuning with frozen BN does; the running statistics stay
    /// unchanged and gradients flow through them as constants) or return them all to
    /// training mode (`false`). Refused for models without BatchNorm.
    pub fn set_bn_frozen(&mut self, frozen: bool) -> Result<()> {
        self.freeze_bn_where(|_| frozen).map(|_| ())
    }

    /// Freeze the BatchNorm layers whose timm name (e.g. `bn1`, `blocks.0.0.bn1`)
    /// `frozen` accepts and put the others in training mode; returns which are which.
    /// Refused for models without BatchNorm.
    pub fn freeze_bn_where(&mut self, frozen: impl Fn(&str) -> bool) -> Result<FrozenBn> {
        if self.cfg.norm != NormChoice::Bn {
            return Err(Error::Config(format!(
                "model {} uses {} normalization: only BatchNorm has running statistics to \
                 freeze",
                self.cfg.name,
                self.cfg.norm.name()
            )));
        }
        let mut out = FrozenBn::default();
        for n in &mut self.nodes {
            if let Node::Norm { l, .. } = n {
                let f = frozen(l.name());
                l.set_frozen(f)?;
                let names = if f {
                    &mut out.frozen
                } else {
                    &mut out.training
                };
                names.push(l.name().to_string());
            }
        }
        Ok(out)
    }

    /// True when every BatchNorm layer is frozen (then training passes leave
    /// [`Trainable::batches_tracked`] unchanged, as PyTorch's eval-mode BatchNorm does).
    pub fn bn_frozen(&self) -> bool {
        let mut norms = self.nodes.iter().filter_map(|n| match n {
            Node::Norm { l, .. } => Some(l.spec()),
            _ => None,
        });
        norms.all(|s| s.frozen)
    }

    /// Training-mode passes count towards `num_batches_tracked` unless every BatchNorm
    /// layer is frozen.
    fn track_batch(&mut self) {
        if !self.bn_frozen() {
            self.batches_tracked += 1;
        }
    }

    /// Gradient of the loss with respect to the input (NHWC, like [`Trainable::input`])
    /// after a full training step, when [`Self::enable_input_grad`] was called.
    pub fn input_grad(&self) -> Option<&Tensor> {
        self.grads[INPUT].as_ref()
    }

    /// Record the forward pass alone: no loss, drop-connect and dropout off. `training`
    /// selects BatchNorm's batch statistics (and updates its running statistics). Analyses
    /// (`effnet moments`) read [`Self::node_outputs`] afterwards.
    pub fn record_forward(&mut self, rec: &mut Recorder, training: bool) -> Result<()> {
        if training {
            self.track_batch();
        }
        self.forward(rec, training, None)
    }

    /// Record the training-mode forward pass and the loss (into [`Trainable::loss_rows`])
    /// without the backward pass: what a finite-difference check of the gradient
    /// evaluates, at about a third of a training step's work.
    pub fn record_loss(&mut self, rec: &mut Recorder, label_smoothing: f32) -> Result<()> {
        self.track_batch();
        self.forward(rec, true, None)?;
        self.record_xent(rec, label_smoothing)
    }

    /// Record the loss and its gradient on the logits; with a loss scale (mixed
    /// precision) the f32 dlogits carry the scale into the f16 gradients.
    fn record_xent(&self, rec: &mut Recorder, label_smoothing: f32) -> Result<()> {
        let id = self.logits_id();
        let logits = self.acts[id].reshape(&[self.batch, self.cfg.classes])?;
        let dlogits = self.grad(id).reshape(&[self.batch, self.cfg.classes])?;
        let (labels, w, rows) = (&self.labels, &self.loss_w, &self.loss_rows);
        match &self.loss_scale {
            Some(scaler) => loss::softmax_xent_scaled(
                rec,
                &logits,
                labels,
                w,
                rows,
                &dlogits,
                label_smoothing,
                scaler,
            ),
            None => loss::softmax_xent(rec, &logits, labels, w, rows, &dlogits, label_smoothing),
        }
    }

    /// Every node's output in graph order (residual forks have none), valid after a
    /// recorded forward pass.
    pub fn node_outputs(&self) -> Vec<NodeOutput<'_>> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let (kind, label, y) = match n {
                    Node::Conv { l, y, .. } => ("conv", l.spec().label(), y),
                    Node::Norm { l, y, .. } => (
                        "norm",
                        format!("{}+{}", l.spec().kind_name(), l.spec().act.name()),
                        y,
                    ),
                    Node::Se { y, .. } => ("se", "se".to_string(), y),
                    Node::Fork { .. } => return None,
                    Node::Add { y, .. } => ("add", "add".to_string(), y),
                    Node::Gap { y, .. } => ("gap", "gap".to_string(), y),
                    Node::Dropout { y, .. } => ("dropout", "dropout".to_string(), y),
                    Node::Linear { y, .. } => ("fc", "fc".to_string(), y),
                };
                Some(NodeOutput {
                    kind,
                    label,
                    tensor: &self.acts[*y],
                })
            })
            .collect()
    }

    fn grad(&self, slot: usize) -> &Tensor {
        self.grads[slot].as_ref().expect("gradient slot")
    }

    fn forward(&mut self, rec: &mut Recorder, training: bool, rng: Option<&mut Rng>) -> Result<()> {
        let gpu = rec.gpu();
        let mut rng = rng;
        for node in &self.nodes {
            match node {
                Node::Conv { l, x, y } => {
                    l.forward(rec, &self.store, &self.acts[*x], &self.acts[*y])?
                }
                Node::Norm { l, x, y } => {
                    l.forward(rec, &self.store, training, &self.acts[*x], &self.acts[*y])?
                }
                Node::Se { l, x, y } => {
                    l.forward(rec, &self.store, &self.acts[*x], &self.acts[*y])?
                }
                Node::Fork { .. } => {}
                Node::Add {
                    skip,
                    branch,
                    y,
                    mask,
                    rate,
                } => {
                    let m = match (training, rng.as_deref_mut()) {
                        (true, Some(r)) if *rate > 0.0 => {
                            let keep = 1.0 - rate;
                            let sh = self.shard;
                            let m: Vec<f32> = (0..sh.global)
                                .map(|_| {
                                    if r.uniform() < keep {
                                        (1.0 / keep) as f32
                                    } else {
                                        0.0
                                    }
                                })
                                .collect();
                            m[sh.offset..sh.offset + sh.len].to_vec()
                        }
                        _ => vec![1.0; self.batch],
                    };
                    gpu.write_f32(mask, &m)?;
                    elementwise::residual_add(
                        rec,
                        &self.acts[*skip],
                        &self.acts[*branch],
                        mask,
                        &self.acts[*y],
                    )?;
                }
                Node::Gap { x, y } => {
                    let s = self.acts[*x].shape();
                    let ax = reduce::Axes {
                        o: s[0],
                        m: s[1] * s[2],
                        i: s[3],
                    };
                    reduce::sum_axis(
                        rec,
                        &self.acts[*x],
                        None,
                        &self.acts[*y],
                        ax,
                        1.0 / ax.m as f32,
                        None,
                    )?;
                }
                Node::Dropout { x, y, mask, rate } => {
                    let n = mask.len();
                    let m: Vec<f32> = match (training, rng.as_deref_mut()) {
                        (true, Some(r)) => {
                            let keep = 1.0 - rate;
                            let (sh, c) = (self.shard, n / self.batch);
                            let m: Vec<f32> = (0..sh.global * c)
                                .map(|_| {
                                    if r.uniform() < keep {
                                        (1.0 / keep) as f32
                                    } else {
                                        0.0
                                    }
                                })
                                .collect();
                            m[sh.offset * c..(sh.offset + sh.len) * c].to_vec()
                        }
                        _ => vec![1.0; n],
                    };
                    gpu.write_f32(mask, &m)?;
                    elementwise::channel_scale(rec, &self.acts[*x], mask, &self.acts[*y])?;
                }
                Node::Linear { l, x, y } => {
                    l.forward(rec, &self.store, &self.acts[*x], &self.acts[*y])?
                }
            }
        }
        Ok(())
    }

    fn backward(&mut self, rec: &mut Recorder, stop: usize) -> Result<()> {
        for (k, node) in self.nodes.iter().enumerate().rev() {
            if k < stop {
                break;
            }
            let dx = if k == stop && stop > 0 {
                None
            } else {
                self.dx_slot[k].map(|s| self.grad(s))
            };
            match node {
                Node::Conv { l, x, y } => {
                    l.backward(rec, &self.store, &self.acts[*x], self.grad(*y), dx)?
                }
                Node::Norm { l, x, y } => l.backward(
                    rec,
                    &self.store,
                    &self.acts[*x],
                    self.grad(*y),
                    dx.expect("norm input has a gradient"),
                )?,
                Node::Se { l, x, y } => l.backward(
                    rec,
                    &self.store,
                    &self.acts[*x],
                    self.grad(*y),
                    dx.expect("se input"),
                )?,
                Node::Fork { x, out, branch } => {
                    elementwise::residual_add(
                        rec,
                        self.grad(*out),
                        self.grad(*branch),
                        &self.ones,
                        self.grad(*x),
                    )?;
                }
                Node::Add { y, mask, .. } => {
                    elementwise::scale_rows(rec, self.grad(*y), mask, dx.expect("branch"))?;
                }
                Node::Gap { x, y } => {
                    let s = self.acts[*x].shape();
                    let ax = reduce::Axes {
                        o: s[0],
                        m: s[1] * s[2],
                        i: s[3],
                    };
                    reduce::broadcast(
                        rec,
                        self.grad(*y),
                        dx.expect("gap input"),
                        ax,
                        1.0 / ax.m as f32,
                    )?;
                }
                Node::Dropout { y, mask, .. } => {
                    elementwise::channel_scale(
                        rec,
                        self.grad(*y),
                        mask,
                        dx.expect("dropout input"),
                    )?;
                }
                Node::Linear { l, x, y } => {
                    l.backward(rec, &self.store, &self.acts[*x], self.grad(*y), dx)?
                }
            }
        }
        Ok(())
    }

    fn logits_id(&self) -> usize {
        self.acts.len() - 1
    }
}

impl Trainable for EfficientNet {
    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Norm { l, .. } => Some(l.state()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn state_average(&self) -> Vec<(String, Tensor)> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Norm { l, .. } => Some(l.state_average()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn batches_tracked(&self) -> u64 {
        self.batches_tracked
    }

    fn set_batches_tracked(&mut self, n: u64) {
        self.batches_tracked = n;
    }

    fn batch(&self) -> usize {
        self.batch
    }

    fn input(&self) -> &Tensor {
        &self.acts[0]
    }

    fn labels(&self) -> &Tensor {
        &self.labels
    }

    fn loss_weights(&self) -> &Tensor {
        &self.loss_w
    }

    fn loss_rows(&self) -> &Tensor {
        &self.loss_rows
    }

    fn logits(&self) -> &Tensor {
        &self.acts[self.logits_id()]
    }

    fn record_train_step(
        &mut self,
        rec: &mut Recorder,
        rng: &mut Rng,
        label_smoothing: f32,
        head_only: bool,
    ) -> Result<()> {
        self.track_batch();
        self.forward(rec, true, Some(rng))?;
        self.record_xent(rec, label_smoothing)?;
        let stop = if head_only {
            self.finetune_stages
                .iter()
                .map(|&s| self.stage_start[s])
                .fold(self.head_start, usize::min)
        } else {
            0
        };
        // Frozen stem and stages: backward stops at the first trained node.
        let frozen = match self.frozen_stages {
            0 => 0,
            n if n >= 7 => self.head_start,
            n => self.stage_start[n + 1],
        };
        self.backward(rec, stop.max(frozen))
    }

    fn record_eval(&mut self, rec: &mut Recorder) -> Result<()> {
        self.forward(rec, false, None)
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn set_loss_scale(&mut self, scaler: Option<Tensor>) {
        self.loss_scale = scaler;
    }

    fn record_after_update(&self, rec: &mut Recorder) -> Result<()> {
        for n in &self.nodes {
            if let Node::Norm { l, .. } = n {
                l.after_update(rec, &self.store)?;
            }
        }
        Ok(())
    }

    fn is_head_param(&self, name: &str) -> bool {
        name.starts_with("conv_head")
            || name.starts_with("bn2.")
            || name.starts_with("classifier")
            || self
                .finetune_stages
                .iter()
                .any(|s| name.starts_with(&format!("blocks.{}.", s - 1)))
    }

    fn set_finetune_stages(&mut self, stages: &[usize]) -> Result<()> {
        if let Some(s) = stages.iter().find(|&&s| !(1..=7).contains(&s)) {
            return Err(Error::Config(format!(
                "stage {s} does not exist: EfficientNet stages are 1..7"
            )));
        }
        self.finetune_stages = stages.to_vec();
        Ok(())
    }

    fn set_frozen_stages(&mut self, n: usize) -> Result<()> {
        if n > 7 {
            return Err(Error::Config(format!(
                "--freeze-stages {n}: EfficientNet has 7 stages (0..7 may be frozen)"
            )));
        }
        self.frozen_stages = n;
        Ok(())
    }

    fn freeze_bn(&mut self, frozen: bool) -> Result<()> {
        if !frozen && self.cfg.norm != NormChoice::Bn {
            return Ok(());
        }
        self.set_bn_frozen(frozen)
    }

    fn is_frozen_param(&self, name: &str) -> bool {
        self.frozen_stages > 0
            && (name.starts_with("conv_stem.")
                || name.starts_with("bn1.")
                || (0..self.frozen_stages).any(|s| name.starts_with(&format!("blocks.{s}."))))
    }
}
