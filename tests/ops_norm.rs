//! Normalization (BN / LN / GN / instance norm) fused with affine, activation and Proxy
//! Norm, and the proxy statistics: harness checks for every kind x activation x PN
//! combination, the pinned PN init constants, batch independence of the per-sample norms,
//! BatchNorm training/evaluation consistency, determinism and linearised grids.
mod common;

use effnet::gpu::{Gpu, Recorder, Tensor};
use effnet::ops::harness::normalized_error;
use effnet::ops::norm::{self, NormGrads, NormKind, NormParams, NormSpec, RefParams};
use effnet::ops::proxy_norm::{self, ProxyGrads, ProxyParams, PROXY_EPS, PROXY_POINTS};
use effnet::ops::Act;
use effnet::util::Rng;

fn run(gpu: &Gpu, f: impl FnOnce(&mut Recorder) -> effnet::Result<()>) {
    effnet::ops::harness::run_gpu(gpu, f).expect("gpu run");
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn batch_norm_cases() {
    common::assert_cases_pass("norm:bn/");
    common::assert_cases_pass("norm:bn+pn/");
}

/// Eval-mode (frozen) BatchNorm: forward on the running statistics, backward with them
/// held constant, against the f64 reference and its finite differences.
#[test]
fn frozen_batch_norm_cases() {
    common::assert_cases_pass("norm:bn-frozen/");
    common::assert_cases_pass("norm:bn-frozen+pn/");
}

#[test]
fn layer_norm_cases() {
    common::assert_cases_pass("norm:ln/");
}

#[test]
fn group_and_instance_norm_cases() {
    common::assert_cases_pass("norm:gn4/");
    common::assert_cases_pass("norm:gn2/");
    common::assert_cases_pass("norm:in/");
}

#[test]
fn proxy_norm_cases() {
    common::assert_cases_pass("norm:ln+pn/");
    common::assert_cases_pass("norm:ln+pn-mean/");
    common::assert_cases_pass("norm:gn4+pn/");
    common::assert_cases_pass("norm:gn4+pn-mean/");
    common::assert_cases_pass("proxy_stats/");
}

/// The quantile table embedded in the shader is the host's f64 table rounded to f32, and
/// has the moments SPEC §C.1 quotes (range +-2.807, variance 0.9936).
#[test]
fn proxy_quantiles_match_host() {
    let host = proxy_norm::quantiles();
    assert_eq!(host.len(), PROXY_POINTS);
    let src = effnet::gpu::kernel::raw_source("proxy_norm/stats.wgsl").unwrap();
    let open = "= array<f32, 200>(";
    let start = src.find(open).unwrap() + open.len();
    let end = start + src[start..].find(");").unwrap();
    let table: Vec<f32> = src[start..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(table.len(), PROXY_POINTS);
    for (i, (&t, &h)) in table.iter().zip(&host).enumerate() {
        assert_eq!(t, h as f32, "quantile {i}: shader {t}, host {h}");
    }
    // Symmetric, mean 0, and the endpoints SPEC quotes.
    for i in 0..PROXY_POINTS {
        assert!((host[i] + host[PROXY_POINTS - 1 - i]).abs() < 1e-12);
    }
    assert!(
        (host[PROXY_POINTS - 1] - 2.807_033_768_343_811).abs() < 1e-9,
        "{}",
        host[199]
    );
    let var = host.iter().map(|u| u * u).sum::<f64>() / PROXY_POINTS as f64;
    assert!((var - 0.9936).abs() < 5e-5, "quantile variance {var}");
}

/// SPEC §C.1 init constants: gamma = 1, beta = 0, pshift = pscale = 0.
#[test]
fn proxy_init_constants() {
    let gpu = common::gpu();
    let c = 3;
    let ones = gpu.upload(&vec![1.0; c], &[c]).unwrap();
    let zeros = gpu.zeros(&[c]).unwrap();
    for (act, mu0, s0) in [(Act::Silu, 0.2060, 1.7150), (Act::Relu, 0.3985, 1.6484)] {
        let p = ProxyParams {
            act,
            c,
            eps: PROXY_EPS,
            gamma: Some(&ones),
            beta: Some(&zeros),
            pshift: &zeros,
            pscale: &zeros,
        };
        let mu = gpu.zeros(&[c]).unwrap();
        let s = gpu.zeros(&[c]).unwrap();
        run(gpu, |r| proxy_norm::proxy_stats(r, &p, &mu, &s));
        for (m, v) in gpu
            .read(&mu)
            .unwrap()
            .into_iter()
            .zip(gpu.read(&s).unwrap())
        {
            assert!(
                (m as f64 - mu0).abs() < 5e-5,
                "{act:?}: mu~ {m}, expected {mu0}"
            );
            assert!(
                (v as f64 - s0).abs() < 5e-5,
                "{act:?}: s~ {v}, expected {s0}"
            );
        }
        // The f64 reference agrees, and so does the case without gamma / beta tensors.
        let z = vec![0.0; c];
        let (rm, rs) = proxy_norm::proxy_stats_ref(&proxy_norm::ProxyRef {
            act,
            eps: PROXY_EPS as f64,
            gamma: None,
            beta: None,
            pshift: &z,
            pscale: &z,
        });
        assert!((rm[0] - mu0).abs() < 5e-5 && (rs[0] - s0).abs() < 5e-5);
        let p2 = ProxyParams {
            gamma: None,
            beta: None,
            ..p
        };
        run(gpu, |r| proxy_norm::proxy_stats(r, &p2, &mu, &s));
        let m2 = gpu.read(&mu).unwrap();
        assert!((m2[0] as f64 - mu0).abs() < 5e-5);
    }
}

/// Host-side parameters of one layer.
struct Layer {
    spec: NormSpec,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    pshift: Vec<f32>,
    pscale: Vec<f32>,
}

impl Layer {
    fn new(spec: NormSpec, rng: &mut Rng) -> Self {
        let c = spec.c;
        let r = |rng: &mut Rng, s: f64, o: f64| -> Vec<f32> {
            (0..c).map(|_| (o + s * rng.normal()) as f32).collect()
        };
        Self {
            spec,
            gamma: r(rng, 0.3, 1.0),
            beta: r(rng, 0.3, 0.0),
            pshift: r(rng, 0.3, 0.0),
            pscale: r(rng, 0.2, 0.0),
        }
    }

    /// Proxy stats + training forward + backward (+ proxy backward); returns (y, dx).
    fn run(&self, gpu: &Gpu, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let s = &self.spec;
        let c = [s.c];
        let up = |v: &[f32]| gpu.upload(v, &[v.len()]).unwrap();
        let (gamma, beta, pshift, pscale) = (
            up(&self.gamma),
            up(&self.beta),
            up(&self.pshift),
            up(&self.pscale),
        );
        let xt = up(x);
        let dyt = up(dy);
        let z = || gpu.zeros(&[s.numel()]).unwrap();
        let (y, dx) = (z(), z());
        let zc = || gpu.zeros(&c).unwrap();
        let (mu, sc, dg, db, dmu, ds, dsh, dsc) = (zc(), zc(), zc(), zc(), zc(), zc(), zc(), zc());
        let saved = gpu.zeros(&[s.saved_len()]).unwrap();
        let scratch = gpu.zeros(&[s.scratch_len()]).unwrap();
        let params = NormParams {
            gamma: Some(&gamma),
            beta: Some(&beta),
            proxy_mu: Some(&mu),
            proxy_s: Some(&sc),
            ..Default::default()
        };
        let pp = ProxyParams {
            act: s.act,
            c: s.c,
            eps: PROXY_EPS,
            gamma: Some(&gamma),
            beta: Some(&beta),
            pshift: &pshift,
            pscale: &pscale,
        };
        run(gpu, |r| {
            if s.proxy.is_some() {
                proxy_norm::proxy_stats(r, &pp, &mu, &sc)?;
            }
            norm::forward(r, s, true, &xt, &params, &y, &saved, &scratch)?;
            let grads = NormGrads {
                dgamma: Some(&dg),
                dbeta: Some(&db),
                dmu: Some(&dmu),
                ds: Some(&ds),
            };
            norm::backward(r, s, &xt, &dyt, &params, &saved, &dx, &grads, &scratch)?;
            if s.proxy.is_some() {
                let pg = ProxyGrads {
                    dgamma: Some(&dg),
                    dbeta: Some(&db),
                    dpshift: &dsh,
                    dpscale: &dsc,
                };
                proxy_norm::proxy_stats_backward(r, &pp, &dmu, Some(&ds), &pg)?;
            }
            Ok(())
        });
        (gpu.read(&y).unwrap(), gpu.read(&dx).unwrap())
    }
}

/// LN, GN, LN+PN, GN+PN: one sample's output and input gradient do not depend on the
/// rest of the batch (batch of 1 vs the same sample first in a batch of 32).
#[test]
fn per_sample_norms_are_batch_independent() {
    let gpu = common::gpu();
    let (hw, c) = (18, 16);
    let per = hw * c;
    let kinds = [
        NormSpec::new(1, hw, c, NormKind::layer()).with_act(Act::Silu),
        NormSpec::new(1, hw, c, NormKind::Group { groups: 4 }).with_act(Act::Silu),
        NormSpec::new(1, hw, c, NormKind::layer())
            .with_act(Act::Silu)
            .with_proxy(true),
        NormSpec::new(1, hw, c, NormKind::Group { groups: 4 })
            .with_act(Act::Relu)
            .with_proxy(true),
    ];
    for spec1 in kinds {
        let mut rng = Rng::new(7);
        let layer1 = Layer::new(spec1, &mut rng);
        let x32: Vec<f32> = (0..32 * per)
            .map(|_| (rng.normal() * 2.0 + 0.7) as f32)
            .collect();
        let dy32: Vec<f32> = (0..32 * per).map(|_| rng.normal() as f32).collect();
        let (y1, dx1) = layer1.run(gpu, &x32[..per], &dy32[..per]);
        let layer32 = Layer {
            spec: NormSpec { n: 32, ..spec1 },
            gamma: layer1.gamma.clone(),
            beta: layer1.beta.clone(),
            pshift: layer1.pshift.clone(),
            pscale: layer1.pscale.clone(),
        };
        let (y32, dx32) = layer32.run(gpu, &x32, &dy32);
        let name = spec1.kind_name();
        let ey = normalized_error(&widen(&y32[..per]), &widen(&y1));
        let edx = normalized_error(&widen(&dx32[..per]), &widen(&dx1));
        assert!(
            ey < 1e-6,
            "{name}: output of sample 0 differs by {ey:e} between batches"
        );
        assert!(
            edx < 1e-5,
            "{name}: dx of sample 0 differs by {edx:e} between batches"
        );
        // Against the f64 reference too.
        let x1: Vec<f64> = widen(&x32[..per]);
        let g = widen(&layer1.gamma);
        let b = widen(&layer1.beta);
        let stats = spec1.proxy.map(|_| {
            proxy_norm::proxy_stats_ref(&proxy_norm::ProxyRef {
                act: spec1.act,
                eps: PROXY_EPS as f64,
                gamma: Some(&g),
                beta: Some(&b),
                pshift: &widen(&layer1.pshift),
                pscale: &widen(&layer1.pscale),
            })
        });
        let rp = RefParams {
            gamma: Some(&g),
            beta: Some(&b),
            running: None,
            proxy: stats.as_ref().map(|(m, s)| (&m[..], &s[..])),
        };
        let r = norm::forward_ref(&spec1, true, &x1, &rp);
        let e = normalized_error(&widen(&y32[..per]), &r.y);
        assert!(e < 1e-5, "{name}: batch-32 output vs reference {e:e}");
    }
}

fn bn_setup(gpu: &Gpu, spec: &NormSpec, rng: &mut Rng) -> (Vec<f64>, [Tensor; 7]) {
    let x: Vec<f64> = rng
        .normals_f32(spec.numel(), 1.3)
        .into_iter()
        .map(|v| (v + 0.8) as f32 as f64)
        .collect();
    let xt = gpu
        .upload(
            &x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            &[spec.numel()],
        )
        .unwrap();
    let c = spec.c;
    let gamma = gpu.upload(&vec![1.2; c], &[c]).unwrap();
    let beta = gpu.upload(&vec![-0.1; c], &[c]).unwrap();
    let rm = gpu.zeros(&[c]).unwrap();
    let rv = gpu.upload(&vec![1.0; c], &[c]).unwrap();
    let saved = gpu.zeros(&[spec.saved_len()]).unwrap();
    let scratch = gpu.zeros(&[spec.scratch_len()]).unwrap();
    (x, [xt, gamma, beta, rm, rv, saved, scratch])
}

/// BatchNorm: after repeated training forwards on one batch the running statistics
/// converge to the batch's mean and unbiased variance (n / (n - 1) times the biased one,
/// as PyTorch keeps it), and the evaluation output then matches the reference evaluation
/// on those statistics (it differs from the training output by that factor, as in
/// PyTorch).
#[test]
fn batch_norm_train_eval_consistency() {
    let gpu = common::gpu();
    let mut spec = NormSpec::new(6, 40, 5, NormKind::Batch).with_act(Act::Silu);
    spec.momentum = 0.8;
    let mut rng = Rng::new(11);
    let (x, [xt, gamma, beta, rm, rv, saved, scratch]) = bn_setup(gpu, &spec, &mut rng);
    let params = NormParams {
        gamma: Some(&gamma),
        beta: Some(&beta),
        running_mean: Some(&rm),
        running_var: Some(&rv),
        ..Default::default()
    };
    let y_train = gpu.zeros(&[spec.numel()]).unwrap();
    let y_eval = gpu.zeros(&[spec.numel()]).unwrap();
    run(gpu, |r| {
        // 0.8^120 ~ 2e-12: converged to f32 precision.
        for _ in 0..120 {
            norm::forward(r, &spec, true, &xt, &params, &y_train, &saved, &scratch)?;
        }
        norm::forward(r, &spec, false, &xt, &params, &y_eval, &saved, &scratch)
    });
    // The statistics computed here from x, independently of the reference's formula.
    let n = spec.n * spec.hw;
    let c = spec.c;
    let mean: Vec<f64> = (0..c)
        .map(|k| (0..n).map(|i| x[i * c + k]).sum::<f64>() / n as f64)
        .collect();
    let unbiased: Vec<f64> = (0..c)
        .map(|k| {
            (0..n)
                .map(|i| (x[i * c + k] - mean[k]).powi(2))
                .sum::<f64>()
                / (n - 1) as f64
        })
        .collect();
    let got_m = widen(&gpu.read(&rm).unwrap());
    let got_v = widen(&gpu.read(&rv).unwrap());
    assert!(
        normalized_error(&got_m, &mean) < 1e-5,
        "running mean {got_m:?} vs {mean:?}"
    );
    assert!(
        normalized_error(&got_v, &unbiased) < 1e-5,
        "running var {got_v:?} vs unbiased {unbiased:?}"
    );
    let g: Vec<f64> = widen(&gpu.read(&gamma).unwrap());
    let b: Vec<f64> = widen(&gpu.read(&beta).unwrap());
    let rp = RefParams {
        gamma: Some(&g),
        beta: Some(&b),
        running: Some((&mean, &unbiased)),
        proxy: None,
    };
    let want = norm::forward_ref(&spec, false, &x, &rp);
    let ye = widen(&gpu.read(&y_eval).unwrap());
    let e = normalized_error(&ye, &want.y);
    assert!(e < 1e-5, "evaluation output vs reference {e:e}");
    let yt = widen(&gpu.read(&y_train).unwrap());
    assert!(
        normalized_error(&ye, &yt) > 1e-4,
        "evaluation on the unbiased variance should differ from training slightly"
    );
}

/// One BatchNorm training step updates the running statistics as the reference does, and
/// an evaluation forward on given running statistics matches the reference.
#[test]
fn batch_norm_running_update_and_eval_match_reference() {
    let gpu = common::gpu();
    let spec = NormSpec::new(3, 700, 7, NormKind::Batch).with_act(Act::Relu);
    let mut rng = Rng::new(5);
    let (x, [xt, gamma, beta, rm, rv, saved, scratch]) = bn_setup(gpu, &spec, &mut rng);
    let c = spec.c;
    let rm0: Vec<f64> = rng.normals_f32(c, 0.5);
    let rv0: Vec<f64> = (0..c)
        .map(|_| (0.5 + rng.uniform()) as f32 as f64)
        .collect();
    gpu.write_f32(&rm, &rm0.iter().map(|&v| v as f32).collect::<Vec<_>>())
        .unwrap();
    gpu.write_f32(&rv, &rv0.iter().map(|&v| v as f32).collect::<Vec<_>>())
        .unwrap();
    let params = NormParams {
        gamma: Some(&gamma),
        beta: Some(&beta),
        running_mean: Some(&rm),
        running_var: Some(&rv),
        ..Default::default()
    };
    let g = vec![1.2; c];
    let b = vec![-0.1; c];
    let y = gpu.zeros(&[spec.numel()]).unwrap();
    // Evaluation on (rm0, rv0) first: leaves the running statistics alone.
    run(gpu, |r| {
        norm::forward(r, &spec, false, &xt, &params, &y, &saved, &scratch)
    });
    let rp = RefParams {
        gamma: Some(&g),
        beta: Some(&b),
        running: Some((&rm0, &rv0)),
        proxy: None,
    };
    let want = norm::forward_ref(&spec, false, &x, &rp);
    let e = normalized_error(&widen(&gpu.read(&y).unwrap()), &want.y);
    assert!(e < 1e-5, "evaluation forward vs reference {e:e}");
    // Then one training step.
    run(gpu, |r| {
        norm::forward(r, &spec, true, &xt, &params, &y, &saved, &scratch)
    });
    let want = norm::forward_ref(&spec, true, &x, &rp);
    let (wm, wv) = want.running.unwrap();
    assert!(normalized_error(&widen(&gpu.read(&rm).unwrap()), &wm) < 1e-5);
    assert!(normalized_error(&widen(&gpu.read(&rv).unwrap()), &wv) < 1e-5);
    let e = normalized_error(&widen(&gpu.read(&y).unwrap()), &want.y);
    assert!(e < 1e-5, "training forward vs reference {e:e}");
    // Saved statistics: mean then rstd per channel.
    let sv = widen(&gpu.read(&saved).unwrap());
    assert!(normalized_error(&sv[..c], &want.mean) < 1e-5);
    assert!(normalized_error(&sv[c..], &want.rstd) < 1e-5);
}

/// Same inputs, same bits (fixed-order reductions), on a shape that splits into chunks.
#[test]
fn deterministic() {
    let gpu = common::gpu();
    let spec = NormSpec::new(2, 3000, 6, NormKind::Batch).with_act(Act::Silu);
    assert!(
        spec.scratch_len() > 4 * spec.c + 2 * spec.c,
        "expected a multi-chunk split"
    );
    let mut rng = Rng::new(3);
    let layer = Layer::new(spec, &mut rng);
    let x: Vec<f32> = (0..spec.numel())
        .map(|_| (rng.normal() + 2.0) as f32)
        .collect();
    let dy: Vec<f32> = (0..spec.numel()).map(|_| rng.normal() as f32).collect();
    let a = layer.run(gpu, &x, &dy);
    let b = layer.run(gpu, &x, &dy);
    assert!(a.0 == b.0 && a.1 == b.1, "two identical runs differ");
}

/// Grids folded into 2-D (tiny grid-dimension cap) give the same results.
#[test]
fn linearised_grids() {
    let gpu = common::gpu();
    let spec = NormSpec::new(3, 300, 8, NormKind::Group { groups: 2 })
        .with_act(Act::Silu)
        .with_proxy(true);
    let mut rng = Rng::new(9);
    let layer = Layer::new(spec, &mut rng);
    let x: Vec<f32> = (0..spec.numel()).map(|_| rng.normal() as f32).collect();
    let dy: Vec<f32> = (0..spec.numel()).map(|_| rng.normal() as f32).collect();
    let want = layer.run(gpu, &x, &dy);
    let cap = gpu.grid_dim_cap();
    gpu.set_grid_dim_cap(3);
    let got = layer.run(gpu, &x, &dy);
    gpu.set_grid_dim_cap(cap);
    assert_eq!(want, got);
}

#[test]
fn spec_validation_and_sizes() {
    let gn = NormSpec::new(2, 9, 12, NormKind::Group { groups: 5 });
    assert!(
        gn.validate().is_err(),
        "12 channels in 5 groups must be refused"
    );
    let gn = NormSpec::new(2, 9, 12, NormKind::Group { groups: 4 });
    gn.validate().unwrap();
    assert_eq!(gn.segments(), 8);
    assert_eq!(gn.saved_len(), 16);
    assert_eq!(gn.segment_len(), 27);
    let bn = NormSpec::new(2, 9, 12, NormKind::Batch);
    assert_eq!(bn.segments(), 12);
    assert_eq!(NormSpec::new(1, 1, 3, NormKind::instance(3)).segments(), 3);
    assert_eq!(bn.eps, 1e-3);
    // A big BatchNorm splits its statistics pass; scratch stays small next to x.
    let big = NormSpec::new(128, 112 * 112, 32, NormKind::Batch);
    assert!(big.scratch_len() > 64 * 4 * 32 && big.scratch_len() < big.numel() / 64);
    // Missing parameters are reported, not dispatched.
    let gpu = common::gpu();
    let spec = NormSpec::new(1, 4, 2, NormKind::layer()).with_proxy(true);
    let x = gpu.zeros(&[8]).unwrap();
    let s = gpu.zeros(&[spec.saved_len()]).unwrap();
    let sc = gpu.zeros(&[spec.scratch_len()]).unwrap();
    let mut r = Recorder::new(gpu);
    let err = norm::forward(&mut r, &spec, true, &x, &NormParams::default(), &x, &s, &sc);
    assert!(err.is_err());
    // Only BatchNorm freezes; a frozen backward needs the running statistics it uses.
    let e = NormSpec::new(1, 4, 2, NormKind::layer())
        .with_frozen(true)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only BatchNorm has running statistics to freeze, not ln"),
        "{e}"
    );
    let bn = NormSpec::new(1, 4, 2, NormKind::Batch).with_frozen(true);
    let (g, b) = (
        gpu.upload(&[1.0; 2], &[2]).unwrap(),
        gpu.zeros(&[2]).unwrap(),
    );
    let p = NormParams {
        gamma: Some(&g),
        beta: Some(&b),
        ..NormParams::default()
    };
    let (dx, s) = (
        gpu.zeros(&[8]).unwrap(),
        gpu.zeros(&[bn.saved_len()]).unwrap(),
    );
    let sc = gpu.zeros(&[bn.scratch_len()]).unwrap();
    let e = norm::backward(&mut r, &bn, &x, &x, &p, &s, &dx, &NormGrads::default(), &sc)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the running mean (frozen)"), "{e}");
}

/// EfficientNet-sized activations (multi-chunk statistics, large grids) against the f64
/// reference.
#[test]
fn large_shapes_match_reference() {
    let gpu = common::gpu();
    let specs = [
        NormSpec::new(4, 112 * 112, 32, NormKind::Batch).with_act(Act::Silu),
        NormSpec::new(2, 28 * 28, 240, NormKind::Group { groups: 4 }).with_act(Act::Silu),
        NormSpec::new(3, 7 * 7, 1152, NormKind::layer())
            .with_act(Act::Silu)
            .with_proxy(true),
    ];
    for spec in specs {
        let mut rng = Rng::new(21);
        let layer = Layer::new(spec, &mut rng);
        let x: Vec<f32> = (0..spec.numel())
            .map(|_| (rng.normal() * 1.5 + 0.5) as f32)
            .collect();
        let dy: Vec<f32> = (0..spec.numel()).map(|_| rng.normal() as f32).collect();
        let (y, dx) = layer.run(gpu, &x, &dy);
        let g = widen(&layer.gamma);
        let b = widen(&layer.beta);
        let (psh, psc) = (widen(&layer.pshift), widen(&layer.pscale));
        let stats = spec.proxy.map(|_| {
            proxy_norm::proxy_stats_ref(&proxy_norm::ProxyRef {
                act: spec.act,
                eps: PROXY_EPS as f64,
                gamma: Some(&g),
                beta: Some(&b),
                pshift: &psh,
                pscale: &psc,
            })
        });
        let rp = RefParams {
            gamma: Some(&g),
            beta: Some(&b),
            running: None,
            proxy: stats.as_ref().map(|(m, s)| (&m[..], &s[..])),
        };
        let (xr, dyr) = (widen(&x), widen(&dy));
        let want_y = norm::forward_ref(&spec, true, &xr, &rp).y;
        let want_dx = norm::backward_ref(&spec, &xr, &dyr, &rp).dx;
        let name = spec.kind_name();
        let ey = normalized_error(&widen(&y), &want_y);
        let edx = normalized_error(&widen(&dx), &want_dx);
        assert!(
            ey < 1e-5,
            "{name} {:?}: forward error {ey:e}",
            (spec.n, spec.hw, spec.c)
        );
        assert!(
            edx < 1e-4,
            "{name} {:?}: dx error {edx:e}",
            (spec.n, spec.hw, spec.c)
        );
    }
}
