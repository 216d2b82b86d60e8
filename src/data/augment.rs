//! Image preprocessing: where to crop and whether to flip ([`plan`], a pure function of the
//! image size, the output's aspect ratio and the per-image random stream), and the bilinear
//! resize of in-memory u8 HWC images into u8 HWC network inputs (file images are resized by
//! the loader's SIMD resizer). Normalization happens on the GPU (`ops::input`).
//!
//! A non-square output (`H x W`) gets crops of its own aspect ratio `W / H`: the evaluation
//! crop and the padded crop are the largest `W / H` rectangle of the image (then scaled),
//! and the random-resized crop draws its aspect ratio in `[3/4, 4/3] x W / H`. For square
//! outputs that is the usual square crop and `[3/4, 4/3]`, draw for draw.

use crate::models::ImageSize;
use crate::util::Rng;

/// How one image is turned into a network input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transform {
    /// Small images: zero-pad by `pad`, random crop back to the original size (the largest
    /// crop of the output's aspect ratio), random horizontal flip, resize to the output size.
    PadCropFlip {
        /// Padding in source pixels.
        pad: usize,
    },
    /// Large images: Inception-style random-resized crop (area fraction in `area`,
    /// aspect ratio in [3/4, 4/3] times the output's) and random flip, resized to the
    /// output size.
    RandomResizedCrop {
        /// Minimum area fraction.
        min_area: f64,
    },
    /// Evaluation: central crop of `crop` of the largest rectangle of the output's aspect
    /// ratio (for square outputs: of the shorter side; 1.0 = all of it) resized to the
    /// output size; deterministic.
    Eval {
        /// Fraction of the shorter side kept.
        crop: f64,
    },
}

/// A crop rectangle in source pixels (floating point for sub-pixel resizing).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    /// Top edge.
    pub y0: f64,
    /// Left edge.
    pub x0: f64,
    /// Height.
    pub h: f64,
    /// Width.
    pub w: f64,
}

/// Bilinear sample of `src` (u8 HWC, h x w x c) over `rect` into an `out.h` x `out.w` u8
/// image; `flip` mirrors horizontally. Pixels outside the source are 0, which implements
/// zero padding.
#[allow(clippy::too_many_arguments)]
pub fn resample(
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    rect: Rect,
    flip: bool,
    out: ImageSize,
    dst: &mut [u8],
) {
    let sy = rect.h / out.h as f64;
    let sx = rect.w / out.w as f64;
    let px = |y: isize, x: isize, ch: usize| -> f64 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            src[(y as usize * w + x as usize) * c + ch] as f64
        }
    };
    for oy in 0..out.h {
        let fy = rect.y0 + (oy as f64 + 0.5) * sy - 0.5;
        let y0 = fy.floor();
        let ty = fy - y0;
        for ox in 0..out.w {
            let oxx = if flip { out.w - 1 - ox } else { ox };
            let fx = rect.x0 + (oxx as f64 + 0.5) * sx - 0.5;
            let x0 = fx.floor();
            let tx = fx - x0;
            let (yi, xi) = (y0 as isize, x0 as isize);
            for ch in 0..c {
                let v = (1.0 - ty) * ((1.0 - tx) * px(yi, xi, ch) + tx * px(yi, xi + 1, ch))
                    + ty * ((1.0 - tx) * px(yi + 1, xi, ch) + tx * px(yi + 1, xi + 1, ch));
                dst[(oy * out.w + ox) * c + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Apply `t` to one in-memory image. `dst` has `out.h * out.w * c` bytes.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    t: Transform,
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    out: ImageSize,
    rng: &mut Rng,
    dst: &mut [u8],
) {
    let (rect, flip) = plan(t, h, w, out, rng);
    resample(src, h, w, c, rect, flip, out, dst);
}

/// The crop rectangle and flip `t` takes from an `h` x `w` image for an `out` network input,
/// drawn from `rng` (the draws depend only on the sizes, so a header is enough to plan a
/// reduced-size decode).
pub fn plan(t: Transform, h: usize, w: usize, out: ImageSize, rng: &mut Rng) -> (Rect, bool) {
    let aspect = out.w as f64 / out.h as f64;
    match t {
        Transform::PadCropFlip { pad } => {
            let dy = rng.below(2 * pad + 1) as f64 - pad as f64;
            let dx = rng.below(2 * pad + 1) as f64 - pad as f64;
            let flip = rng.uniform() < 0.5;
            let base = center(h, w, 1.0, aspect);
            (
                Rect {
                    y0: base.y0 + dy,
                    x0: base.x0 + dx,
                    ..base
                },
                flip,
            )
        }
        Transform::RandomResizedCrop { min_area } => {
            let area = (h * w) as f64;
            let (lo, hi) = ((0.75 * aspect).ln(), (4.0 / 3.0 * aspect).ln());
            let mut rect = None;
            for _ in 0..10 {
                let a = area * (min_area + (1.0 - min_area) * rng.uniform());
                let logr = lo + (hi - lo) * rng.uniform();
                let r = logr.exp();
                let cw = (a * r).sqrt();
                let ch = (a / r).sqrt();
                if cw <= w as f64 && ch <= h as f64 {
                    let y0 = rng.uniform() * (h as f64 - ch);
                    let x0 = rng.uniform() * (w as f64 - cw);
                    rect = Some(Rect {
                        y0,
                        x0,
                        h: ch,
                        w: cw,
                    });
                    break;
                }
            }
            let rect = rect.unwrap_or_else(|| center(h, w, 1.0, aspect));
            (rect, rng.uniform() < 0.5)
        }
        Transform::Eval { crop } => (center(h, w, crop, aspect), false),
    }
}

/// The central `crop` fraction (per side) of the largest rectangle of width / height
/// `aspect` in an `h` x `w` image.
fn center(h: usize, w: usize, crop: f64, aspect: f64) -> Rect {
    let (hf, wf) = (h as f64, w as f64);
    let (ch, cw) = if aspect == 1.0 {
        let s = hf.min(wf);
        (s, s)
    } else if wf >= hf * aspect {
        (hf, hf * aspect)
    } else {
        (wf / aspect, wf)
    };
    let (ch, cw) = (ch * crop, cw * crop);
    Rect {
        y0: (hf - ch) / 2.0,
        x0: (wf - cw) / 2.0,
        h: ch,
        w: cw,
    }
}
