//! Backward-weight pass of the grouped convolution: `dw` (and `dbias`) from `x` and `dy`,
//! a split-K reduction over output pixels in one dispatch, plus a deterministic reduction
//! of the partial sums when the split count ([`ConvSpec::wgrad_splits`]) exceeds one.

use super::{bk_for, cols, flag, ConvKernel, ConvSpec, BKS, FLAG};
use crate::error::{Error, Result};
use crate::gpu::{uniform_block, Access, Cost, Grid, Kernel, Recorder, Tensor};

uniform_block! {
    /// Parameters of `conv/backward_weight_igemm.wgsl`.
    pub(super) struct IgemmWgradParams {
        pub n: u32,
        /// Dy image.
        pub oh: u32,
        pub ow: u32,
        /// X image.
        pub h: u32,
        pub w: u32,
        pub cin: u32,
        pub cout: u32,
        pub gi: u32,
        pub go: u32,
        pub groups: u32,
        pub k: u32,
        pub stride: u32,
        /// Zero rows above the image.
        pub pad_top: u32,
        /// Zero columns left of the image.
        pub pad_left: u32,
        /// R = k * k * Gi.
        pub rows: u32,
        /// R (+ 1 with bias).
        pub rows_b: u32,
        pub gpt: u32,
        pub ntpg: u32,
        /// Column tiles.
        pub ntiles: u32,
        /// Row tiles.
        pub rtiles: u32,
        pub nsplit: u32,
        /// Pixels per split.
        pub chunk: u32,
        /// N * Ho * Wo.
        pub npix: u32,
        /// Nsplit * rtiles * ntiles.
        pub tiles: u32,
    }
}

uniform_block! {
    /// Parameters of `conv/backward_weight_direct.wgsl`.
    pub(super) struct DirectWgradParams {
        pub n: u32,
        pub oh: u32,
        pub ow: u32,
        pub h: u32,
        pub w: u32,
        pub cin: u32,
        pub cout: u32,
        pub gi: u32,
        pub go: u32,
        pub k: u32,
        pub stride: u32,
        /// Zero rows above the image.
        pub pad_top: u32,
        /// Zero columns left of the image.
        pub pad_left: u32,
        pub rows: u32,
        pub rows_b: u32,
        /// Ceil(rows_b / 4).
        pub nrq: u32,
        pub nsplit: u32,
        pub chunk: u32,
        pub npix: u32,
        /// Nsplit * nrq * cout.
        pub total: u32,
    }
}

uniform_block! {
    /// Parameters of `conv/backward_weight_reduce.wgsl`.
    pub(super) struct WgradReduceParams {
        /// R.
        pub rows: u32,
        /// R (+ 1 with bias).
        pub rows_b: u32,
        pub cout: u32,
        pub nsplit: u32,
    }
}

pub(super) static BACKWARD_WEIGHT_IGEMM: Kernel<IgemmWgradParams> = Kernel::new(
    "conv/backward_weight_igemm.wgsl",
    "conv_backward_weight_igemm",
    &[
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    &[("BK", &BKS), ("UNI", &FLAG), ("BIAS", &FLAG)],
)
// x and dy are activations (f16 under mixed precision); dw, db and the split partials
// are parameter gradients (f32: they feed the f32 optimizer and the split reduction).
.with_f16(&[1, 2]);
pub(super) static BACKWARD_WEIGHT_DIRECT: Kernel<DirectWgradParams> = Kernel::new(
    "conv/backward_weight_direct.wgsl",
    "conv_backward_weight_direct",
    &[
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    &[("BIAS", &FLAG)],
)
// As the implicit GEMM: x, dy activations; dw, db, partials f32.
.with_f16(&[1, 2]);
pub(super) static BACKWARD_WEIGHT_REDUCE: Kernel<WgradReduceParams> = Kernel::new(
    "conv/backward_weight_reduce.wgsl",
    "conv_backward_weight_reduce",
    &[Access::Read, Access::ReadWrite, Access::ReadWrite],
    &[("BIAS", &FLAG)],
);
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
    let (pad_top, pad_left) = (s.pad_top() as u32, s.pad_left() as u32);
    // x and dy read once; the first pass writes dw (and dbias) or, when split, the
    // partial sums that the reduction pass reads and sums into dw (and dbias).
    let outs = rows_b * s.cout;
    let cost = Cost::tensors(
        2.0 * s.macs() as f64 + if s.bias { npix * s.cout } else { 0 } as f64,
        &[x, dy],
        &[],
    )
    .plus(Cost::f32s(0.0, 0, nsplit * outs));
    match s.kernels()[2] {
        ConvKernel::Direct => {
            let nrq = rows_b.div_ceil(4);
            let total = nsplit * nrq * s.cout;
            let params = DirectWgradParams {
                n: s.n as u32,
                oh: ho as u32,
                ow: wo as u32,
                h: s.h as u32,
                w: s.w as u32,
                cin: s.cin as u32,
                cout: s.cout as u32,
                gi: s.gi() as u32,
                go: s.go() as u32,
                k: s.k as u32,
                stride: s.stride as u32,
                pad_top,
                pad_left,
                rows: rows as u32,
                rows_b: rows_b as u32,
                nrq: nrq as u32,
                nsplit: nsplit as u32,
                chunk: chunk as u32,
                npix: npix as u32,
                total: total as u32,
            };
            rec.dispatch(
                &BACKWARD_WEIGHT_DIRECT,
                &[("BIAS", bias)],
                &params,
                &[x, dy, out, out2],
                Grid::Linear(total.div_ceil(256) as u32),
                cost,
            )?;
        }
        _ => {
            let c = cols(s.go(), s.groups);
            let rtiles = rows_b.div_ceil(64);
            let tiles = nsplit * rtiles * c.ntiles;
            let params = IgemmWgradParams {
                n: s.n as u32,
                oh: ho as u32,
                ow: wo as u32,
                h: s.h as u32,
                w: s.w as u32,
                cin: s.cin as u32,
                cout: s.cout as u32,
                gi: s.gi() as u32,
                go: s.go() as u32,
                groups: s.groups as u32,
                k: s.k as u32,
                stride: s.stride as u32,
                pad_top,
                pad_left,
                rows: rows as u32,
                rows_b: rows_b as u32,
                gpt: c.gpt as u32,
                ntpg: c.ntpg as u32,
                ntiles: c.ntiles as u32,
                rtiles: rtiles as u32,
                nsplit: nsplit as u32,
                chunk: chunk as u32,
                npix: npix as u32,
                tiles: tiles as u32,
            };
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
                cost,
            )?;
        }
    }
    if let Some(p) = part {
        let n = rows_b * s.cout;
        rec.dispatch(
            &BACKWARD_WEIGHT_REDUCE,
            &[("BIAS", bias)],
            &WgradReduceParams {
                rows: rows as u32,
                rows_b: rows_b as u32,
                cout: s.cout as u32,
                nsplit: nsplit as u32,
            },
            &[p, dw, dbias.unwrap_or(dw)],
            Grid::Linear(n.div_ceil(256) as u32),
            Cost::f32s((nsplit * n) as f64, nsplit * n, n),
        )?;
    }
    Ok(())
}
