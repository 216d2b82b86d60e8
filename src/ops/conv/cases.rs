//! Harness cases of the grouped convolution: depthwise, channel multipliers, G8/G16,
//! Cout/G != Cin/G, dense, 1x1, groups wider than a tile, split weight gradients; and
//! their f16-storage variants.

use super::{
    backward_data, backward_ref, backward_weight, forward, forward_ref, ConvSpec, Padding,
};
use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::ops::harness::{
    dtype_suffix, upload_dy_as, HostTensor, Input, OpCase, Prepared, Tolerance,
};
use crate::util::Rng;

/// Harness case: one convolution (forward, data and weight gradients).
pub struct ConvCase {
    /// The convolution.
    pub spec: ConvSpec,
    /// Storage type of the activations x, y, dy, dx (f16: the kernels' f16-storage
    /// variants); the weights, the bias and their gradients are f32 either way.
    pub dtype: Dtype,
}

impl ConvCase {
    /// The f32 case of `spec`.
    pub fn new(spec: ConvSpec) -> Self {
        Self {
            spec,
            dtype: Dtype::F32,
        }
    }

    /// The case of `spec` with f16 activations.
    pub fn f16(spec: ConvSpec) -> Self {
        Self {
            spec,
            dtype: Dtype::F16,
        }
    }
}

impl OpCase for ConvCase {
    fn name(&self) -> String {
        let s = &self.spec;
        let [f, b, w] = s.kernels();
        format!(
            "conv[{}{} {}x{}x{}x{} k{} s{} g{} {}->{}{}; {}/{}/{}]{}",
            match s.padding {
                Padding::Symmetric => "",
                Padding::TfSame => "tf-",
            },
            if s.gi() == 1 && s.go() == 1 {
                "dw"
            } else {
                "grp"
            },
            s.n,
            s.h,
            s.w,
            s.cin,
            s.k,
            s.stride,
            s.groups,
            s.cin,
            s.cout,
            if s.bias { " bias" } else { "" },
            f.name(),
            b.name(),
            w.name(),
            dtype_suffix(self.dtype)
        )
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        let s = &self.spec;
        let fan_in = (s.k * s.k * s.gi()) as f64;
        let mut v = vec![
            Input::diff(HostTensor::randn(&s.in_shape(), 1.0, rng)),
            Input::diff(HostTensor::randn(
                &s.weight_shape(),
                1.0 / fan_in.sqrt(),
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
            &s.out_shape(),
            forward_ref(s, &i[0].data, &i[1].data, bias),
        )]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let s = &self.spec;
        let (dx, dw, db) = backward_ref(s, &i[0].data, &i[1].data, &dy[0].data);
        let mut v = vec![
            Some(HostTensor::new(&s.in_shape(), dx)),
            Some(HostTensor::new(&s.weight_shape(), dw)),
        ];
        if s.bias {
            v.push(Some(HostTensor::new(&[s.cout], db)));
        }
        v
    }
    fn output_shapes(&self, _: &[HostTensor]) -> Vec<Vec<usize>> {
        vec![self.spec.out_shape()]
    }
    fn prepare(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>> {
        let s = self.spec;
        let act = self.dtype;
        let b = if s.bias {
            Some(i[2].upload(gpu)?)
        } else {
            None
        };
        // Poison the outputs: every launcher must overwrite them.
        let nan = |shape: &[usize], dtype| {
            gpu.upload_as(&vec![f32::NAN; shape.iter().product()], shape, dtype)
        };
        Ok(Box::new(ConvRun {
            s,
            x: i[0].upload_as(gpu, act)?,
            w: i[1].upload(gpu)?,
            b,
            y: nan(&s.out_shape(), act)?,
            g: upload_dy_as(gpu, dy, 0, &s.out_shape(), act)?,
            dx: nan(&s.in_shape(), act)?,
            dw: nan(&s.weight_shape(), Dtype::F32)?,
            db: nan(&[s.cout], Dtype::F32)?,
            scratch: nan(&[s.scratch_len().max(1)], Dtype::F32)?,
        }))
    }
    fn activations(&self) -> Dtype {
        self.dtype
    }
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            forward: 2e-6,
            backward: 5e-6,
            gradcheck: 1e-6,
        }
        .for_dtype(self.dtype)
    }
}

/// The tensors of one [`ConvCase`] run.
struct ConvRun {
    s: ConvSpec,
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

impl Prepared for ConvRun {
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
        let mut v = vec![Some(gpu.read(&self.dx)?), Some(gpu.read(&self.dw)?)];
        if self.s.bias {
            v.push(Some(gpu.read(&self.db)?));
        }
        Ok(v)
    }
}

#[allow(clippy::too_many_arguments)]
fn spec(
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
) -> ConvSpec {
    ConvSpec {
        n,
        h,
        w,
        cin,
        cout,
        k,
        stride,
        groups,
        bias,
        padding: Padding::Symmetric,
    }
}

/// The shapes of the harness cases: depthwise, channel multiplier, G8/G16, Cout/G !=
/// Cin/G, dense (k 1, 3, 5; stride 1 and 2 on odd sizes; batch 1; channel counts that are
/// not multiples of 4), groups wider than a tile, and split weight gradients.
pub fn case_specs() -> Vec<ConvSpec> {
    vec![
        // Depthwise.
        spec(2, 7, 9, 6, 6, 3, 1, 6, true),
        spec(1, 9, 11, 5, 5, 5, 2, 5, false),
        spec(2, 8, 7, 3, 3, 3, 2, 3, true),
        spec(1, 5, 6, 7, 7, 7, 1, 7, false),
        // Channel multiplier 2 and Cout/G < Cin/G with few channels (direct kernels).
        spec(1, 6, 5, 4, 8, 3, 1, 4, false),
        spec(2, 5, 7, 6, 3, 3, 2, 3, true),
        // G8 and G16 (implicit GEMM, packed groups).
        spec(2, 7, 6, 16, 16, 3, 1, 2, false),
        spec(1, 9, 7, 48, 48, 3, 2, 3, true),
        spec(1, 6, 5, 32, 32, 5, 1, 2, true),
        // Cout/G != Cin/G: 4 -> 6 per group (unaligned columns).
        spec(2, 7, 5, 12, 18, 3, 2, 3, false),
        // Dense: ragged K, the stem's 3 channels, 1x1 (GEMM and stride 2).
        spec(1, 6, 7, 5, 7, 3, 1, 1, true),
        spec(2, 9, 9, 3, 10, 3, 2, 1, false),
        spec(2, 3, 5, 13, 70, 1, 1, 1, true),
        spec(1, 7, 7, 8, 6, 1, 2, 1, false),
        // Groups wider than a 64-column tile (forward, and backward data).
        spec(1, 4, 3, 8, 72, 3, 1, 1, false),
        spec(1, 3, 4, 66, 4, 3, 1, 1, true),
        // Long pixel reductions: split weight gradients (direct and implicit GEMM).
        spec(2, 37, 35, 5, 5, 3, 1, 5, true),
        spec(2, 21, 19, 32, 32, 3, 1, 2, false),
        // TensorFlow "SAME" padding (one zero less above / left at stride 2 on even
        // sizes): depthwise k3 and k5, G16 and G8, the dense stem, even and odd sizes,
        // stride 1 and 2, and split weight gradients.
        tf(spec(2, 8, 7, 6, 6, 3, 2, 6, true)),
        tf(spec(1, 10, 8, 5, 5, 5, 2, 5, false)),
        tf(spec(1, 9, 10, 5, 5, 5, 2, 5, true)),
        tf(spec(1, 6, 8, 4, 4, 3, 1, 4, false)),
        tf(spec(1, 8, 10, 32, 32, 3, 2, 2, true)),
        tf(spec(1, 8, 9, 16, 16, 5, 2, 2, false)),
        tf(spec(2, 10, 8, 3, 10, 3, 2, 1, false)),
        tf(spec(2, 38, 36, 5, 5, 3, 2, 5, true)),
        tf(spec(2, 40, 38, 32, 32, 3, 2, 2, false)),
    ]
}

fn tf(s: ConvSpec) -> ConvSpec {
    ConvSpec {
        padding: Padding::TfSame,
        ..s
    }
}

/// The shapes of the f16-storage cases: one per kernel body and direction with the
/// model's features, kept small (the f32 cases above cover the edge shapes): depthwise
/// k3 and k5 (direct), G16-like packed groups (implicit GEMM), a dense k3, stride 2 and
/// TF "SAME" padding, split weight gradients of both bodies, and a 1x1 (the GEMM).
pub fn f16_case_specs() -> Vec<ConvSpec> {
    vec![
        // Depthwise k3 with bias, stride 1; k5 stride 2 (direct bodies).
        spec(2, 7, 9, 6, 6, 3, 1, 6, true),
        spec(1, 9, 11, 5, 5, 5, 2, 5, false),
        // Packed groups of 16 channels, stride 2 with bias (implicit GEMM).
        spec(1, 9, 7, 48, 48, 3, 2, 3, true),
        // Dense k3, the stem's 3 input channels, stride 2.
        spec(2, 9, 9, 3, 10, 3, 2, 1, false),
        // TF "SAME" padding: depthwise and G16 at stride 2 on even sizes.
        tf(spec(2, 8, 7, 6, 6, 3, 2, 6, true)),
        tf(spec(1, 8, 10, 32, 32, 3, 2, 2, true)),
        // Split weight gradients (direct and implicit GEMM; 528 pixels: two splits).
        spec(2, 37, 35, 5, 5, 3, 1, 5, true),
        spec(1, 24, 22, 8, 8, 3, 1, 2, false),
        // 1x1 dense with bias: the GEMM forward and data gradient.
        spec(2, 3, 5, 13, 70, 1, 1, 1, true),
    ]
}

/// Harness cases for this module: every shape in f32, and the f16 shapes.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let f32s = case_specs().into_iter().map(ConvCase::new);
    let f16s = f16_case_specs().into_iter().map(ConvCase::f16);
    f32s.chain(f16s)
        .map(|c| Box::new(c) as Box<dyn OpCase>)
        .collect()
}
