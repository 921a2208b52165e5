//! `/metrics` as Prometheus scrapes it: a read token is needed, the text parses with a
//! Prometheus text-format parser, and the figures move as runs go by: pending items, items by
//! state, admission waits, lease long-polls open, agents by status, HTTP requests by route.

mod common;

use common::{ok, wait_async, ServerProcess};
use liftoff_types::{LaunchSpec, NewQueue};
use prometheus_parse::{Sample, Scrape, Value};
use std::time::Duration;

async fn scrape(url: &str, token: &str) -> Scrape {
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample named `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s: &&Sample| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_parse_and_move_as_runs_go_by() {
    let server = ServerProcess::start();
    let client = server.client();
    client
        .create_queue(&NewQueue::named("train"))
        .await
        .unwrap();
    let url = server.url();
    let read = ok(&server.run(&["token", "create", "--scope", "read", "--name", "prom"]));
    let read = read.trim();

    let anonymous = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(anonymous.status(), 401, "metrics need a token");
    // The scraper's token reads, and does nothing else.
    let reader = liftoff_client::Client::new(&url, Some(read.to_string())).unwrap();
    assert_eq!(reader.list_queues().await.unwrap().len(), 1);
    let spec = LaunchSpec::command(vec!["true".into()]);
    let err = reader
        .enqueue("train", &spec)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "a read token cannot enqueue: {err}");
    let err = reader
        .create_queue(&NewQueue::named("mine"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");

    let spec = LaunchSpec::command(vec!["sh".into(), "-c".into(), "echo hi".into()]);
    client.enqueue("train", &spec).await.unwrap();
    client.enqueue("train", &spec).await.unwrap();
    let mut failing = LaunchSpec::command(vec!["sh".into(), "-c".into(), "exit 3".into()]);
    failing.priority = Some(liftoff_types::Priority::High);
    client.enqueue("train", &failing).await.unwrap();
    let before = scrape(&url, read).await;
    assert_eq!(
        value(&before, "liftoff_pending_items", &[("queue", "train")]),
        Some(3.0)
    );
    for (priority, n) in [("medium", 2.0), ("high", 1.0)] {
        assert_eq!(
            value(
                &before,
                "liftoff_pending_items_by_priority",
                &[("queue", "train"), ("priority", priority)]
            ),
            Some(n),
            "{priority}"
        );
    }
    assert_eq!(
        value(
            &before,
            "liftoff_pending_items_by_reason",
            &[("queue", "train"), ("reason", "no_agent")]
        ),
        Some(3.0),
        "no agent serves the queue yet"
    );
    assert_eq!(
        value(
            &before,
            "liftoff_items",
            &[("queue", "train"), ("state", "finished")]
        ),
        Some(0.0)
    );
    assert_eq!(value(&before, "liftoff_lease_polls_open", &[]), Some(0.0));
    assert_eq!(
        value(&before, "liftoff_agents", &[("status", "polling")]),
        Some(0.0)
    );

    let _agent = server.agent(
        &server.dir.path().join("agent"),
        &["--queue", "train", "--max-jobs", "3"],
    );
    wait_async("the runs to end", Duration::from_secs(30), || async {
        let s = scrape(&url, read).await;
        value(
            &s,
            "liftoff_items",
            &[("queue", "train"), ("state", "finished")],
        ) == Some(2.0)
            && value(
                &s,
                "liftoff_ended_items",
                &[("queue", "train"), ("state", "failed"), ("phase", "run")],
            ) == Some(1.0)
    })
    .await;
    wait_async(
        "the agent's lease long-poll",
        Duration::from_secs(30),
        || async {
            let s = scrape(&url, read).await;
            value(&s, "liftoff_lease_polls_open", &[]) == Some(1.0)
                && value(&s, "liftoff_agents", &[("status", "polling")]) == Some(1.0)
        },
    )
    .await;
    let after = scrape(&url, read).await;
    assert_eq!(
        value(&after, "liftoff_pending_items", &[("queue", "train")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &after,
            "liftoff_running_runs",
            &[("queue", "train"), ("runner", "local-process")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &after,
            "liftoff_admission_wait_time_seconds_count",
            &[("queue", "train")]
        )
        .or_else(|| value(
            &after,
            "liftoff_admission_wait_time_seconds",
            &[("queue", "train")]
        )),
        Some(3.0),
        "one admission per run"
    );
    assert_eq!(
        value(
            &after,
            "liftoff_ended_items",
            &[("queue", "train"), ("state", "finished"), ("phase", "none")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &after,
            "liftoff_pending_items_by_reason",
            &[("queue", "train"), ("reason", "dispatching")]
        ),
        Some(0.0),
        "an agent with free slots serves it now"
    );
    assert_eq!(
        value(&after, "liftoff_agent_free_slots", &[]),
        Some(3.0),
        "an idle agent of 3 slots"
    );
    let enqueues = value(
        &after,
        "liftoff_http_requests_total",
        &[
            ("route", "/api/v1/queues/:name/items"),
            ("method", "POST"),
            ("status", "201"),
        ],
    );
    let http: Vec<_> = after
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("liftoff_http_requests"))
        .map(|s| format!("{} {:?}", s.metric, s.labels))
        .collect();
    assert_eq!(
        enqueues,
        Some(3.0),
        "requests by route, not by id: {http:#?}"
    );
    assert!(
        !after
            .samples
            .iter()
            .any(|s| s.labels.values().any(|v| v.contains("/items/1"))),
        "no per-id series"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_lost_runs_and_store_commits_are_counted() {
    let server = ServerProcess::start();
    let client = server.client();
    let url = server.url();
    let admin = server.client_file()["token"].as_str().unwrap().to_string();
    // Exit code 3 is retried once on `flaky`.
    ok(&server.run(&["queue", "create", "flaky", "--retry", "exit-code=1:3"]));
    client.create_queue(&NewQueue::named("long")).await.unwrap();
    let _agent = server.agent(
        &server.dir.path().join("agent"),
        &["--queue", "flaky", "--queue", "long", "--max-jobs", "2"],
    );
    let failing = LaunchSpec::command(vec!["sh".into(), "-c".into(), "exit 3".into()]);
    let flaky = client.enqueue("flaky", &failing).await.unwrap();
    let ended = common::wait_ended(&client, flaky.id, Duration::from_secs(30)).await;
    assert_eq!(ended.attempts, 1, "{ended:?}");
    let s = scrape(&url, &admin).await;
    assert_eq!(
        value(
            &s,
            "liftoff_requeues",
            &[("queue", "flaky"), ("cause", "exit-code")]
        ),
        Some(1.0)
    );

    // A running item cancelled with --force: its run is lost, and counted so.
    let sleeper = LaunchSpec::command(vec!["sleep".into(), "30".into()]);
    let long = client.enqueue("long", &sleeper).await.unwrap();
    wait_async("the long run to start", Duration::from_secs(30), || async {
        client.get_item(long.id).await.unwrap().state == liftoff_types::ItemState::Claimed
    })
    .await;
    client.force_cancel_item(long.id).await.unwrap();
    let s = scrape(&url, &admin).await;
    assert_eq!(
        value(
            &s,
            "liftoff_lost_runs_total",
            &[("queue", "long"), ("cause", "force_cancel")]
        ),
        Some(1.0)
    );
    let commits = value(&s, "liftoff_store_commit_duration_seconds_count", &[])
        .or_else(|| value(&s, "liftoff_store_commit_duration_seconds", &[]))
        .unwrap_or(0.0);
    assert!(commits >= 4.0, "every write is a timed commit: {commits}");
}
