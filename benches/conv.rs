//! Criterion benches of the grouped-convolution family on the adapter at hand
//! (`EFFNET_ADAPTER` picks it), at batch 1 so lavapipe finishes: the depthwise (direct)
//! and G16 (implicit GEMM) kernels at two B0 layer shapes each, and two 1x1 GEMMs, each
//! forward and backward. These are the selftest's cases prepared at these shapes, the
//! same code `effnet bench conv` runs. Criterion's throughput is in FLOPs (multiply-add =
//! 2) as the launchers declare them, so its "elem/s" reads as FLOP/s; a table with
//! GFLOP/s, GB/s and the adapter's ceilings, from GPU timestamps, is printed first.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use effnet::bench::conv::{grouped, pointwise};
use effnet::bench::{cases::time_case, peak, print_table};
use effnet::gpu::Recorder;
use effnet::ops::conv::ConvCase;
use effnet::ops::linear::LinearCase;
use effnet::ops::{HostTensor, OpCase};
use effnet::util::Rng;
use effnet::{Gpu, GpuOptions};
use std::time::Duration;

fn cases() -> Vec<(String, Box<dyn OpCase>)> {
    let conv = |shape, per_group| {
        let spec = grouped(1, shape, per_group);
        (
            spec.label(),
            Box::new(ConvCase::new(spec)) as Box<dyn OpCase>,
        )
    };
    let lin = |shape: (usize, usize, usize)| {
        let (h, cin, cout) = shape;
        (
            format!("conv1x1 {cin}->{cout} @{h}x{h}"),
            Box::new(LinearCase::new(pointwise(1, shape))) as Box<dyn OpCase>,
        )
    };
    vec![
        conv((96, 112, 3, 2), 1),
        conv((240, 28, 5, 1), 1),
        conv((64, 112, 3, 2), 16),
        conv((160, 28, 5, 1), 16),
        lin((112, 16, 96)),
        lin((7, 192, 1152)),
    ]
}

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("a GPU adapter");
    let peak = peak::get(&gpu, false).expect("peak");
    let mut rows = Vec::new();
    for (name, case) in cases() {
        rows.extend(
            time_case(&gpu, case.as_ref(), Some(name), 1, 3)
                .unwrap()
                .rows(),
        );
    }
    println!(
        "conv family on {} (batch 1, GPU timestamps where available):",
        gpu.info.name
    );
    print_table(&rows, Some(&peak));

    let mut g = c.benchmark_group("conv");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, case) in cases() {
        let mut rng = Rng::new(1);
        let inputs: Vec<HostTensor> = case
            .inputs(&mut rng)
            .into_iter()
            .map(|i| i.tensor)
            .collect();
        let dy: Vec<HostTensor> = case
            .output_shapes(&inputs)
            .iter()
            .map(|s| HostTensor::randn(s, 1.0, &mut rng))
            .collect();
        let p = case.prepare(&gpu, &inputs, Some(&dy)).unwrap();
        let name = name.replace(' ', "_");
        for (pass, backward) in [("fwd", false), ("bwd", true)] {
            let mut rec = Recorder::new(&gpu);
            if backward {
                p.record_backward(&mut rec).unwrap();
            } else {
                p.record_forward(&mut rec).unwrap();
            }
            g.throughput(Throughput::Elements(rec.total_cost().flops as u64));
            drop(rec);
            g.bench_function(format!("{name}/{pass}"), |b| {
                b.iter(|| {
                    let mut r = Recorder::new(&gpu);
                    if backward {
                        p.record_backward(&mut r).unwrap();
                    } else {
                        p.record_forward(&mut r).unwrap();
                    }
                    r.submit().unwrap().wait(&gpu).unwrap();
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
