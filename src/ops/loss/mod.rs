//! Softmax cross-entropy with label smoothing (forward and gradient fused in one pass).

use super::harness::{run_gpu, HostTensor, Input, OpCase, Tolerance};
use crate::error::{Error, Result};
use crate::gpu::{Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

static XENT: KernelDef = KernelDef {
    shader: "loss/softmax_xent.wgsl",
    entry: "softmax_xent",
    bindings: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
    overrides: &[],
};

/// Record per-row losses and logit gradients. `logits` [N, K], `labels` [N] (u32, each
/// < K: the caller validates labels on the host), `dloss` [N] (1/N for a mean loss),
/// `loss` [N], `dlogits` [N, K]; `eps` is the label smoothing.
pub fn softmax_xent(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    dloss: &Tensor,
    loss: &Tensor,
    dlogits: &Tensor,
    eps: f32,
) -> Result<()> {
    let sh = logits.shape();
    if sh.len() != 2
        || labels.len() != sh[0]
        || loss.len() != sh[0]
        || dloss.len() != sh[0]
        || dlogits.len() != logits.len()
    {
        return Err(Error::Shape(format!(
            "softmax cross-entropy of logits {:?} with labels {:?}",
            sh,
            labels.shape()
        )));
    }
    rec.dispatch(
        &XENT,
        &[],
        &[sh[0] as u32, sh[1] as u32, eps.to_bits()],
        &[logits, labels, dloss, loss, dlogits],
        Grid::Linear(sh[0] as u32),
    )
}

/// f64 reference: per-row loss and dlogits for per-row loss gradients `dloss`.
pub fn softmax_xent_ref(
    logits: &[f64],
    labels: &[f64],
    dloss: &[f64],
    k: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = labels.len();
    let mut loss = vec![0.0; n];
    let mut d = vec![0.0; n * k];
    for r in 0..n {
        let z = &logits[r * k..(r + 1) * k];
        let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        let lab = labels[r] as usize;
        for c in 0..k {
            let q = eps / k as f64 + if c == lab { 1.0 - eps } else { 0.0 };
            loss[r] -= q * (z[c] - lse);
            d[r * k + c] = dloss[r] * ((z[c] - lse).exp() - q);
        }
    }
    (loss, d)
}

/// Harness case for [`softmax_xent`].
pub struct XentCase {
    /// Rows.
    pub n: usize,
    /// Classes.
    pub k: usize,
    /// Label smoothing.
    pub eps: f64,
}

impl OpCase for XentCase {
    fn name(&self) -> String {
        format!("softmax_xent[{}x{}]/eps{}", self.n, self.k, self.eps)
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let labels = (0..self.n).map(|_| rng.below(self.k) as f64).collect();
        vec![
            Input::diff(HostTensor::randn(&[self.n, self.k], 3.0, rng)),
            Input::constant(HostTensor::new(&[self.n], labels)),
        ]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let ones = vec![1.0; self.n];
        let (l, _) = softmax_xent_ref(&i[0].data, &i[1].data, &ones, self.k, self.eps);
        vec![HostTensor::new(&[self.n], l)]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let (_, d) = softmax_xent_ref(&i[0].data, &i[1].data, &dy[0].data, self.k, self.eps);
        vec![Some(HostTensor::new(&[self.n, self.k], d)), None]
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let ones = HostTensor::new(&[self.n], vec![1.0; self.n]);
        let (loss, _) = self.run(gpu, i, &ones)?;
        Ok(vec![loss])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let (_, d) = self.run(gpu, i, &dy[0])?;
        Ok(vec![Some(d), None])
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 1e-5,
            backward: 2e-5,
            gradcheck: 1e-6,
        }
    }
}

impl XentCase {
    fn run(&self, gpu: &Gpu, i: &[HostTensor], dloss: &HostTensor) -> Result<(Vec<f32>, Vec<f32>)> {
        let z = i[0].upload(gpu)?;
        let lab = i[1].upload_u32(gpu)?;
        let dl = dloss.upload(gpu)?;
        let loss = gpu.zeros(&[self.n])?;
        let d = gpu.zeros(&[self.n, self.k])?;
        run_gpu(gpu, |r| {
            softmax_xent(r, &z, &lab, &dl, &loss, &d, self.eps as f32)
        })?;
        Ok((gpu.read(&loss)?, gpu.read(&d)?))
    }
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&XENT];

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    vec![
        Box::new(XentCase {
            n: 5,
            k: 10,
            eps: 0.1,
        }),
        Box::new(XentCase {
            n: 3,
            k: 1000,
            eps: 0.0,
        }),
    ]
}
