//! Model names on the command line: effnet presets (`b0`, `b3-g16`, ...) and timm names
//! (`efficientnet_b0`, `timm/efficientnet_b0_gn.ra_in1k`, ...), one type for `train
//! --model`, `predict --arch` and `effnet model`.
//!
//! timm names effnet can build resolve to [`config_from_timm`]; timm EfficientNets it
//! cannot build are refused with the piece effnet lacks for them, and anything else gets
//! the nearest known names (Jaro-Winkler similarity, `strsim`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::interop::arch::{base_name, config_from_timm, find_arch, TimmArch, TIMM_ARCHS};
use crate::models::{ModelConfig, Preset};

/// A model name: an effnet preset or a mapped timm architecture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ModelName {
    /// An effnet preset (`b0`..`b7`, `b0-g16`..`b7-g16`): effnet's conventions (norm eps
    /// 1e-3, BatchNorm momentum 0.99 in TensorFlow's convention).
    Preset(Preset),
    /// A timm architecture: timm's conventions (eps 1e-5, PyTorch momentum 0.1), its norm.
    Timm(&'static TimmArch),
}

impl ModelName {
    /// The configuration the name builds (1000 classes, 3 input channels).
    pub fn config(self) -> ModelConfig {
        match self {
            Self::Preset(p) => p.config(),
            Self::Timm(a) => config_from_timm(a.name).expect("every mapped timm name builds"),
        }
    }

    /// True for timm names.
    pub fn is_timm(self) -> bool {
        matches!(self, Self::Timm(_))
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Preset(p) => f.write_str(p.name()),
            Self::Timm(a) => f.write_str(a.name),
        }
    }
}

impl FromStr for ModelName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse(s)
    }
}

/// Every preset name.
fn preset_names() -> Vec<String> {
    (0..8)
        .flat_map(|i| [format!("b{i}"), format!("b{i}-g16")])
        .collect()
}

/// Parse a model name (see the module documentation).
pub fn parse(s: &str) -> Result<ModelName> {
    let t = s.trim();
    if let Some(i) = preset_names().iter().position(|n| n == t) {
        return Ok(ModelName::Preset(Preset {
            scale: i / 2,
            g16: i % 2 == 1,
        }));
    }
    if let Some(a) = find_arch(t) {
        return Ok(ModelName::Timm(a));
    }
    let base = base_name(t);
    if let Some(why) = unbuildable(base) {
        return Err(Error::Config(format!(
            "timm's {base} is not one effnet can build: {why}"
        )));
    }
    Err(Error::Config(format!(
        "unknown model '{s}'{}: use an effnet preset (b0..b7, b0-g16..b7-g16) or a timm \
         name ({}); `effnet train --help` lists what each builds",
        did_you_mean(base),
        TIMM_ARCHS
            .iter()
            .map(|a| a.name)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// ` (did you mean x?)` for the nearest known names, or nothing.
fn did_you_mean(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let mut all: Vec<(f64, String)> = preset_names()
        .into_iter()
        .chain(TIMM_ARCHS.iter().map(|a| a.name.to_string()))
        .map(|n| (strsim::jaro_winkler(&lower, &n), n))
        .filter(|(score, _)| *score >= 0.85)
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    match all.first() {
        Some((_, n)) => format!(" (did you mean {n}?)"),
        None => String::new(),
    }
}

/// Why a timm EfficientNet name is one effnet cannot build (the piece it lacks), or None
/// when the name is not a timm EfficientNet.
pub fn unbuildable(base: &str) -> Option<String> {
    let b = base.to_ascii_lowercase();
    let core = b.strip_prefix("tf_").unwrap_or(&b);
    let why: String = if core.starts_with("efficientnetv2") || core.starts_with("gc_efficientnetv2")
    {
        "EfficientNetV2 (fused-MBConv stages, a different stage table)".into()
    } else if core.starts_with("efficientnet_cc_") {
        "CondConv (mixture-of-experts) convolutions".into()
    } else if core.starts_with("efficientnet_lite") {
        "EfficientNet-Lite (ReLU6, no squeeze-excitation, fixed stem and head widths)".into()
    } else if ["efficientnet_es", "efficientnet_em", "efficientnet_el"]
        .iter()
        .any(|p| core.starts_with(p))
    {
        "EfficientNet-EdgeTPU (fused expansion blocks, a different stage table)".into()
    } else if core.ends_with("_pruned") {
        "a pruned model (per-layer channel counts outside the B0 table)".into()
    } else if core == "efficientnet_b8" || core == "efficientnet_l2" {
        "a compound scale beyond B7 (effnet's presets are b0..b7)".into()
    } else if core.starts_with("efficientnet_blur") {
        "blur-pool downsampling".into()
    } else if core.contains("evos") {
        "EvoNorm-S0 norm layers".into()
    } else if core.starts_with("efficientnet_x_") || core.starts_with("efficientnet_h_") {
        "the EfficientNet-X/H space-to-depth stem and fused blocks".into()
    } else {
        return None;
    };
    Some(why)
}

/// The mapping `--help` prints: each timm name with the effnet configuration it builds,
/// then the timm families effnet refuses and why.
pub fn mapping_help() -> String {
    let mut s = String::from(
        "Model names (--model, predict --arch, effnet model):\n  effnet presets: b0..b7 \
         (depthwise, expansion 6), b0-g16..b7-g16 (16 channels per group, expansion 4);\n  \
         effnet's conventions: norm eps 1e-3, BatchNorm momentum 0.99 (TensorFlow's).\n  \
         timm names (hub prefixes and tags such as timm/...ra_in1k are ignored) build \
         timm's model\n  with timm's conventions (eps 1e-5, PyTorch momentum 0.1 = 0.9 \
         in effnet's TensorFlow convention):\n",
    );
    for a in &TIMM_ARCHS {
        let norm = match a.gn_group_size {
            None => "BatchNorm".to_string(),
            Some(g) => format!("GroupNorm, {g} channels per group"),
        };
        let conv = if a.group_size == 1 {
            "depthwise".to_string()
        } else {
            format!("{}-channel conv groups", a.group_size)
        };
        let div = if a.channel_divisor == 8 {
            String::new()
        } else {
            format!(" (channels rounded to {})", a.channel_divisor)
        };
        let norm = if a.tf {
            format!("{norm} eps 1e-3, TensorFlow SAME padding")
        } else {
            norm
        };
        s += &format!(
            "    {:<24} preset {} widths{div}, {conv}, expansion 6, {norm}\n",
            a.name, a.preset
        );
    }
    s += "  refused, with the missing piece:\n    b8 and l2 (beyond B7), lite, EdgeTPU (es/em/el), CondConv (cc), pruned, \
          EfficientNetV2.";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_or_say_why_not() {
        assert_eq!(parse("b3-g16").unwrap().to_string(), "b3-g16");
        assert_eq!(
            parse("timm/efficientnet_b0_gn.ra_in1k")
                .unwrap()
                .to_string(),
            "efficientnet_b0_gn"
        );
        let tf = parse("tf_efficientnet_b2.ns_jft_in1k").unwrap().config();
        assert_eq!(tf.padding, crate::ops::conv::Padding::TfSame);
        assert_eq!(tf.norm_eps, 1e-3);
        let e = parse("tf_efficientnet_b8").unwrap_err().to_string();
        assert!(e.contains("beyond B7"), "{e}");
        let e = parse("efficientnet_lite0").unwrap_err().to_string();
        assert!(e.contains("Lite"), "{e}");
        let e = parse("efficientnet_b0_gm").unwrap_err().to_string();
        assert!(e.contains("did you mean efficientnet_b0_gn?"), "{e}");
        let e = parse("resnet50").unwrap_err().to_string();
        assert!(!e.contains("did you mean"), "{e}");
        for a in &TIMM_ARCHS {
            assert!(mapping_help().contains(a.name));
        }
    }
}
