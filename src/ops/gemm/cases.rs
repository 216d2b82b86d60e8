//! Harness cases of the GEMM: every transpose combination, accumulate and bias on ragged
//! sizes, and each tile shape; the f16-storage variants (A, C and their gradients f16, B
//! and the bias f32).

use super::{gemm, gemm_ref, GemmSpec};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy_as, HostTensor, Input, OpCase, Prepared, Tolerance,
};
use crate::ops::reduce::{self, Axes};
use crate::util::Rng;

/// Harness case: one GEMM with given transposes, accumulate and bias.
pub struct GemmCase {
    /// The product.
    pub spec: GemmSpec,
    /// With a bias.
    pub bias: bool,
    /// Storage type of A, C and their gradients (f16: the activation-times-weight
    /// variant forward and for dA, the activation-times-activation one for dB; A stored
    /// `[m, k]`, since dA of a transposed A would multiply a weight by an activation).
    /// B, the bias and their gradients are f32 either way.
    pub dtype: Dtype,
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
            "gemm[{}x{}x{}{}{}{}{}]{}",
            s.m,
            s.n,
            s.k,
            if s.trans_a { ",tA" } else { "" },
            if s.trans_b { ",tB" } else { "" },
            if s.accumulate { ",acc" } else { "" },
            if self.bias { ",bias" } else { "" },
            dtype_suffix(self.dtype)
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
    fn output_shapes(&self, _: &[HostTensor]) -> Vec<Vec<usize>> {
        vec![vec![self.spec.m, self.spec.n]]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let s = &self.spec;
        let act = self.dtype;
        let bias = if self.bias {
            Some(i[2].upload(gpu)?)
        } else {
            None
        };
        let c = if s.accumulate {
            i[i.len() - 1].upload_as(gpu, act)?
        } else {
            gpu.zeros_of(&[s.m, s.n], act)?
        };
        let ax = Axes {
            o: 1,
            m: s.m,
            i: s.n,
        };
        Ok(Box::new(GemmRun {
            case: self,
            a: i[0].upload_as(gpu, act)?,
            b: i[1].upload(gpu)?,
            bias,
            c,
            g: upload_dy_as(gpu, dy, 0, &[s.m, s.n], act)?,
            da: gpu.zeros_of(&self.a_shape(), act)?,
            db: gpu.zeros(&self.b_shape())?,
            dbias: gpu.zeros(&[s.n])?,
            scratch: gpu.zeros(&[ax.scratch_len().max(1)])?,
        }))
    }
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance::default().for_dtype(self.dtype)
    }
}

/// The tensors of one [`GemmCase`] run.
struct GemmRun<'a> {
    case: &'a GemmCase,
    a: Tensor,
    b: Tensor,
    bias: Option<Tensor>,
    c: Tensor,
    g: Tensor,
    da: Tensor,
    db: Tensor,
    dbias: Tensor,
    scratch: Tensor,
}

impl Prepared for GemmRun<'_> {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        gemm(
            r,
            &self.case.spec,
            &self.a,
            &self.b,
            self.bias.as_ref(),
            &self.c,
        )
    }
    /// The gradients are themselves GEMMs with other transposes: this exercises the
    /// transpose flags a second time.
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        let s = &self.case.spec;
        let (a, b, g) = (&self.a, &self.b, &self.g);
        // dA: if A is [m, k]: dC . op(B)^T; if A is stored [k, m]: op(B) . dC^T.
        if !s.trans_a {
            let sp = GemmSpec {
                trans_b: !s.trans_b,
                ..GemmSpec::new(s.m, s.k, s.n)
            };
            gemm(r, &sp, g, b, None, &self.da)?;
        } else {
            let sp = GemmSpec {
                trans_a: s.trans_b,
                trans_b: true,
                ..GemmSpec::new(s.k, s.m, s.n)
            };
            gemm(r, &sp, b, g, None, &self.da)?;
        }
        // dB: if B is [k, n]: op(A)^T . dC; if B is stored [n, k]: dC^T . op(A).
        if !s.trans_b {
            let sp = GemmSpec {
                trans_a: !s.trans_a,
                ..GemmSpec::new(s.k, s.n, s.m)
            };
            gemm(r, &sp, a, g, None, &self.db)?;
        } else {
            let sp = GemmSpec {
                trans_a: true,
                trans_b: s.trans_a,
                ..GemmSpec::new(s.n, s.k, s.m)
            };
            gemm(r, &sp, g, a, None, &self.db)?;
        }
        if self.case.bias {
            let ax = Axes {
                o: 1,
                m: s.m,
                i: s.n,
            };
            reduce::sum_axis(r, g, None, &self.dbias, ax, 1.0, Some(&self.scratch))?;
        }
        Ok(())
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.c)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        let mut out = vec![Some(gpu.read(&self.da)?), Some(gpu.read(&self.db)?)];
        if self.case.bias {
            out.push(Some(gpu.read(&self.dbias)?));
        }
        if self.case.spec.accumulate {
            out.push(Some(gpu.read(&self.g)?));
        }
        Ok(out)
    }
}

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
            dtype: Dtype::F32,
        }));
    }
    // Thin outputs (256 x 16 and 128 x 32 tiles), ragged everywhere.
    v.push(Box::new(GemmCase {
        spec: GemmSpec::new(263, 13, 19),
        bias: true,
        dtype: Dtype::F32,
    }));
    v.push(Box::new(GemmCase {
        spec: GemmSpec {
            trans_a: true,
            ..GemmSpec::new(130, 29, 5)
        },
        bias: false,
        dtype: Dtype::F32,
    }));
    v.push(Box::new(GemmCase {
        spec: GemmSpec::new(1, 3, 1),
        bias: true,
        dtype: Dtype::F32,
    }));
    // f16 storage: A [m, k] with B plain (dB = A^T . dC) and transposed (dB = dC^T . A),
    // accumulate into an f16 C, bias, and a thin tile.
    for (spec, bias) in [
        (
            GemmSpec {
                accumulate: true,
                ..GemmSpec::new(67, 70, 37)
            },
            true,
        ),
        (
            GemmSpec {
                trans_b: true,
                ..GemmSpec::new(67, 70, 37)
            },
            false,
        ),
        (GemmSpec::new(263, 13, 19), true),
    ] {
        v.push(Box::new(GemmCase {
            spec,
            bias,
            dtype: Dtype::F16,
        }));
    }
    v
}
