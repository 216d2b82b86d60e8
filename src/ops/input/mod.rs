//! The network input from the loader's pixels: batches travel to the GPU as NHWC u8 (a
//! quarter of the bytes of f32) and this op, the first kernel of every step, converts them
//! to the normalized input tensor, `y = (x / 255 - mean[c]) / std[c]`: f32, or f16 under
//! mixed precision (the network input is an activation; the arithmetic stays f32).
//!
//! The op has no backward: its input is data, with no parameters upstream, so the harness
//! checks the forward against the f64 reference ([`reference`]) and the gradient checks
//! are vacuous (every input is a constant).

pub mod cases;
pub mod reference;

use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Grid, Kernel, KernelDef, Recorder, Tensor,
};

pub use cases::cases;

static NORMALIZE: Kernel<NormalizeParams> = Kernel::new(
    "input/normalize.wgsl",
    "normalize",
    &[Access::Read, Access::ReadWrite],
    &[],
)
// y is the network input, an activation (f16 under mixed precision); the pixels are u32
// words.
.with_f16(&[2]);

/// The kernels of this module (for the portability and contract tests).
pub static KERNELS: &[&KernelDef] = &[&NORMALIZE.def];

/// Most channels the kernel normalizes (the uniform block holds four means and stds).
pub const MAX_CHANNELS: usize = 4;

uniform_block! {
    /// The uniform block of `input/normalize.wgsl`.
    pub struct NormalizeParams {
        /// Output elements N*H*W*C.
        pub n: u32,
        /// Channels.
        pub c: u32,
        /// Padding to the 16-byte alignment of the `vec4` `mean`.
        pub _pad0: u32,
        /// See `_pad0`.
        pub _pad1: u32,
        /// Per-channel mean of the pixels in [0, 1] (unused entries 0).
        pub mean: [f32; 4],
        /// Per-channel standard deviation (unused entries 1; `std` is reserved in WGSL).
        pub stdev: [f32; 4],
    }
}

impl NormalizeParams {
    /// Parameters for `n` elements of `mean.len()` channels; refuses what the kernel cannot
    /// do (more than [`MAX_CHANNELS`] channels, a mean/std length mismatch, a standard
    /// deviation that is not finite and positive).
    pub fn new(n: usize, mean: &[f32], std: &[f32]) -> Result<Self> {
        let c = mean.len();
        if c == 0 || c > MAX_CHANNELS || std.len() != c {
            return Err(Error::Config(format!(
                "input normalization needs 1 to {MAX_CHANNELS} channels with one mean and one \
                 std each (got {} means, {} stds)",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Config(format!(
                "input normalization std {s} is not a positive number: the dataset's channel \
                 statistics are degenerate (a constant channel?)"
            )));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::Config(format!(
                "input normalization mean {mean:?} is not finite"
            )));
        }
        let n = u32::try_from(n)
            .map_err(|_| Error::TooLarge(format!("{n} input elements exceed 2^32")))?;
        let mut p = NormalizeParams {
            n,
            c: c as u32,
            _pad0: 0,
            _pad1: 0,
            mean: [0.0; 4],
            stdev: [1.0; 4],
        };
        p.mean[..c].copy_from_slice(mean);
        p.stdev[..c].copy_from_slice(std);
        Ok(p)
    }
}

/// Bytes of u8 pixels a batch of `elements` values occupies on the GPU: rounded up to whole
/// u32 words (the host pads with zeros).
pub fn padded_pixel_bytes(elements: usize) -> usize {
    elements.div_ceil(4) * 4
}

/// Record `y = (pixels / 255 - mean) / std` per channel. `pixels` holds the u8 values of
/// `y`'s elements packed four per u32 word (at least `y.len()` bytes); `y` is NHWC (f32
/// or f16) whose last dimension is the channel count `mean.len()`.
///
/// Work: 3 FLOPs per element (scale, subtract, divide), reading one byte and writing four
/// (two for f16).
pub fn normalize(
    rec: &mut Recorder,
    pixels: &Tensor,
    y: &Tensor,
    mean: &[f32],
    std: &[f32],
) -> Result<()> {
    let n = y.len();
    let p = NormalizeParams::new(n, mean, std)?;
    if pixels.len() * 4 < n || y.shape().last().copied() != Some(mean.len()) {
        return Err(Error::Shape(format!(
            "normalizing {} packed pixel words into {:?} with {} channels",
            pixels.len(),
            y.shape(),
            mean.len()
        )));
    }
    rec.dispatch(
        &NORMALIZE,
        &[],
        &p,
        &[pixels, y],
        Grid::Linear(groups_for(n.div_ceil(4), 256)),
        Cost {
            flops: 3.0 * n as f64,
            bytes: (padded_pixel_bytes(n) as u64 + y.bytes()) as f64,
        },
    )
}
