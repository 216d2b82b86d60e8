//! Grouped 2-D convolution on NHWC activations: any odd kernel size, stride 1 or 2,
//! 'same' padding (k / 2), any group count (depthwise, G8, G16, dense), Cout per group
//! independent of Cin per group, optional bias. Forward, backward-data and
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

use super::gemm::{self, GemmSpec};
use super::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use crate::error::{Error, Result};
use crate::gpu::{Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

const BKS: [f64; 4] = [2.0, 4.0, 8.0, 16.0];
const FLAG: [f64; 2] = [0.0, 1.0];

static FORWARD_IGEMM: KernelDef = KernelDef {
    shader: "conv/forward_igemm.wgsl",
    entry: "conv_forward_igemm",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[("BK", &BKS), ("UNI", &FLAG), ("BIAS", &FLAG)],
};
static BACKWARD_DATA_IGEMM: KernelDef = KernelDef {
    shader: "conv/backward_data_igemm.wgsl",
    entry: "conv_backward_data_igemm",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[("BK", &BKS), ("UNI", &FLAG), ("BIAS", &[0.0])],
};
static BACKWARD_WEIGHT_IGEMM: KernelDef = KernelDef {
    shader: "conv/backward_weight_igemm.wgsl",
    entry: "conv_backward_weight_igemm",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    overrides: &[("BK", &BKS), ("UNI", &FLAG), ("BIAS", &FLAG)],
};
static FORWARD_DIRECT: KernelDef = KernelDef {
    shader: "conv/forward_direct.wgsl",
    entry: "conv_forward_direct",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[("BIAS", &FLAG)],
};
static BACKWARD_DATA_DIRECT: KernelDef = KernelDef {
    shader: "conv/backward_data_direct.wgsl",
    entry: "conv_backward_data_direct",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[("BIAS", &[0.0])],
};
static BACKWARD_WEIGHT_DIRECT: KernelDef = KernelDef {
    shader: "conv/backward_weight_direct.wgsl",
    entry: "conv_backward_weight_direct",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    overrides: &[("BIAS", &FLAG)],
};
static BACKWARD_WEIGHT_REDUCE: KernelDef = KernelDef {
    shader: "conv/backward_weight_reduce.wgsl",
    entry: "conv_backward_weight_reduce",
    bindings: &[Access::Read, Access::ReadWrite, Access::ReadWrite],
    overrides: &[("BIAS", &FLAG)],
};

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

/// One convolution: input `[n, h, w, cin]` (NHWC), output `[n, ho, wo, cout]`, a `k x k`
/// kernel with 'same' padding `k / 2`, stride 1 or 2, `groups` groups.
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

    /// Padding on each side (`k / 2`).
    pub fn pad(&self) -> usize {
        self.k / 2
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
            "{kind}{}x{}/s{} {}->{} @{}x{} n{}{}",
            self.k,
            self.k,
            self.stride,
            self.cin,
            self.cout,
            self.h,
            self.w,
            self.n,
            if self.bias { " +b" } else { "" }
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

/// Record `y = conv(x, w) (+ bias)`: x `[n, h, w, cin]`, w `[k, k, cin/G, cout]`,
/// y `[n, ho, wo, cout]` (overwritten). One dispatch.
pub fn forward(
    rec: &mut Recorder,
    s: &ConvSpec,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    let (ho, wo) = s.out_hw();
    s.check(
        "forward",
        &[
            (x, s.n * s.h * s.w * s.cin),
            (w, s.weight_len()),
            (y, s.n * ho * wo * s.cout),
        ],
    )?;
    if bias.is_some() != s.bias || bias.is_some_and(|b| b.len() != s.cout) {
        return Err(Error::Shape(format!(
            "conv forward {}: bias {:?}",
            s.label(),
            bias.map(|b| b.shape().to_vec())
        )));
    }
    let pad = s.pad() as u32;
    match s.kernels()[0] {
        ConvKernel::Gemm => gemm::gemm(
            rec,
            &GemmSpec::new(s.out_pixels(), s.cout, s.cin),
            x,
            w,
            bias,
            y,
        ),
        ConvKernel::ImplicitGemm => {
            let c = cols(s.go(), s.groups);
            let kg = s.k * s.k * s.gi();
            let mtiles = s.out_pixels().div_ceil(64);
            let tiles = mtiles * c.ntiles;
            let params = [
                s.n as u32,
                ho as u32,
                wo as u32,
                s.h as u32,
                s.w as u32,
                s.cin as u32,
                s.gi() as u32,
                s.go() as u32,
                s.cout as u32,
                s.groups as u32,
                s.k as u32,
                s.stride as u32,
                pad,
                s.cout as u32,
                s.gi() as u32,
                s.go() as u32,
                c.gpt as u32,
                c.ntpg as u32,
                c.ntiles as u32,
                tiles as u32,
                0,
                mtiles as u32,
                mtiles as u32,
                mtiles as u32,
                mtiles as u32,
            ];
            rec.dispatch(
                &FORWARD_IGEMM,
                &[
                    ("BK", bk_for(c.gpt, kg) as f64),
                    ("UNI", flag(c.uni)),
                    ("BIAS", flag(bias.is_some())),
                ],
                &params,
                &[x, w, bias.unwrap_or(w), y],
                Grid::Linear(tiles as u32),
            )
        }
        ConvKernel::Direct => {
            let strips = wo.div_ceil(4);
            let total = s.n * ho * strips * s.cout;
            let params = [
                s.n as u32,
                ho as u32,
                wo as u32,
                s.h as u32,
                s.w as u32,
                s.cin as u32,
                s.cout as u32,
                s.gi() as u32,
                s.go() as u32,
                s.k as u32,
                s.stride as u32,
                pad,
                s.cout as u32,
                strips as u32,
                strips as u32,
                total as u32,
            ];
            rec.dispatch(
                &FORWARD_DIRECT,
                &[("BIAS", flag(bias.is_some()))],
                &params,
                &[x, w, bias.unwrap_or(w), y],
                Grid::Linear(total.div_ceil(256) as u32),
            )
        }
    }
}

/// Record `dx = d conv / dx` given `dy` `[n, ho, wo, cout]` (dx `[n, h, w, cin]` is
/// overwritten). One dispatch.
pub fn backward_data(
    rec: &mut Recorder,
    s: &ConvSpec,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let (ho, wo) = s.out_hw();
    s.check(
        "backward data",
        &[
            (dy, s.n * ho * wo * s.cout),
            (w, s.weight_len()),
            (dx, s.n * s.h * s.w * s.cin),
        ],
    )?;
    let pad = s.pad() as u32;
    match s.kernels()[1] {
        ConvKernel::Gemm => {
            let g = GemmSpec {
                trans_b: true,
                ..GemmSpec::new(s.out_pixels(), s.cin, s.cout)
            };
            gemm::gemm(rec, &g, dy, w, None, dx)
        }
        ConvKernel::ImplicitGemm => {
            let c = cols(s.gi(), s.groups);
            let st = s.stride;
            // Row tiles per stride class (iy % s, ix % s).
            let mut cls = [0u32; 5];
            let mut acc = 0usize;
            for (q, slot) in cls.iter_mut().enumerate() {
                *slot = acc as u32;
                if q < st * st {
                    let (py, px) = (q / st, q % st);
                    let ch = (s.h - py.min(s.h)).div_ceil(st);
                    let cw = (s.w - px.min(s.w)).div_ceil(st);
                    acc += (s.n * ch * cw).div_ceil(64);
                }
            }
            let tiles = acc * c.ntiles;
            let kg = s.k.div_ceil(st) * s.k.div_ceil(st) * s.go();
            let params = [
                s.n as u32,
                s.h as u32,
                s.w as u32,
                ho as u32,
                wo as u32,
                s.cout as u32,
                s.go() as u32,
                s.gi() as u32,
                s.cin as u32,
                s.groups as u32,
                s.k as u32,
                st as u32,
                pad,
                s.cout as u32,
                s.gi() as u32,
                s.go() as u32,
                c.gpt as u32,
                c.ntpg as u32,
                c.ntiles as u32,
                tiles as u32,
                cls[0],
                cls[1],
                cls[2],
                cls[3],
                cls[4],
            ];
            rec.dispatch(
                &BACKWARD_DATA_IGEMM,
                &[
                    ("BK", bk_for(c.gpt, kg) as f64),
                    ("UNI", flag(c.uni)),
                    ("BIAS", 0.0),
                ],
                &params,
                &[dy, w, w, dx],
                Grid::Linear(tiles as u32),
            )
        }
        ConvKernel::Direct => {
            let (strips0, strips) = if s.stride == 2 {
                let a = s.w.div_ceil(2).div_ceil(4);
                (a, a + (s.w / 2).div_ceil(4))
            } else {
                let a = s.w.div_ceil(4);
                (a, a)
            };
            let total = s.n * s.h * strips * s.cin;
            let params = [
                s.n as u32,
                s.h as u32,
                s.w as u32,
                ho as u32,
                wo as u32,
                s.cout as u32,
                s.cin as u32,
                s.gi() as u32,
                s.go() as u32,
                s.k as u32,
                s.stride as u32,
                pad,
                s.cout as u32,
                strips0 as u32,
                strips as u32,
                total as u32,
            ];
            rec.dispatch(
                &BACKWARD_DATA_DIRECT,
                &[("BIAS", 0.0)],
                &params,
                &[dy, w, w, dx],
                Grid::Linear(total.div_ceil(256) as u32),
            )
        }
    }
}

/// Record `dw = d conv / dw` (and `dbias = sum dy` over pixels when the spec has a bias),
/// overwriting both. `scratch` must hold [`ConvSpec::scratch_len`] elements when that is
/// non-zero. One dispatch, plus one reduction dispatch when the reduction is split.
pub fn backward_weight(
    rec: &mut Recorder,
    s: &ConvSpec,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    dbias: Option<&Tensor>,
    scratch: Option<&Tensor>,
) -> Result<()> {
    let (ho, wo) = s.out_hw();
    s.check(
        "backward weight",
        &[
            (x, s.n * s.h * s.w * s.cin),
            (dy, s.n * ho * wo * s.cout),
            (dw, s.weight_len()),
        ],
    )?;
    if dbias.is_some() != s.bias || dbias.is_some_and(|b| b.len() != s.cout) {
        return Err(Error::Shape(format!(
            "conv backward weight {}: bias gradient {:?}",
            s.label(),
            dbias.map(|b| b.shape().to_vec())
        )));
    }
    let nsplit = s.wgrad_splits();
    let npix = s.out_pixels();
    let chunk = npix.div_ceil(nsplit);
    let rows = s.wgrad_rows();
    let rows_b = s.wgrad_rows_b();
    let part = if nsplit > 1 {
        let need = s.scratch_len();
        Some(scratch.filter(|t| t.len() >= need).ok_or_else(|| {
            Error::Config(format!(
                "conv backward weight {}: needs a scratch tensor of {need} elements",
                s.label()
            ))
        })?)
    } else {
        None
    };
    // Outputs of the first pass; an absent second output binds the first again (the
    // kernel never writes it then).
    let (out, out2) = match part {
        Some(p) => (p, p),
        None => (dw, dbias.unwrap_or(dw)),
    };
    let bias = flag(s.bias);
    let pad = s.pad() as u32;
    match s.kernels()[2] {
        ConvKernel::Direct => {
            let nrq = rows_b.div_ceil(4);
            let total = nsplit * nrq * s.cout;
            let params = [
                s.n as u32,
                ho as u32,
                wo as u32,
                s.h as u32,
                s.w as u32,
                s.cin as u32,
                s.cout as u32,
                s.gi() as u32,
                s.go() as u32,
                s.k as u32,
                s.stride as u32,
                pad,
                rows as u32,
                rows_b as u32,
                nrq as u32,
                nsplit as u32,
                chunk as u32,
                npix as u32,
                total as u32,
            ];
            rec.dispatch(
                &BACKWARD_WEIGHT_DIRECT,
                &[("BIAS", bias)],
                &params,
                &[x, dy, out, out2],
                Grid::Linear(total.div_ceil(256) as u32),
            )?;
        }
        _ => {
            let c = cols(s.go(), s.groups);
            let rtiles = rows_b.div_ceil(64);
            let tiles = nsplit * rtiles * c.ntiles;
            let params = [
                s.n as u32,
                ho as u32,
                wo as u32,
                s.h as u32,
                s.w as u32,
                s.cin as u32,
                s.cout as u32,
                s.gi() as u32,
                s.go() as u32,
                s.groups as u32,
                s.k as u32,
                s.stride as u32,
                pad,
                rows as u32,
                rows_b as u32,
                c.gpt as u32,
                c.ntpg as u32,
                c.ntiles as u32,
                rtiles as u32,
                nsplit as u32,
                chunk as u32,
                npix as u32,
                tiles as u32,
            ];
            rec.dispatch(
                &BACKWARD_WEIGHT_IGEMM,
                &[
                    ("BK", bk_for(c.gpt, chunk) as f64),
                    ("UNI", flag(c.uni)),
                    ("BIAS", bias),
                ],
                &params,
                &[x, dy, out, out2],
                Grid::Linear(tiles as u32),
            )?;
        }
    }
    if let Some(p) = part {
        let n = rows_b * s.cout;
        rec.dispatch(
            &BACKWARD_WEIGHT_REDUCE,
            &[("BIAS", bias)],
            &[rows as u32, rows_b as u32, s.cout as u32, nsplit as u32],
            &[p, dw, dbias.unwrap_or(dw)],
            Grid::Linear(n.div_ceil(256) as u32),
        )?;
    }
    Ok(())
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

/// Visit every (output index, input index, weight index) product of the convolution.
fn for_each_tap(s: &ConvSpec, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = s.out_hw();
    let (gi, go, k, p) = (s.gi(), s.go(), s.k, s.pad() as isize);
    for n in 0..s.n {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..s.cout {
                    let oi = ((n * ho + oy) * wo + ox) * s.cout + co;
                    let g = co / go;
                    for ky in 0..k {
                        let iy = (oy * s.stride + ky) as isize - p;
                        if iy < 0 || iy >= s.h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (ox * s.stride + kx) as isize - p;
                            if ix < 0 || ix >= s.w as isize {
                                continue;
                            }
                            let xb = ((n * s.h + iy as usize) * s.w + ix as usize) * s.cin + g * gi;
                            for ci in 0..gi {
                                f(oi, xb + ci, ((ky * k + kx) * gi + ci) * s.cout + co);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// f64 reference forward (layouts as [`forward`]).
pub fn forward_ref(s: &ConvSpec, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; s.out_pixels() * s.cout];
    for_each_tap(s, |o, i, wi| y[o] += x[i] * w[wi]);
    if let Some(b) = bias {
        for (j, v) in y.iter_mut().enumerate() {
            *v += b[j % s.cout];
        }
    }
    y
}

/// f64 reference backward: `(dx, dw, dbias)` given `dy` (dbias is the per-channel sum of
/// dy, whether or not the spec has a bias).
pub fn backward_ref(
    s: &ConvSpec,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for_each_tap(s, |o, i, wi| {
        dx[i] += dy[o] * w[wi];
        dw[wi] += dy[o] * x[i];
    });
    let mut db = vec![0.0; s.cout];
    for (j, v) in dy.iter().enumerate() {
        db[j % s.cout] += v;
    }
    (dx, dw, db)
}

/// Harness case: one convolution (forward, data and weight gradients).
pub struct ConvCase {
    /// The convolution.
    pub spec: ConvSpec,
}

impl OpCase for ConvCase {
    fn name(&self) -> String {
        let s = &self.spec;
        let [f, b, w] = s.kernels();
        format!(
            "conv[{} {}x{}x{}x{} k{} s{} g{} {}->{}{}; {}/{}/{}]",
            if s.gi() == 1 && s.go() == 1 {
                "dw"
            } else {
                "grp"
            },
            s.n,
            s.h,
            s.w,
            s.cin,
            s.k,
            s.stride,
            s.groups,
            s.cin,
            s.cout,
            if s.bias { " bias" } else { "" },
            f.name(),
            b.name(),
            w.name()
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        let fan_in = (s.k * s.k * s.gi()) as f64;
        let mut v = vec![
            Input::diff(HostTensor::randn(&s.in_shape(), 1.0, rng)),
            Input::diff(HostTensor::randn(
                &s.weight_shape(),
                1.0 / fan_in.sqrt(),
                rng,
            )),
        ];
        if s.bias {
            v.push(Input::diff(HostTensor::randn(&[s.cout], 1.0, rng)));
        }
        v
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let s = &self.spec;
        let bias = s.bias.then(|| &i[2].data[..]);
        vec![HostTensor::new(
            &s.out_shape(),
            forward_ref(s, &i[0].data, &i[1].data, bias),
        )]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let (dx, dw, db) = backward_ref(s, &i[0].data, &i[1].data, &dy[0].data);
        let mut v = vec![
            Some(HostTensor::new(&s.in_shape(), dx)),
            Some(HostTensor::new(&s.weight_shape(), dw)),
        ];
        if s.bias {
            v.push(Some(HostTensor::new(&[s.cout], db)));
        }
        v
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let s = &self.spec;
        let x = i[0].upload(gpu)?;
        let w = i[1].upload(gpu)?;
        let b = if s.bias {
            Some(i[2].upload(gpu)?)
        } else {
            None
        };
        let y = gpu.zeros(&s.out_shape())?;
        run_gpu(gpu, |r| forward(r, s, &x, &w, b.as_ref(), &y))?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let s = &self.spec;
        let x = i[0].upload(gpu)?;
        let w = i[1].upload(gpu)?;
        let g = dy[0].upload(gpu)?;
        // Poison the outputs: every launcher must overwrite them.
        let dx = gpu.upload(&vec![f32::NAN; x.len()], &s.in_shape())?;
        let dw = gpu.upload(&vec![f32::NAN; w.len()], &s.weight_shape())?;
        let db = gpu.upload(&vec![f32::NAN; s.cout], &[s.cout])?;
        let scratch = gpu.upload(
            &vec![f32::NAN; s.scratch_len().max(1)],
            &[s.scratch_len().max(1)],
        )?;
        run_gpu(gpu, |r| {
            backward_data(r, s, &g, &w, &dx)?;
            backward_weight(r, s, &x, &g, &dw, s.bias.then_some(&db), Some(&scratch))
        })?;
        let mut v = vec![Some(gpu.read(&dx)?), Some(gpu.read(&dw)?)];
        if s.bias {
            v.push(Some(gpu.read(&db)?));
        }
        Ok(v)
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 5e-6,
            gradcheck: 1e-6,
        }
    }
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[
    &FORWARD_IGEMM,
    &FORWARD_DIRECT,
    &BACKWARD_DATA_IGEMM,
    &BACKWARD_DATA_DIRECT,
    &BACKWARD_WEIGHT_IGEMM,
    &BACKWARD_WEIGHT_DIRECT,
    &BACKWARD_WEIGHT_REDUCE,
];

#[allow(clippy::too_many_arguments)]
fn spec(
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
) -> ConvSpec {
    ConvSpec {
        n,
        h,
        w,
        cin,
        cout,
        k,
        stride,
        groups,
        bias,
    }
}

/// The shapes of the harness cases: depthwise, channel multiplier, G8/G16, Cout/G !=
/// Cin/G, dense (k 1, 3, 5; stride 1 and 2 on odd sizes; batch 1; channel counts that are
/// not multiples of 4), groups wider than a tile, and split weight gradients.
pub fn case_specs() -> Vec<ConvSpec> {
    vec![
        // Depthwise.
        spec(2, 7, 9, 6, 6, 3, 1, 6, true),
        spec(1, 9, 11, 5, 5, 5, 2, 5, false),
        spec(2, 8, 7, 3, 3, 3, 2, 3, true),
        spec(1, 5, 6, 7, 7, 7, 1, 7, false),
        // Channel multiplier 2 and Cout/G < Cin/G with few channels (direct kernels).
        spec(1, 6, 5, 4, 8, 3, 1, 4, false),
        spec(2, 5, 7, 6, 3, 3, 2, 3, true),
        // G8 and G16 (implicit GEMM, packed groups).
        spec(2, 7, 6, 16, 16, 3, 1, 2, false),
        spec(1, 9, 7, 48, 48, 3, 2, 3, true),
        spec(1, 6, 5, 32, 32, 5, 1, 2, true),
        // Cout/G != Cin/G: 4 -> 6 per group (unaligned columns).
        spec(2, 7, 5, 12, 18, 3, 2, 3, false),
        // Dense: ragged K, the stem's 3 channels, 1x1 (GEMM and stride 2).
        spec(1, 6, 7, 5, 7, 3, 1, 1, true),
        spec(2, 9, 9, 3, 10, 3, 2, 1, false),
        spec(2, 3, 5, 13, 70, 1, 1, 1, true),
        spec(1, 7, 7, 8, 6, 1, 2, 1, false),
        // Groups wider than a 64-column tile (forward, and backward data).
        spec(1, 4, 3, 8, 72, 3, 1, 1, false),
        spec(1, 3, 4, 66, 4, 3, 1, 1, true),
        // Long pixel reductions: split weight gradients (direct and implicit GEMM).
        spec(2, 37, 35, 5, 5, 3, 1, 5, true),
        spec(2, 21, 19, 32, 32, 3, 1, 2, false),
    ]
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    case_specs()
        .into_iter()
        .map(|spec| Box::new(ConvCase { spec }) as Box<dyn OpCase>)
        .collect()
}
