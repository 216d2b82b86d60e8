// Gradient of a sum/mean over the middle axis: dx[o, m, i] = scale * dy[o, i].
//!include common/grid.wgsl

// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); arithmetic stays f32.
alias act_t = f32;

struct Params {
    n: u32,   // O * M * I
    m: u32,
    i: u32,
    scale: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): dx[j] for j < p.n = O*M*I =
// dx.len(); dy[o * I + i] with o = j / (M*I) < O and i = j % I < I, so below
// O*I = dy.len(). The launcher checks both lengths; M*I >= 1 whenever p.n > 0. No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<act_t>;

@compute @workgroup_size(256)
fn broadcast(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let j = linear_group(wid, nwg) * 256u + lid;
    if (j < p.n) {
        let i = j % p.i;
        let o = j / (p.m * p.i);
        dx[j] = act_t(dy[o * p.i + i] * p.scale);
    }
}
