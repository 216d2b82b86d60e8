//! The crate's error type: every failure a user can cause maps to a variant whose message
//! says what went wrong and what to do about it.

use thiserror::Error;

/// Errors returned by effnet.
#[derive(Debug, Error)]
pub enum Error {
    /// No usable adapter, or the requested one is missing.
    #[error("{0}")]
    NoAdapter(String),
    /// A wgpu device or validation error (a bug in effnet if it ever reaches a user).
    #[error("GPU error: {0}")]
    Device(String),
    /// A tensor does not fit the adapter's limits.
    #[error("{0}")]
    TooLarge(String),
    /// Shapes that do not match what an op or model expects.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Bad options or configuration.
    #[error("{0}")]
    Config(String),
    /// A missing, unreadable or corrupt file.
    #[error("{path}: {msg}")]
    File {
        /// The offending file.
        path: String,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// A shader failed to compile for this adapter.
    #[error("shader '{shader}' failed to build on this adapter: {msg}")]
    Shader {
        /// Shader path under shaders/.
        shader: String,
        /// The compiler's message.
        msg: String,
    },
    /// Training stopped on SIGINT or SIGTERM (after writing a checkpoint when a step had
    /// been trained); the process exits with `code` (130 or 143, as shells report).
    #[error("{msg}")]
    Interrupted {
        /// Exit status: 128 + the signal number.
        code: u8,
        /// What was saved and how to continue.
        msg: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A file error with its path.
    pub fn file(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }

    /// The process exit status for this error: 128 + the signal number for
    /// [`Error::Interrupted`], 2 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted { code, .. } => *code,
            _ => 2,
        }
    }
}
