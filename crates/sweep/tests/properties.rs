//! Property tests: every sampler stays in its bounds and matches its distribution; the unit
//! map `bayes` searches in is a round trip.

use liftoff_sweep::param::Distribution as D;
use proptest::prelude::*;
use rand::SeedableRng;

fn samples(d: &D, n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| d.sample(&mut rng).as_f64().unwrap())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn uniform_stays_inside(min in -1e3f64..1e3, width in 1e-3f64..1e3, seed: u64) {
        let d = D::Uniform { min, max: min + width };
        for x in samples(&d, 200, seed) {
            prop_assert!(x >= min && x < min + width);
        }
    }

    #[test]
    fn int_uniform_stays_inside_and_hits_both_ends(min in -50i64..50, width in 0i64..5, seed: u64) {
        let d = D::IntUniform { min, max: min + width };
        let xs = samples(&d, 400, seed);
        for x in &xs {
            prop_assert!(x.fract() == 0.0 && *x >= min as f64 && *x <= (min + width) as f64);
        }
        prop_assert!(xs.contains(&(min as f64)) && xs.contains(&((min + width) as f64)));
    }

    #[test]
    fn log_uniform_values_median_is_the_geometric_mean(lo in 1e-6f64..1.0, ratio in 10f64..1e6, seed: u64) {
        let d = D::LogUniformValues { min: lo, max: lo * ratio };
        let xs = samples(&d, 4001, seed);
        for x in &xs {
            prop_assert!(*x >= lo * (1.0 - 1e-12) && *x <= lo * ratio * (1.0 + 1e-12));
        }
        let geo = (lo * lo * ratio).sqrt();
        let m = median(xs);
        // The median of 4001 draws of log-uniform is within a few % of the range in log space.
        prop_assert!((m.ln() - geo.ln()).abs() < 0.06 * ratio.ln(), "median {} vs {}", m, geo);
    }

    #[test]
    fn log_uniform_is_exp_of_its_exponents(lo in -5f64..0.0, width in 0.5f64..5.0, seed: u64) {
        let d = D::LogUniform { min: lo, max: lo + width };
        for x in samples(&d, 200, seed) {
            prop_assert!(x >= lo.exp() * (1.0 - 1e-12) && x <= (lo + width).exp() * (1.0 + 1e-12));
        }
    }

    #[test]
    fn quantized_values_are_multiples_of_q(min in 0f64..100.0, q in prop::sample::select(vec![0.5, 1.0, 2.0, 5.0]), seed: u64) {
        let d = D::QUniform { min, max: min + 50.0, q };
        for x in samples(&d, 100, seed) {
            prop_assert!(((x / q) - (x / q).round()).abs() < 1e-9);
        }
    }

    #[test]
    fn normal_centres_on_mu(mu in -100f64..100.0, sigma in 0.1f64..10.0, seed: u64) {
        let d = D::Normal { mu, sigma };
        let m = median(samples(&d, 2001, seed));
        prop_assert!((m - mu).abs() < 0.15 * sigma, "median {} vs mu {}", m, mu);
    }

    #[test]
    fn beta_stays_in_the_unit_interval(a in 0.2f64..5.0, b in 0.2f64..5.0, seed: u64) {
        for x in samples(&D::Beta { a, b }, 200, seed) {
            prop_assert!((0.0..=1.0).contains(&x));
        }
    }

    #[test]
    fn the_unit_map_round_trips(u in 0.0f64..1.0, min in -10f64..10.0, width in 0.1f64..20.0) {
        for d in [
            D::Uniform { min, max: min + width },
            D::LogUniformValues { min: min.abs() + 0.01, max: min.abs() + 0.01 + width },
            D::Normal { mu: min, sigma: width },
        ] {
            let v = d.from_unit(u);
            prop_assert!((d.to_unit(&v) - u).abs() < 1e-6, "{:?} at {}", d, u);
        }
    }
}

#[test]
fn categorical_follows_its_probabilities() {
    let d = D::Categorical {
        values: vec![serde_json::json!("a"), serde_json::json!("b")],
        probabilities: Some(vec![0.8, 0.2]),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let a = (0..5000).filter(|_| d.sample(&mut rng) == "a").count();
    assert!((3800..4200).contains(&a), "{a} of 5000");
}
