//! `effnet grads`: one training step's numbers as one safetensors file, in timm names and
//! PyTorch layouts (llm.c's debug state), to compare with PyTorch tensor by tensor.
//!
//! Written: `logits` [N, classes] (of the same forward pass as the loss), `loss` [] (mean
//! cross-entropy, no label smoothing), `grad.<timm name>` for every parameter in its
//! PyTorch layout, `grad.input` [N, C, H, W], and in train mode `state_after.<buffer>` for
//! every BatchNorm `running_mean`, `running_var` (f32) and `num_batches_tracked` (I64,
//! shape [], timm's dtype as `effnet export` writes it) after the step's update. Dropout
//! and drop-connect are off (timm: `drop_rate=0`, `drop_path_rate=0`). Train mode is timm's
//! `model.train()` (BatchNorm on batch statistics, running statistics updated); eval mode
//! is `model.eval()` (BatchNorm on its running statistics, which stay unchanged, gradients
//! flowing through them).

use std::path::{Path, PathBuf};

use clap::Args;

use crate::cli::predict::{self, Resolved};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::interop::{convert, tensor_maps};
use crate::models::efficientnet::EfficientNet;
use crate::models::{ImageSize, NormChoice};
use crate::nn::model::Trainable;
use crate::util::safetensors::SafeTensors;
use crate::util::Rng;

/// BatchNorm mode of `effnet grads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GradMode {
    /// timm's `model.train()`: batch statistics, running statistics updated.
    Train,
    /// timm's `model.eval()`: running statistics, unchanged; gradients through them.
    Eval,
}

/// Options of `effnet grads`.
#[derive(Args, Debug, Clone)]
pub struct GradsArgs {
    /// Architecture: a timm name or an effnet preset (as `effnet predict --arch`).
    #[arg(long)]
    pub arch: String,
    /// Weights: a timm state dict, an `effnet export` file or an effnet training
    /// checkpoint (its raw weights).
    #[arg(long)]
    pub weights: PathBuf,
    /// Input: PNG/JPEG images (preprocessed as `effnet predict` does), or one safetensors
    /// file holding `input` [N, C, H, W] f32 (H and W may differ) and optionally `labels`
    /// [N] (int64).
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Labels: comma-separated class indices (`3,0,7`) or a safetensors file holding
    /// `labels` [N]; overrides labels in the input file.
    #[arg(long)]
    pub labels: Option<String>,
    /// BatchNorm mode.
    #[arg(long, value_enum, default_value = "train")]
    pub mode: GradMode,
    /// Output safetensors file.
    #[arg(long)]
    pub output: PathBuf,
    /// Image resolution for image inputs (default: the architecture's).
    #[arg(long)]
    pub image_size: Option<usize>,
}

/// Class indices from values read as f32 (int64 in the file), each checked.
fn class_indices(path: &str, v: &[f32], n: usize, classes: usize) -> Result<Vec<u32>> {
    if v.len() != n {
        return Err(Error::file(
            path,
            format!("{} labels for {n} input(s): give one per input", v.len()),
        ));
    }
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            if x.fract() == 0.0 && x >= 0.0 && (x as usize) < classes {
                Ok(x as u32)
            } else {
                Err(Error::file(
                    path,
                    format!("label {i} is {x}: the model has classes 0..{}", classes - 1),
                ))
            }
        })
        .collect()
}

/// The labels from `--labels` or the input file.
fn read_labels(a: &GradsArgs, n: usize, classes: usize) -> Result<Vec<u32>> {
    let from_file = |p: &Path| -> Result<Vec<f32>> {
        let st = SafeTensors::load(p)?;
        Ok(st
            .get("labels")
            .map_err(|e| Error::file(p, e.to_string()))?
            .data
            .clone())
    };
    match &a.labels {
        Some(l) if Path::new(l).is_file() => {
            class_indices(l, &from_file(Path::new(l))?, n, classes)
        }
        Some(l) => {
            let v: std::result::Result<Vec<u32>, _> =
                l.split(',').map(|s| s.trim().parse::<u32>()).collect();
            let v = v.map_err(|_| {
                Error::Config(format!(
                    "--labels '{l}': give comma-separated class indices or a safetensors file \
                     holding `labels`"
                ))
            })?;
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            class_indices("--labels", &v, n, classes)
        }
        None => {
            let p = &a.input[0];
            let st = (a.input.len() == 1)
                .then(|| SafeTensors::load(p).ok())
                .flatten()
                .filter(|st| st.tensors.contains_key("labels"));
            match st {
                Some(st) => class_indices(
                    &p.display().to_string(),
                    &st.tensors["labels"].data,
                    n,
                    classes,
                ),
                None => Err(Error::Config(
                    "no labels: give --labels or an input safetensors file holding `labels`".into(),
                )),
            }
        }
    }
}

/// A safetensors `--input`: `input` [N, C, H, W] (any H, W >= 8) as NHWC, checked.
fn read_tensor_input(path: &Path, c: usize) -> Result<(Vec<f32>, usize, ImageSize)> {
    let st = SafeTensors::load(path)?;
    let t = st
        .get("input")
        .map_err(|e| Error::file(path, e.to_string()))?;
    let s = &t.shape;
    if s.len() != 4 || s[0] == 0 || s[1] != c {
        return Err(Error::file(
            path,
            format!("input has shape {s:?}; the model needs [N >= 1, {c}, H, W]"),
        ));
    }
    let size = ImageSize::new(s[2], s[3]);
    size.check_min()
        .map_err(|e| Error::file(path, e.to_string()))?;
    if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::file(
            path,
            format!(
                "input holds a non-finite value ({}) at index {i}",
                t.data[i]
            ),
        ));
    }
    let (n, hw) = (s[0], size.pixels());
    let mut out = vec![0.0f32; t.data.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(b * hw + p) * c + ch] = t.data[(b * c + ch) * hw + p];
            }
        }
    }
    Ok((out, n, size))
}

/// Run `effnet grads`; returns the file written (in memory).
pub fn run(gpu: &Gpu, a: &GradsArgs) -> Result<SafeTensors> {
    let mut r: Resolved = predict::resolve(&a.arch, &a.weights, true)?;
    r.cfg.dropout = 0.0;
    r.cfg.drop_connect = 0.0;
    let is_st = a.input.len() == 1
        && a.input[0]
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (data, n, size) = if is_st {
        read_tensor_input(&a.input[0], r.cfg.in_channels)?
    } else {
        let size = a.image_size.map(ImageSize::square);
        let (_, data, n, s) = predict::read_input_files(&a.input, size, 0.875, &r)?;
        (data, n, s)
    };
    let classes = r.cfg.classes;
    let labels = read_labels(a, n, classes)?;
    let maps = tensor_maps(&r.cfg)?;
    let mut model = EfficientNet::with_size(gpu, &r.cfg, n, size)?;
    if let Some((path, shapes)) = &r.file_shapes {
        predict::check_shapes(path, &model, shapes)?;
    }
    convert::write_model(gpu, &mut model, &r.weights)?;
    model.enable_input_grad(gpu)?;
    let bn = r.cfg.norm == NormChoice::Bn;
    if bn {
        model.set_bn_frozen(a.mode == GradMode::Eval)?;
    }
    gpu.write_f32(model.input(), &data)?;
    gpu.write_u32(model.labels(), &labels)?;
    gpu.write_f32(model.loss_weights(), &vec![1.0 / n as f32; n])?;
    let mut rec = Recorder::new(gpu);
    model.record_train_step(&mut rec, &mut Rng::new(0), 0.0, false)?;
    rec.submit()?.wait(gpu)?;

    let mut st = SafeTensors::default();
    st.insert("logits", &[n, classes], gpu.read(model.logits())?);
    let rows = gpu.read(model.loss_rows())?;
    let loss = rows.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    st.insert("loss", &[], vec![loss as f32]);
    let store = model.store();
    for m in maps.iter().filter(|m| !m.running) {
        let id = store.find(&m.name).ok_or_else(|| {
            Error::Config(format!("model {} has no parameter {}", r.cfg.name, m.name))
        })?;
        let g = gpu.read(store.g(id))?;
        st.insert(
            format!("grad.{}", m.name),
            &m.timm_shape,
            m.layout.to_timm(&g),
        );
    }
    let c = r.cfg.in_channels;
    let dx = gpu.read(model.input_grad().expect("input gradient enabled"))?;
    let mut nchw = vec![0.0f32; dx.len()];
    let hw = size.pixels();
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                nchw[(b * c + ch) * hw + p] = dx[(b * hw + p) * c + ch];
            }
        }
    }
    st.insert("grad.input", &[n, c, size.h, size.w], nchw);
    if a.mode == GradMode::Train && bn {
        let w = convert::read_model(gpu, &model)?;
        for m in maps.iter().filter(|m| m.running) {
            st.insert(
                format!("state_after.{}", m.name),
                &m.timm_shape,
                w[&m.name].clone(),
            );
            if let Some(layer) = m.name.strip_suffix(".running_var") {
                let t = format!("{layer}.num_batches_tracked");
                st.insert_i64(format!("state_after.{t}"), &[], w[&t].clone());
            }
        }
    }
    st.metadata.insert("arch".into(), r.cfg.name.clone());
    st.metadata.insert(
        "mode".into(),
        match a.mode {
            GradMode::Train => "train",
            GradMode::Eval => "eval",
        }
        .into(),
    );
    st.metadata.insert(
        "effnet_model_config".into(),
        serde_json::to_string(&r.cfg).expect("config serializes"),
    );
    st.save(&a.output)?;
    println!(
        "{}: {n} input(s) at {size}, {} mode, loss {loss:.6}; wrote logits, loss, {} \
         parameter gradients, grad.input{} to {}",
        r.cfg.name,
        st.metadata["mode"],
        maps.iter().filter(|m| !m.running).count(),
        if a.mode == GradMode::Train && bn {
            " and the running statistics after the step"
        } else {
            ""
        },
        a.output.display()
    );
    Ok(st)
}
