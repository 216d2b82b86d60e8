// Residual add with a per-sample branch scale (drop-connect): y[n, j] = a[n, j] + s[n] * b[n, j],
// tensors viewed as [N, per] with per = H*W*C.
//!include common/grid.wgsl

// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); arithmetic stays f32.
alias act_t = f32;

struct Params {
    n: u32,
    per: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): a, b, y are indexed by i < p.n,
// their common length (the launcher checks it); s by i / p.per < N because
// p.n = N * p.per (p.per = elements per sample, >= 1 whenever p.n > 0; with p.n = 0 no
// workgroup is dispatched). No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<act_t>;
@group(0) @binding(2) var<storage, read> b: array<act_t>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<act_t>;

@compute @workgroup_size(256)
fn residual_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.n) {
        y[i] = act_t(f32(a[i]) + s[i / p.per] * f32(b[i]));
    }
}
