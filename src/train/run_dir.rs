//! The run folder, held by one training process at a time.
//!
//! [`RunDir::open`] creates the folder, takes an exclusive lock on `.effnet.lock` inside it
//! for as long as the [`RunDir`] lives (a second process gets an error naming the holder:
//! pid, host, start time and command line), removes partial checkpoints that a killed
//! writer left behind, and applies the start policy:
//!
//! - [`Mode::Fresh`] refuses a folder that already holds a run (a checkpoint or metrics),
//!   so running the same command twice never overwrites the first run;
//! - [`Mode::Overwrite`] deletes the files of the previous run first (only the files effnet
//!   writes, here and in `finetune-*` sub-folders);
//! - [`Mode::Resume`] requires a checkpoint, so a misspelled folder is an error instead of
//!   a silent fresh start.
//!
//! Refusing was chosen over creating a new versioned folder per run (Lightning's
//! `version_N`): the folder named on the command line stays the one that `--resume`,
//! `effnet eval` and `effnet export` read, scripts know where results go, and nothing is
//! ever written somewhere the user did not ask for.
//!
//! The lock is advisory (`flock` on Unix, `LockFileEx` on Windows, through std's
//! [`File::try_lock`]); it is released when the process exits, however it exits, so a
//! killed run never leaves the folder locked. On Windows the holder's details cannot be
//! read while it holds the lock; the error then says so.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".effnet.lock";

/// The files a run writes into its folder (a fine-tune writes the same into
/// `finetune-<size>/`).
pub const RUN_FILES: [&str; 4] = [
    "checkpoint.safetensors",
    "metrics.jsonl",
    "eval.jsonl",
    "curves.png",
];

/// How a run uses its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A new run: the folder must not hold one already.
    Fresh,
    /// A new run replacing the previous one: its files are deleted first.
    Overwrite,
    /// Continue the run whose checkpoint the folder holds.
    Resume,
}

/// A locked run folder (see the module documentation).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Partial checkpoint files of killed writers removed when opening.
    pub removed_temps: Vec<PathBuf>,
    _lock: File,
}

impl RunDir {
    /// Create (if needed) and lock `path`, clean up after killed writers and apply `mode`.
    pub fn open(path: &Path, mode: Mode) -> Result<RunDir> {
        if mode == Mode::Resume && !path.join(RUN_FILES[0]).is_file() {
            // Checked before creating anything, so a misspelled folder is not created.
            return Err(no_checkpoint(path));
        }
        std::fs::create_dir_all(path)
            .map_err(|e| Error::file(path, format!("cannot create the run folder: {e}")))?;
        let lock = acquire(path)?;
        let removed_temps = remove_stale_temps(path)?;
        let dir = RunDir {
            path: path.to_path_buf(),
            removed_temps,
            _lock: lock,
        };
        match mode {
            Mode::Fresh => {
                let found = dir.previous_run_files();
                if !found.is_empty() {
                    return Err(Error::file(
                        path,
                        format!(
                            "holds a previous run ({}). Continue it with --resume, replace it \
                             with --overwrite (deletes those files), or choose another \
                             --run-dir",
                            found
                                .iter()
                                .map(|p| p.strip_prefix(path).unwrap_or(p).display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            Mode::Overwrite => {
                for f in dir.previous_run_files() {
                    std::fs::remove_file(&f)
                        .map_err(|e| Error::file(&f, format!("cannot delete: {e}")))?;
                }
            }
            Mode::Resume => {
                if !dir.checkpoint().is_file() {
                    return Err(no_checkpoint(path));
                }
            }
        }
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its checkpoint file.
    pub fn checkpoint(&self) -> PathBuf {
        self.path.join(RUN_FILES[0])
    }

    /// Files of a previous run present in the folder and its `finetune-*` sub-folders.
    fn previous_run_files(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.path.clone()];
        if let Ok(rd) = std::fs::read_dir(&self.path) {
            let mut subs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("finetune-"))
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            subs.sort();
            dirs.extend(subs);
        }
        dirs.iter()
            .flat_map(|d| RUN_FILES.iter().map(move |f| d.join(f)))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Take the folder's lock and write who holds it.
fn acquire(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    // Never truncate before holding the lock: that would erase the holder's details.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::file(&path, format!("cannot open the run folder's lock: {e}")))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut who = String::new();
            let holder = match f.read_to_string(&mut who) {
                Ok(_) if !who.trim().is_empty() => describe_holder(&who),
                Ok(_) => "another process (it has not written its details yet)".to_string(),
                Err(_) => "another process (its details cannot be read on this system)".into(),
            };
            return Err(Error::file(
                dir,
                format!(
                    "is in use by {holder}. Two trainings in one folder would overwrite each \
                     other: wait for it to finish, stop it, or choose another --run-dir"
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::file(
                &path,
                format!("cannot lock the run folder: {e}"),
            ))
        }
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let command: Vec<String> = std::env::args().collect();
    let text = format!(
        "pid={}\nhost={}\nstarted_unix={started}\ncommand={}\n",
        std::process::id(),
        gethostname::gethostname().to_string_lossy(),
        command.join(" ")
    );
    let written = f
        .set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| f.write_all(text.as_bytes()))
        .and_then(|_| f.flush());
    written.map_err(|e| Error::file(&path, format!("cannot write the lock holder: {e}")))?;
    Ok(f)
}

/// "process 123 on host h (started 5 min ago: effnet train ...)" from the lock file text.
fn describe_holder(text: &str) -> String {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = field("started_unix")
        .parse::<u64>()
        .ok()
        .map(|t| {
            let s = now.saturating_sub(t);
            if s < 120 {
                format!("started {s} s ago")
            } else if s < 7200 {
                format!("started {} min ago", s / 60)
            } else {
                format!("started {:.1} h ago", s as f64 / 3600.0)
            }
        })
        .unwrap_or_else(|| "start time unknown".into());
    format!(
        "process {} on host {} ({ago}: {})",
        field("pid"),
        field("host"),
        field("command")
    )
}

/// Remove `.checkpoint.safetensors.tmp*` files: partial checkpoints of writers that were
/// killed before their rename (see [`crate::util::safetensors::atomic_write`]). Only
/// called while holding the folder's lock, so no live writer owns them.
fn remove_stale_temps(dir: &Path) -> Result<Vec<PathBuf>> {
    let prefix = format!(".{}.tmp", RUN_FILES[0]);
    let mut removed = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    let list = |d: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(d)
            .map(|rd| rd.filter_map(|e| e.ok()).collect())
            .unwrap_or_default()
    };
    dirs.extend(
        list(dir)
            .into_iter()
            .filter(|e| e.file_name().to_string_lossy().starts_with("finetune-"))
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    );
    for d in dirs {
        for e in list(&d) {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let p = e.path();
                std::fs::remove_file(&p).map_err(|err| {
                    Error::file(
                        &p,
                        format!("cannot remove this stale partial checkpoint: {err}"),
                    )
                })?;
                removed.push(p);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

fn no_checkpoint(path: &Path) -> Error {
    Error::file(
        path,
        format!(
            "nothing to resume: there is no checkpoint.safetensors here{}. Check the \
             --run-dir spelling, or start a new run without --resume",
            suggestions(path)
        ),
    )
}

/// " (did you mean ...?)": the run folders next to `path` whose names are closest to its
/// name (Jaro-Winkler similarity above 0.8, best first, at most three).
fn suggestions(path: &Path) -> String {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let want = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found: Vec<(f64, String)> = std::fs::read_dir(parent)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p != path && p.join(RUN_FILES[0]).is_file())
                .filter_map(|p| {
                    let name = p.file_name()?.to_string_lossy().into_owned();
                    let score = strsim::jaro_winkler(&want, &name);
                    (score > 0.8).then(|| (score, p.display().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.truncate(3);
    if found.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = found.into_iter().map(|(_, p)| p).collect();
        format!(" (did you mean {}?)", names.join(" or "))
    }
}
