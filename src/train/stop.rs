//! Stopping a run on SIGINT (Ctrl-C), SIGTERM or SIGHUP (a closed terminal or ssh session)
//! without losing it.
//!
//! After [`install`], the first signal only records itself: the trainer finishes the step
//! in progress, writes a checkpoint and returns [`crate::Error::Interrupted`], whose exit
//! status is 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP) as shells report a process killed by them. A
//! second signal (any of them) ends the process at once with its own status, for a user
//! who does not want to wait for the checkpoint; the atomic checkpoint writer leaves the
//! previous checkpoint intact then, and the next start removes the partial temp file.
//!
//! The handlers are signal-hook's flag actions (async-signal-safe atomic stores and
//! `_exit`); nothing else runs in signal context.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

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
    /// SIGHUP (the terminal or ssh session that started the run went away).
    Hangup,
}

impl StopSignal {
    /// Every signal the trainer stops on.
    pub const ALL: [StopSignal; 3] = [
        StopSignal::Interrupt,
        StopSignal::Terminate,
        StopSignal::Hangup,
    ];

    /// The signal whose [`Self::exit_code`] is `code`.
    pub fn from_exit_code(code: u8) -> Option<StopSignal> {
        Self::ALL.into_iter().find(|s| s.exit_code() == code)
    }

    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Hangup => "SIGHUP",
        }
    }

    /// Exit status of a process stopped by it: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
            StopSignal::Hangup => 129,
        }
    }

    fn number(self) -> i32 {
        match self {
            StopSignal::Interrupt => SIGINT,
            StopSignal::Terminate => SIGTERM,
            StopSignal::Hangup => SIGHUP,
        }
    }
}

/// Install the handlers for SIGINT, SIGTERM and SIGHUP (idempotent). Until this is called,
/// [`requested`] is always `None` and signals keep their default action.
pub fn install() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for sig in StopSignal::ALL {
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
        n => StopSignal::ALL
            .into_iter()
            .find(|s| s.number() as usize == n)
            .or(Some(StopSignal::Terminate)),
    }
}
