//! The store conformance suite: one body of tests that every [`Store`] implementation must
//! pass. An implementation's test file calls [`conformance_tests!`](crate::conformance_tests)
//! with an async function that makes a fresh, empty store (and a guard that keeps whatever
//! backs it alive), or `None` when the engine behind it is not there (the case is then
//! skipped; [`postgres::server_url`] makes that a failure under CI).
//!
//! Time is passed in by hand (`T0 + ...`), so expiry is tested without sleeping.

use crate::{Ack, LeaseParams, NewItem, Store, StoreError};
use liftoff_types::api::{FailRequest, ItemFilter};
use liftoff_types::{
    AgentId, AgentStatus, Attachment, Heartbeat, ItemId, ItemKind, ItemState, LaunchSpec, Lease,
    Millis, NewAgent, NewQueue, Phase, Priority, RunId, RunState, RunUpdate, Scope,
};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

pub type DynStore = Arc<dyn Store>;

mod ending;
mod liveness;
mod retries;
mod sweeps;
pub use ending::*;
pub use liveness::*;
pub use retries::*;
pub use sweeps::*;

pub(crate) const T0: Millis = 1_700_000_000_000;

/// Defines one `#[tokio::test]` per conformance case, each on a fresh store from `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            priority_then_fifo, fifo_when_prioritization_is_off, round_robin_across_queues,
            concurrent_leasers_lease_each_item_once, expiry_releases_with_a_higher_fence,
            attempt_limit_fails_with_phase_agent, cancel_pending_and_leased_items,
            cancel_of_a_claimed_item_asks_its_agent_to_stop, release_does_not_count_an_attempt,
            force_cancel_ends_an_item_whose_agent_is_gone, prune_removes_only_what_ended_long_ago,
            queue_concurrency_caps_live_runs_across_agents, runs_are_listed_by_job_name_or_version,
            the_last_admin_token_cannot_be_revoked,
            a_lost_agents_items_wait_out_the_hold_and_unstarted_runs_cost_nothing,
            a_lost_run_found_finished_by_its_agent_ends_its_item_finished,
            a_held_item_whose_lost_run_is_found_finished_is_not_run_again,
            retries_by_cause_are_taken_and_refused_as_configured,
            fronts_log_lengths_and_counts_read_what_the_lists_hold,
            preemptions_go_back_five_times_and_a_launch_may_ask_fewer,
            lifecycle_to_finished, failures_keep_phase_message_and_files,
            run_end_decides_the_item, ack_after_expiry_is_a_conflict, positions_follow_lease_order,
            queue_delete_refuses_live_items, tokens_are_found_by_hash, unknown_things_are_not_found,
            logs_append_in_order_and_retries_are_harmless, silent_agents_are_lost_with_their_work,
            heartbeats_name_items_that_are_no_longer_the_agents, secrets_are_made_once_and_kept,
            sweep_runs_keep_to_their_cap_and_index, paused_sweeps_hold_their_runs,
            cancelling_a_sweep_cancels_its_items, ended_sweeps_are_pruned_whole_and_only_when_all_is_old, lost_schedulers_go_back_to_their_queue,
            metrics_are_kept_once_per_line_and_stop_reasons_stick, job_versions_are_one_per_content);
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (Some(store), _guard) = $make().await else { return };
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

pub(crate) async fn queue(store: &DynStore, name: &str) {
    store.create_queue(NewQueue::named(name), T0).await.unwrap();
}

pub(crate) async fn agent(store: &DynStore) -> AgentId {
    let new = NewAgent {
        hostname: "host".into(),
        ..NewAgent::default()
    };
    store.register_agent(new, T0).await.unwrap().id
}

pub(crate) async fn enqueue(
    store: &DynStore,
    queue: &str,
    priority: Priority,
    tag: &str,
) -> ItemId {
    let item = NewItem {
        queue: queue.to_string(),
        spec: LaunchSpec::command(vec!["echo".into(), tag.into()]),
        priority,
        resource_args: json!({}),
        kind: ItemKind::Run,
    };
    store.enqueue(item, T0).await.unwrap().id
}

pub(crate) async fn lease(
    store: &DynStore,
    agent: AgentId,
    queues: &[&str],
    max: u32,
    now: Millis,
) -> Vec<Lease> {
    let params = LeaseParams {
        agent,
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max,
        lease_ms: 1_000,
        runs: true,
        schedulers: true,
    };
    store.lease(params, now).await.unwrap()
}

fn tag(lease: &Lease) -> String {
    lease.item.spec.overrides.entry_point.as_ref().unwrap()[1].clone()
}

pub(crate) fn ack(fence: i64, run: &str) -> Ack {
    Ack {
        fence,
        run_id: run.parse().unwrap(),
        handle: json!({"pid": 42}),
        state: RunState::Starting,
    }
}

pub(crate) fn update(fence: i64, state: RunState, exit_code: Option<i32>) -> RunUpdate {
    RunUpdate {
        started_at_ms: None,
        fence,
        state,
        exit_code,
        message: None,
        handle: None,
        not_started: false,
    }
}

pub(crate) fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

pub async fn priority_then_fifo(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    for (p, t) in [
        (Priority::Low, "low1"),
        (Priority::Medium, "med1"),
        (Priority::Critical, "crit1"),
        (Priority::Low, "low2"),
        (Priority::Critical, "crit2"),
        (Priority::High, "high1"),
    ] {
        enqueue(&store, "q", p, t).await;
    }
    let mut order = Vec::new();
    while let Some(l) = lease(&store, a, &["q"], 1, T0).await.pop() {
        order.push(tag(&l));
    }
    assert_eq!(order, ["crit1", "crit2", "high1", "med1", "low1", "low2"]);
}

pub async fn fifo_when_prioritization_is_off(store: DynStore) {
    let mut q = NewQueue::named("fifo");
    q.prioritization = false;
    store.create_queue(q, T0).await.unwrap();
    let a = agent(&store).await;
    enqueue(&store, "fifo", Priority::Low, "first").await;
    enqueue(&store, "fifo", Priority::Critical, "second").await;
    let got: Vec<String> = lease(&store, a, &["fifo"], 2, T0)
        .await
        .iter()
        .map(tag)
        .collect();
    assert_eq!(got, ["first", "second"]);
}

pub async fn round_robin_across_queues(store: DynStore) {
    for q in ["a", "b", "c"] {
        queue(&store, q).await;
        for n in 0..3 {
            enqueue(&store, q, Priority::Medium, &format!("{q}{n}")).await;
        }
    }
    let agent1 = agent(&store).await;
    let mut queues = Vec::new();
    for _ in 0..6 {
        let l = lease(&store, agent1, &["a", "b", "c"], 1, T0).await;
        queues.push(l[0].item.queue.clone());
    }
    assert_eq!(queues, ["a", "b", "c", "a", "b", "c"]);
    // Inside one call: one item per queue per round.
    let agent2 = agent(&store).await;
    let got: Vec<String> = lease(&store, agent2, &["c", "a"], 3, T0)
        .await
        .iter()
        .map(tag)
        .collect();
    assert_eq!(got, ["c2", "a2"]);
}

pub async fn concurrent_leasers_lease_each_item_once(store: DynStore) {
    queue(&store, "bulk").await;
    let mut enqueues = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let store = store.clone();
        enqueues.spawn(async move {
            for n in 0..1250 {
                enqueue(&store, "bulk", Priority::Medium, &format!("{chunk}-{n}")).await;
            }
        });
    }
    enqueues.join_all().await;
    let mut leasers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        leasers.spawn(async move {
            let me = agent(&store).await;
            let mut mine = Vec::new();
            loop {
                let got = lease(&store, me, &["bulk"], 16, T0).await;
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|l| l.item.id));
            }
        });
    }
    let all: Vec<ItemId> = leasers.join_all().await.into_iter().flatten().collect();
    let unique: HashSet<ItemId> = all.iter().copied().collect();
    assert_eq!(all.len(), 10_000, "every item leased exactly once");
    assert_eq!(unique.len(), 10_000, "no item leased twice");
}

pub async fn expiry_releases_with_a_higher_fence(store: DynStore) {
    queue(&store, "q").await;
    let (first, second) = (agent(&store).await, agent(&store).await);
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let old = lease(&store, first, &["q"], 1, T0).await.remove(0);
    assert_eq!(old.expires_at_ms, T0 + 1_000);
    assert!(store
        .expire_leases(T0 + 999)
        .await
        .unwrap()
        .requeued
        .is_empty());
    assert!(lease(&store, second, &["q"], 1, T0 + 999).await.is_empty());
    let expired = store.expire_leases(T0 + 1_001).await.unwrap();
    assert_eq!(expired.requeued, vec![(id, "q".to_string())]);
    let item = store.get_item(id).await.unwrap();
    assert_eq!((item.state, item.attempts), (ItemState::Pending, 1));
    let new = lease(&store, second, &["q"], 1, T0 + 1_002).await.remove(0);
    assert!(new.fence > old.fence, "fence grows with every lease");
    let stale_ack = store.ack(id, ack(old.fence, "run-old"), T0 + 1_003).await;
    assert!(is_conflict(stale_ack), "stale ack rejected");
    let stale_fail = FailRequest {
        fence: old.fence,
        exit_code: None,
        message: "late".into(),
        phase: Phase::Run,
        files: vec![],
        cause: None,
    };
    assert!(
        is_conflict(store.fail(id, stale_fail, T0 + 1_003).await),
        "stale fail rejected"
    );
    assert!(is_conflict(store.warn(id, old.fence, "late", T0).await));
    assert!(is_conflict(store.release(id, old.fence, T0).await));
    store
        .ack(id, ack(new.fence, "run-new"), T0 + 1_004)
        .await
        .unwrap();
    assert_eq!(store.get_item(id).await.unwrap().state, ItemState::Claimed);
}

pub async fn attempt_limit_fails_with_phase_agent(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let mut now = T0;
    for attempt in 1..=3 {
        assert_eq!(
            lease(&store, a, &["q"], 1, now).await.len(),
            1,
            "attempt {attempt}"
        );
        now += 2_000;
        store.expire_leases(now).await.unwrap();
    }
    let item = store.get_item(id).await.unwrap();
    assert_eq!(item.state, ItemState::Failed);
    assert_eq!(item.attempts, 3);
    assert_eq!(item.failure.unwrap().phase, Phase::Agent);
    assert!(lease(&store, a, &["q"], 1, now).await.is_empty());
}

pub async fn cancel_pending_and_leased_items(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let pending = enqueue(&store, "q", Priority::Critical, "pending").await;
    assert_eq!(
        store.cancel(pending, T0).await.unwrap().state,
        ItemState::Cancelled
    );
    let leased = enqueue(&store, "q", Priority::Medium, "leased").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    assert_eq!(l.item.id, leased, "a cancelled item is never leased");
    assert_eq!(
        store.cancel(leased, T0).await.unwrap().state,
        ItemState::Cancelled
    );
    assert!(is_conflict(store.ack(leased, ack(l.fence, "r1"), T0).await));
    assert!(
        is_conflict(store.cancel(leased, T0).await),
        "terminal items stay terminal"
    );
    assert!(lease(&store, a, &["q"], 1, T0).await.is_empty());
    assert!(store
        .expire_leases(T0 + 5_000)
        .await
        .unwrap()
        .requeued
        .is_empty());
}

pub async fn cancel_of_a_claimed_item_asks_its_agent_to_stop(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    store.ack(id, ack(l.fence, "r1"), T0).await.unwrap();
    let item = store.cancel(id, T0).await.unwrap();
    assert_eq!(
        (item.state, item.cancel_requested),
        (ItemState::Claimed, true)
    );
    let beat = Heartbeat {
        status: AgentStatus::Running,
        in_flight: vec![id],
        running_jobs: 1,
        running_schedulers: 0,
        wait_ms: 0,
    };
    let reply = store.heartbeat(a, beat, T0).await.unwrap();
    assert_eq!(reply.stop_items, vec![id]);
    let seen = store.get_agent(a).await.unwrap();
    assert_eq!(
        (seen.running_jobs, seen.running_schedulers),
        (1, 0),
        "the counts it sent"
    );
    assert!(
        store
            .get_run(&"r1".parse().unwrap())
            .await
            .unwrap()
            .stop_requested
    );
    let run = store
        .update_run(
            &"r1".parse().unwrap(),
            update(l.fence, RunState::Stopped, Some(143)),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Stopped);
    assert_eq!(store.get_item(id).await.unwrap().state, ItemState::Stopped);
}

pub async fn release_does_not_count_an_attempt(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let first = lease(&store, a, &["q"], 1, T0).await.remove(0);
    store.release(id, first.fence, T0).await.unwrap();
    let item = store.get_item(id).await.unwrap();
    assert_eq!((item.state, item.attempts), (ItemState::Pending, 0));
    let again = lease(&store, a, &["q"], 1, T0).await.remove(0);
    assert!(again.fence > first.fence);
    assert!(is_conflict(store.release(id, first.fence, T0).await));
}

pub async fn lifecycle_to_finished(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    assert_eq!(
        (l.item.state, l.item.agent_id),
        (ItemState::Leased, Some(a))
    );
    let run = store.ack(id, ack(l.fence, "run-1"), T0 + 1).await.unwrap();
    assert_eq!(
        (run.state, run.item_id, run.agent_id),
        (RunState::Starting, id, a)
    );
    assert_eq!(run.handle, json!({"pid": 42}));
    assert!(
        is_conflict(store.ack(id, ack(l.fence, "run-2"), T0).await),
        "acked once"
    );
    let again = store.ack(id, ack(l.fence, "run-1"), T0 + 1).await.unwrap();
    assert_eq!(again.id, run.id, "the same ack again is answered again");
    let rid: RunId = "run-1".parse().unwrap();
    let running = store
        .update_run(&rid, update(l.fence, RunState::Running, None), T0 + 2)
        .await
        .unwrap();
    assert_eq!(running.started_at_ms, Some(T0 + 2));
    let stale_end = store
        .update_run(
            &rid,
            update(l.fence - 1, RunState::Finished, Some(0)),
            T0 + 2,
        )
        .await;
    assert!(
        is_conflict(stale_end),
        "an end at an older fence is refused"
    );
    let done = store
        .update_run(&rid, update(l.fence, RunState::Finished, Some(0)), T0 + 3)
        .await
        .unwrap();
    assert_eq!((done.exit_code, done.ended_at_ms), (Some(0), Some(T0 + 3)));
    let item = store.get_item(id).await.unwrap();
    assert_eq!(
        (item.state, item.run_id),
        (ItemState::Finished, Some(rid.clone()))
    );
    assert!(is_conflict(
        store
            .update_run(&rid, update(l.fence, RunState::Running, None), T0)
            .await
    ));
    let stale = store
        .update_run(&rid, update(l.fence - 1, RunState::Failed, None), T0)
        .await;
    assert!(is_conflict(stale));
}

pub async fn failures_keep_phase_message_and_files(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    store.warn(id, l.fence, "slow disk", T0).await.unwrap();
    store
        .warn(id, l.fence, "retrying fetch", T0 + 1)
        .await
        .unwrap();
    let report = FailRequest {
        fence: l.fence,
        exit_code: None,
        message: "build failed".into(),
        phase: Phase::Build,
        files: vec![Attachment {
            name: "build.log".into(),
            content: "pip: no such package".into(),
        }],
        cause: None,
    };
    let item = store.fail(id, report, T0 + 2).await.unwrap();
    assert_eq!(item.state, ItemState::Failed);
    let failure = item.failure.unwrap();
    assert_eq!(
        (failure.phase, failure.message.as_str()),
        (Phase::Build, "build failed")
    );
    assert_eq!(failure.files, ["build.log"]);
    let warnings: Vec<String> = item.warnings.into_iter().map(|w| w.message).collect();
    assert_eq!(warnings, ["slow disk", "retrying fetch"]);
    assert_eq!(
        store.item_file(id, "build.log").await.unwrap(),
        "pip: no such package"
    );
    assert!(matches!(
        store.item_file(id, "other").await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn run_end_decides_the_item(store: DynStore) {
    let mut q = NewQueue::named("q");
    q.requeue_lost = true;
    store.create_queue(q, T0).await.unwrap();
    let a = agent(&store).await;
    let cases = [
        (RunState::Failed, ItemState::Failed),
        (RunState::Preempted, ItemState::Pending),
        (RunState::Lost, ItemState::Pending),
    ];
    for (n, (run_state, item_state)) in cases.into_iter().enumerate() {
        let id = enqueue(&store, "q", Priority::Medium, "x").await;
        let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
        let rid: RunId = format!("r{n}").parse().unwrap();
        store.ack(id, ack(l.fence, rid.as_str()), T0).await.unwrap();
        store
            .update_run(&rid, update(l.fence, run_state, Some(3)), T0)
            .await
            .unwrap();
        let item = store.get_item(id).await.unwrap();
        assert_eq!(item.state, item_state, "{run_state} → {item_state}");
        if run_state == RunState::Failed {
            let failure = item.failure.unwrap();
            assert_eq!(failure.phase, Phase::Run);
            assert!(failure.message.contains('3'), "{}", failure.message);
        } else {
            store.cancel(id, T0).await.unwrap();
        }
    }
}

pub async fn ack_after_expiry_is_a_conflict(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    let l = lease(&store, a, &["q"], 1, T0).await.remove(0);
    assert!(is_conflict(
        store.ack(id, ack(l.fence, "late"), T0 + 5_000).await
    ));
}

pub async fn positions_follow_lease_order(store: DynStore) {
    queue(&store, "q").await;
    let low = enqueue(&store, "q", Priority::Low, "low").await;
    let med = enqueue(&store, "q", Priority::Medium, "med").await;
    let crit = enqueue(&store, "q", Priority::Critical, "crit").await;
    let filter = ItemFilter {
        queue: Some("q".into()),
        ..ItemFilter::default()
    };
    let items = store.list_items(&filter).await.unwrap();
    let positions: Vec<(ItemId, Option<u64>)> = items.iter().map(|i| (i.id, i.position)).collect();
    assert_eq!(
        positions,
        [(crit, Some(0)), (med, Some(1)), (low, Some(2))],
        "newest first, each with its place in lease order"
    );
    assert_eq!(store.get_item(low).await.unwrap().position, Some(2));
    let filter = ItemFilter {
        state: Some(ItemState::Pending),
        after: Some(low.0),
        limit: Some(1),
        ..ItemFilter::default()
    };
    let page = store.list_items(&filter).await.unwrap();
    assert_eq!(page.iter().map(|i| i.id).collect::<Vec<_>>(), [med]);
}

pub async fn queue_delete_refuses_live_items(store: DynStore) {
    queue(&store, "q").await;
    assert!(is_conflict(
        store.create_queue(NewQueue::named("q"), T0).await
    ));
    let id = enqueue(&store, "q", Priority::Medium, "x").await;
    assert!(is_conflict(store.delete_queue("q", false, T0).await));
    let depth = store.get_queue("q", true).await.unwrap().depth.unwrap();
    assert_eq!(depth.pending, 1);
    store.delete_queue("q", true, T0).await.unwrap();
    assert!(matches!(
        store.get_queue("q", false).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_item(id).await,
        Err(StoreError::NotFound { .. })
    ));
    queue(&store, "empty").await;
    store.delete_queue("empty", false, T0).await.unwrap();
    assert!(store.list_queues().await.unwrap().is_empty());
}

pub async fn tokens_are_found_by_hash(store: DynStore) {
    let info = store
        .create_token("ci", Scope::User, "abc123", T0)
        .await
        .unwrap();
    assert_eq!(info.scope, Scope::User);
    let found = store.token_by_hash("abc123").await.unwrap().unwrap();
    assert_eq!(found.id, info.id);
    assert!(store.token_by_hash("nope").await.unwrap().is_none());
    assert_eq!(store.list_tokens().await.unwrap().len(), 1);
    store.delete_token(info.id).await.unwrap();
    assert!(store.token_by_hash("abc123").await.unwrap().is_none());
}

pub async fn unknown_things_are_not_found(store: DynStore) {
    let nf = |r: Result<(), StoreError>| matches!(r, Err(StoreError::NotFound { .. }));
    let item = NewItem {
        queue: "missing".into(),
        spec: LaunchSpec::command(vec!["true".into()]),
        priority: Priority::Medium,
        resource_args: json!({}),
        kind: ItemKind::Run,
    };
    assert!(nf(store.enqueue(item, T0).await.map(drop)));
    let a = agent(&store).await;
    let params = LeaseParams {
        agent: a,
        queues: vec!["missing".into()],
        max: 1,
        lease_ms: 1_000,
        runs: true,
        schedulers: true,
    };
    assert!(nf(store.lease(params, T0).await.map(drop)));
    assert!(nf(store.get_item(ItemId(999)).await.map(drop)));
    assert!(nf(store.cancel(ItemId(999), T0).await.map(drop)));
    assert!(nf(store.get_agent(AgentId(999)).await.map(drop)));
    assert!(nf(store.get_run(&"nope".parse().unwrap()).await.map(drop)));
}

async fn claimed(store: &DynStore, queue_name: &str, run: &str) -> (AgentId, ItemId, i64) {
    let a = agent(store).await;
    let id = enqueue(store, queue_name, Priority::Medium, run).await;
    let l = lease(store, a, &[queue_name], 1, T0).await.remove(0);
    store.ack(id, ack(l.fence, run), T0).await.unwrap();
    (a, id, l.fence)
}

pub async fn logs_append_in_order_and_retries_are_harmless(store: DynStore) {
    queue(&store, "q").await;
    let (_, _, fence) = claimed(&store, "q", "r1").await;
    let rid: RunId = "r1".parse().unwrap();
    let at = |offset| crate::LogAppend { fence, offset };
    assert_eq!(
        store
            .append_log(&rid, at(0), b"hello ".to_vec(), T0)
            .await
            .unwrap(),
        6
    );
    assert_eq!(
        store
            .append_log(&rid, at(6), b"world\n".to_vec(), T0)
            .await
            .unwrap(),
        12
    );
    // A retry of the last chunk, and one overlapping it, store nothing twice.
    assert_eq!(
        store
            .append_log(&rid, at(6), b"world\n".to_vec(), T0)
            .await
            .unwrap(),
        12
    );
    assert_eq!(
        store
            .append_log(&rid, at(9), b"ld\nbye".to_vec(), T0)
            .await
            .unwrap(),
        15
    );
    assert!(
        is_conflict(store.append_log(&rid, at(99), b"x".to_vec(), T0).await),
        "a gap"
    );
    let stale = crate::LogAppend {
        fence: fence - 1,
        offset: 15,
    };
    assert!(is_conflict(
        store.append_log(&rid, stale, b"x".to_vec(), T0).await
    ));
    let all = store.read_log(&rid, 0, 1 << 20).await.unwrap();
    assert_eq!(
        (all.data.as_slice(), all.next_offset, all.ended),
        (&b"hello world\nbye"[..], 15, false)
    );
    let part = store.read_log(&rid, 3, 5).await.unwrap();
    assert_eq!((part.data.as_slice(), part.next_offset), (&b"lo wo"[..], 8));
    store
        .update_run(&rid, update(fence, RunState::Finished, Some(0)), T0)
        .await
        .unwrap();
    assert!(store.read_log(&rid, 15, 10).await.unwrap().ended);
}

pub async fn silent_agents_are_lost_with_their_work(store: DynStore) {
    queue(&store, "q").await;
    let mut q = NewQueue::named("again");
    q.requeue_lost = true;
    store.create_queue(q, T0).await.unwrap();
    let (a, failing, _) = claimed(&store, "q", "r1").await;
    let requeued = enqueue(&store, "again", Priority::Medium, "x").await;
    let l = lease(&store, a, &["again"], 1, T0).await.remove(0);
    store.ack(requeued, ack(l.fence, "r2"), T0).await.unwrap();
    let leased = enqueue(&store, "q", Priority::Medium, "y").await;
    lease(&store, a, &["q"], 1, T0).await;
    let alive = agent(&store).await;
    let beat = Heartbeat {
        status: AgentStatus::Polling,
        in_flight: vec![],
        running_jobs: 0,
        running_schedulers: 0,
        wait_ms: 0,
    };
    store.heartbeat(alive, beat, T0 + 40_000).await.unwrap();

    let lost = store
        .lose_agents(T0 + 30_000, T0 + 40_000, T0 + 40_000)
        .await
        .unwrap();
    assert_eq!(lost.agents, vec![a], "only the silent agent is lost");
    assert_eq!(store.get_agent(a).await.unwrap().status, AgentStatus::Lost);
    let item = store.get_item(failing).await.unwrap();
    assert_eq!(
        (item.state, item.failure.unwrap().phase),
        (ItemState::Failed, Phase::Agent)
    );
    assert_eq!(
        store.get_run(&"r1".parse().unwrap()).await.unwrap().state,
        RunState::Lost
    );
    let item = store.get_item(requeued).await.unwrap();
    assert_eq!(
        (item.state, item.attempts),
        (ItemState::Pending, 1),
        "requeue_lost"
    );
    let item = store.get_item(leased).await.unwrap();
    assert_eq!((item.state, item.attempts), (ItemState::Pending, 1));
    assert!(
        lost.requeued.contains(&"again".to_string()) && lost.requeued.contains(&"q".to_string())
    );
    assert!(
        store
            .lose_agents(T0 + 30_000, T0 + 40_000, T0 + 40_000)
            .await
            .unwrap()
            .agents
            .is_empty(),
        "once"
    );
}

pub async fn heartbeats_name_items_that_are_no_longer_the_agents(store: DynStore) {
    queue(&store, "q").await;
    let (a, id, _) = claimed(&store, "q", "r1").await;
    let beat = |items: Vec<ItemId>| Heartbeat {
        status: AgentStatus::Running,
        in_flight: items,
        running_jobs: 0,
        running_schedulers: 0,
        wait_ms: 0,
    };
    assert!(store
        .heartbeat(a, beat(vec![id]), T0)
        .await
        .unwrap()
        .stop_items
        .is_empty());
    let other = agent(&store).await;
    assert_eq!(
        store
            .heartbeat(other, beat(vec![id]), T0)
            .await
            .unwrap()
            .stop_items,
        vec![id]
    );
    assert_eq!(
        store
            .heartbeat(a, beat(vec![ItemId(999)]), T0)
            .await
            .unwrap()
            .stop_items,
        vec![ItemId(999)]
    );
    let stopped = store.request_agent_stop(a, T0).await.unwrap();
    assert!(stopped.stop_requested);
    assert!(
        store
            .heartbeat(a, beat(vec![id]), T0)
            .await
            .unwrap()
            .stop_agent
    );
}

pub async fn secrets_are_made_once_and_kept(store: DynStore) {
    assert_eq!(store.secret("key", "first").await.unwrap(), "first");
    assert_eq!(
        store.secret("key", "second").await.unwrap(),
        "first",
        "the stored secret wins over a later server's fresh one"
    );
    assert_eq!(store.secret("other", "third").await.unwrap(), "third");
}

pub mod postgres;
