//! Minimal PNG line charts (no font files, no system libraries): axes with numeric ticks,
//! several series per chart, optional log-scale y, panels side by side. Text uses a
//! built-in 5x7 bitmap font. Used for training curves and the moments figures.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

/// One series of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y); non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Optional band (x, low, high) drawn lighter behind the line.
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A series without band.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            band: Vec::new(),
        }
    }
}

/// One chart panel.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Title above the panel.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Log10 y axis.
    pub log_y: bool,
    /// Log10 x axis.
    pub log_x: bool,
    /// Series.
    pub series: Vec<Series>,
}

const W: u32 = 520;
const H: u32 = 380;
const COLORS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [23, 190, 207],
];

/// Render panels side by side into a PNG.
pub fn save_png(path: &Path, charts: &[Chart]) -> Result<()> {
    let n = charts.len().max(1) as u32;
    let mut img = RgbImage::from_pixel(W * n, H, Rgb([255, 255, 255]));
    for (i, c) in charts.iter().enumerate() {
        draw_chart(&mut img, i as u32 * W, c);
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    }
    img.save(path)
        .map_err(|e| Error::file(path, format!("cannot write PNG: {e}")))
}

fn tf(v: f64, log: bool) -> f64 {
    if log {
        if v > 0.0 {
            v.log10()
        } else {
            f64::NAN
        }
    } else {
        v
    }
}

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * span {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64, log: bool) -> String {
    if log {
        let p = 10f64.powf(v);
        if v.fract().abs() < 1e-9 {
            return format!("1E{}", v.round() as i64);
        }
        return format!("{p:.2E}");
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1E}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn draw_chart(img: &mut RgbImage, x0: u32, c: &Chart) {
    let (l, r, t, b) = (
        x0 as i64 + 70,
        x0 as i64 + W as i64 - 15,
        30i64,
        H as i64 - 45,
    );
    let pts: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .copied()
                .chain(s.band.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]))
        })
        .map(|(x, y)| (tf(x, c.log_x), tf(y, c.log_y)))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    text(img, x0 as i64 + 70, 10, &c.title, [0, 0, 0]);
    let black = Rgb([0, 0, 0]);
    line(img, l, b, r, b, black);
    line(img, l, t, l, b, black);
    if pts.is_empty() {
        text(img, l + 20, (t + b) / 2, "NO DATA", [120, 120, 120]);
        return;
    }
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if xmax - xmin < 1e-12 {
        xmax = xmin + 1.0;
    }
    if ymax - ymin < 1e-12 {
        ymin -= 0.5;
        ymax += 0.5;
    }
    let pad = (ymax - ymin) * 0.05;
    ymin -= pad;
    ymax += pad;
    let sx = |x: f64| l + ((x - xmin) / (xmax - xmin) * (r - l) as f64).round() as i64;
    let sy = |y: f64| b - ((y - ymin) / (ymax - ymin) * (b - t) as f64).round() as i64;
    let grey = Rgb([225, 225, 225]);
    for v in nice_ticks(ymin, ymax, 5) {
        let y = sy(v);
        line(img, l + 1, y, r, y, grey);
        let s = fmt_tick(v, c.log_y);
        text(img, l - 6 - 6 * s.len() as i64, y - 3, &s, [0, 0, 0]);
    }
    for v in nice_ticks(xmin, xmax, 5) {
        let x = sx(v);
        line(img, x, b, x, b + 4, black);
        let s = fmt_tick(v, c.log_x);
        text(img, x - 3 * s.len() as i64, b + 8, &s, [0, 0, 0]);
    }
    text(
        img,
        (l + r) / 2 - 3 * c.x_label.len() as i64,
        b + 22,
        &c.x_label,
        [0, 0, 0],
    );
    for (k, s) in c.series.iter().enumerate() {
        let col = COLORS[k % COLORS.len()];
        let light = Rgb([
            (col[0] as u16 * 2 / 5 + 153) as u8,
            (col[1] as u16 * 2 / 5 + 153) as u8,
            (col[2] as u16 * 2 / 5 + 153) as u8,
        ]);
        for &(x, lo, hi) in &s.band {
            let (x, lo, hi) = (tf(x, c.log_x), tf(lo, c.log_y), tf(hi, c.log_y));
            if x.is_finite() && lo.is_finite() && hi.is_finite() {
                line(img, sx(x), sy(lo), sx(x), sy(hi), light);
            }
        }
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in &s.points {
            let (x, y) = (tf(x, c.log_x), tf(y, c.log_y));
            if !x.is_finite() || !y.is_finite() {
                prev = None;
                continue;
            }
            let p = (sx(x), sy(y));
            if let Some(q) = prev {
                line(img, q.0, q.1, p.0, p.1, Rgb(col));
            } else if s.points.len() == 1 {
                line(img, p.0 - 2, p.1, p.0 + 2, p.1, Rgb(col));
            }
            prev = Some(p);
        }
        // Legend.
        let ly = t + 6 + 12 * k as i64;
        line(img, r - 150, ly + 3, r - 135, ly + 3, Rgb(col));
        text(img, r - 130, ly, &s.label, col);
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(img, x, y, c);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// 5x7 glyphs, one row per byte (low 5 bits, MSB left).
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [1, 1, 2, 4, 8, 16, 16],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '[' => [14, 8, 8, 8, 8, 8, 14],
        ']' => [14, 2, 2, 2, 2, 2, 14],
        '^' => [4, 10, 17, 0, 0, 0, 0],
        '*' => [0, 4, 21, 14, 21, 4, 0],
        '<' => [2, 4, 8, 16, 8, 4, 2],
        '>' => [8, 4, 2, 1, 2, 4, 8],
        _ => [0; 7],
    }
}

/// Draw text at (x, y) (top-left), 6 pixels per character.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, col: [u8; 3]) {
    for (i, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for colm in 0..5 {
                if bits & (16 >> colm) != 0 {
                    put(img, x + 6 * i as i64 + colm, y + row as i64, Rgb(col));
                }
            }
        }
    }
}
