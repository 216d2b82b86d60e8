//! f64 CPU reference of the softmax cross-entropy with label smoothing.

/// f64 reference: per-row loss and dlogits for per-row loss gradients `dloss`.
pub fn softmax_xent_ref(
    logits: &[f64],
    labels: &[f64],
    dloss: &[f64],
    k: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = labels.len();
    let mut loss = vec![0.0; n];
    let mut d = vec![0.0; n * k];
    for r in 0..n {
        let z = &logits[r * k..(r + 1) * k];
        let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        let lab = labels[r] as usize;
        for c in 0..k {
            let q = eps / k as f64 + if c == lab { 1.0 - eps } else { 0.0 };
            loss[r] -= q * (z[c] - lse);
            d[r * k + c] = dloss[r] * ((z[c] - lse).exp() - q);
        }
    }
    (loss, d)
}
