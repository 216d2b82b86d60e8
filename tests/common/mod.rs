//! Shared test helpers: one device per test binary, on the adapter picked by
//! `EFFNET_ADAPTER` / `WGPU_BACKEND` (CI pins lavapipe).
#![allow(dead_code)]

use std::sync::OnceLock;

use effnet::{Gpu, GpuOptions};

/// The tiny training run of the end-to-end tests (`effnet train` flags): G16-B0 at width
/// and depth 0.25 on 16 px images, batch 16, a constant learning rate of 0.003 without
/// warm-up, the loss logged every step, evaluation only at the end. Each test adds its
/// evaluation size, precision and the rest.
pub const TINY_TRAIN: [&str; 20] = [
    "--model",
    "b0-g16",
    "--width",
    "0.25",
    "--depth",
    "0.25",
    "--image-size",
    "16",
    "--batch",
    "16",
    "--lr",
    "0.003",
    "--warmup-epochs",
    "0",
    "--schedule",
    "constant",
    "--log-every",
    "1",
    "--eval-every",
    "0",
];

/// The shared device.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new(&GpuOptions::from_env()) {
        Ok(g) => g,
        Err(e) => panic!("tests need a GPU adapter: {e}"),
    })
}

/// Assert every check of the cases whose names contain `filter` passes. The f16-storage
/// cases (names ending `/f16`) run only for a filter naming `/f16` (`ops_basic`
/// `f16_storage_variants`), so each runs once per `cargo test`.
pub fn assert_cases_pass(filter: &str) {
    let gpu = gpu();
    let mut n = 0;
    let mut failures = Vec::new();
    for case in effnet::ops::cases() {
        let name = case.name();
        if !name.contains(filter) || (name.ends_with("/f16") && !filter.contains("/f16")) {
            continue;
        }
        for r in effnet::ops::check(gpu, case.as_ref(), effnet::selftest::SEED).expect("gpu run") {
            n += 1;
            if !r.pass {
                failures.push(effnet::selftest::format_line(&r));
            }
        }
    }
    assert!(n > 0, "no case matches {filter}");
    assert!(
        failures.is_empty(),
        "failed checks:\n{}",
        failures.join("\n")
    );
}
