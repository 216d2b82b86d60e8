//! Data-parallel training across processes: the collectives the trainer needs ([`Comm`]),
//! the split of a global batch into per-rank shards ([`Shard`]), and the start-up checks
//! every rank must pass together ([`agree`], [`check_same`]).
//!
//! The transport is MPI (`--features mpi`, [`mpi`]); everything here is written against
//! [`Comm`] so the trainer does not depend on the feature. One process is the trivial
//! world ([`Solo`]). See `docs/distributed.md`.

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod watchdog;

use crate::error::{Error, Result};

/// The collectives data-parallel training uses. Every rank must call the same collectives
/// in the same order with the same lengths (MPI's rule); the trainer keeps its ranks in
/// lockstep so that they do.
pub trait Comm {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum over the ranks of `send` into `recv` (same length), on every rank.
    fn sum_f32(&self, what: &'static str, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Element-wise sum over the ranks of `send` into `recv` (same length), on every rank.
    fn sum_f64(&self, what: &'static str, send: &[f64], recv: &mut [f64]) -> Result<()>;
    /// Every rank's `v`, indexed by rank, on every rank.
    fn gather_u64(&self, what: &'static str, v: u64) -> Result<Vec<u64>>;
    /// Rank 0's `buf` into every rank's `buf` (same length everywhere).
    fn broadcast(&self, what: &'static str, buf: &mut [u8]) -> Result<()>;
    /// Record that every rank is about to fail together ([`agree`] or [`check_same`] found a
    /// failure all ranks know of), so that the error can end this rank normally instead of
    /// aborting the world (an abort races the other ranks' own messages).
    fn note_failed_together(&self) {}
    /// Whether [`Comm::note_failed_together`] was called.
    fn failed_together(&self) -> bool {
        false
    }
}

/// The world size an MPI launcher (`mpirun`, `mpiexec`, `srun`) announces in this
/// process's environment (Open MPI, MPICH/Hydra, PMIx), if any. Read without MPI, so that
/// a build without the `mpi` feature can refuse to run as K independent copies.
pub fn launcher_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// The world of one process: every collective is the identity.
pub struct Solo;

impl Comm for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &'static str, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn sum_f64(&self, _: &'static str, send: &[f64], recv: &mut [f64]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn gather_u64(&self, _: &'static str, v: u64) -> Result<Vec<u64>> {
        Ok(vec![v])
    }
    fn broadcast(&self, _: &'static str, _: &mut [u8]) -> Result<()> {
        Ok(())
    }
}

/// The rows of every global batch one rank reads: `len` rows starting at `offset` of a
/// batch of `global` rows (rank r of K: offset r * global / K).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// First row of the global batch.
    pub offset: usize,
    /// Rows this rank reads (its model's batch).
    pub len: usize,
    /// Rows of the global batch.
    pub global: usize,
}

impl Shard {
    /// The whole batch (one process).
    pub fn whole(batch: usize) -> Shard {
        Shard {
            offset: 0,
            len: batch,
            global: batch,
        }
    }

    /// Rank `rank`'s shard of a global batch of `global` split over `size` ranks; the
    /// world size must divide the batch, so that every rank's model has the same shape.
    pub fn of(global: usize, rank: usize, size: usize) -> Result<Shard> {
        if size == 0 || rank >= size {
            return Err(Error::Config(format!("rank {rank} of a world of {size}")));
        }
        if !global.is_multiple_of(size) {
            let lo = global / size * size;
            let near = if lo == 0 {
                size.to_string()
            } else {
                format!("{lo} or {}", lo + size)
            };
            return Err(Error::Config(format!(
                "--batch {global} (the global batch) does not divide among {size} ranks: every \
                 rank trains an equal share. Use --batch {near}, or another number of ranks \
                 (mpirun -np)"
            )));
        }
        let len = global / size;
        Ok(Shard {
            offset: rank * len,
            len,
            global,
        })
    }
}

/// Make every rank agree on the outcome of a step that may fail on some of them (opening
/// the run folder, choosing an adapter, loading a checkpoint): a rank whose `local` is an
/// error returns it; the others return an error naming the ranks that failed (whose own
/// messages they print), instead of waiting for them in the next collective.
pub fn agree<T>(comm: &dyn Comm, what: &'static str, local: Result<T>) -> Result<T> {
    let flags = comm.gather_u64(what, local.is_err() as u64)?;
    let failed: Vec<String> = flags
        .iter()
        .enumerate()
        .filter(|(_, &f)| f != 0)
        .map(|(r, _)| r.to_string())
        .collect();
    if !failed.is_empty() {
        comm.note_failed_together();
    }
    match local {
        Err(e) => Err(e),
        Ok(_) if !failed.is_empty() => Err(Error::Config(format!(
            "rank {} failed {what} (its message names the cause); rank {} stops with it",
            failed.join(", "),
            comm.rank()
        ))),
        Ok(v) => Ok(v),
    }
}

/// Check that every rank computed the same `hash` of `what` (the binary, the
/// configuration, the parameters), naming the ranks that differ from rank 0.
pub fn check_same(comm: &dyn Comm, what: &'static str, fix: &str, hash: u64) -> Result<()> {
    let all = comm.gather_u64(what, hash)?;
    let differ: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, &h)| h != all[0])
        .map(|(r, h)| format!("rank {r} ({h:016x})"))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    comm.note_failed_together();
    Err(Error::Config(format!(
        "the ranks disagree on {what}: rank 0 has {:016x}, {} differ. {fix}",
        all[0],
        differ.join(", ")
    )))
}

/// A 64-bit FNV-1a hash of bytes (for comparing ranks' copies: collisions need only be
/// unlikely, not hard to forge).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Sum `data` over the ranks in place, in buckets of at most `bucket` elements (bounding
/// the host staging buffer and each message).
pub fn sum_in_buckets(
    comm: &dyn Comm,
    what: &'static str,
    data: &mut [f32],
    bucket: usize,
) -> Result<()> {
    let mut recv = vec![0.0f32; bucket.min(data.len())];
    for part in data.chunks_mut(bucket.max(1)) {
        let r = &mut recv[..part.len()];
        comm.sum_f32(what, part, r)?;
        part.copy_from_slice(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_global_batch() {
        let s: Vec<Shard> = (0..4).map(|r| Shard::of(128, r, 4).unwrap()).collect();
        assert_eq!(s[0].offset, 0);
        assert_eq!(s[3].offset + s[3].len, 128);
        assert!(s.iter().all(|x| x.len == 32 && x.global == 128));
        let e = Shard::of(100, 0, 3).unwrap_err().to_string();
        assert!(
            e.contains("--batch 99 or 102") && e.contains("mpirun -np"),
            "{e}"
        );
        let e = Shard::of(2, 0, 3).unwrap_err().to_string();
        assert!(e.contains("Use --batch 3,"), "{e}");
    }

    #[test]
    fn solo_world_is_the_identity() {
        let mut v = [1.0f32, 2.0, 3.0];
        sum_in_buckets(&Solo, "t", &mut v, 2).unwrap();
        assert_eq!(v, [1.0, 2.0, 3.0]);
        assert!(check_same(&Solo, "t", "", 7).is_ok());
        assert!(agree(&Solo, "t", Ok(3)).is_ok());
    }
}
