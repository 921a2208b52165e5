//! The daily loop's ids, through the real binary: whatever id `launch` prints, `logs`, `stop`
//! and `cancel` take it, and the run id as well; a miss says what the id is; a reader that
//! goes away ends a listing quietly.

mod common;

use common::{ok, refused, wait_for, ServerProcess, BIN};
use std::process::{Command, Stdio};
use std::time::Duration;

fn up() -> ServerProcess {
    ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"])
}

#[test]
fn logs_follows_the_run_of_the_item_launch_printed() {
    let up = up();
    let item = ok(&up.run(&[
        "launch",
        "--",
        "sh",
        "-c",
        "sleep 0.3; echo hello from the run",
    ]));
    let item = item.trim();
    assert!(
        item.parse::<i64>().is_ok(),
        "launch prints only the id: {item:?}"
    );
    // Straight away, before the run has started: -f waits for it.
    let out = ok(&up.run(&["logs", "-f", item]));
    assert_eq!(out, "hello from the run\n");
    // The run id works the same.
    let runs = ok(&up.run(&["runs", "-o", "json"]));
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let run_id = runs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(ok(&up.run(&["logs", &run_id])), "hello from the run\n");
}

#[test]
fn stop_takes_an_item_id_and_cancel_a_run_id() {
    let up = up();
    let first = ok(&up.run(&["launch", "--", "sleep", "1000"]))
        .trim()
        .to_string();
    let client = up.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let item_of = |id: &str| {
        rt.block_on(client.get_item(liftoff_types::ItemId(id.parse().unwrap())))
            .unwrap()
    };
    wait_for("the first run to start", Duration::from_secs(20), || {
        item_of(&first).run_id.is_some()
    });
    ok(&up.run(&["stop", &first]));
    wait_for("the first item stopped", Duration::from_secs(20), || {
        item_of(&first).state == liftoff_types::ItemState::Stopped
    });
    let second = ok(&up.run(&["launch", "--", "sleep", "1000"]))
        .trim()
        .to_string();
    wait_for("the second run to start", Duration::from_secs(20), || {
        item_of(&second).run_id.is_some()
    });
    let run = item_of(&second).run_id.unwrap();
    ok(&up.run(&["cancel", run.as_str()]));
    wait_for("the second item cancelled", Duration::from_secs(20), || {
        item_of(&second).state.is_terminal()
    });
}

#[test]
fn a_miss_says_what_the_id_is() {
    let up = up();
    let said = refused(&up.run(&["logs", "4242"]));
    assert!(said.contains("no item or run 4242"), "{said}");
    let said = refused(&up.run(&["stop", "not-an-id!"]));
    assert!(
        said.contains("neither an item id") && said.contains("nor a run id"),
        "{said}"
    );
    // An item on a queue no agent serves has no run yet, and is said to be waiting.
    ok(&up.run(&["queue", "create", "gpu"]));
    let item = ok(&up.run(&["launch", "-q", "gpu", "--", "true"]))
        .trim()
        .to_string();
    let said = refused(&up.run(&["logs", &item]));
    assert!(
        said.contains(&format!("item {item} has no run yet")) && said.contains("queue gpu"),
        "{said}"
    );
}

#[test]
fn a_listing_whose_reader_went_away_ends_quietly() {
    let up = up();
    ok(&up.run(&["queue", "create", "gpu"]));
    for _ in 0..20 {
        ok(&up.run(&["launch", "-q", "gpu", "--", "true"]));
    }
    for args in [&["items"][..], &["items", "-o", "json"], &["queue", "list"]] {
        let mut child = Command::new(BIN)
            .args(args)
            .env("LIFTOFF_DATA_DIR", up.data_dir())
            .env_remove("LIFTOFF_URL")
            .env_remove("LIFTOFF_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the listing is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
