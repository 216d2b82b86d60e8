//! From per-simulation records to the published quantities: per-depth summaries over
//! simulations (mean, std, 16th / 84th percentiles) of every statistic, and the fits the
//! paper's checks are stated in (log-linear and log-log fits of chi, increments, the
//! residual power-law exponent).

use super::nets::{Divergence, Loc, Net, NetConfig, SimRecord};
use super::stats::{self, LineFit, Summary};

/// Per-row summaries of named statistics. Rows are depths (paper networks) or layers
/// (EfficientNet, with labels).
#[derive(Clone, Debug)]
pub struct Table {
    /// Name of the row coordinate (`depth` or `layer`).
    pub x_name: String,
    /// Row coordinates.
    pub x: Vec<f64>,
    /// Optional row labels (EfficientNet layer names).
    pub labels: Option<Vec<String>>,
    /// `(name, summaries per row)`, in column order.
    pub columns: Vec<(String, Vec<Summary>)>,
}

impl Table {
    /// An empty table over rows `x`.
    pub fn new(x_name: &str, x: Vec<f64>) -> Table {
        Table {
            x_name: x_name.to_string(),
            x,
            labels: None,
            columns: Vec::new(),
        }
    }

    /// Add a column from per-simulation values: `values[sim][row]`.
    pub fn add(&mut self, name: &str, values: &[Vec<f64>]) {
        let rows = self.x.len();
        let col = (0..rows)
            .map(|r| {
                let v: Vec<f64> = values.iter().map(|s| s[r]).collect();
                Summary::of(&v)
            })
            .collect();
        self.columns.push((name.to_string(), col));
    }

    /// The summaries of column `name`.
    pub fn get(&self, name: &str) -> Option<&[Summary]> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_slice())
    }

    /// Means of column `name` (empty if absent).
    pub fn means(&self, name: &str) -> Vec<f64> {
        self.get(name)
            .map(|c| c.iter().map(|s| s.mean).collect())
            .unwrap_or_default()
    }

    /// CSV text: the row coordinate (and label), then `<name>_mean, _std, _p16, _p84` per
    /// column.
    pub fn to_csv(&self) -> String {
        let mut out = self.x_name.clone();
        if self.labels.is_some() {
            out.push_str(",label");
        }
        for (name, _) in &self.columns {
            for s in ["mean", "std", "p16", "p84"] {
                out.push_str(&format!(",{name}_{s}"));
            }
        }
        out.push('\n');
        for (r, x) in self.x.iter().enumerate() {
            out.push_str(&fmt_num(*x));
            if let Some(l) = &self.labels {
                out.push(',');
                out.push_str(&l[r].replace(',', ";"));
            }
            for (_, col) in &self.columns {
                let s = &col[r];
                for v in [s.mean, s.std, s.p16, s.p84] {
                    out.push(',');
                    out.push_str(&fmt_num(v));
                }
            }
            out.push('\n');
        }
        out
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.8e}")
    }
}

/// Column name of a per-location statistic, e.g. `chi_act`.
pub fn col(stat: &str, loc: Loc) -> String {
    format!("{stat}_{}", loc.name())
}

/// The location at a layer's (unit's) output.
pub fn out_loc(net: Net) -> Loc {
    if net.residual() {
        Loc::Out
    } else {
        Loc::Act
    }
}

/// The pre-activation location whose fourth moment and first absolute moment the paper
/// plots (`z`: after the normalization; the convolution output for `vanilla`).
pub fn z_loc(net: Net) -> Loc {
    if net.normalized() {
        Loc::Norm
    } else {
        Loc::Conv
    }
}

/// The table of a paper-network analysis. Columns (per simulation, then summarized):
/// - `chi`: chi^l at the layer (unit) output; `dchi`: its increment per layer (residual:
///   the first branch layer's, chi(conv)/chi(in), the paper's delta chi^{l,1});
///   `dchi_norm`: the conv + norm step (chi(norm)/chi(in); `vanilla`: the conv step);
///   `dchi_act`: the activation step (residual: activation + conv, as the paper);
///   `dchi_unit` (residual): chi(out)/chi(in);
/// - per location `<stat>_<loc>` for stat in `chi`, `nu1` (E|x|), `nu2`, `mu2`, `mu4`,
///   `kurt` (mu4 / mu2^2), `share_ch` (channel-wise constant share of the power,
///   mean_c m_c^2 / nu2) and at `conv` / `norm` `share_inst` (share of the per-sample,
///   per-channel spatial means around the channel means);
/// - `reff_x`, `reff_dx`: effective ranks at the post-activation location;
/// - `log_nu2_x`, `log_nu2_dx`: `ln nu2(x^l) - ln nu2(x^0)` and the same for dx (x^0, dx^0
///   after the first layer), the log-normal diffusion of vanilla nets (SPEC §D.4).
pub fn net_table(cfg: &NetConfig, sims: &[SimRecord]) -> Table {
    let depths: Vec<f64> = cfg.depths().iter().map(|&d| d as f64).collect();
    let mut t = Table::new("depth", depths);
    if sims.is_empty() {
        return t;
    }
    let locs = sims[0].locs.clone();
    let j_of = |loc: Loc| locs.iter().position(|&l| l == loc);
    let rows = t.x.len();
    let per = |f: &dyn Fn(&SimRecord, usize) -> f64| -> Vec<Vec<f64>> {
        sims.iter()
            .map(|s| (0..rows).map(|i| f(s, i)).collect())
            .collect()
    };
    let chi = |loc: Loc| {
        let j = j_of(loc).expect("location");
        move |s: &SimRecord, i: usize| s.chi(i, j)
    };
    let net = cfg.net;
    let out = out_loc(net);
    let jin = Loc::In;
    t.add("chi", &per(&chi(out)));
    if net.residual() {
        t.add("dchi", &per(&|s, i| chi(Loc::Conv)(s, i) / chi(jin)(s, i)));
        t.add(
            "dchi_norm",
            &per(&|s, i| chi(Loc::Norm)(s, i) / chi(jin)(s, i)),
        );
        t.add(
            "dchi_act",
            &per(&|s, i| chi(Loc::Conv)(s, i) / chi(Loc::Norm)(s, i)),
        );
        t.add("dchi_unit", &per(&|s, i| chi(out)(s, i) / chi(jin)(s, i)));
    } else {
        let mid = z_loc(net);
        t.add("dchi", &per(&|s, i| chi(out)(s, i) / chi(jin)(s, i)));
        t.add("dchi_norm", &per(&|s, i| chi(mid)(s, i) / chi(jin)(s, i)));
        t.add("dchi_act", &per(&|s, i| chi(out)(s, i) / chi(mid)(s, i)));
    }
    t.add("reff_x", &per(&|s, i| s.reff_x[i]));
    t.add("reff_dx", &per(&|s, i| s.reff_dx[i]));
    let jo = j_of(out).expect("output location");
    t.add("log_nu2_x", &per(&|s, i| s.x[i][jo][1].ln() - s.log_x0_nu2));
    t.add("log_nu2_dx", &per(&|s, i| s.log_dx[i][jo] - s.log_dx0_nu2));
    for (j, &loc) in locs.iter().enumerate() {
        t.add(&col("chi", loc), &per(&|s, i| s.chi(i, j)));
        t.add(&col("nu1", loc), &per(&|s, i| s.x[i][j][0]));
        t.add(&col("nu2", loc), &per(&|s, i| s.x[i][j][1]));
        t.add(&col("mu2", loc), &per(&|s, i| s.x[i][j][2]));
        t.add(&col("mu4", loc), &per(&|s, i| s.x[i][j][3]));
        t.add(
            &col("kurt", loc),
            &per(&|s, i| s.x[i][j][3] / (s.x[i][j][2] * s.x[i][j][2])),
        );
        t.add(
            &col("share_ch", loc),
            &per(&|s, i| s.x[i][j][4] / s.x[i][j][1]),
        );
        if matches!(loc, Loc::Conv | Loc::Norm) {
            t.add(
                &col("share_inst", loc),
                &per(&|s, i| s.inst[i][j] / s.x[i][j][1]),
            );
        }
    }
    t
}

/// The fits behind the paper's checks (SPEC §D.3-D.4).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NetFits {
    /// Mean over simulations of ln chi^l against depth l (exponential growth: slope is the
    /// log increment per layer).
    pub log_chi_vs_depth: LineFit,
    /// Mean ln chi^l against ln l (power law: slope is the exponent).
    pub log_chi_vs_log_depth: LineFit,
    /// exp(slope) of `log_chi_vs_depth`: the fitted increment of chi per layer (unit).
    pub chi_factor_per_layer: f64,
    /// Mean chi at the deepest row.
    pub chi_last: f64,
    /// Mean increment over all rows.
    pub dchi_mean: f64,
    /// Mean increment over the first rows (depth <= max(5, every)).
    pub dchi_first: f64,
    /// Mean increment over the deeper half of the rows.
    pub dchi_last_half: f64,
    /// Conv + norm step increment, first rows.
    pub dchi_norm_first: f64,
    /// Conv + norm step increment, deeper half.
    pub dchi_norm_last_half: f64,
    /// Activation step increment, first rows (analytically sqrt(1 / (1 - 1/pi)) = 1.2114
    /// for a symmetric pre-activation).
    pub dchi_act_first: f64,
    /// Activation step increment, deeper half.
    pub dchi_act_last_half: f64,
    /// Residual nets: the paper's exponent tau = ((mean dchi^{l,1})^(2 res_depth) - 1) / 2.
    pub tau: Option<f64>,
    /// Residual nets: the least-squares constant C of chi ~ C l^tau.
    pub power_law_c: Option<f64>,
    /// Effective rank of x, first and last rows.
    pub reff_x: (f64, f64),
    /// Effective rank of dx, first and last rows.
    pub reff_dx: (f64, f64),
    /// mu4(z) (kurtosis of the normalized pre-activation), first and last rows.
    pub mu4_z: (f64, f64),
    /// nu1(|z|), first and last rows.
    pub nu1_z: (f64, f64),
    /// Channel-wise constant share of the pre-activation (conv output) power, first and
    /// last rows (paper 2's LayerNorm collapse).
    pub share_ch_conv: (f64, f64),
    /// Simulations that diverged, and where ([`SimRecord::mark_divergence`]).
    pub diverged: Vec<SimDivergence>,
}

/// A diverged simulation, as `summary.json` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SimDivergence {
    /// Simulation index.
    pub sim: usize,
    /// Where and how.
    #[serde(flatten)]
    pub at: Divergence,
}

fn mean_where(x: &[f64], y: &[f64], keep: impl Fn(f64) -> bool) -> f64 {
    let v: Vec<f64> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| keep(**a) && b.is_finite())
        .map(|(_, b)| *b)
        .collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn ends(v: &[f64]) -> (f64, f64) {
    (
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

/// Fit the checks' quantities from the table and the per-simulation records.
pub fn net_fits(cfg: &NetConfig, table: &Table, sims: &[SimRecord]) -> NetFits {
    let x = &table.x;
    let depth = cfg.depth as f64;
    // Mean over simulations of ln chi (geometric mean: chi is log-normally spread).
    let out = out_loc(cfg.net);
    let jo = sims
        .first()
        .and_then(|s| s.locs.iter().position(|&l| l == out))
        .unwrap_or(0);
    let mean_log_chi: Vec<f64> = (0..x.len())
        .map(|i| {
            let v: Vec<f64> = sims.iter().map(|s| s.chi(i, jo).ln()).collect();
            Summary::of(&v).mean
        })
        .collect();
    let lin = stats::linear_fit(x, &mean_log_chi);
    let logx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let pow = stats::linear_fit(&logx, &mean_log_chi);
    let first_cut = (cfg.every as f64).max(5.0);
    let first = |v: f64| v <= first_cut;
    let half = |v: f64| v > depth / 2.0;
    let d = table.means("dchi");
    let dn = table.means("dchi_norm");
    let da = table.means("dchi_act");
    let chi = table.means("chi");
    let (tau, c) = if cfg.net.residual() {
        // As the paper's plots.py: ratio of the simulation means, averaged over depth.
        let ratio: Vec<f64> = table
            .means(&col("chi", Loc::Conv))
            .iter()
            .zip(table.means(&col("chi", Loc::In)))
            .map(|(a, b)| a / b)
            .collect();
        let m = mean_where(x, &ratio, |_| true);
        let tau = (m.powi(2 * cfg.res_depth as i32) - 1.0) / 2.0;
        let pl: Vec<f64> = x.iter().map(|l| l.powf(tau)).collect();
        let num: f64 = chi.iter().zip(&pl).map(|(a, b)| a * b).sum();
        let den: f64 = pl.iter().map(|b| b * b).sum();
        (Some(tau), Some(num / den))
    } else {
        (None, None)
    };
    let zl = z_loc(cfg.net);
    NetFits {
        log_chi_vs_depth: lin,
        log_chi_vs_log_depth: pow,
        chi_factor_per_layer: lin.slope.exp(),
        chi_last: chi.last().copied().unwrap_or(f64::NAN),
        dchi_mean: mean_where(x, &d, |_| true),
        dchi_first: mean_where(x, &d, first),
        dchi_last_half: mean_where(x, &d, half),
        dchi_norm_first: mean_where(x, &dn, first),
        dchi_norm_last_half: mean_where(x, &dn, half),
        dchi_act_first: mean_where(x, &da, first),
        dchi_act_last_half: mean_where(x, &da, half),
        tau,
        power_law_c: c,
        reff_x: ends(&table.means("reff_x")),
        reff_dx: ends(&table.means("reff_dx")),
        mu4_z: ends(&table.means(&col("mu4", zl))),
        nu1_z: ends(&table.means(&col("nu1", zl))),
        share_ch_conv: ends(&table.means(&col("share_ch", Loc::Conv))),
        diverged: sims
            .iter()
            .enumerate()
            .filter_map(|(sim, s)| s.diverged.clone().map(|at| SimDivergence { sim, at }))
            .collect(),
    }
}
