//! The moments analysis (paper 3, SPEC §D; paper 2's LN collapse): host statistics on
//! known inputs, the GPU kernels against f64 references, one layer of propagation against
//! an f64 host computation, and the paper's qualitative checks at CI size on lavapipe.
//!
//! CI sizes are far below the paper's (width 512, batch 64, depth 200-500, 1000
//! simulations), so the acceptance bands are calibrated for these sizes; each check says
//! what it expects and why. docs/moments.md has the paper-size numbers.

mod common;

use effnet::gpu::Recorder;
use effnet::moments::analysis::col;
use effnet::moments::kernels::{self, MomentPlan, MomentScratch};
use effnet::moments::nets::standardize;
use effnet::moments::stats::{self, Summary};
use effnet::moments::{self, InputSource, Loc, Net, NetConfig, Propagator, Standardize};
use effnet::util::Rng;

// ---------------------------------------------------------------------------------------
// Host statistics on known inputs.

#[test]
fn percentiles_and_summary_on_known_inputs() {
    let v: Vec<f64> = (1..=5).map(|i| i as f64).collect();
    // numpy.percentile([1,2,3,4,5], 16) = 1.64, 84 -> 4.36, 50 -> 3.
    assert!((stats::percentile(&v, 16.0) - 1.64).abs() < 1e-12);
    assert!((stats::percentile(&v, 84.0) - 4.36).abs() < 1e-12);
    assert!((stats::percentile(&v, 50.0) - 3.0).abs() < 1e-12);
    assert_eq!(stats::percentile(&v, 0.0), 1.0);
    assert_eq!(stats::percentile(&v, 100.0), 5.0);
    // Order does not matter; non-finite values are ignored.
    let w = [5.0, f64::NAN, 1.0, 4.0, 2.0, 3.0, f64::INFINITY];
    assert!((stats::percentile(&w, 16.0) - 1.64).abs() < 1e-12);
    let s = Summary::of(&w);
    assert_eq!(s.n, 5);
    assert!((s.mean - 3.0).abs() < 1e-12);
    assert!((s.std - 2.5f64.sqrt()).abs() < 1e-12);
    assert!((s.p84 - 4.36).abs() < 1e-12);
    let one = Summary::of(&[7.0]);
    assert_eq!((one.mean, one.std, one.p16, one.p84), (7.0, 0.0, 7.0, 7.0));
    assert!(Summary::of(&[f64::NAN]).mean.is_nan());
}

fn sym_from(ev: &[f64], rng: &mut Rng) -> Vec<f64> {
    // Q diag(ev) Q^T with Q from Gram-Schmidt on a random matrix.
    let n = ev.len();
    let mut q: Vec<Vec<f64>> = Vec::new();
    while q.len() < n {
        let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        for b in &q {
            let d: f64 = v.iter().zip(b).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(b).for_each(|(a, b)| *a -= d * b);
        }
        let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= nv);
        q.push(v);
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = (0..n).map(|k| q[k][i] * ev[k] * q[k][j]).sum();
        }
    }
    m
}

#[test]
fn effective_rank_on_known_spectra() {
    let f32s = |m: &[f64]| m.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    // Diagonal: reff = trace / max.
    let d = [1.0, 2.0, 3.0, 4.0];
    let mut m = vec![0.0; 16];
    for i in 0..4 {
        m[i * 4 + i] = d[i];
    }
    assert!((stats::effective_rank(&f32s(&m), 4) - 2.5).abs() < 1e-9);
    // Identity: reff = n. Rank one: reff = 1.
    let n = 37;
    let id: Vec<f32> = (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
        .collect();
    assert!((stats::effective_rank(&id, n) - n as f64).abs() < 1e-9);
    let u: Vec<f64> = (0..n).map(|i| (i as f64 * 0.3).sin() + 0.2).collect();
    let r1: Vec<f32> = (0..n * n).map(|k| (u[k / n] * u[k % n]) as f32).collect();
    assert!((stats::effective_rank(&r1, n) - 1.0).abs() < 1e-5);
    // Rotated known spectra, including a near-degenerate top pair and a wide spread.
    let mut rng = Rng::new(11);
    for ev in [
        (1..=40).map(|i| i as f64).collect::<Vec<_>>(),
        (0..60)
            .map(|i| if i < 2 { 10.0 - i as f64 * 1e-3 } else { 1.0 })
            .collect(),
        (0..50).map(|i| 0.8f64.powi(i)).collect(),
    ] {
        let m = sym_from(&ev, &mut rng);
        let want = ev.iter().sum::<f64>() / ev.iter().cloned().fold(0.0, f64::max);
        let got = stats::effective_rank(&f32s(&m), ev.len());
        assert!(
            (got - want).abs() < 1e-4 * want,
            "reff {got} vs {want} for spectrum {:?}",
            &ev[..3]
        );
        let jac = stats::eigenvalues_jacobi(&m, ev.len());
        let mut sorted = ev.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for (a, b) in jac.iter().zip(&sorted) {
            assert!(
                (a - b).abs() < 1e-9 * sorted[sorted.len() - 1],
                "{a} vs {b}"
            );
        }
    }
    // Random Wishart matrices against the Jacobi reference.
    for n in [5, 64, 130] {
        let rows = 3 * n;
        let x: Vec<f64> = (0..rows * n).map(|_| rng.normal()).collect();
        let mut m = vec![0.0; n * n];
        for r in 0..rows {
            for i in 0..n {
                for j in 0..n {
                    m[i * n + j] += x[r * n + i] * x[r * n + j];
                }
            }
        }
        let jac = stats::eigenvalues_jacobi(&m, n);
        let lmax = stats::lambda_max(&f32s(&m), n);
        assert!(
            (lmax - jac[n - 1]).abs() < 1e-5 * jac[n - 1],
            "n {n}: {lmax} vs {}",
            jac[n - 1]
        );
    }
    assert!(stats::effective_rank(&[0.0; 9], 3).is_nan());
}

#[test]
fn fits_recover_known_laws() {
    let x: Vec<f64> = (1..=50).map(|i| i as f64).collect();
    let expo: Vec<f64> = x.iter().map(|l| 2.0 * (0.15 * l).exp()).collect();
    let f = stats::exponential_fit(&x, &expo);
    assert!((f.slope - 0.15).abs() < 1e-12 && (f.r2 - 1.0).abs() < 1e-12);
    let pow: Vec<f64> = x.iter().map(|l| 3.0 * l.powf(0.65)).collect();
    let p = stats::power_law_fit(&x, &pow);
    assert!((p.slope - 0.65).abs() < 1e-12 && (p.intercept - 3f64.ln()).abs() < 1e-12);
    // A power law is fitted better in log-log than as an exponential.
    assert!(stats::exponential_fit(&x, &pow).r2 < p.r2);
    let t = stats::tridiagonal_max_eigenvalue(&[2.0, 2.0, 2.0], &[-1.0, -1.0]);
    assert!((t - (2.0 + 2f64.sqrt())).abs() < 1e-12);
}

// ---------------------------------------------------------------------------------------
// Kernels against f64 references.

#[test]
fn wrap_pad_and_crop_match_the_host() {
    let gpu = common::gpu();
    let (n, h, w, c, p) = (2, 5, 4, 3, 2);
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..n * h * w * c).map(|_| rng.normal() as f32).collect();
    let xt = gpu.upload(&x, &[n, h, w, c]).unwrap();
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let padded = gpu.zeros(&[n, hp, wp, c]).unwrap();
    let (ho, wo) = (3, 2);
    let cropped = gpu.zeros(&[n, ho, wo, c]).unwrap();
    let mut rec = Recorder::new(gpu);
    kernels::wrap_pad(&mut rec, &xt, &padded, [n, h, w, c], p).unwrap();
    kernels::crop(&mut rec, &padded, &cropped, n, (hp, wp), (ho, wo), c, 1, 2).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let got = gpu.read(&padded).unwrap();
    for b in 0..n {
        for y in 0..hp {
            for xx in 0..wp {
                for ch in 0..c {
                    let sy = (y + h - p) % h;
                    let sx = (xx + 2 * w - p) % w;
                    assert_eq!(
                        got[((b * hp + y) * wp + xx) * c + ch],
                        x[((b * h + sy) * w + sx) * c + ch]
                    );
                }
            }
        }
    }
    let got = gpu.read(&cropped).unwrap();
    let pad = gpu.read(&padded).unwrap();
    for b in 0..n {
        for y in 0..ho {
            for xx in 0..wo {
                for ch in 0..c {
                    assert_eq!(
                        got[((b * ho + y) * wo + xx) * c + ch],
                        pad[((b * hp + 1 + 2 * y) * wp + 1 + 2 * xx) * c + ch]
                    );
                }
            }
        }
    }
}

#[test]
fn gpu_moments_and_weights_match_f64() {
    let gpu = common::gpu();
    let mut rng = Rng::new(5);
    // Rows past one chunk (the split path), a channel count that is no power of two, and
    // channel means large against the spread (centering must not cancel).
    for (m, c) in [(5000usize, 37usize), (64, 8), (3, 130)] {
        let offs: Vec<f64> = (0..c).map(|k| 3.0 * (k as f64 * 0.7).sin()).collect();
        let data: Vec<f32> = (0..m * c)
            .map(|i| (offs[i % c] + 0.5 * rng.normal()) as f32)
            .collect();
        let t = gpu.upload(&data, &[m, c]).unwrap();
        let plan = MomentPlan::new(m, c);
        let ws = MomentScratch {
            part: gpu.zeros(&[plan.scratch_len()]).unwrap(),
            mean: gpu.zeros(&[c]).unwrap(),
        };
        let record = gpu.zeros(&[10]).unwrap();
        let centered = gpu.zeros(&[m, c]).unwrap();
        let cov = gpu.zeros(&[c, c]).unwrap();
        let mut rec = Recorder::new(gpu);
        kernels::moments(&mut rec, &t, &plan, true, &ws, &record, 0).unwrap();
        kernels::covariance(&mut rec, &t, &plan, &ws, &centered, &cov).unwrap();
        kernels::moments(&mut rec, &t, &plan, false, &ws, &record, 5).unwrap();
        rec.submit().unwrap().wait(gpu).unwrap();
        let got = gpu.read(&record).unwrap();
        let d: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        let want = stats::moments_ref(&d, c);
        for k in 0..5 {
            let rel = (got[k] as f64 - want[k]).abs() / want[k].abs().max(1e-12);
            assert!(
                rel < 2e-4,
                "m {m} c {c} moment {k}: {} vs {}",
                got[k],
                want[k]
            );
        }
        // Raw mode: nu1 and nu2 only.
        assert!((got[6] as f64 - want[1]).abs() < 2e-4 * want[1]);
        if m > c {
            let r = stats::effective_rank(&gpu.read(&cov).unwrap(), c);
            let r_ref = stats::effective_rank_ref(&d, c);
            assert!((r - r_ref).abs() < 1e-3 * r_ref, "reff {r} vs {r_ref}");
        }
    }
    // Gaussian weights: deterministic per key, fresh per key, N(0, std^2).
    let n = 200_001;
    let w1 = gpu.zeros(&[n]).unwrap();
    let w2 = gpu.zeros(&[n]).unwrap();
    let w3 = gpu.zeros(&[n]).unwrap();
    let mut rec = Recorder::new(gpu);
    kernels::gen_normal(&mut rec, &w1, 42, 0.5).unwrap();
    kernels::gen_normal(&mut rec, &w2, 42, 0.5).unwrap();
    kernels::gen_normal(&mut rec, &w3, 43, 0.5).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let (a, b, c3) = (
        gpu.read(&w1).unwrap(),
        gpu.read(&w2).unwrap(),
        gpu.read(&w3).unwrap(),
    );
    assert_eq!(a, b);
    let same = a.iter().zip(&c3).filter(|(x, y)| x == y).count();
    assert!(same < 10, "{same} equal weights across keys");
    let d: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    let kurt = d.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
    assert!(mean.abs() < 0.005, "mean {mean}");
    assert!((var / 0.25 - 1.0).abs() < 0.01, "var {var}");
    assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    // Neighbouring values (a Box-Muller pair, and across pairs) are uncorrelated.
    let lag =
        |k: usize| d.iter().zip(&d[k..]).map(|(x, y)| x * y).sum::<f64>() / (n - k) as f64 / var;
    assert!(
        lag(1).abs() < 0.01 && lag(2).abs() < 0.01,
        "{} {}",
        lag(1),
        lag(2)
    );
}

// ---------------------------------------------------------------------------------------
// One layer against an f64 host computation.

/// Periodic convolution, NHWC, weights [k, k, cin, cout], output centred at stride * o.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f64],
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    wt: &[f64],
    k: usize,
    cout: usize,
    stride: usize,
) -> Vec<f64> {
    let (ho, wo) = (h / stride, w / stride);
    let p = k / 2;
    let mut y = vec![0.0; n * ho * wo * cout];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ky in 0..k {
                    for kx in 0..k {
                        let sy = (stride * oy + ky + h - p) % h;
                        let sx = (stride * ox + kx + w - p) % w;
                        for ci in 0..cin {
                            let v = x[((b * h + sy) * w + sx) * cin + ci];
                            for co in 0..cout {
                                y[((b * ho + oy) * wo + ox) * cout + co] +=
                                    v * wt[((ky * k + kx) * cin + ci) * cout + co];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

fn nu2(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64
}

fn close(a: f64, b: f64, rel: f64, what: &str) {
    assert!(
        (a - b).abs() <= rel * b.abs().max(1e-9),
        "{what}: GPU {a} vs f64 {b}"
    );
}

#[test]
fn one_bn_layer_matches_an_f64_host_computation() {
    let gpu = common::gpu();
    let (n, h0, cin, c, k) = (4, 8, 2, 8, 3);
    let mut cfg = NetConfig::new(Net::BnFf);
    cfg.depth = 1;
    cfg.every = 1;
    cfg.width = c;
    cfg.batch = n;
    cfg.kernel = k;
    cfg.seed = 9;
    let input = InputSource::gaussian(h0, h0, cin);
    let mut prop = Propagator::new(gpu, &cfg, &input).unwrap();
    let sim = prop.simulate(0, &input).unwrap();
    let (xin, dxin) = prop.last_input();
    let xin: Vec<f64> = xin.iter().map(|&v| v as f64).collect();
    let dxin: Vec<f64> = dxin.iter().map(|&v| v as f64).collect();
    let (w0t, wt) = prop.weights();
    let w0: Vec<f64> = gpu.read(w0t).unwrap().iter().map(|&v| v as f64).collect();
    let w1: Vec<f64> = gpu.read(wt).unwrap().iter().map(|&v| v as f64).collect();
    // The input is standardized per channel.
    let m_in = stats::moments_ref(&xin, cin);
    close(m_in[2], 1.0, 1e-6, "mu2(x_in)");
    close(sim.input_mu2, m_in[2], 1e-9, "recorded mu2(x_in)");
    close(sim.input_dx_nu2, nu2(&dxin), 1e-9, "recorded nu2(dx_in)");
    // First layer: LeCun weights, stride 2.
    let w0_var = nu2(&w0);
    close(
        w0_var,
        1.0 / (9.0 * cin as f64),
        0.25,
        "LeCun weight variance",
    );
    let h = h0 / 2;
    let x0 = conv_ref(&xin, n, h0, h0, cin, &w0, k, c, 2);
    let dx0 = conv_ref(&dxin, n, h0, h0, cin, &w0, k, c, 2);
    close(sim.log_x0_nu2, nu2(&x0).ln(), 1e-4, "ln nu2(x^0)");
    close(sim.log_dx0_nu2, nu2(&dx0).ln(), 1e-4, "ln nu2(dx^0)");
    // Layer 1: periodic conv, BN (eps 1e-3) with dx divided by the same std, ReLU.
    let y = conv_ref(&x0, n, h, h, c, &w1, k, c, 1);
    let dy = conv_ref(&dx0, n, h, h, c, &w1, k, c, 1);
    let mv = stats::moments_ref(&y, c);
    let rows = (n * h * h) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for (i, v) in y.iter().enumerate() {
        mean[i % c] += v / rows;
    }
    for (i, v) in y.iter().enumerate() {
        var[i % c] += (v - mean[i % c]).powi(2) / rows;
    }
    let z: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, v)| (v - mean[i % c]) / (var[i % c] + 1e-3).sqrt())
        .collect();
    let dz: Vec<f64> = dy
        .iter()
        .enumerate()
        .map(|(i, v)| v / (var[i % c] + 1e-3).sqrt())
        .collect();
    let a: Vec<f64> = z.iter().map(|v| v.max(0.0)).collect();
    let da: Vec<f64> = dz
        .iter()
        .zip(&z)
        .map(|(d, v)| if *v > 0.0 { *d } else { 0.0 })
        .collect();
    let per_loc: [(Loc, &[f64], &[f64]); 4] = [
        (Loc::In, &x0, &dx0),
        (Loc::Conv, &y, &dy),
        (Loc::Norm, &z, &dz),
        (Loc::Act, &a, &da),
    ];
    let r0 = sim.input_dx_nu2 / sim.input_mu2;
    for (j, (loc, xs, dxs)) in per_loc.iter().enumerate() {
        assert_eq!(sim.locs[j], *loc);
        let want = stats::moments_ref(xs, c);
        for (kk, (&got, &w)) in sim.x[0][j].iter().zip(&want).enumerate() {
            // Relative, plus an absolute floor for the ~0 channel-constant power of a BN
            // output.
            assert!(
                (got - w).abs() <= 2e-4 * w.abs() + 1e-6,
                "{loc:?} moment {kk}: GPU {got} vs f64 {w}"
            );
        }
        close(
            sim.log_dx[0][j],
            nu2(dxs).ln(),
            1e-4,
            &format!("ln nu2(dx) {loc:?}"),
        );
        let chi = ((nu2(dxs) / want[2]) / r0).sqrt();
        close(sim.chi(0, j), chi, 2e-4, &format!("chi {loc:?}"));
    }
    // The spatial-mean (instance) power at the conv output.
    let mut sm = vec![0.0; n * c];
    for b in 0..n {
        for pix in 0..h * h {
            for ch in 0..c {
                sm[b * c + ch] += y[(b * h * h + pix) * c + ch] / (h * h) as f64;
            }
        }
    }
    close(
        sim.inst[0][1],
        stats::moments_ref(&sm, c)[2],
        2e-4,
        "instance power",
    );
    assert!(mv[1] > 0.0);
    // Effective ranks after the activation.
    close(
        sim.reff_x[0],
        stats::effective_rank_ref(&a, c),
        2e-3,
        "reff(x)",
    );
    close(
        sim.reff_dx[0],
        stats::effective_rank_ref(&da, c),
        2e-3,
        "reff(dx)",
    );
    // The analytic activation increment for this layer's own z and dz.
    let table = moments::net_table(&cfg, &[sim]);
    assert!(table.get(&col("chi", Loc::Act)).is_some());
}

#[test]
fn inputs_are_standardized_per_feature_or_per_channel() {
    // 6 samples of 2 x 2 x 2 (NHWC, 8 features, 2 channels): feature f has mean 10 f and
    // spread f + 1, feature 3 is the same in every sample (a blank border pixel).
    let (n, per, c) = (6, 8, 2);
    let mut rng = Rng::new(3);
    let x: Vec<f64> = (0..n * per)
        .map(|i| match i % per {
            3 => 5.0,
            f => 10.0 * f as f64 + (f as f64 + 1.0) * rng.normal(),
        })
        .collect();
    let col_stats = |v: &[f32], groups: usize, g: usize| {
        let vals: Vec<f64> = v
            .iter()
            .enumerate()
            .filter(|(k, _)| k % groups == g)
            .map(|(_, &a)| a as f64)
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|a| (a - m).powi(2)).sum::<f64>() / vals.len() as f64;
        (m, var)
    };
    let pf = standardize(&x, n, per, c, Standardize::PerFeature);
    for f in 0..per {
        let (m, var) = col_stats(&pf, per, f);
        if f == 3 {
            assert!(pf.iter().skip(3).step_by(per).all(|&a| a == 0.0));
        } else {
            assert!(
                m.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
                "feature {f}: {m} {var}"
            );
        }
    }
    let pc = standardize(&x, n, per, c, Standardize::PerChannel);
    for ch in 0..c {
        let (m, var) = col_stats(&pc, c, ch);
        assert!(
            m.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "channel {ch}: {m} {var}"
        );
    }
    // Per channel leaves each feature its own mean: centred per feature (SPEC §D.2), the
    // power is well below 1.
    let pcd: Vec<f64> = pc.iter().map(|&a| a as f64).collect();
    assert!(stats::moments_ref(&pcd, per)[2] < 0.5);
    assert_eq!(Standardize::paper(1), Standardize::PerFeature);
    assert_eq!(Standardize::paper(3), Standardize::PerChannel);
}

#[test]
fn fully_connected_chi_is_normalized_per_feature() {
    // k = 1: images are flattened to 1 x 1 x 32 features. The paper standardizes each
    // feature over the batch and normalizes chi by mu2(x^0) centred per feature.
    let gpu = common::gpu();
    let input = InputSource::gaussian(4, 4, 2);
    let mut cfg = small(Net::BnFf, 1, 8, 4, 1);
    assert_eq!(cfg.standardization(), Standardize::PerFeature);
    let mut prop = Propagator::new(gpu, &cfg, &input).unwrap();
    let sim = prop.simulate(0, &input).unwrap();
    let x: Vec<f64> = prop.last_input().0.iter().map(|&v| v as f64).collect();
    close(stats::moments_ref(&x, 32)[2], 1.0, 1e-5, "mu2 per feature");
    close(sim.input_mu2, 1.0, 1e-5, "recorded mu2(x^0)");

    // Per channel (the convolutional convention) on flattened images: over a batch of 4
    // each feature keeps its own mean, so mu2(x^0) centred per feature is about 3/4, and
    // chi is normalized by that, not by the per-channel 1.
    cfg.standardize = Some(Standardize::PerChannel);
    let mut prop = Propagator::new(gpu, &cfg, &input).unwrap();
    let sim = prop.simulate(0, &input).unwrap();
    let (xs, dxs) = prop.last_input();
    let x: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
    close(stats::moments_ref(&x, 2)[2], 1.0, 1e-5, "mu2 per channel");
    let per_feature = stats::moments_ref(&x, 32)[2];
    assert!(per_feature < 0.95, "mu2 per feature {per_feature}");
    close(sim.input_mu2, per_feature, 1e-9, "recorded mu2(x^0)");
    let dx0 = nu2(&dxs.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let j = sim.locs.iter().position(|&l| l == Loc::Act).unwrap();
    let want = (((sim.log_dx[0][j]).exp() / sim.x[0][j][2]) / (dx0 / per_feature)).sqrt();
    close(sim.chi(0, j), want, 1e-9, "chi normalized per feature");
}

#[test]
fn statistics_ignore_non_finite_values() {
    let s = Summary::of(&[1.0, f64::NAN, 3.0, f64::INFINITY]);
    assert_eq!((s.n, s.mean), (2, 2.0));
    assert!(Summary::of(&[f64::NAN]).mean.is_nan());
    assert_eq!(stats::percentile(&[f64::NAN, 1.0, 2.0], 100.0), 2.0);
    // A non-finite matrix gives NaN eigenvalues, not a panic in the sort.
    let ev = stats::eigenvalues_jacobi(&[1.0, f64::NAN, f64::NAN, 2.0], 2);
    assert_eq!(ev.len(), 2);
    assert!(stats::effective_rank(&[f32::NAN, 0.0, 0.0, 1.0], 2).is_nan());
}

#[test]
fn a_diverging_network_gives_a_clear_message() {
    // Width 1 without bias: once a layer's weight is negative, every input of the batch
    // maps to 0 after the ReLU and chi is undefined from there on.
    let gpu = common::gpu();
    let input = InputSource::gaussian(4, 4, 1);
    let mut cfg = small(Net::Vanilla, 40, 1, 8, 1);
    cfg.reff = false;
    let run = moments::run_net(gpu, &cfg, &input, 4, |_, _| {}).unwrap();
    let warning = run.divergence_warning().expect("a width-1 ReLU net dies");
    eprintln!("{warning}");
    assert!(warning.contains("--width"), "{warning}");
    assert_eq!(run.fits.diverged.len(), run.diverged().len());
    // Rows summarize only the simulations still finite there; the deepest has none.
    let chi = run.table.get("chi").unwrap();
    assert!(chi[0].n >= 1 && chi[0].mean.is_finite());
    assert_eq!(chi[chi.len() - 1].n, 0);
    let dir = std::env::temp_dir().join(format!("effnet-moments-div-{}", std::process::id()));
    moments::output::write_net(&dir, &cfg, &run.table, &run.fits).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let listed = summary["fits"]["diverged"].as_array().unwrap();
    assert_eq!(listed.len(), run.diverged().len());
    assert!(listed[0]["depth"].as_u64().unwrap() >= 1, "{listed:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Every simulation dead before the first recorded row: an error that names the fix.
    cfg.every = 20;
    let err = moments::run_net(gpu, &cfg, &input, 4, |_, _| {})
        .err()
        .expect("nothing to summarize")
        .to_string();
    assert!(
        err.contains("diverges in every simulation") && err.contains("--width"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// The paper's qualitative checks at CI size (Gaussian inputs: no dataset needed).

fn small(net: Net, depth: usize, width: usize, batch: usize, kernel: usize) -> NetConfig {
    let mut cfg = NetConfig::new(net);
    cfg.depth = depth;
    cfg.width = width;
    cfg.batch = batch;
    cfg.kernel = kernel;
    cfg.every = 1;
    cfg.seed = 1;
    cfg
}

#[test]
fn bn_ff_sensitivity_grows_exponentially() {
    // Conv k = 3 (periodic), 8 x 8 positions, width 16, batch 8, 30 layers, 3 simulations.
    let gpu = common::gpu();
    let cfg = small(Net::BnFf, 30, 16, 8, 3);
    let input = InputSource::gaussian(16, 16, 1);
    let run = moments::run_net(gpu, &cfg, &input, 3, |_, _| {}).unwrap();
    let f = &run.fits;
    eprintln!("bn-ff fits: {f:?}");
    // log chi is linear in depth (the paper's exponential explosion).
    assert!(
        f.log_chi_vs_depth.r2 > 0.99,
        "R^2 {}",
        f.log_chi_vs_depth.r2
    );
    assert!(f.log_chi_vs_depth.r2 > f.log_chi_vs_log_depth.r2);
    // Per-layer increment: 1.16-1.23 in the issue (paper sizes). At this width and batch
    // the BN step stays ~1.00 over 30 layers (at width 512 its fat-tail growth sets in
    // after ~10 layers) and the total is the activation step ~1.21, inside the band.
    assert!(
        (1.16..=1.23).contains(&f.chi_factor_per_layer),
        "chi x{} per layer",
        f.chi_factor_per_layer
    );
    // Activation step in the first layers: sqrt(1 / (1 - 1/pi)) = 1.2114 for a symmetric
    // pre-activation (z is BN-normalized and nearly Gaussian there).
    let analytic = (1.0 / (1.0 - 1.0 / std::f64::consts::PI)).sqrt();
    assert!(
        (f.dchi_act_first - analytic).abs() < 0.02,
        "activation step {} vs {analytic}",
        f.dchi_act_first
    );
    // z stays close to Gaussian early on: mu4 ~ 3, nu1(|z|) ~ sqrt(2/pi) = 0.798.
    assert!((f.mu4_z.0 - 3.0).abs() < 0.4, "mu4(z) {}", f.mu4_z.0);
    assert!((f.nu1_z.0 - 0.798).abs() < 0.03, "nu1(|z|) {}", f.nu1_z.0);
    // The 16-84 band brackets the mean.
    for s in run.table.get("chi").unwrap() {
        assert!(s.p16 <= s.mean * 1.5 && s.p84 >= s.mean / 1.5, "{s:?}");
    }
}

#[test]
fn bn_res_sensitivity_follows_a_power_law() {
    // Fully connected (k = 1), width 64, batch 64, 80 residual units of 2 x [BN, ReLU,
    // fc], 3 simulations. Paper (width 512, 500 units): tau = 0.652.
    let gpu = common::gpu();
    let mut cfg = small(Net::BnRes, 80, 64, 64, 1);
    cfg.reff = false;
    let input = InputSource::gaussian(28, 28, 1);
    let run = moments::run_net(gpu, &cfg, &input, 3, |_, _| {}).unwrap();
    let f = &run.fits;
    eprintln!("bn-res fits: {f:?}");
    // A power law in depth fits better than an exponential, and well.
    assert!(
        f.log_chi_vs_log_depth.r2 > f.log_chi_vs_depth.r2,
        "power R^2 {} vs exponential R^2 {}",
        f.log_chi_vs_log_depth.r2,
        f.log_chi_vs_depth.r2
    );
    assert!(
        f.log_chi_vs_log_depth.r2 > 0.95,
        "{:?}",
        f.log_chi_vs_log_depth
    );
    // The exponent: the paper's tau from the increments and the direct log-log slope. At
    // 80 units the chi curve is still bending into its asymptote (the log-log slope
    // underestimates tau), hence the wider band on the slope.
    let tau = f.tau.unwrap();
    assert!((0.5..=0.85).contains(&tau), "tau {tau}");
    let slope = f.log_chi_vs_log_depth.slope;
    assert!((0.35..=0.85).contains(&slope), "log-log slope {slope}");
    // The first branch layer's increment ~ 1.2-1.25 (paper: 1.232).
    assert!((1.18..=1.28).contains(&f.dchi_mean), "dchi {}", f.dchi_mean);
}

#[test]
fn vanilla_signal_collapses_to_one_dimension() {
    // Fully connected, width 64, batch 64, 200 layers, moments every 10 layers.
    let gpu = common::gpu();
    let mut cfg = small(Net::Vanilla, 200, 64, 64, 1);
    cfg.every = 10;
    let input = InputSource::gaussian(28, 28, 1);
    let run = moments::run_net(gpu, &cfg, &input, 3, |_, _| {}).unwrap();
    let f = &run.fits;
    eprintln!("vanilla fits: {f:?}");
    // Paper (FC): r_eff(x) 5.6 -> 1.01 at l = 200; delta chi -> 1.
    assert!(f.reff_x.1 < 1.2, "reff(x) at depth 200: {}", f.reff_x.1);
    assert!(f.reff_x.0 > 2.0 * f.reff_x.1, "reff(x) {:?}", f.reff_x);
    assert!(
        (f.dchi_last_half - 1.0).abs() < 0.02,
        "dchi {}",
        f.dchi_last_half
    );
    // The log-normal diffusion of nu2(x^l) (SPEC §D.4, Fig. 2): negative drift and a
    // spread growing like sqrt(l). For this width the per-layer log increment has variance
    // ~5 / width, so at depth 100 the std is ~2.8 and the mean ~-3.9 (10 simulations).
    let mut cfg = small(Net::Vanilla, 100, 64, 64, 1);
    cfg.every = 10;
    cfg.reff = false;
    let run = moments::run_net(gpu, &cfg, &input, 10, |_, _| {}).unwrap();
    let d = run.table.get("log_nu2_x").unwrap();
    eprintln!("diffusion: {:?} -> {:?}", d[0], d[d.len() - 1]);
    assert!(
        d[d.len() - 1].std > 2.0 * d[0].std,
        "{:?} {:?}",
        d[0],
        d[d.len() - 1]
    );
    assert!(d[d.len() - 1].mean < -1.0, "{:?}", d[d.len() - 1]);
}

#[test]
fn layer_norm_collapse_and_proxy_norm() {
    // Paper nets: the channel-wise constant share of the pre-activations grows with depth
    // under LN and stays small under LN + PN (fully connected, width 64, batch 32).
    let gpu = common::gpu();
    let input = InputSource::gaussian(28, 28, 1);
    let mut shares = Vec::new();
    for net in [Net::LnFf, Net::LnPnFf] {
        let mut cfg = small(net, 40, 64, 32, 1);
        cfg.every = 4;
        cfg.reff = false;
        let run = moments::run_net(gpu, &cfg, &input, 2, |_, _| {}).unwrap();
        shares.push(run.fits.share_ch_conv.1);
    }
    eprintln!(
        "channel-constant share at depth 40: LN {}, LN+PN {}",
        shares[0], shares[1]
    );
    assert!(shares[0] > 0.5, "LN share {}", shares[0]);
    assert!(shares[1] < 0.2, "LN+PN share {}", shares[1]);

    // EfficientNet-B0-G16 at init (width 0.25, 32 px, batch 8): LN shows the collapse,
    // LN + PN does not.
    let mut collapse = Vec::new();
    for norm in [
        effnet::models::NormChoice::Ln,
        effnet::models::NormChoice::LnPn,
    ] {
        let mut cfg = moments::effnet::EffnetConfig::new("b0-g16", norm);
        cfg.width_mult = Some(0.25);
        cfg.image_size = 32;
        cfg.batch = 8;
        cfg.seed = 2;
        let run = moments::effnet::run_effnet(gpu, &cfg, &input, 2, |_, _| {}).unwrap();
        let chi = run.table.means("chi");
        assert!(chi.iter().all(|c| c.is_finite() && *c > 0.0));
        collapse.push(run.collapse);
    }
    eprintln!(
        "EfficientNet collapse: LN {:?}, LN+PN {:?}",
        collapse[0], collapse[1]
    );
    assert!(collapse[0].conv_mean > 2.0 * collapse[1].conv_mean);
    assert!(collapse[0].conv_deep_half > 2.0 * collapse[1].conv_deep_half);
}

#[test]
fn runs_are_reproducible_and_write_their_files() {
    let gpu = common::gpu();
    let cfg = small(Net::GnFf, 6, 16, 4, 3);
    let input = InputSource::gaussian(8, 8, 1);
    let mut prop = Propagator::new(gpu, &cfg, &input).unwrap();
    let a = prop.simulate(0, &input).unwrap();
    let b = prop.simulate(1, &input).unwrap();
    let a2 = prop.simulate(0, &input).unwrap();
    assert_eq!(a.x, a2.x);
    assert_eq!(a.log_dx, a2.log_dx);
    assert_ne!(a.x, b.x);
    let table = moments::net_table(&cfg, &[a, b]);
    let fits = moments::net_fits(&cfg, &table, &[]);
    let dir = std::env::temp_dir().join(format!("effnet-moments-{}", std::process::id()));
    let files = moments::output::write_net(&dir, &cfg, &table, &fits).unwrap();
    let csv = std::fs::read_to_string(dir.join("moments.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("depth,chi_mean,chi_std,chi_p16,chi_p84,dchi_mean"));
    assert_eq!(csv.lines().count(), 1 + 6);
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{}", f.display());
    }
    assert!(dir.join("figure.png").exists() && dir.join("chi.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
