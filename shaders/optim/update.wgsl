// One fused optimizer step over a range [start, end) of a parameter arena chunk.
// ALGO: 0 SGD with momentum, 1 SGD with Nesterov momentum, 2 RMSProp (TensorFlow style:
// eps inside the square root, momentum on the scaled step), 3 AdamW (decoupled decay).
// For 0-2, weight decay is L2 added to the gradient.
// SCALED = 1 (mixed precision, src/train/loss_scale.rs): the gradients carry the dynamic
// loss scale; the step is skipped when the scaler's non-finite count is non-zero, else
// the gradient is divided by the scale. SCALED = 0 never reads `scaler` (the launcher
// binds a placeholder there). SCALED = 1 AdamW counts only the steps applied, as
// PyTorch's GradScaler skips optimizer.step(): step p.step after scaler[2] skipped ones
// takes the bias corrections of step p.step - scaler[2] from `bias` (c1, c2 per step,
// tabulated on the host; past its end they are 1). Otherwise `bias` is a placeholder,
// never read.
//!include common/grid.wgsl

override ALGO: u32 = 0u;
override SCALED: u32 = 0u;

struct Params {
    start: u32,
    end: u32,
    lr: f32,
    wd: f32,
    b1: f32,        // momentum (SGD, RMSProp) or beta1 (AdamW)
    b2: f32,        // RMSProp decay or AdamW beta2
    eps: f32,
    c1: f32,        // AdamW 1 / (1 - beta1^t)
    c2: f32,        // AdamW 1 / (1 - beta2^t)
    gscale: f32,    // multiplies the gradient (e.g. loss-scale undo)
    step: u32,      // the step c1 and c2 are for (>= 1)
    bias_steps: u32, // steps `bias` covers (>= 1 when read)
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): w, g, s1, s2 indexed by i in
// [p.start, p.end); the launcher checks p.end <= the length of all four chunks; with
// SCALED = 1, scaler[0], scaler[2] and scaler[3] of the scaler state (8 words, checked
// by the launcher); with SCALED = 1 and ALGO = 3, bias[2k] and bias[2k + 1] for
// k = min(t, p.bias_steps) - 1 with t in [1, p.step], and the launcher binds
// 2 * p.bias_steps values with p.bias_steps >= 1. No loops, no integer division.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> s1: array<f32>;
@group(0) @binding(4) var<storage, read_write> s2: array<f32>;
@group(0) @binding(5) var<storage, read> scaler: array<u32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;

@compute @workgroup_size(256)
fn optim_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = p.start + linear_group(wid, nwg) * 256u + lid;
    if (i >= p.end) {
        return;
    }
    var gscale = p.gscale;
    var c1 = p.c1;
    var c2 = p.c2;
    if (SCALED == 1u) {
        // Uniform across the grid: every invocation skips, or none does.
        if (scaler[3] != 0u) {
            return;
        }
        gscale = gscale / bitcast<f32>(scaler[0]);
        if (ALGO == 3u) {
            // The steps applied so far, this one included (at least 1).
            let t = p.step - min(scaler[2], p.step - 1u);
            let k = min(t, p.bias_steps) - 1u;
            c1 = bias[2u * k];
            c2 = bias[2u * k + 1u];
        }
    }
    var wi = w[i];
    var gi = g[i] * gscale;
    switch ALGO {
        case 0u, 1u: {
            gi += p.wd * wi;
            let m = p.b1 * s1[i] + gi;
            s1[i] = m;
            var step = m;
            if (ALGO == 1u) {
                step = gi + p.b1 * m;
            }
            wi -= p.lr * step;
        }
        case 2u: {
            gi += p.wd * wi;
            let ms = p.b2 * s2[i] + (1.0 - p.b2) * gi * gi;
            s2[i] = ms;
            let mom = p.b1 * s1[i] + p.lr * gi / sqrt(ms + p.eps);
            s1[i] = mom;
            wi -= mom;
        }
        default: {
            let m = p.b1 * s1[i] + (1.0 - p.b1) * gi;
            let v = p.b2 * s2[i] + (1.0 - p.b2) * gi * gi;
            s1[i] = m;
            s2[i] = v;
            wi -= p.lr * ((m * c1) / (sqrt(v * c2) + p.eps) + p.wd * wi);
        }
    }
    w[i] = wi;
}
