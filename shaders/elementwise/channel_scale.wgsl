// Per-sample, per-channel scale on NHWC: y[n, p, c] = x[n, p, c] * s[n, c]
// (the squeeze-excitation gate). Also its data gradient: dx = dy * s.
//!include common/grid.wgsl

// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); arithmetic stays f32.
alias act_t = f32;

struct Params {
    n: u32,     // total elements N*P*C
    hw: u32,    // P = H*W
    c: u32,     // channels
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): x, y indexed by i < p.n = N*P*C
// (the launcher checks both lengths); s by n * C + c with n = i / (P*C) < N and c < C,
// so below N*C = s.len() (checked). P*C >= 1 whenever p.n > 0. No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<act_t>;

@compute @workgroup_size(256)
fn channel_scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.n) {
        let c = i % p.c;
        let n = i / (p.hw * p.c);
        y[i] = act_t(f32(x[i]) * s[n * p.c + c]);
    }
}
