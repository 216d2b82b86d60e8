//! timm / PyTorch interop: state-dict names and shapes for every mapped timm EfficientNet,
//! import errors, export round trips, and llm.c-style parity against PyTorch fixtures
//! (tests/fixtures/gen_timm_fixtures.py): eval logits, train-mode loss, every parameter
//! gradient and the input gradient, and a 10-step SGD loss trajectory.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use effnet::cli::predict::{self, ExportArgs, PredictArgs};
use effnet::gpu::Recorder;
use effnet::interop::{self, Layout};
use effnet::models::efficientnet::EfficientNet;
use effnet::models::{ImageSize, ModelConfig};
use effnet::train::model::Trainable;
use effnet::train::optim::{self, Optimizer};
use effnet::util::safetensors::SafeTensors;
use effnet::util::Rng;

const ARCHS: [&str; 3] = [
    "efficientnet_b0",
    "efficientnet_b0_gn",
    "efficientnet_b0_g8_gn",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/timm")
        .join(name)
}

fn load(name: &str) -> SafeTensors {
    SafeTensors::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A reduced fixture model: its timm weights, PyTorch reference and effnet configuration.
struct Case {
    weights: SafeTensors,
    parity: SafeTensors,
    cfg: ModelConfig,
    batch: usize,
    image: usize,
}

fn case(arch: &str) -> Case {
    let weights = load(&format!("{arch}.weights.safetensors"));
    let parity = load(&format!("{arch}.parity.safetensors"));
    let base = interop::config_from_timm(arch).unwrap();
    let mut cfg = interop::infer_config(&base, &weights).unwrap();
    let meta = |k: &str| -> f64 { parity.metadata[k].parse().unwrap() };
    assert_eq!(
        cfg.width,
        meta("channel_multiplier"),
        "{arch}: inferred width"
    );
    assert_eq!(
        cfg.depth,
        meta("depth_multiplier"),
        "{arch}: inferred depth"
    );
    assert_eq!(cfg.classes, meta("num_classes") as usize);
    cfg.dropout = 0.0;
    cfg.drop_connect = 0.0;
    let x = &parity.tensors["input"];
    Case {
        batch: x.shape[0],
        image: x.shape[2],
        weights,
        parity,
        cfg,
    }
}

fn nchw_to_nhwc(x: &[f32], s: &[usize]) -> Vec<f32> {
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out[((b * h + y) * w + xx) * c + ch] = x[((b * c + ch) * h + y) * w + xx];
                }
            }
        }
    }
    out
}

/// ||a - b|| / ||b||.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        d += (*x as f64 - *y as f64).powi(2);
        n += (*y as f64).powi(2);
    }
    (d / n.max(1e-300)).sqrt()
}

fn mean_loss(gpu: &effnet::Gpu, m: &EfficientNet) -> f64 {
    let rows = gpu.read(m.loss_rows()).unwrap();
    rows.iter().map(|&v| v as f64).sum::<f64>() / rows.len() as f64
}

/// Names of the parameters the model trains, in timm order, with their layouts.
fn param_maps(cfg: &ModelConfig) -> Vec<interop::TensorMap> {
    interop::tensor_maps(cfg)
        .unwrap()
        .into_iter()
        .filter(|m| !m.running)
        .collect()
}

#[test]
fn timm_names_and_shapes_for_every_mapped_arch() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("keys.json")).unwrap()).unwrap();
    let models = v["models"].as_object().unwrap();
    assert_eq!(models.len(), interop::arch::TIMM_ARCHS.len());
    for a in interop::arch::TIMM_ARCHS {
        let want: Vec<(String, Vec<usize>)> = models[a.name]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e[0].as_str().unwrap().to_string(),
                    e[1].as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect(),
                )
            })
            .filter(|(n, _)| !n.ends_with(".num_batches_tracked"))
            .collect();
        let cfg = interop::config_from_timm(a.name).unwrap();
        let got: Vec<(String, Vec<usize>)> = interop::tensor_maps(&cfg)
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.timm_shape))
            .collect();
        assert_eq!(got, want, "{}: names/shapes differ from timm", a.name);
        // And back: the configuration maps to the same registered timm model.
        let eq = interop::timm_equivalent(&cfg).unwrap();
        assert_eq!(eq.name, a.name);
        assert!(eq.registered);
        assert_eq!(
            eq.python(),
            format!("timm.create_model(\"{}\")", a.name),
            "{}",
            a.name
        );
    }
}

#[test]
fn timm_name_forms_and_unknown_names() {
    assert_eq!(
        interop::arch::base_name("timm/efficientnet_b3.ra2_in1k"),
        "efficientnet_b3"
    );
    assert_eq!(
        interop::arch::base_name("hf-hub:timm/efficientnet_b0.ra_in1k"),
        "efficientnet_b0"
    );
    let c = interop::config_from_timm("efficientnet_b2.ra_in1k").unwrap();
    assert_eq!((c.width, c.depth, c.resolution), (1.1, 1.2, 260));
    assert_eq!(c.norm_eps, 1e-5);
    let e = interop::config_from_timm("efficientnet_lite0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("efficientnet_b0_g8_gn"), "{e}");
    // timm's b3 GroupNorm variants: channels rounded to 16, 16-channel norm groups.
    let b3 = interop::config_from_timm("efficientnet_b3_gn").unwrap();
    assert_eq!((b3.channel_divisor, b3.gn_group_size), (16, Some(16)));
    let eq = interop::timm_equivalent(&b3).unwrap();
    assert_eq!(eq.name, "efficientnet_b3_gn");
    let mut small = b3.clone();
    small.width = 0.25;
    let py = interop::timm_equivalent(&small).unwrap().python();
    assert!(
        py.contains("channel_divisor=16") && py.contains("group_size=16"),
        "{py}"
    );
    // effnet's own G16 / Proxy Norm / 4-group GN models have no timm equivalent.
    let mut g16 = ModelConfig::preset("b0-g16").unwrap();
    let e = interop::timm_equivalent(&g16).unwrap_err().to_string();
    assert!(e.contains("expansion 4"), "{e}");
    g16.norm = effnet::models::NormChoice::LnPn;
    assert!(interop::tensor_maps(&g16).is_err());
    let mut gn = ModelConfig::preset("b0").unwrap();
    gn.norm = effnet::models::NormChoice::Gn;
    let e = interop::timm_equivalent(&gn).unwrap_err().to_string();
    assert!(e.contains("gn_group_size"), "{e}");
    gn.gn_group_size = Some(8);
    gn.norm_eps = 1e-3;
    let eq = interop::timm_equivalent(&gn).unwrap();
    assert_eq!(eq.name, "efficientnet_b0_gn");
    assert!(eq.python().contains("eps=1e-3"), "{}", eq.python());
}

#[test]
fn import_lists_every_problem() {
    let cfg = case("efficientnet_b0").cfg;
    let mut st = load("efficientnet_b0.weights.safetensors");
    st.tensors.remove("blocks.1.0.conv_dw.weight");
    st.tensors.remove("bn2.running_var");
    st.insert("blocks.9.0.conv_pw.weight", &[4], vec![0.0; 4]);
    let t = st.tensors.get_mut("classifier.weight").unwrap();
    t.shape = vec![t.shape[1], t.shape[0]];
    let e = interop::from_timm(&cfg, &st).unwrap_err().to_string();
    for want in [
        "4 problem(s)",
        "missing blocks.1.0.conv_dw.weight",
        "missing bn2.running_var",
        "unexpected blocks.9.0.conv_pw.weight",
        "classifier.weight: shape [320, 10] in the file, the model needs [10, 320]",
    ] {
        assert!(e.contains(want), "'{want}' not in:\n{e}");
    }
    // A GN state dict read as BatchNorm: every running statistic is missing.
    let gn = load("efficientnet_b0_gn.weights.safetensors");
    let e = interop::from_timm(&cfg, &gn).unwrap_err().to_string();
    assert!(e.contains("missing bn1.running_mean"), "{e}");
    // A state dict of another width does not pass as this architecture.
    let base = interop::config_from_timm("efficientnet_b0_g8_gn").unwrap();
    let e = interop::from_timm(&base, &gn).unwrap_err().to_string();
    assert!(e.contains("conv_stem.weight: shape [8, 3, 3, 3]"), "{e}");
}

#[test]
fn export_round_trips_on_the_host() {
    for arch in ARCHS {
        let c = case(arch);
        let w = interop::from_timm(&c.cfg, &c.weights).unwrap();
        let (st, eq) = interop::to_timm(&c.cfg, &w).unwrap();
        assert_eq!(eq.name, arch);
        assert!(!eq.registered);
        // Every tensor comes back, num_batches_tracked included.
        let want: BTreeMap<&String, _> = c.weights.tensors.iter().collect();
        assert_eq!(
            st.tensors.keys().collect::<Vec<_>>(),
            want.keys().copied().collect::<Vec<_>>(),
            "{arch}"
        );
        for (n, t) in &st.tensors {
            assert_eq!(t, want[n], "{arch}: {n} changed in the round trip");
        }
        // Kept for `python3 tests/fixtures/gen_timm_fixtures.py --check-exports DIR`,
        // which loads them into timm strictly and compares logits with PyTorch's.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("timm-exports");
        std::fs::create_dir_all(&dir).unwrap();
        st.save(&dir.join(format!("{arch}.safetensors"))).unwrap();
        let back: ModelConfig =
            serde_json::from_str(&st.metadata[interop::convert::META_CONFIG]).unwrap();
        assert_eq!(back, c.cfg);
        assert_eq!(interop::from_timm(&c.cfg, &st).unwrap(), w);
        // num_batches_tracked is int64, as in timm's files; exports from before that wrote
        // F32 counts, which still import.
        let tracked: Vec<&String> = st
            .tensors
            .keys()
            .filter(|n| n.ends_with(".num_batches_tracked"))
            .collect();
        assert_eq!(tracked.len(), st.int64.len(), "{arch}");
        let file = SafeTensors::load(&dir.join(format!("{arch}.safetensors"))).unwrap();
        assert!(tracked.iter().all(|n| file.int64.contains(*n)), "{arch}");
        let bytes = std::fs::read(dir.join(format!("{arch}.safetensors"))).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8_lossy(&bytes[8..8 + header_len]);
        assert_eq!(header.matches(r#""I64""#).count(), tracked.len(), "{arch}");
        let mut old = st.clone();
        old.int64.clear();
        let old = SafeTensors::from_bytes(&old.to_bytes(), Path::new("old.safetensors")).unwrap();
        assert!(old.int64.is_empty());
        assert_eq!(interop::from_timm(&c.cfg, &old).unwrap(), w, "{arch}");
    }
}

fn parity(arch: &str) {
    let gpu = common::gpu();
    let c = case(arch);
    let (b, classes) = (c.batch, c.cfg.classes);
    let mut m = EfficientNet::new(gpu, &c.cfg, b, c.image).unwrap();
    m.enable_input_grad(gpu).unwrap();
    let w = interop::from_timm(&c.cfg, &c.weights).unwrap();
    interop::write_model(gpu, &mut m, &w).unwrap();
    // The GPU round trip gives back the same tensors.
    assert_eq!(
        interop::read_model(gpu, &m).unwrap(),
        w,
        "{arch}: GPU round trip"
    );
    let p = &c.parity.tensors;
    let x = &p["input"];
    gpu.write_f32(m.input(), &nchw_to_nhwc(&x.data, &x.shape))
        .unwrap();
    let labels: Vec<u32> = p["labels"].data.iter().map(|&v| v as u32).collect();
    gpu.write_u32(m.labels(), &labels).unwrap();
    gpu.write_f32(m.loss_weights(), &vec![1.0 / b as f32; b])
        .unwrap();

    // Eval logits (BatchNorm: running statistics as timm stores them).
    let mut rec = Recorder::new(gpu);
    m.record_eval(&mut rec).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let logits = gpu.read(m.logits()).unwrap();
    assert_eq!(logits.len(), b * classes);
    let logits_err = rel_l2(&logits, &p["logits_eval"].data);

    // One training step: loss and every gradient.
    let mut rec = Recorder::new(gpu);
    m.record_train_step(&mut rec, &mut Rng::new(0), 0.1, false)
        .unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let loss = mean_loss(gpu, &m);
    let want = p["loss_train"].data[0] as f64;
    let loss_err = (loss - want).abs() / want.abs();
    let store = m.store();
    let mut worst = (0.0, String::new());
    let mut bad = Vec::new();
    let maps = param_maps(&c.cfg);
    assert_eq!(maps.len(), store.defs.len());
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let total = maps
        .iter()
        .map(|m| norm(&p[&format!("grad.{}", m.name)].data).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut zero = Vec::new();
    for map in &maps {
        let id = store
            .find(&map.name)
            .unwrap_or_else(|| panic!("{}", map.name));
        assert_eq!(store.defs[id.0].shape, map.effnet_shape, "{}", map.name);
        let g = gpu.read(store.g(id)).unwrap();
        let t = &p[&format!("grad.{}", map.name)];
        assert_eq!(t.shape, map.timm_shape);
        let want = map.layout.to_effnet(&t.data);
        if norm(&want) < 1e-10 * total {
            // Zero in exact arithmetic (a projection-norm bias whose shift the next
            // train-mode BatchNorm removes): the float64 reference holds roundoff (~1e-16)
            // and any float32 engine (PyTorch's too) ~1e-8 of the total gradient norm, so
            // a relative error is meaningless; require float32 roundoff level instead.
            let r = norm(&g) / total;
            if r >= 1e-6 {
                bad.push(format!(
                    "{}: should be ~0, norm {r:.3e} of the total",
                    map.name
                ));
            }
            zero.push(format!("{} ({r:.1e})", map.name));
            continue;
        }
        let e = rel_l2(&g, &want);
        if e > worst.0 {
            worst = (e, map.name.clone());
        }
        if e >= 1e-3 {
            bad.push(format!("{}: relative L2 error {e:.3e}", map.name));
        }
    }
    if !zero.is_empty() {
        println!(
            "{arch}: {} gradients are zero in exact arithmetic (effnet norm / total): {}",
            zero.len(),
            zero.join(", ")
        );
    }
    let dx = gpu.read(m.input_grad().unwrap()).unwrap();
    let gx = &p["input_grad"];
    let input_grad = rel_l2(&dx, &nchw_to_nhwc(&gx.data, &gx.shape));

    // Ten SGD steps (momentum 0.9, no weight decay) on the same batch.
    let lr: f32 = c.parity.metadata["lr"].parse().unwrap();
    let opt = Optimizer::Sgd {
        momentum: c.parity.metadata["momentum"].parse().unwrap(),
        nesterov: false,
    };
    let want_traj = &p["sgd_losses"].data;
    let mut sgd = 0.0f64;
    let mut traj = Vec::new();
    for (step, &want) in want_traj.iter().enumerate() {
        let mut rec = Recorder::new(gpu);
        m.record_train_step(&mut rec, &mut Rng::new(0), 0.1, false)
            .unwrap();
        let s = m.store();
        optim::update(
            &mut rec,
            &opt,
            &s.segments,
            &s.w.chunks,
            &s.g.chunks,
            &s.s1.chunks,
            &s.s2.chunks,
            lr,
            0.0,
            step as u64 + 1,
            1.0,
        )
        .unwrap();
        rec.submit().unwrap().wait(gpu).unwrap();
        let l = mean_loss(gpu, &m);
        traj.push(l);
        sgd = sgd.max((l - want as f64).abs());
    }
    println!(
        "{arch}: eval logits rel {logits_err:.2e}, train loss rel {loss_err:.2e}, worst \
         gradient rel L2 {:.2e} ({}), input gradient rel L2 {input_grad:.2e}, SGD \
         trajectory max |diff| {sgd:.2e}",
        worst.0, worst.1
    );
    assert!(
        logits_err < 1e-4,
        "{arch}: eval logits relative error {logits_err:.3e}"
    );
    assert!(
        loss_err < 1e-4,
        "{arch}: loss {loss} vs {want}: relative error {loss_err:.3e}"
    );
    assert!(bad.is_empty(), "{arch}: gradients off:\n{}", bad.join("\n"));
    assert!(
        input_grad < 1e-3,
        "{arch}: input gradient relative error {input_grad:.3e}"
    );
    assert!(
        sgd <= 1e-3,
        "{arch}: SGD trajectory {traj:?} vs PyTorch {want_traj:?} (max difference {sgd:.3e})"
    );
}

#[test]
fn parity_efficientnet_b0_bn() {
    parity("efficientnet_b0");
}

#[test]
fn parity_efficientnet_b0_gn() {
    parity("efficientnet_b0_gn");
}

#[test]
fn parity_efficientnet_b0_g8_gn() {
    parity("efficientnet_b0_g8_gn");
}

/// The reduced `tf_efficientnet_b0` (TensorFlow "SAME" padding, BatchNorm eps 1e-3) on a
/// non-square 40 x 56 batch in eval mode (`model.eval()` under autograd): eval logits,
/// then a training step with every BatchNorm frozen gives timm's eval-mode loss, every
/// parameter gradient and the input gradient, and leaves the running statistics (and
/// `num_batches_tracked`) as they were.
#[test]
fn parity_tf_efficientnet_b0_eval_mode() {
    let gpu = common::gpu();
    let arch = "tf_efficientnet_b0";
    let weights = load(&format!("{arch}.weights.safetensors"));
    let eval = load(&format!("{arch}.eval.safetensors"));
    let meta = |k: &str| -> f64 { eval.metadata[k].parse().unwrap() };
    let base = interop::config_from_timm("efficientnet_b0")
        .unwrap()
        .with_tf_padding();
    let mut cfg = interop::infer_config(&base, &weights).unwrap();
    assert_eq!(cfg.width, meta("channel_multiplier"));
    assert_eq!(cfg.depth, meta("depth_multiplier"));
    assert_eq!(cfg.norm_eps, meta("bn_eps"));
    cfg.dropout = 0.0;
    cfg.drop_connect = 0.0;
    let p = &eval.tensors;
    let x = &p["input"];
    let (b, size) = (x.shape[0], ImageSize::new(x.shape[2], x.shape[3]));
    assert!(!size.is_square());
    let mut m = EfficientNet::with_size(gpu, &cfg, b, size).unwrap();
    m.enable_input_grad(gpu).unwrap();
    let w = interop::from_timm(&cfg, &weights).unwrap();
    interop::write_model(gpu, &mut m, &w).unwrap();
    gpu.write_f32(m.input(), &nchw_to_nhwc(&x.data, &x.shape))
        .unwrap();
    let labels: Vec<u32> = p["labels"].data.iter().map(|&v| v as u32).collect();
    gpu.write_u32(m.labels(), &labels).unwrap();
    gpu.write_f32(m.loss_weights(), &vec![1.0 / b as f32; b])
        .unwrap();

    let mut rec = Recorder::new(gpu);
    m.record_eval(&mut rec).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let logits_err = rel_l2(&gpu.read(m.logits()).unwrap(), &p["logits_eval"].data);

    m.set_bn_frozen(true).unwrap();
    let mut rec = Recorder::new(gpu);
    m.record_train_step(&mut rec, &mut Rng::new(0), 0.1, false)
        .unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    let loss = mean_loss(gpu, &m);
    let want = p["loss_eval"].data[0] as f64;
    let loss_err = (loss - want).abs() / want.abs();
    let store = m.store();
    let mut worst = (0.0, String::new());
    let mut bad = Vec::new();
    for map in param_maps(&cfg) {
        let id = store
            .find(&map.name)
            .unwrap_or_else(|| panic!("{}", map.name));
        let t = &p[&format!("grad.{}", map.name)];
        assert_eq!(t.shape, map.timm_shape, "{}", map.name);
        let e = rel_l2(
            &gpu.read(store.g(id)).unwrap(),
            &map.layout.to_effnet(&t.data),
        );
        if e > worst.0 {
            worst = (e, map.name.clone());
        }
        if e >= 1e-3 {
            bad.push(format!("{}: relative L2 error {e:.3e}", map.name));
        }
    }
    let gx = &p["input_grad"];
    let input_grad = rel_l2(
        &gpu.read(m.input_grad().unwrap()).unwrap(),
        &nchw_to_nhwc(&gx.data, &gx.shape),
    );
    println!(
        "{arch} eval mode at {size}: logits rel {logits_err:.2e}, loss rel {loss_err:.2e}, \
         worst gradient rel L2 {:.2e} ({}), input gradient rel L2 {input_grad:.2e}",
        worst.0, worst.1
    );
    assert!(
        logits_err < 1e-4,
        "{arch}: eval logits relative error {logits_err:.3e}"
    );
    assert!(loss_err < 1e-4, "{arch}: loss {loss} vs {want}");
    assert!(bad.is_empty(), "{arch}: gradients off:\n{}", bad.join("\n"));
    assert!(
        input_grad < 1e-3,
        "{arch}: input gradient relative error {input_grad:.3e}"
    );
    // Frozen: the weights, running statistics and num_batches_tracked are as loaded.
    assert_eq!(
        interop::read_model(gpu, &m).unwrap(),
        w,
        "{arch}: a frozen-BN step changed the model state"
    );
}

#[test]
fn layouts_convert_both_ways() {
    let l = Layout::Linear { cin: 2, cout: 3 };
    let pt = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
    let e = l.to_effnet(&pt);
    assert_eq!(e, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]); // [2, 3]
    assert_eq!(l.to_timm(&e), pt.to_vec());
    let c = Layout::Conv {
        k: 3,
        cin: 4,
        cout: 6,
        groups: 2,
    };
    let v: Vec<f32> = (0..6 * 2 * 9).map(|i| i as f32).collect();
    assert_eq!(c.to_timm(&c.to_effnet(&v)), v);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-interop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn predict_args(arch: &str, weights: &Path, input: &[&Path], extra: &[&str]) -> PredictArgs {
    #[derive(clap::Parser)]
    #[command(args_override_self = true)]
    struct Wrap {
        #[command(flatten)]
        a: PredictArgs,
    }
    let mut v: Vec<String> = vec!["t".into(), "--arch".into(), arch.into()];
    v.extend(["--weights".into(), weights.display().to_string()]);
    v.push("--input".into());
    v.extend(input.iter().map(|p| p.display().to_string()));
    // Exact f32 logits (parity with the references); an `extra` --precision overrides.
    v.extend(["--precision".into(), "f32".into()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    <Wrap as clap::Parser>::parse_from(v).a
}

/// `predict` on a non-square safetensors batch [N, 3, H, W] gives the logits of the model
/// built for H x W on the same NHWC pixels; a wrong --image-size and an H x W size for
/// image files are refused.
#[test]
fn predict_on_a_non_square_tensor() {
    let gpu = common::gpu();
    let dir = tmp("predict-hw");
    let x = load("tf_efficientnet_b0.eval.safetensors").tensors["input"].clone();
    assert_eq!(x.shape, vec![2, 3, 40, 56]);
    let path = dir.join("input.safetensors");
    let mut st = SafeTensors::default();
    st.insert("input", &x.shape, x.data.clone());
    st.save(&path).unwrap();
    let weights = fixture("efficientnet_b0.weights.safetensors");
    let a = predict_args(
        "efficientnet_b0",
        &weights,
        &[&path],
        &["--image-size", "40x56"],
    );
    let got = predict::run(gpu, &a).unwrap();

    let c = case("efficientnet_b0");
    let mut m = EfficientNet::with_size(gpu, &c.cfg, 2, ImageSize::new(40, 56)).unwrap();
    interop::write_model(
        gpu,
        &mut m,
        &interop::from_timm(&c.cfg, &c.weights).unwrap(),
    )
    .unwrap();
    gpu.write_f32(m.input(), &nchw_to_nhwc(&x.data, &x.shape))
        .unwrap();
    let mut rec = Recorder::new(gpu);
    m.record_eval(&mut rec).unwrap();
    rec.submit().unwrap().wait(gpu).unwrap();
    assert_eq!(got, gpu.read(m.logits()).unwrap());

    let b = predict_args(
        "efficientnet_b0",
        &weights,
        &[&path],
        &["--image-size", "40x48"],
    );
    let e = predict::run(gpu, &b).unwrap_err().to_string();
    assert!(
        e.contains("input is 40x56px but --image-size is 40x48"),
        "{e}"
    );
    let img = fixture("image.png");
    let d = predict_args(
        "efficientnet_b0",
        &weights,
        &[&img],
        &["--image-size", "24x40"],
    );
    let e = predict::run(gpu, &d).unwrap_err().to_string();
    assert!(e.contains("cropped square"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn predict_on_a_tensor_matches_pytorch_logits() {
    let gpu = common::gpu();
    let dir = tmp("predict");
    let out = dir.join("logits.safetensors");
    let parity = fixture("efficientnet_b0.parity.safetensors");
    // Batch 3 over 4 inputs: the last batch is padded.
    let a = predict_args(
        "timm/efficientnet_b0.ra_in1k",
        &fixture("efficientnet_b0.weights.safetensors"),
        &[&parity],
        &[
            "--batch",
            "3",
            "--top-k",
            "3",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let logits = predict::run(gpu, &a).unwrap();
    let st = SafeTensors::load(&out).unwrap();
    let t = st.get("logits").unwrap();
    assert_eq!(t.shape, vec![4, 10]);
    assert_eq!(t.data, logits);
    let want = &load("efficientnet_b0.parity.safetensors").tensors["logits_eval"];
    let e = rel_l2(&t.data, &want.data);
    println!("predict efficientnet_b0: logits relative error {e:.2e}");
    assert!(e < 1e-4, "predict logits relative error {e:.3e}");
    // The preset name with a plain timm state dict takes timm's conventions.
    let b = predict_args(
        "b0",
        &fixture("efficientnet_b0.weights.safetensors"),
        &[&parity],
        &[],
    );
    assert!(rel_l2(&predict::run(gpu, &b).unwrap(), &want.data) < 1e-4);
    // A wrong architecture is refused with the tensor list.
    let c = predict_args(
        "efficientnet_b0_g8_gn",
        &fixture("efficientnet_b0.weights.safetensors"),
        &[&parity],
        &[],
    );
    let e = predict::run(gpu, &c).unwrap_err().to_string();
    assert!(
        e.contains("missing bn1.running_mean") || e.contains("unexpected"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_preprocessing_matches_timm_transform() {
    let want = &load("preprocess.safetensors").tensors["input"];
    let got = predict::preprocess(
        &fixture("image.png"),
        40,
        0.875,
        &predict::IMAGENET_MEAN,
        &predict::IMAGENET_STD,
    )
    .unwrap();
    let want = nchw_to_nhwc(&want.data, &want.shape);
    let diff: Vec<f64> = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .collect();
    let max = diff.iter().cloned().fold(0.0, f64::max);
    let mean = diff.iter().sum::<f64>() / diff.len() as f64;
    println!("preprocessing vs timm: max |diff| {max:.4}, mean {mean:.5} (normalized units)");
    // Same resize, crop and normalization; the bicubic resamplers (image's Catmull-Rom,
    // PIL's bicubic) differ by uint8 rounding: at most 2 steps of 1/255 / std.
    let step = 1.0 / 255.0 / 0.224;
    assert!(
        max < 2.0 * step && mean < 0.5 * step,
        "max {max}, mean {mean}"
    );
}

#[test]
fn predict_on_images_runs_end_to_end() {
    let gpu = common::gpu();
    let img = fixture("image.png");
    let a = predict_args(
        "efficientnet_b0_g8_gn",
        &fixture("efficientnet_b0_g8_gn.weights.safetensors"),
        &[&img, &img],
        &["--image-size", "40", "--top-k", "2"],
    );
    let l = predict::run(gpu, &a).unwrap();
    assert_eq!(l.len(), 20);
    assert_eq!(l[..10], l[10..]);
    let top = predict::top_k(&l[..10], 2);
    assert!(top[0].1 >= top[1].1 && top[0].1 <= 1.0);
}

#[test]
fn export_cli_writes_a_training_checkpoint_as_timm() {
    let gpu = common::gpu();
    let c = case("efficientnet_b0");
    let dir = tmp("export");
    let mut m = EfficientNet::new(gpu, &c.cfg, 2, 32).unwrap();
    interop::write_model(
        gpu,
        &mut m,
        &interop::from_timm(&c.cfg, &c.weights).unwrap(),
    )
    .unwrap();
    let ckpt = dir.join("checkpoint.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert(
        "model_config".to_string(),
        serde_json::to_string(&c.cfg).unwrap(),
    );
    effnet::train::checkpoint::save(&ckpt, gpu, &m, meta).unwrap();
    let out = dir.join("timm.safetensors");
    let a = ExportArgs {
        checkpoint: dir.clone(),
        output: out.clone(),
        raw: false,
    };
    let eq = predict::export(&a).unwrap();
    assert_eq!(eq.name, "efficientnet_b0");
    assert!(
        eq.python().contains("channel_multiplier=0.25"),
        "{}",
        eq.python()
    );
    let st = SafeTensors::load(&out).unwrap();
    for (n, t) in &st.tensors {
        assert_eq!(t, &c.weights.tensors[n], "{n}");
    }
    // Every tensor of PyTorch's state dict, num_batches_tracked included.
    assert_eq!(st.tensors.len(), c.weights.tensors.len());
    // predict reads the training checkpoint itself too (effnet preset name).
    let parity = fixture("efficientnet_b0.parity.safetensors");
    let p = predict_args("b0", &dir, &[&parity], &[]);
    let want = &load("efficientnet_b0.parity.safetensors").tensors["logits_eval"];
    assert!(rel_l2(&predict::run(gpu, &p).unwrap(), &want.data) < 1e-4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train --init`: a timm state dict loads tensor by tensor into a model with another class
/// count (classifier re-initialized) and one input channel (stem summed, as timm's
/// `adapt_input_conv`); files that match nothing, disagree in shape, hold non-finite values
/// or are not safetensors are refused naming the file.
#[test]
fn init_from_a_timm_file_loads_reinitializes_and_refuses() {
    use effnet::interop::init::init_from_file;
    use effnet::train::trainer::initialize_fresh;
    let gpu = common::gpu();
    let c = case("efficientnet_b0");
    let dir = tmp("init");
    let file = fixture("efficientnet_b0.weights.safetensors");
    let tcfg = {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: effnet::cli::train::TrainArgs,
        }
        let a = <Wrap as clap::Parser>::parse_from(["t", "--model", "efficientnet_b0"]).a;
        effnet::cli::train::train_config(&a).unwrap()
    };
    let build = |classes: usize, in_ch: usize| {
        let mut cfg = c.cfg.clone();
        cfg.classes = classes;
        cfg.in_channels = in_ch;
        let mut m = EfficientNet::new(gpu, &cfg, 2, 32).unwrap();
        initialize_fresh(gpu, &mut m, &tcfg).unwrap();
        m
    };
    let want = interop::from_timm(&c.cfg, &c.weights).unwrap();

    // 7 classes, 1 input channel.
    let mut m = build(7, 1);
    let fresh = interop::read_model(gpu, &m).unwrap();
    let r = init_from_file(gpu, &mut m, &file).unwrap();
    println!("{}", r.summary());
    let got = interop::read_model(gpu, &m).unwrap();
    assert_eq!(r.reinitialized.len(), 2, "{:?}", r.reinitialized);
    assert!(r.reinitialized[0].starts_with("classifier.bias"));
    assert_eq!(got["classifier.weight"], fresh["classifier.weight"]);
    assert!(r.loaded.iter().any(|l| l.contains("summed")));
    assert!(r.left_out.is_empty());
    assert_eq!(r.loaded.len() + 2, fresh.len() - count_tracked(&fresh));
    for (name, v) in &want {
        if name.starts_with("classifier.") || name.starts_with("conv_stem.") {
            continue;
        }
        if !name.ends_with(".num_batches_tracked") {
            assert_eq!(&got[name], v, "{name} not loaded");
        }
    }
    // The stem: effnet layout [3, 3, cin, cout]; summed over the file's 3 channels.
    let stem3 = &want["conv_stem.weight"];
    let stem1 = &got["conv_stem.weight"];
    let cout = stem1.len() / 9;
    for k in 0..9 {
        for o in 0..cout {
            let s: f32 = (0..3).map(|ci| stem3[(k * 3 + ci) * cout + o]).sum();
            assert!((stem1[k * cout + o] - s).abs() <= 1e-6 * s.abs().max(1.0));
        }
    }

    // Bad files: each refused with the file's name and what is wrong.
    let write = |name: &str, st: &SafeTensors| {
        let p = dir.join(name);
        st.save(&p).unwrap();
        p
    };
    let mut nothing = SafeTensors::default();
    nothing.insert("fc.weight", &[2, 2], vec![0.0; 4]);
    let mut shape = c.weights.clone();
    shape.insert("conv_head.weight", &[4, 4, 1, 1], vec![0.0; 16]);
    let mut nan = c.weights.clone();
    let mut t = nan.tensors["bn1.weight"].clone();
    t.data[1] = f32::NAN;
    nan.insert("bn1.weight", &t.shape, t.data.clone());
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    let cases = [
        (write("nothing.safetensors", &nothing), "matches no tensor"),
        (
            write("shape.safetensors", &shape),
            "conv_head.weight: shape [4, 4, 1, 1] in the file",
        ),
        (write("nan.safetensors", &nan), "bn1.weight: value NaN"),
        (garbage, "garbage.safetensors"),
        (dir.join("missing.safetensors"), "missing.safetensors"),
    ];
    for (p, want) in cases {
        let mut m = build(10, 3);
        let e = init_from_file(gpu, &mut m, &p).unwrap_err().to_string();
        println!("{}: {e}", p.display());
        assert!(e.contains(want), "{}: {e}", p.display());
        assert!(
            e.contains(&*p.file_name().unwrap().to_string_lossy()),
            "{e}"
        );
    }
    // Another width: every disagreeing tensor listed.
    let mut wide = c.cfg.clone();
    wide.width = 0.5;
    let mut m = EfficientNet::new(gpu, &wide, 2, 32).unwrap();
    initialize_fresh(gpu, &mut m, &tcfg).unwrap();
    let e = init_from_file(gpu, &mut m, &file).unwrap_err().to_string();
    assert!(e.contains("--width"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn count_tracked(w: &interop::Weights) -> usize {
    w.keys()
        .filter(|k| k.ends_with(".num_batches_tracked"))
        .count()
}

/// One `effnet grads` run against its PyTorch reference file (the file is the input too):
/// every tensor of the reference by name. Returns the parity-table row.
fn grads_parity(arch: &str, mode: &str) -> String {
    use effnet::cli::grads::{self, GradsArgs};
    let gpu = common::gpu();
    let reference = fixture(&format!("{arch}.grads-{mode}.safetensors"));
    let out = tmp(&format!("grads-{arch}-{mode}")).join("grads.safetensors");
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        a: GradsArgs,
    }
    let w = fixture(&format!("{arch}.weights.safetensors"));
    let a = <Wrap as clap::Parser>::parse_from([
        "t",
        "--arch",
        arch,
        "--weights",
        &w.display().to_string(),
        "--input",
        &reference.display().to_string(),
        "--mode",
        mode,
        "--output",
        &out.display().to_string(),
    ])
    .a;
    grads::run(gpu, &a).unwrap();
    let got = SafeTensors::load(&out).unwrap();
    let want = SafeTensors::load(&reference).unwrap();
    let names = |st: &SafeTensors| -> Vec<String> {
        st.tensors
            .keys()
            .filter(|k| *k != "input" && *k != "labels")
            .cloned()
            .collect()
    };
    assert_eq!(names(&got), names(&want), "{arch} {mode}: tensor names");
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let grads: Vec<&String> = want
        .tensors
        .keys()
        .filter(|k| k.starts_with("grad.") && *k != "grad.input")
        .collect();
    let total = grads
        .iter()
        .map(|k| norm(&want.tensors[*k].data).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut bad = Vec::new();
    let mut worst = (0.0f64, String::new());
    let mut zero = 0;
    let mut stats = 0.0f64;
    for (k, t) in &want.tensors {
        if k == "input" || k == "labels" {
            continue;
        }
        let g = &got.tensors[k];
        assert_eq!(g.shape, t.shape, "{arch} {mode}: {k} shape");
        if grads.contains(&k) && norm(&t.data) < 1e-10 * total {
            // Zero in exact arithmetic (see the parity test): float32 roundoff level.
            zero += 1;
            if norm(&g.data) >= 1e-6 * total {
                bad.push(format!("{k}: should be ~0"));
            }
            continue;
        }
        let e = rel_l2(&g.data, &t.data);
        let limit = if k.ends_with("num_batches_tracked") {
            0.0
        } else if k.starts_with("grad.") {
            1e-3
        } else {
            1e-4
        };
        if e > limit {
            bad.push(format!("{k}: relative L2 error {e:.3e} (limit {limit:e})"));
        }
        if grads.contains(&k) && e > worst.0 {
            worst = (e, k.clone());
        }
        if k.starts_with("state_after.") {
            stats = stats.max(e);
            // timm's dtype, as `export` writes it (the references hold the count as f32).
            let int = k.ends_with(".num_batches_tracked");
            assert_eq!(got.int64.contains(k), int, "{arch} {mode}: {k} dtype");
        }
    }
    let e = |k: &str| rel_l2(&got.tensors[k].data, &want.tensors[k].data);
    let row = format!(
        "| {arch} | {mode} | {:.1e} | {:.1e} | {:.1e} ({}) | {:.1e} | {} |",
        e("logits"),
        e("loss"),
        worst.0,
        worst.1.trim_start_matches("grad."),
        e("grad.input"),
        if want.tensors.keys().any(|k| k.starts_with("state_after.")) {
            format!("{stats:.1e}")
        } else {
            "-".into()
        }
    );
    println!("{row}  [{zero} gradient(s) zero in exact arithmetic]");
    assert!(bad.is_empty(), "{arch} {mode}:\n  {}", bad.join("\n  "));
    row
}

/// `effnet grads` against PyTorch for every mapped family, train mode and (BatchNorm)
/// eval mode; prints the parity table (relative L2 errors).
#[test]
fn grads_match_pytorch_in_train_and_eval_mode() {
    let mut rows = vec![
        "| model | mode | logits | loss | worst gradient | input gradient | running stats |"
            .to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for (arch, mode) in [
        ("efficientnet_b0", "train"),
        ("efficientnet_b0", "eval"),
        ("efficientnet_b0_gn", "train"),
        ("efficientnet_b0_g8_gn", "train"),
        ("efficientnet_b3_gn", "train"),
        ("tf_efficientnet_b0", "train"),
        ("tf_efficientnet_b0", "eval"),
    ] {
        rows.push(grads_parity(arch, mode));
    }
    println!("{}", rows.join("\n"));
}

/// The BatchNorm momentum's convention: exports state it in PyTorch's (and build the timm
/// module with it), checkpoints state effnet's, and an import converts it back.
#[test]
fn bn_momentum_convention_is_stated_and_converted() {
    let b0 = ModelConfig::preset("b0").unwrap();
    assert_eq!(b0.bn_momentum, 0.99);
    let eq = interop::timm_equivalent(&b0).unwrap();
    assert_eq!(eq.bn_momentum_pytorch, 0.01);
    assert!(eq.python().contains("bn_momentum=0.01"), "{}", eq.python());
    let timm = interop::config_from_timm("efficientnet_b0").unwrap();
    let py = interop::timm_equivalent(&timm).unwrap().python();
    assert!(!py.contains("bn_momentum"), "{py}");
    let c = case("efficientnet_b0");
    let w = interop::from_timm(&c.cfg, &c.weights).unwrap();
    let mut cfg = c.cfg.clone();
    cfg.bn_momentum = 0.97;
    let (st, _) = interop::to_timm(&cfg, &w).unwrap();
    assert_eq!(st.metadata["bn_momentum_pytorch"], "0.03");
    assert!(st.metadata["bn_momentum"].contains("m = 0.97"));
    // A plain timm file (no effnet configuration) that states its momentum.
    let dir = tmp("momentum");
    let mut plain = c.weights.clone();
    plain
        .metadata
        .insert("bn_momentum_pytorch".into(), "0.03".into());
    let p = dir.join("plain.safetensors");
    plain.save(&p).unwrap();
    let r = predict::resolve("efficientnet_b0", &p, false).unwrap();
    assert_eq!(r.cfg.bn_momentum, 0.97);
    plain
        .metadata
        .insert("bn_momentum_pytorch".into(), "2".into());
    plain.save(&p).unwrap();
    let e = predict::resolve("efficientnet_b0", &p, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("plain.safetensors") && e.contains("(0, 1]"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `effnet grads` refuses labels that do not fit, naming where they came from.
#[test]
fn grads_refuses_bad_labels() {
    use effnet::cli::grads::{self, GradsArgs};
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        a: GradsArgs,
    }
    let gpu = common::gpu();
    let input = fixture("efficientnet_b0_gn.grads-train.safetensors");
    let w = fixture("efficientnet_b0_gn.weights.safetensors");
    let out = tmp("grads-bad").join("out.safetensors");
    for (labels, want) in [
        ("3", "1 labels for 2 input(s)"),
        ("0,12", "label 1 is 12: the model has classes 0..9"),
        ("a,b", "comma-separated class indices"),
    ] {
        let a = <Wrap as clap::Parser>::parse_from([
            "t",
            "--arch",
            "efficientnet_b0_gn",
            "--weights",
            &w.display().to_string(),
            "--input",
            &input.display().to_string(),
            "--labels",
            labels,
            "--output",
            &out.display().to_string(),
        ])
        .a;
        let e = grads::run(gpu, &a).unwrap_err().to_string();
        assert!(e.contains(want), "--labels {labels}: {e}");
        assert!(!out.exists());
    }
}
