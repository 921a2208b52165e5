//! A small Gaussian process for `bayes`: Matérn 5/2 kernel on the unit cube, the length scale
//! chosen by marginal likelihood from a short list, and expected improvement. Sizes are a
//! sweep's (tens to a few hundred runs), so plain O(n³) Cholesky is the right tool.

/// A fitted GP over points in `[0,1]^d` with standardized targets (lower is better).
pub struct Gp {
    x: Vec<Vec<f64>>,
    /// `K⁻¹ y`.
    alpha: Vec<f64>,
    /// Lower Cholesky factor of `K`.
    chol: Vec<Vec<f64>>,
    length: f64,
    mean: f64,
    scale: f64,
}

const NOISE: f64 = 1e-6;
const LENGTHS: [f64; 8] = [0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.6];

fn matern52(a: &[f64], b: &[f64], length: f64) -> f64 {
    let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let r = (5.0 * d2).sqrt() / length;
    (1.0 + r + r * r / 3.0) * (-r).exp()
}

fn cholesky(k: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = k.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i][m] * l[j][m]).sum();
            if i == j {
                let d = k[i][i] - s;
                if d <= 0.0 {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (k[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves `L z = b` (forward).
fn forward(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; b.len()];
    for i in 0..b.len() {
        let s: f64 = (0..i).map(|m| l[i][m] * z[m]).sum();
        z[i] = (b[i] - s) / l[i][i];
    }
    z
}

/// Solves `Lᵀ x = z` (backward).
fn backward(l: &[Vec<f64>], z: &[f64]) -> Vec<f64> {
    let n = z.len();
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|m| l[m][i] * x[m]).sum();
        x[i] = (z[i] - s) / l[i][i];
    }
    x
}

impl Gp {
    /// Fits to `(x, y)`; `None` with fewer than two points.
    pub fn fit(x: &[Vec<f64>], y: &[f64]) -> Option<Gp> {
        if x.len() < 2 {
            return None;
        }
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let scale = if var > 0.0 { var.sqrt() } else { 1.0 };
        let ys: Vec<f64> = y.iter().map(|v| (v - mean) / scale).collect();
        let mut best: Option<(f64, Gp)> = None;
        for &length in &LENGTHS {
            let k: Vec<Vec<f64>> = x
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    x.iter()
                        .enumerate()
                        .map(|(j, b)| matern52(a, b, length) + if i == j { NOISE } else { 0.0 })
                        .collect()
                })
                .collect();
            let Some(chol) = cholesky(&k) else { continue };
            let alpha = backward(&chol, &forward(&chol, &ys));
            // log p(y) = -½ yᵀα - Σ log Lᵢᵢ - n/2 log 2π
            let fit: f64 = ys.iter().zip(&alpha).map(|(a, b)| a * b).sum::<f64>();
            let det: f64 = (0..chol.len()).map(|i| chol[i][i].ln()).sum();
            let evidence = -0.5 * fit - det;
            if best.as_ref().is_none_or(|(e, _)| evidence > *e) {
                let gp = Gp {
                    x: x.to_vec(),
                    alpha,
                    chol,
                    length,
                    mean,
                    scale,
                };
                best = Some((evidence, gp));
            }
        }
        best.map(|(_, gp)| gp)
    }

    /// Predictive mean and standard deviation at `p`, in the targets' units.
    pub fn predict(&self, p: &[f64]) -> (f64, f64) {
        let k: Vec<f64> = self.x.iter().map(|a| matern52(a, p, self.length)).collect();
        let mu: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = forward(&self.chol, &k);
        let var = (1.0 + NOISE - v.iter().map(|x| x * x).sum::<f64>()).max(1e-12);
        (self.mean + self.scale * mu, self.scale * var.sqrt())
    }

    /// Expected improvement below `best` at `p`.
    pub fn expected_improvement(&self, p: &[f64], best: f64) -> f64 {
        let (mu, sigma) = self.predict(p);
        let z = (best - mu) / sigma;
        let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        (best - mu) * crate::param::normal_cdf(z) + sigma * pdf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_interpolates_what_it_saw() {
        let x: Vec<Vec<f64>> = (0..8).map(|i| vec![i as f64 / 7.0]).collect();
        let y: Vec<f64> = x.iter().map(|p| (p[0] - 0.3).powi(2)).collect();
        let gp = Gp::fit(&x, &y).unwrap();
        for (p, want) in x.iter().zip(&y) {
            let (mu, sigma) = gp.predict(p);
            assert!((mu - want).abs() < 1e-3, "{mu} vs {want}");
            assert!(sigma < 1e-2);
        }
        let (_, far) = gp.predict(&[5.0]);
        assert!(far > 0.01, "uncertain far from the data");
    }
}
