// Softmax cross-entropy with label smoothing, forward and backward in one pass.
// One workgroup per row of logits [N, K]; target q = (1 - eps) * onehot(label) + eps / K.
//   loss[n]      = logsumexp(z) - sum_k q_k z_k
//   dlogits[n,k] = dloss[n] * (softmax(z)_k - q_k)
// SCALED = 1 (mixed precision): dlogits is also multiplied by the dynamic loss scale,
// word 0 of the loss scaler's state (f32 bits, src/train/loss_scale.rs), so the backward
// carries scaled gradients; the loss itself is not scaled. SCALED = 0 never reads
// `scaler` (the launcher binds a placeholder).
//!include common/grid.wgsl

override SCALED: u32 = 0u;

struct Params {
    rows: u32,
    k: u32,
    eps: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/loss) checks
// logits = dlogits = rows*k, labels = loss = dloss = rows elements. row < rows; every
// logits/dlogits index is row*k + j with j < k; labels, loss, dloss are read at row. A
// label >= k (the caller validates labels) is never equal to a class index, so it only
// drops the one-hot term, it indexes nothing. red[t], red[t + s] with t < s <= 128.
// scaler[0] only with SCALED = 1 (the launcher checks the state is non-empty).
// Divisions: floats only. Loops: j += 256 up to k, s halves from 128.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(6) var<storage, read> scaler: array<u32>;

var<workgroup> red: array<f32, 256>;

fn reduce_max(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s /= 2u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s /= 2u) {
        if (t < s) {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn softmax_xent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) t: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.k;
    let label = labels[row];
    var mx = -3.4e38;
    for (var k = t; k < p.k; k += 256u) {
        mx = max(mx, logits[base + k]);
    }
    mx = reduce_max(t, mx);
    let off = p.eps / f32(p.k);
    var se = 0.0;
    var qz = 0.0;
    for (var k = t; k < p.k; k += 256u) {
        let z = logits[base + k] - mx;
        se += exp(z);
        let q = off + select(0.0, 1.0 - p.eps, k == label);
        qz += q * z;
    }
    se = reduce_sum(t, se);
    qz = reduce_sum(t, qz);
    let lse = log(se);
    if (t == 0u) {
        loss[row] = lse - qz;
    }
    var g = dloss[row];
    if (SCALED == 1u) {
        g = g * bitcast<f32>(scaler[0]);
    }
    for (var k = t; k < p.k; k += 256u) {
        let z = logits[base + k] - mx;
        let q = off + select(0.0, 1.0 - p.eps, k == label);
        dlogits[base + k] = g * (exp(z - lse) - q);
    }
}
