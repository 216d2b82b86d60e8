// Weight (and bias) gradient of a grouped convolution as an implicit GEMM with split K:
//   dw[ky, kx, ci, co] = sum_{n, oy, ox} x[n, oy*s+ky-pt, ox*s+kx-pl, g*Gi+ci] * dy[n, oy, ox, co]
//   (pt, pl: zero rows above and columns left of the image)
//   db[co]             = sum_{n, oy, ox} dy[n, oy, ox, co]       (row R of the output)
// Rows r = (ky*k + kx)*Gi + ci (R = k*k*Gi, plus the bias row when BIAS), columns co. The
// reduction over output pixels is cut into `nsplit` contiguous chunks; workgroup (split,
// row tile, column tile) sums its chunk. With one split it writes dw (and db) directly;
// otherwise it writes partials [split][R(+1)][Cout] that conv/wgrad_reduce.wgsl sums in a
// fixed order (deterministic, no atomics).
//
// Tiles are 64 rows x 64 columns, 4 x 4 per thread; columns pack `gpt` whole groups when
// a group has fewer than 64 output channels, as in conv/igemm.wgsl. Each step stages BK
// pixels: the im2col values of each packed group (gpt * BK <= 32 slots) and dy. The
// pixel coordinates of the next step are decoded once per workgroup into a small double
// buffer, so the staging loads do no divisions.
//!include common/grid.wgsl

override BK: u32 = 8u;
override UNI: u32 = 1u;
override BIAS: u32 = 0u;

struct Params {
    n: u32,
    oh: u32,     // dy image
    ow: u32,
    h: u32,      // x image
    w: u32,
    cin: u32,
    cout: u32,
    gi: u32,
    go: u32,
    groups: u32,
    k: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    rows: u32,   // R = k * k * Gi
    rows_b: u32, // R (+ 1 with bias)
    gpt: u32,
    ntpg: u32,
    ntiles: u32, // column tiles
    rtiles: u32, // row tiles
    nsplit: u32,
    chunk: u32,  // pixels per split
    npix: u32,   // N * Ho * Wo
    tiles: u32,  // nsplit * rtiles * ntiles
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/conv) validates
// the ConvSpec, checks x, dy, dw (and db) and, when split, a scratch of at least
// nsplit*rows_b*cout elements. Every split is non-empty (ConvSpec::wgrad_splits), so
// p0 < npix and len = p1 - p0 does not wrap. Columns as in conv/igemm.inc.wgsl:
// cbase + col < cout. Rows r < rows touch x at ((nn*h + iy)*w + ix)*cin + (g0 + lg)*gi + ci
// with the decoded pixel q < npix (nn < n), iy, ix tested, lg < ngr, ci < gi. dy at
// (p0 + kb + k2)*cout + cbase + col with p0 + kb + k2 < p1 <= npix. out at
// (split*rows_b + row)*cout + co (split < nsplit, row < rows_b) or row*cout + co (row <
// rows), out2[co]. Workgroup memory: As[q*16 + rl/4] with q < gpt*BK <= 32: <= 511 < 512;
// Bs[k2*16 + col/4] <= 255; pix[cur + kk] and pix[16 - cur + t] with kk, t < BK <= 16 and
// cur in {0, 16}: < 32. Divisors: per_split, ntiles, gpt, gi, k, go, BK, ow, oh >= 1,
// ntpg only when > 0. Loops: st < ceil(len / BK), fixed 4- and 8-trip loops, k2 += 4.
@group(0) @binding(0) var<uniform> p: Params;
// x and dy hold activations: f16 in the f16-storage variant; dw, db and the partials
// stay f32 (parameter gradients), as do the sums.
alias act_t = f32;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read> dy: array<act_t>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out2: array<f32>;

var<workgroup> As: array<vec4<f32>, 512>;  // [slot][row / 4]
var<workgroup> Bs: array<vec4<f32>, 256>;  // [kk][column / 4]
var<workgroup> pix: array<vec4<i32>, 32>;  // [2][16]: (n*H*W, oy*s-pt, ox*s-pl, valid)

fn decode(q: u32) -> vec4<i32> {
    if (q >= p.npix) {
        return vec4<i32>(0, 0, 0, 0);
    }
    let ox = q % p.ow;
    let oy = (q / p.ow) % p.oh;
    let nn = q / (p.ow * p.oh);
    return vec4<i32>(i32(nn * p.h * p.w), i32(oy * p.stride) - i32(p.pad_top),
                     i32(ox * p.stride) - i32(p.pad_left), 1);
}

@compute @workgroup_size(256)
fn conv_backward_weight_igemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    let tile = linear_group(wid, nwg);
    if (tile >= p.tiles) {
        return;
    }
    let per_split = p.rtiles * p.ntiles;
    let split = tile / per_split;
    let nt = tile % p.ntiles;
    let rt = (tile % per_split) / p.ntiles;

    var g0: u32;
    var j0 = 0u;
    var ncols: u32;
    var ngr = 1u;
    if (p.ntpg > 0u) {
        g0 = nt / p.ntpg;
        j0 = (nt % p.ntpg) * 64u;
        ncols = min(64u, p.go - j0);
    } else {
        g0 = nt * p.gpt;
        ngr = min(p.gpt, p.groups - g0);
        ncols = ngr * p.go;
    }
    let cbase = g0 * p.go + j0;

    let p0 = split * p.chunk;
    let p1 = min(p0 + p.chunk, p.npix);
    let len = p1 - p0;

    // This thread's row (fixed for the whole reduction).
    let rl = t % 64u;
    let r = rt * 64u + rl;
    let row_w = r < p.rows;
    let row_b = BIAS == 1u && r == p.rows;
    let tap = r / p.gi;
    let ci = r % p.gi;
    let ky = i32(tap / p.k);
    let kx = i32(tap % p.k);

    let tr = t / 16u;
    let tc = t % 16u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    var lgj: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        lgj[j] = min((tc * 4u + j) / p.go, p.gpt - 1u);
    }

    if (t < BK) {
        pix[t] = decode(select(p.npix, p0 + t, t < len));
    }
    workgroupBarrier();
    let steps = (len + BK - 1u) / BK;
    for (var st = 0u; st < steps; st++) {
        let kb = st * BK;
        let cur = (st % 2u) * 16u;
        // Decode the next step's pixels into the other half of the buffer.
        if (t < BK) {
            let q = kb + BK + t;
            pix[16u - cur + t] = decode(select(p.npix, p0 + q, q < len));
        }
        // Stage im2col rows for each packed group.
        for (var i = 0u; i < 8u; i++) {
            let q = t / 64u + 4u * i;
            if (q < p.gpt * BK) {
                let lg = q / BK;
                let kk = q % BK;
                let d = pix[cur + kk];
                var v = 0.0;
                if (lg < ngr && d.w == 1) {
                    if (row_b) {
                        v = 1.0;
                    } else if (row_w) {
                        let iy = d.y + ky;
                        let ix = d.z + kx;
                        if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                            v = f32(x[(u32(d.x) + u32(iy) * p.w + u32(ix)) * p.cin
                                      + (g0 + lg) * p.gi + ci]);
                        }
                    }
                }
                As[q * 16u + rl / 4u][rl % 4u] = v;
            }
        }
        // Stage dy.
        let col = t % 64u;
        for (var k2 = t / 64u; k2 < BK; k2 += 4u) {
            var v = 0.0;
            if (col < ncols && kb + k2 < len) {
                v = f32(dy[(p0 + kb + k2) * p.cout + cbase + col]);
            }
            Bs[k2 * 16u + col / 4u][col % 4u] = v;
        }
        workgroupBarrier();
        if (UNI == 1u) {
            let ab = lgj[0] * BK;
            for (var q = 0u; q < BK; q++) {
                let av = As[(ab + q) * 16u + tr];
                let bv = Bs[q * 16u + tc];
                acc[0] += av.x * bv;
                acc[1] += av.y * bv;
                acc[2] += av.z * bv;
                acc[3] += av.w * bv;
            }
        } else {
            for (var q = 0u; q < BK; q++) {
                let bv = Bs[q * 16u + tc];
                for (var j = 0u; j < 4u; j++) {
                    let av = As[(lgj[j] * BK + q) * 16u + tr];
                    acc[0][j] += av.x * bv[j];
                    acc[1][j] += av.y * bv[j];
                    acc[2][j] += av.z * bv[j];
                    acc[3][j] += av.w * bv[j];
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = rt * 64u + tr * 4u + i;
        if (row >= p.rows_b) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = tc * 4u + j;
            if (col < ncols) {
                let co = cbase + col;
                let v = acc[i][j];
                if (p.nsplit > 1u) {
                    out[(split * p.rows_b + row) * p.cout + co] = v;
                } else if (row < p.rows) {
                    out[row * p.cout + co] = v;
                } else {
                    out2[co] = v;
                }
            }
        }
    }
}
