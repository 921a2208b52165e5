//! The daily loop through the real binary: one process per directory, listings newest first
//! with filters, `show` and `rerun`, `cancel --force` for an agent gone for good, and the
//! seed's running counts in `liftoff agents`.

mod common;

use common::{ok, refused, wait_async, wait_for, ServerProcess, BIN};
use liftoff_types::{ItemId, ItemState, RunState};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn up() -> ServerProcess {
    ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"])
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_second_up_or_agent_on_the_same_directory_refuses_naming_the_pid() {
    let up = up();
    let client_file = std::fs::read(up.data_dir().join("client.json")).unwrap();
    let pid = up.child.id().to_string();

    let second = up.run(&["up", "--bind", "127.0.0.1:0"]);
    let err = refused(&second);
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains("data directory"), "{err}");
    let agent = up.run(&["agent", "--queue", "default"]);
    let err = refused(&agent);
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains("agent state directory"), "{err}");

    // Nothing was rewritten: the CLI still reaches the first server, whose agent still runs.
    assert_eq!(
        std::fs::read(up.data_dir().join("client.json")).unwrap(),
        client_file
    );
    let item = ok(&up.run(&["launch", "--", "echo", "still here"]));
    assert_eq!(ok(&up.run(&["logs", "-f", item.trim()])), "still here\n");
}

#[test]
fn items_lists_the_newest_first_and_filters_by_state_queue_and_job() {
    let up = up();
    ok(&up.run(&["queue", "create", "other"]));
    let first = ok(&up.run(&["launch", "--", "true"])).trim().to_string();
    ok(&up.run(&["logs", "-f", &first]));
    let second = ok(&up.run(&["launch", "-q", "other", "--", "sleep", "1000"]))
        .trim()
        .to_string();
    let third = ok(&up.run(&["launch", "--name", "last", "--", "false"]))
        .trim()
        .to_string();
    ok(&up.run(&["logs", "-f", &third]));

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["items", "-o", "json"];
        all.extend_from_slice(args);
        json(&ok(&up.run(&all)))
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].to_string())
            .collect()
    };
    assert_eq!(ids(&[]), [third.as_str(), &second, &first], "newest first");
    assert_eq!(ids(&["--queue", "other"]), [second.as_str()]);
    assert_eq!(ids(&["--state", "finished"]), [first.as_str()]);
    assert_eq!(
        ids(&["--limit", "1", "--before", &third]),
        [second.as_str()]
    );
    assert_eq!(
        ids(&["--after", &first]),
        [second.as_str(), &third],
        "paging forward"
    );
    assert!(ids(&["--job", "nosuchjob"]).is_empty());

    let table = ok(&up.run(&["items"]));
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].contains("TOOK") && rows[0].contains("WHAT"),
        "{table}"
    );
    assert!(
        rows[1].starts_with(&third) && rows[1].contains("last: false"),
        "{table}"
    );
    ok(&up.run(&["cancel", &second]));
}

#[test]
fn show_tells_what_a_run_was_and_rerun_runs_it_again_with_changes() {
    let up = up();
    let script = "echo about to fail; \
                  echo '{\"loss\": 0.25}' >> $LIFTOFF_METRICS_FILE; \
                  echo '{\"loss\": 0.5}' >> $LIFTOFF_METRICS_FILE; exit 3";
    let item = ok(&up.run(&[
        "launch", "--name", "try", "--config", "lr=0.1", "--", "sh", "-c", script,
    ]))
    .trim()
    .to_string();
    ok(&up.run(&["logs", "-f", &item]));
    let client = up.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = ItemId(item.parse().unwrap());
    wait_for("the item to fail", Duration::from_secs(20), || {
        rt.block_on(client.get_item(id)).unwrap().state == ItemState::Failed
    });

    let shown = ok(&up.run(&["show", &item]));
    for want in [
        "state         failed (run failed)",
        "name          try",
        "command       sh -c",
        "config        {\"lr\":0.1}",
        "exit code     3",
        "failed        in phase run: the run exited with code 3",
        "enqueued",
        "started",
        "run ended failed (exit 3)",
        "metric loss   last 0.5 · min 0.25 · max 0.5 · 2 values",
        "file output-tail.log",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
    // The run id shows the same item; -o json carries the files whole.
    let run = rt.block_on(client.get_item(id)).unwrap().run_id.unwrap();
    assert_eq!(ok(&up.run(&["show", run.as_str()])), shown);
    let full = json(&ok(&up.run(&["show", &item, "-o", "json"])));
    assert_eq!(full["run"]["exit_code"], 3);
    assert_eq!(full["metrics"]["loss"]["min"], 0.25);
    assert!(full["files"][0]["content"]
        .as_str()
        .unwrap()
        .contains("about to fail"));

    let again = ok(&up.run(&["rerun", &item, "--config", "lr=0.2"]));
    let again: i64 = again.trim().parse().expect("rerun prints only the new id");
    ok(&up.run(&["logs", "-f", &again.to_string()]));
    let new = rt.block_on(client.get_item(ItemId(again))).unwrap();
    assert_eq!(new.spec.overrides.run_config["lr"], 0.2);
    assert_eq!(new.spec.name.as_deref(), Some("try"));
    assert_eq!(
        new.spec.overrides.entry_point,
        rt.block_on(client.get_item(id))
            .unwrap()
            .spec
            .overrides
            .entry_point
    );
    let err = refused(&up.run(&["show", "999"]));
    assert!(err.contains("999") && err.contains("item"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_force_ends_an_item_whose_agent_is_gone_for_good() {
    let server = ServerProcess::start();
    ok(&server.run(&["queue", "create", "q"]));
    let state = server.dir.path().join("agent");
    let mut agent = server.agent(&state, &["--queue", "q"]);
    let client = server.client();
    let item = ok(&server.run(&["launch", "-q", "q", "--", "sleep", "1000"]))
        .trim()
        .to_string();
    let id = ItemId(item.parse().unwrap());
    wait_async("the run to start", Duration::from_secs(20), || async {
        let i = client.get_item(id).await.unwrap();
        match i.run_id {
            Some(r) => client.get_run(&r).await.unwrap().state == RunState::Running,
            None => false,
        }
    })
    .await;
    let run = client.get_item(id).await.unwrap().run_id.unwrap();
    let pid = client.get_run(&run).await.unwrap().handle["pid"]
        .as_i64()
        .expect("a local run's handle has its pid") as i32;
    agent.kill9();

    // A plain cancel can only ask; nobody is there to answer.
    ok(&server.run(&["cancel", &item]));
    let asked = client.get_item(id).await.unwrap();
    assert_eq!(
        (asked.state, asked.cancel_requested),
        (ItemState::Claimed, true)
    );
    let err = refused(&server.run(&["queue", "delete", "q"]));
    assert!(err.contains("live"), "{err}");

    ok(&server.run(&["cancel", "--force", &item]));
    let ended = client.get_item(id).await.unwrap();
    assert_eq!(ended.state, ItemState::Cancelled);
    assert!(
        ended.warnings.iter().any(|w| w.message.contains("--force")),
        "recorded as forced: {:?}",
        ended.warnings
    );
    let lost = client.get_run(&run).await.unwrap();
    assert_eq!(lost.state, RunState::Lost);
    assert!(lost.message.unwrap().contains("may still be running"));
    ok(&server.run(&["queue", "delete", "q"]));

    // The orphaned child is this test's to end.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_shows_the_running_jobs_and_schedulers_the_agent_counts() {
    let server = ServerProcess::start();
    ok(&server.run(&["queue", "create", "q"]));
    let dir = server.dir.path();
    std::fs::write(dir.join("agent.yaml"), "heartbeat_interval: 1\n").unwrap();
    let config = dir.join("agent.yaml");
    let _agent = server.agent(
        &dir.join("agent"),
        &[
            "--queue",
            "q",
            "--max-jobs",
            "4",
            "-c",
            config.to_str().unwrap(),
        ],
    );
    for _ in 0..2 {
        ok(&server.run(&["launch", "-q", "q", "--", "sleep", "1000"]));
    }
    let client = server.client();
    wait_async(
        "the agent to report 2 running",
        Duration::from_secs(20),
        || async {
            // The agent may not have registered yet: no row is not yet 2.
            let agents = client.list_agents().await.unwrap();
            agents.first().is_some_and(|a| a.running_jobs == 2)
        },
    )
    .await;
    let table = ok(&server.run(&["agents"]));
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains(" 2/4 ") && row.contains(" 0/"), "{table}");
    for item in client.list_items(&Default::default()).await.unwrap() {
        client.cancel_item(item.id).await.unwrap();
    }
}

#[test]
fn an_inline_command_runs_where_it_was_launched_or_ships_it_with_code() {
    let up = up();
    let project = up.dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("train.sh"),
        "echo training with $OPTIMIZER in $(pwd)\n",
    )
    .unwrap();
    let launch = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("launch")
            .args(args)
            .current_dir(&project)
            .env("LIFTOFF_DATA_DIR", up.data_dir())
            .env_remove("LIFTOFF_URL")
            .env_remove("LIFTOFF_TOKEN")
            .output()
            .unwrap();
        (
            ok(&out).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // From the project directory, as by hand.
    let (item, _) = launch(&["--env", "OPTIMIZER=adam", "--", "sh", "train.sh"]);
    let out = ok(&up.run(&["logs", "-f", &item]));
    let here = std::fs::canonicalize(&project).unwrap();
    assert_eq!(out, format!("training with adam in {}\n", here.display()));

    // Shipped as code: it runs in a copy, and the same content is not a new version.
    let (item, said) = launch(&["--code", ".", "--", "sh", "train.sh"]);
    assert!(said.contains("shipped"), "{said}");
    let out = ok(&up.run(&["logs", "-f", &item]));
    assert!(
        out.starts_with("training with in ") && out.contains("/work"),
        "{out}"
    );
    let (_, said) = launch(&["--code", ".", "--", "sh", "train.sh"]);
    assert!(said.contains("unchanged"), "{said}");

    // A directory this machine does not have fails at once, saying what to do.
    let spec = up.dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"overrides": {"entry_point": ["sh", "train.sh"]}, "cwd": "/nonexistent/project"}"#,
    )
    .unwrap();
    let item = ok(&up.run(&["launch", "--spec", spec.to_str().unwrap()]));
    let id = ItemId(item.trim().parse().unwrap());
    let client = up.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for("the item to fail", Duration::from_secs(20), || {
        rt.block_on(client.get_item(id)).unwrap().state == ItemState::Failed
    });
    let failure = rt.block_on(client.get_item(id)).unwrap().failure.unwrap();
    assert!(
        failure.message.contains("/nonexistent/project")
            && failure.message.contains("--code /nonexistent/project"),
        "{failure:?}"
    );
    // liftoff's own variables cannot be set from a spec.
    let err = refused(&up.run(&["launch", "--env", "LIFTOFF_RUN_TOKEN=x", "--", "true"]));
    assert!(err.contains("env.LIFTOFF_RUN_TOKEN"), "{err}");
}

#[test]
fn launch_wait_says_at_once_when_no_agent_serves_the_queue() {
    let up = up();
    ok(&up.run(&["queue", "create", "gpu"]));
    let mut wait = Command::new(BIN)
        .args(["launch", "--wait", "-q", "gpu", "--", "true"])
        .env("LIFTOFF_DATA_DIR", up.data_dir())
        .env_remove("LIFTOFF_URL")
        .env_remove("LIFTOFF_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = wait.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let started = std::time::Instant::now();
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("launch --wait to say why it waits");
        if line.contains("no agent serves queue gpu") {
            break line;
        }
    };
    assert!(started.elapsed() < Duration::from_secs(5), "{line}");
    assert!(line.contains("liftoff agent --queue gpu"), "{line}");
    let _ = wait.kill();
    let _ = wait.wait();

    // The API and `items` give the same reason; a served queue says where the item stands.
    let items = json(&ok(&up.run(&["items", "-o", "json", "-q", "gpu"])));
    assert!(items[0]["pending_reason"]
        .as_str()
        .unwrap()
        .starts_with("no agent serves queue gpu"));
}

/// Bytes under `dir`, files only.
fn size_of(dir: &std::path::Path) -> u64 {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    listing
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size_of(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_each_leave_a_megabyte_leave_the_disk_as_it_was() {
    let server = ServerProcess::start();
    ok(&server.run(&["queue", "create", "q"]));
    let dir = server.dir.path();
    let state = dir.join("agent");
    let _agent = server.agent(&state, &["--queue", "q", "--max-jobs", "4"]);
    let client = server.client();
    let runs = 300;
    let leave = "head -c 1048576 /dev/zero > checkpoint.bin";
    for _ in 0..runs {
        let spec = liftoff_types::LaunchSpec::command(vec!["sh".into(), "-c".into(), leave.into()]);
        client.enqueue("q", &spec).await.unwrap();
    }
    let failed = client
        .enqueue(
            "q",
            &liftoff_types::LaunchSpec::command(vec![
                "sh".into(),
                "-c".into(),
                format!("{leave}; exit 2"),
            ]),
        )
        .await
        .unwrap()
        .id;
    wait_async("every run to end", Duration::from_secs(180), || async {
        let d = client.get_queue("q").await.unwrap().depth.unwrap();
        d.finished + d.failed == runs + 1
    })
    .await;
    // 300 MB were written; what stays is the failed run's megabyte and spares' empty files.
    let runs_dir = state.join("runs");
    wait_async(
        "finished runs' directories to go",
        Duration::from_secs(20),
        || async { size_of(&runs_dir) < 2 * 1024 * 1024 },
    )
    .await;
    let kept = client.get_item(failed).await.unwrap().run_id.unwrap();
    assert!(
        runs_dir
            .join(kept.as_str())
            .join("work/checkpoint.bin")
            .exists(),
        "a failed run's directory is kept to be looked into"
    );
}

#[test]
fn a_code_directory_over_the_servers_limit_is_refused_before_packing_saying_what_to_do() {
    let server =
        ServerProcess::start_with(&["server", "--bind", "127.0.0.1:0", "--artifact-limit", "1M"]);
    let project = server.dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("train.py"), "print('hi')\n").unwrap();
    // Two megabytes that do not compress.
    let noise: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(project.join("weights.bin"), &noise).unwrap();
    let create = |name: &str| {
        server.run(&[
            "job",
            "create",
            "code",
            project.to_str().unwrap(),
            "--name",
            name,
            "--entrypoint",
            "python3 train.py",
        ])
    };
    let err = refused(&create("big"));
    for want in [
        "weights.bin",
        "1.0 MB",
        ".gitignore",
        "git job",
        "--artifact-limit",
    ] {
        assert!(err.contains(want), "missing {want:?}: {err}");
    }
    assert!(json(&ok(&server.run(&["job", "list", "-o", "json"])))
        .as_array()
        .unwrap()
        .is_empty());

    std::fs::write(project.join(".gitignore"), "weights.bin\n").unwrap();
    ok(&create("small"));
    let again = create("small");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("unchanged"),
        "{again:?}"
    );
}

#[test]
fn shell_completions_know_the_commands() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = ok(&out);
    for word in ["liftoff", "show", "rerun", "--force"] {
        assert!(script.contains(word), "{word} missing");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

#[test]
fn prune_says_what_would_go_and_is_for_admins_only() {
    let up = up();
    let item = ok(&up.run(&["launch", "--", "true"]));
    ok(&up.run(&["logs", "-f", item.trim()]));
    let said = ok(&up.run(&["prune", "--older-than", "1m", "--dry-run"]));
    assert_eq!(
        said,
        "would remove 0 items, 0 runs (with their logs and metrics), 0 sweeps, 0 agents, 0 code archives\n"
    );
    let said = ok(&up.run(&["prune", "--older-than", "1m"]));
    assert!(said.starts_with("removed 0 items"), "{said}");
    assert!(
        ok(&up.run(&["show", item.trim()])).contains("finished"),
        "a recent run stays"
    );
    let user = ok(&up.run(&["token", "create", "--scope", "user", "--name", "u"]));
    let out = up.run_with(
        &["prune", "--dry-run"],
        &[("LIFTOFF_TOKEN", user.trim()), ("LIFTOFF_URL", &up.url())],
    );
    let err = refused(&out);
    assert!(err.contains("admin"), "{err}");
    let err = refused(&up.run(&["prune", "--older-than", "10s"]));
    assert!(err.contains("older_than_s"), "{err}");
}

#[test]
fn a_slurm_queue_with_a_misspelt_option_is_refused_naming_the_known_ones() {
    let server = ServerProcess::start();
    let out = server.run(&[
        "queue",
        "create",
        "hpc",
        "--resource",
        "slurm",
        "--config",
        r#"{"partiton": "gpu", "time": "1:00:00"}"#,
    ]);
    let err = refused(&out);
    assert!(
        err.contains("config.partiton") && err.contains("partition"),
        "{err}"
    );
    assert!(json(&ok(&server.run(&["queue", "list", "-o", "json"])))
        .as_array()
        .unwrap()
        .is_empty());
    ok(&server.run(&[
        "queue",
        "create",
        "hpc",
        "--resource",
        "slurm",
        "--config",
        r#"{"partition": "gpu"}"#,
    ]));
}

#[test]
fn ctrl_c_on_launch_wait_leaves_the_run_going_and_says_how_to_reach_it() {
    let up = up();
    let mut wait = Command::new(BIN)
        .args([
            "launch",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo started; sleep 1000",
        ])
        .env("LIFTOFF_DATA_DIR", up.data_dir())
        .env_remove("LIFTOFF_URL")
        .env_remove("LIFTOFF_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(wait.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "started\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wait.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = wait.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("goes on") && err.contains("liftoff stop 1"),
        "{err}"
    );
    let item = json(&ok(&up.run(&["items", "-o", "json"])));
    assert_eq!(item[0]["state"], "claimed", "the run goes on");
    ok(&up.run(&["stop", "1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_several_typos_has_each_one_named_at_once() {
    let server = ServerProcess::start();
    ok(&server.run(&["queue", "create", "q"]));
    let spec = server.dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"jobb": "train:latest", "overrides": {"entry_point": ["true"], "run_confg": {}}}"#,
    )
    .unwrap();
    let out = server.run(&["launch", "-q", "q", "--spec", spec.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jobb: unknown key") && err.contains("overrides.run_confg: unknown key"),
        "{err}"
    );
    // The server names them all too, for a client that skips the CLI.
    let body: Value = serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/queues/q/items", server.url()))
        .bearer_auth(server.client_file()["token"].as_str().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 422);
    let answer: Value = answer.json().await.unwrap();
    let fields: Vec<&str> = answer["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["jobb", "overrides.run_confg"]);
    assert!(server
        .client()
        .list_items(&Default::default())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_capped_at_one_run_holds_the_rest_saying_why_though_slots_are_free() {
    let server = ServerProcess::start();
    ok(&server.run(&["queue", "create", "licensed", "--max-concurrency", "1"]));
    let shown = ok(&server.run(&["queue", "show", "licensed"]));
    assert!(
        shown.contains("max concurrency") && shown.contains("1 (0 live)"),
        "{shown}"
    );
    let dir = server.dir.path();
    let _agent = server.agent(
        &dir.join("agent"),
        &["--queue", "licensed", "--max-jobs", "4"],
    );
    let first = ok(&server.run(&["launch", "-q", "licensed", "--", "sleep", "1000"]));
    let second = ok(&server.run(&["launch", "-q", "licensed", "--", "true"]));
    let client = server.client();
    let first: ItemId = first.trim().parse().unwrap();
    let second: ItemId = second.trim().parse().unwrap();
    wait_async(
        "the first run to start",
        Duration::from_secs(20),
        || async { client.get_item(first).await.unwrap().state == ItemState::Claimed },
    )
    .await;
    // The agent has 3 free slots, yet the second item waits, and says why.
    let show = json(&ok(&server.run(&[
        "show",
        &second.to_string(),
        "-o",
        "json",
    ])));
    assert_eq!(show["item"]["state"], "pending", "{show}");
    let reason = show["item"]["pending_reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("queue licensed is at its limit of 1 live runs"),
        "{reason}"
    );
    ok(&server.run(&["stop", &first.to_string()]));
    wait_async(
        "the second run to finish",
        Duration::from_secs(20),
        || async { client.get_item(second).await.unwrap().state == ItemState::Finished },
    )
    .await;
    let refused = refused(&server.run(&["queue", "create", "none", "--max-concurrency", "0"]));
    assert!(refused.contains("max_concurrency"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_behind_busy_agents_says_when_it_may_start() {
    let server = ServerProcess::start();
    ok(&server.run(&["queue", "create", "q"]));
    let dir = server.dir.path();
    let _agent = server.agent(&dir.join("agent"), &["--queue", "q", "--max-jobs", "1"]);
    // Three runs of about a second teach the server how long runs here take.
    for _ in 0..3 {
        ok(&server.run(&["launch", "--wait", "-q", "q", "--", "sleep", "1"]));
    }
    let busy = ok(&server.run(&["launch", "-q", "q", "--", "sleep", "1000"]));
    let waiting = ok(&server.run(&["launch", "-q", "q", "--", "true"]));
    let client = server.client();
    let busy: ItemId = busy.trim().parse().unwrap();
    wait_async("the long run to start", Duration::from_secs(20), || async {
        client.get_item(busy).await.unwrap().state == ItemState::Claimed
    })
    .await;
    let mut reason = String::new();
    wait_for(
        "a reason naming the busy agent",
        Duration::from_secs(20),
        || {
            let shown = json(&ok(&server.run(&["show", waiting.trim(), "-o", "json"])));
            reason = shown["item"]["pending_reason"]
                .as_str()
                .unwrap_or("")
                .to_string();
            reason.contains("is busy")
        },
    );
    assert!(
        reason.contains("it may start in about 1s (runs here take about 1s)"),
        "{reason}"
    );
    client.cancel_item(busy).await.unwrap();
}
