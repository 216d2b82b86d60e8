//! The input resolution of a model: `H x W` pixels, square or not (`224`, `24x40`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Smallest side a model accepts (five stride-2 stages leave at least one pixel).
pub const MIN_SIDE: usize = 8;

/// Height and width of the images a model is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSize {
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

impl ImageSize {
    /// `h x w` pixels.
    pub fn new(h: usize, w: usize) -> Self {
        Self { h, w }
    }

    /// `n x n` pixels.
    pub fn square(n: usize) -> Self {
        Self { h: n, w: n }
    }

    /// True when `h == w`.
    pub fn is_square(&self) -> bool {
        self.h == self.w
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }

    /// The size after a 'same' convolution or pooling of stride `s`: `ceil(side / s)`.
    pub fn strided(&self, s: usize) -> Self {
        Self {
            h: self.h.div_ceil(s),
            w: self.w.div_ceil(s),
        }
    }

    /// Refuse sides below [`MIN_SIDE`].
    pub fn check_min(&self) -> Result<()> {
        if self.h < MIN_SIDE || self.w < MIN_SIDE {
            return Err(Error::Config(format!(
                "image size {self} is too small (need >= {MIN_SIDE} on each side)"
            )));
        }
        Ok(())
    }
}

impl From<usize> for ImageSize {
    fn from(n: usize) -> Self {
        Self::square(n)
    }
}

/// `224` for a square size, `24x40` (height x width) otherwise.
impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_square() {
            write!(f, "{}", self.h)
        } else {
            write!(f, "{}x{}", self.h, self.w)
        }
    }
}

/// Parses `N` (square) or `HxW` (height x width, `x` or `X`), each side a positive integer.
impl FromStr for ImageSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "image size '{s}' is not N or HxW (height x width in pixels, e.g. 224 or 24x40)"
            ))
        };
        let side = |t: &str| -> Result<usize> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match t.parse::<usize>() {
                Ok(0) | Err(_) => Err(bad()),
                Ok(v) => Ok(v),
            }
        };
        match s.split_once(['x', 'X']) {
            Some((h, w)) => Ok(Self::new(side(h)?, side(w)?)),
            None => Ok(Self::square(side(s)?)),
        }
    }
}
