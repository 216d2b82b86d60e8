//! EfficientNet architecture descriptions (SPEC §A-§C): the B0 stage table, compound
//! width/depth scaling with round-to-8, G16 group convolutions with expansion 4, and the
//! normalization choice. Pure description: layer list, parameter and MAC counts.

use serde::{Deserialize, Serialize};

use super::ImageSize;
use crate::error::{Error, Result};
pub use crate::nn::NormChoice;
use crate::ops::conv::Padding;

/// A model preset: `b0`..`b7` (depthwise, expansion 6) or `b0-g16`..`b7-g16` (16
/// channels per group, expansion 4). A command-line value ([`clap::ValueEnum`]): a
/// misspelled `--model` is refused by the parser with the list of presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    /// Compound-scaling index 0..=7 (B0..B7).
    pub scale: usize,
    /// The G16 variant.
    pub g16: bool,
}

const PRESET_NAMES: [&str; 16] = [
    "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b0-g16", "b1-g16", "b2-g16", "b3-g16",
    "b4-g16", "b5-g16", "b6-g16", "b7-g16",
];

const PRESETS: [Preset; 16] = {
    let mut v = [Preset {
        scale: 0,
        g16: false,
    }; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = Preset {
            scale: i % 8,
            g16: i >= 8,
        };
        i += 1;
    }
    v
};

impl Preset {
    /// The name: `b0`, ..., `b7-g16`.
    pub fn name(self) -> &'static str {
        PRESET_NAMES[self.scale % 8 + if self.g16 { 8 } else { 0 }]
    }

    /// Its configuration (defaults otherwise: BatchNorm, 1000 classes).
    pub fn config(self) -> ModelConfig {
        ModelConfig::preset(self.name()).expect("every Preset names a configuration")
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl clap::ValueEnum for Preset {
    fn value_variants<'a>() -> &'a [Self] {
        &PRESETS
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// One stage of the B0 table: (kernel, stride, output channels, repeats, expansion).
#[derive(Clone, Copy, Debug)]
struct StageDef {
    k: usize,
    stride: usize,
    cout: usize,
    repeats: usize,
    expand: usize,
}

const B0_STAGES: [StageDef; 7] = [
    StageDef {
        k: 3,
        stride: 1,
        cout: 16,
        repeats: 1,
        expand: 1,
    },
    StageDef {
        k: 3,
        stride: 2,
        cout: 24,
        repeats: 2,
        expand: 6,
    },
    StageDef {
        k: 5,
        stride: 2,
        cout: 40,
        repeats: 2,
        expand: 6,
    },
    StageDef {
        k: 3,
        stride: 2,
        cout: 80,
        repeats: 3,
        expand: 6,
    },
    StageDef {
        k: 5,
        stride: 1,
        cout: 112,
        repeats: 3,
        expand: 6,
    },
    StageDef {
        k: 5,
        stride: 2,
        cout: 192,
        repeats: 4,
        expand: 6,
    },
    StageDef {
        k: 3,
        stride: 1,
        cout: 320,
        repeats: 1,
        expand: 6,
    },
];

/// (width, depth, resolution, dropout) for B0..B7.
const SCALING: [(f64, f64, usize, f64); 8] = [
    (1.0, 1.0, 224, 0.2),
    (1.0, 1.1, 240, 0.2),
    (1.1, 1.2, 260, 0.3),
    (1.2, 1.4, 300, 0.3),
    (1.4, 1.8, 380, 0.4),
    (1.6, 2.2, 456, 0.4),
    (1.8, 2.6, 528, 0.5),
    (2.0, 3.1, 600, 0.5),
];

/// `round_filters`: scale by the width multiplier, round to a multiple of 8 (at least 8),
/// and never go more than 10% below the scaled value.
pub fn round_filters(c: usize, width: f64) -> usize {
    round_channels(c, width, 8)
}

/// [`round_filters`] to multiples of `divisor` (timm's `round_channels(...,
/// divisor=...)`; its `efficientnet_b3_gn` variants use 16).
pub fn round_channels(c: usize, width: f64, divisor: usize) -> usize {
    let d = divisor.max(1);
    let v = c as f64 * width;
    let mut n = (((v + d as f64 / 2.0) / d as f64).floor() as usize * d).max(d);
    if (n as f64) < 0.9 * v {
        n += d;
    }
    n
}

fn default_channel_divisor() -> usize {
    8
}

fn is_default_divisor(d: &usize) -> bool {
    *d == 8
}

/// `round_repeats`: ceil(depth * repeats).
pub fn round_repeats(r: usize, depth: f64) -> usize {
    (depth * r as f64 - 1e-9).ceil() as usize
}

/// Default BatchNorm running-statistics momentum (TF convention, SPEC §A).
fn default_bn_momentum() -> f64 {
    0.99
}

/// Bounds on a [`ModelConfig`]'s numbers, checked by [`ModelConfig::check_ranges`] on every
/// path that builds a model (command line, checkpoint metadata, timm files).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest width multiplier.
    pub max_width: f64,
    /// Largest depth multiplier.
    pub max_depth: f64,
    /// Most output classes.
    pub max_classes: usize,
    /// Most input channels.
    pub max_in_channels: usize,
    /// Widest head before scaling.
    pub max_head: usize,
    /// Largest expansion ratio.
    pub max_expand: usize,
    /// Most channels per group (convolutions and GroupNorm), and most GroupNorm groups.
    pub max_group_size: usize,
    /// Largest native resolution.
    pub max_resolution: usize,
}

/// The bounds in force; see [`LIMITS_WHY`].
pub const LIMITS: Limits = Limits {
    max_width: 8.0,
    max_depth: 8.0,
    max_classes: 1 << 20,
    max_in_channels: 256,
    max_head: 1 << 14,
    max_expand: 16,
    max_group_size: 1 << 12,
    max_resolution: 8192,
};

/// Why the bounds are where they are (part of the error message).
pub const LIMITS_WHY: &str = "Bounds: width and depth multipliers in (0, 8] (the largest \
EfficientNet, L2, uses 4.3 and 5.3; B7 2.0 and 3.1), at most 1,048,576 classes (ImageNet-21k \
has 21,843), 256 input channels, a 16,384-wide head, expansion 16 and a native resolution of \
8192 px; dropout and drop-connect in [0, 1)";

/// A full model configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Preset name (`b0`, `b0-g16`, ...), for display.
    pub name: String,
    /// Width multiplier.
    pub width: f64,
    /// Depth multiplier.
    pub depth: f64,
    /// Native resolution of the preset.
    pub resolution: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Channels per group of the spatial convolutions (1 = depthwise, 16 = G16).
    pub group_size: usize,
    /// Expansion ratio of the MBConv6 stages (6 for G1, 4 for G16).
    pub expand: usize,
    /// Normalization.
    pub norm: NormChoice,
    /// Groups for GroupNorm variants.
    pub gn_groups: usize,
    /// GroupNorm channels per group (timm's `GroupNormAct(group_size=...)`); when set, a
    /// layer of `C` channels gets `C / gn_group_size` groups instead of `gn_groups`.
    #[serde(default)]
    pub gn_group_size: Option<usize>,
    /// Norm epsilon.
    pub norm_eps: f64,
    /// BatchNorm running-statistics momentum in the TF convention
    /// (`run = m * run + (1 - m) * batch`; PyTorch's momentum 0.1 is 0.9 here).
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    /// Channel counts are rounded to multiples of this (8; timm's b3 GroupNorm variants
    /// use 16).
    #[serde(
        default = "default_channel_divisor",
        skip_serializing_if = "is_default_divisor"
    )]
    pub channel_divisor: usize,
    /// Output classes.
    pub classes: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Final drop-connect rate (rises linearly over blocks from 0).
    pub drop_connect: f64,
    /// Squeeze-excitation ratio on the block input width.
    pub se_ratio: f64,
    /// Head width before scaling (1280 in B0).
    pub head: usize,
    /// Padding of the convolutions: symmetric `k / 2` (timm's `efficientnet_*`) or
    /// TensorFlow "SAME" (timm's `tf_efficientnet_*`, see [`ModelConfig::with_tf_padding`]).
    #[serde(default)]
    pub padding: Padding,
}

/// BatchNorm epsilon of the TensorFlow-ported models (timm's `BN_EPS_TF_DEFAULT`).
pub const TF_NORM_EPS: f64 = 1e-3;

impl ModelConfig {
    /// A preset: `b0`..`b7` (depthwise, expansion 6) or `b0-g16`..`b7-g16` (16 channels
    /// per group, expansion 4). Norm defaults to BN.
    pub fn preset(name: &str) -> Result<Self> {
        let (base, g16) = match name.strip_suffix("-g16") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let idx = base
            .strip_prefix('b')
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d < 8)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown model '{name}': use b0..b7 or b0-g16..b7-g16"
                ))
            })?;
        let (width, depth, resolution, dropout) = SCALING[idx];
        Ok(Self {
            name: name.to_string(),
            width,
            depth,
            resolution,
            dropout,
            group_size: if g16 { 16 } else { 1 },
            expand: if g16 { 4 } else { 6 },
            norm: NormChoice::Bn,
            gn_groups: 4,
            gn_group_size: None,
            norm_eps: 1e-3,
            bn_momentum: default_bn_momentum(),
            channel_divisor: default_channel_divisor(),
            classes: 1000,
            in_channels: 3,
            drop_connect: 0.2,
            se_ratio: 0.25,
            head: 1280,
            padding: Padding::Symmetric,
        })
    }

    /// The TensorFlow-ported variant of this configuration (timm's `tf_efficientnet_*`
    /// next to `efficientnet_*`): TensorFlow "SAME" padding in every convolution and
    /// BatchNorm epsilon [`TF_NORM_EPS`]; every tensor keeps its name and shape.
    pub fn with_tf_padding(mut self) -> Self {
        self.padding = Padding::TfSame;
        self.norm_eps = TF_NORM_EPS;
        self
    }

    /// The concrete layer plan of this configuration.
    pub fn blocks(&self) -> Vec<BlockDef> {
        let stem = self.stem_width();
        let mut cin = stem;
        let total: usize = B0_STAGES
            .iter()
            .map(|s| round_repeats(s.repeats, self.depth))
            .sum();
        let mut out = Vec::new();
        let mut idx = 0;
        for (si, st) in B0_STAGES.iter().enumerate() {
            let cout = round_channels(st.cout, self.width, self.channel_divisor);
            let expand = if st.expand == 1 { 1 } else { self.expand };
            for r in 0..round_repeats(st.repeats, self.depth) {
                let stride = if r == 0 { st.stride } else { 1 };
                let mid = cin * expand;
                let groups = if self.group_size <= 1 {
                    mid
                } else {
                    (mid / self.group_size).max(1)
                };
                out.push(BlockDef {
                    stage: si + 1,
                    cin,
                    cout,
                    mid,
                    k: st.k,
                    stride,
                    expand,
                    groups,
                    se_hidden: ((cin as f64 * self.se_ratio) as usize).max(1),
                    drop_connect: self.drop_connect * idx as f64 / total as f64,
                    residual: stride == 1 && cin == cout,
                });
                idx += 1;
                cin = cout;
            }
        }
        out
    }

    /// Stem width.
    pub fn stem_width(&self) -> usize {
        round_channels(32, self.width, self.channel_divisor)
    }

    /// Head width.
    pub fn head_width(&self) -> usize {
        round_channels(self.head, self.width, self.channel_divisor)
    }

    /// Groups of a GroupNorm over `c` channels: `c / gn_group_size` when that is set,
    /// else the largest divisor of `c` not above `gn_groups`.
    pub fn norm_groups(&self, c: usize) -> usize {
        match self.gn_group_size {
            Some(gs) if gs > 0 => (c / gs).max(1),
            _ => (1..=self.gn_groups.min(c))
                .rev()
                .find(|&g| c.is_multiple_of(g))
                .unwrap_or(1),
        }
    }

    /// Check that every number is in its range ([`LIMITS`]), without building anything
    /// (a configuration read from a file may hold anything: `depth: 1e6` must be refused
    /// here, before a layer plan of millions of blocks is made).
    pub fn check_ranges(&self) -> Result<()> {
        let l = &LIMITS;
        let mut bad = Vec::new();
        let mut real = |name: &str, v: f64, lo: f64, lo_open: bool, hi: f64, hi_open: bool| {
            let ok = v.is_finite()
                && (if lo_open { v > lo } else { v >= lo })
                && (if hi_open { v < hi } else { v <= hi });
            if !ok {
                bad.push(format!(
                    "{name} {v} is outside {}{lo}, {hi}{}",
                    if lo_open { "(" } else { "[" },
                    if hi_open { ")" } else { "]" }
                ));
            }
        };
        real("width", self.width, 0.0, true, l.max_width, false);
        real("depth", self.depth, 0.0, true, l.max_depth, false);
        real("dropout", self.dropout, 0.0, false, 1.0, true);
        real("drop_connect", self.drop_connect, 0.0, false, 1.0, true);
        real("se_ratio", self.se_ratio, 0.0, true, 1.0, false);
        let mut int = |name: &str, v: usize, lo: usize, hi: usize| {
            if !(lo..=hi).contains(&v) {
                bad.push(format!("{name} {v} is outside [{lo}, {hi}]"));
            }
        };
        int("classes", self.classes, 2, l.max_classes);
        int("in_channels", self.in_channels, 1, l.max_in_channels);
        int("head", self.head, 1, l.max_head);
        int("expand", self.expand, 1, l.max_expand);
        int("group_size", self.group_size, 1, l.max_group_size);
        int("gn_groups", self.gn_groups, 1, l.max_group_size);
        int("channel_divisor", self.channel_divisor, 1, 256);
        int("resolution", self.resolution, 8, l.max_resolution);
        if let Some(gs) = self.gn_group_size {
            int("gn_group_size", gs, 1, l.max_group_size);
        }
        if bad.is_empty()
            && B0_STAGES
                .iter()
                .any(|s| round_repeats(s.repeats, self.depth) == 0)
        {
            bad.push(format!(
                "depth {} leaves a stage without blocks (every stage needs one)",
                self.depth
            ));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "model configuration '{}' is out of range: {}. {}",
                self.name,
                bad.join("; "),
                LIMITS_WHY
            )))
        }
    }

    /// Check the configuration can be built: every number in range ([`Self::check_ranges`]),
    /// then the layer plan.
    pub fn validate(&self) -> Result<()> {
        self.check_ranges()?;
        if let (Some(gs), NormChoice::Gn | NormChoice::GnPn) = (self.gn_group_size, self.norm) {
            let mut widths = vec![self.stem_width(), self.head_width()];
            for b in self.blocks() {
                widths.extend([b.mid, b.cout]);
            }
            if let Some(c) = widths.iter().find(|&&c| gs == 0 || !c.is_multiple_of(gs)) {
                return Err(Error::Config(format!(
                    "GroupNorm with {gs} channels per group cannot normalize {c} channels"
                )));
            }
        }
        if !self.norm_eps.is_finite()
            || self.norm_eps <= 0.0
            || !(0.0..1.0).contains(&self.bn_momentum)
        {
            return Err(Error::Config(format!(
                "norm eps must be positive and BatchNorm momentum in [0, 1), got {} and {}",
                self.norm_eps, self.bn_momentum
            )));
        }
        for b in self.blocks() {
            if b.mid % b.groups != 0 {
                return Err(Error::Config(format!(
                    "stage {}: {} channels do not split into {} groups",
                    b.stage, b.mid, b.groups
                )));
            }
        }
        Ok(())
    }
}

/// One MBConv block, resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockDef {
    /// Stage (1-based).
    pub stage: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Expanded channels (cin * expand).
    pub mid: usize,
    /// Spatial kernel.
    pub k: usize,
    /// Stride of the spatial conv.
    pub stride: usize,
    /// Expansion ratio (1: no expand conv).
    pub expand: usize,
    /// Groups of the spatial conv.
    pub groups: usize,
    /// Squeeze-excitation hidden width.
    pub se_hidden: usize,
    /// Drop-connect rate of this block.
    pub drop_connect: f64,
    /// Identity skip (stride 1 and cin == cout).
    pub residual: bool,
}

/// One row of `effnet model`'s layer table.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    /// Layer name (timm-like: `blocks.3.1.conv_dw`).
    pub name: String,
    /// Kind (`conv3x3/s2`, `group-conv5x5 g=15`, `se`, `fc`, `norm`).
    pub kind: String,
    /// Output shape [H, W, C].
    pub out: [usize; 3],
    /// Parameters.
    pub params: usize,
    /// Multiply-accumulates per image.
    pub macs: usize,
}

/// Parameters of a normalization layer over `c` channels (affine gamma and beta; Proxy
/// Norm adds its proxy shift and scale).
fn norm_params(c: usize, proxy: bool) -> usize {
    if proxy {
        4 * c
    } else {
        2 * c
    }
}

/// The layer table at a given input resolution (`N` or an [`ImageSize`]).
pub fn layer_table(cfg: &ModelConfig, image: impl Into<ImageSize>) -> Vec<LayerRow> {
    let mut rows = Vec::new();
    let proxy = cfg.norm.proxy();
    let image = image.into();
    let (mut hh, mut ww) = (image.h.div_ceil(2), image.w.div_ceil(2));
    let stem = cfg.stem_width();
    let mut push = |name: String, kind: String, out: [usize; 3], params: usize, macs: usize| {
        rows.push(LayerRow {
            name,
            kind,
            out,
            params,
            macs,
        })
    };
    push(
        "conv_stem".into(),
        "conv3x3/s2".into(),
        [hh, ww, stem],
        9 * cfg.in_channels * stem,
        hh * ww * 9 * cfg.in_channels * stem,
    );
    push(
        "bn1".into(),
        "norm+act".into(),
        [hh, ww, stem],
        norm_params(stem, proxy),
        0,
    );
    let mut stage_idx = [0usize; 8];
    for b in cfg.blocks() {
        let j = stage_idx[b.stage];
        stage_idx[b.stage] += 1;
        let p = format!("blocks.{}.{}", b.stage - 1, j);
        if b.expand != 1 {
            push(
                format!("{p}.conv_pw"),
                "conv1x1".into(),
                [hh, ww, b.mid],
                b.cin * b.mid,
                hh * ww * b.cin * b.mid,
            );
            push(
                format!("{p}.bn1"),
                "norm+act".into(),
                [hh, ww, b.mid],
                norm_params(b.mid, proxy),
                0,
            );
        }
        let (ho, wo) = ((hh - 1) / b.stride + 1, (ww - 1) / b.stride + 1);
        let cpg = b.mid / b.groups;
        let kind = if cpg == 1 {
            format!("dwconv{}x{}/s{}", b.k, b.k, b.stride)
        } else {
            format!("gconv{}x{}/s{} g={}", b.k, b.k, b.stride, b.groups)
        };
        push(
            format!("{p}.conv_dw"),
            kind,
            [ho, wo, b.mid],
            b.k * b.k * cpg * b.mid,
            ho * wo * b.k * b.k * cpg * b.mid,
        );
        (hh, ww) = (ho, wo);
        push(
            format!("{p}.bn2"),
            "norm+act".into(),
            [hh, ww, b.mid],
            norm_params(b.mid, proxy),
            0,
        );
        push(
            format!("{p}.se"),
            format!("se {}->{}->{}", b.mid, b.se_hidden, b.mid),
            [hh, ww, b.mid],
            2 * b.mid * b.se_hidden + b.se_hidden + b.mid,
            2 * b.mid * b.se_hidden,
        );
        push(
            format!("{p}.conv_pwl"),
            "conv1x1".into(),
            [hh, ww, b.cout],
            b.mid * b.cout,
            hh * ww * b.mid * b.cout,
        );
        // The projection norm has no activation; with Proxy Norm it is LN with scale only.
        let pn = if proxy { b.cout } else { 2 * b.cout };
        push(format!("{p}.bn3"), "norm".into(), [hh, ww, b.cout], pn, 0);
    }
    let last = cfg.blocks().last().map(|b| b.cout).unwrap_or(stem);
    let head = cfg.head_width();
    push(
        "conv_head".into(),
        "conv1x1".into(),
        [hh, ww, head],
        last * head,
        hh * ww * last * head,
    );
    push(
        "bn2".into(),
        "norm+act".into(),
        [hh, ww, head],
        norm_params(head, proxy),
        0,
    );
    push(
        "classifier".into(),
        "fc".into(),
        [1, 1, cfg.classes],
        head * cfg.classes + cfg.classes,
        head * cfg.classes,
    );
    rows
}

/// Total (parameters, MACs per image) at a resolution (`N` or an [`ImageSize`]).
pub fn totals(cfg: &ModelConfig, image: impl Into<ImageSize>) -> (usize, usize) {
    layer_table(cfg, image)
        .iter()
        .fold((0, 0), |(p, m), r| (p + r.params, m + r.macs))
}
