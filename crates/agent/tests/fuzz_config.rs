//! The agent's config file, fuzzed: a full config as YAML, its document mutated (see the
//! server's `fuzz_support`) and its text damaged. Loading answers within a second, and every
//! problem names the file or the key (`FILE: key: what`), never a panic.

#[path = "../../server/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::{apply, cases, mutation};
use liftoff_agent::{AgentConfig, Flags};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn a_damaged_agent_config_loads_or_names_the_file_and_key() {
    let seed = json!({
        "queues": ["gpu", "cpu"], "max_jobs": 4, "max_schedulers": 1, "verbosity": 1,
        "stopped_run_timeout": 30, "start_timeout": 600, "heartbeat_interval": 10,
        "env": {"HF_HOME": "/data/hf"}, "name": "box-1", "slurm_poll_interval": 5,
        "keep_finished_runs": 0, "keep_failed_runs": 86400, "sweep_failure_limit": 5,
        "builder": {"type": "docker", "base_image": "python:3.11-slim"},
        "registry": {"uri": "registry.example:5000"},
        "runners": {"container": {"host": "unix:///var/run/docker.sock", "network": "bridge",
            "max_jobs": 2}}
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    let load = |text: &[u8]| {
        std::fs::write(&file, text).unwrap();
        let defaults = AgentConfig {
            state_dir: dir.path().join("state"),
            ..AgentConfig::default()
        };
        liftoff_agent::config::load(defaults, Some(&file), &BTreeMap::new(), &Flags::default())
    };
    let seed_text = serde_norway::to_string(&seed).unwrap();
    if let Err(e) = load(seed_text.as_bytes()) {
        panic!("the seed config is refused: {e}");
    }
    let strategy = (
        prop::collection::vec(mutation(), 0..4),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
    );
    let mut runner = TestRunner::new(Config {
        cases: cases(1000),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(mutations, edits)| {
            let doc = apply(&seed, &mutations);
            let mut text = serde_norway::to_string(&doc).unwrap().into_bytes();
            for (at, byte) in edits {
                let at = at % text.len().max(1);
                if let Some(b) = text.get_mut(at) {
                    *b = byte;
                }
            }
            let began = Instant::now();
            let loaded = load(&text);
            prop_assert!(began.elapsed() < Duration::from_secs(1));
            if let Err(errors) = loaded {
                prop_assert!(!errors.0.is_empty());
                let at = file.display().to_string();
                for e in &errors.0 {
                    // The file's problems name it; the rest name their key.
                    let named = e.starts_with(&at)
                        || e.split_once(": ").is_some_and(|(key, _)| !key.is_empty());
                    prop_assert!(named, "{e}");
                }
            }
            Ok(())
        })
        .unwrap();
}
