// The body of the implicit-GEMM tile kernel, pasted inside the entry points of
// conv/forward_igemm.wgsl (MODE 0) and conv/backward_data_igemm.wgsl (MODE 1); the
// declarations it uses are in conv/igemm.inc.wgsl.
    let tile = linear_group(wid, nwg);
    if (tile >= p.tiles) {
        return;
    }
    let nt = tile % p.ntiles;
    let mt = tile / p.ntiles;
    let s = p.stride;

    // Column tile: groups g0 .. g0 + ngr, channels cbase .. cbase + ncols.
    var g0: u32;
    var j0 = 0u;
    var ncols: u32;
    var ngr = 1u;
    if (p.ntpg > 0u) {
        g0 = nt / p.ntpg;
        j0 = (nt % p.ntpg) * 64u;
        ncols = min(64u, p.gc - j0);
    } else {
        g0 = nt * p.gpt;
        ngr = min(p.gpt, p.groups - g0);
        ncols = ngr * p.gc;
    }
    let cbase = g0 * p.gc + j0;

    // Row tile: its stride class (backward data) and the taps that reach it.
    var sc = 1u;
    if (MODE == 1u) {
        sc = s;
    }
    var cls = 0u;
    for (var c = 1u; c < sc * sc; c++) {
        if (cls_start(c) <= mt) {
            cls = c;
        }
    }
    let py = cls / sc;
    let px = cls % sc;
    let ch = (p.oh - py + sc - 1u) / sc;
    let cw = (p.ow - px + sc - 1u) / sc;
    let count = p.n * ch * cw;
    let mrow0 = (mt - cls_start(cls)) * 64u;
    var ky0 = 0u;
    var kx0 = 0u;
    var nty = p.k;
    var ntx = p.k;
    var oyb = 0;
    var oxb = 0;
    if (MODE == 1u) {
        ky0 = (py + p.pad_top) % s;
        kx0 = (px + p.pad_left) % s;
        nty = (p.k + s - 1u - ky0) / s;
        ntx = (p.k + s - 1u - kx0) / s;
        oyb = i32((py + p.pad_top - ky0) / s);
        oxb = i32((px + p.pad_left - kx0) / s);
    }
    let kg = nty * ntx * p.ga;

    // The slot this thread stages and its 8 pixels m = mb + 8 i. A warp covers 8 slots x
    // 4 pixels: 32-byte runs of channels in memory, distinct banks in As.
    let mb = t % 4u + 4u * ((t / 32u) / 4u);
    let slot = (t / 4u) % 8u + 8u * ((t / 32u) % 4u);
    let lg = slot / BK;
    let kk = slot % BK;
    let slot_used = slot < p.gpt * BK;
    let slot_live = lg < ngr;
    let ach = (g0 + lg) * p.ga;
    var abase: array<u32, 8>;
    var by: array<i32, 8>;
    var bx: array<i32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let ml = mrow0 + mb + 8u * i;
        by[i] = -0x40000000;
        bx[i] = 0;
        abase[i] = 0u;
        if (ml < count) {
            let xx = ml % cw;
            let yy = (ml / cw) % ch;
            let nn = ml / (cw * ch);
            abase[i] = nn * p.ah * p.aw;
            if (MODE == 0u) {
                by[i] = i32(yy * s) - i32(p.pad_top);
                bx[i] = i32(xx * s) - i32(p.pad_left);
            } else {
                by[i] = i32(yy) + oyb;
                bx[i] = i32(xx) + oxb;
            }
        }
    }

    let tn = t % 16u;
    let tm = t / 16u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    var lgj: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        lgj[j] = min((tn * 4u + j) / p.gc, p.gpt - 1u);
    }

    for (var kb = 0u; kb < kg; kb += BK) {
        // Stage the source tile (zero outside the image, past K, or past the groups).
        if (slot_used) {
            let r = kb + kk;
            var dyo = 0;
            var dxo = 0;
            var c = 0u;
            let live = slot_live && r < kg;
            if (live) {
                let tap = r / p.ga;
                c = r % p.ga;
                let tyi = i32(tap / ntx);
                let txi = i32(tap % ntx);
                if (MODE == 0u) {
                    dyo = tyi;
                    dxo = txi;
                } else {
                    dyo = -tyi;
                    dxo = -txi;
                }
            }
            for (var i = 0u; i < 8u; i++) {
                var v = 0.0;
                let iy = by[i] + dyo;
                let ix = bx[i] + dxo;
                if (live && iy >= 0 && iy < i32(p.ah) && ix >= 0 && ix < i32(p.aw)) {
                    v = f32(src[(abase[i] + u32(iy) * p.aw + u32(ix)) * p.ac + ach + c]);
                }
                let m = mb + 8u * i;
                As[slot * 17u + m / 4u][m % 4u] = v;
            }
        }
        // Stage the weight tile.
        let col = t % 64u;
        for (var k2 = t / 64u; k2 < BK; k2 += 4u) {
            let r = kb + k2;
            var v = 0.0;
            if (col < ncols && r < kg) {
                if (MODE == 0u) {
                    v = w[r * p.wcout + cbase + col];
                } else {
                    let lgc = col / p.gc;
                    let ci = j0 + col - lgc * p.gc;
                    let g = g0 + lgc;
                    let tap = r / p.ga;
                    let jo = r % p.ga;
                    let ky = ky0 + s * (tap / ntx);
                    let kx = kx0 + s * (tap % ntx);
                    v = w[((ky * p.k + kx) * p.wgi + ci) * p.wcout + g * p.wgo + jo];
                }
            }
            Bs[k2 * 16u + col / 4u][col % 4u] = v;
        }
        workgroupBarrier();
        if (UNI == 1u) {
            let ab = lgj[0] * BK;
            for (var q = 0u; q < BK; q++) {
                let av = As[(ab + q) * 17u + tm];
                let bv = Bs[q * 16u + tn];
                acc[0] += av.x * bv;
                acc[1] += av.y * bv;
                acc[2] += av.z * bv;
                acc[3] += av.w * bv;
            }
        } else {
            for (var q = 0u; q < BK; q++) {
                let bv = Bs[q * 16u + tn];
                for (var j = 0u; j < 4u; j++) {
                    let av = As[(lgj[j] * BK + q) * 17u + tm];
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
        let ml = mrow0 + tm * 4u + i;
        if (ml >= count) {
            break;
        }
        let xx = ml % cw;
        let yy = (ml / cw) % ch;
        let nn = ml / (cw * ch);
        let oy = py + sc * yy;
        let ox = px + sc * xx;
        let obase = ((nn * p.oh + oy) * p.ow + ox) * p.cout + cbase;
        for (var j = 0u; j < 4u; j++) {
            let col = tn * 4u + j;
            if (col < ncols) {
                var v = acc[i][j];
                if (BIAS == 1u) {
                    v += bias[cbase + col];
                }
                out[obase + col] = act_t(v);
            }
        }
    }
