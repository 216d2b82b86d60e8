// y = act(x), elementwise. ACT selects the activation (see common/act.wgsl).
//!include common/grid.wgsl
//!include common/act.wgsl

// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); arithmetic stays f32.
alias act_t = f32;

override ACT: u32 = 2u;

struct Params {
    n: u32,
}

// Bounds (wgpu's runtime checks are off, see src/gpu/kernel.rs): x[i] and y[i] only for
// i < p.n, and the launcher (ops/act) binds x and y of exactly p.n elements. No loops,
// no integer division.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read_write> y: array<act_t>;

@compute @workgroup_size(256)
fn act_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.n) {
        y[i] = act_t(act_f(ACT, f32(x[i])));
    }
}
