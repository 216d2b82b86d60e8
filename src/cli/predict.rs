//! `effnet predict`: classify images (or a prepared input tensor) with timm or effnet
//! weights, and `effnet export`: an effnet training checkpoint as timm-named safetensors.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::cli::precision::{self, PrecisionArg};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision, Recorder};
use crate::interop::{self, arch, convert, TimmEquivalent, Weights};
use crate::models::efficientnet::EfficientNet;
use crate::models::{ImageSize, ModelConfig, NormChoice};
use crate::nn::model::Trainable;
use crate::train::trainer;
use crate::util::safetensors::SafeTensors;

/// ImageNet channel means (timm's `IMAGENET_DEFAULT_MEAN`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (timm's `IMAGENET_DEFAULT_STD`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Options of `effnet predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// Architecture: a timm name (efficientnet_b0..efficientnet_b7, efficientnet_b0_gn,
    /// efficientnet_b0_g8_gn; hub prefixes and tags such as `.ra_in1k` are ignored) or an
    /// effnet preset (b0..b7, b0-g16..b7-g16); see `effnet train --help` for the mapping.
    #[arg(long)]
    pub arch: String,
    /// Weights: a timm state dict as safetensors, a file from `effnet export`, or an
    /// effnet training checkpoint (run folder or file).
    #[arg(long)]
    pub weights: PathBuf,
    /// Inputs: PNG/JPEG images, or one safetensors file whose `input` tensor
    /// [N, C, H, W] f32 is already preprocessed.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Write the logits here as safetensors (tensor `logits`, [N, classes] f32).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Classes printed per input.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Inputs per forward pass (the model is planned for this batch; the last batch is
    /// padded).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Image resolution, `N` or `HxW` (default: the architecture's). Image files are
    /// cropped square (N); a safetensors input may be any H x W.
    #[arg(long)]
    pub image_size: Option<ImageSize>,
    /// Images: resize the shorter side to image_size / crop_pct (bicubic), then take the
    /// central image_size square (timm's evaluation transform).
    #[arg(long, default_value_t = 0.875)]
    pub crop_pct: f64,
    /// Class names, one per line, printed next to the indices (default: the names an
    /// effnet training checkpoint stores).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// With an effnet training checkpoint: use its raw weights, not their average.
    #[arg(long)]
    pub raw: bool,
    /// Storage precision of the activations (see `effnet train --help`); the logits are
    /// f32 either way.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
}

/// A model ready to build: configuration, weights in effnet's layouts and the input
/// normalization.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Model configuration.
    pub cfg: ModelConfig,
    /// Parameters and running statistics.
    pub weights: Weights,
    /// Per-channel mean subtracted from images in [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation images are divided by.
    pub std: Vec<f32>,
    /// For weights in effnet's layouts (training checkpoints): the file and each tensor's
    /// shape in it, checked against the built model. None when the import already checked
    /// every shape (timm state dicts and `effnet export` files).
    pub file_shapes: Option<(PathBuf, std::collections::BTreeMap<String, Vec<usize>>)>,
    /// Class names (from an effnet training checkpoint; empty when the file has none).
    pub class_names: Vec<String>,
}

fn imagenet_stats(c: usize) -> (Vec<f32>, Vec<f32>) {
    if c == 3 {
        (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec())
    } else {
        let m = IMAGENET_MEAN.iter().sum::<f32>() / 3.0;
        let s = IMAGENET_STD.iter().sum::<f32>() / 3.0;
        (vec![m; c], vec![s; c])
    }
}

/// The base configuration of `--arch`: a timm name or an effnet preset (see
/// [`interop::names`]: unbuildable timm names are refused naming the missing piece).
fn arch_config(name: &str) -> Result<(ModelConfig, bool)> {
    let n: interop::ModelName = name
        .parse()
        .map_err(|e: Error| Error::Config(format!("--arch: {e}")))?;
    Ok((n.config(), n.is_timm()))
}

/// True when two configurations are of one family: the spatial convolutions' groups and
/// the expansion, and for timm names the normalization too.
fn same_family(base: &ModelConfig, timm: bool, cfg: &ModelConfig) -> bool {
    cfg.group_size == base.group_size
        && cfg.expand == base.expand
        && (!timm
            || (cfg.norm == base.norm
                && (cfg.norm != NormChoice::Gn || cfg.gn_group_size == base.gn_group_size)))
}

fn same_scale(a: &ModelConfig, b: &ModelConfig) -> bool {
    a.width == b.width && a.depth == b.depth
}

/// The `--arch` name (timm name or effnet preset, as `timm` says) whose family and width
/// and depth multipliers are those of `cfg`, if one is.
fn named_arch(timm: bool, cfg: &ModelConfig) -> Option<String> {
    let candidates: Vec<ModelConfig> = if timm {
        arch::TIMM_ARCHS
            .iter()
            .filter_map(|a| interop::config_from_timm(a.name).ok())
            .collect()
    } else {
        (0..8)
            .flat_map(|i| [format!("b{i}"), format!("b{i}-g16")])
            .filter_map(|n| ModelConfig::preset(&n).ok())
            .collect()
    };
    candidates
        .into_iter()
        .find(|c| same_family(c, timm, cfg) && same_scale(c, cfg))
        .map(|c| c.name)
}

/// The longest architecture name (timm or effnet, as `timm` says) that a stored model
/// name is, or begins with followed by `-` (`b1-g16-w0.25` is a width override of
/// `b1-g16`).
fn preset_of(timm: bool, name: &str) -> Option<String> {
    let names: Vec<String> = if timm {
        arch::TIMM_ARCHS
            .iter()
            .map(|a| a.name.to_string())
            .collect()
    } else {
        (0..8)
            .flat_map(|i| [format!("b{i}"), format!("b{i}-g16")])
            .collect()
    };
    names
        .into_iter()
        .filter(|n| name == n || name.starts_with(&format!("{n}-")))
        .max_by_key(|n| n.len())
}

/// The architecture names (timm names and effnet presets) that a model name is or extends
/// (`b1-g16-w0.25` extends `b1-g16`), with the effnet preset of each timm name.
fn lineage(name: &str) -> Vec<String> {
    let presets = (0..8).flat_map(|i| [format!("b{i}"), format!("b{i}-g16")]);
    let timm = arch::TIMM_ARCHS.iter().map(|a| a.name.to_string());
    let mut v: Vec<String> = presets
        .chain(timm)
        .filter(|n| name == n || name.starts_with(&format!("{n}-")))
        .collect();
    let mapped: Vec<String> = v
        .iter()
        .filter_map(|n| arch::find_arch(n).map(|a| a.preset.to_string()))
        .collect();
    v.extend(mapped);
    v
}

fn describe(cfg: &ModelConfig) -> String {
    format!(
        "width {}, depth {}, {} channels per conv group, expansion {}, {} norm",
        cfg.width,
        cfg.depth,
        cfg.group_size,
        cfg.expand,
        cfg.norm.name()
    )
}

/// Check the model of the weights against `--arch`: the same family, and the same width
/// and depth multipliers. A configuration stored in the file (`stored`) may also be a
/// width or depth override of the named preset (its name then starts with the preset's,
/// as `effnet train --width` names it); a scale read from a timm state dict's shapes may
/// be any that no other named architecture has.
fn check_arch(
    arch_name: &str,
    base: &ModelConfig,
    timm: bool,
    cfg: &ModelConfig,
    stored: bool,
    path: &Path,
) -> Result<()> {
    let other = named_arch(timm, cfg).filter(|n| *n != base.name);
    let ok = same_family(base, timm, cfg)
        && (same_scale(base, cfg)
            || if stored {
                // A width or depth override of the named architecture: `effnet train
                // --model b0 --width 0.25` names its model b0-w0.25, an imported timm
                // model is efficientnet_b0-w0.25-d0.25; a timm name stands for its preset.
                let theirs = lineage(&cfg.name);
                lineage(&base.name).iter().any(|n| theirs.contains(n))
            } else {
                other.is_none()
            });
    if ok {
        return Ok(());
    }
    let hint = match other.or_else(|| stored.then(|| preset_of(timm, &cfg.name)).flatten()) {
        Some(n) => format!("pass --arch {n}"),
        None => "pass the --arch the weights were trained as".into(),
    };
    Err(Error::file(
        path,
        format!(
            "--arch {arch_name} ({}) does not match the weights' model {} ({}): {hint}",
            describe(base),
            cfg.name,
            describe(cfg)
        ),
    ))
}

/// Check that every tensor of a built model has the shape the weights file gives it
/// (`shapes`, by effnet name), as `effnet eval` does for training checkpoints.
pub fn check_shapes(
    path: &Path,
    model: &EfficientNet,
    shapes: &std::collections::BTreeMap<String, Vec<usize>>,
) -> Result<()> {
    let want = model
        .store()
        .defs
        .iter()
        .map(|d| (d.name.clone(), d.shape.clone()))
        .chain(
            model
                .state_tensors()
                .into_iter()
                .map(|(n, t)| (n, t.shape().to_vec())),
        );
    let problems: Vec<String> = want
        .filter_map(|(name, shape)| match shapes.get(&name) {
            None => Some(format!("missing {name}")),
            Some(s) if *s != shape => Some(format!(
                "{name}: shape {s:?} in the file, the model needs {shape:?}"
            )),
            Some(_) => None,
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::file(
            path,
            format!(
                "checkpoint does not match its model {}: {} problem(s):\n  {}",
                model.cfg.name,
                problems.len(),
                problems.join("\n  ")
            ),
        ))
    }
}

/// Resolve `--arch` and `--weights` into a configuration and weights. Effnet training
/// checkpoints and `effnet export` files carry their configuration; plain timm state dicts
/// take the named architecture (or the preset with timm's conventions: norm eps 1e-5,
/// BatchNorm when the file has running statistics, else GroupNorm with 8 channels per
/// group) adapted to the file's classes, input channels, width and depth.
pub fn resolve(arch_name: &str, weights: &Path, raw: bool) -> Result<Resolved> {
    let (base, timm) = arch_config(arch_name)?;
    let path = if weights.is_dir() {
        trainer::checkpoint_path(weights)
    } else {
        weights.to_path_buf()
    };
    let st = SafeTensors::load(&path)?;
    if st.metadata.contains_key("model_config") {
        // An effnet training checkpoint: w/, ema/, state/ tensors.
        let cfg = convert::checkpoint_config(&path, &st)?;
        check_arch(arch_name, &base, timm, &cfg, true, &path)?;
        let (w, shapes) = convert::checkpoint_weights(st.tensors, &st.metadata, raw);
        let parse = |k: &str| -> Option<Vec<f32>> {
            let v: Vec<f32> = st
                .metadata
                .get(k)?
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            (v.len() == cfg.in_channels).then_some(v)
        };
        let (mean, std) = match (parse("norm_mean"), parse("norm_std")) {
            (Some(m), Some(s)) => (m, s),
            _ => imagenet_stats(cfg.in_channels),
        };
        return Ok(Resolved {
            cfg,
            weights: w,
            mean,
            std,
            file_shapes: Some((path, shapes)),
            class_names: trainer::class_names(&st.metadata).unwrap_or_default(),
        });
    }
    let cfg = match st.metadata.get(convert::META_CONFIG) {
        Some(s) => {
            let cfg = convert::parse_config(&path, convert::META_CONFIG, s)?;
            check_arch(arch_name, &base, timm, &cfg, true, &path)?;
            cfg
        }
        None => {
            let mut base = base;
            // A plain timm file may state its BatchNorm momentum (PyTorch's convention).
            if let Some(m) = st.metadata.get(arch::META_BN_MOMENTUM_PYTORCH) {
                let v = m
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| *v > 0.0 && *v <= 1.0);
                let v = v.ok_or_else(|| {
                    Error::file(
                        &path,
                        format!(
                            "bad {} metadata '{m}': want PyTorch's BatchNorm momentum in (0, 1]",
                            arch::META_BN_MOMENTUM_PYTORCH
                        ),
                    )
                })?;
                base.bn_momentum = arch::bn_momentum_from_pytorch(v);
            }
            if !timm {
                base.norm_eps = arch::TIMM_NORM_EPS;
                if !st.metadata.contains_key(arch::META_BN_MOMENTUM_PYTORCH) {
                    base.bn_momentum = arch::TIMM_BN_MOMENTUM;
                }
                if st.tensors.contains_key("bn1.running_mean") {
                    base.norm = NormChoice::Bn;
                } else {
                    base.norm = NormChoice::Gn;
                    base.gn_group_size = Some(8);
                }
            }
            let cfg =
                interop::infer_config(&base, &st).map_err(|e| Error::file(&path, e.to_string()))?;
            check_arch(arch_name, &base, timm, &cfg, false, &path)?;
            cfg
        }
    };
    let w = interop::from_timm(&cfg, &st).map_err(|e| Error::file(&path, e.to_string()))?;
    let (mean, std) = imagenet_stats(cfg.in_channels);
    Ok(Resolved {
        cfg,
        weights: w,
        mean,
        std,
        file_shapes: None,
        class_names: Vec::new(),
    })
}

/// Most pixels `predict` resizes an image to before cropping it (8192 x 8192).
pub const MAX_RESIZED_PIXELS: usize = 1 << 26;

/// Load an image as `[size, size, c]` NHWC f32: resize the shorter side to
/// `floor(size / crop_pct)` (bicubic), take the central `size` square (torchvision's
/// rounding), scale to [0, 1] and normalize with `mean` / `std`.
pub fn preprocess(
    path: &Path,
    size: usize,
    crop_pct: f64,
    mean: &[f32],
    std: &[f32],
) -> Result<Vec<f32>> {
    let c = mean.len();
    let img =
        image::open(path).map_err(|e| Error::file(path, format!("cannot decode image ({e})")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let scale = ((size as f64 / crop_pct).floor() as usize).max(size);
    let (nw, nh) = if w <= h {
        (scale, (scale as f64 * h as f64 / w.max(1) as f64) as usize)
    } else {
        ((scale as f64 * w as f64 / h.max(1) as f64) as usize, scale)
    };
    // The resize happens before the crop: an extreme aspect ratio (a 1 x 65535 image)
    // would allocate gigabytes for pixels the crop throws away.
    if w == 0 || h == 0 || nw.saturating_mul(nh) > MAX_RESIZED_PIXELS {
        return Err(Error::file(
            path,
            format!(
                "a {w}x{h} image would be resized to {nw}x{nh} before the {size}px crop (more \
                 than {MAX_RESIZED_PIXELS} pixels): crop it closer to square first"
            ),
        ));
    }
    let resized = img.resize_exact(
        nw as u32,
        nh as u32,
        image::imageops::FilterType::CatmullRom,
    );
    // torchvision: int(round((h - th) / 2.0)), Python rounding half to even.
    let top = ((nh - size) as f64 / 2.0).round_ties_even() as usize;
    let left = ((nw - size) as f64 / 2.0).round_ties_even() as usize;
    let px: Vec<u8> = if c == 1 {
        resized.to_luma8().into_raw()
    } else if c == 3 {
        resized.to_rgb8().into_raw()
    } else {
        return Err(Error::Config(format!(
            "images give 1 or 3 channels; the model takes {c} (use a safetensors input)"
        )));
    };
    let mut out = Vec::with_capacity(size * size * c);
    for y in 0..size {
        for x in 0..size {
            for ch in 0..c {
                let v = px[((top + y) * nw + left + x) * c + ch] as f32 / 255.0;
                out.push((v - mean[ch]) / std[ch]);
            }
        }
    }
    Ok(out)
}

/// The inputs as NHWC images: (names, data, count, size).
fn read_inputs(a: &PredictArgs, r: &Resolved) -> Result<(Vec<String>, Vec<f32>, usize, ImageSize)> {
    read_input_files(&a.input, a.image_size, a.crop_pct, r)
}

/// `--input` files as NHWC images `(names, data, count, size)`: PNG/JPEG images
/// preprocessed as timm's evaluation transform at `image_size` (default: the
/// architecture's resolution; square), or one safetensors file whose `input` tensor
/// [N, C, H, W] is used as is (checked: shape, channels, finite values).
pub fn read_input_files(
    input: &[PathBuf],
    image_size: Option<ImageSize>,
    crop_pct: f64,
    r: &Resolved,
) -> Result<(Vec<String>, Vec<f32>, usize, ImageSize)> {
    let c = r.cfg.in_channels;
    let is_st = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    };
    if input.len() == 1 && is_st(&input[0]) {
        let path = &input[0];
        let st = SafeTensors::load(path)?;
        let t = st
            .get("input")
            .map_err(|e| Error::file(path, e.to_string()))?;
        let s = &t.shape;
        if s.len() != 4 || s[1] != c || s[2] < 8 || s[3] < 8 {
            return Err(Error::file(
                path,
                format!(
                    "input has shape {s:?}; the model needs [N, {c}, H, W] with images of at \
                     least 8 x 8 pixels"
                ),
            ));
        }
        let size = ImageSize::new(s[2], s[3]);
        if let Some(want) = image_size.filter(|&v| v != size) {
            return Err(Error::file(
                path,
                format!("input is {size}px but --image-size is {want}"),
            ));
        }
        let (n, hw) = (s[0], size.pixels());
        if n == 0 {
            return Err(Error::file(path, "input holds no images (shape [0, ...])"));
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            let per = c * hw;
            return Err(Error::file(
                path,
                format!(
                    "input holds a non-finite value ({}) in image {}: every logit would be NaN",
                    t.data[i],
                    i / per
                ),
            ));
        }
        let mut out = vec![0.0; t.data.len()];
        for b in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    out[(b * hw + p) * c + ch] = t.data[(b * c + ch) * hw + p];
                }
            }
        }
        let names = (0..n).map(|i| format!("input[{i}]")).collect();
        return Ok((names, out, n, size));
    }
    if let Some(p) = input.iter().find(|p| is_st(p)) {
        return Err(Error::file(
            p,
            "a safetensors input must be the only --input",
        ));
    }
    let size = match image_size {
        None => r.cfg.resolution,
        Some(s) if s.is_square() => s.h,
        Some(s) => {
            return Err(Error::Config(format!(
                "--image-size {s}: image files are cropped square (timm's centre crop); give \
                 --image-size N, or a safetensors input [N, C, H, W] for H x W"
            )))
        }
    };
    if crop_pct.is_nan() || crop_pct <= 0.0 || crop_pct > 1.0 {
        return Err(Error::Config(format!(
            "--crop-pct must be in (0, 1], got {}",
            crop_pct
        )));
    }
    let mut data = Vec::with_capacity(input.len() * size * size * c);
    for p in input {
        data.extend(preprocess(p, size, crop_pct, &r.mean, &r.std)?);
    }
    let names = input.iter().map(|p| p.display().to_string()).collect();
    Ok((names, data, input.len(), ImageSize::square(size)))
}

/// Evaluation-mode logits `[n, classes]` of NHWC inputs `[n, h, w, c]` (`size`: a side
/// for square images, or an [`ImageSize`]), in batches of `batch` (the last one padded
/// with zeros), all in f32.
pub fn logits(
    gpu: &Gpu,
    r: &Resolved,
    inputs: &[f32],
    n: usize,
    size: impl Into<ImageSize>,
    batch: usize,
) -> Result<Vec<f32>> {
    logits_at(gpu, r, inputs, n, size.into(), batch, Precision::F32)
}

/// [`logits`] with the activations stored at `precision`.
pub fn logits_at(
    gpu: &Gpu,
    r: &Resolved,
    inputs: &[f32],
    n: usize,
    size: ImageSize,
    batch: usize,
    precision: Precision,
) -> Result<Vec<f32>> {
    let batch = batch.clamp(1, n.max(1));
    let mut model = EfficientNet::with_precision(gpu, &r.cfg, batch, size, precision)?;
    if let Some((path, shapes)) = &r.file_shapes {
        check_shapes(path, &model, shapes)?;
    }
    convert::write_model(gpu, &mut model, &r.weights)?;
    let per = size.pixels() * r.cfg.in_channels;
    let k = r.cfg.classes;
    let mut out = Vec::with_capacity(n * k);
    let mut buf = vec![0.0f32; batch * per];
    for start in (0..n).step_by(batch) {
        let m = batch.min(n - start);
        buf[..m * per].copy_from_slice(&inputs[start * per..(start + m) * per]);
        buf[m * per..].fill(0.0);
        gpu.write_f32(model.input(), &buf)?;
        let mut rec = Recorder::new(gpu);
        model.record_eval(&mut rec)?;
        rec.submit()?.wait(gpu)?;
        let l = gpu.read(model.logits())?;
        out.extend_from_slice(&l[..m * k]);
    }
    Ok(out)
}

/// The `k` most likely classes of a row of logits: (class, probability), best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f64)> {
    let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z: f64 = logits.iter().map(|&v| (v as f64 - mx).exp()).sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| (i, (logits[i] as f64 - mx).exp() / z))
        .collect()
}

/// Run `effnet predict`; returns the logits `[N, classes]`.
pub fn run(gpu: &Gpu, a: &PredictArgs) -> Result<Vec<f32>> {
    let r = resolve(&a.arch, &a.weights, a.raw)?;
    let (names, data, n, size) = read_inputs(a, &r)?;
    let classes = r.cfg.classes;
    let label_names: Vec<String> = match &a.labels {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Error::file(p, format!("cannot read: {e}")))?
            .lines()
            .map(|l| l.trim().to_string())
            .collect(),
        None => r.class_names.clone(),
    };
    let chosen = precision::choose(gpu, a.precision)?;
    let out = logits_at(gpu, &r, &data, n, size, a.batch, chosen.precision)?;
    println!(
        "{}: {} classes, {n} input(s) at {size}px on {} ({:?}), {}",
        r.cfg.name,
        classes,
        gpu.info.name,
        gpu.info.backend,
        chosen.header()
    );
    for (i, name) in names.iter().enumerate() {
        let top = top_k(&out[i * classes..(i + 1) * classes], a.top_k.max(1));
        let s: Vec<String> = top
            .iter()
            .map(|(c, p)| match label_names.get(*c) {
                Some(l) => format!("{c} {l} {:.2}%", 100.0 * p),
                None => format!("{c} {:.2}%", 100.0 * p),
            })
            .collect();
        println!("{name}: {}", s.join(", "));
    }
    if let Some(p) = &a.output {
        let mut st = SafeTensors::default();
        st.insert("logits", &[n, classes], out.clone());
        st.metadata.insert("arch".into(), r.cfg.name.clone());
        st.save(p)?;
        println!("wrote logits [{n}, {classes}] to {}", p.display());
    }
    Ok(out)
}

/// Options of `effnet export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Run folder or checkpoint file from `effnet train`.
    pub checkpoint: PathBuf,
    /// Output safetensors file (timm names, PyTorch layouts).
    #[arg(long)]
    pub output: PathBuf,
    /// Export the raw weights instead of their average.
    #[arg(long)]
    pub raw: bool,
}

/// Run `effnet export`: write the checkpoint as a timm state dict and say how to load it.
pub fn export(a: &ExportArgs) -> Result<TimmEquivalent> {
    let path = if a.checkpoint.is_dir() {
        trainer::checkpoint_path(&a.checkpoint)
    } else {
        a.checkpoint.clone()
    };
    let eq = convert::export_checkpoint(&path, &a.output, a.raw)?;
    println!(
        "wrote {} ({} weights) as timm {}; in Python:",
        a.output.display(),
        if a.raw { "raw" } else { "averaged" },
        eq.name
    );
    println!("  import functools, timm, safetensors.torch");
    println!("  model = {}", eq.python());
    println!(
        "  model.load_state_dict(safetensors.torch.load_file(\"{}\"))",
        a.output.display()
    );
    Ok(eq)
}
