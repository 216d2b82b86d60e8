//! Harness cases of global average pooling: odd sizes, and a long reduction on one sample
//! (the split path).

use super::{backward, forward, forward_ref, GapSpec};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use crate::util::Rng;

/// Harness case for global average pooling.
pub struct GapCase {
    /// Shape.
    pub spec: GapSpec,
}

impl OpCase for GapCase {
    fn name(&self) -> String {
        let s = &self.spec;
        format!("gap[{}x{}x{}x{}]", s.n, s.h, s.w, s.c)
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        vec![Input::diff(HostTensor::randn(
            &[s.n, s.h, s.w, s.c],
            1.0,
            rng,
        ))]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let s = &self.spec;
        vec![HostTensor::new(&[s.n, s.c], forward_ref(s, &i[0].data))]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let hw = s.h * s.w;
        let dx = (0..i[0].data.len())
            .map(|k| dy[0].data[(k / (hw * s.c)) * s.c + k % s.c] / hw as f64)
            .collect();
        vec![Some(HostTensor::new(&i[0].shape, dx))]
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let s = &self.spec;
        let x = i[0].upload(gpu)?;
        let y = gpu.zeros(&[s.n, s.c])?;
        let scratch = gpu.zeros(&[s.scratch_len().max(1)])?;
        run_gpu(gpu, |r| forward(r, s, &x, &y, Some(&scratch)))?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let s = &self.spec;
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&i[0].shape)?;
        run_gpu(gpu, |r| backward(r, s, &g, &dx))?;
        Ok(vec![Some(gpu.read(&dx)?)])
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 1e-6,
            gradcheck: 1e-6,
        }
    }
}

/// Harness cases: odd sizes, and a long reduction on one sample (the split path).
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(GapCase {
            spec: GapSpec {
                n: 3,
                h: 5,
                w: 7,
                c: 19,
            },
        }),
        Box::new(GapCase {
            spec: GapSpec {
                n: 1,
                h: 51,
                w: 49,
                c: 5,
            },
        }),
    ]
}
