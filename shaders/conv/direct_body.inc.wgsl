// The body of the direct kernel, pasted inside the entry points of
// conv/forward_direct.wgsl (MODE 0) and conv/backward_data_direct.wgsl (MODE 1); the
// declarations it uses are in conv/direct.inc.wgsl.
    let idx = linear_group(wid, nwg) * 256u + lid;
    if (idx >= p.total) {
        return;
    }
    let co = idx % p.cout;
    let rest = idx / p.cout;
    let sidx = rest % p.strips;
    let oy = (rest / p.strips) % p.oh;
    let nn = rest / (p.strips * p.oh);
    let s = p.stride;
    var acc = vec4<f32>(0.0);
    var ox: vec4<u32>;

    if (MODE == 0u) {
        ox = vec4<u32>(sidx * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
        let g = co / p.go;
        let cb = g * p.gi;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = i32(oy * s + ky) - i32(p.pad_top);
            if (iy < 0 || iy >= i32(p.ah)) {
                continue;
            }
            let rowb = (nn * p.ah + u32(iy)) * p.aw;
            for (var kx = 0u; kx < p.k; kx++) {
                for (var c = 0u; c < p.gi; c++) {
                    let wv = w[((ky * p.k + kx) * p.gi + c) * p.wcout + co];
                    for (var q = 0u; q < 4u; q++) {
                        let ix = i32(ox[q] * s + kx) - i32(p.pad_left);
                        if (ox[q] < p.ow && ix >= 0 && ix < i32(p.aw)) {
                            acc[q] += f32(src[(rowb + u32(ix)) * p.ac + cb + c]) * wv;
                        }
                    }
                }
            }
        }
    } else {
        // oy is the input row iy, ox[q] the input columns; the source is dy.
        var px = 0u;
        var b = sidx;
        if (sidx >= p.strips0) {
            px = 1u;
            b = sidx - p.strips0;
        }
        ox = vec4<u32>(px) + s * (vec4<u32>(4u * b) + vec4<u32>(0u, 1u, 2u, 3u));
        let g = co / p.gi;
        let cl = co % p.gi;
        let ky0 = (oy + p.pad_top) % s;
        let kx0 = (px + p.pad_left) % s;
        for (var ky = ky0; ky < p.k; ky += s) {
            let sy = i32(oy + p.pad_top) - i32(ky);
            if (sy < 0) {
                break;
            }
            let yy = sy / i32(s);
            if (yy >= i32(p.ah)) {
                continue;
            }
            let rowb = (nn * p.ah + u32(yy)) * p.aw;
            for (var kx = kx0; kx < p.k; kx += s) {
                let xb = (i32(px + p.pad_left) - i32(kx)) / i32(s) + i32(4u * b);
                for (var j = 0u; j < p.go; j++) {
                    let wv = w[((ky * p.k + kx) * p.gi + cl) * p.wcout + g * p.go + j];
                    for (var q = 0u; q < 4u; q++) {
                        let xx = xb + i32(q);
                        if (ox[q] < p.ow && xx >= 0 && xx < i32(p.aw)) {
                            acc[q] += f32(src[(rowb + u32(xx)) * p.ac + g * p.go + j]) * wv;
                        }
                    }
                }
            }
        }
    }

    var bv = 0.0;
    if (BIAS == 1u) {
        bv = bias[co];
    }
    for (var q = 0u; q < 4u; q++) {
        if (ox[q] < p.ow) {
            out[((nn * p.oh + oy) * p.ow + ox[q]) * p.cout + co] = act_t(acc[q] + bv);
        }
    }
