//! Files of a moments run: `moments.csv` (per row: mean, std, 16th and 84th percentiles
//! over simulations of every statistic), `summary.json` (configuration and fits) and PNG
//! figures laid out like the paper's (mean line, 16-84 percentile band).

use std::path::{Path, PathBuf};

use super::analysis::{col, z_loc, NetFits, Table};
use super::nets::{Loc, NetConfig};
use crate::error::{Error, Result};
use crate::util::plot::{save_png, Chart, Series};

/// A series of column `name` (mean line with its 16-84 percentile band).
pub fn series(table: &Table, name: &str, label: &str) -> Series {
    let mut s = Series::new(label, Vec::new());
    if let Some(c) = table.get(name) {
        for (x, v) in table.x.iter().zip(c) {
            s.points.push((*x, v.mean));
            s.band.push((*x, v.p16, v.p84));
        }
    }
    s
}

fn chart(title: &str, x_label: &str, log_y: bool, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: x_label.into(),
        log_y,
        log_x: false,
        series,
    }
}

/// Write `text` to `dir/name`, creating `dir`.
pub fn write_text(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| Error::file(&p, format!("cannot write: {e}")))?;
    Ok(p)
}

/// The charts of a paper-network run: `(file name, panels)`.
pub fn net_charts(cfg: &NetConfig, table: &Table, fits: &NetFits) -> Vec<(String, Vec<Chart>)> {
    let net = cfg.net;
    let xl = if net.residual() { "UNIT L" } else { "DEPTH L" };
    let step = if net.normalized() { "NORM" } else { "CONV" };
    let res = net.residual();
    let sup = if res { "^(L,1)" } else { "^L" };
    let increments = chart(
        &format!("{} INCREMENTS", net.name().to_uppercase()),
        xl,
        false,
        vec![
            series(table, "dchi_norm", &format!("D_{step} CHI{sup}")),
            series(
                table,
                "dchi_act",
                &format!("D_{} CHI{sup}", if res { "PHI+CONV" } else { "PHI" }),
            ),
            series(table, "dchi", &format!("D CHI{sup}")),
        ],
    );
    let mut chi_series = vec![series(table, "chi", "CHI^L")];
    if let (Some(tau), Some(c)) = (fits.tau, fits.power_law_c) {
        chi_series.push(Series::new(
            format!("{c:.2} L^{tau:.3}"),
            table.x.iter().map(|&l| (l, c * l.powf(tau))).collect(),
        ));
    }
    let chi = chart("NORMALIZED SENSITIVITY", xl, true, chi_series);
    let reff = chart(
        "EFFECTIVE RANKS",
        xl,
        true,
        vec![
            series(table, "reff_dx", "REFF(DX)"),
            series(table, "reff_x", "REFF(X)"),
        ],
    );
    let zl = z_loc(net);
    let zname = if net.normalized() { "Z" } else { "Y" };
    let moments = chart(
        "PRE-ACTIVATION MOMENTS",
        xl,
        true,
        vec![
            series(table, &col("mu4", zl), &format!("MU4({zname})")),
            series(table, &col("nu1", zl), &format!("NU1(|{zname}|)")),
        ],
    );
    let mut power_series = vec![
        series(table, &col("share_ch", Loc::Conv), "CHANNEL CONST (CONV)"),
        series(
            table,
            &col("share_inst", Loc::Conv),
            "INSTANCE CONST (CONV)",
        ),
    ];
    if net.normalized() {
        power_series.push(series(
            table,
            &col("share_ch", Loc::Norm),
            "CHANNEL CONST (NORM)",
        ));
    }
    let power = chart("SHARE OF POWER", xl, false, power_series);
    let diffusion = chart(
        "LOG-NORMAL DIFFUSION",
        xl,
        false,
        vec![
            series(table, "log_nu2_x", "LN NU2(X^L/X^0)"),
            series(table, "log_nu2_dx", "LN NU2(DX^L/DX^0)"),
        ],
    );
    let figure = if net == super::nets::Net::Vanilla {
        vec![increments.clone(), reff.clone(), diffusion.clone()]
    } else {
        vec![
            increments.clone(),
            chi.clone(),
            reff.clone(),
            moments.clone(),
        ]
    };
    vec![
        ("figure.png".into(), figure),
        ("chi.png".into(), vec![chi]),
        ("increments.png".into(), vec![increments]),
        ("reff.png".into(), vec![reff]),
        ("moments.png".into(), vec![moments]),
        ("power.png".into(), vec![power]),
        ("diffusion.png".into(), vec![diffusion]),
    ]
}

/// Write every file of a paper-network run into `dir`; returns the paths written.
pub fn write_net(
    dir: &Path,
    cfg: &NetConfig,
    table: &Table,
    fits: &NetFits,
) -> Result<Vec<PathBuf>> {
    let mut out = vec![write_text(dir, "moments.csv", &table.to_csv())?];
    let summary = serde_json::json!({ "config": cfg, "fits": fits });
    out.push(write_text(
        dir,
        "summary.json",
        &serde_json::to_string_pretty(&summary).expect("serializable"),
    )?);
    for (name, charts) in net_charts(cfg, table, fits) {
        let p = dir.join(&name);
        save_png(&p, &charts)?;
        out.push(p);
    }
    Ok(out)
}

/// A series of column `name` restricted to the EfficientNet taps of `kind`.
pub fn series_of_kind(
    table: &Table,
    taps: &[super::effnet::Tap],
    kind: &str,
    name: &str,
    label: &str,
) -> Series {
    let mut s = Series::new(label, Vec::new());
    if let Some(c) = table.get(name) {
        for ((x, v), t) in table.x.iter().zip(c).zip(taps) {
            if t.kind == kind {
                s.points.push((*x, v.mean));
                s.band.push((*x, v.p16, v.p84));
            }
        }
    }
    s
}

/// The charts of an EfficientNet run: `(file name, panels)`.
pub fn effnet_charts(
    title: &str,
    table: &Table,
    taps: &[super::effnet::Tap],
) -> Vec<(String, Vec<Chart>)> {
    let k = |kind: &str, name: &str, label: &str| series_of_kind(table, taps, kind, name, label);
    let xl = "LAYER (GRAPH ORDER)";
    let chi = chart(
        &format!("{title}: CHI"),
        xl,
        true,
        vec![
            k("norm", "chi", "CHI AT NORM+ACT"),
            k("conv", "chi", "CHI AT CONV"),
        ],
    );
    let collapse = chart(
        &format!("{title}: SHARE OF POWER"),
        xl,
        false,
        vec![
            k("conv", "share_ch", "CHANNEL CONST (CONV)"),
            k("norm", "share_ch", "CHANNEL CONST (NORM)"),
            k("conv", "share_inst", "INSTANCE CONST (CONV)"),
        ],
    );
    let reff = chart(
        &format!("{title}: EFFECTIVE RANKS"),
        xl,
        true,
        vec![
            k("norm", "reff_dx", "REFF(DX)"),
            k("norm", "reff_x", "REFF(X)"),
        ],
    );
    let moments = chart(
        &format!("{title}: MOMENTS"),
        xl,
        true,
        vec![
            k("conv", "kurt", "KURTOSIS (CONV)"),
            k("norm", "nu1", "NU1(|X|) (NORM)"),
        ],
    );
    vec![
        (
            "figure.png".into(),
            vec![chi.clone(), collapse.clone(), reff.clone(), moments.clone()],
        ),
        ("chi.png".into(), vec![chi]),
        ("collapse.png".into(), vec![collapse]),
        ("reff.png".into(), vec![reff]),
        ("moments.png".into(), vec![moments]),
    ]
}

/// Write every file of an EfficientNet run into `dir`; returns the paths written.
pub fn write_effnet(
    dir: &Path,
    cfg: &super::effnet::EffnetConfig,
    run: &super::effnet::EffnetRun,
) -> Result<Vec<PathBuf>> {
    let mut out = vec![write_text(dir, "moments.csv", &run.table.to_csv())?];
    let summary = serde_json::json!({
        "config": cfg,
        "collapse": run.collapse,
        "layers": run.taps,
    });
    out.push(write_text(
        dir,
        "summary.json",
        &serde_json::to_string_pretty(&summary).expect("serializable"),
    )?);
    let title = format!("{} {}", cfg.preset, cfg.norm.name()).to_uppercase();
    for (name, charts) in effnet_charts(&title, &run.table, &run.taps) {
        let p = dir.join(&name);
        save_png(&p, &charts)?;
        out.push(p);
    }
    Ok(out)
}
