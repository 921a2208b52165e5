//! The Slurm queue's resource args: the keys liftoff turns into `sbatch` options, so that a
//! queue's config is checked where it enters (`partiton` refused at queue create), not by an
//! agent at the first run.

/// Resource-arg keys and the `sbatch` option each becomes. Values are strings or numbers.
pub const OPTIONS: &[(&str, &str)] = &[
    ("partition", "--partition"),
    ("time", "--time"),
    ("cpus", "--cpus-per-task"),
    ("cpus_per_task", "--cpus-per-task"),
    ("mem", "--mem"),
    ("memory", "--mem"),
    ("mem_per_cpu", "--mem-per-cpu"),
    ("gres", "--gres"),
    ("account", "--account"),
    ("qos", "--qos"),
    ("nodes", "--nodes"),
    ("ntasks", "--ntasks"),
    ("ntasks_per_node", "--ntasks-per-node"),
    ("constraint", "--constraint"),
    ("reservation", "--reservation"),
    ("nodelist", "--nodelist"),
    ("exclude", "--exclude"),
];

/// The problems with `args`' keys, by path under `at` (values are the runner's to check:
/// a queue's may still hold `{{var}}` placeholders).
pub fn check_keys(args: &serde_json::Value, at: &str) -> Vec<(String, String)> {
    let Some(map) = args.as_object() else {
        return Vec::new();
    };
    map.keys()
        .filter(|k| !matches!(k.as_str(), "gpus" | "extra") && !OPTIONS.iter().any(|(o, _)| o == k))
        .map(|k| {
            let known: Vec<&str> = OPTIONS.iter().map(|(o, _)| *o).collect();
            (
                format!("{at}.{k}"),
                format!(
                    "not a Slurm option liftoff passes on (known: {}, gpus, extra)",
                    known.join(", ")
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_misspelt_key_is_named_with_the_known_ones() {
        let problems =
            super::check_keys(&serde_json::json!({"partiton": "gpu", "gpus": 1}), "config");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "config.partiton");
        assert!(problems[0].1.contains("partition"));
    }
}
