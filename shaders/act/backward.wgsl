// dx = dy * act'(x), elementwise (x is the activation's input, recomputed from).
//!include common/grid.wgsl
//!include common/act.wgsl

override ACT: u32 = 2u;

struct Params {
    n: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): x[i], dy[i], dx[i] only for
// i < p.n; the launcher (ops/act) binds all three with exactly p.n elements. No loops,
// no integer division.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn act_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.n) {
        dx[i] = dy[i] * act_df(ACT, x[i]);
    }
}
