//! timm architecture names and effnet model configurations, both ways.
//!
//! timm builds its EfficientNets with `_gen_efficientnet(variant, channel_multiplier,
//! depth_multiplier, group_size, norm_layer, ...)` from the same B0 stage table as effnet
//! (SPEC §A): channels rounded to multiples of 8 (`make_divisible`, never more than 10%
//! down), stage repeats `ceil(depth * r)`, squeeze-excitation width `round(block input
//! channels * 0.25)`, symmetric padding `k // 2`, norm epsilon 1e-5, and for the GN
//! variants `GroupNormAct(group_size=8)`, i.e. 8 channels per group (SPEC §E).
//! [`config_from_timm`] gives the configuration of a timm name, [`infer_config`] adapts it
//! to a state dict (classes, input channels, reduced width or depth), and
//! [`timm_equivalent`] goes back from a configuration to the timm model that has the same
//! tensors.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::models::config::round_repeats;
use crate::models::{ModelConfig, NormChoice};
use crate::util::safetensors::SafeTensors;

/// timm's norm epsilon (`nn.BatchNorm2d` and `GroupNormAct` defaults).
pub const TIMM_NORM_EPS: f64 = 1e-5;

/// PyTorch's BatchNorm momentum 0.1 in effnet's TF convention
/// (`run = m * run + (1 - m) * batch`).
pub const TIMM_BN_MOMENTUM: f64 = 0.9;

/// Metadata key of exports and timm files: the BatchNorm momentum in PyTorch's convention
/// (`run = (1 - m) * run + m * batch`).
pub const META_BN_MOMENTUM_PYTORCH: &str = "bn_momentum_pytorch";

/// A BatchNorm momentum from effnet's (TensorFlow's) convention to PyTorch's: `1 - m`,
/// rounded to 12 digits so 0.99 gives 0.01, not 0.010000000000000009.
pub fn bn_momentum_to_pytorch(tf: f64) -> f64 {
    ((1.0 - tf) * 1e12).round() / 1e12
}

/// A BatchNorm momentum from PyTorch's convention to effnet's (TensorFlow's).
pub fn bn_momentum_from_pytorch(pt: f64) -> f64 {
    ((1.0 - pt) * 1e12).round() / 1e12
}

/// The sentence checkpoints and exports carry about a model's BatchNorm momentum.
pub fn bn_momentum_statement(tf: f64) -> String {
    format!(
        "effnet keeps TensorFlow's convention, running = m * running + (1 - m) * batch, with \
         m = {tf}; PyTorch's nn.BatchNorm2d(momentum={}) is the same update",
        bn_momentum_to_pytorch(tf)
    )
}

/// One timm EfficientNet effnet can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimmArch {
    /// timm model name (`timm.create_model(name)`).
    pub name: &'static str,
    /// effnet preset with the same width, depth, resolution and dropout.
    pub preset: &'static str,
    /// Channels per group of the spatial convolutions (1: depthwise).
    pub group_size: usize,
    /// GroupNorm channels per group, or `None` for BatchNorm.
    pub gn_group_size: Option<usize>,
    /// Channel counts round to multiples of this (`channel_divisor`).
    pub channel_divisor: usize,
    /// TensorFlow-ported weights (`tf_efficientnet_*`): "SAME" padding and BatchNorm eps
    /// 1e-3 ([`ModelConfig::with_tf_padding`]).
    pub tf: bool,
}

const fn bn(name: &'static str, preset: &'static str) -> TimmArch {
    TimmArch {
        name,
        preset,
        group_size: 1,
        gn_group_size: None,
        channel_divisor: 8,
        tf: false,
    }
}

const fn tf(name: &'static str, preset: &'static str) -> TimmArch {
    TimmArch {
        tf: true,
        ..bn(name, preset)
    }
}

const fn gn(name: &'static str, preset: &'static str, group_size: usize, gs: usize) -> TimmArch {
    TimmArch {
        name,
        preset,
        group_size,
        gn_group_size: Some(gs),
        channel_divisor: gs,
        tf: false,
    }
}

/// The timm architectures effnet maps: `efficientnet_b0`..`efficientnet_b7` (BatchNorm),
/// `efficientnet_b0_gn` (GroupNorm, 8 channels per group), `efficientnet_b0_g8_gn`
/// (8-channels-per-group convolutions and GroupNorm), and `efficientnet_b3_gn` /
/// `efficientnet_b3_g8_gn` (the same at B3 scale with channels rounded to multiples of 16
/// and 16 channels per norm group), and `tf_efficientnet_b0`..`tf_efficientnet_b7` (the
/// TensorFlow ports: "SAME" padding, BatchNorm eps 1e-3).
pub const TIMM_ARCHS: [TimmArch; 20] = [
    bn("efficientnet_b0", "b0"),
    bn("efficientnet_b1", "b1"),
    bn("efficientnet_b2", "b2"),
    bn("efficientnet_b3", "b3"),
    bn("efficientnet_b4", "b4"),
    bn("efficientnet_b5", "b5"),
    bn("efficientnet_b6", "b6"),
    bn("efficientnet_b7", "b7"),
    gn("efficientnet_b0_gn", "b0", 1, 8),
    gn("efficientnet_b0_g8_gn", "b0", 8, 8),
    gn("efficientnet_b3_gn", "b3", 1, 16),
    gn("efficientnet_b3_g8_gn", "b3", 8, 16),
    tf("tf_efficientnet_b0", "b0"),
    tf("tf_efficientnet_b1", "b1"),
    tf("tf_efficientnet_b2", "b2"),
    tf("tf_efficientnet_b3", "b3"),
    tf("tf_efficientnet_b4", "b4"),
    tf("tf_efficientnet_b5", "b5"),
    tf("tf_efficientnet_b6", "b6"),
    tf("tf_efficientnet_b7", "b7"),
];

/// The architecture part of a timm model reference: `timm/efficientnet_b0.ra_in1k` and
/// `hf-hub:timm/efficientnet_b0.ra_in1k` give `efficientnet_b0` (hub prefix and
/// pretrained tag removed).
pub fn base_name(name: &str) -> &str {
    let n = name.strip_prefix("hf-hub:").unwrap_or(name);
    let n = n.strip_prefix("hf_hub:").unwrap_or(n);
    let n = n.rsplit('/').next().unwrap_or(n);
    n.split('.').next().unwrap_or(n)
}

/// The mapped timm architecture of a name (see [`base_name`]), if any.
pub fn find_arch(name: &str) -> Option<&'static TimmArch> {
    let b = base_name(name);
    TIMM_ARCHS.iter().find(|a| a.name == b)
}

fn known_names() -> String {
    TIMM_ARCHS
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configuration `timm.create_model(name)` builds: 1000 classes, 3 input channels,
/// timm's norm epsilon 1e-5 and BatchNorm momentum (PyTorch 0.1), GroupNorm with 8
/// channels per group for the `_gn` variants, and the preset's dropout and drop-connect
/// for training.
pub fn config_from_timm(name: &str) -> Result<ModelConfig> {
    let arch = find_arch(name).ok_or_else(|| {
        Error::Config(format!(
            "'{name}' is not a timm EfficientNet effnet can build: use one of {}",
            known_names()
        ))
    })?;
    let mut cfg = ModelConfig::preset(arch.preset)?;
    cfg.name = arch.name.to_string();
    cfg.group_size = arch.group_size;
    cfg.expand = 6;
    cfg.norm = if arch.gn_group_size.is_some() {
        NormChoice::Gn
    } else {
        NormChoice::Bn
    };
    cfg.gn_group_size = arch.gn_group_size;
    cfg.channel_divisor = arch.channel_divisor;
    cfg.norm_eps = TIMM_NORM_EPS;
    cfg.bn_momentum = TIMM_BN_MOMENTUM;
    if arch.tf {
        cfg = cfg.with_tf_padding();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Shape of a tensor of the state dict, or a problem line.
fn shape_of<'a>(
    st: &'a SafeTensors,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<&'a [usize]> {
    match st.tensors.get(name) {
        Some(t) => Some(&t.shape),
        None => {
            problems.push(format!("missing {name}"));
            None
        }
    }
}

/// Number of blocks per stage (`blocks.{s}.{j}.*`) in a state dict.
pub fn stage_block_counts(st: &SafeTensors) -> BTreeMap<usize, usize> {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for name in st.tensors.keys() {
        let mut it = name.split('.');
        if it.next() != Some("blocks") {
            continue;
        }
        let (Some(s), Some(j)) = (
            it.next().and_then(|v| v.parse::<usize>().ok()),
            it.next().and_then(|v| v.parse::<usize>().ok()),
        ) else {
            continue;
        };
        let e = seen.entry(s).or_insert(0);
        *e = (*e).max(j.saturating_add(1));
    }
    seen
}

/// Stage widths (stem, the seven stage outputs, head) of a configuration.
fn widths(cfg: &ModelConfig) -> Vec<usize> {
    let mut w = vec![cfg.stem_width()];
    let mut last_stage = 0;
    for b in cfg.blocks() {
        if b.stage != last_stage {
            w.push(b.cout);
            last_stage = b.stage;
        }
    }
    w.push(cfg.head_width());
    w
}

/// Adapt `base` (from [`config_from_timm`] or a preset) to a timm-named state dict: the
/// classes and input channels come from the classifier and stem shapes, and a reduced
/// (or enlarged) model is recognised from its block counts per stage (depth multiplier)
/// and channel widths (width multiplier, from the head width). Only what the names and
/// shapes determine is changed; the tensor-by-tensor check happens on import.
pub fn infer_config(base: &ModelConfig, st: &SafeTensors) -> Result<ModelConfig> {
    let mut cfg = base.clone();
    let mut problems = Vec::new();
    let cls = shape_of(st, "classifier.weight", &mut problems).map(|s| s.to_vec());
    let stem = shape_of(st, "conv_stem.weight", &mut problems).map(|s| s.to_vec());
    if let Some(s) = &cls {
        if s.len() == 2 {
            cfg.classes = s[0];
        } else {
            problems.push(format!(
                "classifier.weight: shape {s:?}, expected [classes, features]"
            ));
        }
    }
    if let Some(s) = &stem {
        if s.len() == 4 {
            cfg.in_channels = s[1];
        } else {
            problems.push(format!(
                "conv_stem.weight: shape {s:?}, expected [out, in, 3, 3]"
            ));
        }
    }
    // Depth: block counts per stage.
    let counts = stage_block_counts(st);
    const REPEATS: [usize; 7] = [1, 2, 2, 3, 3, 4, 1];
    let have: Vec<usize> = (0..7)
        .map(|s| counts.get(&s).copied().unwrap_or(0))
        .collect();
    if counts.keys().any(|&s| s >= 7) || have.contains(&0) {
        problems.push(format!(
            "blocks per stage {have:?}: an EfficientNet has 7 stages with at least one block each"
        ));
    } else {
        let fits = |d: f64| (0..7).all(|i| round_repeats(REPEATS[i], d) == have[i]);
        if !fits(cfg.depth) {
            let d = (0..7)
                .map(|i| have[i] as f64 / REPEATS[i] as f64)
                .fold(f64::INFINITY, f64::min);
            if fits(d) {
                cfg.depth = d;
            } else {
                problems.push(format!(
                    "blocks per stage {have:?} match no depth multiplier of the B0 table {REPEATS:?}"
                ));
            }
        }
    }
    // Names may claim any block count and shapes any size (a tensor with a zero dimension
    // holds no data): check the ranges before planning layers from them.
    if problems.is_empty() {
        cfg.check_ranges()?;
    }
    // Width: from the head (features of the classifier), checked on every stage width.
    if let (Some(c), Some(s)) = (&cls, &stem) {
        if c.len() == 2 && s.len() == 4 && problems.is_empty() {
            let mut want = vec![s[0]];
            for (stage, &n) in have.iter().enumerate() {
                let j = n - 1;
                let p = format!("blocks.{stage}.{j}");
                let n = if st.tensors.contains_key(&format!("{p}.conv_pwl.weight")) {
                    format!("{p}.conv_pwl.weight")
                } else {
                    format!("{p}.conv_pw.weight")
                };
                match st.tensors.get(&n) {
                    Some(t) if !t.shape.is_empty() => want.push(t.shape[0]),
                    _ => problems.push(format!("missing {n}")),
                }
            }
            want.push(c[1]);
            if problems.is_empty() && widths(&cfg) != want {
                let mut trial = cfg.clone();
                trial.width = c[1] as f64 / cfg.head as f64;
                // A zero-sized tensor may claim any width: check the range before planning.
                trial.check_ranges()?;
                if widths(&trial) == want {
                    cfg.width = trial.width;
                } else {
                    problems.push(format!(
                        "stem, stage and head widths {want:?} match no width multiplier of the \
                         B0 table (width {} gives {:?})",
                        trial.width,
                        widths(&trial)
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(format!(
            "cannot read the architecture of these weights as {}:\n  {}",
            base.name,
            problems.join("\n  ")
        )));
    }
    if cfg.width != base.width || cfg.depth != base.depth {
        cfg.name = format!("{}-w{}-d{}", base.name, cfg.width, cfg.depth);
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The timm model with the same tensors as an effnet configuration, and how to build it.
#[derive(Clone, Debug, PartialEq)]
pub struct TimmEquivalent {
    /// timm model name.
    pub name: &'static str,
    /// Width multiplier (`channel_multiplier`).
    pub channel_multiplier: f64,
    /// Depth multiplier (`depth_multiplier`).
    pub depth_multiplier: f64,
    /// True when the width and depth are the named model's own, so that
    /// `timm.create_model(name, num_classes=...)` builds it.
    pub registered: bool,
    /// Output classes (`num_classes`).
    pub num_classes: usize,
    /// Input channels (`in_chans`).
    pub in_chans: usize,
    /// Norm epsilon of the effnet model (timm's default is [`TIMM_NORM_EPS`]).
    pub norm_eps: f64,
    /// BatchNorm (else GroupNorm).
    pub batch_norm: bool,
    /// Channels per group of the spatial convolutions.
    pub group_size: usize,
    /// GroupNorm channels per group (GroupNorm models).
    pub gn_group_size: usize,
    /// Channel rounding (`channel_divisor`).
    pub channel_divisor: usize,
    /// BatchNorm momentum in PyTorch's convention (timm's default 0.1).
    pub bn_momentum_pytorch: f64,
    /// TensorFlow "SAME" padding (`pad_type="same"`, the `tf_efficientnet_*` models).
    pub tf_padding: bool,
}

impl TimmEquivalent {
    /// Python that builds the matching (untrained) timm module, e.g.
    /// `timm.create_model("efficientnet_b0", num_classes=10)`; reduced widths or depths and
    /// non-default GroupNorm epsilons go through `timm.models.efficientnet._gen_efficientnet`
    /// with the arguments the registered function passes. Needs `import timm` (and
    /// `import functools` for the second form).
    pub fn python(&self) -> String {
        let mut extra = String::new();
        if self.num_classes != 1000 {
            extra += &format!(", num_classes={}", self.num_classes);
        }
        if self.in_chans != 3 {
            extra += &format!(", in_chans={}", self.in_chans);
        }
        let eps_default = (self.norm_eps - TIMM_NORM_EPS).abs() <= 1e-12;
        if self.batch_norm && (self.bn_momentum_pytorch - 0.1).abs() > 1e-12 {
            extra += &format!(", bn_momentum={}", self.bn_momentum_pytorch);
        }
        // The registered tf_ functions default to eps 1e-3 (and "SAME" padding).
        let registered_eps_default = if self.tf_padding {
            (self.norm_eps - 1e-3).abs() <= 1e-12
        } else {
            eps_default
        };
        if self.registered && (self.batch_norm || eps_default) {
            if self.batch_norm && !registered_eps_default {
                extra += &format!(", bn_eps={:e}", self.norm_eps);
            }
            return format!("timm.create_model(\"{}\"{extra})", self.name);
        }
        let mut args = format!(
            "\"{}\", channel_multiplier={}, depth_multiplier={}",
            self.name,
            py_float(self.channel_multiplier),
            py_float(self.depth_multiplier)
        );
        if self.group_size != 1 {
            args += &format!(", group_size={}", self.group_size);
        }
        if self.channel_divisor != 8 {
            args += &format!(", channel_divisor={}", self.channel_divisor);
        }
        if self.tf_padding {
            args += ", pad_type=\"same\"";
        }
        if self.batch_norm {
            if !eps_default {
                extra += &format!(", bn_eps={:e}", self.norm_eps);
            }
        } else {
            let eps = if eps_default {
                String::new()
            } else {
                format!(", eps={:e}", self.norm_eps)
            };
            args += &format!(
                ", norm_layer=functools.partial(timm.layers.GroupNormAct, group_size={}{eps})",
                self.gn_group_size
            );
        }
        format!("timm.models.efficientnet._gen_efficientnet({args}{extra})")
    }
}

fn py_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

/// The timm model whose state dict has the same names and shapes as `cfg`'s, or an error
/// saying what has no timm counterpart (Proxy Norm, LayerNorm, GroupNorm by group count,
/// G16 expansion 4, ...).
pub fn timm_equivalent(cfg: &ModelConfig) -> Result<TimmEquivalent> {
    let mut why = Vec::new();
    if cfg.expand != 6 {
        why.push(format!(
            "expansion {} (timm's EfficientNets expand by 6; effnet's G16 presets use 4)",
            cfg.expand
        ));
    }
    if (cfg.se_ratio - 0.25).abs() > 1e-12 {
        why.push(format!(
            "squeeze-excitation ratio {} (timm: 0.25)",
            cfg.se_ratio
        ));
    }
    if cfg.head != 1280 {
        why.push(format!(
            "head width {} before scaling (timm: 1280)",
            cfg.head
        ));
    }
    let divisor = match (cfg.norm, cfg.gn_group_size) {
        (NormChoice::Gn, Some(16)) => 16,
        _ => 8,
    };
    if cfg.channel_divisor != divisor {
        why.push(format!(
            "channels rounded to multiples of {} (timm: {divisor} for this norm)",
            cfg.channel_divisor
        ));
    }
    let tf_padding = cfg.padding == crate::ops::conv::Padding::TfSame;
    if tf_padding && !(cfg.norm == NormChoice::Bn && cfg.group_size == 1) {
        why.push(
            "TensorFlow SAME padding without BatchNorm and depthwise convs (timm's \
             tf_efficientnet_* are BatchNorm models)"
                .into(),
        );
    }
    let arch = match (cfg.norm, cfg.gn_group_size, cfg.group_size) {
        (NormChoice::Bn, _, 1) if tf_padding => Some(&TIMM_ARCHS[12]),
        (NormChoice::Bn, _, 1) => Some(&TIMM_ARCHS[0]),
        (NormChoice::Gn, Some(8), 1) => Some(&TIMM_ARCHS[8]),
        (NormChoice::Gn, Some(8), 8) => Some(&TIMM_ARCHS[9]),
        (NormChoice::Gn, Some(16), 1) => Some(&TIMM_ARCHS[10]),
        (NormChoice::Gn, Some(16), 8) => Some(&TIMM_ARCHS[11]),
        (NormChoice::Bn, _, g) => {
            why.push(format!(
                "BatchNorm with {g}-channel groups (timm has no such EfficientNet)"
            ));
            None
        }
        (NormChoice::Gn, Some(8 | 16), g) => {
            why.push(format!(
                "{g} channels per conv group with GroupNorm (timm: 1 or 8)"
            ));
            None
        }
        (NormChoice::Gn, gs, _) => {
            why.push(match gs {
                Some(gs) => format!("GroupNorm with {gs} channels per group (timm: 8 or 16)"),
                None => format!(
                    "GroupNorm with {} groups per layer (timm's _gn models use 8 channels per \
                     group: set gn_group_size 8)",
                    cfg.gn_groups
                ),
            });
            None
        }
        (n, _, _) => {
            why.push(format!(
                "norm '{}' (timm's EfficientNets use bn or gn)",
                n.name()
            ));
            None
        }
    };
    let Some(arch) = arch.filter(|_| why.is_empty()) else {
        return Err(Error::Config(format!(
            "model {} has no timm equivalent: {}",
            cfg.name,
            why.join("; ")
        )));
    };
    // The registered name with this width and depth, if any.
    let same = |a: &TimmArch| {
        ModelConfig::preset(a.preset)
            .map(|p| p.width == cfg.width && p.depth == cfg.depth)
            .unwrap_or(false)
    };
    let registered = TIMM_ARCHS.iter().find(|a| {
        a.group_size == arch.group_size
            && a.gn_group_size == arch.gn_group_size
            && a.channel_divisor == arch.channel_divisor
            && a.tf == arch.tf
            && same(a)
    });
    let name = registered.map_or(arch.name, |a| a.name);
    Ok(TimmEquivalent {
        name,
        channel_multiplier: cfg.width,
        depth_multiplier: cfg.depth,
        registered: registered.is_some(),
        num_classes: cfg.classes,
        in_chans: cfg.in_channels,
        norm_eps: cfg.norm_eps,
        bn_momentum_pytorch: bn_momentum_to_pytorch(cfg.bn_momentum),
        batch_norm: cfg.norm == NormChoice::Bn,
        group_size: cfg.group_size,
        gn_group_size: cfg.gn_group_size.unwrap_or(8),
        channel_divisor: cfg.channel_divisor,
        tf_padding,
    })
}
