//! `liftoff bench sweep`: the search methods on minimise `(x-3)² + (y+1)²`, x and y uniform
//! in [-10, 10], a budget of 30 runs, over 10 seeds: the mean (and worst) best value of
//! `random` and `bayes`. The anchor is W&B's own sweeps engine (`sweeps` 0.2.0) on exactly this
//! problem and budget: bayes 0.006 (every seed below 0.05), random 4.6.

use clap::Args;
use liftoff_sweep::{propose, Observation, SweepConfig};
use rand::SeedableRng;
use serde_json::json;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SweepBench {
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    #[arg(long, default_value_t = 30)]
    pub budget: usize,
}

fn objective(p: &serde_json::Value) -> f64 {
    let (x, y) = (
        p["x"].as_f64().unwrap_or(0.0),
        p["y"].as_f64().unwrap_or(0.0),
    );
    (x - 3.0).powi(2) + (y + 1.0).powi(2)
}

fn run_method(method: &str, seeds: u64, budget: usize) -> anyhow::Result<serde_json::Value> {
    let doc = json!({"method": method, "metric": {"name": "f", "goal": "minimize"},
        "parameters": {"x": {"min": -10.0, "max": 10.0}, "y": {"min": -10.0, "max": 10.0}}});
    let config = SweepConfig::parse(&doc).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let mut bests = Vec::new();
    let start = Instant::now();
    for seed in 0..seeds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut seen: Vec<Observation> = Vec::new();
        for _ in 0..budget {
            let params = propose(&config, &seen, &mut rng).expect("random and bayes never run out");
            let metric = Some(objective(&params));
            seen.push(Observation { params, metric });
        }
        bests.push(
            seen.iter()
                .filter_map(|o| o.metric)
                .fold(f64::INFINITY, f64::min),
        );
    }
    let mean = bests.iter().sum::<f64>() / bests.len() as f64;
    let worst = bests.iter().copied().fold(0.0, f64::max);
    Ok(json!({
        "mean_best": mean, "worst_best": worst, "bests": bests,
        "ms_per_proposal": start.elapsed().as_secs_f64() * 1e3 / (seeds as f64 * budget as f64),
    }))
}

pub async fn run(b: SweepBench) -> anyhow::Result<()> {
    let random = run_method("random", b.seeds, b.budget)?;
    let bayes = run_method("bayes", b.seeds, b.budget)?;
    let meets = bayes["mean_best"].as_f64().unwrap_or(f64::INFINITY) <= 0.006;
    let report = json!({
        "problem": "minimise (x-3)^2 + (y+1)^2, x, y uniform in [-10, 10]",
        "seeds": b.seeds, "budget": b.budget,
        "random": random, "bayes": bayes,
        "anchor_wandb_sweeps_0_2_0": {"bayes_mean_best": 0.006, "bayes_every_seed_below": 0.05,
            "random_mean_best": 4.6},
        "meets_target": meets,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
