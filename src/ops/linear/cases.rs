//! Harness cases of the linear layer: a bias, no bias, and rows long enough for the split-K
//! weight gradient; f16 activations (x, y, dy, dx) as in the 1x1 convolutions of a
//! mixed-precision model.

use super::{backward_data, backward_ref, backward_weight, forward, forward_ref, LinearSpec};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy_as, HostTensor, Input, OpCase, Prepared, Tolerance,
};
use crate::util::Rng;

/// Harness case: a linear layer (forward, data and weight gradients through the
/// launchers the model uses).
pub struct LinearCase {
    /// The layer.
    pub spec: LinearSpec,
    /// Storage type of x, y, dy, dx (f16: the GEMM's and the weight gradient's
    /// f16-storage variants); W, b and their gradients are f32 either way.
    pub dtype: Dtype,
}

impl LinearCase {
    /// The f32 case of `spec`.
    pub fn new(spec: LinearSpec) -> Self {
        Self {
            spec,
            dtype: Dtype::F32,
        }
    }
}

impl OpCase for LinearCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "linear[{}x{}->{}{}]{}",
            s.rows,
            s.cin,
            s.cout,
            if s.bias { ",bias" } else { "" },
            dtype_suffix(self.dtype)
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
        let bias = s.bias.then(|| &i[2].data[..]);
        vec![HostTensor::new(
            &[s.rows, s.cout],
            forward_ref(s, &i[0].data, &i[1].data, bias),
        )]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let (dx, dw, db) = backward_ref(s, &i[0].data, &i[1].data, &dy[0].data);
        let mut out = vec![
            Some(HostTensor::new(&[s.rows, s.cin], dx)),
            Some(HostTensor::new(&[s.cin, s.cout], dw)),
        ];
        if s.bias {
            out.push(Some(HostTensor::new(&[s.cout], db)));
        }
        out
    }
    fn output_shapes(&self, _: &[HostTensor]) -> Vec<Vec<usize>> {
        vec![vec![self.spec.rows, self.spec.cout]]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let s = self.spec;
        let b = if s.bias {
            Some(i[2].upload(gpu)?)
        } else {
            None
        };
        Ok(Box::new(LinearRun {
            s,
            x: i[0].upload_as(gpu, self.dtype)?,
            w: i[1].upload(gpu)?,
            b,
            y: gpu.zeros_of(&[s.rows, s.cout], self.dtype)?,
            g: upload_dy_as(gpu, dy, 0, &[s.rows, s.cout], self.dtype)?,
            dx: gpu.zeros_of(&[s.rows, s.cin], self.dtype)?,
            dw: gpu.zeros(&[s.cin, s.cout])?,
            db: gpu.zeros(&[s.cout])?,
            scratch: gpu.zeros(&[s.scratch_len().max(1)])?,
        }))
    }
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance::default().for_dtype(self.dtype)
    }
}

/// The tensors of one [`LinearCase`] run.
struct LinearRun {
    s: LinearSpec,
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    y: Tensor,
    g: Tensor,
    dx: Tensor,
    dw: Tensor,
    db: Tensor,
    scratch: Tensor,
}

impl Prepared for LinearRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        forward(r, &self.s, &self.x, &self.w, self.b.as_ref(), &self.y)
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        let s = &self.s;
        backward_data(r, s, &self.g, &self.w, &self.dx)?;
        backward_weight(
            r,
            s,
            &self.x,
            &self.g,
            &self.dw,
            s.bias.then_some(&self.db),
            Some(&self.scratch),
        )
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        let mut out = vec![Some(gpu.read(&self.dx)?), Some(gpu.read(&self.dw)?)];
        if self.s.bias {
            out.push(Some(gpu.read(&self.db)?));
        }
        Ok(out)
    }
}

/// Harness cases for this module: f32 with a bias, rows long enough for the split weight
/// gradient, no bias; and f16 activations on a 1x1-convolution shape (split weight
/// gradient, ragged channels).
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let spec = |rows, cin, cout, bias| LinearSpec {
        rows,
        cin,
        cout,
        bias,
    };
    let f32s = [
        spec(3, 21, 10, true),
        spec(1100, 6, 9, true),
        spec(45, 17, 70, false),
    ]
    .map(LinearCase::new);
    let f16s = [spec(1100, 6, 9, true), spec(45, 17, 70, false)].map(|spec| LinearCase {
        spec,
        dtype: Dtype::F16,
    });
    f32s.into_iter()
        .chain(f16s)
        .map(|c| Box::new(c) as Box<dyn OpCase>)
        .collect()
}
