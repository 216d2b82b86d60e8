//! PNG charts render and encode.
use effnet::util::plot::{save_png, Chart, Series};

#[test]
fn renders_two_panels() {
    let dir = std::env::temp_dir().join(format!("effnet-plot-{}", std::process::id()));
    let path = dir.join("curves.png");
    let loss = Series::new(
        "train loss",
        (0..50)
            .map(|i| (i as f64, 2.3 * (-(i as f64) / 20.0).exp()))
            .collect(),
    );
    let mut chi = Series::new(
        "chi",
        (1..100).map(|i| (i as f64, 1.17f64.powi(i))).collect(),
    );
    chi.band = (1..100)
        .map(|i| (i as f64, 0.8 * 1.17f64.powi(i), 1.2 * 1.17f64.powi(i)))
        .collect();
    save_png(
        &path,
        &[
            Chart {
                title: "LOSS".into(),
                x_label: "step".into(),
                series: vec![loss],
                ..Default::default()
            },
            Chart {
                title: "CHI".into(),
                x_label: "depth".into(),
                log_y: true,
                series: vec![chi],
                ..Default::default()
            },
        ],
    )
    .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1040, 380));
    // Something other than white was drawn in both panels.
    let inked = |x0: u32| {
        (x0..x0 + 520).any(|x| (40..300).any(|y| img.get_pixel(x, y).0 != [255, 255, 255]))
    };
    assert!(inked(0) && inked(520));
}
