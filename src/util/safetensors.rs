//! A minimal safetensors reader/writer (the format of Hugging Face and timm checkpoints):
//! an 8-byte little-endian header length, a JSON header mapping names to dtype, shape and
//! byte offsets (plus an optional `__metadata__` string map), then the raw data. Reading
//! validates the header with the reference `safetensors` crate and streams the tensors;
//! files effnet writes carry a checksum. Writes are atomic: a temporary file in the same folder, fsync, then rename.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use safetensors::tensor::Metadata;
use safetensors::Dtype;
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
    /// Tensors stored as I64 (read from I64, written back as I64, values rounded to whole
    /// numbers), such as PyTorch's `num_batches_tracked`; every other tensor is F32.
    pub int64: BTreeSet<String>,
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

    /// Add a tensor stored as I64 (see [`SafeTensors::int64`]).
    pub fn insert_i64(&mut self, name: impl Into<String>, shape: &[usize], data: Vec<f32>) {
        let name = name.into();
        self.int64.insert(name.clone());
        self.insert(name, shape, data);
    }

    /// A tensor's bytes as written: little-endian F32, or I64 for [`SafeTensors::int64`].
    fn data_bytes<'a>(&self, name: &str, t: &'a StTensor) -> std::borrow::Cow<'a, [u8]> {
        if self.int64.contains(name) {
            let ints = t.data.iter().map(|&x| (x.round() as i64).to_le_bytes());
            std::borrow::Cow::Owned(ints.flatten().collect())
        } else {
            f32_le_bytes(&t.data)
        }
    }

    /// Serialize, with an integrity checksum ([`CHECKSUM_KEY`]) in the metadata.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut off = 0usize;
        let mut infos = BTreeMap::new();
        for (name, t) in &self.tensors {
            let (dtype, width) = if self.int64.contains(name) {
                ("I64", 8)
            } else {
                ("F32", 4)
            };
            let len = t.data.len() * width;
            infos.insert(name.clone(), (dtype, t.shape.clone(), (off, off + len)));
            off += len;
        }
        let mut meta = self.metadata.clone();
        meta.remove(CHECKSUM_KEY);
        let mut crc = crc32fast::Hasher::new();
        crc.update(canonical_header(&infos, &meta).as_bytes());
        for (name, t) in &self.tensors {
            crc.update(&self.data_bytes(name, t));
        }
        meta.insert(CHECKSUM_KEY.into(), format!("{:08x}", crc.finalize()));
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(&meta).expect("string map"),
        );
        for (name, (dtype, shape, (s, e))) in &infos {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [s, e]}),
            );
        }
        let mut h = serde_json::to_vec(&header).expect("json");
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + h.len() + off);
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        for (name, t) in &self.tensors {
            out.extend_from_slice(&self.data_bytes(name, t));
        }
        out
    }

    /// Parse a whole file held in memory; `path` is only used in error messages.
    pub fn from_bytes(b: &[u8], path: &Path) -> Result<Self> {
        read_from(std::io::Cursor::new(b), b.len() as u64, path)
    }

    /// Read a file, as strictly as the reference reader (the `safetensors` crate): the
    /// tensors' byte ranges must be in order without gaps or overlaps, cover the data
    /// exactly, and match their shape and dtype (computed without overflow). Tensors are
    /// read one at a time into their final buffers, so a large file is never held twice.
    /// Files effnet wrote also carry a checksum ([`CHECKSUM_KEY`]), verified here.
    pub fn load(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let len = f
            .metadata()
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?
            .len();
        read_from(std::io::BufReader::with_capacity(1 << 20, f), len, path)
    }

    /// Write atomically (temp file in the same folder, fsync, rename), so a crash never
    /// leaves a half-written file in place of the previous one.
    pub fn save(&self, path: &Path) -> Result<()> {
        atomic_write(path, &self.to_bytes())
    }
}

/// Metadata key of the checksum effnet writes: CRC-32 (hex) of a canonical description of
/// the header (every tensor's name, dtype, shape and offsets; every other metadata entry)
/// followed by the data section. Files without it (timm, PyTorch) are read unchecked.
pub const CHECKSUM_KEY: &str = "effnet_crc32";

/// Largest header accepted: the reference reader's limit (100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Tensor descriptions by name: (dtype, shape, byte range in the data section).
type Infos<D> = BTreeMap<String, (D, Vec<usize>, (usize, usize))>;

fn canonical_header<D: std::fmt::Display>(
    infos: &Infos<D>,
    meta: &BTreeMap<String, String>,
) -> String {
    let mut s = String::new();
    for (name, (dtype, shape, (a, b))) in infos {
        s.push_str(&format!("tensor\t{name}\t{dtype}\t{shape:?}\t{a}\t{b}\n"));
    }
    for (k, v) in meta {
        s.push_str(&format!("meta\t{k}\t{v}\n"));
    }
    s
}

fn f32_le_bytes(v: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// Read a safetensors stream of `len` bytes (see [`SafeTensors::load`]).
fn read_from(mut r: impl Read, len: u64, path: &Path) -> Result<SafeTensors> {
    let bad = |m: String| Error::file(path, format!("not a valid safetensors file: {m}"));
    let io = |e: std::io::Error| {
        Error::file(
            path,
            format!("cannot read ({e}); the file may have been truncated while reading"),
        )
    };
    if len < 8 {
        return Err(bad(format!(
            "{len} bytes is shorter than the 8-byte header length"
        )));
    }
    let mut n8 = [0u8; 8];
    r.read_exact(&mut n8).map_err(io)?;
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES || n > len - 8 {
        return Err(bad(format!(
            "the header claims {n} bytes but the file holds {len} (at most {MAX_HEADER_BYTES} \
             allowed): truncated or not a safetensors file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header).map_err(io)?;
    let md: Metadata = serde_json::from_slice(&header).map_err(|e| {
        bad(format!(
            "bad header ({e}); every tensor needs a known dtype, a shape whose size matches \
             its bytes, and data offsets in order without gaps or overlaps"
        ))
    })?;
    drop(header);
    let data_len = len - 8 - n;
    if md.data_len() as u64 != data_len {
        return Err(bad(format!(
            "the tensors cover {} bytes of data but the file holds {data_len} after its header \
             (truncated, or bytes inserted or appended)",
            md.data_len()
        )));
    }
    let mut st = SafeTensors::default();
    if let Some(m) = md.metadata() {
        st.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    let want_crc = st.metadata.remove(CHECKSUM_KEY);
    let infos: Infos<Dtype> = md
        .tensors()
        .into_iter()
        .map(|(name, i)| (name, (i.dtype, i.shape.clone(), i.data_offsets)))
        .collect();
    let mut crc = crc32fast::Hasher::new();
    if want_crc.is_some() {
        crc.update(canonical_header(&infos, &st.metadata).as_bytes());
    }
    // The data section in file order (the offsets are contiguous from 0).
    for name in md.offset_keys() {
        let (dtype, shape, (s, e)) = infos[&name].clone();
        let nbytes = e - s;
        let data = match dtype {
            Dtype::F32 => {
                let mut v = vec![0f32; nbytes / 4];
                r.read_exact(bytemuck::cast_slice_mut(&mut v)).map_err(io)?;
                if want_crc.is_some() {
                    crc.update(bytemuck::cast_slice(&v));
                }
                if cfg!(target_endian = "big") {
                    for x in &mut v {
                        *x = f32::from_bits(u32::from_le(x.to_bits()));
                    }
                }
                v
            }
            Dtype::F16 | Dtype::BF16 | Dtype::I64 => {
                let mut raw = vec![0u8; nbytes];
                r.read_exact(&mut raw).map_err(io)?;
                if want_crc.is_some() {
                    crc.update(&raw);
                }
                match dtype {
                    Dtype::F16 => raw
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                    Dtype::BF16 => raw
                        .chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                    _ => raw
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                        .collect(),
                }
            }
            other => {
                return Err(bad(format!(
                    "{name}: dtype {other} is not supported (use F32, F16, BF16 or I64)"
                )))
            }
        };
        if dtype == Dtype::I64 {
            st.int64.insert(name.clone());
        }
        st.tensors.insert(name, StTensor { shape, data });
    }
    if let Some(want) = want_crc {
        let got = format!("{:08x}", crc.finalize());
        if got != want {
            return Err(Error::file(
                path,
                format!(
                    "checksum mismatch (stored {want}, computed {got}): the file changed after \
                     effnet wrote it (a flipped bit on disk, an incomplete copy or an edit). \
                     Restore it from a backup or use an earlier checkpoint"
                ),
            ));
        }
    }
    Ok(st)
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
