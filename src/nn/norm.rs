//! The normalization a model uses after every convolution (a command-line choice as well:
//! `--norm bn|gn|ln|ln-pn|gn-pn`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Normalization used after every convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NormChoice {
    /// BatchNorm (batch statistics in training, running statistics in evaluation).
    Bn,
    /// GroupNorm with `groups` groups per layer (`min(C, groups)`; the paper uses 4).
    Gn,
    /// LayerNorm (GroupNorm with one group).
    Ln,
    /// LayerNorm + Proxy-normalized activations (the paper's G16-LN+PN).
    #[value(alias = "lnpn")]
    LnPn,
    /// GroupNorm + Proxy-normalized activations.
    #[value(alias = "gnpn")]
    GnPn,
}

impl NormChoice {
    /// Parse `bn`, `gn`, `ln`, `ln-pn`, `gn-pn`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "bn" => Self::Bn,
            "gn" => Self::Gn,
            "ln" => Self::Ln,
            "ln-pn" | "lnpn" => Self::LnPn,
            "gn-pn" | "gnpn" => Self::GnPn,
            _ => {
                return Err(Error::Config(format!(
                    "unknown norm '{s}': use bn, gn, ln, ln-pn or gn-pn"
                )))
            }
        })
    }

    /// Name as parsed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bn => "bn",
            Self::Gn => "gn",
            Self::Ln => "ln",
            Self::LnPn => "ln-pn",
            Self::GnPn => "gn-pn",
        }
    }

    /// True for the proxy-normalized variants.
    pub fn proxy(self) -> bool {
        matches!(self, Self::LnPn | Self::GnPn)
    }
}
