//! Every tensor of a timm EfficientNet state dict, with its effnet counterpart and the
//! layout conversion between them.
//!
//! effnet's parameter names are timm's (`conv_stem.weight`, `bn1.weight`,
//! `blocks.{s}.{j}.conv_pw` / `bn1` / `conv_dw` / `bn2` / `se.conv_reduce` /
//! `se.conv_expand` / `conv_pwl` / `bn3`, `conv_head`, `bn2`, `classifier`; blocks without
//! expansion use `conv_dw`, `bn1`, `se`, `conv_pw`, `bn2`), and BatchNorm running
//! statistics are effnet state tensors of the same names. Only the layouts differ:
//!
//! | tensor | effnet | PyTorch / timm |
//! |---|---|---|
//! | k x k (grouped) conv | `[k, k, cin/G, cout]` | `[cout, cin/G, k, k]` |
//! | 1x1 conv | `[1, 1, cin, cout]` | `[cout, cin, 1, 1]` |
//! | SE reduce / expand | `[c, hidden]` / `[hidden, c]` | `[hidden, c, 1, 1]` / `[c, hidden, 1, 1]` |
//! | classifier | `[features, classes]` | `[classes, features]` |
//! | norm weight, bias, running stats; biases | `[c]` | `[c]` |
//!
//! timm's `num_batches_tracked` buffers have no effnet counterpart (they only matter to
//! BatchNorm with `momentum=None`) and are ignored on import.

use crate::error::{Error, Result};
use crate::models::{ModelConfig, NormChoice};
use crate::ops::conv::{self, ConvSpec, Padding};

/// How a tensor's data converts between effnet's and PyTorch's layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The same values in the same order (vectors).
    Same,
    /// A convolution weight (any kernel size and groups; SE 1x1 convs too).
    Conv {
        /// Kernel size.
        k: usize,
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
        /// Groups.
        groups: usize,
    },
    /// A linear weight: effnet `[cin, cout]`, PyTorch `[cout, cin]`.
    Linear {
        /// Input features.
        cin: usize,
        /// Output features.
        cout: usize,
    },
}

/// One tensor of the state dict.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMap {
    /// Name (the same in effnet and timm).
    pub name: String,
    /// Shape in effnet's layout (as in the parameter store or state tensors).
    pub effnet_shape: Vec<usize>,
    /// Shape in timm's state dict.
    pub timm_shape: Vec<usize>,
    /// Conversion.
    pub layout: Layout,
    /// A BatchNorm running statistic (effnet state tensor), not a parameter.
    pub running: bool,
}

impl Layout {
    fn spec(k: usize, cin: usize, cout: usize, groups: usize) -> ConvSpec {
        ConvSpec {
            n: 1,
            h: k,
            w: k,
            cin,
            cout,
            k,
            stride: 1,
            groups,
            bias: false,
            padding: Padding::Symmetric,
        }
    }

    /// Convert PyTorch-layout data to effnet's layout.
    pub fn to_effnet(&self, data: &[f32]) -> Vec<f32> {
        match *self {
            Layout::Same => data.to_vec(),
            Layout::Conv {
                k,
                cin,
                cout,
                groups,
            } => conv::weight_from_pytorch(&Self::spec(k, cin, cout, groups), data),
            Layout::Linear { cin, cout } => transpose(data, cout, cin),
        }
    }

    /// Convert effnet-layout data to PyTorch's layout.
    pub fn to_timm(&self, data: &[f32]) -> Vec<f32> {
        match *self {
            Layout::Same => data.to_vec(),
            Layout::Conv {
                k,
                cin,
                cout,
                groups,
            } => conv::weight_to_pytorch(&Self::spec(k, cin, cout, groups), data),
            Layout::Linear { cin, cout } => transpose(data, cin, cout),
        }
    }
}

/// Transpose a row-major `[rows, cols]` matrix.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

struct Builder {
    out: Vec<TensorMap>,
    bn: bool,
}

impl Builder {
    fn push(&mut self, name: String, effnet: Vec<usize>, timm: Vec<usize>, layout: Layout) {
        self.out.push(TensorMap {
            name,
            effnet_shape: effnet,
            timm_shape: timm,
            layout,
            running: false,
        });
    }

    fn conv(&mut self, name: &str, k: usize, cin: usize, cout: usize, groups: usize) {
        self.push(
            format!("{name}.weight"),
            vec![k, k, cin / groups, cout],
            vec![cout, cin / groups, k, k],
            Layout::Conv {
                k,
                cin,
                cout,
                groups,
            },
        );
    }

    fn vector(&mut self, name: String, c: usize, running: bool) {
        self.out.push(TensorMap {
            name,
            effnet_shape: vec![c],
            timm_shape: vec![c],
            layout: Layout::Same,
            running,
        });
    }

    fn norm(&mut self, name: &str, c: usize) {
        self.vector(format!("{name}.weight"), c, false);
        self.vector(format!("{name}.bias"), c, false);
        if self.bn {
            self.vector(format!("{name}.running_mean"), c, true);
            self.vector(format!("{name}.running_var"), c, true);
        }
    }

    fn se(&mut self, p: &str, c: usize, hidden: usize) {
        for (name, cin, cout) in [("conv_reduce", c, hidden), ("conv_expand", hidden, c)] {
            self.push(
                format!("{p}.se.{name}.weight"),
                vec![cin, cout],
                vec![cout, cin, 1, 1],
                Layout::Conv {
                    k: 1,
                    cin,
                    cout,
                    groups: 1,
                },
            );
            self.vector(format!("{p}.se.{name}.bias"), cout, false);
        }
    }
}

/// Every tensor of the timm state dict of a configuration (without `num_batches_tracked`),
/// in timm's order. Errors for norms without plain weight-and-bias parameters (Proxy Norm
/// variants).
pub fn tensor_maps(cfg: &ModelConfig) -> Result<Vec<TensorMap>> {
    if cfg.norm.proxy() {
        return Err(Error::Config(format!(
            "model {} uses Proxy Norm ({}), which has no timm/PyTorch counterpart",
            cfg.name,
            cfg.norm.name()
        )));
    }
    cfg.validate()?;
    let mut b = Builder {
        out: Vec::new(),
        bn: cfg.norm == NormChoice::Bn,
    };
    let stem = cfg.stem_width();
    b.conv("conv_stem", 3, cfg.in_channels, stem, 1);
    b.norm("bn1", stem);
    let mut stage_idx = [0usize; 8];
    let mut last = stem;
    for blk in cfg.blocks() {
        let j = stage_idx[blk.stage];
        stage_idx[blk.stage] += 1;
        let p = format!("blocks.{}.{}", blk.stage - 1, j);
        let expand = blk.expand != 1;
        if expand {
            b.conv(&format!("{p}.conv_pw"), 1, blk.cin, blk.mid, 1);
            b.norm(&format!("{p}.bn1"), blk.mid);
        }
        b.conv(&format!("{p}.conv_dw"), blk.k, blk.mid, blk.mid, blk.groups);
        b.norm(
            &format!("{p}.{}", if expand { "bn2" } else { "bn1" }),
            blk.mid,
        );
        b.se(&p, blk.mid, blk.se_hidden);
        let (pwl, n3) = if expand {
            ("conv_pwl", "bn3")
        } else {
            ("conv_pw", "bn2")
        };
        b.conv(&format!("{p}.{pwl}"), 1, blk.mid, blk.cout, 1);
        b.norm(&format!("{p}.{n3}"), blk.cout);
        last = blk.cout;
    }
    let head = cfg.head_width();
    b.conv("conv_head", 1, last, head, 1);
    b.norm("bn2", head);
    b.push(
        "classifier.weight".into(),
        vec![head, cfg.classes],
        vec![cfg.classes, head],
        Layout::Linear {
            cin: head,
            cout: cfg.classes,
        },
    );
    b.vector("classifier.bias".into(), cfg.classes, false);
    Ok(b.out)
}
