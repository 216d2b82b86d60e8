//! Harness cases of squeeze-excitation: odd sizes, batch 1, a hidden width of 1, and a
//! long (split) pooling; f16 activations (x, y, dy, dx) with f32 parameters and
//! per-channel values.

use super::{
    backward, backward_ref, forward, forward_ref, SeGrads, SeSaved, SeSpec, SeTemp, SeWeights,
};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy_as, HostTensor, Input, OpCase, Prepared, Tolerance,
};
use crate::util::Rng;

/// Harness case: one squeeze-excitation block (gradients to x and all four parameters).
pub struct SeCase {
    /// The block.
    pub spec: SeSpec,
    /// Storage type of x, y, dy, dx; the parameters, their gradients and the small
    /// per-channel tensors (pooled, gate, ...) are f32 either way.
    pub dtype: Dtype,
}

impl OpCase for SeCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "squeeze_excite[{}x{}x{}x{} hidden {}]{}",
            s.n,
            s.h,
            s.w,
            s.c,
            s.hidden,
            dtype_suffix(self.dtype)
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        vec![
            Input::diff(HostTensor::randn(&[s.n, s.h, s.w, s.c], 1.0, rng)),
            Input::diff(HostTensor::randn(
                &[s.c, s.hidden],
                1.0 / (s.c as f64).sqrt(),
                rng,
            )),
            Input::diff(HostTensor::randn(&[s.hidden], 0.5, rng)),
            Input::diff(HostTensor::randn(
                &[s.hidden, s.c],
                1.0 / (s.hidden as f64).sqrt(),
                rng,
            )),
            Input::diff(HostTensor::randn(&[s.c], 0.5, rng)),
        ]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let s = &self.spec;
        let (y, ..) = forward_ref(
            s, &i[0].data, &i[1].data, &i[2].data, &i[3].data, &i[4].data,
        );
        vec![HostTensor::new(&i[0].shape, y)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let (dx, dw1, db1, dw2, db2) = backward_ref(
            s,
            &i[0].data,
            &i[1].data,
            &i[2].data,
            &i[3].data,
            &i[4].data,
            &dy[0].data,
        );
        [dx, dw1, db1, dw2, db2]
            .into_iter()
            .zip(i)
            .map(|(d, t)| Some(HostTensor::new(&t.shape, d)))
            .collect()
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let s = &self.spec;
        // x (input 0) and its gradient in the activation type, the parameters f32.
        let dtype = |k: usize| if k == 0 { self.dtype } else { Dtype::F32 };
        Ok(Box::new(SeRun {
            s: *s,
            t: i.iter()
                .enumerate()
                .map(|(k, h)| h.upload_as(gpu, dtype(k)))
                .collect::<Result<_>>()?,
            y: gpu.zeros_of(&i[0].shape, self.dtype)?,
            g: upload_dy_as(gpu, dy, 0, &i[0].shape, self.dtype)?,
            saved: SeSaved::new(gpu, s)?,
            tmp: SeTemp::new(gpu, s)?,
            scratch: gpu.zeros(&[s.scratch_len().max(1)])?,
            grads: i
                .iter()
                .enumerate()
                .map(|(k, h)| gpu.zeros_of(&h.shape, dtype(k)))
                .collect::<Result<_>>()?,
        }))
    }
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 2e-5,
            // Central differences of a loss summed over ~10^4 outputs lose ~6 digits to
            // rounding on the small squeeze-weight gradients.
            gradcheck: 2e-5,
        }
        .for_dtype(self.dtype)
    }
}
/// The tensors of one [`SeCase`] run: the inputs (x, w1, b1, w2, b2) and their
/// gradients in the same order.
struct SeRun {
    s: SeSpec,
    t: Vec<Tensor>,
    y: Tensor,
    g: Tensor,
    saved: SeSaved,
    tmp: SeTemp,
    scratch: Tensor,
    grads: Vec<Tensor>,
}

impl SeRun {
    fn weights(&self) -> SeWeights<'_> {
        SeWeights {
            w1: &self.t[1],
            b1: &self.t[2],
            w2: &self.t[3],
            b2: &self.t[4],
        }
    }
}

impl Prepared for SeRun {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        let p = self.weights();
        forward(
            r,
            &self.s,
            &self.t[0],
            &p,
            &self.y,
            &self.saved,
            Some(&self.scratch),
        )
    }
    fn record_backward(&self, r: &mut Recorder) -> Result<()> {
        let gr = SeGrads {
            dw1: &self.grads[1],
            db1: &self.grads[2],
            dw2: &self.grads[3],
            db2: &self.grads[4],
        };
        backward(
            r,
            &self.s,
            &self.t[0],
            &self.weights(),
            &self.saved,
            &self.g,
            &self.grads[0],
            &gr,
            &self.tmp,
            Some(&self.scratch),
        )
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        self.grads.iter().map(|d| Ok(Some(gpu.read(d)?))).collect()
    }
}

/// Harness cases: odd sizes, batch 1, a hidden width of 1, and a long pooling (split),
/// each with f32 and with f16 activations.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for (n, h, w, c, hidden) in [(2, 5, 3, 7, 3), (1, 47, 45, 6, 1)] {
            v.push(Box::new(SeCase {
                spec: SeSpec { n, h, w, c, hidden },
                dtype,
            }));
        }
    }
    v
}
