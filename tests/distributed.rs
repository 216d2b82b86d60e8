//! Data-parallel training through MPI (`cargo test --release --features mpi --test
//! distributed`; needs `mpirun` from Open MPI, the Fashion-MNIST package and an adapter;
//! CI runs it on lavapipe). Two ranks (oversubscribed) against one process with the same
//! global batch: with the batch-independent norms (GN, LN + Proxy Norm) the loss
//! trajectory and the final parameters agree within f32 reduction tolerance; BatchNorm's
//! per-replica statistics make the two differ, as they must. Then the failures: a batch
//! the world size does not divide, ranks with different flags, a rank without an adapter,
//! a rank that hangs and one that dies.
#![cfg(feature = "mpi")]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use effnet::util::safetensors::SafeTensors;

const EXE: &str = env!("CARGO_BIN_EXE_effnet");

/// A tiny model for a few steps; dropout and drop-connect stay on (their masks must follow
/// the shards).
fn flags(norm: &str, dir: &Path, steps: usize) -> Vec<String> {
    let mut v: Vec<String> = std::iter::once("train")
        .chain(common::TINY_TRAIN)
        .chain([
            "--eval-limit",
            "48",
            "--workers",
            "1",
            "--collective-timeout",
            "60",
            // f32: the exactness checks compare at f32 reduction tolerance. In mixed precision
            // the ranks' f32-level differences in the reduced gradients flip f16 roundings of
            // the next step's activations, so trajectories part at f16 scale (~1e-4).
            "--precision",
            "f32",
            "--norm",
        ])
        .map(String::from)
        .collect();
    v.push(norm.into());
    v.push("--max-steps".into());
    v.push(steps.to_string());
    v.push("--run-dir".into());
    v.push(dir.display().to_string());
    v
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("effnet-dist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `mpirun` with the options a root shell in a container needs, or None (with a note)
/// where it is missing outside CI.
fn mpirun(np: usize) -> Option<Command> {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").is_err(), "CI must install openmpi-bin");
        eprintln!("skipped: no mpirun");
        return None;
    }
    if !Path::new(effnet::data::FASHION_MNIST_DIR).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install dataset-fashion-mnist"
        );
        eprintln!("skipped: no Fashion-MNIST");
        return None;
    }
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string());
    for v in ["EFFNET_ADAPTER", "XDG_RUNTIME_DIR", "WGPU_BACKEND"] {
        if std::env::var(v).is_ok() {
            c.args(["-x", v]);
        }
    }
    Some(c)
}

/// The pids of the ranks `mpirun` (`child`) started, in start order (rank 0 first: mpirun
/// starts them in order).
fn rank_pids(child: &Child) -> Vec<u32> {
    let o = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let mut pids: Vec<u32> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    pids.sort_unstable();
    assert_eq!(pids.len(), 2, "{pids:?}");
    pids
}

/// Two ranks training `gn` for many steps under a 5 s collective deadline, checkpointing
/// every 2 steps, once the first checkpoint exists: (mpirun, run folder).
fn two_ranks_past_a_checkpoint(name: &str) -> Option<(Child, PathBuf)> {
    let mut two = mpirun(2)?;
    let d = tmp(name);
    let mut f = flags("gn", &d, 1000);
    let t = f.iter().position(|x| x == "--collective-timeout").unwrap();
    f[t + 1] = "5".into();
    f.extend(["--checkpoint-every".into(), "2".into()]);
    let child = two
        .arg(EXE)
        .args(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = d.join("checkpoint.safetensors");
    let t0 = Instant::now();
    while !ckpt.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((child, d))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// Largest difference between two checkpoints' weights, relative to the weights' scale.
fn weight_gap(a: &Path, b: &Path) -> f64 {
    let (a, b) = (
        SafeTensors::load(&a.join("checkpoint.safetensors")).unwrap(),
        SafeTensors::load(&b.join("checkpoint.safetensors")).unwrap(),
    );
    let mut gap = 0.0f64;
    for (name, t) in a.tensors.iter().filter(|(n, _)| n.starts_with("w/")) {
        let u = &b.tensors[name];
        for (x, y) in t.data.iter().zip(&u.data) {
            gap = gap.max((x - y).abs() as f64 / (1.0 + x.abs() as f64));
        }
    }
    gap
}

/// One process and two ranks, the same global batch: (losses of one, of two, weight gap).
fn one_vs_two(norm: &str) -> Option<(Vec<f64>, Vec<f64>, f64)> {
    let mut two = mpirun(2)?;
    let (d1, d2) = (tmp(&format!("{norm}-1")), tmp(&format!("{norm}-2")));
    let o = Command::new(EXE)
        .args(flags(norm, &d1, 3))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = two.arg(EXE).args(flags(norm, &d2, 3)).output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("rank 1/2") && t.contains("rank 0/2"), "{t}");
    // Only rank 0 writes: one line per step.
    let r = (losses(&d1), losses(&d2), weight_gap(&d1, &d2));
    assert_eq!(r.0.len(), 3);
    assert_eq!(r.1.len(), 3);
    let _ = (std::fs::remove_dir_all(&d1), std::fs::remove_dir_all(&d2));
    Some(r)
}

#[test]
fn batch_independent_norms_train_the_same_on_two_ranks() {
    for norm in ["ln-pn", "gn"] {
        let Some((one, two, gap)) = one_vs_two(norm) else {
            return;
        };
        for (a, b) in one.iter().zip(&two) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "{norm}: losses {one:?} vs {two:?}"
            );
        }
        // Three AdamW steps from the same start: only the order of the f32 sums differs.
        assert!(gap < 1e-4, "{norm}: weights differ by {gap}");
    }
}

#[test]
fn batchnorm_uses_per_replica_statistics() {
    let Some((one, two, gap)) = one_vs_two("bn") else {
        return;
    };
    // Each rank normalizes its 8 rows by their own mean and variance, not the 16 rows'
    // (PyTorch DDP's default): already the first loss differs, beyond reduction error,
    // but stays of the same size.
    let d = (one[0] - two[0]).abs();
    assert!(d > 1e-4 * one[0], "bn: {one:?} vs {two:?}");
    assert!(d < 0.5 * one[0], "bn: {one:?} vs {two:?}");
    assert!(gap > 1e-5, "bn: weights differ by only {gap}");
}

#[test]
fn bad_worlds_are_refused_at_start() {
    // A world size that does not divide the batch.
    let Some(mut three) = mpirun(3) else {
        return;
    };
    let d = tmp("np3");
    let o = three.arg(EXE).args(flags("gn", &d, 2)).output().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("--batch 16 (the global batch) does not divide among 3 ranks"),
        "{t}"
    );
    assert!(t.contains("--batch 15 or 18"), "{t}");
    // Ranks started with different flags (MPMD: rank 1 gets another learning rate).
    let mut two = mpirun(1).unwrap();
    let mut other = flags("gn", &d, 2);
    let lr = other.iter().position(|f| f == "--lr").unwrap();
    other[lr + 1] = "0.001".into();
    two.arg(EXE)
        .args(flags("gn", &d, 2))
        .args([":", "-np", "1", EXE])
        .args(&other);
    let o = two.output().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("the ranks disagree on the configuration"), "{t}");
    assert!(t.contains("rank 1 ("), "{t}");
    // A rank without an adapter.
    let mut two = mpirun(1).unwrap();
    two.arg(EXE)
        .args(flags("gn", &d, 2))
        .args([":", "-np", "1", "-x", "EFFNET_ADAPTER=no-such-adapter", EXE])
        .args(flags("gn", &d, 2));
    let o = two.output().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("no adapter name contains 'no-such-adapter'"),
        "{t}"
    );
    assert!(t.contains("rank 1 failed choosing an adapter"), "{t}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Two ranks past their first checkpoint, then `signal` to rank 1: the run must fail
/// within 30 s of it (the deadline is 5 s) with the last checkpoint intact. Returns the
/// output, or None where MPI or the data is missing.
fn rank_1_gets(signal: &str, name: &str) -> Option<String> {
    let (child, d) = two_ranks_past_a_checkpoint(name)?;
    let pid = rank_pids(&child)[1].to_string();
    Command::new("kill").args([signal, &pid]).status().unwrap();
    let sent = Instant::now();
    let out = child.wait_with_output().unwrap();
    let waited = sent.elapsed();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(waited < Duration::from_secs(30), "took {waited:?}: {t}");
    SafeTensors::load(&d.join("checkpoint.safetensors")).unwrap();
    // A stopped rank 1 may outlive mpirun.
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    let _ = std::fs::remove_dir_all(&d);
    Some(t)
}

#[test]
fn a_hung_rank_stops_the_run_within_the_timeout() {
    // SIGSTOP: a hang (rank 1 neither exits nor answers); rank 0's deadline stops it.
    let Some(t) = rank_1_gets("-STOP", "hang") else {
        return;
    };
    assert!(t.contains("waited 5 s for the other ranks"), "{t}");
}

#[test]
fn a_rank_that_dies_stops_the_run_within_the_timeout() {
    // SIGKILL: a crash (no handler runs, no message from rank 1). mpirun (Open MPI)
    // notices and ends rank 0 at once, naming the rank and the signal; rank 0's deadline
    // would stop it otherwise.
    let Some(t) = rank_1_gets("-KILL", "die") else {
        return;
    };
    assert!(
        t.contains("process rank 1") && t.contains("exited on signal 9"),
        "{t}"
    );
}

/// A SIGTERM to one rank only stops both at the same step boundary, rank 0 checkpoints,
/// and one process resumes the run (another world size) from that step.
#[test]
fn a_signal_on_one_rank_stops_all_and_another_world_resumes() {
    let Some(mut two) = mpirun(2) else {
        return;
    };
    let d = tmp("sig");
    let child = two
        .arg(EXE)
        .args(flags("gn", &d, 1000))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(d.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    let one = rank_pids(&child)[1].to_string();
    Command::new("kill").args(["-TERM", &one]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("stopped by SIGTERM: checkpoint at step"), "{t}");
    let ckpt = SafeTensors::load(&d.join("checkpoint.safetensors")).unwrap();
    let step: usize = ckpt.metadata["step"].parse().unwrap();
    assert!(step >= 2, "{t}");
    let mut f = flags("gn", &d, step + 2);
    f.extend(["--resume".into(), "--allow-schedule-change".into()]);
    let o = Command::new(EXE).args(&f).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resumed from"), "{}", text(&o));
    assert_eq!(losses(&d).len(), step + 2);
    let _ = std::fs::remove_dir_all(&d);
}
