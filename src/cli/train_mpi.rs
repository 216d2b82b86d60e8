//! `mpirun -np K effnet train ...`: one rank of a data-parallel run over MPI (a build with
//! `--features mpi`; see `docs/distributed.md`). Each rank takes an adapter by its rank on
//! the host (or the one `--adapter` names), and all ranks then run
//! [`super::train::run_ranked`] together.

use super::train::TrainArgs;
use crate::error::Result;
use crate::gpu::GpuOptions;

/// Train as one rank of the MPI world this process was launched into.
#[cfg(feature = "mpi")]
pub fn run(opts: &GpuOptions, a: &TrainArgs) -> Result<()> {
    use crate::dist::mpi::MpiComm;
    use crate::dist::{agree, Comm};
    use crate::error::Error;
    use crate::gpu::Gpu;

    if !(a.collective_timeout.is_finite() && a.collective_timeout > 0.0) {
        return Err(Error::Config(format!(
            "--collective-timeout {}: must be a finite number of seconds > 0",
            a.collective_timeout
        )));
    }
    let comm = MpiComm::init(std::time::Duration::from_secs_f64(a.collective_timeout))?;
    let (rank, ranks) = (comm.rank(), comm.size());
    let gpu = Gpu::new_nth(opts, comm.local_rank());
    if let Ok(g) = &gpu {
        println!(
            "rank {rank}/{ranks}: pid {} on {} (local rank {}), adapter {} ({:?})",
            std::process::id(),
            comm.host(),
            comm.local_rank(),
            g.info.name,
            g.info.backend
        );
    }
    let r = agree(&comm, "choosing an adapter", gpu)
        .and_then(|gpu| super::train::run_ranked(&gpu, a, &comm).map(|_| ()));
    match r {
        // Every rank stops at the same step on a signal, and fails together where they
        // agree; finalizing then lets rank 0 finish its checkpoint.
        Ok(()) => Ok(()),
        Err(e @ Error::Interrupted { .. }) => Err(e),
        // Every rank knows of this failure and stops with its own message; an abort here
        // would kill the ranks still printing theirs.
        Err(e) if comm.failed_together() => Err(Error::Config(format!("rank {rank}/{ranks}: {e}"))),
        Err(e) => {
            // An error may be this rank's alone: end the others rather than leave them
            // waiting for it (checkpoints are atomic, so the last one stays intact).
            eprintln!("effnet: rank {rank}/{ranks}: {e}");
            comm.abort(e.exit_code().into())
        }
    }
}

/// Without the `mpi` feature: refuse, rather than train K independent copies.
#[cfg(not(feature = "mpi"))]
pub fn run(_: &GpuOptions, _: &TrainArgs) -> Result<()> {
    Err(crate::error::Error::Config(
        "this process was started by an MPI launcher (mpirun) as one of several ranks, \
         but this effnet was built without MPI, so each rank would train alone. Build \
         with `cargo build --release --features mpi` (needs libopenmpi-dev or \
         libmpich-dev, and libclang-dev), or run effnet without mpirun"
            .into(),
    ))
}
