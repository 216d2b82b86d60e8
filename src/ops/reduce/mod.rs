//! Sums and means over one axis of a tensor viewed as [O, M, I] (global average pooling is
//! O=N, M=H*W, I=C; per-channel batch sums are O=1, M=N*H*W, I=C; a row sum is I=1), and
//! their gradient (a broadcast). Deterministic: fixed-order tree reductions, and a second
//! pass over chunk partials when M is long and O*I small.

use super::harness::{run_gpu, HostTensor, Input, OpCase};
use crate::error::{Error, Result};
use crate::gpu::{groups_for, Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

static SUM: KernelDef = KernelDef {
    shader: "reduce/sum_axis.wgsl",
    entry: "sum_axis",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[
        ("TI", &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
        ("PRODUCT", &[0.0, 1.0]),
    ],
};
static BROADCAST: KernelDef = KernelDef {
    shader: "reduce/broadcast.wgsl",
    entry: "broadcast",
    bindings: &[Access::Read, Access::ReadWrite],
    overrides: &[],
};

/// The [O, M, I] view of a reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axes {
    /// Outer extent (kept).
    pub o: usize,
    /// Reduced extent.
    pub m: usize,
    /// Inner extent (kept, contiguous).
    pub i: usize,
}

impl Axes {
    /// Reduction view of `shape` over the contiguous axes `from..to`.
    pub fn of(shape: &[usize], from: usize, to: usize) -> Result<Axes> {
        if from > to || to > shape.len() {
            return Err(Error::Shape(format!(
                "cannot reduce axes {from}..{to} of {shape:?}"
            )));
        }
        Ok(Axes {
            o: shape[..from].iter().product(),
            m: shape[from..to].iter().product(),
            i: shape[to..].iter().product(),
        })
    }

    fn tile_i(self) -> u32 {
        (self.i.next_power_of_two().min(32)) as u32
    }

    /// Chunks along M chosen by rule: split when the grid would be small and M long.
    pub fn chunks(self) -> usize {
        let blocks = self.o * self.i.div_ceil(self.tile_i() as usize);
        if blocks >= 256 || self.m <= 2048 {
            1
        } else {
            (self.m / 1024).clamp(1, 256)
        }
    }

    /// Scratch elements [`sum_axis`] needs for its partials (0 when it needs none).
    pub fn scratch_len(self) -> usize {
        let s = self.chunks();
        if s > 1 {
            self.o * s * self.i
        } else {
            0
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn pass(
    rec: &mut Recorder,
    x: &Tensor,
    y: &Tensor,
    out: &Tensor,
    ax: Axes,
    s: usize,
    scale: f32,
    product: bool,
) -> Result<()> {
    let ti = ax.tile_i();
    let iblocks = ax.i.div_ceil(ti as usize);
    let chunk = ax.m.div_ceil(s);
    let groups = ax.o * s * iblocks;
    rec.dispatch(
        &SUM,
        &[
            ("TI", ti as f64),
            ("PRODUCT", if product { 1.0 } else { 0.0 }),
        ],
        &[
            ax.o as u32,
            ax.m as u32,
            ax.i as u32,
            s as u32,
            chunk as u32,
            iblocks as u32,
            scale.to_bits(),
        ],
        &[x, y, out],
        Grid::Linear(groups as u32),
    )
}

/// Record out[o, i] = scale * sum_m x[o, m, i] (times y[o, m, i] when `y` is given).
/// `scratch` must hold [`Axes::scratch_len`] elements when that is non-zero.
pub fn sum_axis(
    rec: &mut Recorder,
    x: &Tensor,
    y: Option<&Tensor>,
    out: &Tensor,
    ax: Axes,
    scale: f32,
    scratch: Option<&Tensor>,
) -> Result<()> {
    let n = ax.o * ax.m * ax.i;
    if x.len() != n || y.is_some_and(|y| y.len() != n) || out.len() != ax.o * ax.i {
        return Err(Error::Shape(format!(
            "sum over {ax:?}: input {:?}, output {:?}",
            x.shape(),
            out.shape()
        )));
    }
    let s = ax.chunks();
    let yy = y.unwrap_or(x);
    if s == 1 {
        return pass(rec, x, yy, out, ax, 1, scale, y.is_some());
    }
    let scratch = scratch
        .filter(|t| t.len() >= ax.scratch_len())
        .ok_or_else(|| Error::Config("sum_axis: scratch buffer missing or too small".into()))?;
    pass(rec, x, yy, scratch, ax, s, 1.0, y.is_some())?;
    let ax2 = Axes {
        o: ax.o,
        m: s,
        i: ax.i,
    };
    pass(rec, scratch, scratch, out, ax2, 1, scale, false)
}

/// Record dx[o, m, i] = scale * dy[o, i].
pub fn broadcast(rec: &mut Recorder, dy: &Tensor, dx: &Tensor, ax: Axes, scale: f32) -> Result<()> {
    let n = ax.o * ax.m * ax.i;
    rec.dispatch(
        &BROADCAST,
        &[],
        &[n as u32, ax.m as u32, ax.i as u32, scale.to_bits()],
        &[dy, dx],
        Grid::Linear(groups_for(n, 256)),
    )
}

/// f64 reference: out[o, i] = scale * sum_m x[o, m, i] * (y or 1).
pub fn sum_axis_ref(x: &[f64], y: Option<&[f64]>, ax: Axes, scale: f64) -> Vec<f64> {
    let mut out = vec![0.0; ax.o * ax.i];
    for o in 0..ax.o {
        for m in 0..ax.m {
            for i in 0..ax.i {
                let k = (o * ax.m + m) * ax.i + i;
                out[o * ax.i + i] += x[k] * y.map_or(1.0, |y| y[k]);
            }
        }
    }
    out.iter_mut().for_each(|v| *v *= scale);
    out
}

/// Harness case: sum or mean of a tensor over axes `from..to`.
pub struct ReduceCase {
    /// Input shape.
    pub shape: Vec<usize>,
    /// First reduced axis.
    pub from: usize,
    /// One past the last reduced axis.
    pub to: usize,
    /// Mean instead of sum.
    pub mean: bool,
}

impl ReduceCase {
    fn axes(&self) -> Axes {
        Axes::of(&self.shape, self.from, self.to).expect("valid case")
    }
    fn scale(&self) -> f64 {
        if self.mean {
            1.0 / self.axes().m as f64
        } else {
            1.0
        }
    }
    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.shape[..self.from].to_vec();
        s.extend_from_slice(&self.shape[self.to..]);
        s
    }
}

impl OpCase for ReduceCase {
    fn name(&self) -> String {
        format!(
            "{}{:?}/axes{}..{}",
            if self.mean { "mean" } else { "sum" },
            self.shape,
            self.from,
            self.to
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        vec![Input::diff(HostTensor::randn(&self.shape, 1.0, rng))]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let v = sum_axis_ref(&i[0].data, None, self.axes(), self.scale());
        vec![HostTensor::new(&self.out_shape(), v)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let ax = self.axes();
        let mut dx = vec![0.0; i[0].data.len()];
        for o in 0..ax.o {
            for m in 0..ax.m {
                for ii in 0..ax.i {
                    dx[(o * ax.m + m) * ax.i + ii] = dy[0].data[o * ax.i + ii] * self.scale();
                }
            }
        }
        vec![Some(HostTensor::new(&self.shape, dx))]
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let ax = self.axes();
        let x = i[0].upload(gpu)?;
        let out = gpu.zeros(&self.out_shape())?;
        let scratch = gpu.zeros(&[ax.scratch_len().max(1)])?;
        run_gpu(gpu, |r| {
            sum_axis(r, &x, None, &out, ax, self.scale() as f32, Some(&scratch))
        })?;
        Ok(vec![gpu.read(&out)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        _i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| {
            broadcast(r, &g, &dx, self.axes(), self.scale() as f32)
        })?;
        Ok(vec![Some(gpu.read(&dx)?)])
    }
    fn tolerance(&self) -> super::harness::Tolerance {
        super::harness::Tolerance {
            forward: 2e-6,
            backward: 1e-6,
            gradcheck: 1e-6,
        }
    }
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&SUM, &BROADCAST];

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        // Global average pooling over H, W of NHWC.
        Box::new(ReduceCase {
            shape: vec![3, 5, 7, 19],
            from: 1,
            to: 3,
            mean: true,
        }),
        // Per-channel sum over N, H, W, long enough to take the split two-pass path.
        Box::new(ReduceCase {
            shape: vec![2, 40, 41, 3],
            from: 0,
            to: 3,
            mean: false,
        }),
        // Row sum over the last axis.
        Box::new(ReduceCase {
            shape: vec![6, 37],
            from: 1,
            to: 2,
            mean: false,
        }),
    ]
}
