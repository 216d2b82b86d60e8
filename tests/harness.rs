//! The harness itself: it must catch wrong kernels and wrong references.
mod common;

use effnet::gpu::Gpu;
use effnet::ops::act::{Act, ActCase};
use effnet::ops::harness::Prepared;
use effnet::ops::{check, HostTensor, Input, OpCase};
use effnet::util::Rng;

/// Wraps a case and perturbs one of its results.
struct Perturbed {
    inner: ActCase,
    gpu_backward: bool,
    cpu_backward: bool,
}

impl OpCase for Perturbed {
    fn name(&self) -> String {
        format!("perturbed-{}", self.inner.name())
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        self.inner.inputs(rng)
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        self.inner.cpu_forward(i)
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let mut g = self.inner.cpu_backward(i, dy);
        if self.cpu_backward {
            // A classic bug: SiLU's derivative taken as sigmoid(x) (drops x*s*(1-s)).
            let d = i[0]
                .data
                .iter()
                .zip(&dy[0].data)
                .map(|(&x, &g)| g * effnet::ops::act::sigmoid(x))
                .collect();
            g[0] = Some(HostTensor::new(&i[0].shape, d));
        }
        g
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> effnet::Result<Box<dyn Prepared + '_>> {
        self.inner.prepare(gpu, i, dy)
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> effnet::Result<Vec<Option<Vec<f32>>>> {
        let mut g = self.inner.gpu_backward(gpu, i, dy)?;
        if self.gpu_backward {
            // One element off by 1%.
            if let Some(v) = g[0].as_mut() {
                v[3] *= 1.01;
            }
        }
        Ok(g)
    }
}

fn silu() -> ActCase {
    ActCase {
        act: Act::Silu,
        shape: vec![2, 4, 4, 3],
        dtype: effnet::gpu::Dtype::F32,
    }
}

#[test]
fn correct_kernel_passes() {
    let r = check(common::gpu(), &silu(), 1).unwrap();
    assert!(r.iter().all(|c| c.pass), "{r:?}");
}

#[test]
fn catches_perturbed_gpu_backward() {
    let case = Perturbed {
        inner: silu(),
        gpu_backward: true,
        cpu_backward: false,
    };
    let r = check(common::gpu(), &case, 1).unwrap();
    let bwd = r.iter().find(|c| c.direction == "backward").unwrap();
    assert!(
        !bwd.pass,
        "a 1% error in one gradient element went unnoticed: {bwd:?}"
    );
    assert!(r.iter().find(|c| c.direction == "forward").unwrap().pass);
}

#[test]
fn catches_wrong_reference_gradient() {
    let case = Perturbed {
        inner: silu(),
        gpu_backward: false,
        cpu_backward: true,
    };
    let r = check(common::gpu(), &case, 1).unwrap();
    let fd = r.iter().find(|c| c.direction == "gradcheck").unwrap();
    assert!(
        !fd.pass,
        "finite differences missed a wrong reference: {fd:?}"
    );
}

#[test]
fn normalized_error_basics() {
    use effnet::ops::harness::normalized_error;
    assert_eq!(normalized_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
    assert!((normalized_error(&[1.1, 0.0], &[1.0, 0.0]) - 0.1).abs() < 1e-12);
    assert!(normalized_error(&[f64::NAN], &[1.0]).is_infinite());
    assert!(normalized_error(&[1.0], &[1.0, 2.0]).is_infinite());
}
