//! The input resolution of a model: `H x W` pixels, square or not (`224`, `24x40`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Smallest side a model accepts (five stride-2 stages leave at least one pixel).
pub const MIN_SIDE: usize = 8;

/// Largest side a training or evaluation run takes (16 times ImageNet's 512-pixel test
/// sizes); larger sides would only allocate batches nobody can train on.
pub const MAX_SIDE: usize = 8192;

/// Height and width of the images a model is built for. In JSON (checkpoints, run
/// configurations) a square size is one integer, as before non-square sizes existed, and
/// any other is `{"h": H, "w": W}`; both forms, and the `"HxW"` string, read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

    /// True when both sides are in [`MIN_SIDE`]..=[`MAX_SIDE`].
    pub fn in_range(&self) -> bool {
        (MIN_SIDE..=MAX_SIDE).contains(&self.h) && (MIN_SIDE..=MAX_SIDE).contains(&self.w)
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

impl Serialize for ImageSize {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.is_square() {
            return s.serialize_u64(self.h as u64);
        }
        let mut st = s.serialize_struct("ImageSize", 2)?;
        st.serialize_field("h", &self.h)?;
        st.serialize_field("w", &self.w)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for ImageSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        /// The forms an image size has been written in.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Side(usize),
            Sides { h: usize, w: usize },
            Text(String),
        }
        match Form::deserialize(d)? {
            Form::Side(n) => Ok(Self::square(n)),
            Form::Sides { h, w } => Ok(Self::new(h, w)),
            Form::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
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
