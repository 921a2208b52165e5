//! Proposing the next run's parameters: `grid` walks the product of the values in a fixed
//! order, `random` samples every parameter, `bayes` fits a Gaussian process to the runs so far
//! and takes the point of highest expected improvement. The scheduler calls [`propose`] with
//! everything it knows, so a resumed scheduler proposes exactly as the lost one would have.

use crate::config::{Goal, Method, SweepConfig};
use crate::gp::Gp;
use crate::param::{Distribution, Param};
use rand::Rng;
use serde_json::{Map, Value};

/// A run of the sweep so far: its parameters and, once known, its metric (the summary the
/// sweep optimizes: the best value for its goal).
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub params: Value,
    pub metric: Option<f64>,
}

/// Random runs before `bayes` trusts its model.
const BAYES_RANDOM_START: usize = 5;
/// Candidates scored for expected improvement per proposal.
const CANDIDATES: usize = 1500;

/// The leaves of a parameter tree, each with its path.
pub fn leaves(params: &[(String, Param)]) -> Vec<(Vec<String>, &Distribution)> {
    let mut out = Vec::new();
    fn walk<'a>(
        params: &'a [(String, Param)],
        prefix: &[String],
        out: &mut Vec<(Vec<String>, &'a Distribution)>,
    ) {
        for (name, p) in params {
            let mut path = prefix.to_vec();
            path.push(name.clone());
            match p {
                Param::Leaf(d) => out.push((path, d)),
                Param::Nested(inner) => walk(inner, &path, out),
            }
        }
    }
    walk(params, &[], &mut out);
    out
}

/// Builds the nested run config from leaf values.
pub fn assemble(paths: &[Vec<String>], values: Vec<Value>) -> Value {
    let mut root = Map::new();
    for (path, value) in paths.iter().zip(values) {
        let mut node = &mut root;
        for key in &path[..path.len() - 1] {
            node = node
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("nested parameters are objects");
        }
        node.insert(path[path.len() - 1].clone(), value);
    }
    Value::Object(root)
}

fn lookup<'a>(params: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(params, |v, k| v.get(k))
}

/// The next run's parameters, or `None` when the method has nothing left (grid exhausted).
pub fn propose(config: &SweepConfig, seen: &[Observation], rng: &mut impl Rng) -> Option<Value> {
    let leaves = leaves(&config.parameters);
    let paths: Vec<Vec<String>> = leaves.iter().map(|(p, _)| p.clone()).collect();
    match config.method {
        Method::Grid => grid_next(&leaves, &paths, seen),
        Method::Random => Some(assemble(
            &paths,
            leaves.iter().map(|(_, d)| d.sample(rng)).collect(),
        )),
        Method::Bayes => Some(bayes_next(config, &leaves, &paths, seen, rng)),
    }
}

/// The grid's `index`th point: the last parameter varies fastest. `None` past the last.
pub fn grid_point(leaves: &[(Vec<String>, &Distribution)], mut index: u128) -> Option<Vec<Value>> {
    let mut values = Vec::with_capacity(leaves.len());
    for (_, d) in leaves.iter().rev() {
        let len = d.grid_len()?;
        if len == 0 {
            return None;
        }
        values.push(d.grid_value(index % len)?);
        index /= len;
    }
    if index > 0 {
        return None;
    }
    values.reverse();
    Some(values)
}

/// How many points the grid has (saturating), `None` when a parameter is not finite.
pub fn grid_size(leaves: &[(Vec<String>, &Distribution)]) -> Option<u128> {
    leaves
        .iter()
        .try_fold(1u128, |n, (_, d)| Some(n.saturating_mul(d.grid_len()?)))
}

/// The first point no run has had, walked in order without listing the grid (the config
/// caps its size, see `MAX_GRID_POINTS`).
fn grid_next(
    leaves: &[(Vec<String>, &Distribution)],
    paths: &[Vec<String>],
    seen: &[Observation],
) -> Option<Value> {
    // A run's config may hold more than the sweep's parameters (a job's defaults merged
    // under them): a point is seen when every parameter matches.
    let key = |values: &[Option<&Value>]| serde_json::to_string(values).unwrap_or_default();
    let had: std::collections::HashSet<String> = seen
        .iter()
        .map(|o| {
            let values: Vec<Option<&Value>> = paths.iter().map(|p| lookup(&o.params, p)).collect();
            key(&values)
        })
        .collect();
    let size = grid_size(leaves)?;
    (0..size)
        .map_while(|i| grid_point(leaves, i))
        .find(|values| !had.contains(&key(&values.iter().map(Some).collect::<Vec<_>>())))
        .map(|values| assemble(paths, values))
}

fn bayes_next(
    config: &SweepConfig,
    leaves: &[(Vec<String>, &Distribution)],
    paths: &[Vec<String>],
    seen: &[Observation],
    rng: &mut impl Rng,
) -> Value {
    let random = |rng: &mut _| assemble(paths, leaves.iter().map(|(_, d)| d.sample(rng)).collect());
    let sign = match config.metric.as_ref().map(|m| m.goal) {
        Some(Goal::Maximize) => -1.0,
        _ => 1.0,
    };
    let unit = |params: &Value| -> Vec<f64> {
        leaves
            .iter()
            .map(|(path, d)| lookup(params, path).map_or(0.5, |v| d.to_unit(v)))
            .collect()
    };
    let done: Vec<(Vec<f64>, f64)> = seen
        .iter()
        .filter_map(|o| {
            o.metric
                .filter(|m| m.is_finite())
                .map(|m| (unit(&o.params), sign * m))
        })
        .collect();
    if done.len() < BAYES_RANDOM_START {
        return random(rng);
    }
    // Runs still going count as if they scored the mean so far ("constant liar"), so that
    // proposals made while they run spread out instead of piling onto one point.
    let mean = done.iter().map(|(_, y)| y).sum::<f64>() / done.len() as f64;
    let mut x: Vec<Vec<f64>> = done.iter().map(|(p, _)| p.clone()).collect();
    let mut y: Vec<f64> = done.iter().map(|(_, v)| *v).collect();
    for o in seen.iter().filter(|o| o.metric.is_none()) {
        x.push(unit(&o.params));
        y.push(mean);
    }
    let Some(gp) = Gp::fit(&x, &y) else {
        return random(rng);
    };
    let best = done.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
    let d = leaves.len();
    let mut incumbents: Vec<&(Vec<f64>, f64)> = done.iter().collect();
    incumbents.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut best_point = vec![0.5; d];
    let mut best_ei = f64::NEG_INFINITY;
    for k in 0..CANDIDATES {
        // Half the candidates anywhere, half near the best runs at shrinking scales: the
        // first explore, the second refine.
        let point: Vec<f64> = if k % 2 == 0 {
            (0..d).map(|_| rng.random::<f64>()).collect()
        } else {
            let (base, _) = incumbents[(k / 2) % incumbents.len().min(3)];
            let scale = [0.1, 0.03, 0.01, 0.003][(k / 6) % 4];
            base.iter()
                .map(|b| (b + scale * (rng.random::<f64>() * 2.0 - 1.0)).clamp(0.0, 1.0))
                .collect()
        };
        let ei = gp.expected_improvement(&point, best);
        if ei > best_ei {
            best_ei = ei;
            best_point = point;
        }
    }
    assemble(
        paths,
        leaves
            .iter()
            .zip(&best_point)
            .map(|((_, d), u)| d.from_unit(*u))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use serde_json::json;

    fn config(doc: Value) -> SweepConfig {
        SweepConfig::parse(&doc).unwrap()
    }

    #[test]
    fn grid_yields_the_product_each_once_then_stops() {
        let c = config(json!({"method": "grid", "parameters": {
            "a": {"values": [1, 2, 3]}, "b": {"min": 0, "max": 1},
            "m": {"parameters": {"w": {"values": ["x", "y"]}}}, "k": {"value": 7}}}));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = Vec::new();
        while let Some(p) = propose(&c, &seen, &mut rng) {
            seen.push(Observation {
                params: p,
                metric: None,
            });
            assert!(seen.len() <= 12, "more than the product");
        }
        assert_eq!(seen.len(), 3 * 2 * 2);
        for i in 0..seen.len() {
            for j in 0..i {
                assert_ne!(seen[i].params, seen[j].params, "a point twice");
            }
        }
        assert_eq!(
            seen[0].params,
            json!({"a": 1, "b": 0, "m": {"w": "x"}, "k": 7})
        );
    }

    #[test]
    fn grid_points_are_seen_whatever_else_the_run_config_holds() {
        let c = config(json!({"method": "grid", "parameters": {"x": {"values": [1, 2]}}}));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // A job's default config merged under the parameters.
        let seen = vec![Observation {
            params: json!({"x": 1, "offset": 100}),
            metric: None,
        }];
        assert_eq!(propose(&c, &seen, &mut rng), Some(json!({"x": 2})));
        let seen = [
            seen,
            vec![Observation {
                params: json!({"x": 2, "offset": 100}),
                metric: None,
            }],
        ]
        .concat();
        assert_eq!(propose(&c, &seen, &mut rng), None);
    }

    fn quadratic(p: &Value) -> f64 {
        let (x, y) = (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap());
        (x - 3.0).powi(2) + (y + 1.0).powi(2)
    }

    #[test]
    fn bayes_finds_the_bottom_of_a_bowl() {
        let c = config(
            json!({"method": "bayes", "metric": {"name": "f", "goal": "minimize"},
            "parameters": {"x": {"min": -10.0, "max": 10.0}, "y": {"min": -10.0, "max": 10.0}}}),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen = Vec::new();
        for _ in 0..30 {
            let p = propose(&c, &seen, &mut rng).unwrap();
            let f = quadratic(&p);
            seen.push(Observation {
                params: p,
                metric: Some(f),
            });
        }
        let best = seen
            .iter()
            .filter_map(|o| o.metric)
            .fold(f64::INFINITY, f64::min);
        assert!(best < 0.1, "best {best}");
    }

    #[test]
    fn maximize_goals_are_climbed() {
        let c = config(
            json!({"method": "bayes", "metric": {"name": "f", "goal": "maximize"},
            "parameters": {"x": {"min": -10.0, "max": 10.0}, "y": {"min": -10.0, "max": 10.0}}}),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut seen = Vec::new();
        for _ in 0..25 {
            let p = propose(&c, &seen, &mut rng).unwrap();
            let f = -quadratic(&p);
            seen.push(Observation {
                params: p,
                metric: Some(f),
            });
        }
        let best = seen
            .iter()
            .filter_map(|o| o.metric)
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(best > -0.5, "best {best}");
    }
}
