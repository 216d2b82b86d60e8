// Activation functions and their derivatives, selected by a kind code:
// 0 identity, 1 ReLU, 2 SiLU (swish), 3 sigmoid.
const ACT_IDENTITY: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_SILU: u32 = 2u;
const ACT_SIGMOID: u32 = 3u;

fn sigmoid_f(x: f32) -> f32 {
    // Stable for large |x|: exp of a non-positive number only.
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn act_f(kind: u32, x: f32) -> f32 {
    switch kind {
        case 1u: { return max(x, 0.0); }
        case 2u: { return x * sigmoid_f(x); }
        case 3u: { return sigmoid_f(x); }
        default: { return x; }
    }
}

// d act(x) / dx
fn act_df(kind: u32, x: f32) -> f32 {
    switch kind {
        case 1u: { return select(0.0, 1.0, x > 0.0); }
        case 2u: {
            let s = sigmoid_f(x);
            return s * (1.0 + x * (1.0 - s));
        }
        case 3u: {
            let s = sigmoid_f(x);
            return s * (1.0 - s);
        }
        default: { return 1.0; }
    }
}
