//! Backward-data pass of the grouped convolution: `dx = d conv / dx` from `dy`, one
//! dispatch (a convolution with the roles of Cin and Cout swapped; with stride 2 the input
//! pixels are split into parity classes so no zero taps run).

use super::{bk_for, cols, flag, ConvKernel, ConvSpec, DirectParams, IgemmParams, BKS, FLAG};
use crate::error::Result;
use crate::gpu::{Access, Cost, Grid, Kernel, Recorder, Tensor};
use crate::ops::gemm::{self, GemmSpec};

pub(super) static BACKWARD_DATA_IGEMM: Kernel<IgemmParams> = Kernel::new(
    "conv/backward_data_igemm.wgsl",
    "conv_backward_data_igemm",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[("BK", &BKS), ("UNI", &FLAG), ("BIAS", &[0.0])],
)
// dy and dx are activation gradients (f16 under mixed precision); the weights f32, the
// sums f32.
.with_f16(&[1, 4]);
pub(super) static BACKWARD_DATA_DIRECT: Kernel<DirectParams> = Kernel::new(
    "conv/backward_data_direct.wgsl",
    "conv_backward_data_direct",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    &[("BIAS", &[0.0])],
)
// As the implicit GEMM: dy, dx activation gradients; weights f32.
.with_f16(&[1, 4]);
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
    let (pad_top, pad_left) = (s.pad_top() as u32, s.pad_left() as u32);
    // The spec's FLOPs; the bytes of the tensors as stored (f16 activations move half).
    let cost = Cost::tensors(s.backward_data_cost().flops, &[dy, w], &[dx]);
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
            let params = IgemmParams {
                n: s.n as u32,
                oh: s.h as u32,
                ow: s.w as u32,
                ah: ho as u32,
                aw: wo as u32,
                ac: s.cout as u32,
                ga: s.go() as u32,
                gc: s.gi() as u32,
                cout: s.cin as u32,
                groups: s.groups as u32,
                k: s.k as u32,
                stride: st as u32,
                pad_top,
                pad_left,
                wcout: s.cout as u32,
                wgi: s.gi() as u32,
                wgo: s.go() as u32,
                gpt: c.gpt as u32,
                ntpg: c.ntpg as u32,
                ntiles: c.ntiles as u32,
                tiles: tiles as u32,
                cls0: cls[0],
                cls1: cls[1],
                cls2: cls[2],
                cls3: cls[3],
                cls4: cls[4],
            };
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
                cost,
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
            let params = DirectParams {
                n: s.n as u32,
                oh: s.h as u32,
                ow: s.w as u32,
                ah: ho as u32,
                aw: wo as u32,
                ac: s.cout as u32,
                cout: s.cin as u32,
                gi: s.gi() as u32,
                go: s.go() as u32,
                k: s.k as u32,
                stride: s.stride as u32,
                pad_top,
                pad_left,
                wcout: s.cout as u32,
                strips0: strips0 as u32,
                strips: strips as u32,
                total: total as u32,
            };
            rec.dispatch(
                &BACKWARD_DATA_DIRECT,
                &[("BIAS", 0.0)],
                &params,
                &[dy, w, w, dx],
                Grid::Linear(total.div_ceil(256) as u32),
                cost,
            )
        }
    }
}
