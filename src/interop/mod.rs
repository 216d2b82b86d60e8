//! Interop with timm / PyTorch: EfficientNet weights in and out as timm-named safetensors.
//!
//! - [`arch`]: timm names <-> effnet configurations (`efficientnet_b0`..`efficientnet_b7`,
//!   `efficientnet_b0_gn`, `efficientnet_b0_g8_gn`), inferring classes, input channels and
//!   reduced widths or depths from a state dict;
//! - [`layout`]: every tensor of the state dict with its effnet shape and the layout
//!   conversion (`[Cout, Cin/G, kh, kw]` convolutions, transposed classifier, ...);
//! - [`convert`]: import (one error listing every missing, unexpected or mis-shaped
//!   tensor), export with metadata saying how to build the timm module, and the GPU side
//!   (reading and writing a built model);
//! - [`init`]: `train --init`, a model started from a timm state dict or an effnet
//!   checkpoint tensor by tensor (classifier re-initialized for another class count);
//! - [`names`]: model names on the command line (presets and timm names, refusals naming
//!   the missing piece, did-you-mean).
//!
//! See docs/interop.md for the conventions and the parity tests against PyTorch.

pub mod arch;
pub mod convert;
pub mod init;
pub mod layout;
pub mod names;

pub use arch::{config_from_timm, find_arch, infer_config, timm_equivalent, TimmEquivalent};
pub use convert::{
    export_checkpoint, from_timm, load_timm, read_model, save_timm, to_timm, write_model, Weights,
};
pub use layout::{tensor_maps, Layout, TensorMap};
pub use names::ModelName;
