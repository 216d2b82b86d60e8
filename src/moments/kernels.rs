//! GPU launchers of the moments analysis (shaders under `shaders/moments/`): periodic
//! padding and strided crop (a periodic-boundary convolution is wrap-pad, the ordinary
//! 'same' convolution, crop), the perturbation steps of normalizations and activations,
//! deterministic Gaussian weights, in-stream rescaling, and the moment reductions.
//!
//! Every launcher records into a [`Recorder`]; nothing here waits on the GPU.

use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Grid, Kernel, KernelDef, Recorder, Tensor,
};
use crate::ops::act::Act;
use crate::ops::gemm::{self, GemmSpec};

const ACT_CODES: [f64; 4] = [0.0, 1.0, 2.0, 3.0];

uniform_block! {
    /// Parameters of `moments/wrap_pad.wgsl`.
    pub(super) struct WrapPadParams {
        /// Elements of dst.
        pub total: u32,
        pub h: u32,
        pub w: u32,
        pub c: u32,
        pub pad: u32,
        /// (y + lift - pad) % h == (y - pad) mod h for y >= 0: lift is a multiple of h >= pad.
        pub lift_h: u32,
        pub lift_w: u32,
    }
}

uniform_block! {
    /// Parameters of `moments/crop.wgsl`.
    pub(super) struct CropParams {
        /// Elements of dst.
        pub total: u32,
        pub hs: u32,
        pub ws: u32,
        pub c: u32,
        pub ho: u32,
        pub wo: u32,
        pub off: u32,
        pub stride: u32,
    }
}

uniform_block! {
    /// Parameters of `moments/seg_scale.wgsl`.
    pub(super) struct SegScaleParams {
        pub total: u32,
        pub hw: u32,
        pub c: u32,
        /// 0: BatchNorm.
        pub groups: u32,
        /// Offset of rstd in `saved`.
        pub off: u32,
        /// 1: multiply by gamma[c].
        pub gamma: u32,
    }
}

uniform_block! {
    /// Parameters of both entry points of `moments/act_jvp.wgsl`.
    pub(super) struct ActJvpParams {
        pub total: u32,
        pub c: u32,
        /// Act_jvp: 1 multiplies by s[c].
        pub scale: u32,
    }
}

uniform_block! {
    /// Parameters of `moments/rescale.wgsl`.
    pub(super) struct RescaleParams {
        pub total: u32,
        pub idx: u32,
    }
}

uniform_block! {
    /// Parameters of both entry points of `moments/elementwise.wgsl`.
    pub(super) struct ElementwiseParams {
        pub total: u32,
        pub c: u32,
        pub a: f32,
        pub b: f32,
    }
}

uniform_block! {
    /// Parameters of `moments/gen_normal.wgsl`.
    pub(super) struct GenNormalParams {
        pub total: u32,
        pub k0: u32,
        pub k1: u32,
        pub scale: f32,
    }
}

uniform_block! {
    /// Parameters of `moments/col_partial.wgsl`.
    pub(super) struct ColPartialParams {
        pub m: u32,
        pub c: u32,
        pub chunks: u32,
        pub chunk_rows: u32,
        pub cblocks: u32,
        pub ti: u32,
        pub centered: u32,
    }
}

uniform_block! {
    /// Parameters of `moments/col_mean.wgsl`.
    pub(super) struct ColMeanParams {
        pub c: u32,
        pub chunks: u32,
        pub scale: f32,
    }
}

uniform_block! {
    /// Parameters of `moments/finalize.wgsl`.
    pub(super) struct FinalizeParams {
        pub m: u32,
        pub c: u32,
        pub chunks: u32,
        pub off: u32,
        pub centered: u32,
    }
}

static WRAP_PAD: Kernel<WrapPadParams> = Kernel::new(
    "moments/wrap_pad.wgsl",
    "wrap_pad",
    &[Access::Read, Access::ReadWrite],
    &[],
);
static CROP: Kernel<CropParams> = Kernel::new(
    "moments/crop.wgsl",
    "crop",
    &[Access::Read, Access::ReadWrite],
    &[],
);
static SEG_SCALE: Kernel<SegScaleParams> = Kernel::new(
    "moments/seg_scale.wgsl",
    "seg_scale",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[],
);
static ACT_JVP: Kernel<ActJvpParams> = Kernel::new(
    "moments/act_jvp.wgsl",
    "act_jvp",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[("ACT", &ACT_CODES)],
);
static PN_ACT: Kernel<ActJvpParams> = Kernel::new(
    "moments/act_jvp.wgsl",
    "pn_act",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[("ACT", &ACT_CODES)],
);
static RESCALE: Kernel<RescaleParams> = Kernel::new(
    "moments/rescale.wgsl",
    "rescale",
    &[Access::Read, Access::ReadWrite],
    &[],
);
static CENTER: Kernel<ElementwiseParams> = Kernel::new(
    "moments/elementwise.wgsl",
    "center",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[],
);
static AXPBY: Kernel<ElementwiseParams> = Kernel::new(
    "moments/elementwise.wgsl",
    "axpby",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[],
);
static GEN_NORMAL: Kernel<GenNormalParams> = Kernel::new(
    "moments/gen_normal.wgsl",
    "gen_normal",
    &[Access::ReadWrite],
    &[],
);
static COL_PARTIAL: Kernel<ColPartialParams> = Kernel::new(
    "moments/col_partial.wgsl",
    "col_partial",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[("MODE", &[0.0, 1.0])],
);
static COL_MEAN: Kernel<ColMeanParams> = Kernel::new(
    "moments/col_mean.wgsl",
    "col_mean",
    &[Access::Read, Access::ReadWrite],
    &[],
);
static FINALIZE: Kernel<FinalizeParams> = Kernel::new(
    "moments/finalize.wgsl",
    "moments_finalize",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[],
);

/// The kernels of the moments analysis (registered in [`crate::ops::kernels`] for the
/// portability test).
pub static KERNELS: &[&KernelDef] = &[
    &WRAP_PAD.def,
    &CROP.def,
    &SEG_SCALE.def,
    &ACT_JVP.def,
    &PN_ACT.def,
    &RESCALE.def,
    &CENTER.def,
    &AXPBY.def,
    &GEN_NORMAL.def,
    &COL_PARTIAL.def,
    &COL_MEAN.def,
    &FINALIZE.def,
];

fn check(t: &Tensor, len: usize, what: &str) -> Result<()> {
    if t.len() != len {
        return Err(Error::Shape(format!(
            "moments {what}: a tensor of shape {:?} where {len} elements are needed",
            t.shape()
        )));
    }
    Ok(())
}

fn grid(n: usize) -> Grid {
    Grid::Linear(groups_for(n, 256))
}

/// Record periodic padding: `src` `[n, h, w, c]` into `dst` `[n, h + 2 pad, w + 2 pad, c]`
/// with `dst[n, y, x, c] = src[n, (y - pad) mod h, (x - pad) mod w, c]`.
pub fn wrap_pad(
    rec: &mut Recorder,
    src: &Tensor,
    dst: &Tensor,
    dims: [usize; 4],
    pad: usize,
) -> Result<()> {
    let [n, h, w, c] = dims;
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::Shape(format!(
            "wrap-pad of an empty image {dims:?}: h, w and c must be at least 1"
        )));
    }
    check(src, n * h * w * c, "wrap-pad input")?;
    let total = n * (h + 2 * pad) * (w + 2 * pad) * c;
    check(dst, total, "wrap-pad output")?;
    let lift_h = pad.div_ceil(h) * h;
    let lift_w = pad.div_ceil(w) * w;
    rec.dispatch(
        &WRAP_PAD,
        &[],
        &WrapPadParams {
            total: total as u32,
            h: h as u32,
            w: w as u32,
            c: c as u32,
            pad: pad as u32,
            lift_h: lift_h as u32,
            lift_w: lift_w as u32,
        },
        &[src, dst],
        grid(total),
        Cost::f32s(0.0, total, total),
    )
}

/// Record a strided crop: `dst[n, oy, ox, c] = src[n, off + stride*oy, off + stride*ox, c]`
/// with `src` `[n, hs, ws, c]` and `dst` `[n, ho, wo, c]`.
#[allow(clippy::too_many_arguments)]
pub fn crop(
    rec: &mut Recorder,
    src: &Tensor,
    dst: &Tensor,
    n: usize,
    src_hw: (usize, usize),
    out_hw: (usize, usize),
    c: usize,
    off: usize,
    stride: usize,
) -> Result<()> {
    let (hs, ws) = src_hw;
    let (ho, wo) = out_hw;
    check(src, n * hs * ws * c, "crop input")?;
    let total = n * ho * wo * c;
    check(dst, total, "crop output")?;
    if ho > 0 && wo > 0 && (off + stride * (ho - 1) >= hs || off + stride * (wo - 1) >= ws) {
        return Err(Error::Shape(format!(
            "crop of {ho}x{wo} at offset {off}, stride {stride} leaves a {hs}x{ws} input"
        )));
    }
    rec.dispatch(
        &CROP,
        &[],
        &CropParams {
            total: total as u32,
            hs: hs as u32,
            ws: ws as u32,
            c: c as u32,
            ho: ho as u32,
            wo: wo as u32,
            off: off as u32,
            stride: stride as u32,
        },
        &[src, dst],
        grid(total),
        Cost::f32s(0.0, total, total),
    )
}

/// Record the perturbation step of a normalization with frozen statistics:
/// `dz = dy * rstd[segment] (* gamma[c])`. `saved` is the `saved` tensor of
/// [`crate::ops::norm::forward`] (`[mean; S]` then `[rstd; S]`), `groups` 0 for BatchNorm
/// (one segment per channel), else the Layer/Group norm groups (segment per sample and
/// group).
#[allow(clippy::too_many_arguments)]
pub fn seg_scale(
    rec: &mut Recorder,
    dy: &Tensor,
    saved: &Tensor,
    gamma: Option<&Tensor>,
    dz: &Tensor,
    hw: usize,
    c: usize,
    groups: usize,
) -> Result<()> {
    let total = dy.len();
    check(dz, total, "normalization perturbation output")?;
    if c == 0
        || hw == 0
        || !total.is_multiple_of(hw * c)
        || (groups > 0 && !c.is_multiple_of(groups))
    {
        return Err(Error::Shape(format!(
            "normalization perturbation of {:?} with hw {hw}, c {c}, groups {groups}",
            dy.shape()
        )));
    }
    let n = total / (hw * c);
    let segs = if groups == 0 { c } else { n * groups };
    check(saved, 2 * segs, "normalization statistics")?;
    if let Some(g) = gamma {
        check(g, c, "gamma")?;
    }
    rec.dispatch(
        &SEG_SCALE,
        &[],
        &SegScaleParams {
            total: total as u32,
            hw: hw as u32,
            c: c as u32,
            groups: groups as u32,
            off: segs as u32,
            gamma: u32::from(gamma.is_some()),
        },
        &[dy, saved, gamma.unwrap_or(saved), dz],
        grid(total),
        Cost::f32s(2.0 * total as f64, total, total),
    )
}

/// Record the perturbation step of an activation: `dx = dz * act'(z) (* s[c])` (ReLU masks
/// `dz` by `z > 0`; `s` is Proxy Norm's `s~`).
pub fn act_jvp(
    rec: &mut Recorder,
    act: Act,
    z: &Tensor,
    dz: &Tensor,
    s: Option<&Tensor>,
    dx: &Tensor,
    c: usize,
) -> Result<()> {
    let total = z.len();
    check(dz, total, "activation perturbation input")?;
    check(dx, total, "activation perturbation output")?;
    if let Some(s) = s {
        if c == 0 {
            return Err(Error::Shape(
                "activation perturbation with a proxy scale over 0 channels".into(),
            ));
        }
        check(s, c, "proxy scale")?;
    }
    rec.dispatch(
        &ACT_JVP,
        &[("ACT", act.code())],
        &ActJvpParams {
            total: total as u32,
            c: c as u32,
            scale: u32::from(s.is_some()),
        },
        &[z, dz, s.unwrap_or(z), dx],
        grid(total),
        Cost::f32s((act.grad_flops() + 2.0) * total as f64, 2 * total, total),
    )
}

/// Record a proxy-normalized activation on already normalized (and affine-transformed)
/// values: `x = (act(z) - mu[c]) * s[c]`.
pub fn pn_act(
    rec: &mut Recorder,
    act: Act,
    z: &Tensor,
    mu: &Tensor,
    s: &Tensor,
    x: &Tensor,
    c: usize,
) -> Result<()> {
    let total = z.len();
    if c == 0 {
        return Err(Error::Shape("proxy activation over 0 channels".into()));
    }
    check(x, total, "proxy activation output")?;
    check(mu, c, "proxy mean")?;
    check(s, c, "proxy scale")?;
    rec.dispatch(
        &PN_ACT,
        &[("ACT", act.code())],
        &ActJvpParams {
            total: total as u32,
            c: c as u32,
            scale: 0,
        },
        &[z, mu, s, x],
        grid(total),
        Cost::f32s((act.flops() + 2.0) * total as f64, total + 2 * c, total),
    )
}

/// Record `t /= sqrt(record[idx])` in place (skipped where `record[idx] <= 0`).
pub fn rescale(rec: &mut Recorder, record: &Tensor, idx: usize, t: &Tensor) -> Result<()> {
    if idx >= record.len() {
        return Err(Error::Shape(format!(
            "rescale reads record[{idx}] of {}",
            record.len()
        )));
    }
    let total = t.len();
    rec.dispatch(
        &RESCALE,
        &[],
        &RescaleParams {
            total: total as u32,
            idx: idx as u32,
        },
        &[record, t],
        grid(total),
        Cost::f32s(total as f64, total, total),
    )
}

/// Record `out = x - mean[c]` for `x` viewed as `[rows, c]`.
pub fn center(rec: &mut Recorder, x: &Tensor, mean: &Tensor, out: &Tensor, c: usize) -> Result<()> {
    let total = x.len();
    check(out, total, "centered copy")?;
    if mean.len() < c || c == 0 || !total.is_multiple_of(c) {
        return Err(Error::Shape(format!(
            "centering {:?} by {c} channel means",
            x.shape()
        )));
    }
    rec.dispatch(
        &CENTER,
        &[],
        &ElementwiseParams {
            total: total as u32,
            c: c as u32,
            a: 0.0,
            b: 0.0,
        },
        &[x, mean, out],
        grid(total),
        Cost::f32s(total as f64, total + c, total),
    )
}

/// Record `out = a * x + b * y`.
pub fn axpby(
    rec: &mut Recorder,
    a: f32,
    x: &Tensor,
    b: f32,
    y: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let total = x.len();
    check(y, total, "axpby input")?;
    check(out, total, "axpby output")?;
    rec.dispatch(
        &AXPBY,
        &[],
        &ElementwiseParams {
            total: total as u32,
            c: 1,
            a,
            b,
        },
        &[x, y, out],
        grid(total),
        Cost::f32s(3.0 * total as f64, 2 * total, total),
    )
}

/// Record `w = std * N(0, 1)` drawn from a counter-based hash keyed by `key` (see
/// `shaders/moments/gen_normal.wgsl`): the same key gives the same weights.
pub fn gen_normal(rec: &mut Recorder, w: &Tensor, key: u64, std: f32) -> Result<()> {
    let total = w.len();
    rec.dispatch(
        &GEN_NORMAL,
        &[],
        &GenNormalParams {
            total: total as u32,
            k0: key as u32,
            k1: (key >> 32) as u32,
            scale: std,
        },
        &[w],
        grid(total.div_ceil(2)),
        // A PCG hash and a Box-Muller step per pair: ~20 operations per value.
        Cost::f32s(20.0 * total as f64, 0, total),
    )
}

/// Values written per moment computation at `record[off..off + MOMENT_VALUES]`:
/// `nu1(|t|), nu2(t), mu2(t), mu4(t), mean_c m_c^2`.
pub const MOMENT_VALUES: usize = 5;

/// Chunking of a moment reduction over `m` rows and `c` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MomentPlan {
    /// Rows (batch * positions).
    pub m: usize,
    /// Channels.
    pub c: usize,
    ti: usize,
    cblocks: usize,
    chunks: usize,
    chunk_rows: usize,
}

/// Most row chunks of a moment reduction (keeps the single-workgroup final pass short).
const MAX_CHUNKS: usize = 64;
/// Fewest rows per chunk.
const MIN_CHUNK_ROWS: usize = 256;

impl MomentPlan {
    /// The plan for a tensor of `m` rows of `c` channels.
    pub fn new(m: usize, c: usize) -> Self {
        let ti = c.next_power_of_two().min(32);
        let cblocks = c.div_ceil(ti);
        let want = 1024usize.div_ceil(cblocks.max(1));
        let chunks = want.min(m / MIN_CHUNK_ROWS).clamp(1, MAX_CHUNKS);
        let chunk_rows = m.div_ceil(chunks).max(1);
        let chunks = m.div_ceil(chunk_rows).max(1);
        Self {
            m,
            c,
            ti,
            cblocks,
            chunks,
            chunk_rows,
        }
    }

    /// Floats of the partial-sum scratch this reduction needs.
    pub fn scratch_len(&self) -> usize {
        4 * self.chunks * self.c
    }
}

/// Scratch of the moment reductions: partial sums and the channel means (the means stay
/// valid after [`moments`] until the next call, e.g. for [`covariance`]).
pub struct MomentScratch {
    /// Partial sums.
    pub part: Tensor,
    /// Channel means of the last centered reduction.
    pub mean: Tensor,
}

/// Record the moments of `t` (viewed as `[m, c]`) into `record[off..off + 5]` (see
/// [`MOMENT_VALUES`]). `centered` computes the channel means first (3 or 4 dispatches);
/// otherwise d = t and only nu1 and nu2 are meaningful (2 dispatches).
pub fn moments(
    rec: &mut Recorder,
    t: &Tensor,
    plan: &MomentPlan,
    centered: bool,
    ws: &MomentScratch,
    record: &Tensor,
    off: usize,
) -> Result<()> {
    check(t, plan.m * plan.c, "moment input")?;
    if ws.part.len() < plan.scratch_len() || ws.mean.len() < plan.c {
        return Err(Error::Shape(format!(
            "moment scratch of {} / {} floats for a plan needing {} / {}",
            ws.part.len(),
            ws.mean.len(),
            plan.scratch_len(),
            plan.c
        )));
    }
    if off + MOMENT_VALUES > record.len() {
        return Err(Error::Shape(format!(
            "moment record slot {off} past the record of {}",
            record.len()
        )));
    }
    let params = |centered: bool| ColPartialParams {
        m: plan.m as u32,
        c: plan.c as u32,
        chunks: plan.chunks as u32,
        chunk_rows: plan.chunk_rows as u32,
        cblocks: plan.cblocks as u32,
        ti: plan.ti as u32,
        centered: u32::from(centered),
    };
    let mc = plan.m * plan.c;
    let groups = Grid::Linear((plan.chunks * plan.cblocks) as u32);
    if centered {
        rec.dispatch(
            &COL_PARTIAL,
            &[("MODE", 0.0)],
            &params(true),
            &[t, &ws.mean, &ws.part],
            groups,
            Cost::f32s(mc as f64, mc, plan.chunks * plan.c),
        )?;
        rec.dispatch(
            &COL_MEAN,
            &[],
            &ColMeanParams {
                c: plan.c as u32,
                chunks: plan.chunks as u32,
                scale: 1.0 / plan.m as f64 as f32,
            },
            &[&ws.part, &ws.mean],
            grid(plan.c),
            Cost::f32s((plan.chunks * plan.c) as f64, plan.chunks * plan.c, plan.c),
        )?;
    }
    rec.dispatch(
        &COL_PARTIAL,
        &[("MODE", 1.0)],
        &params(centered),
        &[t, &ws.mean, &ws.part],
        groups,
        // |d|, d^2, d^4 and four sums per element.
        Cost::f32s(8.0 * mc as f64, mc + plan.c, 4 * plan.chunks * plan.c),
    )?;
    rec.dispatch(
        &FINALIZE,
        &[],
        &FinalizeParams {
            m: plan.m as u32,
            c: plan.c as u32,
            chunks: plan.chunks as u32,
            off: off as u32,
            centered: u32::from(centered),
        },
        &[&ws.part, &ws.mean, record],
        Grid::Linear(1),
        Cost::f32s(
            (4 * plan.chunks * plan.c) as f64,
            4 * plan.chunks * plan.c + plan.c,
            MOMENT_VALUES,
        ),
    )
}

/// Record the (unnormalized) channel covariance `cov = (t - m)^T (t - m)` of `t` viewed
/// as `[m, c]`, with the channel means `ws.mean` of the preceding centered [`moments`]
/// call. `centered` is a `[m, c]` scratch tensor, `cov` is `[c, c]`.
pub fn covariance(
    rec: &mut Recorder,
    t: &Tensor,
    plan: &MomentPlan,
    ws: &MomentScratch,
    centered: &Tensor,
    cov: &Tensor,
) -> Result<()> {
    center(rec, t, &ws.mean, centered, plan.c)?;
    let g = GemmSpec {
        trans_a: true,
        ..GemmSpec::new(plan.c, plan.c, plan.m)
    };
    gemm::gemm(rec, &g, centered, centered, None, cov)
}
