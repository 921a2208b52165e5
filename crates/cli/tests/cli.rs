//! End-to-end: the real `liftoff` binary as a server and as a client.

mod common;

use common::{ok, refused, ServerProcess, BIN};
use serde_json::Value;
use std::process::Command;

#[test]
fn queues_launches_and_listings_through_the_real_binary() {
    let s = ServerProcess::start();
    ok(&s.run(&[
        "queue",
        "create",
        "gpu",
        "--config",
        r#"{"gres": "gpu:{{gpus}}"}"#,
        "--variable",
        r#"gpus={"type": "integer", "default": 1, "minimum": 0, "maximum": 8}"#,
    ]));
    let id = ok(&s.run(&[
        "launch",
        "-q",
        "gpu",
        "--set-var",
        "gpus=2",
        "--priority",
        "high",
        "--config",
        "lr=0.1",
        "--config",
        "model.width=128",
        "--name",
        "first",
        "--",
        "python",
        "train.py",
    ]));
    let id: i64 = id.trim().parse().expect("launch prints the item id");

    let items: Value = serde_json::from_str(&ok(&s.run(&["items", "-o", "json"]))).unwrap();
    let item = &items[0];
    assert_eq!(item["id"], id);
    assert_eq!(item["priority"], "high");
    assert_eq!(item["position"], 0);
    assert_eq!(item["resource_args"]["gres"], "gpu:2");
    assert_eq!(item["spec"]["overrides"]["run_config"]["lr"], 0.1);
    assert_eq!(
        item["spec"]["overrides"]["run_config"]["model"]["width"],
        128
    );
    assert_eq!(item["spec"]["overrides"]["entry_point"][1], "train.py");

    let table = ok(&s.run(&["items", "--queue", "gpu"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("pending") && table.contains("python train.py"),
        "{table}"
    );
    let show = ok(&s.run(&["queue", "show", "gpu"]));
    assert!(show.contains("pending 1"), "{show}");
    let queues: Value =
        serde_json::from_str(&ok(&s.run(&["queue", "list", "-o", "json"]))).unwrap();
    assert_eq!(queues[0]["name"], "gpu");
    let runs: Value = serde_json::from_str(&ok(&s.run(&["runs", "-o", "json"]))).unwrap();
    assert_eq!(runs, serde_json::json!([]));

    let err = refused(&s.run(&["launch", "-q", "gpu", "--set-var", "gpus=99", "--", "true"]));
    assert!(err.contains("gpus") && err.contains("maximum"), "{err}");
    let err = refused(&s.run(&["launch", "-q", "nope", "--", "true"]));
    assert!(err.contains("queue nope not found"), "{err}");
    let err = refused(&s.run(&["launch", "-q", "gpu"]));
    assert!(err.contains("nothing to run"), "{err}");
    let err = refused(&s.run(&["queue", "delete", "gpu"]));
    assert!(err.contains("live item"), "{err}");

    ok(&s.run(&["cancel", &id.to_string()]));
    ok(&s.run(&["queue", "delete", "gpu"]));
}

#[test]
fn tokens_scopes_and_secrets() {
    let s = ServerProcess::start();
    let file = s.data_dir().join("client.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the client file holds the admin token");
    }
    let admin: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let admin_token = admin["token"].as_str().unwrap().to_string();

    let user_token = ok(&s.run(&["token", "create", "--scope", "user", "--name", "ci"]));
    let user_token = user_token.trim();
    assert!(user_token.starts_with("lft_"));
    let err = refused(&s.run_with(&["queue", "create", "x"], &[("LIFTOFF_TOKEN", user_token)]));
    assert!(err.contains("admin"), "{err}");
    ok(&s.run_with(&["queue", "list"], &[("LIFTOFF_TOKEN", user_token)]));
    let err = refused(&s.run_with(&["queue", "list"], &[("LIFTOFF_TOKEN", "lft_wrong")]));
    assert!(err.contains("unknown or revoked token"), "{err}");

    let tokens = ok(&s.run(&["token", "list"]));
    assert!(
        tokens.contains("ci") && !tokens.contains(user_token) && !tokens.contains(&admin_token)
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("client.json"),
        "the log says where the admin token is: {log}"
    );
    assert!(
        !log.contains(&admin_token) && !log.contains(user_token),
        "no secret in the server log"
    );
}

#[test]
fn a_missing_server_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("LIFTOFF_DATA_DIR", dir.path())
            .env_remove("LIFTOFF_URL")
            .env_remove("LIFTOFF_TOKEN")
            .output()
            .unwrap()
    };
    let err = refused(&run(&["queue", "list"]));
    assert!(err.contains("no server given"), "{err}");
    let err = refused(&run(&["--url", "http://127.0.0.1:9", "queue", "list"]));
    assert!(err.contains("cannot reach"), "{err}");
    let err = refused(&run(&["--url", "ftp://x", "queue", "list"]));
    assert!(err.contains("invalid server URL"), "{err}");
}

#[test]
fn the_server_refuses_no_auth_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--bind", "0.0.0.0:0", "--no-auth"])
        .env("LIFTOFF_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without auth"), "{err}");
    let created: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        created.is_empty(),
        "nothing written before the refusal: {created:?}"
    );
}

#[test]
fn a_database_that_is_neither_postgres_nor_a_file_is_refused_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--bind", "127.0.0.1:0"])
        .args(["--database", "mysql://root:hunter2@db/liftoff"])
        .env("LIFTOFF_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--database") && err.contains("neither a postgres://"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the password was printed: {err}");
    // An unreachable PostgreSQL: a clear error, and no password either.
    let out = Command::new(BIN)
        .args(["server", "--bind", "127.0.0.1:0"])
        .args(["--database", "postgres://lift:hunter2@127.0.0.1:1/liftoff"])
        .env("LIFTOFF_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connecting to the database postgres://lift:***@"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the password was printed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_promptly_with_long_polls_open() {
    let mut server = ServerProcess::start();
    let client = server.client();
    client
        .create_queue(&liftoff_types::NewQueue::named("q"))
        .await
        .unwrap();
    let agent = client
        .register_agent(&liftoff_types::NewAgent::on("test", &["q"]))
        .await
        .unwrap()
        .id;
    let req = liftoff_types::api::LeaseRequest {
        queues: vec!["q".into()],
        max: 1,
        wait_ms: 60_000,
        lease_ms: 60_000,
        runs: true,
        schedulers: true,
    };
    let poll = tokio::spawn(async move { client.lease(agent, &req).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    });
    let (status, _server) = tokio::time::timeout(std::time::Duration::from_secs(15), status)
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        poll.await.unwrap().is_err(),
        "the open long-poll was cut off"
    );
}

#[test]
fn a_log_setting_it_cannot_read_is_said_once_and_the_command_still_works() {
    let server = ServerProcess::start();
    let out = server.run_with(&["runs", "-o", "json"], &[("LIFTOFF_LOG", "liftoff=loud")]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("LIFTOFF_LOG not understood").count(),
        1,
        "said once: {err}"
    );
    // A level per module is understood: nothing said.
    let out = server.run_with(
        &["runs", "-o", "json"],
        &[("LIFTOFF_LOG", "liftoff_client=debug,warn")],
    );
    ok(&out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not understood"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
