//! The op test harness (in the spirit of ggml's test-backend-ops): for each op, random
//! inputs; the GPU forward and backward compared with an f64 CPU reference by normalised
//! error under a per-op tolerance; and the reference's backward checked against central
//! finite differences of the reference forward. Adding an op is one [`OpCase`] impl.
//!
//! A case's GPU side is [`OpCase::prepare`]: its tensors uploaded once, with recorders of
//! its forward and backward dispatches. The checks record each once; the benchmarks
//! (`crate::bench`) prepare the same cases at model shapes and record them many times,
//! reading each dispatch's FLOPs and bytes from the recorder.

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{Dtype, Gpu, Recorder, Tensor};
use crate::util::Rng;

/// A host tensor in f64 (values are f32-representable where they feed a GPU kernel).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape (row-major, NHWC for activations).
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f64>,
}

impl HostTensor {
    /// A tensor from shape and data.
    pub fn new(shape: &[usize], data: Vec<f64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape/data mismatch"
        );
        Self {
            shape: shape.to_vec(),
            data,
        }
    }

    /// Zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::new(shape, vec![0.0; shape.iter().product()])
    }

    /// Standard normal values (f32-rounded) times `std`.
    pub fn randn(shape: &[usize], std: f64, rng: &mut Rng) -> Self {
        let n = shape.iter().product();
        Self::new(shape, rng.normals_f32(n, std))
    }

    /// Values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// Upload to the GPU as f32.
    pub fn upload(&self, gpu: &Gpu) -> Result<Tensor> {
        gpu.upload(&self.to_f32(), &self.shape)
    }

    /// Upload to the GPU as `dtype` (f16: rounded to nearest).
    pub fn upload_as(&self, gpu: &Gpu, dtype: Dtype) -> Result<Tensor> {
        gpu.upload_as(&self.to_f32(), &self.shape, dtype)
    }

    /// Upload to the GPU as u32 (labels, indices).
    pub fn upload_u32(&self, gpu: &Gpu) -> Result<Tensor> {
        let v: Vec<u32> = self.data.iter().map(|&v| v as u32).collect();
        gpu.upload_u32(&v, &self.shape)
    }
}

/// One op input: its values and whether gradients flow to it.
#[derive(Clone, Debug)]
pub struct Input {
    /// Values.
    pub tensor: HostTensor,
    /// True when the op has a gradient for it (false for labels, masks).
    pub differentiable: bool,
}

impl Input {
    /// A differentiable input.
    pub fn diff(tensor: HostTensor) -> Self {
        Self {
            tensor,
            differentiable: true,
        }
    }

    /// A constant input (no gradient).
    pub fn constant(tensor: HostTensor) -> Self {
        Self {
            tensor,
            differentiable: false,
        }
    }
}

/// Normalised-error tolerances for one op.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tolerance {
    /// GPU forward vs CPU reference.
    pub forward: f64,
    /// GPU backward vs CPU reference backward.
    pub backward: f64,
    /// CPU reference backward vs central finite differences.
    pub gradcheck: f64,
}

impl Tolerance {
    /// The tolerances of an op's f16-storage variant: f16's unit roundoff is
    /// u = 2^-11 = 4.9e-4, and each value an f16 kernel reads or writes is rounded once
    /// (inputs on upload, outputs on store) while every sum runs in f32; 6u = 3e-3 covers
    /// an input and an output rounding with room for the op's conditioning. The
    /// finite-difference check is of the f64 reference, so it keeps `gradcheck`.
    pub fn f16_storage(gradcheck: f64) -> Self {
        Self {
            forward: 3e-3,
            backward: 3e-3,
            gradcheck,
        }
    }

    /// These tolerances, or [`Tolerance::f16_storage`] for an f16 case.
    pub fn for_dtype(self, dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => self,
            Dtype::F16 => Self::f16_storage(self.gradcheck),
        }
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            forward: 1e-5,
            backward: 1e-5,
            gradcheck: 1e-6,
        }
    }
}

/// A case's tensors on one device, uploaded and allocated once by [`OpCase::prepare`]:
/// records the case's forward and backward dispatches as often as asked. Nothing is
/// allocated while recording.
pub trait Prepared {
    /// Record the forward dispatches (outputs into the prepared tensors).
    fn record_forward(&self, rec: &mut Recorder) -> Result<()>;
    /// Record the backward dispatches. Runs after a forward (in the same or an earlier
    /// submission): some ops read what their forward saved.
    fn record_backward(&self, rec: &mut Recorder) -> Result<()>;
    /// Read the forward outputs back.
    fn outputs(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>>;
    /// Read the gradients back, one per input (`None` for constant inputs).
    fn gradients(&self, gpu: &Gpu) -> Result<Vec<Option<Vec<f32>>>>;
}

/// One op to check. Outputs and gradients are lists, one entry per output / input.
pub trait OpCase: Send + Sync {
    /// Name, including the shape or variant (e.g. `silu[2x7x5x3]`).
    fn name(&self) -> String;
    /// Random inputs.
    fn inputs(&self, rng: &mut Rng) -> Vec<Input>;
    /// f64 reference forward.
    fn cpu_forward(&self, inputs: &[HostTensor]) -> Vec<HostTensor>;
    /// f64 reference backward: one gradient per input (`None` for constant inputs).
    fn cpu_backward(&self, inputs: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>>;
    /// Shapes of the outputs for these inputs (the reference forward's, unless a case
    /// knows them without running it: benchmarks draw output gradients at model shapes,
    /// where the f64 reference would take minutes).
    fn output_shapes(&self, inputs: &[HostTensor]) -> Vec<Vec<usize>> {
        self.cpu_forward(inputs)
            .into_iter()
            .map(|t| t.shape)
            .collect()
    }
    /// Upload `inputs` and the output gradients `dy` (zeros when `None`) and allocate every
    /// other tensor the forward and backward use.
    fn prepare(
        &self,
        gpu: &Gpu,
        inputs: &[HostTensor],
        dy: Option<&[HostTensor]>,
    ) -> Result<Box<dyn Prepared + '_>>;
    /// GPU forward: prepare, record the forward, read the outputs.
    fn gpu_forward(&self, gpu: &Gpu, inputs: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let p = self.prepare(gpu, inputs, None)?;
        run_gpu(gpu, |r| p.record_forward(r))?;
        p.outputs(gpu)
    }
    /// GPU backward given output gradients `dy`: prepare, record forward then backward in
    /// one submission, read the gradients.
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        inputs: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let p = self.prepare(gpu, inputs, Some(dy))?;
        run_gpu(gpu, |r| {
            p.record_forward(r)?;
            p.record_backward(r)
        })?;
        p.gradients(gpu)
    }
    /// Tolerances.
    fn tolerance(&self) -> Tolerance {
        Tolerance::default()
    }
    /// The element type the case stores activations in (its kernels' f16 variants run for
    /// [`Dtype::F16`]; [`check`] skips such a case on an adapter without `SHADER_F16`).
    fn activations(&self) -> Dtype {
        Dtype::F32
    }
    /// Which outputs the loss used for backward depends on (default: all).
    fn differentiable_outputs(&self) -> Vec<bool> {
        Vec::new()
    }
}

/// Normalised error ||a - b||_2 / ||b||_2 (with a floor so all-zero references compare
/// by absolute error).
pub fn normalized_error(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let mut num = 0.0;
    let mut den = 0.0;
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        num += (x - y) * (x - y);
        den += y * y;
    }
    (num / den.max(1e-30 * a.len().max(1) as f64).max(1e-12)).sqrt()
}

/// The outcome of one check of one op.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// Op name.
    pub op: String,
    /// `forward`, `backward` or `gradcheck`.
    pub direction: &'static str,
    /// Worst normalised error over the outputs / inputs compared.
    pub error: f64,
    /// Tolerance it was held to.
    pub tolerance: f64,
    /// error <= tolerance.
    pub pass: bool,
}

fn worst<'a>(pairs: impl Iterator<Item = (&'a [f64], &'a [f64])>) -> f64 {
    pairs
        .map(|(a, b)| normalized_error(a, b))
        .fold(0.0, f64::max)
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Loss used for gradients: L = sum over outputs of <dy, y>.
fn projected(case: &dyn OpCase, inputs: &[HostTensor], dy: &[HostTensor]) -> f64 {
    case.cpu_forward(inputs)
        .iter()
        .zip(dy)
        .map(|(y, d)| y.data.iter().zip(&d.data).map(|(a, b)| a * b).sum::<f64>())
        .sum()
}

/// What a check draws for one case and seed: the inputs, the reference outputs and the
/// random output gradients, and the generator's state after them (the finite-difference
/// sample continues from it).
pub struct Draw {
    /// Inputs.
    pub inputs: Vec<Input>,
    /// Reference forward outputs.
    pub ref_y: Vec<HostTensor>,
    /// Output gradients (zero for outputs the loss does not use).
    pub dy: Vec<HostTensor>,
    rng: Rng,
}

impl Draw {
    /// The input values.
    pub fn values(&self) -> Vec<HostTensor> {
        self.inputs.iter().map(|i| i.tensor.clone()).collect()
    }
}

/// Draw a case's inputs and output gradients for `seed`, as [`check`] does.
pub fn draw(case: &dyn OpCase, seed: u64) -> Draw {
    let mut rng = Rng::new(seed);
    let inputs = case.inputs(&mut rng);
    let values: Vec<HostTensor> = inputs.iter().map(|i| i.tensor.clone()).collect();
    let ref_y = case.cpu_forward(&values);
    let mask = case.differentiable_outputs();
    let dy = ref_y
        .iter()
        .enumerate()
        .map(|(k, y)| {
            if mask.get(k).copied().unwrap_or(true) {
                HostTensor::randn(&y.shape, 1.0, &mut rng)
            } else {
                HostTensor::zeros(&y.shape)
            }
        })
        .collect();
    Draw {
        inputs,
        ref_y,
        dy,
        rng,
    }
}

/// What one case computed on the GPU: its outputs, and one gradient per input (`None` for
/// constant inputs).
pub type GpuResults = (Vec<Vec<f32>>, Vec<Option<Vec<f32>>>);

/// The GPU outputs and gradients of one case on the inputs [`check`] draws for `seed`.
pub fn gpu_results(gpu: &Gpu, case: &dyn OpCase, seed: u64) -> Result<GpuResults> {
    let d = draw(case, seed);
    let inputs = d.values();
    Ok((
        case.gpu_forward(gpu, &inputs)?,
        case.gpu_backward(gpu, &inputs, &d.dy)?,
    ))
}

/// Run the forward, backward and gradient checks of one case with a given seed (none for
/// an f16 case on an adapter without `SHADER_F16`: see [`runs_on`]).
pub fn check(gpu: &Gpu, case: &dyn OpCase, seed: u64) -> Result<Vec<CheckResult>> {
    if !runs_on(gpu, case) {
        return Ok(Vec::new());
    }
    let d = draw(case, seed);
    let inputs = d.values();
    let Draw {
        inputs: ins,
        ref_y,
        dy,
        mut rng,
    } = d;
    let tol = case.tolerance();
    let name = case.name();
    let mut out = Vec::new();

    let gpu_y = case.gpu_forward(gpu, &inputs)?;
    let gy: Vec<Vec<f64>> = gpu_y.iter().map(|v| widen(v)).collect();
    let err = if gy.len() != ref_y.len() {
        f64::INFINITY
    } else {
        worst(gy.iter().zip(&ref_y).map(|(a, b)| (&a[..], &b.data[..])))
    };
    out.push(CheckResult {
        op: name.clone(),
        direction: "forward",
        error: err,
        tolerance: tol.forward,
        pass: err <= tol.forward,
    });

    let ref_dx = case.cpu_backward(&inputs, &dy);
    let gpu_dx = case.gpu_backward(gpu, &inputs, &dy)?;
    let mut berr: f64 = 0.0;
    for (k, inp) in ins.iter().enumerate() {
        if !inp.differentiable {
            continue;
        }
        match (
            ref_dx.get(k).and_then(|x| x.as_ref()),
            gpu_dx.get(k).and_then(|x| x.as_ref()),
        ) {
            (Some(r), Some(g)) => berr = berr.max(normalized_error(&widen(g), &r.data)),
            _ => berr = f64::INFINITY,
        }
    }
    out.push(CheckResult {
        op: name.clone(),
        direction: "backward",
        error: berr,
        tolerance: tol.backward,
        pass: berr <= tol.backward,
    });

    // Central finite differences of the reference on a sample of each input's elements.
    let mut ferr: f64 = 0.0;
    for (k, inp) in ins.iter().enumerate() {
        if !inp.differentiable {
            continue;
        }
        let Some(analytic) = ref_dx.get(k).and_then(|x| x.clone()) else {
            ferr = f64::INFINITY;
            continue;
        };
        let n = inp.tensor.data.len();
        let picks: Vec<usize> = if n <= 48 {
            (0..n).collect()
        } else {
            (0..48).map(|_| rng.below(n)).collect()
        };
        let mut fd = Vec::new();
        let mut an = Vec::new();
        for &j in &picks {
            let x0 = inputs[k].data[j];
            let h = 1e-6 * x0.abs().max(1.0);
            let mut plus = inputs.clone();
            plus[k].data[j] = x0 + h;
            let mut minus = inputs.clone();
            minus[k].data[j] = x0 - h;
            let d = (projected(case, &plus, &dy) - projected(case, &minus, &dy)) / (2.0 * h);
            fd.push(d);
            an.push(analytic.data[j]);
        }
        ferr = ferr.max(normalized_error(&an, &fd));
    }
    out.push(CheckResult {
        op: name,
        direction: "gradcheck",
        error: ferr,
        tolerance: tol.gradcheck,
        pass: ferr <= tol.gradcheck,
    });
    Ok(out)
}

/// Whether `case` can run on `gpu`: an f16 case needs `SHADER_F16`.
pub fn runs_on(gpu: &Gpu, case: &dyn OpCase) -> bool {
    case.activations() == Dtype::F32 || gpu.features.shader_f16
}

/// The suffix an f16 case's name carries (`/f16`), empty for f32.
pub fn dtype_suffix(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "",
        Dtype::F16 => "/f16",
    }
}

/// Run one-shot GPU work: upload, record with `f`, submit, wait.
pub fn run_gpu(gpu: &Gpu, f: impl FnOnce(&mut Recorder) -> Result<()>) -> Result<()> {
    let mut rec = Recorder::new(gpu);
    f(&mut rec)?;
    rec.submit()?.wait(gpu)
}

/// The `k`-th output gradient uploaded, or zeros of `shape` when there is none.
pub fn upload_dy(
    gpu: &Gpu,
    dy: Option<&[HostTensor]>,
    k: usize,
    shape: &[usize],
) -> Result<Tensor> {
    upload_dy_as(gpu, dy, k, shape, Dtype::F32)
}

/// [`upload_dy`] stored as `dtype`.
pub fn upload_dy_as(
    gpu: &Gpu,
    dy: Option<&[HostTensor]>,
    k: usize,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Tensor> {
    match dy.and_then(|d| d.get(k)) {
        Some(t) => t.upload_as(gpu, dtype),
        None => gpu.zeros_of(shape, dtype),
    }
}
