//! The agent's configuration: defaults, then a YAML file (W&B's `launch-config.yaml` keys
//! where they mean the same), then environment variables, then flags. Validation is strict
//! and reports every problem at once, each naming where it came from.

use serde_norway::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// Queues to lease from, round-robin.
    pub queues: Vec<String>,
    /// Concurrent runs, schedulers not counted; -1 = unlimited.
    pub max_jobs: i64,
    /// Concurrent sweep schedulers; -1 = unlimited.
    pub max_schedulers: i64,
    /// 0: status line every 300 s; 1: every 20 s; 2: also internal logs.
    pub verbosity: u8,
    /// Grace a run gets to end after it is asked to stop, before it is killed.
    pub stopped_run_timeout: Duration,
    /// Refuse entrypoint overrides in launch specs.
    pub secure_mode: bool,
    /// The journal, run directories and the supervisor's socket.
    pub state_dir: PathBuf,
    /// How long a run may stay `starting` before it fails.
    pub start_timeout: Duration,
    /// How long a heartbeat is held open by the server (the longest a stop can take to arrive
    /// is far shorter: stops are pushed).
    pub heartbeat_every: Duration,
    /// How long a lease call waits for an item.
    pub lease_wait: Duration,
    /// Extra environment for every run (`env` key).
    pub env: BTreeMap<String, String>,
    /// The name this agent registers with (default: the host name).
    pub hostname: String,
    /// How often a Slurm agent reads the state of all its jobs (one `squeue` each time).
    pub slurm_poll_interval: Duration,
    /// Build a Python virtual environment for jobs with requirements (`builder: noop`
    /// turns it off: runs use the machine's interpreter).
    pub build_envs: bool,
    /// Each backend's settings (`runners:`, keyed by resource type).
    pub runners: Vec<liftoff_runner::Section>,
    /// The image code jobs are built on for container runs (W&B's `builder.base_image`).
    pub base_image: Option<String>,
    /// Where built images are pushed (W&B's `registry.uri`).
    pub registry: Option<String>,
    /// How long a finished run's directory stays once its end and output are on the server
    /// (`keep_finished_runs`), and a failed, stopped or lost one's (`keep_failed_runs`).
    pub keep_finished: Duration,
    pub keep_failed: Duration,
    /// A sweep whose last this many runs all failed stops proposing, and says so
    /// (`sweep_failure_limit`; 0 = never).
    pub sweep_failure_limit: u32,
    /// The state directory's free space below which the agent takes no work
    /// (`min_free_disk_mb`; 0 = never checked).
    pub min_free_disk: u64,
}

/// Defaults, each with its reason.
impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig {
            queues: vec!["default".into()],
            // W&B's default: one run at a time unless told otherwise.
            max_jobs: 1,
            max_schedulers: 1,
            verbosity: 0,
            // W&B's default grace.
            stopped_run_timeout: Duration::from_secs(60),
            secure_mode: false,
            state_dir: PathBuf::from(".liftoff/agent"),
            // Local runs start at once; a backend that queues (Slurm) sets its own.
            start_timeout: Duration::from_secs(300),
            // Well inside the server's 30 s agent timeout.
            heartbeat_every: Duration::from_secs(10),
            lease_wait: Duration::from_secs(30),
            env: BTreeMap::new(),
            hostname: hostname(),
            // Slurm schedules about once a second; two looks a second see an end promptly
            // at the cost of two squeue calls a second, whatever the number of jobs.
            slurm_poll_interval: Duration::from_millis(500),
            build_envs: true,
            runners: Vec::new(),
            base_image: None,
            registry: None,
            // What a finished run said is on the server; what it left in its directory (a
            // code job's copy of the code) is the disk that grew without bound.
            keep_finished: Duration::ZERO,
            // A day to look into what a failed run left behind.
            keep_failed: Duration::from_secs(24 * 3600),
            // Five in a row is a broken program, not bad luck with parameters.
            sweep_failure_limit: 5,
            // Room for a run's files, its output as it grows and the journal, with margin.
            min_free_disk: 64 << 20,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".to_string())
}

/// Every problem found, each as "where: key: problem".
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid agent config: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigErrors {}

/// What flags say; `None` leaves the value to the file and env.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub queues: Vec<String>,
    pub max_jobs: Option<i64>,
    pub max_schedulers: Option<i64>,
    pub verbosity: Option<u8>,
    pub state_dir: Option<PathBuf>,
}

const KNOWN: &[&str] = &[
    "queues",
    "queue",
    "max_jobs",
    "max_schedulers",
    "verbosity",
    "stopped_run_timeout",
    "secure_mode",
    "entity",
    "builder",
    "registry",
    "environment",
    "state_dir",
    "start_timeout",
    "heartbeat_interval",
    "env",
    "name",
    "slurm_poll_interval",
    "runners",
    "keep_finished_runs",
    "keep_failed_runs",
    "sweep_failure_limit",
    "min_free_disk_mb",
];

/// The largest count `max_jobs` and `max_schedulers` take (beyond it, a typo).
const MAX_LIMIT: i64 = 100_000;

/// Loads and validates over `defaults`: the file, then env, then flags. `notices` are for
/// keys accepted but meaning nothing here.
pub fn load(
    defaults: AgentConfig,
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    flags: &Flags,
) -> Result<(AgentConfig, Vec<String>), ConfigErrors> {
    let mut cfg = defaults;
    let mut errors = Vec::new();
    let mut notices = Vec::new();
    if let Some(path) = file {
        apply_file(&mut cfg, path, &mut errors, &mut notices);
    }
    apply_env(&mut cfg, env, &mut errors);
    if !flags.queues.is_empty() {
        cfg.queues = flags.queues.clone();
    }
    if let Some(n) = flags.max_jobs {
        check_limit("--max-jobs", n, &mut errors);
        cfg.max_jobs = n;
    }
    if let Some(n) = flags.max_schedulers {
        check_limit("--max-schedulers", n, &mut errors);
        cfg.max_schedulers = n;
    }
    if let Some(v) = flags.verbosity {
        cfg.verbosity = v.min(2);
    }
    if let Some(dir) = &flags.state_dir {
        cfg.state_dir = dir.clone();
    }
    if cfg.queues.is_empty() {
        errors.push("queues: name at least one queue".into());
    }
    if cfg.max_jobs == 0 {
        errors.push("max_jobs: 0 would run nothing; give a count ≥ 1, or -1 for unlimited".into());
    }
    for (key, n) in [
        ("max_jobs", cfg.max_jobs),
        ("max_schedulers", cfg.max_schedulers),
    ] {
        if n > MAX_LIMIT {
            errors.push(format!(
                "{key}: {n} is more than one agent can hold (at most {MAX_LIMIT}; -1 for unlimited)"
            ));
        }
    }
    for q in &cfg.queues {
        if let Err(e) = liftoff_types::ids::check_queue_name(q) {
            errors.push(format!("queues: {e}"));
        }
    }
    if errors.is_empty() {
        Ok((cfg, notices))
    } else {
        Err(ConfigErrors(errors))
    }
}

fn check_limit(what: &str, n: i64, errors: &mut Vec<String>) {
    if n < -1 {
        errors.push(format!(
            "{what}: {n} is not allowed; use -1 for unlimited or a count ≥ 0"
        ));
    }
}

fn apply_file(
    cfg: &mut AgentConfig,
    path: &Path,
    errors: &mut Vec<String>,
    notices: &mut Vec<String>,
) {
    let at = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return errors.push(format!("{at}: cannot read: {e}")),
    };
    let doc: Value = match serde_norway::from_str(&text) {
        Ok(v) => v,
        Err(e) => return errors.push(format!("{at}: not valid YAML: {e}")),
    };
    let map = match doc {
        Value::Mapping(m) => m,
        Value::Null => return,
        _ => return errors.push(format!("{at}: must be a mapping of keys")),
    };
    for (key, value) in map {
        let Some(key) = key.as_str().map(str::to_string) else {
            errors.push(format!("{at}: keys must be strings, not {key:?}"));
            continue;
        };
        let mut bad = |problem: &str| errors.push(format!("{at}: {key}: {problem}"));
        match key.as_str() {
            "queues" => match string_list(&value) {
                Some(q) => cfg.queues = q,
                None => bad("must be a list of queue names"),
            },
            "queue" => match value.as_str() {
                Some(q) => cfg.queues = vec![q.to_string()],
                None => bad("must be a queue name"),
            },
            "max_jobs" | "max_schedulers" => match value.as_i64() {
                Some(n) if n >= -1 => {
                    if key == "max_jobs" {
                        cfg.max_jobs = n
                    } else {
                        cfg.max_schedulers = n
                    }
                }
                Some(n) => bad(&format!(
                    "{n} is not allowed; use -1 for unlimited or a count ≥ 0"
                )),
                None => bad(&format!("must be a whole number, not {}", describe(&value))),
            },
            "min_free_disk_mb" => match value.as_u64() {
                Some(n) if n <= 1 << 30 => cfg.min_free_disk = n << 20,
                _ => bad("must be a whole number of MiB (0 = never checked)"),
            },
            "sweep_failure_limit" => match value.as_u64() {
                Some(n) if n <= 10_000 => cfg.sweep_failure_limit = n as u32,
                _ => bad("must be a whole number from 0 (never) to 10000"),
            },
            "verbosity" => match value.as_u64() {
                Some(v) if v <= 2 => cfg.verbosity = v as u8,
                _ => bad("must be 0, 1 or 2"),
            },
            "stopped_run_timeout"
            | "start_timeout"
            | "heartbeat_interval"
            | "keep_finished_runs"
            | "keep_failed_runs" => match seconds(&value) {
                Some(d) => match key.as_str() {
                    "stopped_run_timeout" => cfg.stopped_run_timeout = d,
                    "start_timeout" => cfg.start_timeout = d,
                    "keep_finished_runs" => cfg.keep_finished = d,
                    "keep_failed_runs" => cfg.keep_failed = d,
                    _ if d < Duration::from_secs(1) || d > Duration::from_secs(20) => bad(
                        "must be from 1 to 20 seconds (the server declares an agent lost after 30)",
                    ),
                    _ => cfg.heartbeat_every = d,
                },
                None => bad(&format!(
                    "must be a number of seconds ≥ 0, not {}",
                    describe(&value)
                )),
            },
            "slurm_poll_interval" => match seconds(&value) {
                Some(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(60) => {
                    cfg.slurm_poll_interval = d
                }
                _ => bad("must be from 0.1 to 60 seconds"),
            },
            "secure_mode" => match value.as_bool() {
                Some(b) => cfg.secure_mode = b,
                None => bad("must be true or false"),
            },
            "state_dir" => match value.as_str() {
                Some(d) => cfg.state_dir = PathBuf::from(d),
                None => bad("must be a path"),
            },
            "name" => match value.as_str() {
                Some(n) => cfg.hostname = n.to_string(),
                None => bad("must be a string"),
            },
            "env" => match string_map(&value) {
                Some(m) => cfg.env = m,
                None => bad("must be a mapping of variable names to strings"),
            },
            "builder" => {
                match value.get("type").and_then(Value::as_str) {
                    Some("noop") => cfg.build_envs = false,
                    None | Some("venv") | Some("docker") => cfg.build_envs = true,
                    Some(other) => notices.push(format!(
                        "builder type {other:?} is not available here: container runs get images built by the engine (docker), local runs Python virtual environments (venv), or the machine's interpreter with noop"
                    )),
                }
                match value.get("base_image") {
                    None => {}
                    Some(Value::String(image)) if !image.trim().is_empty() => {
                        cfg.base_image = Some(image.clone())
                    }
                    Some(_) => bad("base_image: must be an image reference"),
                }
            }
            "registry" => match value.get("uri") {
                Some(Value::String(uri)) if !uri.trim().is_empty() => {
                    cfg.registry = Some(uri.trim_end_matches('/').to_string())
                }
                None => notices.push(format!(
                    "{key} without a uri means nothing to liftoff; ignored"
                )),
                Some(_) => bad("uri: must be a registry address such as registry.example:5000"),
            },
            "runners" => match serde_json::to_value(&value)
                .map_err(|e| vec![format!("runners: {e}")])
                .and_then(liftoff_runner::Section::parse_map)
            {
                Ok(sections) => cfg.runners = sections,
                Err(problems) => {
                    for p in problems {
                        errors.push(format!("{at}: {p}"));
                    }
                }
            },
            "entity" | "environment" => notices.push(format!(
                "{key} is W&B-specific and means nothing to liftoff; ignored"
            )),
            _ => bad(&format!("unknown key (known keys: {})", KNOWN.join(", "))),
        }
    }
}

fn apply_env(cfg: &mut AgentConfig, env: &BTreeMap<String, String>, errors: &mut Vec<String>) {
    if let Some(q) = env.get("LIFTOFF_AGENT_QUEUES") {
        cfg.queues = q
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    for (var, field) in [
        ("WANDB_LAUNCH_MAX_JOBS", 0),
        ("LIFTOFF_AGENT_MAX_JOBS", 0),
        ("LIFTOFF_AGENT_MAX_SCHEDULERS", 1),
    ] {
        let Some(text) = env.get(var) else { continue };
        match text.trim().parse::<i64>() {
            Ok(n) if n >= -1 => {
                if field == 0 {
                    cfg.max_jobs = n
                } else {
                    cfg.max_schedulers = n
                }
            }
            _ => errors.push(format!("{var}: {text:?} must be a whole number ≥ -1")),
        }
    }
    if let Some(dir) = env.get("LIFTOFF_AGENT_STATE_DIR") {
        cfg.state_dir = PathBuf::from(dir);
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_sequence()?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn string_map(v: &Value) -> Option<BTreeMap<String, String>> {
    v.as_mapping()?
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.as_str()?.to_string(), value))
        })
        .collect()
}

fn seconds(v: &Value) -> Option<Duration> {
    let s = v.as_f64()?;
    (s.is_finite() && (0.0..1e9).contains(&s)).then(|| Duration::from_secs_f64(s))
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Null => "nothing".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_yaml(yaml: &str) -> Result<(AgentConfig, Vec<String>), ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch-config.yaml");
        std::fs::write(&path, yaml).unwrap();
        load(
            AgentConfig::default(),
            Some(&path),
            &BTreeMap::new(),
            &Flags::default(),
        )
    }

    #[test]
    fn wandb_launch_config_is_accepted() {
        let (cfg, notices) = load_yaml(
            "entity: my-team\nqueues: [gpu, cpu]\nmax_jobs: 4\nmax_schedulers: -1\nverbosity: 1\n\
             stopped_run_timeout: 30\nbuilder:\n  type: docker\n  destination: reg/x\n",
        )
        .unwrap();
        assert_eq!(cfg.queues, ["gpu", "cpu"]);
        assert_eq!(
            (cfg.max_jobs, cfg.max_schedulers, cfg.verbosity),
            (4, -1, 1)
        );
        assert_eq!(cfg.stopped_run_timeout, Duration::from_secs(30));
        assert_eq!(
            notices.len(),
            1,
            "only entity means nothing here: {notices:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err =
            load_yaml("max_jobs: -5\nmax_schedulers: two\nqueus: [a]\nverbosity: 9\n").unwrap_err();
        let all = err.to_string();
        assert_eq!(err.0.len(), 4, "{all}");
        for needle in [
            "max_jobs: -5",
            "max_schedulers: must be a whole number, not the string \"two\"",
            "queus: unknown key",
            "verbosity",
        ] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }

    #[test]
    fn counts_that_would_run_nothing_or_are_typos_are_refused() {
        for (n, needle) in [(0, "0 would run nothing"), (5_000_000, "at most 100000")] {
            let flags = Flags {
                max_jobs: Some(n),
                ..Flags::default()
            };
            let err = load(AgentConfig::default(), None, &BTreeMap::new(), &flags).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = load_yaml("max_schedulers: 200000\n").unwrap_err();
        assert!(err.to_string().contains("max_schedulers: 200000"), "{err}");
        assert!(load_yaml("max_schedulers: 0\nmax_jobs: -1\n").is_ok());
    }

    #[test]
    fn env_then_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "max_jobs: 2\nqueues: [a]\n").unwrap();
        let env = BTreeMap::from([("WANDB_LAUNCH_MAX_JOBS".to_string(), "3".to_string())]);
        let (cfg, _) = load(AgentConfig::default(), Some(&path), &env, &Flags::default()).unwrap();
        assert_eq!(cfg.max_jobs, 3);
        let flags = Flags {
            max_jobs: Some(5),
            queues: vec!["b".into()],
            ..Flags::default()
        };
        let (cfg, _) = load(AgentConfig::default(), Some(&path), &env, &flags).unwrap();
        assert_eq!(
            (cfg.max_jobs, cfg.queues.clone()),
            (5, vec!["b".to_string()])
        );
        let bad = BTreeMap::from([("LIFTOFF_AGENT_MAX_JOBS".to_string(), "many".to_string())]);
        assert!(load(AgentConfig::default(), None, &bad, &Flags::default())
            .unwrap_err()
            .to_string()
            .contains("LIFTOFF_AGENT_MAX_JOBS"));
    }
}
