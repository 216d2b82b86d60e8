// Weight (and bias) gradient of a grouped convolution with few output channels per group
// (depthwise and friends), split over output pixels:
//   dw[r, co] = sum_{pixels} x[n, oy*s+ky-pt, ox*s+kx-pl, g*Gi+ci] * dy[n, oy, ox, co]
// (pt, pl: zero rows above and columns left of the image)
// with rows r = (ky*k + kx)*Gi + ci (R = k*k*Gi) and, with BIAS, row R = sum dy (db).
// A thread owns 4 consecutive rows of one channel co (channels fastest across threads)
// for one chunk of pixels; one split writes dw/db directly, several write partials
// [split][R(+1)][Cout] for conv/wgrad_reduce.wgsl.
//!include common/grid.wgsl

override BIAS: u32 = 0u;

struct Params {
    n: u32,
    oh: u32,
    ow: u32,
    h: u32,
    w: u32,
    cin: u32,
    cout: u32,
    gi: u32,
    go: u32,
    k: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    rows: u32,
    rows_b: u32,
    nrq: u32,    // ceil(rows_b / 4)
    nsplit: u32,
    chunk: u32,
    npix: u32,
    total: u32,  // nsplit * nrq * cout
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/conv) validates
// the ConvSpec, checks x, dy, dw (and db) and, when split, a scratch of at least
// nsplit*rows_b*cout elements; total = nsplit*nrq*cout. idx < total gives co < cout,
// rq < nrq, split < nsplit. Rows r < rows read x at ((nn*h + iy)*w + ix)*cin + ci with
// ci = (co / Go)*Gi + r % Gi < cin and iy, ix tested; rows at or past rows read nothing.
// The pixel counter (nn, oy, ox) starts at p0 and advances with q < p1 <= npix, so
// nn < n, and dy is read at q*cout + co. out at (split*rows_b + r)*cout + co, r*cout + co
// (r < rows) or out2[co]. Divisors: cout, nrq, go, gi, k, ow, oh >= 1. Loops: q < p1,
// r, q < 4.
@group(0) @binding(0) var<uniform> p: Params;
// x and dy hold activations: f16 in the f16-storage variant; dw, db and the partials
// stay f32 (parameter gradients), as do the sums.
alias act_t = f32;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read> dy: array<act_t>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out2: array<f32>;

@compute @workgroup_size(256)
fn conv_backward_weight_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let idx = linear_group(wid, nwg) * 256u + lid;
    if (idx >= p.total) {
        return;
    }
    let co = idx % p.cout;
    let rq = (idx / p.cout) % p.nrq;
    let split = idx / (p.cout * p.nrq);
    let cb = (co / p.go) * p.gi;
    // Row decode: kind 0 weight, 1 bias, 2 none.
    var kind: vec4<u32>;
    var ky: vec4<i32>;
    var kx: vec4<i32>;
    var ci: vec4<u32>;
    for (var q = 0u; q < 4u; q++) {
        let r = rq * 4u + q;
        let tap = r / p.gi;
        ci[q] = cb + r % p.gi;
        ky[q] = i32(tap / p.k) - i32(p.pad_top);
        kx[q] = i32(tap % p.k) - i32(p.pad_left);
        kind[q] = select(select(2u, 1u, BIAS == 1u && r == p.rows), 0u, r < p.rows);
    }
    let p0 = split * p.chunk;
    let p1 = min(p0 + p.chunk, p.npix);
    var acc = vec4<f32>(0.0);
    if (p0 < p1) {
        var ox = p0 % p.ow;
        var oy = (p0 / p.ow) % p.oh;
        var nn = p0 / (p.ow * p.oh);
        for (var q = p0; q < p1; q++) {
            let g = f32(dy[q * p.cout + co]);
            let yb = i32(oy * p.stride);
            let xb = i32(ox * p.stride);
            let nb = nn * p.h;
            for (var r = 0u; r < 4u; r++) {
                if (kind[r] == 0u) {
                    let iy = yb + ky[r];
                    let ix = xb + kx[r];
                    if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                        acc[r] += f32(x[((nb + u32(iy)) * p.w + u32(ix)) * p.cin + ci[r]]) * g;
                    }
                } else if (kind[r] == 1u) {
                    acc[r] += g;
                }
            }
            ox += 1u;
            if (ox == p.ow) {
                ox = 0u;
                oy += 1u;
                if (oy == p.oh) {
                    oy = 0u;
                    nn += 1u;
                }
            }
        }
    }
    for (var q = 0u; q < 4u; q++) {
        let r = rq * 4u + q;
        if (r < p.rows_b) {
            if (p.nsplit > 1u) {
                out[(split * p.rows_b + r) * p.cout + co] = acc[q];
            } else if (r < p.rows) {
                out[r * p.cout + co] = acc[q];
            } else {
                out2[co] = acc[q];
            }
        }
    }
}
