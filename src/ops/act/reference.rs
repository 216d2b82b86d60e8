//! f64 CPU reference of the activations: values and derivatives.

use super::Act;

impl Act {
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
