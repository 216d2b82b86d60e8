//! Grouped 2-D convolution on NHWC activations: any odd kernel size, stride 1 or 2,
//! 'same' padding ([`Padding`]: symmetric `k / 2`, or TensorFlow's "SAME", one less on the
//! top and left at stride 2 on even sizes), any group count (depthwise, G8, G16, dense),
//! Cout per group independent of Cin per group, optional bias. Forward, backward-data and
//! backward-weight are each one dispatch whatever the number of groups (the weight
//! gradient adds a deterministic reduction pass when it splits the pixel reduction).
//!
//! **Weight layout** `[k, k, Cin/G, Cout]` (row-major): `w[((ky*k + kx)*Gi + ci)*Cout + co]`
//! where output channel `co` belongs to group `co / Go` and reads input channels
//! `(co / Go)*Gi .. +Gi` (Gi = Cin/G, Go = Cout/G). Depthwise weights are `[k, k, 1, C]`,
//! a 1x1 dense weight is `[Cin, Cout]` (the GEMM / linear layout). PyTorch's
//! `[Cout, Cin/G, kh, kw]` converts with [`weight_from_pytorch`] / [`weight_to_pytorch`].
//!
//! **Kernels, chosen by rule** (no autotuning; see [`ConvSpec::kernels`]):
//! - 1x1, stride 1, dense: forward and backward-data are plain GEMMs ([`super::gemm`]);
//! - otherwise forward uses the implicit GEMM (`conv/forward_igemm.wgsl`) when Go >= 4, and the
//!   direct kernel (`conv/forward_direct.wgsl`, 4 outputs along W per thread) when Go < 4, which
//!   covers depthwise;
//! - backward-data likewise with Gi in place of Go (it is a convolution with the roles of
//!   Cin and Cout swapped; stride 2 is split into parity classes so no zero taps run);
//! - backward-weight uses the split-K implicit GEMM (`conv/backward_weight_igemm.wgsl`) when
//!   Go >= 4, else the direct split kernel (`conv/backward_weight_direct.wgsl`); the split count
//!   is a fixed function of the shape ([`ConvSpec::wgrad_splits`]), so results are
//!   bit-for-bit reproducible.

mod backward_data;
mod backward_weight;
mod cases;
mod forward;
mod reference;

pub use backward_data::backward_data;
pub use backward_weight::backward_weight;
pub use cases::{case_specs, cases, ConvCase};
pub use forward::forward;
pub use reference::{backward_ref, forward_ref};

use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Cost, KernelDef, Tensor};

/// Values of the `BK` override (K values per group per step of the implicit GEMMs).
const BKS: [f64; 4] = [2.0, 4.0, 8.0, 16.0];
/// Values of a 0/1 flag override.
const FLAG: [f64; 2] = [0.0, 1.0];

uniform_block! {
    /// Parameters of the implicit-GEMM forward and backward-data kernels (`conv/igemm.inc.wgsl`).
    struct IgemmParams {
        pub n: u32,
        /// Output image (forward: Ho, Wo; backward data: H, W).
        pub oh: u32,
        pub ow: u32,
        /// Source image (forward: x; backward data: dy).
        pub ah: u32,
        pub aw: u32,
        /// Source channels.
        pub ac: u32,
        /// Source channels per group (forward Gi, backward data Go).
        pub ga: u32,
        /// Output channels per group (forward Go, backward data Gi).
        pub gc: u32,
        /// Output channels.
        pub cout: u32,
        pub groups: u32,
        pub k: u32,
        pub stride: u32,
        /// Zero rows above the image (the bottom ones follow from the output size).
        pub pad_top: u32,
        /// Zero columns left of the image.
        pub pad_left: u32,
        /// Convolution Cout (weight row length).
        pub wcout: u32,
        /// Convolution Gi.
        pub wgi: u32,
        /// Convolution Go.
        pub wgo: u32,
        /// Groups per column tile.
        pub gpt: u32,
        /// Column tiles per group (0 when groups are packed).
        pub ntpg: u32,
        /// Column tiles.
        pub ntiles: u32,
        /// All tiles.
        pub tiles: u32,
        /// First row tile of each stride class; cls[classes] = row tiles.
        pub cls0: u32,
        pub cls1: u32,
        pub cls2: u32,
        pub cls3: u32,
        pub cls4: u32,
    }
}

uniform_block! {
    /// Parameters of the direct forward and backward-data kernels (`conv/direct.inc.wgsl`).
    struct DirectParams {
        pub n: u32,
        /// Output image.
        pub oh: u32,
        pub ow: u32,
        /// Source image (forward: x; backward data: dy).
        pub ah: u32,
        pub aw: u32,
        /// Source channels.
        pub ac: u32,
        /// Output channels.
        pub cout: u32,
        /// Convolution Cin / groups.
        pub gi: u32,
        /// Convolution Cout / groups.
        pub go: u32,
        pub k: u32,
        pub stride: u32,
        /// Zero rows above the image (the bottom ones follow from the output size).
        pub pad_top: u32,
        /// Zero columns left of the image.
        pub pad_left: u32,
        /// Convolution Cout.
        pub wcout: u32,
        /// Strips of parity 0 (backward data, stride 2); = strips otherwise.
        pub strips0: u32,
        /// Strips per output row.
        pub strips: u32,
        /// Threads.
        pub total: u32,
    }
}

/// Workgroups the weight-gradient split aims to fill (enough for a large GPU).
const WGRAD_TARGET_GROUPS: usize = 1024;
/// Fewest output pixels one split reduces over.
const WGRAD_MIN_PIXELS: usize = 256;
/// Most splits.
const WGRAD_MAX_SPLITS: usize = 1024;
/// Largest partial-sum buffer (elements) the split may ask for.
const WGRAD_MAX_SCRATCH: usize = 1 << 25;

/// Which kernel family runs one direction of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ConvKernel {
    /// A plain tiled GEMM (1x1, stride 1, dense).
    Gemm,
    /// The implicit-GEMM tile kernel (workgroup-memory tiles, 4 x 4 register blocking).
    ImplicitGemm,
    /// The direct kernel (few channels per group, e.g. depthwise).
    Direct,
}

impl ConvKernel {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            ConvKernel::Gemm => "gemm",
            ConvKernel::ImplicitGemm => "igemm",
            ConvKernel::Direct => "direct",
        }
    }
}

/// How a convolution pads its input so the output has `ceil(size / stride)` pixels along
/// each axis (the two agree except at stride 2 on an even size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// `k / 2` on every side (PyTorch's `padding=k//2`, timm's `efficientnet_*`).
    #[default]
    Symmetric,
    /// TensorFlow's "SAME" (timm's `tf_efficientnet_*`): along an axis of `size` pixels,
    /// `total = max((ceil(size / s) - 1) * s + k - size, 0)` zeros, `total / 2` before
    /// (top, left) and the rest after (bottom, right).
    TfSame,
}

impl Padding {
    /// Zeros before the first pixel along an axis of `size` pixels, for kernel `k` and
    /// stride `s`.
    pub fn before(self, size: usize, k: usize, s: usize) -> usize {
        match self {
            Padding::Symmetric => k / 2,
            Padding::TfSame => {
                let total = ((size.div_ceil(s) - 1) * s + k).saturating_sub(size);
                total / 2
            }
        }
    }

    /// Name: `symmetric` or `tf-same`.
    pub fn name(self) -> &'static str {
        match self {
            Padding::Symmetric => "symmetric",
            Padding::TfSame => "tf-same",
        }
    }
}

/// One convolution: input `[n, h, w, cin]` (NHWC), output `[n, ho, wo, cout]`
/// (`ho = ceil(h / stride)`), a `k x k` kernel with 'same' padding ([`Padding`]), stride 1
/// or 2, `groups` groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConvSpec {
    /// Batch.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size (odd).
    pub k: usize,
    /// Stride (1 or 2).
    pub stride: usize,
    /// Groups (divides cin and cout; cin = cout = groups is depthwise).
    pub groups: usize,
    /// With a bias `[cout]`.
    pub bias: bool,
    /// Symmetric or TensorFlow "SAME" padding.
    pub padding: Padding,
}

/// Column tiling of a grouped GEMM: groups per 64-column tile (packed) or tiles per group.
#[derive(Clone, Copy, Debug)]
struct Cols {
    gpt: usize,
    ntpg: usize,
    ntiles: usize,
    uni: bool,
}

fn cols(per_group: usize, groups: usize) -> Cols {
    if per_group >= 64 {
        let ntpg = per_group.div_ceil(64);
        Cols {
            gpt: 1,
            ntpg,
            ntiles: groups * ntpg,
            uni: true,
        }
    } else {
        let gpt = (64 / per_group).min(groups).max(1);
        Cols {
            gpt,
            ntpg: 0,
            ntiles: groups.div_ceil(gpt),
            uni: gpt == 1 || per_group.is_multiple_of(4),
        }
    }
}

/// K values per group per step: the largest power of two with gpt * BK <= 32, BK <= 16,
/// and no larger than K itself needs.
fn bk_for(gpt: usize, kg: usize) -> usize {
    let mut bk = 16;
    while bk > 2 && (gpt * bk > 32 || bk / 2 >= kg) {
        bk /= 2;
    }
    bk
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl ConvSpec {
    /// Output height and width: `(h - 1) / stride + 1`, `(w - 1) / stride + 1`.
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h - 1) / self.stride + 1,
            (self.w - 1) / self.stride + 1,
        )
    }

    /// Zero rows above the input (see [`Padding`]); the rows below are those the output
    /// size needs.
    pub fn pad_top(&self) -> usize {
        self.padding.before(self.h, self.k, self.stride)
    }

    /// Zero columns left of the input (see [`Padding`]).
    pub fn pad_left(&self) -> usize {
        self.padding.before(self.w, self.k, self.stride)
    }

    /// Input channels per group.
    pub fn gi(&self) -> usize {
        self.cin / self.groups
    }

    /// Output channels per group.
    pub fn go(&self) -> usize {
        self.cout / self.groups
    }

    /// Input shape `[n, h, w, cin]`.
    pub fn in_shape(&self) -> Vec<usize> {
        vec![self.n, self.h, self.w, self.cin]
    }

    /// Output shape `[n, ho, wo, cout]`.
    pub fn out_shape(&self) -> Vec<usize> {
        let (ho, wo) = self.out_hw();
        vec![self.n, ho, wo, self.cout]
    }

    /// Weight shape `[k, k, cin / groups, cout]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.k, self.k, self.gi(), self.cout]
    }

    /// Weight elements.
    pub fn weight_len(&self) -> usize {
        self.k * self.k * self.gi() * self.cout
    }

    /// Output pixels `n * ho * wo`.
    pub fn out_pixels(&self) -> usize {
        let (ho, wo) = self.out_hw();
        self.n * ho * wo
    }

    /// Multiply-accumulates of the forward pass (each backward product has as many).
    pub fn macs(&self) -> usize {
        self.out_pixels() * self.cout * self.k * self.k * self.gi()
    }

    /// The work of the forward pass: `2 * macs` FLOPs (plus the bias adds); x, w (and the
    /// bias) read once, y written once.
    pub fn forward_cost(&self) -> Cost {
        let y = self.out_pixels() * self.cout;
        let bias = if self.bias { self.cout } else { 0 };
        Cost::f32s(
            2.0 * self.macs() as f64 + if self.bias { y } else { 0 } as f64,
            self.n * self.h * self.w * self.cin + self.weight_len() + bias,
            y,
        )
    }

    /// The work of the backward-data pass: `2 * macs` FLOPs; dy and w read once, dx
    /// written once.
    pub fn backward_data_cost(&self) -> Cost {
        Cost::f32s(
            2.0 * self.macs() as f64,
            self.out_pixels() * self.cout + self.weight_len(),
            self.n * self.h * self.w * self.cin,
        )
    }

    /// Check the spec: odd k, stride 1 or 2, groups dividing both channel counts, sizes
    /// that index in 32 bits.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("conv {self:?}: {m}")));
        if self.n == 0 || self.h == 0 || self.w == 0 || self.cin == 0 || self.cout == 0 {
            return bad("every size must be at least 1".into());
        }
        if self.k.is_multiple_of(2) {
            return bad(format!(
                "kernel size {} must be odd ('same' padding)",
                self.k
            ));
        }
        if self.stride != 1 && self.stride != 2 {
            return bad(format!("stride {} must be 1 or 2", self.stride));
        }
        if self.groups == 0
            || !self.cin.is_multiple_of(self.groups)
            || !self.cout.is_multiple_of(self.groups)
        {
            return bad(format!(
                "groups {} must divide cin {} and cout {}",
                self.groups, self.cin, self.cout
            ));
        }
        let big = [
            self.n * self.h * self.w * self.cin,
            self.out_pixels() * self.cout,
            self.weight_len() * 4,
            self.wgrad_splits() * (self.wgrad_rows() + 1) * self.cout,
        ];
        if big.iter().any(|&v| v >= (i32::MAX as usize)) {
            return Err(Error::TooLarge(format!(
                "conv {self:?} has a tensor over 2^31 elements; reduce the batch size"
            )));
        }
        Ok(())
    }

    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.groups == 1
    }

    /// Kernel families used for (forward, backward data, backward weight).
    pub fn kernels(&self) -> [ConvKernel; 3] {
        let fwd = if self.is_pointwise() {
            ConvKernel::Gemm
        } else if self.go() >= 4 {
            ConvKernel::ImplicitGemm
        } else {
            ConvKernel::Direct
        };
        let bwd = if self.is_pointwise() {
            ConvKernel::Gemm
        } else if self.gi() >= 4 {
            ConvKernel::ImplicitGemm
        } else {
            ConvKernel::Direct
        };
        let wgrad = if self.go() >= 4 {
            ConvKernel::ImplicitGemm
        } else {
            ConvKernel::Direct
        };
        [fwd, bwd, wgrad]
    }

    /// Rows of the weight gradient `k * k * Gi`.
    fn wgrad_rows(&self) -> usize {
        self.k * self.k * self.gi()
    }

    /// Rows of the weight gradient including the bias row.
    fn wgrad_rows_b(&self) -> usize {
        self.wgrad_rows() + usize::from(self.bias)
    }

    /// Workgroups of one split of the weight gradient.
    fn wgrad_groups_per_split(&self) -> usize {
        match self.kernels()[2] {
            ConvKernel::Direct => (self.wgrad_rows_b().div_ceil(4) * self.cout).div_ceil(256),
            _ => self.wgrad_rows_b().div_ceil(64) * cols(self.go(), self.groups).ntiles,
        }
    }

    /// How many chunks the weight gradient's reduction over output pixels is cut into:
    /// enough to give ~1024 workgroups, each chunk at least 256 pixels, at most 1024
    /// chunks and a 2^25-element partial buffer. Every chunk is non-empty.
    pub fn wgrad_splits(&self) -> usize {
        let npix = self.out_pixels();
        let per = self.wgrad_groups_per_split().max(1);
        let mut s = WGRAD_TARGET_GROUPS
            .div_ceil(per)
            .min(npix / WGRAD_MIN_PIXELS)
            .min(WGRAD_MAX_SPLITS)
            .min(WGRAD_MAX_SCRATCH / (self.wgrad_rows_b() * self.cout).max(1))
            .max(1);
        // Make every chunk non-empty.
        let chunk = npix.div_ceil(s).max(1);
        s = npix.div_ceil(chunk).max(1);
        s
    }

    /// Elements of scratch [`backward_weight`] needs (0 when it writes the gradient
    /// directly): the split partial sums `[splits, k*k*Gi (+1 with bias), cout]`.
    pub fn scratch_len(&self) -> usize {
        let s = self.wgrad_splits();
        if s > 1 {
            s * self.wgrad_rows_b() * self.cout
        } else {
            0
        }
    }

    /// Short description, e.g. `g16conv3x3/s2 64->64 @112x112 n128`.
    pub fn label(&self) -> String {
        let kind = if self.groups == 1 {
            "conv".to_string()
        } else if self.gi() == 1 && self.go() == 1 {
            "dwconv".to_string()
        } else {
            format!("g{}conv", self.gi())
        };
        format!(
            "{kind}{}x{}/s{} {}->{} @{}x{} n{}{}{}",
            self.k,
            self.k,
            self.stride,
            self.cin,
            self.cout,
            self.h,
            self.w,
            self.n,
            if self.bias { " +b" } else { "" },
            match self.padding {
                Padding::Symmetric => "",
                Padding::TfSame => " tf-same",
            }
        )
    }

    fn check(&self, what: &str, pairs: &[(&Tensor, usize)]) -> Result<()> {
        self.validate()?;
        for (t, want) in pairs {
            if t.len() != *want {
                return Err(Error::Shape(format!(
                    "conv {what} {}: a tensor of shape {:?} where {want} elements are needed",
                    self.label(),
                    t.shape()
                )));
            }
        }
        Ok(())
    }
}

/// Convert a PyTorch weight `[Cout, Cin/G, kh, kw]` to effnet's `[k, k, Cin/G, Cout]`.
pub fn weight_from_pytorch(s: &ConvSpec, w_oihw: &[f32]) -> Vec<f32> {
    let (k, gi, co_n) = (s.k, s.gi(), s.cout);
    let mut out = vec![0.0; s.weight_len()];
    for co in 0..co_n {
        for ci in 0..gi {
            for ky in 0..k {
                for kx in 0..k {
                    out[((ky * k + kx) * gi + ci) * co_n + co] =
                        w_oihw[((co * gi + ci) * k + ky) * k + kx];
                }
            }
        }
    }
    out
}

/// Convert effnet's `[k, k, Cin/G, Cout]` weight to PyTorch's `[Cout, Cin/G, kh, kw]`.
pub fn weight_to_pytorch(s: &ConvSpec, w: &[f32]) -> Vec<f32> {
    let (k, gi, co_n) = (s.k, s.gi(), s.cout);
    let mut out = vec![0.0; s.weight_len()];
    for co in 0..co_n {
        for ci in 0..gi {
            for ky in 0..k {
                for kx in 0..k {
                    out[((co * gi + ci) * k + ky) * k + kx] =
                        w[((ky * k + kx) * gi + ci) * co_n + co];
                }
            }
        }
    }
    out
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[
    &forward::FORWARD_IGEMM.def,
    &forward::FORWARD_DIRECT.def,
    &backward_data::BACKWARD_DATA_IGEMM.def,
    &backward_data::BACKWARD_DATA_DIRECT.def,
    &backward_weight::BACKWARD_WEIGHT_IGEMM.def,
    &backward_weight::BACKWARD_WEIGHT_DIRECT.def,
    &backward_weight::BACKWARD_WEIGHT_REDUCE.def,
];
