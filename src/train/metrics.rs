//! Run metrics: JSON lines per step and per epoch in the run folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// A JSONL writer (appends; flushed every line so a crash loses nothing).
pub struct MetricsLog {
    /// None: records are dropped (ranks other than 0 of a data-parallel run).
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl MetricsLog {
    /// Open (append) `dir/name`.
    pub fn open(dir: &Path, name: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create run folder: {e}")))?;
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::file(&path, format!("cannot open: {e}")))?;
        Ok(Self {
            file: Some(file),
            path,
        })
    }

    /// A log that drops its records (ranks other than 0 of a data-parallel run, which
    /// write nothing into the run folder).
    pub fn discard() -> Self {
        Self {
            file: None,
            path: PathBuf::new(),
        }
    }

    /// Append one record.
    pub fn log<T: Serialize>(&mut self, rec: &T) -> Result<()> {
        let mut line = serde_json::to_vec(rec).expect("serializable");
        line.push(b'\n');
        match &mut self.file {
            Some(f) => f
                .write_all(&line)
                .map_err(|e| Error::file(&self.path, format!("cannot write: {e}"))),
            None => Ok(()),
        }
    }
}

/// Drop the records of a JSONL log whose `step` is past `step` (and lines that are not
/// records, such as a line cut short by a kill), rewriting the file atomically. A resumed
/// run calls this so the steps after its checkpoint are not logged twice. A missing file
/// is left missing.
pub fn truncate_after(path: &Path, step: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::file(path, format!("cannot read: {e}"))),
    };
    let keep = |l: &&str| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["step"].as_u64())
            .is_some_and(|s| s <= step)
    };
    let kept: Vec<&str> = text.lines().filter(keep).collect();
    if kept.len() == text.lines().count() && (text.is_empty() || text.ends_with('\n')) {
        return Ok(());
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::util::safetensors::atomic_write(path, out.as_bytes())
}

/// Whether the JSON-lines file at `path` holds a record of `step` (a missing file holds
/// none).
pub fn has_step(path: &Path, step: u64) -> Result<bool> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                == Some(step)
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::file(path, format!("cannot read: {e}"))),
    }
}

/// One training-step record.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// Global step (1-based).
    pub step: u64,
    /// Epoch (fractional).
    pub epoch: f64,
    /// Mean training loss of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Images per second (averaged since the last record).
    pub img_per_s: f64,
    /// Mixed precision: the loss scale after this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f32>,
    /// Mixed precision: steps skipped so far (a non-finite gradient), in the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u32>,
}

/// One evaluation record.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct EvalRecord {
    /// Step at evaluation.
    pub step: u64,
    /// Epoch (fractional).
    pub epoch: f64,
    /// Mean test loss.
    pub loss: f64,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Which weights: `ema` or `raw`.
    pub weights: String,
}
