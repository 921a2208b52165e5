//! What a run finds in its environment: the agent's own environment without anything that
//! looks like a secret, the config's `env`, and the run's own variables (liftoff's, and
//! W&B's names so that scripts written for W&B read their config unchanged).

use std::collections::BTreeMap;

/// Names that never reach a run: liftoff's own (the agent's token, the server's address as
/// the agent sees it) and anything named like a credential.
pub fn is_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("LIFTOFF_")
        || upper == "WANDB_API_KEY"
        || upper == "RAY_JOB_HEADERS"
        || [
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "CREDENTIAL",
            "API_KEY",
            "ACCESS_KEY",
            "PRIVATE_KEY",
        ]
        .iter()
        .any(|word| upper.contains(word))
}

/// The agent's environment as a run inherits it.
pub fn inherited(
    agent_env: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    agent_env
        .into_iter()
        .filter(|(k, _)| !is_secret(k))
        .collect()
}

/// The variables that name a run.
pub struct RunVars<'a> {
    pub run_id: &'a str,
    pub run_name: Option<&'a str>,
    pub item_id: i64,
    pub queue: &'a str,
    pub api_url: &'a str,
    pub run_token: &'a str,
    pub config_json: &'a str,
    pub config_file: &'a str,
    pub metrics_file: &'a str,
    pub sweep_id: Option<&'a str>,
    pub project: Option<&'a str>,
    /// Which attempt of its item this run is (1 for the first).
    pub attempt: u32,
}

/// The run's own variables (over the agent's inherited environment): the config's `env`,
/// then liftoff's and W&B's names for the run.
pub fn run_env(extra: &BTreeMap<String, String>, v: &RunVars) -> BTreeMap<String, String> {
    let mut env = extra.clone();
    let mut set = |k: &str, val: &str| {
        env.insert(k.to_string(), val.to_string());
    };
    set("LIFTOFF_RUN_ID", v.run_id);
    set("LIFTOFF_ITEM_ID", &v.item_id.to_string());
    set("LIFTOFF_QUEUE", v.queue);
    set("LIFTOFF_API_URL", v.api_url);
    set("LIFTOFF_RUN_TOKEN", v.run_token);
    set("LIFTOFF_CONFIG", v.config_json);
    set("LIFTOFF_CONFIG_FILE", v.config_file);
    set("LIFTOFF_METRICS_FILE", v.metrics_file);
    set("WANDB_RUN_ID", v.run_id);
    set("WANDB_CONFIG", v.config_json);
    set("WANDB_LAUNCH", "True");
    set("WANDB_LAUNCH_QUEUE_NAME", v.queue);
    set("LIFTOFF_ATTEMPT", &v.attempt.to_string());
    if v.attempt > 1 {
        // A retry (after a loss, a preemption, a failure) resumes what the last one left,
        // as W&B's requeued runs do.
        set("WANDB_RESUME", "allow");
        set("LIFTOFF_RESUMED", "1");
    }
    if let Some(name) = v.run_name {
        set("LIFTOFF_RUN_NAME", name);
        set("WANDB_NAME", name);
    }
    if let Some(sweep) = v.sweep_id {
        set("LIFTOFF_SWEEP_ID", sweep);
        set("WANDB_SWEEP_ID", sweep);
    }
    if let Some(project) = v.project {
        set("WANDB_PROJECT", project);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_with_the_agent() {
        let env = inherited([
            ("PATH".to_string(), "/bin".to_string()),
            ("LIFTOFF_TOKEN".to_string(), "lft_x".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s".to_string()),
            ("GITHUB_TOKEN".to_string(), "t".to_string()),
            ("WANDB_API_KEY".to_string(), "k".to_string()),
            ("db_password".to_string(), "p".to_string()),
            ("CUDA_VISIBLE_DEVICES".to_string(), "0".to_string()),
        ]);
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            ["CUDA_VISIBLE_DEVICES", "PATH"]
        );
    }
}
