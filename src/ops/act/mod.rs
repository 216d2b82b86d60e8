//! Elementwise activations (identity, ReLU, SiLU, sigmoid): launchers, f64 references and
//! harness cases.

use super::harness::{run_gpu, HostTensor, Input, OpCase};
use crate::error::Result;
use crate::gpu::{groups_for, Access, Gpu, Grid, KernelDef, Recorder, Tensor};
use crate::util::Rng;

/// An activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    /// y = x
    Identity,
    /// y = max(x, 0)
    Relu,
    /// y = x * sigmoid(x) (swish)
    Silu,
    /// y = 1 / (1 + exp(-x))
    Sigmoid,
}

impl Act {
    /// The kind code the shaders use (common/act.wgsl).
    pub fn code(self) -> f64 {
        match self {
            Act::Identity => 0.0,
            Act::Relu => 1.0,
            Act::Silu => 2.0,
            Act::Sigmoid => 3.0,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Act::Identity => "identity",
            Act::Relu => "relu",
            Act::Silu => "silu",
            Act::Sigmoid => "sigmoid",
        }
    }

    /// f64 reference value.
    pub fn f(self, x: f64) -> f64 {
        match self {
            Act::Identity => x,
            Act::Relu => x.max(0.0),
            Act::Silu => x * sigmoid(x),
            Act::Sigmoid => sigmoid(x),
        }
    }

    /// f64 reference derivative.
    pub fn df(self, x: f64) -> f64 {
        match self {
            Act::Identity => 1.0,
            Act::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Act::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
        }
    }
}

/// f64 logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Every activation code the shaders are built with.
const ACT_CODES: [f64; 4] = [0.0, 1.0, 2.0, 3.0];

static FWD: KernelDef = KernelDef {
    shader: "act/forward.wgsl",
    entry: "act_forward",
    bindings: &[Access::Read, Access::ReadWrite],
    overrides: &[("ACT", &ACT_CODES)],
};
static BWD: KernelDef = KernelDef {
    shader: "act/backward.wgsl",
    entry: "act_backward",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
    overrides: &[("ACT", &ACT_CODES)],
};

/// Record y = act(x).
pub fn forward(rec: &mut Recorder, act: Act, x: &Tensor, y: &Tensor) -> Result<()> {
    let n = x.len();
    rec.dispatch(
        &FWD,
        &[("ACT", act.code())],
        &[n as u32],
        &[x, y],
        Grid::Linear(groups_for(n, 256)),
    )
}

/// Record dx = dy * act'(x).
pub fn backward(rec: &mut Recorder, act: Act, x: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<()> {
    let n = x.len();
    rec.dispatch(
        &BWD,
        &[("ACT", act.code())],
        &[n as u32],
        &[x, dy, dx],
        Grid::Linear(groups_for(n, 256)),
    )
}

/// Harness case for one activation on one shape.
pub struct ActCase {
    /// Activation.
    pub act: Act,
    /// Shape.
    pub shape: Vec<usize>,
}

impl OpCase for ActCase {
    fn name(&self) -> String {
        format!("{}{:?}", self.act.name(), self.shape)
    }
    fn inputs(&self, rng: &mut Rng) -> Vec<Input> {
        vec![Input::diff(HostTensor::randn(&self.shape, 2.0, rng))]
    }
    fn cpu_forward(&self, i: &[HostTensor]) -> Vec<HostTensor> {
        vec![HostTensor::new(
            &i[0].shape,
            i[0].data.iter().map(|&x| self.act.f(x)).collect(),
        )]
    }
    fn cpu_backward(&self, i: &[HostTensor], dy: &[HostTensor]) -> Vec<Option<HostTensor>> {
        let d = i[0]
            .data
            .iter()
            .zip(&dy[0].data)
            .map(|(&x, &g)| g * self.act.df(x))
            .collect();
        vec![Some(HostTensor::new(&i[0].shape, d))]
    }
    fn gpu_forward(&self, gpu: &Gpu, i: &[HostTensor]) -> Result<Vec<Vec<f32>>> {
        let x = i[0].upload(gpu)?;
        let y = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| forward(r, self.act, &x, &y))?;
        Ok(vec![gpu.read(&y)?])
    }
    fn gpu_backward(
        &self,
        gpu: &Gpu,
        i: &[HostTensor],
        dy: &[HostTensor],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let x = i[0].upload(gpu)?;
        let g = dy[0].upload(gpu)?;
        let dx = gpu.zeros(&self.shape)?;
        run_gpu(gpu, |r| backward(r, self.act, &x, &g, &dx))?;
        Ok(vec![Some(gpu.read(&dx)?)])
    }
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&FWD, &BWD];

/// Harness cases for this module.
pub fn cases() -> Vec<Box<dyn OpCase>> {
    let mut v: Vec<Box<dyn OpCase>> = Vec::new();
    for act in [Act::Relu, Act::Silu, Act::Sigmoid] {
        v.push(Box::new(ActCase {
            act,
            shape: vec![2, 7, 5, 3],
        }));
    }
    v
}
