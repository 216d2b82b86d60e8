//! A minimal safetensors reader/writer (the format of Hugging Face and timm checkpoints):
//! an 8-byte little-endian header length, a JSON header mapping names to dtype, shape and
//! byte offsets (plus an optional `__metadata__` string map), then the raw data.
//! Writes are atomic: a temporary file in the same folder, fsync, then rename.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// One tensor: shape and f32 data (F16 and BF16 files are widened on read).
#[derive(Clone, Debug, PartialEq)]
pub struct StTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// A safetensors file in memory: tensors by name and string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SafeTensors {
    /// Tensors.
    pub tensors: BTreeMap<String, StTensor>,
    /// `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    /// Add a tensor.
    pub fn insert(&mut self, name: impl Into<String>, shape: &[usize], data: Vec<f32>) {
        self.tensors.insert(
            name.into(),
            StTensor {
                shape: shape.to_vec(),
                data,
            },
        );
    }

    /// A tensor by name, or an error naming it and the file.
    pub fn get(&self, name: &str) -> Result<&StTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::Config(format!("tensor '{name}' is missing from the checkpoint")))
    }

    /// Serialize.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            header.insert(
                "__metadata__".into(),
                serde_json::to_value(&self.metadata).expect("string map"),
            );
        }
        let mut off = 0usize;
        for (name, t) in &self.tensors {
            let len = t.data.len() * 4;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [off, off + len]}),
            );
            off += len;
        }
        let mut h = serde_json::to_vec(&header).expect("json");
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + h.len() + off);
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        for t in self.tensors.values() {
            out.extend_from_slice(bytemuck::cast_slice(&t.data));
        }
        out
    }

    /// Parse; `path` is only used in error messages.
    pub fn from_bytes(b: &[u8], path: &Path) -> Result<Self> {
        let bad = |m: &str| Error::file(path, format!("not a valid safetensors file: {m}"));
        if b.len() < 8 {
            return Err(bad("shorter than its 8-byte header length"));
        }
        let hlen = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        if hlen > b.len() - 8 {
            return Err(bad("header length runs past the end (truncated file?)"));
        }
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&b[8..8 + hlen])
                .map_err(|e| bad(&format!("header is not JSON ({e})")))?;
        let data = &b[8 + hlen..];
        let mut st = SafeTensors::default();
        for (name, v) in header {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, v) in m {
                        st.metadata
                            .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                    }
                }
                continue;
            }
            let dtype = v["dtype"].as_str().unwrap_or("");
            let shape: Vec<usize> = v["shape"]
                .as_array()
                .ok_or_else(|| bad(&format!("{name}: no shape")))?
                .iter()
                .map(|x| x.as_u64().unwrap_or(0) as usize)
                .collect();
            let offs = v["data_offsets"]
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| bad(&format!("{name}: no data_offsets")))?;
            let (s, e) = (
                offs[0].as_u64().unwrap_or(u64::MAX) as usize,
                offs[1].as_u64().unwrap_or(u64::MAX) as usize,
            );
            if s > e || e > data.len() {
                return Err(bad(&format!(
                    "{name}: data offsets {s}..{e} outside the file (truncated?)"
                )));
            }
            let raw = &data[s..e];
            let n: usize = shape.iter().product();
            let vals: Vec<f32> = match dtype {
                "F32" if raw.len() == 4 * n => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                "F16" if raw.len() == 2 * n => raw
                    .chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
                "BF16" if raw.len() == 2 * n => raw
                    .chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
                "I64" if raw.len() == 8 * n => raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                "F32" | "F16" | "BF16" | "I64" => {
                    return Err(bad(&format!(
                        "{name}: {} bytes do not match shape {shape:?}",
                        raw.len()
                    )))
                }
                other => return Err(bad(&format!("{name}: unsupported dtype {other}"))),
            };
            st.tensors.insert(name, StTensor { shape, data: vals });
        }
        Ok(st)
    }

    /// Read a file.
    pub fn load(path: &Path) -> Result<Self> {
        let b = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        Self::from_bytes(&b, path)
    }

    /// Write atomically (temp file in the same folder, fsync, rename), so a crash never
    /// leaves a half-written file in place of the previous one.
    pub fn save(&self, path: &Path) -> Result<()> {
        atomic_write(path, &self.to_bytes())
    }
}

/// Write `bytes` to `path` atomically: into `.<name>.tmp<pid>` beside it, fsync, rename
/// over `path`, then fsync the folder so the rename itself survives a power loss. A writer
/// killed before the rename leaves only its temp file (run folders remove those when a
/// run starts, see [`crate::train::run_dir`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename (a directory entry). Opening a folder as a file is a Unix
        // idiom; Windows' rename is made durable by the file system's own journal.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, format!("cannot write: {e}")));
    }
    Ok(())
}

fn f16_to_f32(h: u16) -> f32 {
    let s = ((h >> 15) & 1) as u32;
    let e = ((h >> 10) & 0x1f) as u32;
    let m = (h & 0x3ff) as u32;
    let bits = if e == 0 {
        if m == 0 {
            s << 31
        } else {
            // Subnormal: normalize.
            let mut e2 = 127 - 15 + 1;
            let mut m2 = m;
            while m2 & 0x400 == 0 {
                m2 <<= 1;
                e2 -= 1;
            }
            (s << 31) | ((e2 as u32) << 23) | ((m2 & 0x3ff) << 13)
        }
    } else if e == 31 {
        (s << 31) | (0xff << 23) | (m << 13)
    } else {
        (s << 31) | ((e + 127 - 15) << 23) | (m << 13)
    };
    f32::from_bits(bits)
}
