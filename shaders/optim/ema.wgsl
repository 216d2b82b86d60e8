// Exponential weight average over an arena chunk: avg = decay * avg + (1 - decay) * w.
// SCALED = 1 (mixed precision): skipped when the loss scaler found a non-finite gradient
// this step (the weights did not move); SCALED = 0 never reads `scaler`.
//!include common/grid.wgsl

override SCALED: u32 = 0u;

struct Params {
    n: u32,
    decay: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): w[i], avg[i] for i < p.n; the
// launcher binds chunks of equal length p.n; with SCALED = 1, scaler[3] of the scaler
// state (8 words, checked by the launcher). No loops, no integer division.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> avg: array<f32>;
@group(0) @binding(3) var<storage, read> scaler: array<u32>;

@compute @workgroup_size(256)
fn ema_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (SCALED == 1u && scaler[3] != 0u) {
        return;
    }
    if (i < p.n) {
        avg[i] = p.decay * avg[i] + (1.0 - p.decay) * w[i];
    }
}
