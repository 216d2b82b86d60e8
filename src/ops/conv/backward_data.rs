//! Backward-data pass of the grouped convolution: `dx = d conv / dx` from `dy`, one
//! dispatch (a convolution with the roles of Cin and Cout swapped; with stride 2 the input
//! pixels are split into parity classes so no zero taps run).

use super::{bk_for, cols, flag, ConvKernel, ConvSpec, BKS, FLAG};
use crate::error::Result;
use crate::gpu::{Access, Grid, KernelDef, Recorder, Tensor};
use crate::ops::gemm::{self, GemmSpec};

pub(super) static BACKWARD_DATA_IGEMM: KernelDef = KernelDef {
    shader: "conv/backward_data_igemm.wgsl",
    entry: "conv_backward_data_igemm",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[("BK", &BKS), ("UNI", &FLAG), ("BIAS", &[0.0])],
};
pub(super) static BACKWARD_DATA_DIRECT: KernelDef = KernelDef {
    shader: "conv/backward_data_direct.wgsl",
    entry: "conv_backward_data_direct",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[("BIAS", &[0.0])],
};
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
