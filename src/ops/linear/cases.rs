//! Harness cases of the linear layer: a bias, no bias, and rows long enough for the split-K
//! weight gradient.

use super::{backward_data, backward_ref, backward_weight, forward, forward_ref, LinearSpec};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::harness::{run_gpu, HostTensor, Input, OpCase};
use crate::util::Rng;

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
        run_gpu(gpu, |r| forward(r, s, &x, &w, b.as_ref(), &y))?;
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
            backward_data(r, s, &g, &w, &dx)?;
            backward_weight(r, s, &x, &g, &dw, s.bias.then_some(&db), Some(&scratch))
        })?;
        let mut out = vec![Some(gpu.read(&dx)?), Some(gpu.read(&dw)?)];
        if s.bias {
            out.push(Some(gpu.read(&db)?));
        }
        Ok(out)
    }
}

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
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
