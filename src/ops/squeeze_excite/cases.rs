//! Harness cases of squeeze-excitation: odd sizes, batch 1, a hidden width of 1, and a
//! long (split) pooling.

use super::{
    backward, backward_ref, forward, forward_ref, SeGrads, SeSaved, SeSpec, SeTemp, SeWeights,
};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::harness::{upload_dy, HostTensor, Input, OpCase, Prepared, Tolerance};
use crate::util::Rng;

/// Harness case: one squeeze-excitation block (gradients to x and all four parameters).
pub struct SeCase {
    /// The block.
    pub spec: SeSpec,
}

impl OpCase for SeCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "squeeze_excite[{}x{}x{}x{} hidden {}]",
            s.n, s.h, s.w, s.c, s.hidden
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
        Ok(Box::new(SeRun {
            s: *s,
            t: i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?,
            y: gpu.zeros(&i[0].shape)?,
            g: upload_dy(gpu, dy, 0, &i[0].shape)?,
            saved: SeSaved::new(gpu, s)?,
            tmp: SeTemp::new(gpu, s)?,
            scratch: gpu.zeros(&[s.scratch_len().max(1)])?,
            grads: i
                .iter()
                .map(|h| gpu.zeros(&h.shape))
                .collect::<Result<_>>()?,
        }))
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 2e-5,
            // Central differences of a loss summed over ~10^4 outputs lose ~6 digits to
            // rounding on the small squeeze-weight gradients.
            gradcheck: 2e-5,
        }
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

/// Harness cases: odd sizes, batch 1, a hidden width of 1, and a long pooling (split).
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(SeCase {
            spec: SeSpec {
                n: 2,
                h: 5,
                w: 3,
                c: 7,
                hidden: 3,
            },
        }),
        Box::new(SeCase {
            spec: SeSpec {
                n: 1,
                h: 47,
                w: 45,
                c: 6,
                hidden: 1,
            },
        }),
    ]
}
