//! The roofline's ceilings: the peak probes compute what they claim (the copy copies, the
//! FMA chains match an f64 reference), the cache round-trips and survives a corrupt file,
//! and the floor is the larger of the two bounds. Speed itself is never asserted.
mod common;

use effnet::bench::peak::{self, Peak};
use effnet::bench::{cases::time_case, BenchRow};
use effnet::gpu::{Cost, Recorder};
use effnet::ops::conv::{ConvCase, ConvSpec, Padding};

#[test]
fn copy_probe_copies() {
    let gpu = common::gpu();
    let n4 = 3000;
    let v: Vec<f32> = (0..4 * n4).map(|i| i as f32 * 0.5 - 7.0).collect();
    let src = gpu.upload(&v, &[4 * n4]).unwrap();
    let dst = gpu.zeros(&[4 * n4 + 8]).unwrap();
    let mut rec = Recorder::new(gpu);
    peak::copy(&mut rec, &src, &dst, n4).unwrap();
    let cost = rec.total_cost();
    rec.submit().unwrap().wait(gpu).unwrap();
    let out = gpu.read(&dst).unwrap();
    assert_eq!(&out[..4 * n4], &v[..]);
    assert!(out[4 * n4..].iter().all(|&x| x == 0.0), "wrote past n");
    assert_eq!(cost.bytes, 2.0 * 16.0 * n4 as f64);
    // A copy larger than its tensors is refused.
    let mut rec = Recorder::new(gpu);
    assert!(peak::copy(&mut rec, &src, &dst, n4 + 3).is_err());
}

#[test]
fn fma_probe_matches_its_reference() {
    let gpu = common::gpu();
    let (n, iters) = (700, 300);
    let out = gpu.zeros(&[n]).unwrap();
    let mut rec = Recorder::new(gpu);
    peak::fma(&mut rec, &out, iters).unwrap();
    let cost = rec.total_cost();
    rec.submit().unwrap().wait(gpu).unwrap();
    let got = gpu.read(&out).unwrap();
    for (i, g) in got.iter().enumerate() {
        let want = peak::fma_ref(i, iters);
        assert!(
            ((*g as f64) - want).abs() <= 1e-5 * want.abs().max(1.0),
            "thread {i}: {g} vs {want}"
        );
    }
    assert_eq!(cost.flops, 2.0 * (peak::FMA_CHAINS * iters * n) as f64);
}

fn sample(key: &str) -> Peak {
    Peak {
        key: key.into(),
        copy_gbps: 100.0,
        fma_gflops: 1000.0,
        copy_bytes: 1e9,
        measured_at: 1,
    }
}

#[test]
fn cache_round_trips_and_survives_corruption() {
    let gpu = common::gpu();
    let dir = std::env::temp_dir().join(format!("effnet-peak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("effnet").join("peak.json");
    // Nothing cached yet.
    assert!(peak::cached(gpu, &path).is_none());
    let mine = Peak {
        key: peak::cache_key(gpu),
        ..sample("")
    };
    peak::store(&path, &sample("another adapter")).unwrap();
    peak::store(&path, &mine).unwrap();
    assert_eq!(peak::cached(gpu, &path), Some(mine.clone()));
    // Storing again replaces this adapter's entry and keeps the other one.
    let newer = Peak {
        copy_gbps: 200.0,
        ..mine.clone()
    };
    peak::store(&path, &newer).unwrap();
    assert_eq!(peak::cached(gpu, &path), Some(newer.clone()));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("another adapter"));
    assert_eq!(text.matches(&peak::cache_key(gpu)).count(), 1);
    // A corrupt file reads as no entry (with a warning), and the next store replaces it.
    std::fs::write(&path, b"{\"entries\": [{\"key\": 3").unwrap();
    assert!(peak::cached(gpu, &path).is_none());
    peak::store(&path, &mine).unwrap();
    assert_eq!(peak::cached(gpu, &path), Some(mine));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn roofline_floor_is_the_larger_bound() {
    let p = sample("x");
    // 1 GFLOP at 1000 GFLOP/s: 1 ms; 10 MB at 100 GB/s: 0.1 ms.
    let compute = Cost {
        flops: 1e9,
        bytes: 1e7,
    };
    assert!((p.floor_ms(compute) - 1.0).abs() < 1e-12);
    let memory = Cost {
        flops: 1e6,
        bytes: 1e9,
    };
    assert!((p.floor_ms(memory) - 10.0).abs() < 1e-12);
    let row = BenchRow::new("r", 4.0, compute);
    assert!((row.roofline(&p) - 0.25).abs() < 1e-12);
    // A row of several dispatches: each runs at its own bound, so its floor is the sum of
    // theirs (11 ms), not the floor of the summed work (about 10 ms).
    let both = BenchRow::summed("r", 22.0, vec![compute, memory]);
    assert_eq!(both.cost(), compute.plus(memory));
    assert!((both.floor_ms(&p) - 11.0).abs() < 1e-12);
    assert!((both.roofline(&p) - 0.5).abs() < 1e-12);
}

#[test]
fn a_case_times_each_kernel_with_its_declared_cost() {
    // A G16 conv with a split weight gradient: forward one kernel, backward three.
    let gpu = common::gpu();
    let spec = ConvSpec {
        n: 2,
        h: 21,
        w: 19,
        cin: 32,
        cout: 32,
        k: 3,
        stride: 1,
        groups: 2,
        bias: false,
        padding: Padding::Symmetric,
    };
    let t = time_case(gpu, &ConvCase::new(spec), None, 1, 1).unwrap();
    assert_eq!(t.forward.cost, spec.forward_cost());
    assert!((t.forward.cost.flops - 2.0 * spec.macs() as f64).abs() < 1.0);
    if gpu.features.timestamp_query {
        let labels: Vec<_> = t.backward.kernels.iter().map(|k| k.label).collect();
        assert_eq!(
            labels,
            [
                "conv_backward_data_igemm",
                "conv_backward_weight_igemm",
                "conv_backward_weight_reduce"
            ]
        );
        let rows = t.rows();
        assert!(rows
            .iter()
            .any(|r| r.name.ends_with("bwd conv_backward_weight_reduce")));
        assert!(rows.last().unwrap().name.ends_with("fwd+bwd"));
    }
}
