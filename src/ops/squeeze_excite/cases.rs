//! Harness cases of squeeze-excitation: odd sizes, batch 1, a hidden width of 1, and a
//! long (split) pooling.

use super::{
    backward, backward_ref, forward, forward_ref, SeGrads, SeSaved, SeSpec, SeTemp, SeWeights,
};
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
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
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let s = &self.spec;
        let t: Vec<Tensor> = i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?;
        let y = gpu.zeros(&i[0].shape)?;
        let saved = SeSaved::new(gpu, s)?;
        let scratch = gpu.zeros(&[s.scratch_len().max(1)])?;
        let p = SeWeights {
            w1: &t[1],
            b1: &t[2],
            w2: &t[3],
            b2: &t[4],
        };
        run_gpu(gpu, |r| {
            forward(r, s, &t[0], &p, &y, &saved, Some(&scratch))
        })?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let s = &self.spec;
        let t: Vec<Tensor> = i.iter().map(|h| h.upload(gpu)).collect::<Result<_>>()?;
        let g = dy[0].upload(gpu)?;
        let y = gpu.zeros(&i[0].shape)?;
        let saved = SeSaved::new(gpu, s)?;
        let tmp = SeTemp::new(gpu, s)?;
        let scratch = gpu.zeros(&[s.scratch_len().max(1)])?;
        let grads: Vec<Tensor> = i
            .iter()
            .map(|h| gpu.zeros(&h.shape))
            .collect::<Result<_>>()?;
        let p = SeWeights {
            w1: &t[1],
            b1: &t[2],
            w2: &t[3],
            b2: &t[4],
        };
        let gr = SeGrads {
            dw1: &grads[1],
            db1: &grads[2],
            dw2: &grads[3],
            db2: &grads[4],
        };
        run_gpu(gpu, |r| {
            forward(r, s, &t[0], &p, &y, &saved, Some(&scratch))?;
            backward(
                r,
                s,
                &t[0],
                &p,
                &saved,
                &g,
                &grads[0],
                &gr,
                &tmp,
                Some(&scratch),
            )
        })?;
        grads.iter().map(|d| Ok(Some(gpu.read(d)?))).collect()
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
