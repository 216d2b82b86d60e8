//! `effnet reproduce moments`: paper 3's measurements (SPEC §D) and paper 2's LayerNorm
//! collapse (SPEC §C.3) on the paper's random networks, each beside the value of the
//! reference code's published result files (alabatie/moments-dnns v2.0.0, `npz/*.npz`:
//! means over its 200 simulations; CIFAR-10 inputs) where one exists. Every experiment
//! writes its own `effnet moments` folder (CSV, summary, figures); the comparison goes
//! to `moments.md`, `moments.json` and `moments.png`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::report::{fmt_sig, Report};
use super::Scale;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::moments::analysis::col;
use crate::moments::{self, output, InputSource, Loc, Net, NetConfig, NetRun, Table};
use crate::util::plot::{save_png, Chart, Series};

/// One network analysis of the reproduction.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// Short name (its output folder).
    pub name: &'static str,
    /// What it reproduces.
    pub title: &'static str,
    /// The network.
    pub cfg: NetConfig,
    /// Simulations.
    pub sims: usize,
}

fn net(
    net: Net,
    kernel: usize,
    depth: usize,
    width: usize,
    batch: usize,
    every: usize,
) -> NetConfig {
    let mut c = NetConfig::new(net);
    c.kernel = kernel;
    c.depth = depth;
    c.width = width;
    c.batch = batch;
    c.every = every;
    c.seed = 1;
    c
}

/// The experiments of a scale. `quick`: the fully connected cases at the paper's width
/// (512), batch (64) and depth with 4 simulations, moments every 10 (ResNet) or 5 layers,
/// the convolutional BN network over its first 20 layers at width 64, and the LN / LN+PN
/// collapse at width 256. `paper`: SPEC §D.3's
/// sizes and simulation counts (Fig. 3-5 at width 512, 1,000 simulations; the fully
/// connected complements with 200; paper 2's collapse at width 1024, k = 3).
pub fn experiments(scale: Scale) -> Vec<Experiment> {
    let ln = |n: Net, k: usize, width: usize, depth: usize| {
        let mut c = net(n, k, depth, width, 64, 5);
        c.affine_std = 0.2;
        c.reff = false;
        c
    };
    match scale {
        Scale::Quick => vec![
            Experiment {
                name: "bn-res-fc",
                title: "BN ResNet, fully connected: power-law chi (Fig. 5 complement)",
                cfg: net(Net::BnRes, 1, 500, 512, 64, 10),
                sims: 4,
            },
            Experiment {
                name: "bn-ff-fc",
                title: "BN feed-forward, fully connected, batch 64",
                cfg: net(Net::BnFf, 1, 200, 512, 64, 5),
                sims: 4,
            },
            Experiment {
                name: "vanilla-fc",
                title: "Vanilla, fully connected: one-dimensional signal",
                cfg: net(Net::Vanilla, 1, 200, 512, 64, 5),
                sims: 4,
            },
            Experiment {
                name: "bn-ff-conv",
                title: "BN feed-forward, k = 3, first 20 layers at width 64 (Fig. 4)",
                cfg: net(Net::BnFf, 3, 20, 64, 32, 1),
                sims: 3,
            },
            Experiment {
                name: "ln-ff",
                title: "LayerNorm, fully connected, random affine (paper 2)",
                cfg: ln(Net::LnFf, 1, 256, 100),
                sims: 3,
            },
            Experiment {
                name: "ln-pn-ff",
                title: "LayerNorm + Proxy Norm, fully connected, random affine (paper 2)",
                cfg: ln(Net::LnPnFf, 1, 256, 100),
                sims: 3,
            },
        ],
        Scale::Paper => vec![
            Experiment {
                name: "bn-res-fc",
                title: "BN ResNet, fully connected: power-law chi (Fig. 5 complement)",
                cfg: net(Net::BnRes, 1, 500, 512, 64, 5),
                sims: 200,
            },
            Experiment {
                name: "bn-res-conv",
                title: "BN ResNet, k = 3, 500 units (Fig. 5)",
                cfg: net(Net::BnRes, 3, 500, 512, 64, 5),
                sims: 1000,
            },
            Experiment {
                name: "bn-ff-fc",
                title: "BN feed-forward, fully connected, batch 64",
                cfg: net(Net::BnFf, 1, 200, 512, 64, 2),
                sims: 200,
            },
            Experiment {
                name: "vanilla-fc",
                title: "Vanilla, fully connected: one-dimensional signal",
                cfg: net(Net::Vanilla, 1, 200, 512, 64, 2),
                sims: 200,
            },
            Experiment {
                name: "vanilla-conv",
                title: "Vanilla, k = 3 (Fig. 3)",
                cfg: net(Net::Vanilla, 3, 200, 512, 64, 2),
                sims: 1000,
            },
            Experiment {
                name: "bn-ff-conv",
                title: "BN feed-forward, k = 3 (Fig. 4)",
                cfg: net(Net::BnFf, 3, 200, 512, 64, 2),
                sims: 1000,
            },
            Experiment {
                name: "ln-ff",
                title: "LayerNorm, k = 3, width 1024, random affine (paper 2, Fig. 2)",
                cfg: ln(Net::LnFf, 3, 1024, 100),
                sims: 100,
            },
            Experiment {
                name: "ln-pn-ff",
                title: "LayerNorm + Proxy Norm, k = 3, width 1024, random affine (paper 2)",
                cfg: ln(Net::LnPnFf, 3, 1024, 100),
                sims: 100,
            },
        ],
    }
}

/// A quantity of an experiment's table.
#[derive(Clone, Copy, Debug)]
pub enum Quantity {
    /// Mean of a column at a depth.
    At(&'static str, usize),
    /// The fitted chi increment per layer (exp of the log-linear slope).
    ChiFactor,
    /// The residual power-law exponent tau.
    Tau,
    /// Mean of the increment `dchi` over all rows (residual: the paper's `dchi^{l,1}`).
    DchiMean,
    /// Mean of `dchi` over the deeper half of the rows.
    DchiDeepHalf,
    /// Mean of a column at the deepest row.
    Last(&'static str),
}

/// A paper value to compare with.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// Experiment name.
    pub experiment: &'static str,
    /// What is compared.
    pub quantity: Quantity,
    /// Its name in the table.
    pub label: &'static str,
    /// The paper's value (NaN: a qualitative claim, stated in `source`).
    pub paper: f64,
    /// Where the paper's value comes from.
    pub source: &'static str,
    /// Relative tolerance the reproduction must meet, when one is stated.
    pub tolerance: Option<f64>,
}

const RES_NPZ: &str = "bn_res_fc.npz chi_loc5";
const FF_NPZ: &str = "bn_ff_fc_64.npz";
const VAN_NPZ: &str = "vanilla_fc.npz";
const CONV_NPZ: &str = "bn_ff_epsilon.npz (k = 3, width 512)";

/// The paper values: means over simulations of moments-dnns' npz files (computed from
/// the arrays; `chi_loc5` is after the residual add, `chi_loc4` after the ReLU), SPEC §D.4.
pub fn checks() -> Vec<Check> {
    use Quantity::*;
    let c = |experiment, quantity, label, paper, source, tolerance| Check {
        experiment,
        quantity,
        label,
        paper,
        source,
        tolerance,
    };
    let ten = Some(0.10);
    vec![
        c("bn-res-fc", At("chi", 5), "chi^5", 2.256, RES_NPZ, ten),
        c("bn-res-fc", At("chi", 10), "chi^10", 3.175, RES_NPZ, ten),
        c("bn-res-fc", At("chi", 50), "chi^50", 8.156, RES_NPZ, ten),
        c("bn-res-fc", At("chi", 100), "chi^100", 12.58, RES_NPZ, ten),
        c("bn-res-fc", At("chi", 250), "chi^250", 22.53, RES_NPZ, ten),
        c("bn-res-fc", At("chi", 500), "chi^500", 35.11, RES_NPZ, ten),
        c(
            "bn-res-fc",
            DchiMean,
            "mean dchi^{l,1}",
            1.232,
            "bn_res_fc.npz chi_loc4 / chi_loc1",
            None,
        ),
        c(
            "bn-res-fc",
            Tau,
            "tau",
            0.652,
            "plots.py formula on bn_res_fc.npz",
            None,
        ),
        c(
            "bn-res-fc",
            At("reff_x", 500),
            "r_eff(x) at 500",
            12.77,
            "bn_res_fc.npz reff_signal_loc3",
            None,
        ),
        c(
            "bn-res-fc",
            At("mu4_norm", 500),
            "mu4(z) at 500",
            3.401,
            "bn_res_fc.npz mu4_signal_loc2",
            None,
        ),
        c(
            "bn-ff-fc",
            ChiFactor,
            "chi factor per layer (fit)",
            1.2294,
            FF_NPZ,
            None,
        ),
        c("bn-ff-fc", At("chi", 10), "chi^10", 8.878, FF_NPZ, None),
        c("bn-ff-fc", At("chi", 100), "chi^100", 1.063e9, FF_NPZ, None),
        c(
            "bn-ff-fc",
            At("chi", 200),
            "chi^200",
            9.896e17,
            FF_NPZ,
            None,
        ),
        c(
            "bn-ff-fc",
            At("mu4_norm", 200),
            "mu4(z) at 200",
            3.728,
            FF_NPZ,
            None,
        ),
        c(
            "bn-ff-fc",
            At("reff_x", 200),
            "r_eff(x) at 200",
            10.17,
            FF_NPZ,
            None,
        ),
        c(
            "vanilla-fc",
            At("dchi", 2),
            "dchi at 2",
            1.146,
            VAN_NPZ,
            None,
        ),
        c(
            "vanilla-fc",
            DchiDeepHalf,
            "dchi, deeper half",
            1.002,
            VAN_NPZ,
            None,
        ),
        c(
            "vanilla-fc",
            At("reff_x", 2),
            "r_eff(x) at 2",
            5.558,
            VAN_NPZ,
            None,
        ),
        c(
            "vanilla-fc",
            At("reff_x", 200),
            "r_eff(x) at 200",
            1.010,
            VAN_NPZ,
            None,
        ),
        c("bn-ff-conv", At("chi", 2), "chi^2", 1.986, CONV_NPZ, None),
        c("bn-ff-conv", At("chi", 10), "chi^10", 9.043, CONV_NPZ, None),
        c("bn-ff-conv", At("chi", 20), "chi^20", 55.03, CONV_NPZ, None),
        c(
            "bn-ff-conv",
            At("chi", 200),
            "chi^200",
            5.727e13,
            CONV_NPZ,
            None,
        ),
        c(
            "bn-ff-conv",
            At("dchi", 2),
            "dchi at 2",
            1.287,
            CONV_NPZ,
            None,
        ),
        c(
            "bn-ff-conv",
            At("dchi_act", 2),
            "d_phi chi at 2",
            1.200,
            CONV_NPZ,
            None,
        ),
        c(
            "bn-ff-conv",
            At("dchi_norm", 10),
            "d_BN chi at 10",
            1.004,
            CONV_NPZ,
            None,
        ),
        c(
            "bn-ff-conv",
            At("reff_x", 200),
            "r_eff(x) at 200",
            2.031,
            CONV_NPZ,
            None,
        ),
        c(
            "bn-ff-conv",
            At("mu4_norm", 200),
            "mu4(z) at 200",
            126.1,
            CONV_NPZ,
            None,
        ),
        c(
            "bn-res-conv",
            At("chi", 500),
            "chi^500",
            33.0,
            "Fig. 5 (read from the PNG, SPEC §D.4)",
            None,
        ),
        c(
            "bn-res-conv",
            DchiMean,
            "mean dchi^{l,1}",
            1.20,
            "Fig. 5 (read from the PNG)",
            None,
        ),
        c(
            "vanilla-conv",
            At("reff_x", 200),
            "r_eff(x) at 200",
            1.0,
            "Fig. 3: r_eff(x) -> ~1",
            None,
        ),
        c(
            "ln-ff",
            Last("share_ch_conv"),
            "channel-constant share of y at the last layer",
            f64::NAN,
            "paper 2: LN collapses toward channel-wise constant functions (share -> 1)",
            None,
        ),
        c(
            "ln-pn-ff",
            Last("share_ch_conv"),
            "channel-constant share of y at the last layer",
            f64::NAN,
            "paper 2: Proxy Norm avoids the collapse (share stays low)",
            None,
        ),
    ]
}

/// The value of `q` in a finished experiment (NaN when its table has no such row).
pub fn value(q: Quantity, run: &NetRun) -> f64 {
    let t = &run.table;
    let at = |name: &str, l: usize| -> f64 {
        t.x.iter()
            .position(|&x| x as usize == l)
            .and_then(|i| t.get(name).map(|c| c[i].mean))
            .unwrap_or(f64::NAN)
    };
    match q {
        Quantity::At(name, l) => at(name, l),
        Quantity::ChiFactor => run.fits.chi_factor_per_layer,
        Quantity::Tau => run.fits.tau.unwrap_or(f64::NAN),
        Quantity::DchiMean => run.fits.dchi_mean,
        Quantity::DchiDeepHalf => run.fits.dchi_last_half,
        Quantity::Last(name) => t.means(name).last().copied().unwrap_or(f64::NAN),
    }
}

/// A compared quantity, as `moments.json` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Compared {
    /// Experiment name.
    pub experiment: String,
    /// Quantity.
    pub quantity: String,
    /// The paper's value (null for a qualitative claim).
    pub paper: Option<f64>,
    /// Its source.
    pub source: String,
    /// effnet's value.
    pub effnet: f64,
    /// effnet / paper.
    pub ratio: Option<f64>,
    /// The stated relative tolerance.
    pub tolerance: Option<f64>,
    /// Whether effnet is within it.
    pub within: Option<bool>,
}

/// Options of a moments reproduction.
#[derive(Clone, Debug)]
pub struct MomentsConfig {
    /// The experiments to run.
    pub experiments: Vec<Experiment>,
    /// Output folder (one sub-folder per experiment).
    pub out: PathBuf,
    /// Print progress.
    pub quiet: bool,
}

/// Run every experiment, compare with the paper values and write the report files.
pub fn run(gpu: &Gpu, cfg: &MomentsConfig, input: &InputSource, command: &str) -> Result<Report> {
    if cfg.experiments.is_empty() {
        return Err(Error::Config("no experiment to run".into()));
    }
    for e in &cfg.experiments {
        e.cfg.validate()?;
        if e.sims == 0 {
            return Err(Error::Config(format!("{}: --sims must be >= 1", e.name)));
        }
    }
    let t0 = Instant::now();
    let mut done: Vec<(Experiment, NetRun, f64)> = Vec::new();
    for (k, e) in cfg.experiments.iter().enumerate() {
        let c = &e.cfg;
        println!(
            "== {} ({}/{}): {}; effnet moments {}",
            e.name,
            k + 1,
            cfg.experiments.len(),
            e.title,
            moments_flags(e, &cfg.out.join(e.name))
        );
        let te = Instant::now();
        let quiet = cfg.quiet;
        let run = moments::run_net(gpu, c, input, e.sims, |d, n| {
            if !quiet && (d == n || d.is_power_of_two() || d % 10 == 0) {
                eprintln!(
                    "   simulation {d}/{n}: {:.1} s elapsed",
                    te.elapsed().as_secs_f64()
                );
            }
        })?;
        output::write_net(&cfg.out.join(e.name), c, &run.table, &run.fits)?;
        if let Some(w) = run.divergence_warning() {
            eprintln!("warning: {}: {w}", e.name);
        }
        let secs = te.elapsed().as_secs_f64();
        println!("   {} done in {secs:.1} s", e.name);
        done.push((e.clone(), run, secs));
    }
    let mut compared = Vec::new();
    for ch in checks() {
        let Some((e, run, _)) = done.iter().find(|(e, _, _)| e.name == ch.experiment) else {
            continue;
        };
        if matches!(ch.quantity, Quantity::At(_, l) if !e.cfg.depths().contains(&l)) {
            // A depth this scale does not record.
            continue;
        }
        let v = value(ch.quantity, run);
        let paper = ch.paper.is_finite().then_some(ch.paper);
        let ratio = paper.map(|p| v / p);
        compared.push(Compared {
            experiment: ch.experiment.into(),
            quantity: ch.label.into(),
            paper,
            source: ch.source.into(),
            effnet: v,
            ratio,
            tolerance: ch.tolerance,
            within: ch
                .tolerance
                .zip(ratio)
                .map(|(t, r)| r.is_finite() && (r - 1.0).abs() <= t),
        });
    }
    let rows = compared
        .iter()
        .map(|c| {
            vec![
                c.experiment.clone(),
                c.quantity.clone(),
                c.paper.map_or("(claim)".into(), fmt_sig),
                fmt_sig(c.effnet),
                c.ratio.map_or("-".into(), |r| format!("{r:.3}")),
                match (c.within, c.tolerance) {
                    (Some(w), Some(t)) => {
                        format!("{} (±{:.0}%)", if w { "yes" } else { "NO" }, 100.0 * t)
                    }
                    _ => "-".into(),
                },
                c.source.clone(),
            ]
        })
        .collect();
    let mut notes: Vec<String> = done
        .iter()
        .map(|(e, _, s)| {
            format!(
                "{}: {} ({} simulations, {:.0} s): `effnet moments {}`",
                e.name,
                e.title,
                e.sims,
                s,
                moments_flags(e, &cfg.out.join(e.name))
            )
        })
        .collect();
    notes.push(format!(
        "Inputs: {} ({}x{}x{}), standardized as the paper does (per feature when the \
         images are flattened, per channel for convolutions); moments-dnns used CIFAR-10.",
        input.kind.name(),
        input.h,
        input.w,
        input.c
    ));
    notes.push(
        "Paper values are means over moments-dnns' 200 simulations (its npz result files) \
         unless the source says otherwise; effnet's are means over the simulations above."
            .into(),
    );
    let columns = [
        "experiment",
        "quantity",
        "paper",
        "effnet",
        "effnet / paper",
        "within tolerance",
        "paper source",
    ];
    let title = "Moments of signal and sensitivity at initialization (papers 2 and 3)";
    let report = Report {
        rows,
        notes,
        results: serde_json::json!({
            "compared": compared,
            "experiments": done.iter().map(|(e, r, s)| serde_json::json!({
                "name": e.name,
                "title": e.title,
                "config": e.cfg,
                "sims": e.sims,
                "seconds": s,
                "fits": r.fits,
            })).collect::<Vec<_>>(),
        }),
        ..Report::new(title, command, gpu, t0, &columns)
    };
    report.write(&cfg.out, "moments")?;
    save_png(&cfg.out.join("moments.png"), &charts(&done))?;
    Ok(report)
}

/// The `effnet moments` flags of an experiment.
pub fn moments_flags(e: &Experiment, out: &Path) -> String {
    let c = &e.cfg;
    let mut s = format!(
        "--net {} --kernel {} --depth {} --width {} --batch {} --sims {} --every {} --seed {}",
        c.net.name(),
        c.kernel,
        c.depth,
        c.width,
        c.batch,
        e.sims,
        c.every,
        c.seed
    );
    if !c.reff {
        s.push_str(" --no-reff");
    }
    if c.affine_std > 0.0 {
        s.push_str(&format!(" --affine-std {}", c.affine_std));
    }
    if let Some(st) = c.standardize {
        s.push_str(&format!(" --standardize {}", st.name()));
    }
    s.push_str(&format!(" --out {}", out.display()));
    s
}

/// The paper points of a curve: `(depth, value)` of the checks of `experiment` on
/// column `name`.
fn paper_points(experiment: &str, name: &str) -> Vec<(f64, f64)> {
    checks()
        .iter()
        .filter(|c| c.experiment == experiment)
        .filter_map(|c| match c.quantity {
            Quantity::At(n, l) if n == name => Some((l as f64, c.paper)),
            _ => None,
        })
        .collect()
}

/// One panel per family: effnet's mean with its 16-84 % band, and the paper's points.
fn charts(done: &[(Experiment, NetRun, f64)]) -> Vec<Chart> {
    let find = |n: &str| done.iter().find(|(e, _, _)| e.name == n).map(|(_, r, _)| r);
    let band = |t: &Table, name: &str, label: &str| output::series(t, name, label);
    let mut charts = Vec::new();
    let mut panel = |exp: &str, name: &str, title: &str, log_y: bool| {
        if let Some(r) = find(exp) {
            let mut series = vec![band(
                &r.table,
                name,
                &format!("EFFNET {}", exp.to_uppercase()),
            )];
            let pts = paper_points(exp, name);
            if pts.len() >= 2 {
                series.push(Series::new("MOMENTS-DNNS (NPZ)", pts));
            }
            charts.push(Chart {
                title: title.into(),
                x_label: if r.table.x_name == "depth" && exp.starts_with("bn-res") {
                    "UNIT L".into()
                } else {
                    "DEPTH L".into()
                },
                log_y,
                log_x: false,
                series,
            });
        }
    };
    panel("bn-res-fc", "chi", "BN-RES FC: CHI^L", false);
    panel("bn-res-conv", "chi", "BN-RES CONV: CHI^L", false);
    panel("bn-ff-fc", "chi", "BN-FF FC: CHI^L", true);
    panel("bn-ff-conv", "chi", "BN-FF CONV: CHI^L", true);
    panel("vanilla-fc", "reff_x", "VANILLA FC: REFF(X)", true);
    let mut collapse = Vec::new();
    for (exp, label) in [("ln-ff", "LN"), ("ln-pn-ff", "LN+PN")] {
        if let Some(r) = find(exp) {
            collapse.push(band(
                &r.table,
                &col("share_ch", Loc::Conv),
                &format!("{label}: CHANNEL CONST SHARE OF Y"),
            ));
        }
    }
    if !collapse.is_empty() {
        charts.push(Chart {
            title: "LN COLLAPSE (PAPER 2)".into(),
            x_label: "DEPTH L".into(),
            log_y: false,
            log_x: false,
            series: collapse,
        });
    }
    charts
}
