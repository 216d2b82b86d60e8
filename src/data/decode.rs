//! Image files to RGB u8 pixels in buffers a loader worker reuses, with JPEGs decoded at a
//! reduced size in the DCT domain when the crop about to be taken allows it.
//!
//! Decoder choice (both pure Rust, so effnet builds on every platform with `cargo build`
//! and no C toolchain, cmake or system library):
//! - full-size JPEG decoding uses `zune-jpeg` (the decoder the `image` crate itself uses,
//!   with AVX2/NEON paths), decoding straight into the worker's buffer;
//! - reduced-size decoding uses `jpeg-decoder`'s [`jpeg_decoder::Decoder::scale`], which
//!   runs a 2x2 or 1x1 IDCT per 8x8 block (1/4, 1/8 scale): the pixels the crop would
//!   have thrown away in the resize are never produced. Its entropy decoder is slower than
//!   zune-jpeg's, and entropy decoding dominates for photo-like files, so at 1/2 scale it
//!   is no faster than a full zune-jpeg decode (measured with `effnet bench data`); the
//!   reduced path starts at [`MIN_REDUCED_SCALE`].
//!
//! libjpeg-turbo (the `turbojpeg` crate) decodes faster still and can skip rows outside the
//! crop, but needs libturbojpeg >= 3.0 (Debian 12 ships 2.1) or a cmake + nasm build of
//! the bundled C sources (minutes of CI time on a 2-core machine, twice: clippy and the
//! release build); see the data-pipeline notes in the README.
//!
//! PNGs go through the `image` crate. Untrusted headers are bounded before anything is
//! allocated ([`MAX_SIDE`], [`MAX_PIXELS`]); corrupt or truncated files are errors.

use std::io::Read;
use std::path::Path;

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::models::ImageSize;

/// Largest image side accepted (pixels).
pub const MAX_SIDE: usize = 1 << 14;
/// Largest image accepted (pixels): 64 megapixels, 192 MiB of RGB per worker.
pub const MAX_PIXELS: usize = 1 << 26;

/// The smallest scale denominator decoded at reduced size (below it: full size).
pub const MIN_REDUCED_SCALE: usize = 4;

/// A decoded image in the decoder's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Height of the decoded pixels.
    pub h: usize,
    /// Width of the decoded pixels.
    pub w: usize,
    /// Scale denominator used (1, 2, 4 or 8): `h` is about `full_h / scale`.
    pub scale: usize,
}

/// The two kinds of files image folders hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JPEG (starts with FF D8).
    Jpeg,
    /// PNG (starts with the PNG signature).
    Png,
}

/// One worker's decoder: the file bytes and the decoded pixels live in buffers that are
/// reused from image to image.
#[derive(Default)]
pub struct ImageDecoder {
    file: Vec<u8>,
    pixels: Vec<u8>,
    format: Option<Format>,
    full: (usize, usize),
}

fn zune_options() -> DecoderOptions {
    DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        // Truncated or corrupt entropy-coded data is an error, not grey rows.
        .set_strict_mode(true)
}

fn check_size(h: usize, w: usize) -> std::result::Result<(), String> {
    if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE || h * w > MAX_PIXELS {
        return Err(format!(
            "header says {w}x{h} pixels, outside the accepted 1..{MAX_SIDE} per side and \
             {MAX_PIXELS} in total"
        ));
    }
    Ok(())
}

impl ImageDecoder {
    /// A decoder with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read `path` and its header; returns the full (height, width). Errors are plain
    /// messages: the caller names the file.
    pub fn open(&mut self, path: &Path) -> std::result::Result<(usize, usize), String> {
        self.file.clear();
        self.format = None;
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut self.file))
            .map_err(|e| format!("cannot read: {e}"))?;
        let (format, h, w) = if self.file.starts_with(&[0xFF, 0xD8]) {
            let mut d = zune_jpeg::JpegDecoder::new_with_options(
                ZCursor::new(&self.file[..]),
                zune_options(),
            );
            d.decode_headers()
                .map_err(|e| format!("corrupt JPEG header ({e})"))?;
            let info = d.info().ok_or("corrupt JPEG header")?;
            (Format::Jpeg, info.height as usize, info.width as usize)
        } else if self.file.starts_with(b"\x89PNG\r\n\x1a\n") {
            let r = image::ImageReader::with_format(
                std::io::Cursor::new(&self.file[..]),
                image::ImageFormat::Png,
            );
            let (w, h) = r
                .into_dimensions()
                .map_err(|e| format!("corrupt PNG header ({e})"))?;
            (Format::Png, h as usize, w as usize)
        } else {
            return Err("neither a JPEG nor a PNG file (bad signature)".into());
        };
        check_size(h, w)?;
        self.format = Some(format);
        self.full = (h, w);
        Ok((h, w))
    }

    /// Decode the file read by [`ImageDecoder::open`] at up to `1 / scale` of its size
    /// (JPEG at scales from [`MIN_REDUCED_SCALE`]; PNGs and smaller scales decode at full
    /// size). `scale` is 1, 2, 4 or 8; [`Decoded::scale`] says which was used.
    pub fn decode(&mut self, scale: usize) -> std::result::Result<Decoded, String> {
        let (h, w) = self.full;
        match self.format {
            None => Err("no file opened".into()),
            Some(Format::Png) => {
                let img = image::load_from_memory_with_format(&self.file, image::ImageFormat::Png)
                    .map_err(|e| format!("cannot decode PNG ({e})"))?;
                let rgb = img.to_rgb8();
                if (rgb.height() as usize, rgb.width() as usize) != (h, w) {
                    return Err("PNG data does not match its header".into());
                }
                self.pixels.clear();
                self.pixels.extend_from_slice(rgb.as_raw());
                Ok(Decoded { h, w, scale: 1 })
            }
            Some(Format::Jpeg) => {
                if scale >= MIN_REDUCED_SCALE {
                    if let Some(d) = self.decode_scaled(scale)? {
                        return Ok(d);
                    }
                }
                let mut d = zune_jpeg::JpegDecoder::new_with_options(
                    ZCursor::new(&self.file[..]),
                    zune_options(),
                );
                d.decode_headers()
                    .map_err(|e| format!("corrupt JPEG header ({e})"))?;
                let n = d.output_buffer_size().ok_or("corrupt JPEG header")?;
                if n != h * w * 3 {
                    return Err(format!("JPEG decodes to {n} bytes, not {w}x{h} RGB"));
                }
                self.pixels.resize(n, 0);
                d.decode_into(&mut self.pixels)
                    .map_err(|e| format!("corrupt or truncated JPEG data ({e})"))?;
                Ok(Decoded { h, w, scale: 1 })
            }
        }
    }

    /// Reduced-size decode; `None` when the file's pixel format has no scaled path here
    /// (CMYK, 16-bit): the caller decodes at full size.
    fn decode_scaled(&mut self, scale: usize) -> std::result::Result<Option<Decoded>, String> {
        let (h, w) = self.full;
        let (sh, sw) = (h.div_ceil(scale), w.div_ceil(scale));
        let mut d = jpeg_decoder::Decoder::new(&self.file[..]);
        d.set_max_decoding_buffer_size(MAX_PIXELS * 4);
        let got = d
            .scale(sw as u16, sh as u16)
            .map_err(|e| format!("corrupt JPEG header ({e})"))?;
        if (got.1 as usize, got.0 as usize) != (sh, sw) {
            return Ok(None);
        }
        let fmt = d.info().map(|i| i.pixel_format);
        if !matches!(
            fmt,
            Some(jpeg_decoder::PixelFormat::RGB24 | jpeg_decoder::PixelFormat::L8)
        ) {
            return Ok(None);
        }
        let px = d
            .decode()
            .map_err(|e| format!("corrupt or truncated JPEG data ({e})"))?;
        self.pixels.clear();
        match fmt {
            Some(jpeg_decoder::PixelFormat::L8) if px.len() == sh * sw => {
                self.pixels.extend(px.iter().flat_map(|&v| [v, v, v]));
            }
            _ if px.len() == sh * sw * 3 => self.pixels.extend_from_slice(&px),
            _ => return Err("JPEG data does not match its header".into()),
        }
        Ok(Some(Decoded {
            h: sh,
            w: sw,
            scale,
        }))
    }

    /// The pixels of the last decode, RGB u8 HWC.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Size of the file read by the last [`ImageDecoder::open`], bytes.
    pub fn file_bytes(&self) -> usize {
        self.file.len()
    }
}

/// The largest DCT scale denominator (1, 2, 4 or 8) at which a `crop_h` x `crop_w` region
/// still holds at least `out.h` x `out.w` pixels (a number: `out` x `out`), so the resize
/// to `out` never has to enlarge what a full-size decode would have given.
pub fn scale_for(crop_h: f64, crop_w: f64, out: impl Into<ImageSize>) -> usize {
    let out = out.into();
    let mut s = 1;
    while s < 8
        && crop_h / (2 * s) as f64 >= out.h as f64
        && crop_w / (2 * s) as f64 >= out.w as f64
    {
        s *= 2;
    }
    s
}
