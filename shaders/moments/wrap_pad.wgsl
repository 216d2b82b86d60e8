// Periodic (circular) padding of an NHWC tensor for the moments analysis (SPEC §D.1):
//   dst[n, y, x, c] = src[n, (y - pad) mod h, (x - pad) mod w, c],
// dst of shape [n, h + 2 pad, w + 2 pad, c]. A 'same' zero-padded convolution of dst followed
// by a crop of its centre (moments/crop.wgsl) is the periodic-boundary convolution.
//!include common/grid.wgsl

struct Params {
    total: u32, // elements of dst
    h: u32,
    w: u32,
    c: u32,
    pad: u32,
    // (y + lift - pad) % h == (y - pad) mod h for y >= 0: lift is a multiple of h >= pad.
    lift_h: u32,
    lift_w: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (moments/kernels.rs)
// refuses h, w or c = 0 and checks src = n*h*w*c, dst = total = n*(h+2 pad)*(w+2 pad)*c.
// i < total gives n < N; sy = (y + lift_h - pad) % h < h (lift_h >= pad, so no wrap
// below zero), sx < w likewise; src at ((n*h + sy)*w + sx)*c + c'. Divisors: c, wp, hp,
// h, w >= 1. No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn wrap_pad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.total) {
        return;
    }
    let hp = p.h + 2u * p.pad;
    let wp = p.w + 2u * p.pad;
    let c = i % p.c;
    let x = (i / p.c) % wp;
    let y = (i / (p.c * wp)) % hp;
    let n = i / (p.c * wp * hp);
    let sy = (y + p.lift_h - p.pad) % p.h;
    let sx = (x + p.lift_w - p.pad) % p.w;
    dst[i] = src[((n * p.h + sy) * p.w + sx) * p.c + c];
}
