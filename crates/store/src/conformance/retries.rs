//! Conformance cases for retries by cause: each cause taken and refused as the queue's policy
//! (and a launch's, within it) says, with attempts, counts, waits and messages.

use super::{agent, enqueue, lease, queue, update, DynStore, T0};
use crate::Ack;
use liftoff_types::api::FailRequest;
use liftoff_types::{
    ExitCodeRetry, ItemId, ItemState, Millis, NewQueue, Phase, Priority, RetryCause, RetryPolicy,
    RunState,
};
use serde_json::json;

/// Leases `item` to a fresh agent at `now` and acks it as run `run`; returns the fence.
async fn start(store: &DynStore, queue: &str, item: ItemId, run: &str, now: Millis) -> i64 {
    let a = agent(store).await;
    let l = lease(store, a, &[queue], 1, now).await.remove(0);
    assert_eq!(l.item.id, item);
    let acked = Ack {
        fence: l.fence,
        run_id: run.parse().unwrap(),
        handle: json!({"pid": 1}),
        state: RunState::Running,
    };
    store.ack(item, acked, now).await.unwrap();
    l.fence
}

fn failed(fence: i64, phase: Phase, code: Option<i32>, cause: Option<RetryCause>) -> FailRequest {
    FailRequest {
        fence,
        message: format!("exited with {code:?}"),
        phase,
        exit_code: code,
        files: vec![],
        cause,
    }
}

pub async fn retries_by_cause_are_taken_and_refused_as_configured(store: DynStore) {
    let mut flaky = NewQueue::named("flaky");
    flaky.retry = Some(RetryPolicy {
        exit_code: Some(ExitCodeRetry {
            max: 2,
            codes: vec![3],
        }),
        build: Some(1),
        max: Some(3),
        backoff: Some(10),
        ..RetryPolicy::default()
    });
    store.create_queue(flaky, T0).await.unwrap();
    let item = enqueue(&store, "flaky", Priority::Medium, "x").await;
    let fence = start(&store, "flaky", item, "a1", T0).await;
    store
        .fail(item, failed(fence, Phase::Run, Some(3), None), T0)
        .await
        .unwrap();
    let shown = store.get_item(item).await.unwrap();
    assert_eq!((shown.state, shown.attempts), (ItemState::Pending, 1));
    assert_eq!(shown.retries.get(&RetryCause::ExitCode), Some(&1));
    assert!(
        shown
            .warnings
            .iter()
            .any(|w| w.message.contains("retry 1 of 2 for exit-code, after 10 s")),
        "{:?}",
        shown.warnings
    );
    let b = agent(&store).await;
    assert!(
        lease(&store, b, &["flaky"], 1, T0 + 9_999).await.is_empty(),
        "the backoff holds it"
    );
    let fence = start(&store, "flaky", item, "a2", T0 + 10_000).await;
    // A build failure is its own cause; the wait doubles with each retry (20 s).
    store
        .fail(item, failed(fence, Phase::Build, None, None), T0 + 10_000)
        .await
        .unwrap();
    let fence = start(&store, "flaky", item, "a3", T0 + 30_000).await;
    store
        .fail(item, failed(fence, Phase::Run, Some(3), None), T0 + 30_000)
        .await
        .unwrap();
    let shown = store.get_item(item).await.unwrap();
    assert_eq!(shown.attempts, 3);
    assert_eq!(
        (
            shown.retries.get(&RetryCause::ExitCode),
            shown.retries.get(&RetryCause::Build)
        ),
        (Some(&2), Some(&1))
    );
    // Three retries in all: the overall limit ends it whatever the cause.
    let fence = start(&store, "flaky", item, "a4", T0 + 70_000).await;
    store
        .fail(item, failed(fence, Phase::Build, None, None), T0 + 70_000)
        .await
        .unwrap();
    let shown = store.get_item(item).await.unwrap();
    assert_eq!(shown.state, ItemState::Failed);
    assert!(
        shown
            .failure
            .unwrap()
            .message
            .contains("retried 1 of 1 times for build"),
        "the message says which limit ran out"
    );
    // An exit code the queue does not list, and a start timeout it allows none of, fail.
    for (code, cause) in [(Some(4), None), (None, Some(RetryCause::StartTimeout))] {
        let other = enqueue(&store, "flaky", Priority::Medium, "y").await;
        let fence = start(&store, "flaky", other, &format!("o{other}"), T0).await;
        store
            .fail(other, failed(fence, Phase::Run, code, cause), T0)
            .await
            .unwrap();
        let shown = store.get_item(other).await.unwrap();
        assert_eq!((shown.state, shown.attempts), (ItemState::Failed, 0));
    }
}

pub async fn preemptions_go_back_five_times_and_a_launch_may_ask_fewer(store: DynStore) {
    queue(&store, "q").await;
    let item = enqueue(&store, "q", Priority::Medium, "x").await;
    for n in 0..6 {
        let fence = start(&store, "q", item, &format!("p{n}"), T0).await;
        let mut up = update(fence, RunState::Preempted, None);
        up.message = Some("preempted by the backend".into());
        store
            .update_run(&format!("p{n}").parse().unwrap(), up, T0)
            .await
            .unwrap();
        let shown = store.get_item(item).await.unwrap();
        if n < 5 {
            assert_eq!(shown.state, ItemState::Pending, "preemption {}", n + 1);
            assert_eq!(shown.attempts, 0, "a preemption is no attempt");
        } else {
            assert_eq!(shown.state, ItemState::Failed, "W&B's cap of five");
            let failure = shown.failure.unwrap();
            assert_eq!(failure.phase, Phase::Run);
            assert!(failure
                .message
                .contains("retried 5 of 5 times for preempted"));
        }
    }
    // A launch asking one retry of preemption gets one.
    let mut spec = liftoff_types::LaunchSpec::command(vec!["true".into()]);
    spec.retry = Some(RetryPolicy {
        preempted: Some(1),
        ..RetryPolicy::default()
    });
    let own = store
        .enqueue(
            crate::NewItem {
                queue: "q".into(),
                spec,
                priority: Priority::Medium,
                resource_args: json!({}),
                kind: liftoff_types::ItemKind::Run,
            },
            T0,
        )
        .await
        .unwrap()
        .id;
    for (n, want) in [(0, ItemState::Pending), (1, ItemState::Failed)] {
        let run = format!("own{n}");
        let fence = start(&store, "q", own, &run, T0).await;
        let up = update(fence, RunState::Preempted, None);
        store
            .update_run(&run.parse().unwrap(), up, T0)
            .await
            .unwrap();
        assert_eq!(store.get_item(own).await.unwrap().state, want);
    }
}

/// What the dashboard and `/metrics` read: a queue's front in lease order, a run's output
/// length, and the grouped counts of pending, ended and retried items.
pub async fn fronts_log_lengths_and_counts_read_what_the_lists_hold(store: DynStore) {
    let mut flaky = NewQueue::named("flaky");
    flaky.retry = Some(RetryPolicy {
        exit_code: Some(ExitCodeRetry {
            max: 1,
            codes: vec![3],
        }),
        ..RetryPolicy::default()
    });
    store.create_queue(flaky, T0).await.unwrap();
    let low = enqueue(&store, "flaky", Priority::Low, "low").await;
    let crit = enqueue(&store, "flaky", Priority::Critical, "crit").await;
    let front = store.pending_front("flaky", 5).await.unwrap();
    let order: Vec<_> = front.iter().map(|i| (i.id, i.position)).collect();
    assert_eq!(order, [(crit, Some(0)), (low, Some(1))], "lease order");
    assert_eq!(store.pending_front("flaky", 1).await.unwrap().len(), 1);

    let fence = start(&store, "flaky", crit, "c1", T0).await;
    let run: liftoff_types::RunId = "c1".parse().unwrap();
    assert_eq!(store.log_len(&run).await.unwrap(), 0);
    let at = crate::LogAppend { fence, offset: 0 };
    store
        .append_log(&run, at, b"hello\n".to_vec(), T0)
        .await
        .unwrap();
    assert_eq!(store.log_len(&run).await.unwrap(), 6);
    // Exit 3 is retried once; the second time the item fails in the run phase.
    store
        .fail(crit, failed(fence, Phase::Run, Some(3), None), T0)
        .await
        .unwrap();
    let fence = start(&store, "flaky", crit, "c2", T0 + 3_600_000).await;
    store
        .fail(
            crit,
            failed(fence, Phase::Run, Some(3), None),
            T0 + 3_600_000,
        )
        .await
        .unwrap();
    assert_eq!(store.get_item(crit).await.unwrap().state, ItemState::Failed);
    let counts = store.item_counts().await.unwrap();
    assert_eq!(counts.pending, [("flaky".to_string(), 3, 1)], "low waits");
    assert_eq!(
        counts.ended,
        [(
            "flaky".to_string(),
            "failed".to_string(),
            Some("run".to_string()),
            1
        )]
    );
    assert_eq!(
        counts.requeues,
        [("flaky".to_string(), "exit-code".to_string(), 1)]
    );
}
