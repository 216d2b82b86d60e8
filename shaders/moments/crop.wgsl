// Strided crop of an NHWC tensor: dst[n, oy, ox, c] = src[n, off + s*oy, off + s*ox, c],
// src of shape [n, hs, ws, c], dst [n, ho, wo, c]. Takes the centre of a convolution run on
// a periodically padded tensor (moments/wrap_pad.wgsl); the stride subsamples it.
//!include common/grid.wgsl

struct Params {
    total: u32, // elements of dst
    hs: u32,
    ws: u32,
    c: u32,
    ho: u32,
    wo: u32,
    off: u32,
    stride: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (moments/kernels.rs)
// checks src = n*hs*ws*c, dst = total = n*ho*wo*c, and off + stride*(ho-1) < hs,
// off + stride*(wo-1) < ws. i < total gives oy < ho, ox < wo, n < N, so sy < hs, sx < ws.
// Divisors: c, wo, ho >= 1 whenever a thread runs (total > 0). No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn crop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.total) {
        return;
    }
    let c = i % p.c;
    let ox = (i / p.c) % p.wo;
    let oy = (i / (p.c * p.wo)) % p.ho;
    let n = i / (p.c * p.wo * p.ho);
    let sy = p.off + p.stride * oy;
    let sx = p.off + p.stride * ox;
    dst[i] = src[((n * p.hs + sy) * p.ws + sx) * p.c + c];
}
