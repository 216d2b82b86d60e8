// Input gradient of squeeze-excitation y = x * gate[n, c], gate = f(mean_{hw} x):
//   dx[n, p, c] = dy[n, p, c] * gate[n, c] + dpooled[n, c] / (H * W)
// (the channel-scale path and the global-average-pool path in one pass).
//!include common/grid.wgsl

struct Params {
    n: u32,    // N * P * C
    hw: u32,   // P = H * W
    c: u32,
    inv_hw: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): dy, dx indexed by i < p.n = N*P*C,
// gate and dpooled by (i / (P*C)) * C + i % C < N*C; the launcher checks all four
// lengths. P*C >= 1 whenever p.n > 0. No loops.
@group(0) @binding(0) var<uniform> p: Params;
// dy and dx are activation gradients: f16 in the f16-storage variant; the gate and the
// pooled gradient stay f32 (per-channel values from f32 sums), as does the arithmetic.
alias act_t = f32;
@group(0) @binding(1) var<storage, read> dy: array<act_t>;
@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read> dpooled: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<act_t>;

@compute @workgroup_size(256)
fn se_backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.n) {
        let nc = (i / (p.hw * p.c)) * p.c + i % p.c;
        dx[i] = act_t(f32(dy[i]) * gate[nc] + dpooled[nc] * p.inv_hw);
    }
}
