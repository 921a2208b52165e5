//! One sweep parameter: its distribution, sampling, the finite values `grid` walks, and the
//! map to and from the unit interval that `bayes` searches in.

use rand::Rng;
use rand_distr::{Beta, Distribution as _, Normal};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    Constant(Value),
    Categorical {
        values: Vec<Value>,
        /// Summing to 1, one per value; `None`: equally likely.
        probabilities: Option<Vec<f64>>,
    },
    IntUniform {
        min: i64,
        max: i64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    QUniform {
        min: f64,
        max: f64,
        q: f64,
    },
    /// `exp(uniform(min, max))`: min and max are natural-log exponents.
    LogUniform {
        min: f64,
        max: f64,
    },
    /// Log-uniform between the values min and max.
    LogUniformValues {
        min: f64,
        max: f64,
    },
    QLogUniform {
        min: f64,
        max: f64,
        q: f64,
    },
    QLogUniformValues {
        min: f64,
        max: f64,
        q: f64,
    },
    /// `exp(-uniform(min, max))`: min and max are exponents.
    InvLogUniform {
        min: f64,
        max: f64,
    },
    /// `1/x` with `x` log-uniform between `1/max` and `1/min`.
    InvLogUniformValues {
        min: f64,
        max: f64,
    },
    Normal {
        mu: f64,
        sigma: f64,
    },
    QNormal {
        mu: f64,
        sigma: f64,
        q: f64,
    },
    LogNormal {
        mu: f64,
        sigma: f64,
    },
    QLogNormal {
        mu: f64,
        sigma: f64,
        q: f64,
    },
    Beta {
        a: f64,
        b: f64,
    },
    QBeta {
        a: f64,
        b: f64,
        q: f64,
    },
}

/// A parameter: a leaf with a distribution, or nested parameters (a dict in the run config).
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Leaf(Distribution),
    Nested(Vec<(String, Param)>),
}

fn quantize(x: f64, q: f64) -> f64 {
    (x / q).round() * q
}

impl Distribution {
    /// One value.
    pub fn sample(&self, rng: &mut impl Rng) -> Value {
        use Distribution::*;
        let num = |x: f64| serde_json::json!(x);
        match self {
            Constant(v) => v.clone(),
            Categorical {
                values,
                probabilities,
            } => {
                let i = match probabilities {
                    Some(p) => {
                        let mut u: f64 = rng.random();
                        let mut k = p.len() - 1;
                        for (j, pj) in p.iter().enumerate() {
                            if u < *pj {
                                k = j;
                                break;
                            }
                            u -= pj;
                        }
                        k
                    }
                    None => rng.random_range(0..values.len()),
                };
                values[i].clone()
            }
            IntUniform { min, max } => serde_json::json!(rng.random_range(*min..=*max)),
            Uniform { min, max } => num(rng.random_range(*min..*max)),
            QUniform { min, max, q } => num(quantize(rng.random_range(*min..*max), *q)),
            LogUniform { min, max } => num(rng.random_range(*min..*max).exp()),
            LogUniformValues { min, max } => num(rng.random_range(min.ln()..max.ln()).exp()),
            QLogUniform { min, max, q } => num(quantize(rng.random_range(*min..*max).exp(), *q)),
            QLogUniformValues { min, max, q } => {
                num(quantize(rng.random_range(min.ln()..max.ln()).exp(), *q))
            }
            InvLogUniform { min, max } => num((-rng.random_range(*min..*max)).exp()),
            InvLogUniformValues { min, max } => {
                let x = rng.random_range((1.0 / max).ln()..(1.0 / min).ln()).exp();
                num(1.0 / x)
            }
            Normal { mu, sigma } => num(normal(*mu, *sigma, rng)),
            QNormal { mu, sigma, q } => num(quantize(normal(*mu, *sigma, rng), *q)),
            LogNormal { mu, sigma } => num(normal(*mu, *sigma, rng).exp()),
            QLogNormal { mu, sigma, q } => num(quantize(normal(*mu, *sigma, rng).exp(), *q)),
            Beta { a, b } => num(beta(*a, *b, rng)),
            QBeta { a, b, q } => num(quantize(beta(*a, *b, rng), *q)),
        }
    }

    /// How many values `grid` walks; `None` when the parameter is not finite. Counted, never
    /// listed: an integer range from a request may span 2^64 values.
    pub fn grid_len(&self) -> Option<u128> {
        match self {
            Distribution::Constant(_) => Some(1),
            Distribution::Categorical { values, .. } => Some(values.len() as u128),
            Distribution::IntUniform { min, max } => {
                Some((i128::from(*max) - i128::from(*min) + 1).max(0) as u128)
            }
            _ => None,
        }
    }

    /// The `i`th value `grid` walks (`i` below [`Distribution::grid_len`]).
    pub fn grid_value(&self, i: u128) -> Option<Value> {
        match self {
            Distribution::Constant(v) if i == 0 => Some(v.clone()),
            Distribution::Categorical { values, .. } => {
                usize::try_from(i).ok().and_then(|i| values.get(i)).cloned()
            }
            Distribution::IntUniform { min, max } => {
                let v = i128::from(*min).checked_add(i128::try_from(i).ok()?)?;
                (v <= i128::from(*max)).then(|| serde_json::json!(v as i64))
            }
            _ => None,
        }
    }

    /// The unit interval `bayes` searches: `to_unit` and `from_unit` are inverse (up to
    /// rounding for integers, quantization and categories). Unbounded distributions are cut
    /// at their 0.1% and 99.9% quantiles.
    pub fn from_unit(&self, u: f64) -> Value {
        use Distribution::*;
        let u = u.clamp(0.0, 1.0);
        let lerp = |a: f64, b: f64| a + (b - a) * u;
        let num = |x: f64| serde_json::json!(x);
        match self {
            Constant(v) => v.clone(),
            Categorical { values, .. } => {
                let i = ((u * values.len() as f64) as usize).min(values.len() - 1);
                values[i].clone()
            }
            IntUniform { min, max } => {
                let x = lerp(*min as f64 - 0.5, *max as f64 + 0.5).round() as i64;
                serde_json::json!(x.clamp(*min, *max))
            }
            Uniform { min, max } => num(lerp(*min, *max)),
            QUniform { min, max, q } => num(quantize(lerp(*min, *max), *q)),
            LogUniform { min, max } => num(lerp(*min, *max).exp()),
            LogUniformValues { min, max } => num(lerp(min.ln(), max.ln()).exp()),
            QLogUniform { min, max, q } => num(quantize(lerp(*min, *max).exp(), *q)),
            QLogUniformValues { min, max, q } => num(quantize(lerp(min.ln(), max.ln()).exp(), *q)),
            InvLogUniform { min, max } => num((-lerp(*min, *max)).exp()),
            InvLogUniformValues { min, max } => num(lerp(min.ln(), max.ln()).exp()),
            Normal { mu, sigma } => num(mu + sigma * probit(cut(u))),
            QNormal { mu, sigma, q } => num(quantize(mu + sigma * probit(cut(u)), *q)),
            LogNormal { mu, sigma } => num((mu + sigma * probit(cut(u))).exp()),
            QLogNormal { mu, sigma, q } => num(quantize((mu + sigma * probit(cut(u))).exp(), *q)),
            // Searched as uniform over the beta's support.
            Beta { .. } => num(u),
            QBeta { q, .. } => num(quantize(u, *q)),
        }
    }

    /// Where a value lies in the unit interval (see [`Distribution::from_unit`]).
    pub fn to_unit(&self, v: &Value) -> f64 {
        use Distribution::*;
        let x = v.as_f64().unwrap_or(0.0);
        let inv = |a: f64, b: f64, x: f64| {
            if b > a {
                ((x - a) / (b - a)).clamp(0.0, 1.0)
            } else {
                0.5
            }
        };
        match self {
            Constant(_) => 0.5,
            Categorical { values, .. } => {
                let i = values.iter().position(|c| c == v).unwrap_or(0);
                (i as f64 + 0.5) / values.len() as f64
            }
            IntUniform { min, max } => inv(*min as f64 - 0.5, *max as f64 + 0.5, x),
            Uniform { min, max } | QUniform { min, max, .. } => inv(*min, *max, x),
            LogUniform { min, max } | QLogUniform { min, max, .. } => {
                inv(*min, *max, x.max(f64::MIN_POSITIVE).ln())
            }
            LogUniformValues { min, max }
            | QLogUniformValues { min, max, .. }
            | InvLogUniformValues { min, max } => {
                inv(min.ln(), max.ln(), x.max(f64::MIN_POSITIVE).ln())
            }
            InvLogUniform { min, max } => inv(*min, *max, -x.max(f64::MIN_POSITIVE).ln()),
            Normal { mu, sigma } | QNormal { mu, sigma, .. } => {
                inv(cut(0.0), cut(1.0), normal_cdf((x - mu) / sigma))
            }
            LogNormal { mu, sigma } | QLogNormal { mu, sigma, .. } => inv(
                cut(0.0),
                cut(1.0),
                normal_cdf((x.max(f64::MIN_POSITIVE).ln() - mu) / sigma),
            ),
            Beta { .. } | QBeta { .. } => x.clamp(0.0, 1.0),
        }
    }
}

/// Keeps the unit interval off the infinite tails of unbounded distributions.
fn cut(u: f64) -> f64 {
    0.001 + 0.998 * u
}

fn normal(mu: f64, sigma: f64, rng: &mut impl Rng) -> f64 {
    Normal::new(mu, sigma).map_or(mu, |n| n.sample(rng))
}

fn beta(a: f64, b: f64, rng: &mut impl Rng) -> f64 {
    Beta::new(a, b).map_or(0.5, |d| d.sample(rng))
}

/// The standard normal CDF (Abramowitz–Stegun 7.1.26 through erf).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}
