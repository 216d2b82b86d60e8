//! [`Comm`] over MPI (rsmpi on the system's Open MPI or MPICH), with a [`Watchdog`]
//! deadline around every collective.

use std::cell::Cell;
use std::time::Duration;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use super::watchdog::{self, Watchdog};
use super::Comm;
use crate::error::{Error, Result};

/// The MPI world of a training run.
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    watchdog: Watchdog,
    failed_together: Cell<bool>,
    // Finalizes MPI when dropped (last).
    _universe: Universe,
}

impl MpiComm {
    /// Initialize MPI (once per process) with a `timeout` deadline per collective.
    pub fn init(timeout: Duration) -> Result<MpiComm> {
        // The watchdog thread never calls MPI; only the main thread does.
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::Config("MPI was already initialized in this process".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let local_rank = world.split_shared(rank as i32).rank() as usize;
        Ok(MpiComm {
            watchdog: Watchdog::new(timeout, watchdog::exit_on_expiry(rank)),
            world,
            rank,
            size,
            local_rank,
            failed_together: Cell::new(false),
            _universe: universe,
        })
    }

    /// Rank among the ranks on this host (picks the adapter).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// This host's name as MPI reports it.
    pub fn host(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
    }
}

impl MpiComm {
    /// Wait until every rank has reached this collective, sleeping between polls of a
    /// non-blocking barrier: MPI's own blocking waits spin at full speed, which on an
    /// oversubscribed host (or beside a software adapter's threads) takes the cores the
    /// ranks still computing need. Costs one barrier's latency per collective.
    fn arrive(&self) {
        let mut req = self.world.immediate_barrier();
        let mut nap = Duration::from_micros(20);
        loop {
            match req.test() {
                Ok(_) => return,
                Err(r) => req = r,
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f32(&self, what: &'static str, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let _g = self.watchdog.arm(what);
        self.arrive();
        self.world
            .all_reduce_into(send, recv, SystemOperation::sum());
        Ok(())
    }

    fn sum_f64(&self, what: &'static str, send: &[f64], recv: &mut [f64]) -> Result<()> {
        let _g = self.watchdog.arm(what);
        self.arrive();
        self.world
            .all_reduce_into(send, recv, SystemOperation::sum());
        Ok(())
    }

    fn gather_u64(&self, what: &'static str, v: u64) -> Result<Vec<u64>> {
        let _g = self.watchdog.arm(what);
        self.arrive();
        let mut all = vec![0u64; self.size];
        self.world.all_gather_into(&v, &mut all[..]);
        Ok(all)
    }

    fn broadcast(&self, what: &'static str, buf: &mut [u8]) -> Result<()> {
        let _g = self.watchdog.arm(what);
        self.arrive();
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    fn note_failed_together(&self) {
        self.failed_together.set(true);
    }

    fn failed_together(&self) -> bool {
        self.failed_together.get()
    }
}

impl MpiComm {
    /// End every rank now (`MPI_Abort`): for an error one rank met alone, which would
    /// leave the others waiting in their next collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
