// y[r, j] = x[r, j] * s[r / div], tensors viewed as [rows, per]. Used for the residual
// branch gradient (db = dy * s[n]) and any per-sample scaling.
//!include common/grid.wgsl

// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); arithmetic stays f32.
alias act_t = f32;

struct Params {
    n: u32,
    per: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): x, y indexed by i < p.n, their
// length (checked by the launcher); s by i / p.per < rows, since the launcher checks that
// p.n is a multiple of rows = s.len() and sets p.per = p.n / rows (>= 1 when p.n > 0).
// No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<act_t>;

@compute @workgroup_size(256)
fn scale_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.n) {
        y[i] = act_t(f32(x[i]) * s[i / p.per]);
    }
}
