//! The table a reproduction writes: markdown for people (`<name>.md`), JSON for programs
//! (`<name>.json`, with every number unrounded), next to its PNG.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// A reproduction's result table and what produced it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Title (the markdown heading).
    pub title: String,
    /// The command line that produced it.
    pub command: String,
    /// The adapter it ran on.
    pub adapter: String,
    /// Wall-clock seconds of the whole reproduction.
    pub seconds: f64,
    /// Column headers of the markdown table.
    pub columns: Vec<String>,
    /// Rows of formatted cells (one per column).
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table (what the columns mean, caveats).
    pub notes: Vec<String>,
    /// The structured results (unrounded), for the JSON file.
    pub results: serde_json::Value,
}

impl Report {
    /// The report of a reproduction started at `t0` on `gpu` (adapter and wall time from
    /// them), its table headed by `columns`; no rows, notes or results yet.
    pub fn new(
        title: impl Into<String>,
        command: &str,
        gpu: &Gpu,
        t0: Instant,
        columns: &[&str],
    ) -> Self {
        Self {
            title: title.into(),
            command: command.into(),
            adapter: format!("{} ({:?})", gpu.info.name, gpu.info.backend),
            seconds: t0.elapsed().as_secs_f64(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
            results: serde_json::Value::Null,
        }
    }

    /// The markdown text: heading, provenance, table, notes.
    pub fn to_markdown(&self) -> String {
        let mut s = format!("# {}\n\n", self.title);
        s.push_str(&format!(
            "Command: `{}`  \nAdapter: {}  \nWall time: {}\n\n",
            self.command,
            self.adapter,
            crate::train::trainer::format_duration(self.seconds)
        ));
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        s.push_str(&line(&self.columns));
        s.push_str(&line(&vec!["---".to_string(); self.columns.len()]));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }

    /// Write `dir/<name>.md` and `dir/<name>.json`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        let md = dir.join(format!("{name}.md"));
        std::fs::write(&md, self.to_markdown())
            .map_err(|e| Error::file(&md, format!("cannot write: {e}")))?;
        let js = dir.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Config(format!("cannot serialize the report: {e}")))?;
        std::fs::write(&js, text).map_err(|e| Error::file(&js, format!("cannot write: {e}")))?;
        Ok((md, js))
    }
}

/// `v` with `digits` decimals, or `-` when it is not finite.
pub fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".into()
    }
}

/// `v` in scientific notation when large or small, else with 3 significant decimals.
pub fn fmt_sig(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.3e}")
    } else {
        format!("{v:.3}")
    }
}

/// Mean and sample standard deviation (0 for one value; NaN for none).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    match v.len() {
        0 => (f64::NAN, f64::NAN),
        1 => (v[0], 0.0),
        n => {
            let m = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
            (m, var.sqrt())
        }
    }
}
