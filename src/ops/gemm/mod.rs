//! Tiled GEMM (workgroup-memory tiles, 4 x 4 register micro-tiles) and the pointwise
//! (1x1) convolution / linear layer built on it.
//!
//! [`gemm`] computes `C[m, n] = op(A)[m, k] . op(B)[k, n] (+ bias[n]) (+ C)` on row-major
//! matrices in one dispatch. The tile is 64 x 64, 128 x 32 or 256 x 16 (rows x columns),
//! chosen by rule from `n` (the fewest padded columns; see [`GemmSpec::tile`]).
//!
//! Linear layers and 1x1 convolutions on NHWC activations are the same product with the
//! activation viewed as `[rows, cin]` (rows = N*H*W) and the weight stored `[cin, cout]`
//! (the layout of [`super::conv`] weights with k = 1). The weight gradient is a long
//! reduction over rows; it runs on the convolution's split-K weight-gradient kernel (one
//! pass, plus a deterministic reduction pass when the rows are split).

use super::conv::{self, ConvSpec};
use super::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use super::reduce::{self, Axes};
use crate::error::{Error, Result};
use crate::gpu::{Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

static GEMM: KernelDef = KernelDef {
    shader: "gemm/gemm.wgsl",
    entry: "gemm",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[
        ("TA", &[0.0, 1.0]),
        ("TB", &[0.0, 1.0]),
        ("BIAS", &[0.0, 1.0]),
        ("ACC", &[0.0, 1.0]),
        ("TNT", &[4.0, 8.0, 16.0]),
    ],
};

/// One matrix product `C[m, n] = op(A)[m, k] . op(B)[k, n] (+ bias) (+ C)`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GemmSpec {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// A is stored `[k, m]` (use its transpose).
    pub trans_a: bool,
    /// B is stored `[n, k]` (use its transpose).
    pub trans_b: bool,
    /// Add the product to C's current contents instead of overwriting C.
    pub accumulate: bool,
}

impl GemmSpec {
    /// A plain product of `[m, k]` by `[k, n]`, overwriting C.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            accumulate: false,
        }
    }

    /// Multiply-accumulates.
    pub fn macs(&self) -> usize {
        self.m * self.n * self.k
    }

    /// Threads along N of the tile (4, 8 or 16; the tile is `1024/t x 4t`): the choice
    /// with the fewest padded columns, ties to the wider tile; 16-column tiles only for
    /// n <= 48 and 32-column tiles only for n <= 160 (narrow tiles re-read A more often).
    pub fn tile(&self) -> u32 {
        let pad = |bn: usize| self.n.div_ceil(bn) * bn;
        let mut best = 16u32;
        for (t, limit) in [(8u32, 160usize), (4, 48)] {
            if self.n <= limit && pad(4 * t as usize) < pad(4 * best as usize) {
                best = t;
            }
        }
        best
    }

    /// Check sizes against the tensors.
    fn check(&self, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, c: &Tensor) -> Result<()> {
        if a.len() != self.m * self.k
            || b.len() != self.k * self.n
            || c.len() != self.m * self.n
            || bias.is_some_and(|t| t.len() != self.n)
        {
            return Err(Error::Shape(format!(
                "gemm {self:?}: A {:?}, B {:?}, C {:?}, bias {:?}",
                a.shape(),
                b.shape(),
                c.shape(),
                bias.map(|t| t.shape().to_vec())
            )));
        }
        if self.m.max(self.n).max(self.k) >= u32::MAX as usize / 2 {
            return Err(Error::TooLarge(format!("gemm {self:?} is too large")));
        }
        Ok(())
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Record `C = op(A) . op(B) (+ bias[n]) (+ C if accumulate)` (one dispatch).
pub fn gemm(
    rec: &mut Recorder,
    s: &GemmSpec,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<()> {
    s.check(a, b, bias, c)?;
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    let tnt = s.tile();
    let bm = 1024 / tnt as usize;
    let bn = 4 * tnt as usize;
    let ntiles = s.n.div_ceil(bn);
    let tiles = s.m.div_ceil(bm) * ntiles;
    rec.dispatch(
        &GEMM,
        &[
            ("TA", flag(s.trans_a)),
            ("TB", flag(s.trans_b)),
            ("BIAS", flag(bias.is_some())),
            ("ACC", flag(s.accumulate)),
            ("TNT", tnt as f64),
        ],
        &[
            s.m as u32,
            s.n as u32,
            s.k as u32,
            ntiles as u32,
            tiles as u32,
        ],
        &[a, b, bias.unwrap_or(b), c],
        Grid::Linear(tiles as u32),
    )
}

/// f64 reference of [`gemm`]: returns op(A) . op(B) (+ bias) (+ c0).
pub fn gemm_ref(
    s: &GemmSpec,
    a: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    c0: Option<&[f64]>,
) -> Vec<f64> {
    let mut c = vec![0.0; s.m * s.n];
    for i in 0..s.m {
        for j in 0..s.n {
            let mut acc = 0.0;
            for l in 0..s.k {
                let av = if s.trans_a {
                    a[l * s.m + i]
                } else {
                    a[i * s.k + l]
                };
                let bv = if s.trans_b {
                    b[j * s.k + l]
                } else {
                    b[l * s.n + j]
                };
                acc += av * bv;
            }
            if let Some(bb) = bias {
                acc += bb[j];
            }
            if let (true, Some(c0)) = (s.accumulate, c0) {
                acc += c0[i * s.n + j];
            }
            c[i * s.n + j] = acc;
        }
    }
    c
}

/// A linear layer / pointwise convolution: `y[r, :] = x[r, :] . W (+ b)` with `x` of
/// `rows x cin` (an NHWC activation has rows = N*H*W), `W` stored `[cin, cout]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinearSpec {
    /// Rows (N, or N*H*W for a 1x1 convolution).
    pub rows: usize,
    /// Input features / channels.
    pub cin: usize,
    /// Output features / channels.
    pub cout: usize,
    /// With a bias `[cout]`.
    pub bias: bool,
}

impl LinearSpec {
    /// The same layer as a 1x1 convolution (what the weight gradient runs on).
    pub fn as_conv(&self) -> ConvSpec {
        ConvSpec {
            n: 1,
            h: 1,
            w: self.rows,
            cin: self.cin,
            cout: self.cout,
            k: 1,
            stride: 1,
            groups: 1,
            bias: self.bias,
        }
    }

    /// Elements of scratch [`linear_backward_weight`] needs (0: none).
    pub fn scratch_len(&self) -> usize {
        self.as_conv().scratch_len()
    }

    /// Multiply-accumulates of the forward product.
    pub fn macs(&self) -> usize {
        self.rows * self.cin * self.cout
    }
}

/// Record `y = x . W (+ b)` (one dispatch).
pub fn linear_forward(
    rec: &mut Recorder,
    s: &LinearSpec,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    if bias.is_some() != s.bias {
        return Err(Error::Config(format!(
            "linear {s:?}: bias given = {}",
            bias.is_some()
        )));
    }
    gemm(rec, &GemmSpec::new(s.rows, s.cout, s.cin), x, w, bias, y)
}

/// Record `dx = dy . W^T` (one dispatch; overwrites `dx`).
pub fn linear_backward_data(
    rec: &mut Recorder,
    s: &LinearSpec,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let g = GemmSpec {
        trans_b: true,
        ..GemmSpec::new(s.rows, s.cin, s.cout)
    };
    gemm(rec, &g, dy, w, None, dx)
}

/// Record `dW = x^T . dy` and `db = sum_r dy[r, :]` (overwrites both). `scratch` must
/// hold [`LinearSpec::scratch_len`] elements when that is non-zero.
pub fn linear_backward_weight(
    rec: &mut Recorder,
    s: &LinearSpec,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    dbias: Option<&Tensor>,
    scratch: Option<&Tensor>,
) -> Result<()> {
    conv::backward_weight(rec, &s.as_conv(), x, dy, dw, dbias, scratch)
}

/// Harness case: one GEMM with given transposes, accumulate and bias.
pub struct GemmCase {
    /// The product.
    pub spec: GemmSpec,
    /// With a bias.
    pub bias: bool,
}

impl GemmCase {
    fn a_shape(&self) -> Vec<usize> {
        let s = &self.spec;
        if s.trans_a {
            vec![s.k, s.m]
        } else {
            vec![s.m, s.k]
        }
    }
    fn b_shape(&self) -> Vec<usize> {
        let s = &self.spec;
        if s.trans_b {
            vec![s.n, s.k]
        } else {
            vec![s.k, s.n]
        }
    }
}

impl OpCase for GemmCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "gemm[{}x{}x{}{}{}{}{}]",
            s.m,
            s.n,
            s.k,
            if s.trans_a { ",tA" } else { "" },
            if s.trans_b { ",tB" } else { "" },
            if s.accumulate { ",acc" } else { "" },
            if self.bias { ",bias" } else { "" }
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        let mut v = vec![
            Input::diff(HostTensor::randn(&self.a_shape(), 1.0, rng)),
            Input::diff(HostTensor::randn(&self.b_shape(), 1.0, rng)),
        ];
        if self.bias {
            v.push(Input::diff(HostTensor::randn(&[s.n], 1.0, rng)));
        }
        if s.accumulate {
            v.push(Input::diff(HostTensor::randn(&[s.m, s.n], 1.0, rng)));
        }
        v
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let s = &self.spec;
        let bias = self.bias.then(|| &i[2].data[..]);
        let c0 = s.accumulate.then(|| &i[i.len() - 1].data[..]);
        vec![HostTensor::new(
            &[s.m, s.n],
            gemm_ref(s, &i[0].data, &i[1].data, bias, c0),
        )]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let g = &dy[0].data;
        let mut da = vec![0.0; s.m * s.k];
        let mut db = vec![0.0; s.k * s.n];
        for r in 0..s.m {
            for c in 0..s.n {
                for l in 0..s.k {
                    let ai = if s.trans_a { l * s.m + r } else { r * s.k + l };
                    let bi = if s.trans_b { c * s.k + l } else { l * s.n + c };
                    da[ai] += g[r * s.n + c] * i[1].data[bi];
                    db[bi] += g[r * s.n + c] * i[0].data[ai];
                }
            }
        }
        let mut out = vec![
            Some(HostTensor::new(&self.a_shape(), da)),
            Some(HostTensor::new(&self.b_shape(), db)),
        ];
        if self.bias {
            let mut dbias = vec![0.0; s.n];
            for r in 0..s.m {
                for c in 0..s.n {
                    dbias[c] += g[r * s.n + c];
                }
            }
            out.push(Some(HostTensor::new(&[s.n], dbias)));
        }
        if s.accumulate {
            out.push(Some(dy[0].clone()));
        }
        out
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let s = &self.spec;
        let a = i[0].upload(gpu)?;
        let b = i[1].upload(gpu)?;
        let bias = if self.bias {
            Some(i[2].upload(gpu)?)
        } else {
            None
        };
        let c = if s.accumulate {
            i[i.len() - 1].upload(gpu)?
        } else {
            gpu.zeros(&[s.m, s.n])?
        };
        run_gpu(gpu, |r| gemm(r, s, &a, &b, bias.as_ref(), &c))?;
        Ok(vec![gpu.read(&c)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        // The gradients are themselves GEMMs with other transposes: this exercises the
        // transpose flags a second time.
        let s = &self.spec;
        let a = i[0].upload(gpu)?;
        let b = i[1].upload(gpu)?;
        let g = dy[0].upload(gpu)?;
        let da = gpu.zeros(&self.a_shape())?;
        let db = gpu.zeros(&self.b_shape())?;
        let dbias = gpu.zeros(&[s.n])?;
        run_gpu(gpu, |r| {
            // dA: if A is [m, k]: dC . op(B)^T; if A is stored [k, m]: op(B) . dC^T.
            if !s.trans_a {
                let sp = GemmSpec {
                    trans_b: !s.trans_b,
                    ..GemmSpec::new(s.m, s.k, s.n)
                };
                gemm(r, &sp, &g, &b, None, &da)?;
            } else {
                let sp = GemmSpec {
                    trans_a: s.trans_b,
                    trans_b: true,
                    ..GemmSpec::new(s.k, s.m, s.n)
                };
                gemm(r, &sp, &b, &g, None, &da)?;
            }
            // dB: if B is [k, n]: op(A)^T . dC; if B is stored [n, k]: dC^T . op(A).
            if !s.trans_b {
                let sp = GemmSpec {
                    trans_a: !s.trans_a,
                    ..GemmSpec::new(s.k, s.n, s.m)
                };
                gemm(r, &sp, &a, &g, None, &db)?;
            } else {
                let sp = GemmSpec {
                    trans_a: true,
                    trans_b: s.trans_a,
                    ..GemmSpec::new(s.n, s.k, s.m)
                };
                gemm(r, &sp, &g, &a, None, &db)?;
            }
            if self.bias {
                let ax = Axes {
                    o: 1,
                    m: s.m,
                    i: s.n,
                };
                reduce::sum_axis(r, &g, None, &dbias, ax, 1.0, None)?;
            }
            Ok(())
        })?;
        let mut out = vec![Some(gpu.read(&da)?), Some(gpu.read(&db)?)];
        if self.bias {
            out.push(Some(gpu.read(&dbias)?));
        }
        if s.accumulate {
            out.push(Some(gpu.read(&g)?));
        }
        Ok(out)
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 1e-5,
            backward: 1e-5,
            gradcheck: 1e-6,
        }
    }
}

/// Harness case: a linear layer (forward, data and weight gradients through the
/// launchers the model uses).
pub struct LinearCase {
    /// The layer.
    pub spec: LinearSpec,
}

impl OpCase for LinearCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "linear[{}x{}->{}{}]",
            s.rows,
            s.cin,
            s.cout,
            if s.bias { ",bias" } else { "" }
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        let mut v = vec![
            Input::diff(HostTensor::randn(&[s.rows, s.cin], 1.0, rng)),
            Input::diff(HostTensor::randn(
                &[s.cin, s.cout],
                1.0 / (s.cin as f64).sqrt(),
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
        let g = GemmSpec::new(s.rows, s.cout, s.cin);
        let bias = s.bias.then(|| &i[2].data[..]);
        vec![HostTensor::new(
            &[s.rows, s.cout],
            gemm_ref(&g, &i[0].data, &i[1].data, bias, None),
        )]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let dx = gemm_ref(
            &GemmSpec {
                trans_b: true,
                ..GemmSpec::new(s.rows, s.cin, s.cout)
            },
            &dy[0].data,
            &i[1].data,
            None,
            None,
        );
        let dw = gemm_ref(
            &GemmSpec {
                trans_a: true,
                ..GemmSpec::new(s.cin, s.cout, s.rows)
            },
            &i[0].data,
            &dy[0].data,
            None,
            None,
        );
        let mut out = vec![
            Some(HostTensor::new(&[s.rows, s.cin], dx)),
            Some(HostTensor::new(&[s.cin, s.cout], dw)),
        ];
        if s.bias {
            let mut db = vec![0.0; s.cout];
            for (j, v) in dy[0].data.iter().enumerate() {
                db[j % s.cout] += v;
            }
            out.push(Some(HostTensor::new(&[s.cout], db)));
        }
        out
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
        let y = gpu.zeros(&[s.rows, s.cout])?;
        run_gpu(gpu, |r| linear_forward(r, s, &x, &w, b.as_ref(), &y))?;
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
        let dx = gpu.zeros(&[s.rows, s.cin])?;
        let dw = gpu.zeros(&[s.cin, s.cout])?;
        let db = gpu.zeros(&[s.cout])?;
        let scratch = gpu.zeros(&[s.scratch_len().max(1)])?;
        run_gpu(gpu, |r| {
            linear_backward_data(r, s, &g, &w, &dx)?;
            linear_backward_weight(r, s, &x, &g, &dw, s.bias.then_some(&db), Some(&scratch))
        })?;
        let mut out = vec![Some(gpu.read(&dx)?), Some(gpu.read(&dw)?)];
        if s.bias {
            out.push(Some(gpu.read(&db)?));
        }
        Ok(out)
    }
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&GEMM];

/// Harness cases for this module: every transpose combination, accumulate and bias on
/// ragged sizes, each tile shape, and linear layers (one with rows long enough for the
/// split-K weight gradient).
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for (k, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        v.push(Box::new(GemmCase {
            spec: GemmSpec {
                trans_a: ta,
                trans_b: tb,
                accumulate: k % 2 == 1,
                ..GemmSpec::new(67, 70, 37)
            },
            bias: k >= 2,
        }));
    }
    // Thin outputs (256 x 16 and 128 x 32 tiles), ragged everywhere.
    v.push(Box::new(GemmCase {
        spec: GemmSpec::new(263, 13, 19),
        bias: true,
    }));
    v.push(Box::new(GemmCase {
        spec: GemmSpec {
            trans_a: true,
            ..GemmSpec::new(130, 29, 5)
        },
        bias: false,
    }));
    v.push(Box::new(GemmCase {
        spec: GemmSpec::new(1, 3, 1),
        bias: true,
    }));
    v.push(Box::new(LinearCase {
        spec: LinearSpec {
            rows: 3,
            cin: 21,
            cout: 10,
            bias: true,
        },
    }));
    v.push(Box::new(LinearCase {
        spec: LinearSpec {
            rows: 1100,
            cin: 6,
            cout: 9,
            bias: true,
        },
    }));
    v.push(Box::new(LinearCase {
        spec: LinearSpec {
            rows: 45,
            cin: 17,
            cout: 70,
            bias: false,
        },
    }));
    v
}
