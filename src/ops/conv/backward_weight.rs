//! Backward-weight pass of the grouped convolution: `dw` (and `dbias`) from `x` and `dy`,
//! a split-K reduction over output pixels in one dispatch, plus a deterministic reduction
//! of the partial sums when the split count ([`ConvSpec::wgrad_splits`]) exceeds one.

use super::{bk_for, cols, flag, ConvKernel, ConvSpec, BKS, FLAG};
use crate::error::{Error, Result};
use crate::gpu::{Access, Grid, KernelDef, Recorder, Tensor};

pub(super) static BACKWARD_WEIGHT_IGEMM: KernelDef = KernelDef {
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
pub(super) static BACKWARD_WEIGHT_DIRECT: KernelDef = KernelDef {
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
pub(super) static BACKWARD_WEIGHT_REDUCE: KernelDef = KernelDef {
    shader: "conv/backward_weight_reduce.wgsl",
    entry: "conv_backward_weight_reduce",
    bindings: &[Access::Read, Access::ReadWrite, Access::ReadWrite],
    overrides: &[("BIAS", &FLAG)],
};
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
