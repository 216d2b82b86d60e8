//! A deadline around each collective: a rank whose peer hangs (a stuck driver, a stopped
//! process, a lost link) would otherwise wait in MPI forever. A thread watches the
//! deadline of the collective in progress and, when it passes, runs the expiry action
//! (for the trainer: print which collective timed out and exit, after which `mpirun`
//! stops the other ranks). Checkpoints are written atomically outside collectives, so the
//! last one stays intact.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What runs when a deadline passes: the collective's name and how long it waited.
pub type OnExpire = Box<dyn Fn(&'static str, Duration) + Send>;

#[derive(Default)]
struct State {
    /// The collective in progress and when it started.
    armed: Option<(&'static str, Instant)>,
    stop: bool,
}

/// The watching thread (stopped when dropped).
pub struct Watchdog {
    shared: Arc<(Mutex<State>, Condvar)>,
    timeout: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Disarms the deadline when dropped (the collective returned).
pub struct Armed<'a>(&'a Watchdog);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let (m, c) = &*self.0.shared;
        m.lock().unwrap_or_else(|e| e.into_inner()).armed = None;
        c.notify_all();
    }
}

impl Watchdog {
    /// Start watching with `timeout` per collective.
    pub fn new(timeout: Duration, on_expire: OnExpire) -> Watchdog {
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("effnet-watchdog".into())
            .spawn(move || {
                let (m, c) = &*s;
                let mut st = m.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if st.stop {
                        return;
                    }
                    match st.armed {
                        None => st = c.wait(st).unwrap_or_else(|e| e.into_inner()),
                        Some((what, since)) => {
                            let waited = since.elapsed();
                            if waited >= timeout {
                                on_expire(what, waited);
                                st.armed = None;
                            } else {
                                st = c
                                    .wait_timeout(st, timeout - waited)
                                    .unwrap_or_else(|e| e.into_inner())
                                    .0;
                            }
                        }
                    }
                }
            })
            .ok();
        Watchdog {
            shared,
            timeout,
            thread,
        }
    }

    /// The deadline per collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Start the deadline of collective `what`; it ends when the guard is dropped.
    pub fn arm(&self, what: &'static str) -> Armed<'_> {
        let (m, c) = &*self.shared;
        m.lock().unwrap_or_else(|e| e.into_inner()).armed = Some((what, Instant::now()));
        c.notify_all();
        Armed(self)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        {
            let (m, c) = &*self.shared;
            m.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            c.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The trainer's expiry action: name the collective and the likely causes, then exit with
/// status 2 (`mpirun` then ends the other ranks).
pub fn exit_on_expiry(rank: usize) -> OnExpire {
    Box::new(move |what, waited| {
        eprintln!(
            "effnet: rank {rank} waited {:.0} s for the other ranks in {what}: a rank hung \
             or died (stopped process, stuck driver, lost link). Stopping; the last \
             checkpoint is intact. Raise --collective-timeout if a rank is legitimately \
             slower (e.g. a long evaluation or checkpoint on rank 0)",
            waited.as_secs_f64()
        );
        std::process::exit(2);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn fires_only_past_the_deadline() {
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let w = Watchdog::new(
            Duration::from_millis(100),
            Box::new(move |what, waited| {
                assert_eq!(what, "slow");
                assert!(waited >= Duration::from_millis(100));
                f.fetch_add(1, Ordering::SeqCst);
            }),
        );
        {
            let _g = w.arm("fast");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            fired.load(Ordering::SeqCst),
            0,
            "a returned collective fired"
        );
        {
            let _g = w.arm("slow");
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    }
}
