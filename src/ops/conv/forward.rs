//! Forward pass of the grouped convolution: `y = conv(x, w) (+ bias)`, one dispatch (the
//! implicit GEMM, the direct kernel or, for 1x1 dense convolutions, a plain GEMM).

use super::{bk_for, cols, flag, ConvKernel, ConvSpec, DirectParams, IgemmParams, BKS, FLAG};
use crate::error::{Error, Result};
use crate::gpu::{Access, Cost, Grid, Kernel, Recorder, Tensor};
use crate::ops::gemm::{self, GemmSpec};

pub(super) static FORWARD_IGEMM: Kernel<IgemmParams> = Kernel::new(
    "conv/forward_igemm.wgsl",
    "conv_forward_igemm",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[("BK", &BKS), ("UNI", &FLAG), ("BIAS", &FLAG)],
)
// x and y are activations (f16 under mixed precision); the weights and the bias are f32
// parameters (master weights), the sums f32.
.with_f16(&[1, 4]);
pub(super) static FORWARD_DIRECT: Kernel<DirectParams> = Kernel::new(
    "conv/forward_direct.wgsl",
    "conv_forward_direct",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[("BIAS", &FLAG)],
)
// As the implicit GEMM: x, y activations; weights, bias f32.
.with_f16(&[1, 4]);
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
    let (pad_top, pad_left) = (s.pad_top() as u32, s.pad_left() as u32);
    // The spec's FLOPs; the bytes of the tensors as stored (f16 activations move half).
    let flops = s.forward_cost().flops;
    let cost = match bias {
        Some(b) => Cost::tensors(flops, &[x, w, b], &[y]),
        None => Cost::tensors(flops, &[x, w], &[y]),
    };
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
            let params = IgemmParams {
                n: s.n as u32,
                oh: ho as u32,
                ow: wo as u32,
                ah: s.h as u32,
                aw: s.w as u32,
                ac: s.cin as u32,
                ga: s.gi() as u32,
                gc: s.go() as u32,
                cout: s.cout as u32,
                groups: s.groups as u32,
                k: s.k as u32,
                stride: s.stride as u32,
                pad_top,
                pad_left,
                wcout: s.cout as u32,
                wgi: s.gi() as u32,
                wgo: s.go() as u32,
                gpt: c.gpt as u32,
                ntpg: c.ntpg as u32,
                ntiles: c.ntiles as u32,
                tiles: tiles as u32,
                cls0: 0,
                cls1: mtiles as u32,
                cls2: mtiles as u32,
                cls3: mtiles as u32,
                cls4: mtiles as u32,
            };
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
                cost,
            )
        }
        ConvKernel::Direct => {
            let strips = wo.div_ceil(4);
            let total = s.n * ho * strips * s.cout;
            let params = DirectParams {
                n: s.n as u32,
                oh: ho as u32,
                ow: wo as u32,
                ah: s.h as u32,
                aw: s.w as u32,
                ac: s.cin as u32,
                cout: s.cout as u32,
                gi: s.gi() as u32,
                go: s.go() as u32,
                k: s.k as u32,
                stride: s.stride as u32,
                pad_top,
                pad_left,
                wcout: s.cout as u32,
                strips0: strips as u32,
                strips: strips as u32,
                total: total as u32,
            };
            rec.dispatch(
                &FORWARD_DIRECT,
                &[("BIAS", flag(bias.is_some()))],
                &params,
                &[x, w, bias.unwrap_or(w), y],
                Grid::Linear(total.div_ceil(256) as u32),
                cost,
            )
        }
    }
}
