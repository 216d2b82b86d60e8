//! Architecture arithmetic: pinned parameter and MAC counts (SPEC §A, §B.1).
use effnet::models::config::{round_filters, round_repeats};
use effnet::models::{totals, ImageSize, ModelConfig};

fn within(x: usize, want: f64, rel: f64) -> bool {
    ((x as f64 - want) / want).abs() <= rel
}

#[test]
fn b0_params_and_macs() {
    let cfg = ModelConfig::preset("b0").unwrap();
    let (p, m) = totals(&cfg, 224);
    assert!(within(p, 5.29e6, 0.01), "B0 params {p}");
    assert!(within(m, 0.386e9, 0.01), "B0 MACs {m}");
}

#[test]
fn g16_b0_params_and_macs() {
    let cfg = ModelConfig::preset("b0-g16").unwrap();
    let (p, m) = totals(&cfg, 224);
    assert!(within(p, 5.91e6, 0.01), "G16-B0 params {p}");
    assert!(within(m, 0.635e9, 0.01), "G16-B0 MACs {m}");
    // Half resolution (160 px) training cost.
    let (_, m160) = totals(&cfg, 160);
    assert!(within(m160, 0.325e9, 0.02), "G16-B0 @160 MACs {m160}");
}

#[test]
fn scaled_presets_match_spec() {
    for (name, p, m) in [
        ("b1", 7.79e6, 0.687e9),
        ("b2", 9.11e6, 0.994e9),
        ("b3", 12.23e6, 1.83e9),
        ("b4", 19.34e6, 4.39e9),
        ("b5", 30.39e6, 10.27e9),
    ] {
        let cfg = ModelConfig::preset(name).unwrap();
        let (pp, mm) = totals(&cfg, cfg.resolution);
        assert!(within(pp, p, 0.01), "{name} params {pp}");
        assert!(within(mm, m, 0.015), "{name} MACs {mm}");
    }
}

#[test]
fn rounding_rules() {
    assert_eq!(round_filters(32, 1.0), 32);
    assert_eq!(round_filters(40, 1.1), 48);
    assert_eq!(round_filters(1280, 1.1), 1408);
    assert_eq!(round_filters(16, 1.2), 24);
    assert_eq!(round_repeats(3, 1.1), 4);
    assert_eq!(round_repeats(1, 1.0), 1);
    let b3 = ModelConfig::preset("b3-g16").unwrap();
    // Stage-1 DS block on a 40-channel stem: 2 groups of 20 channels.
    let first = &b3.blocks()[0];
    assert_eq!((first.mid, first.groups), (40, 2));
}

#[test]
fn bad_presets_are_refused() {
    assert!(ModelConfig::preset("b8").is_err());
    assert!(ModelConfig::preset("resnet50").is_err());
}

/// JSON (checkpoints' training configurations): a square size stays one integer, as in
/// checkpoints from before non-square sizes; `{"h", "w"}` and `"HxW"` read back too.
#[test]
fn image_sizes_in_json_read_old_and_new_forms() {
    let sq = ImageSize::square(32);
    let rect = ImageSize::new(24, 40);
    assert_eq!(serde_json::to_string(&sq).unwrap(), "32");
    assert_eq!(serde_json::to_string(&rect).unwrap(), r#"{"h":24,"w":40}"#);
    for (json, want) in [
        ("32", sq),
        (r#"{"h":24,"w":40}"#, rect),
        (r#""24x40""#, rect),
        (r#""32""#, sq),
    ] {
        assert_eq!(
            serde_json::from_str::<ImageSize>(json).unwrap(),
            want,
            "{json}"
        );
    }
    for bad in ["-3", "2.5", r#"{"h":24}"#, r#""0x5""#, "null"] {
        assert!(serde_json::from_str::<ImageSize>(bad).is_err(), "{bad}");
    }
}

/// `N` and `HxW` parse; everything else is refused with the accepted forms.
#[test]
fn image_sizes_parse_and_print() {
    for (text, h, w, shown) in [
        ("224", 224, 224, "224"),
        ("24x40", 24, 40, "24x40"),
        ("40X24", 40, 24, "40x24"),
        (" 16 x 16 ", 16, 16, "16"),
    ] {
        let s: ImageSize = text.parse().unwrap();
        assert_eq!((s.h, s.w), (h, w), "{text}");
        assert_eq!(s.to_string(), shown);
        assert_eq!(shown.parse::<ImageSize>().unwrap(), s);
    }
    for bad in [
        "",
        "x",
        "0",
        "24x0",
        "0x24",
        "24x",
        "x40",
        "-3",
        "24x40x8",
        "2.5",
        "24*40",
        "+24",
        "99999999999999999999999",
    ] {
        let e = bad.parse::<ImageSize>().unwrap_err().to_string();
        assert!(e.contains("is not N or HxW"), "{bad:?}: {e}");
    }
    assert!(ImageSize::new(8, 40).check_min().is_ok());
    let e = ImageSize::new(7, 40).check_min().unwrap_err().to_string();
    assert!(e.contains("7x40 is too small"), "{e}");
    assert_eq!(ImageSize::new(25, 40).strided(2), ImageSize::new(13, 20));
}
