//! Elementwise activations (identity, ReLU, SiLU, sigmoid): launchers, f64 references and
//! harness cases.

mod cases;
mod reference;

pub use cases::{cases, ActCase};
pub use reference::sigmoid;

use crate::error::{Error, Result};
use crate::gpu::{
    groups_for, uniform_block, Access, Cost, Grid, Kernel, KernelDef, Recorder, Tensor,
};

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

    /// Nominal floating-point operations of one value (a transcendental counts as one):
    /// what [`Cost`] counts per element of a kernel that applies the activation.
    pub fn flops(self) -> f64 {
        match self {
            Act::Identity => 0.0,
            Act::Relu => 1.0,
            Act::Sigmoid => 4.0,
            Act::Silu => 5.0,
        }
    }

    /// Nominal floating-point operations of one derivative (recomputing the value).
    pub fn grad_flops(self) -> f64 {
        match self {
            Act::Identity => 0.0,
            Act::Relu => 1.0,
            Act::Sigmoid => 6.0,
            Act::Silu => 9.0,
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
}

/// Every activation code the shaders are built with.
const ACT_CODES: [f64; 4] = [0.0, 1.0, 2.0, 3.0];

uniform_block! {
    /// Parameters of `act/forward.wgsl` and `act/backward.wgsl`.
    pub(super) struct ActParams {
        pub n: u32,
    }
}

static FWD: Kernel<ActParams> = Kernel::new(
    "act/forward.wgsl",
    "act_forward",
    &[Access::Read, Access::ReadWrite],
    &[("ACT", &ACT_CODES)],
)
.with_f16(&[1, 2]);
static BWD: Kernel<ActParams> = Kernel::new(
    "act/backward.wgsl",
    "act_backward",
    &[Access::Read, Access::Read, Access::ReadWrite],
    &[("ACT", &ACT_CODES)],
)
.with_f16(&[1, 2, 3]);

/// All tensors of an elementwise activation have the same length (what makes the
/// shaders' indices in bounds).
fn same_len(what: &str, ts: &[&Tensor]) -> Result<()> {
    if ts.iter().any(|t| t.len() != ts[0].len()) {
        let shapes: Vec<_> = ts.iter().map(|t| t.shape().to_vec()).collect();
        return Err(Error::Shape(format!(
            "activation {what} of tensors with different sizes: {shapes:?}"
        )));
    }
    Ok(())
}

/// Record y = act(x) (x and y both f32, or both f16: mixed precision stores activations
/// in f16 and computes in f32).
pub fn forward(rec: &mut Recorder, act: Act, x: &Tensor, y: &Tensor) -> Result<()> {
    same_len("forward", &[x, y])?;
    let n = x.len();
    rec.dispatch(
        &FWD,
        &[("ACT", act.code())],
        &ActParams { n: n as u32 },
        &[x, y],
        Grid::Linear(groups_for(n, 256)),
        Cost::tensors(act.flops() * n as f64, &[x], &[y]),
    )
}

/// Record dx = dy * act'(x) (all f32, or all f16).
pub fn backward(rec: &mut Recorder, act: Act, x: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<()> {
    same_len("backward", &[x, dy, dx])?;
    let n = x.len();
    rec.dispatch(
        &BWD,
        &[("ACT", act.code())],
        &ActParams { n: n as u32 },
        &[x, dy, dx],
        Grid::Linear(groups_for(n, 256)),
        Cost::tensors((act.grad_flops() + 1.0) * n as f64, &[x, dy], &[dx]),
    )
}

/// The kernels of this module (for the portability test).
pub static KERNELS: &[&KernelDef] = &[&FWD.def, &BWD.def];
