//! Stopping a run on SIGINT (Ctrl-C) or SIGTERM without losing it.
//!
//! After [`install`], the first signal only records itself: the trainer finishes the step
//! in progress, writes a checkpoint and returns [`crate::Error::Interrupted`], whose exit
//! status is 130 (SIGINT) or 143 (SIGTERM) as shells report a process killed by them. A
//! second signal (either one) ends the process at once with its own status, for a user
//! who does not want to wait for the checkpoint; the atomic checkpoint writer leaves the
//! previous checkpoint intact then, and the next start removes the partial temp file.
//!
//! The handlers are signal-hook's flag actions (async-signal-safe atomic stores and
//! `_exit`); nothing else runs in signal context.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Error, Result};

/// Set by the first signal: arms the immediate exit of the second.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The signal number received first (0: none).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

/// A termination signal the trainer stops on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, service managers, job schedulers).
    Terminate,
}

impl StopSignal {
    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// Exit status of a process stopped by it: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }

    fn number(self) -> i32 {
        match self {
            StopSignal::Interrupt => SIGINT,
            StopSignal::Terminate => SIGTERM,
        }
    }
}

/// Install the handlers for SIGINT and SIGTERM (idempotent). Until this is called,
/// [`requested`] is always `None` and signals keep their default action.
pub fn install() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for sig in [StopSignal::Interrupt, StopSignal::Terminate] {
            let n = sig.number();
            // Order matters: the exit runs only when an earlier signal armed it.
            signal_hook::flag::register_conditional_shutdown(n, sig.exit_code().into(), &ARMED)
                .and_then(|_| signal_hook::flag::register_usize(n, &RECEIVED, n as usize))
                .and_then(|_| signal_hook::flag::register(n, &ARMED))
                .map_err(|e| format!("cannot install the {} handler: {e}", sig.name()))?;
        }
        Ok(())
    })
    .clone()
    .map_err(Error::Config)
}

/// The first stop signal received since [`install`], if any.
pub fn requested() -> Option<StopSignal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n if n == SIGINT as usize => Some(StopSignal::Interrupt),
        _ => Some(StopSignal::Terminate),
    }
}
