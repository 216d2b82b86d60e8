// The network input from the loader's pixels: NHWC u8, four bytes packed per u32 word
// (little-endian, as the host uploads them), each converted to
// y = (byte / 255 - mean[c]) / std[c] in f32, c = element index % channels.
// One invocation per word writes up to four outputs.
//!include common/grid.wgsl

struct Params {
    n: u32,            // output elements N*H*W*C
    c: u32,            // channels (1..4)
    _pad0: u32,
    _pad1: u32,
    mean: vec4<f32>,   // per-channel mean of the pixels in [0, 1] (first c used)
    stdev: vec4<f32>,  // per-channel standard deviation (first c used, all > 0)
}

// Bounds (wgpu's runtime checks are off, see src/gpu/kernel.rs): the launcher (ops/input)
// checks 4 * len(px) >= p.n and binds y of p.n elements; px[word] is read only when
// first = 4 * word < p.n, so word < len(px); y[i] only for i < p.n. ch = i % p.c < c <= 4
// indexes the vec4s mean and stdev. Divisor: p.c in 1..=4 (the launcher refuses 0).
// Loop: k < 4.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> px: array<u32>;
// y is the network input, an activation: f16 in the f16-storage variant (the arithmetic
// stays f32).
alias act_t = f32;
@group(0) @binding(2) var<storage, read_write> y: array<act_t>;

@compute @workgroup_size(256)
fn normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let word = linear_group(wid, nwg) * 256u + lid;
    let first = word * 4u;
    if (first >= p.n) {
        return;
    }
    let bits = px[word];
    for (var k = 0u; k < 4u; k = k + 1u) {
        let i = first + k;
        if (i < p.n) {
            let ch = i % p.c;
            let v = f32((bits >> (8u * k)) & 0xffu) / 255.0;
            y[i] = act_t((v - p.mean[ch]) / p.stdev[ch]);
        }
    }
}
