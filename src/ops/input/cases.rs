//! Harness cases of the input normalization: random u8 pixels, including odd element
//! counts whose last u32 word is partly padding; an f16 output (mixed precision).

use super::reference;
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{dtype_suffix, HostTensor, Input, OpCase, Prepared, Tolerance};
use crate::util::Rng;

/// u8 NHWC pixels -> normalized f32 (or f16) of the same shape.
pub struct NormalizeCase {
    /// Shape [N, H, W, C].
    pub shape: Vec<usize>,
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
    /// Storage type of the output.
    pub dtype: Dtype,
}

fn bytes(t: &HostTensor) -> Vec<u8> {
    t.data.iter().map(|&v| v as u8).collect()
}

/// Pack u8 values four per little-endian u32 word, zero-padding the last word.
pub fn pack_words(px: &[u8]) -> Vec<u32> {
    px.chunks(4)
        .map(|w| {
            let mut b = [0u8; 4];
            b[..w.len()].copy_from_slice(w);
            u32::from_le_bytes(b)
        })
        .collect()
}

impl OpCase for NormalizeCase {
    fn name(&self) -> String {
        format!(
            "input_normalize{:?}{}",
            self.shape,
            dtype_suffix(self.dtype)
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let n: usize = self.shape.iter().product();
        let v = (0..n).map(|_| rng.below(256) as f64).collect();
        // Data, not a differentiable quantity: the op has no backward.
        vec![Input::constant(HostTensor::new(&self.shape, v))]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        let y = reference::normalize(&bytes(&i[0]), &self.mean, &self.std);
        vec![HostTensor::new(&self.shape, y)]
    }
    fn cpu_backward(&self, _: &[HostTensor], _: &[HostTensor]) -> Vec<Option<HostTensor>> {
        vec![None]
    }
    fn output_shapes(&self, _: &[HostTensor]) -> Vec<Vec<usize>> {
        vec![self.shape.clone()]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        _dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let words = pack_words(&bytes(&i[0]));
        Ok(Box::new(NormalizeRun {
            case: self,
            px: gpu.upload_u32(&words, &[words.len()])?,
            y: gpu.zeros_of(&self.shape, self.dtype)?,
        }))
    }
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance::default().for_dtype(self.dtype)
    }
}

/// The tensors of one [`NormalizeCase`] run.
struct NormalizeRun<'a> {
    case: &'a NormalizeCase,
    px: Tensor,
    y: Tensor,
}

impl Prepared for NormalizeRun<'_> {
    fn record_forward(&self, r: &mut Recorder) -> Result<()> {
        super::normalize(r, &self.px, &self.y, &self.case.mean, &self.case.std)
    }
    fn record_backward(&self, _: &mut Recorder) -> Result<()> {
        // The input is data: nothing upstream to differentiate.
        Ok(())
    }
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(vec![gpu.read(&self.y)?])
    }
    fn gradients(&self, _: &Gpu) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(vec![None])
    }
}

/// Harness cases for this module: RGB with ImageNet-like statistics, and grayscale with an
/// element count that is not a multiple of four; each with an f32 and an f16 output.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        v.push(Box::new(NormalizeCase {
            shape: vec![2, 5, 7, 3],
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            dtype,
        }));
        v.push(Box::new(NormalizeCase {
            shape: vec![3, 3, 3, 1],
            mean: vec![0.286],
            std: vec![0.353],
            dtype,
        }));
    }
    v
}
