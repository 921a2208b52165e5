//! The chaos soak's short form (`liftoff bench chaos`, see its module): agents killed with
//! SIGKILL and restarted, some past the agent timeout, and a server kill, over a few hundred
//! runs. Nothing may be lost, run twice, or run twice at once. Agents come back within the
//! agent timeout plus the lost grace (some past the timeout), so that a run that finished
//! while its agent was down is told in time (see the bench's `--max-down`).

mod common;

#[test]
fn a_short_soak_with_agents_and_the_server_killed_loses_nothing_and_runs_nothing_twice() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "bench",
            "chaos",
            "--runs",
            "240",
            "--agents",
            "2",
            "--slots",
            "3",
            "--agent-timeout",
            "3",
            "--lost-grace",
            "5",
            "--max-down",
            "5",
            "--kills",
            "5",
            "--run-ms",
            "600",
        ])
        .env_remove("LIFTOFF_URL")
        .env_remove("LIFTOFF_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |key: &str| figures[key].as_u64().unwrap_or(u64::MAX);
    assert!(
        figures["faults"]["agent_kills"].as_u64() >= Some(3),
        "{text}"
    );
    assert!(
        figures["faults"]["server_kills"].as_u64() == Some(1),
        "{text}"
    );
    for zero in ["lost", "duplicated", "overlapping", "unexpected"] {
        assert_eq!(n(zero), 0, "{zero}: {text}");
    }
    assert_eq!(n("acknowledged"), 240, "{text}");
    assert_eq!(n("ok") + n("cut_with_their_agent"), 240, "{text}");
}
