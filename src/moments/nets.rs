//! The paper's random networks (SPEC §D.1) and the simultaneous propagation of a signal
//! `x` and an infinitesimal perturbation `dx` (a Jacobian-vector product) through them.
//!
//! Every simulation draws fresh weights (on the GPU, from a key derived from the seed, the
//! simulation and the layer), a fresh batch of inputs and a fresh `dx^0 ~ N(0, 1)`:
//!
//! - first layer: convolution `k x k`, stride 2 (stride 1 and flattened images when
//!   `k = 1`, the fully connected case), LeCun init `N(0, 1 / fan_in)`, no norm, no
//!   activation;
//! - then `depth` layers (feed-forward) or residual units (`bn-res`), He init
//!   `N(0, 2 / fan_in)`, zero bias, periodic boundary (wrap-pad, 'same' convolution, crop);
//! - normalizations use their batch / sample statistics for `x` and divide `dx` by the
//!   same standard deviation without centering (statistics treated as constants);
//!   activations mask `dx` by `x > 0` (ReLU); residual adds add both;
//! - after every layer (unit) `dx` is rescaled to unit second moment on the GPU and the
//!   log of the factor is accumulated on the host in f64.
//!
//! Moments are reduced on the GPU into a per-simulation record read back once; channel
//! covariances (effective ranks) are formed by a GEMM and read back per chunk of layers,
//! their largest eigenvalue found on the CPU while the GPU runs the next chunk.

use std::path::Path;

use super::kernels::{self, MomentPlan, MomentScratch, MOMENT_VALUES};
use super::stats;
use crate::data;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Readback, Recorder, Tensor};
use crate::ops::act::Act;
use crate::ops::conv::{self, ConvSpec, Padding};
use crate::ops::elementwise;
use crate::ops::norm::{self, NormKind, NormParams, NormSpec};
use crate::ops::proxy_norm::{self, ProxyParams, PROXY_EPS};
use crate::ops::reduce::{self, Axes};
use crate::util::Rng;

/// A network family of the analysis (a `--net` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Net {
    /// conv -> ReLU.
    Vanilla,
    /// conv -> BatchNorm -> ReLU.
    #[value(alias = "bn_ff")]
    BnFf,
    /// Pre-activation residual units: `res_depth` x [BN -> ReLU -> conv], plus the skip.
    #[value(alias = "bn_res")]
    BnRes,
    /// conv -> LayerNorm (over H, W, C per sample) -> ReLU.
    #[value(alias = "ln_ff")]
    LnFf,
    /// conv -> GroupNorm -> ReLU.
    #[value(alias = "gn_ff")]
    GnFf,
    /// conv -> LayerNorm -> proxy-normalized ReLU (paper 2).
    #[value(alias = "ln_pn_ff")]
    LnPnFf,
}

impl Net {
    /// Parse `vanilla`, `bn-ff`, `bn-res`, `ln-ff`, `gn-ff`, `ln-pn-ff` (underscores work).
    pub fn parse(s: &str) -> Result<Net> {
        Ok(match s.replace('_', "-").as_str() {
            "vanilla" => Net::Vanilla,
            "bn-ff" => Net::BnFf,
            "bn-res" => Net::BnRes,
            "ln-ff" => Net::LnFf,
            "gn-ff" => Net::GnFf,
            "ln-pn-ff" => Net::LnPnFf,
            _ => {
                return Err(Error::Config(format!(
                    "unknown net '{s}': use vanilla, bn-ff, bn-res, ln-ff, gn-ff or ln-pn-ff"
                )))
            }
        })
    }

    /// Name as parsed.
    pub fn name(self) -> &'static str {
        match self {
            Net::Vanilla => "vanilla",
            Net::BnFf => "bn-ff",
            Net::BnRes => "bn-res",
            Net::LnFf => "ln-ff",
            Net::GnFf => "gn-ff",
            Net::LnPnFf => "ln-pn-ff",
        }
    }

    /// True for the residual network.
    pub fn residual(self) -> bool {
        self == Net::BnRes
    }

    /// True when the network normalizes.
    pub fn normalized(self) -> bool {
        self != Net::Vanilla
    }

    /// Where moments are taken in one layer (feed-forward) or in the first layer of a
    /// residual unit's branch, in propagation order.
    pub fn locs(self) -> &'static [Loc] {
        match self {
            Net::Vanilla => &[Loc::In, Loc::Conv, Loc::Act],
            Net::BnRes => &[Loc::In, Loc::Norm, Loc::Act, Loc::Conv, Loc::Out],
            _ => &[Loc::In, Loc::Conv, Loc::Norm, Loc::Act],
        }
    }

    /// The location whose effective ranks are computed (post-activation, as the paper).
    pub fn reff_loc(self) -> Loc {
        Loc::Act
    }
}

/// A location inside a layer (or residual unit) where moments are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Loc {
    /// The layer's (unit's) input `x^{l-1}`.
    In,
    /// After the convolution (the pre-activation `y^l` of paper 2).
    Conv,
    /// After the normalization (`z^l`).
    Norm,
    /// After the activation (`x^l` for feed-forward nets).
    Act,
    /// After the residual add (`x^l` of a residual network).
    Out,
}

impl Loc {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Loc::In => "in",
            Loc::Conv => "conv",
            Loc::Norm => "norm",
            Loc::Act => "act",
            Loc::Out => "out",
        }
    }
}

/// What feeds the network (an `--input` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// Fashion-MNIST training images (28 x 28 x 1).
    #[value(alias = "fashion_mnist", alias = "fmnist")]
    FashionMnist,
    /// i.i.d. Gaussian images.
    #[value(alias = "normal")]
    Gaussian,
}

impl InputKind {
    /// Parse `fashion-mnist` or `gaussian`.
    pub fn parse(s: &str) -> Result<InputKind> {
        match s {
            "fashion-mnist" | "fashion_mnist" | "fmnist" => Ok(InputKind::FashionMnist),
            "gaussian" | "normal" => Ok(InputKind::Gaussian),
            _ => Err(Error::Config(format!(
                "unknown input '{s}': use fashion-mnist or gaussian"
            ))),
        }
    }

    /// Name as parsed.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::FashionMnist => "fashion-mnist",
            InputKind::Gaussian => "gaussian",
        }
    }
}

/// How input batches are standardized before the first layer.
///
/// moments-dnns standardizes each channel of the network's input over the batch (and the
/// positions): for convolutions those are the image channels, for the fully connected case
/// (`k = 1`, images flattened to `1 x 1 x (h w c)`) the features. [`Standardize::paper`]
/// gives that convention for a kernel size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Standardize {
    /// Each feature (pixel and channel) over the batch. Features constant over the batch
    /// (the blank border pixels of Fashion-MNIST) become 0.
    PerFeature,
    /// Each image channel over the batch and the pixels.
    PerChannel,
}

impl Standardize {
    /// The paper's convention for kernel size `kernel`: per feature when the images are
    /// flattened (`kernel == 1`), per channel for convolutions.
    pub fn paper(kernel: usize) -> Standardize {
        if kernel == 1 {
            Standardize::PerFeature
        } else {
            Standardize::PerChannel
        }
    }

    /// Name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Standardize::PerFeature => "per-feature",
            Standardize::PerChannel => "per-channel",
        }
    }
}

/// A source of input batches: images standardized over the batch per feature or per
/// channel ([`Standardize`], SPEC §D.1), plus `dx^0 ~ N(0, 1)` of the same shape.
pub struct InputSource {
    /// Which input.
    pub kind: InputKind,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Image channels.
    pub c: usize,
    images: Vec<u8>,
    count: usize,
}

impl InputSource {
    /// Fashion-MNIST training images from `dir` (the IDX files).
    pub fn fashion_mnist(dir: &Path) -> Result<InputSource> {
        let ds = data::load_idx_dir(dir, true)?;
        let images = match ds.pixels {
            data::Pixels::Memory(p) => p,
            data::Pixels::Files(_) => {
                return Err(Error::Config("Fashion-MNIST must load into memory".into()))
            }
        };
        Ok(InputSource {
            kind: InputKind::FashionMnist,
            h: ds.h,
            w: ds.w,
            c: ds.c,
            count: ds.labels.len(),
            images,
        })
    }

    /// Gaussian images of `h x w x c`.
    pub fn gaussian(h: usize, w: usize, c: usize) -> InputSource {
        InputSource {
            kind: InputKind::Gaussian,
            h,
            w,
            c,
            images: Vec::new(),
            count: 0,
        }
    }

    /// Draw a batch: `(x, dx)`, each `n * h * w * c` values (NHWC), `x` standardized over
    /// the batch per `how` (mean 0, variance 1 per feature or per channel), `dx` i.i.d.
    /// N(0, 1).
    pub fn sample(
        &self,
        rng: &mut Rng,
        n: usize,
        how: Standardize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.sample_at(rng, n, self.h, self.w, how)
    }

    /// [`InputSource::sample`] at another resolution: dataset images are resized
    /// (bilinear) before standardization, Gaussian images are drawn at `h x w`, and `dx` is
    /// drawn at `h x w`.
    pub fn sample_at(
        &self,
        rng: &mut Rng,
        n: usize,
        h: usize,
        w: usize,
        how: Standardize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = self.c;
        let per = h * w * c;
        let mut x = vec![0f64; n * per];
        match self.kind {
            InputKind::Gaussian => x.iter_mut().for_each(|v| *v = rng.normal()),
            InputKind::FashionMnist => {
                if n > self.count {
                    return Err(Error::Config(format!(
                        "batch {n} exceeds the {} images of the dataset",
                        self.count
                    )));
                }
                // The first n of a random permutation: n distinct images.
                let mut idx: Vec<usize> = (0..self.count).collect();
                for i in 0..n {
                    let j = i + rng.below(self.count - i);
                    idx.swap(i, j);
                }
                let src = self.h * self.w * c;
                for (b, &i) in idx[..n].iter().enumerate() {
                    let img = &self.images[i * src..(i + 1) * src];
                    resize_bilinear(img, self.h, self.w, c, h, w, &mut x[b * per..(b + 1) * per]);
                }
            }
        }
        let xs = standardize(&x, n, per, c, how);
        let dx = (0..n * per).map(|_| rng.normal() as f32).collect();
        Ok((xs, dx))
    }
}

/// Standardize `n` samples of `per` NHWC values with `c` channels over the batch: each of
/// the `per` features (`PerFeature`) or each channel over the batch and the positions
/// (`PerChannel`) gets mean 0 and variance 1. Groups whose variance is below `1e-12` of
/// their mean square (constant over the batch) become 0.
pub fn standardize(x: &[f64], n: usize, per: usize, c: usize, how: Standardize) -> Vec<f32> {
    let groups = match how {
        Standardize::PerFeature => per,
        Standardize::PerChannel => c,
    };
    let cnt = (x.len() / groups) as f64;
    debug_assert_eq!(x.len(), n * per);
    let mut mean = vec![0f64; groups];
    for (k, v) in x.iter().enumerate() {
        mean[k % groups] += v;
    }
    mean.iter_mut().for_each(|m| *m /= cnt);
    let mut var = vec![0f64; groups];
    let mut sq = vec![0f64; groups];
    for (k, v) in x.iter().enumerate() {
        var[k % groups] += (v - mean[k % groups]).powi(2);
        sq[k % groups] += v * v;
    }
    let inv: Vec<f64> = var
        .iter()
        .zip(&sq)
        .map(|(&v, &s)| {
            if v > 1e-12 * s && v > 0.0 {
                (cnt / v).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    x.iter()
        .enumerate()
        .map(|(k, v)| ((v - mean[k % groups]) * inv[k % groups]) as f32)
        .collect()
}

/// Bilinear resize (half-pixel centres) of one u8 HWC image to `ho x wo`, values in
/// [0, 1] written to `out` (a plain copy when the size is unchanged).
fn resize_bilinear(
    img: &[u8],
    h: usize,
    w: usize,
    c: usize,
    ho: usize,
    wo: usize,
    out: &mut [f64],
) {
    let px = |y: usize, x: usize, ch: usize| img[(y * w + x) * c + ch] as f64 / 255.0;
    if h == ho && w == wo {
        for (k, o) in out.iter_mut().enumerate() {
            *o = img[k] as f64 / 255.0;
        }
        return;
    }
    for oy in 0..ho {
        let sy = ((oy as f64 + 0.5) * h as f64 / ho as f64 - 0.5).clamp(0.0, (h - 1) as f64);
        let (y0, fy) = (sy.floor() as usize, sy - sy.floor());
        let y1 = (y0 + 1).min(h - 1);
        for ox in 0..wo {
            let sx = ((ox as f64 + 0.5) * w as f64 / wo as f64 - 0.5).clamp(0.0, (w - 1) as f64);
            let (x0, fx) = (sx.floor() as usize, sx - sx.floor());
            let x1 = (x0 + 1).min(w - 1);
            for ch in 0..c {
                let top = px(y0, x0, ch) * (1.0 - fx) + px(y0, x1, ch) * fx;
                let bot = px(y1, x0, ch) * (1.0 - fx) + px(y1, x1, ch) * fx;
                out[(oy * wo + ox) * c + ch] = top * (1.0 - fy) + bot * fy;
            }
        }
    }
}

/// Configuration of one analysis over a paper network.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NetConfig {
    /// Network family.
    pub net: Net,
    /// Layers after the first one (feed-forward) or residual units (`bn-res`).
    pub depth: usize,
    /// Channels.
    pub width: usize,
    /// Batch size (one simulation = one batch).
    pub batch: usize,
    /// Kernel size (odd; 1 = fully connected on flattened images).
    pub kernel: usize,
    /// Layers per residual branch (`bn-res`).
    pub res_depth: usize,
    /// GroupNorm groups (`gn-ff`).
    pub groups: usize,
    /// Normalization epsilon (paper: 1e-3).
    pub eps: f32,
    /// Moments every this many layers (units): at `every, 2 every, ..., depth`.
    pub every: usize,
    /// Compute effective ranks (GEMM + host eigenvalue; the costliest part).
    pub reff: bool,
    /// Standard deviation of random norm affine parameters (gamma ~ N(1, s^2),
    /// beta ~ N(0, s^2) per layer; 0: no affine transform). Paper 2 uses 0.2.
    pub affine_std: f64,
    /// Seed of inputs, perturbations and weights.
    pub seed: u64,
    /// Input standardization (None: the paper's, [`Standardize::paper`]).
    pub standardize: Option<Standardize>,
}

impl NetConfig {
    /// Defaults for `net`: depth 200, width 512, batch 64, k = 3, residual depth 2, 4 GN
    /// groups, eps 1e-3, moments every depth / 100 layers, effective ranks on, seed 0.
    pub fn new(net: Net) -> NetConfig {
        NetConfig {
            net,
            depth: 200,
            width: 512,
            batch: 64,
            kernel: 3,
            res_depth: 2,
            groups: 4,
            eps: 1e-3,
            every: 2,
            reff: true,
            affine_std: 0.0,
            seed: 0,
            standardize: None,
        }
    }

    /// The input standardization in effect: the configured one, else the paper's for the
    /// kernel size.
    pub fn standardization(&self) -> Standardize {
        self.standardize
            .unwrap_or_else(|| Standardize::paper(self.kernel))
    }

    /// The depths (1-based layer or unit indices) where moments are taken.
    pub fn depths(&self) -> Vec<usize> {
        (1..=self.depth).filter(|l| l % self.every == 0).collect()
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.depth == 0 || self.width == 0 || self.batch == 0 {
            return bad("depth, width and batch must be at least 1".into());
        }
        if self.kernel.is_multiple_of(2) {
            return bad(format!("kernel size {} must be odd", self.kernel));
        }
        if self.every == 0 || self.every > self.depth {
            return bad(format!(
                "moments every {} layers: need 1 <= every <= depth {}",
                self.every, self.depth
            ));
        }
        if self.net.residual() && self.res_depth == 0 {
            return bad("residual depth must be at least 1".into());
        }
        if self.net == Net::GnFf && (self.groups == 0 || !self.width.is_multiple_of(self.groups)) {
            return bad(format!(
                "GroupNorm with {} groups needs the width ({}) to be a multiple",
                self.groups, self.width
            ));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad(format!("norm epsilon {} must be positive", self.eps));
        }
        if self.affine_std.is_nan() || self.affine_std < 0.0 {
            return bad("affine std must be >= 0".into());
        }
        Ok(())
    }
}

/// Moments of one simulation.
#[derive(Clone, Debug)]
pub struct SimRecord {
    /// Depths (1-based) of the rows.
    pub depths: Vec<usize>,
    /// Locations of the columns.
    pub locs: Vec<Loc>,
    /// Signal moments `[nu1(|x|), nu2, mu2, mu4, mean_c m_c^2]` per depth and location.
    pub x: Vec<Vec<[f64; MOMENT_VALUES]>>,
    /// `ln nu2(dx)` at the true scale (rescaling undone) per depth and location.
    pub log_dx: Vec<Vec<f64>>,
    /// Power of the per-(sample, channel) spatial means around the channel means
    /// (`mu2` of the spatial means) per depth and location (NaN where not computed).
    pub inst: Vec<Vec<f64>>,
    /// Effective rank of the signal at [`Net::reff_loc`] per depth (NaN if off).
    pub reff_x: Vec<f64>,
    /// Effective rank of the perturbation at [`Net::reff_loc`] per depth.
    pub reff_dx: Vec<f64>,
    /// `mu2(x^0)` of the network input, centred per channel of the network input (the
    /// features when images are flattened; SPEC §D.2).
    pub input_mu2: f64,
    /// `nu2(dx^0)` of the input perturbation.
    pub input_dx_nu2: f64,
    /// `ln nu2(x^0)` after the first (LeCun) layer, the reference of the diffusion plots.
    pub log_x0_nu2: f64,
    /// `ln nu2(dx^0)` after the first layer.
    pub log_dx0_nu2: f64,
    /// Where the simulation diverged (rows from there on are NaN), if it did.
    pub diverged: Option<Divergence>,
}

impl SimRecord {
    /// Normalized sensitivity `chi = sqrt((nu2(dx) / mu2(x)) / (nu2(dx^0) / mu2(x^0)))` at
    /// depth row `i`, location column `j`.
    pub fn chi(&self, i: usize, j: usize) -> f64 {
        let r0 = self.input_dx_nu2 / self.input_mu2;
        (0.5 * (self.log_dx[i][j] - self.x[i][j][2].ln() - r0.ln())).exp()
    }
}

/// Mix a seed and indices into a 64-bit key (SplitMix64 finalizer).
pub fn mix_key(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Most bytes of covariance matrices held per chunk of recorded layers.
const COV_POOL_BYTES: usize = 32 << 20;
/// Most layers recorded per submission.
const MAX_CHUNK_LAYERS: usize = 16;

/// One convolution step with periodic padding: shapes and the spec it runs.
#[derive(Clone, Copy, Debug)]
struct ConvStep {
    n: usize,
    hin: usize,
    win: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
}

impl ConvStep {
    fn out_hw(&self) -> (usize, usize) {
        (self.hin / self.stride, self.win / self.stride)
    }
    fn pad(&self) -> usize {
        self.k / 2
    }
    fn padded(&self) -> (usize, usize) {
        (self.hin + 2 * self.pad(), self.win + 2 * self.pad())
    }
    /// The 'same' convolution run on the padded input (stride 1; the crop subsamples).
    fn spec(&self) -> ConvSpec {
        let (hp, wp) = self.padded();
        ConvSpec {
            n: self.n,
            h: if self.k > 1 { hp } else { self.hin },
            w: if self.k > 1 { wp } else { self.win },
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            stride: if self.k > 1 { 1 } else { self.stride },
            groups: 1,
            bias: false,
            padding: Padding::Symmetric,
        }
    }
}

/// Propagates signal and perturbation through fresh random networks, one simulation per
/// call of [`Propagator::simulate`]. Buffers are allocated once.
pub struct Propagator<'g> {
    gpu: &'g Gpu,
    cfg: NetConfig,
    in_dims: [usize; 4],
    first: ConvStep,
    layer: ConvStep,
    x_in: Tensor,
    dx_in: Tensor,
    w0: Tensor,
    w: Tensor,
    pad0: Option<(Tensor, Tensor)>,
    pad: Option<(Tensor, Tensor)>,
    xa: Tensor,
    dxa: Tensor,
    xb: Tensor,
    dxb: Tensor,
    y: Tensor,
    dy: Tensor,
    z: Tensor,
    dz: Tensor,
    a: Tensor,
    da: Tensor,
    norm: Option<NormSpec>,
    saved: Tensor,
    nscratch: Tensor,
    gamma: Option<(Tensor, Tensor, Tensor)>,
    proxy: Option<(Tensor, Tensor, Tensor)>,
    ones_c: Tensor,
    ones_n: Tensor,
    record: Tensor,
    ws: MomentScratch,
    plan: MomentPlan,
    plan_nc: MomentPlan,
    means: Tensor,
    sum_scratch: Option<Tensor>,
    centered: Tensor,
    covs: Vec<(Tensor, Tensor)>,
    last_input: (Vec<f32>, Vec<f32>),
}

fn alloc(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
    gpu.zeros(shape)
}

impl<'g> Propagator<'g> {
    /// Allocate every buffer for `cfg` with inputs of `input`'s shape.
    pub fn new(gpu: &'g Gpu, cfg: &NetConfig, input: &InputSource) -> Result<Self> {
        cfg.validate()?;
        let n = cfg.batch;
        let c = cfg.width;
        let k = cfg.kernel;
        let fc = k == 1;
        let in_dims = if fc {
            [n, 1, 1, input.h * input.w * input.c]
        } else {
            [n, input.h, input.w, input.c]
        };
        let stride0 = if fc { 1 } else { 2 };
        let first = ConvStep {
            n,
            hin: in_dims[1],
            win: in_dims[2],
            cin: in_dims[3],
            cout: c,
            k,
            stride: stride0,
        };
        let (h, w) = first.out_hw();
        if h == 0 || w == 0 {
            return Err(Error::Config(format!(
                "input {}x{} is too small for a stride-2 first layer",
                in_dims[1], in_dims[2]
            )));
        }
        let layer = ConvStep {
            n,
            hin: h,
            win: w,
            cin: c,
            cout: c,
            k,
            stride: 1,
        };
        first.spec().validate()?;
        layer.spec().validate()?;
        let act = [n, h, w, c];
        let pads = |s: &ConvStep| -> Result<Option<(Tensor, Tensor)>> {
            if s.k == 1 {
                return Ok(None);
            }
            let (hp, wp) = s.padded();
            Ok(Some((
                alloc(gpu, &[s.n, hp, wp, s.cin])?,
                alloc(gpu, &[s.n, hp, wp, s.cout])?,
            )))
        };
        let hw = h * w;
        let norm = match cfg.net {
            Net::Vanilla => None,
            Net::BnFf | Net::BnRes => Some(NormKind::Batch),
            Net::LnFf | Net::LnPnFf => Some(NormKind::layer()),
            Net::GnFf => Some(NormKind::Group { groups: cfg.groups }),
        }
        .map(|kind| {
            let mut s = NormSpec::new(n, hw, c, kind).with_affine(false, false);
            s.eps = cfg.eps;
            if cfg.affine_std > 0.0 {
                s = s.with_affine(true, true);
            }
            s
        });
        if let Some(s) = &norm {
            s.validate()?;
        }
        let (saved_len, nscratch_len) = norm
            .as_ref()
            .map_or((2, 1), |s| (s.saved_len(), s.scratch_len().max(1)));
        let gamma = if cfg.affine_std > 0.0 && norm.is_some() {
            Some((alloc(gpu, &[c])?, alloc(gpu, &[c])?, alloc(gpu, &[c])?))
        } else {
            None
        };
        let ones_c = gpu.upload(&vec![1.0; c], &[c])?;
        let proxy = if cfg.net == Net::LnPnFf {
            Some((alloc(gpu, &[c])?, alloc(gpu, &[c])?, alloc(gpu, &[c])?))
        } else {
            None
        };
        let m = n * hw;
        let plan = MomentPlan::new(m, c);
        let plan_nc = MomentPlan::new(n, c);
        let ws = MomentScratch {
            part: alloc(gpu, &[plan.scratch_len().max(plan_nc.scratch_len())])?,
            mean: alloc(gpu, &[c])?,
        };
        let nd = cfg.depths().len();
        let record_len = Self::record_len(cfg);
        let ax = Axes { o: n, m: hw, i: c };
        let pairs = if cfg.reff {
            (COV_POOL_BYTES / (8 * c * c)).clamp(1, 32).min(nd)
        } else {
            0
        };
        let covs = (0..pairs)
            .map(|_| Ok((alloc(gpu, &[c, c])?, alloc(gpu, &[c, c])?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            gpu,
            cfg: cfg.clone(),
            in_dims,
            first,
            layer,
            x_in: alloc(gpu, &in_dims)?,
            dx_in: alloc(gpu, &in_dims)?,
            w0: alloc(gpu, &[k, k, in_dims[3], c])?,
            w: alloc(gpu, &[k, k, c, c])?,
            pad0: pads(&first)?,
            pad: pads(&layer)?,
            xa: alloc(gpu, &act)?,
            dxa: alloc(gpu, &act)?,
            xb: alloc(gpu, &act)?,
            dxb: alloc(gpu, &act)?,
            y: alloc(gpu, &act)?,
            dy: alloc(gpu, &act)?,
            z: alloc(gpu, &act)?,
            dz: alloc(gpu, &act)?,
            a: alloc(gpu, &act)?,
            da: alloc(gpu, &act)?,
            norm,
            saved: alloc(gpu, &[saved_len])?,
            nscratch: alloc(gpu, &[nscratch_len])?,
            gamma,
            proxy,
            ones_c,
            ones_n: gpu.upload(&vec![1.0; n], &[n])?,
            record: alloc(gpu, &[record_len])?,
            ws,
            plan,
            plan_nc,
            means: alloc(gpu, &[n, 1, 1, c])?,
            sum_scratch: if ax.scratch_len() > 0 {
                Some(alloc(gpu, &[ax.scratch_len()])?)
            } else {
                None
            },
            centered: alloc(gpu, &act)?,
            covs,
            last_input: (Vec::new(), Vec::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Spatial size `(h, w)` of the propagated tensors (after the first layer).
    pub fn spatial(&self) -> (usize, usize) {
        self.first.out_hw()
    }

    /// Shape `[n, h, w, c]` of the network input (`[n, 1, 1, h*w*c]` when fully connected).
    pub fn input_dims(&self) -> [usize; 4] {
        self.in_dims
    }

    /// The input `(x, dx)` of the last simulation (for reference checks).
    pub fn last_input(&self) -> (&[f32], &[f32]) {
        (&self.last_input.0, &self.last_input.1)
    }

    /// The first layer's weights and the last layer's weights of the last simulation
    /// (for reference checks; layouts `[k, k, cin, cout]`).
    pub fn weights(&self) -> (&Tensor, &Tensor) {
        (&self.w0, &self.w)
    }

    fn slot_scale(&self, event: usize) -> usize {
        MOMENT_VALUES * event
    }

    fn slot(&self, i: usize, j: usize, kind: usize) -> usize {
        let nloc = self.cfg.net.locs().len();
        MOMENT_VALUES * ((self.cfg.depth + 2) + (i * nloc + j) * 3 + kind)
    }

    fn weight_key(&self, sim: usize, layer: usize, what: u64) -> u64 {
        mix_key(
            self.cfg.seed,
            (sim as u64) << 1 | 1,
            ((layer as u64) << 4) | what,
        )
    }

    fn conv(
        &self,
        rec: &mut Recorder,
        step: &ConvStep,
        pads: Option<&(Tensor, Tensor)>,
        w: &Tensor,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        let spec = step.spec();
        match pads {
            None => conv::forward(rec, &spec, x, w, None, y),
            Some((pin, full)) => {
                let p = step.pad();
                kernels::wrap_pad(rec, x, pin, [step.n, step.hin, step.win, step.cin], p)?;
                conv::forward(rec, &spec, pin, w, None, full)?;
                kernels::crop(
                    rec,
                    full,
                    y,
                    step.n,
                    step.padded(),
                    step.out_hw(),
                    step.cout,
                    p,
                    step.stride,
                )
            }
        }
    }

    /// Draw the norm affine parameters (and the proxy statistics) of layer `layer`.
    fn draw_affine(&self, rec: &mut Recorder, sim: usize, layer: usize) -> Result<()> {
        if let Some((g, b, tmp)) = &self.gamma {
            let s = self.cfg.affine_std as f32;
            kernels::gen_normal(rec, tmp, self.weight_key(sim, layer, 2), s)?;
            kernels::axpby(rec, 1.0, tmp, 1.0, &self.ones_c, g)?;
            kernels::gen_normal(rec, b, self.weight_key(sim, layer, 3), s)?;
        }
        if let Some((mu, s, zeros)) = &self.proxy {
            let pp = ProxyParams {
                act: Act::Relu,
                c: self.cfg.width,
                eps: PROXY_EPS,
                gamma: self.gamma.as_ref().map(|g| &g.0),
                beta: self.gamma.as_ref().map(|g| &g.1),
                pshift: zeros,
                pscale: zeros,
            };
            proxy_norm::proxy_stats(rec, &pp, mu, s)?;
        }
        Ok(())
    }

    /// Normalization of `(y, dy)` into `(z, dz)`.
    fn norm_step(
        &self,
        rec: &mut Recorder,
        y: &Tensor,
        dy: &Tensor,
        z: &Tensor,
        dz: &Tensor,
    ) -> Result<()> {
        let spec = self.norm.as_ref().expect("normalized net");
        let params = NormParams {
            gamma: self.gamma.as_ref().map(|g| &g.0),
            beta: self.gamma.as_ref().map(|g| &g.1),
            ..Default::default()
        };
        norm::forward(rec, spec, true, y, &params, z, &self.saved, &self.nscratch)?;
        let groups = match spec.kind {
            NormKind::Batch => 0,
            NormKind::Group { groups } => groups,
        };
        kernels::seg_scale(
            rec,
            dy,
            &self.saved,
            params.gamma,
            dz,
            spec.hw,
            spec.c,
            groups,
        )
    }

    /// Activation of `(z, dz)` into `(x, dx)`: ReLU, or the proxy-normalized ReLU.
    fn act_step(
        &self,
        rec: &mut Recorder,
        z: &Tensor,
        dz: &Tensor,
        x: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        match &self.proxy {
            None => {
                crate::ops::act::forward(rec, Act::Relu, z, x)?;
                crate::ops::act::backward(rec, Act::Relu, z, dz, dx)
            }
            Some((mu, s, _)) => {
                let c = self.cfg.width;
                kernels::pn_act(rec, Act::Relu, z, mu, s, x, c)?;
                kernels::act_jvp(rec, Act::Relu, z, dz, Some(s), dx, c)
            }
        }
    }

    /// Moments of `(x, dx)` at depth row `i`, location column `j`; with `cov` the channel
    /// covariances go to `cov` (x, dx).
    #[allow(clippy::too_many_arguments)]
    fn loc_moments(
        &self,
        rec: &mut Recorder,
        i: usize,
        j: usize,
        x: &Tensor,
        dx: &Tensor,
        inst: bool,
        cov: Option<&(Tensor, Tensor)>,
    ) -> Result<()> {
        kernels::moments(
            rec,
            x,
            &self.plan,
            true,
            &self.ws,
            &self.record,
            self.slot(i, j, 0),
        )?;
        if let Some((cx, _)) = cov {
            kernels::covariance(rec, x, &self.plan, &self.ws, &self.centered, cx)?;
        }
        let (h, w) = self.spatial();
        if inst && h * w > 1 {
            let ax = Axes {
                o: self.cfg.batch,
                m: h * w,
                i: self.cfg.width,
            };
            reduce::sum_axis(
                rec,
                x,
                None,
                &self.means,
                ax,
                1.0 / ax.m as f32,
                self.sum_scratch.as_ref(),
            )?;
            kernels::moments(
                rec,
                &self.means,
                &self.plan_nc,
                true,
                &self.ws,
                &self.record,
                self.slot(i, j, 2),
            )?;
        }
        kernels::moments(
            rec,
            dx,
            &self.plan,
            cov.is_some(),
            &self.ws,
            &self.record,
            self.slot(i, j, 1),
        )?;
        if let Some((_, cdx)) = cov {
            kernels::covariance(rec, dx, &self.plan, &self.ws, &self.centered, cdx)?;
        }
        Ok(())
    }

    /// `nu2(dx)` into the scale slot of `event`, then `dx /= sqrt(nu2)`.
    fn rescale(&self, rec: &mut Recorder, event: usize, dx: &Tensor) -> Result<()> {
        let off = self.slot_scale(event);
        kernels::moments(rec, dx, &self.plan, false, &self.ws, &self.record, off)?;
        kernels::rescale(rec, &self.record, off + 1, dx)
    }

    /// Run simulation `sim` (fresh weights, inputs and perturbation) and return its
    /// moments.
    pub fn simulate(&mut self, sim: usize, input: &InputSource) -> Result<SimRecord> {
        let gpu = self.gpu;
        let cfg = self.cfg.clone();
        let mut rng = Rng::new(mix_key(cfg.seed, (sim as u64) << 1, 0x1A9));
        let (x0, dx0) = input.sample(&mut rng, cfg.batch, cfg.standardization())?;
        if x0.len() != self.x_in.len() {
            return Err(Error::Shape(format!(
                "input of {} values for a network input of {:?}",
                x0.len(),
                self.in_dims
            )));
        }
        gpu.write_f32(&self.x_in, &x0)?;
        gpu.write_f32(&self.dx_in, &dx0)?;
        let x0d: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
        // SPEC §D.2: mu2 centred per channel of the network input (the features when the
        // images are flattened).
        let input_mu2 = stats::moments_ref(&x0d, self.in_dims[3])[2];
        let input_dx_nu2 = dx0.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dx0.len() as f64;
        self.last_input = (x0, dx0);

        let depths = cfg.depths();
        let nd = depths.len();
        let mut reff_x = vec![f64::NAN; nd];
        let mut reff_dx = vec![f64::NAN; nd];
        let c = cfg.width;

        let mut rec = Recorder::new(gpu);
        rec.clear(&self.record);
        // First layer: LeCun init, no norm, no activation.
        let std0 = (1.0 / (self.first.k * self.first.k * self.first.cin) as f64).sqrt() as f32;
        kernels::gen_normal(&mut rec, &self.w0, self.weight_key(sim, 0, 0), std0)?;
        self.conv(
            &mut rec,
            &self.first,
            self.pad0.as_ref(),
            &self.w0,
            &self.x_in,
            &self.xa,
        )?;
        self.conv(
            &mut rec,
            &self.first,
            self.pad0.as_ref(),
            &self.w0,
            &self.dx_in,
            &self.dxa,
        )?;
        kernels::moments(
            &mut rec,
            &self.xa,
            &self.plan,
            false,
            &self.ws,
            &self.record,
            self.slot_x0(),
        )?;
        self.rescale(&mut rec, 0, &self.dxa.clone())?;

        // Depth rows whose covariances the current chunk computes, in pool order.
        let mut chunk_rows: Vec<usize> = Vec::new();
        let mut pending: Vec<(usize, usize, Readback)> = Vec::new();
        let mut layers_in_chunk = 0;
        let mut di = 0;
        for l in 1..=cfg.depth {
            let row = (di < nd && depths[di] == l).then_some(di);
            let cov = match row {
                Some(i) if cfg.reff => {
                    chunk_rows.push(i);
                    Some(chunk_rows.len() - 1)
                }
                _ => None,
            };
            if row.is_some() {
                di += 1;
            }
            if cfg.net.residual() {
                self.res_unit(&mut rec, sim, l, row, cov)?;
            } else {
                self.ff_layer(&mut rec, sim, l, row, cov)?;
            }
            layers_in_chunk += 1;
            let pool_full = !self.covs.is_empty() && chunk_rows.len() == self.covs.len();
            if l == cfg.depth || layers_in_chunk >= MAX_CHUNK_LAYERS || pool_full {
                let done = std::mem::replace(&mut rec, Recorder::new(gpu));
                done.submit()?;
                // Copies of this chunk's covariances, queued after it (the pool may be
                // overwritten by the next chunk: queue order keeps the copies intact).
                let mut started = Vec::new();
                for (p, &i) in chunk_rows.iter().enumerate() {
                    started.push((i, 0, gpu.read_async(&self.covs[p].0)?));
                    started.push((i, 1, gpu.read_async(&self.covs[p].1)?));
                }
                chunk_rows.clear();
                // The host finds the previous chunk's eigenvalues while the GPU runs this
                // one.
                finish_reff(
                    gpu,
                    std::mem::take(&mut pending),
                    c,
                    &mut reff_x,
                    &mut reff_dx,
                )?;
                pending = started;
                layers_in_chunk = 0;
            }
        }
        finish_reff(gpu, pending, c, &mut reff_x, &mut reff_dx)?;
        let record = gpu.read(&self.record)?;
        Ok(self.collect(&record, input_mu2, input_dx_nu2, reff_x, reff_dx))
    }

    /// Offset of the moments of x^0 (after the first layer) in the record.
    fn slot_x0(&self) -> usize {
        MOMENT_VALUES * (self.cfg.depth + 1)
    }

    /// Floats of the per-simulation record: scale slots of events 0..=depth, the x^0 slot,
    /// then 3 slots (x, dx, spatial means) per depth row and location.
    fn record_len(cfg: &NetConfig) -> usize {
        MOMENT_VALUES * ((cfg.depth + 2) + cfg.depths().len() * cfg.net.locs().len() * 3)
    }

    fn loc_index(&self, loc: Loc) -> usize {
        self.cfg
            .net
            .locs()
            .iter()
            .position(|&l| l == loc)
            .expect("location of this net")
    }

    /// One feed-forward layer `l` (1-based): conv [-> norm] -> act, then rescale dx.
    fn ff_layer(
        &self,
        rec: &mut Recorder,
        sim: usize,
        l: usize,
        row: Option<usize>,
        cov: Option<usize>,
    ) -> Result<()> {
        let std = (2.0 / (self.layer.k * self.layer.k * self.cfg.width) as f64).sqrt() as f32;
        let (xa, dxa) = (&self.xa, &self.dxa);
        if let Some(i) = row {
            self.loc_moments(rec, i, self.loc_index(Loc::In), xa, dxa, false, None)?;
        }
        kernels::gen_normal(rec, &self.w, self.weight_key(sim, l, 0), std)?;
        self.conv(rec, &self.layer, self.pad.as_ref(), &self.w, xa, &self.y)?;
        self.conv(rec, &self.layer, self.pad.as_ref(), &self.w, dxa, &self.dy)?;
        if let Some(i) = row {
            let j = self.loc_index(Loc::Conv);
            self.loc_moments(rec, i, j, &self.y, &self.dy, true, None)?;
        }
        let (pre, dpre) = if self.norm.is_some() {
            self.draw_affine(rec, sim, l)?;
            self.norm_step(rec, &self.y, &self.dy, &self.z, &self.dz)?;
            if let Some(i) = row {
                let j = self.loc_index(Loc::Norm);
                self.loc_moments(rec, i, j, &self.z, &self.dz, true, None)?;
            }
            (&self.z, &self.dz)
        } else {
            (&self.y, &self.dy)
        };
        self.act_step(rec, pre, dpre, xa, dxa)?;
        if let Some(i) = row {
            let j = self.loc_index(Loc::Act);
            let pair = cov.map(|p| &self.covs[p]);
            self.loc_moments(rec, i, j, xa, dxa, false, pair)?;
        }
        self.rescale(rec, l, dxa)
    }

    /// One residual unit `u` (1-based): `res_depth` x [BN -> ReLU -> conv] on the branch,
    /// add the skip, rescale dx. Moments in the branch's first layer and after the add.
    fn res_unit(
        &mut self,
        rec: &mut Recorder,
        sim: usize,
        u: usize,
        row: Option<usize>,
        cov: Option<usize>,
    ) -> Result<()> {
        let std = (2.0 / (self.layer.k * self.layer.k * self.cfg.width) as f64).sqrt() as f32;
        let r_depth = self.cfg.res_depth;
        for r in 0..r_depth {
            let layer = (u - 1) * r_depth + r + 1;
            let first = r == 0;
            let row_here = row.filter(|_| first);
            // Branch input: the unit input for the first layer, else the previous conv.
            let (bx, bdx) = if first {
                (self.xa.clone(), self.dxa.clone())
            } else {
                (self.y.clone(), self.dy.clone())
            };
            if let Some(i) = row_here {
                self.loc_moments(rec, i, self.loc_index(Loc::In), &bx, &bdx, false, None)?;
            }
            self.draw_affine(rec, sim, layer)?;
            self.norm_step(rec, &bx, &bdx, &self.z, &self.dz)?;
            if let Some(i) = row_here {
                let j = self.loc_index(Loc::Norm);
                self.loc_moments(rec, i, j, &self.z, &self.dz, true, None)?;
            }
            self.act_step(rec, &self.z, &self.dz, &self.a, &self.da)?;
            if let Some(i) = row_here {
                let j = self.loc_index(Loc::Act);
                let pair = cov.map(|p| &self.covs[p]);
                self.loc_moments(rec, i, j, &self.a, &self.da, false, pair)?;
            }
            kernels::gen_normal(rec, &self.w, self.weight_key(sim, layer, 0), std)?;
            self.conv(
                rec,
                &self.layer,
                self.pad.as_ref(),
                &self.w,
                &self.a,
                &self.y,
            )?;
            self.conv(
                rec,
                &self.layer,
                self.pad.as_ref(),
                &self.w,
                &self.da,
                &self.dy,
            )?;
            if let Some(i) = row_here {
                let j = self.loc_index(Loc::Conv);
                self.loc_moments(rec, i, j, &self.y, &self.dy, true, None)?;
            }
        }
        elementwise::residual_add(rec, &self.xa, &self.y, &self.ones_n, &self.xb)?;
        elementwise::residual_add(rec, &self.dxa, &self.dy, &self.ones_n, &self.dxb)?;
        std::mem::swap(&mut self.xa, &mut self.xb);
        std::mem::swap(&mut self.dxa, &mut self.dxb);
        if let Some(i) = row {
            let j = self.loc_index(Loc::Out);
            self.loc_moments(rec, i, j, &self.xa, &self.dxa, false, None)?;
        }
        let dxa = self.dxa.clone();
        self.rescale(rec, u, &dxa)
    }

    /// Turn the read-back record into a [`SimRecord`], undoing the rescaling in log space.
    fn collect(
        &self,
        record: &[f32],
        input_mu2: f64,
        input_dx_nu2: f64,
        reff_x: Vec<f64>,
        reff_dx: Vec<f64>,
    ) -> SimRecord {
        let cfg = &self.cfg;
        let depths = cfg.depths();
        let locs = cfg.net.locs().to_vec();
        let val = |off: usize, k: usize| record[off + k] as f64;
        // log_scale[l]: ln of the factor dx was divided by before layer (unit) l + 1.
        let mut log_scale = vec![0.0; cfg.depth + 1];
        let mut acc = 0.0;
        for (e, ls) in log_scale.iter_mut().enumerate() {
            acc += val(self.slot_scale(e), 1).ln();
            *ls = acc;
        }
        let mut x = Vec::with_capacity(depths.len());
        let mut log_dx = Vec::with_capacity(depths.len());
        let mut inst = Vec::with_capacity(depths.len());
        for (i, &l) in depths.iter().enumerate() {
            // Inside layer l, dx carries the factor of events 0..l-1.
            let ls = log_scale[l - 1];
            let mut xr = Vec::new();
            let mut dr = Vec::new();
            let mut ir = Vec::new();
            for (j, loc) in locs.iter().enumerate() {
                let mut m = [0.0; MOMENT_VALUES];
                for (k, v) in m.iter_mut().enumerate() {
                    *v = val(self.slot(i, j, 0), k);
                }
                xr.push(m);
                dr.push(val(self.slot(i, j, 1), 1).ln() + ls);
                let has_inst = matches!(loc, Loc::Conv | Loc::Norm);
                let (h, w) = self.spatial();
                ir.push(if !has_inst {
                    f64::NAN
                } else if h * w == 1 {
                    m[2]
                } else {
                    val(self.slot(i, j, 2), 2)
                });
            }
            x.push(xr);
            log_dx.push(dr);
            inst.push(ir);
        }
        let mut rec = SimRecord {
            depths,
            locs,
            x,
            log_dx,
            inst,
            reff_x,
            reff_dx,
            input_mu2,
            input_dx_nu2,
            log_x0_nu2: val(self.slot_x0(), 1).ln(),
            log_dx0_nu2: log_scale[0],
            diverged: None,
        };
        rec.mark_divergence();
        rec
    }
}

/// Where and how a simulation left the range its statistics mean something in.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Divergence {
    /// The first depth (layer or unit) whose moments are unusable.
    pub depth: usize,
    /// The location there.
    pub loc: Loc,
    /// What happened, in words (with the offending value).
    pub what: String,
    /// True when values overflowed (or became NaN); false when the signal or the
    /// perturbation vanished.
    pub overflow: bool,
}

impl Divergence {
    /// What to change, for a message.
    pub fn hint(&self) -> &'static str {
        if !self.overflow {
            "A ReLU network this narrow or deep loses its signal or its perturbation: use a \
             larger --width or a smaller --depth"
        } else {
            "Values overflowed f32: use a larger --eps, a smaller --affine-std or a smaller \
             --depth"
        }
    }
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at depth {} ({}): {}",
            self.depth,
            self.loc.name(),
            self.what
        )
    }
}

impl SimRecord {
    /// Find the first row whose signal moments are not finite, whose signal is constant
    /// over the batch (`mu2(x) = 0`, chi undefined) or whose perturbation is not finite
    /// or zero; record it in [`SimRecord::diverged`] and set that row and every deeper one
    /// to NaN, so that summaries over simulations use only the rows that mean something.
    pub fn mark_divergence(&mut self) {
        let mut found = None;
        'rows: for (i, &l) in self.depths.iter().enumerate() {
            for (j, &loc) in self.locs.iter().enumerate() {
                let m = &self.x[i][j];
                let ldx = self.log_dx[i][j];
                let what = if let Some(k) = m.iter().position(|v| !v.is_finite()) {
                    let name = ["nu1(|x|)", "nu2(x)", "mu2(x)", "mu4(x)", "mean_c m_c^2"];
                    Some((
                        format!("the signal is not finite ({} = {})", name[k], m[k]),
                        true,
                    ))
                } else if m[2] <= 0.0 {
                    Some((
                        format!(
                            "the signal is the same for every input (mu2(x) = {}): chi is \
                             undefined",
                            m[2]
                        ),
                        false,
                    ))
                } else if ldx == f64::NEG_INFINITY {
                    Some(("the perturbation vanished (nu2(dx) = 0)".to_string(), false))
                } else if !ldx.is_finite() {
                    Some((
                        format!("the perturbation is not finite (ln nu2(dx) = {ldx})"),
                        true,
                    ))
                } else {
                    None
                };
                if let Some((what, overflow)) = what {
                    found = Some((
                        i,
                        Divergence {
                            depth: l,
                            loc,
                            what,
                            overflow,
                        },
                    ));
                    break 'rows;
                }
            }
        }
        let Some((first, d)) = found else {
            return;
        };
        for i in first..self.depths.len() {
            self.x[i].iter_mut().for_each(|m| m.fill(f64::NAN));
            self.log_dx[i].fill(f64::NAN);
            self.inst[i].fill(f64::NAN);
            self.reff_x[i] = f64::NAN;
            self.reff_dx[i] = f64::NAN;
        }
        self.diverged = Some(d);
    }
}

/// Wait for covariance readbacks and store their effective ranks (eigenvalue problems
/// solved on all host threads).
fn finish_reff(
    gpu: &Gpu,
    pending: Vec<(usize, usize, Readback)>,
    c: usize,
    reff_x: &mut [f64],
    reff_dx: &mut [f64],
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut mats = Vec::with_capacity(pending.len());
    for (i, which, rb) in pending {
        mats.push((i, which, rb.wait(gpu)?));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(mats.len());
    let per = mats.len().div_ceil(threads);
    let results: Vec<(usize, usize, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = mats
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(i, which, m)| (*i, *which, stats::effective_rank(m, c)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("eigenvalue thread"))
            .collect()
    });
    for (i, which, r) in results {
        if which == 0 {
            reff_x[i] = r;
        } else {
            reff_dx[i] = r;
        }
    }
    Ok(())
}
