// The tiled GEMM, included by gemm/gemm.wgsl and gemm/gemm_act_act.wgsl, which name the
// storage types a_t, b_t, bias_t, c_t of A, B, the bias and C (f32 or the f16 act_t);
// arithmetic is f32.
// Tiled GEMM, row-major: C[m, n] = op(A)[m, k] . op(B)[k, n] (+ bias[n]) (+ C if ACC).
// op(A) = A ([M, K] in memory) or A^T (TA = 1: [K, M] in memory); likewise B ([K, N] or,
// with TB = 1, [N, K]).
//
// 256 threads per workgroup, each owning a 4 x 4 register micro-tile. TNT threads along N
// and 256 / TNT along M give a BM x BN = (1024 / TNT) x (4 TNT) tile: 64 x 64 (TNT 16),
// 128 x 32 (TNT 8) or 256 x 16 (TNT 4) for thin outputs. Each K step stages a BK-deep
// slice of A and B in workgroup memory (fixed-size arrays; vec4 reads in the inner loop)
// with BK * BM <= 2048 (BK = 16, 16, 8). Ragged edges load zeros and skip stores.
//!include common/grid.wgsl

override TA: u32 = 0u;
override TB: u32 = 0u;
override BIAS: u32 = 0u;
override ACC: u32 = 0u;
override TNT: u32 = 16u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    ntiles: u32, // column tiles: ceil(n / BN)
    tiles: u32,  // all tiles
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/gemm) checks
// a = m*k, b = k*n, c = m*n and bias = n elements, and skips m = 0 or n = 0, so
// ntiles = ceil(n / BN) >= 1 and tiles = ceil(m / BM) * ntiles; tile < tiles gives
// m0 < m, n0 < n. Global reads and writes are guarded: a[row*k + col] and
// a[col*m + row] only for row < m, col < k; b likewise for row < k, col < n; c and
// bias only for row < m, col < n. Workgroup arrays, for the three tiles (TNT, BM, BK):
// (16, 64, 16), (8, 128, 16), (4, 256, 8): As[kk*(BM/4+1) + mm/4] <= 15*17+15, 15*33+31,
// 7*65+63 < 528; Bs[kk*(BN/4+1) + nn/4] <= 15*17+15, 15*9+7, 7*5+3 < 272; the inner loop's
// tm < BM/4 and tn < BN/4 stay inside the same rows. acc[i][j], i, j < 4. Divisors:
// ntiles >= 1, bk >= 8, bm, TNT constants. Loops: k0 += bk (>= 8) up to k, e += 256 up to
// BM*BK or BK*BN, fixed 4-trip loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<a_t>;
@group(0) @binding(2) var<storage, read> b: array<b_t>;
@group(0) @binding(3) var<storage, read> bias: array<bias_t>;
@group(0) @binding(4) var<storage, read_write> c: array<c_t>;

// As[kk][m / 4] and Bs[kk][n / 4], four consecutive rows (columns) per vec4, each kk row
// padded by one vec4 so staging stores along kk spread over the banks.
var<workgroup> As: array<vec4<f32>, 528>;
var<workgroup> Bs: array<vec4<f32>, 272>;

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let tile = linear_group(wid, nwg);
    // Uniform per workgroup: the whole group leaves before any barrier.
    if (tile >= p.tiles) {
        return;
    }
    let tmt = 256u / TNT;     // threads along M
    let bm = 4u * tmt;        // tile rows
    let bn = 4u * TNT;        // tile columns
    let bk = min(16u, 2048u / bm);
    let m0 = (tile / p.ntiles) * bm;
    let n0 = (tile % p.ntiles) * bn;
    let tn = t % TNT;
    let tm = t / TNT;
    let bm4 = bm / 4u + 1u;
    let bn4 = bn / 4u + 1u;

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    for (var k0 = 0u; k0 < p.k; k0 += bk) {
        // Stage A: bm x bk values, 4 or 8 per thread, the contiguous memory axis fastest.
        for (var e = t; e < bm * bk; e += 256u) {
            var mm: u32;
            var kk: u32;
            if (TA == 0u) {
                kk = e % bk;
                mm = e / bk;
            } else {
                mm = e % bm;
                kk = e / bm;
            }
            let row = m0 + mm;
            let col = k0 + kk;
            var v = 0.0;
            if (row < p.m && col < p.k) {
                if (TA == 0u) {
                    v = f32(a[row * p.k + col]);
                } else {
                    v = f32(a[col * p.m + row]);
                }
            }
            As[kk * bm4 + mm / 4u][mm % 4u] = v;
        }
        // Stage B: bk x bn values.
        for (var e = t; e < bk * bn; e += 256u) {
            var nn: u32;
            var kk: u32;
            if (TB == 0u) {
                nn = e % bn;
                kk = e / bn;
            } else {
                kk = e % bk;
                nn = e / bk;
            }
            let row = k0 + kk;
            let col = n0 + nn;
            var v = 0.0;
            if (row < p.k && col < p.n) {
                if (TB == 0u) {
                    v = f32(b[row * p.n + col]);
                } else {
                    v = f32(b[col * p.k + row]);
                }
            }
            Bs[kk * bn4 + nn / 4u][nn % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < bk; kk++) {
            let av = As[kk * bm4 + tm];
            let bv = Bs[kk * bn4 + tn];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = m0 + tm * 4u + i;
        if (row >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + tn * 4u + j;
            if (col < p.n) {
                var v = acc[i][j];
                if (BIAS == 1u) {
                    v += f32(bias[col]);
                }
                let idx = row * p.n + col;
                if (ACC == 1u) {
                    v += f32(c[idx]);
                }
                c[idx] = c_t(v);
            }
        }
    }
}
