// Dynamic loss scaling as PyTorch's GradScaler does it, on the GPU so no step waits for
// the host. The scaler state is 8 u32 words:
//   [0] scale (f32 bits)  [1] finite steps since the scale last changed
//   [2] skipped steps (total)  [3] non-finite gradient values found this step
//   [4] consecutive skipped steps at the minimum scale  [5..8) unused (zero)
// count_nonfinite adds into word 3 during the step; the optimizer and the weight average
// skip when it is non-zero; this kernel then runs once per step (one invocation):
// on an overflow it halves the scale (not below p.min_scale), counts the skip and resets
// the growth counter; otherwise after p.interval finite steps in a row it doubles the scale
// (not above p.max_scale). It clears word 3 for the next step.

struct Params {
    interval: u32,
    backoff: f32,
    growth: f32,
    min_scale: f32,
    max_scale: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): state[0..5), and the launcher
// binds the scaler state of 8 words. One invocation of one workgroup; no loops, no
// integer division. Counters saturate instead of wrapping.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;

@compute @workgroup_size(1)
fn loss_scale_update() {
    var scale = bitcast<f32>(state[0]);
    var good = state[1];
    var skipped = state[2];
    var at_min = state[4];
    if (state[3] != 0u) {
        let was_min = scale <= p.min_scale;
        scale = max(scale * p.backoff, p.min_scale);
        good = 0u;
        skipped = min(skipped, 0xfffffffeu) + 1u;
        if (was_min) {
            at_min = min(at_min, 0xfffffffeu) + 1u;
        } else {
            at_min = 0u;
        }
    } else {
        at_min = 0u;
        good = good + 1u;
        if (good >= p.interval) {
            scale = min(scale * p.growth, p.max_scale);
            good = 0u;
        }
    }
    state[0] = bitcast<u32>(scale);
    state[1] = good;
    state[2] = skipped;
    state[3] = 0u;
    state[4] = at_min;
}
