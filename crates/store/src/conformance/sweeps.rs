//! Conformance cases for sweeps, their runs and run metrics.

use super::{ack, agent, enqueue, is_conflict, queue, update, DynStore, T0};
use crate::{LeaseParams, NewItem, NewSweep, NewSweepRun};
use liftoff_types::api::ItemFilter;
use liftoff_types::{
    AgentId, ItemKind, ItemState, LaunchSpec, Lease, Priority, RunState, SweepState,
};
use serde_json::json;

async fn sweep(store: &DynStore, id: &str, queue: &str) -> liftoff_types::Sweep {
    let new = NewSweep {
        id: id.into(),
        name: Some(format!("sweep {id}")),
        queue: queue.into(),
        config: json!({"method": "random"}),
        concurrency: 2,
    };
    let scheduler = NewItem {
        queue: queue.into(),
        spec: LaunchSpec {
            sweep_id: Some(id.into()),
            ..LaunchSpec::default()
        },
        priority: Priority::Medium,
        resource_args: json!({}),
        kind: ItemKind::Scheduler,
    };
    store.create_sweep(new, scheduler, T0).await.unwrap()
}

fn run(sweep: &str, queue: &str, index: u32, cap: Option<u64>) -> NewSweepRun {
    let mut spec = LaunchSpec::command(vec!["echo".into(), format!("run{index}")]);
    spec.sweep_id = Some(sweep.into());
    NewSweepRun {
        sweep: sweep.into(),
        index,
        run_cap: cap,
        item: NewItem {
            queue: queue.into(),
            spec,
            priority: Priority::Medium,
            resource_args: json!({}),
            kind: ItemKind::Run,
        },
    }
}

async fn lease_kinds(
    store: &DynStore,
    agent: AgentId,
    queue: &str,
    runs: bool,
    schedulers: bool,
) -> Vec<Lease> {
    let params = LeaseParams {
        agent,
        queues: vec![queue.into()],
        max: 10,
        lease_ms: 60_000,
        runs,
        schedulers,
    };
    store.lease(params, T0).await.unwrap()
}

pub async fn sweep_runs_keep_to_their_cap_and_index(store: DynStore) {
    queue(&store, "q").await;
    let s = sweep(&store, "sw1", "q").await;
    assert_eq!(s.state, SweepState::Pending);
    let scheduler = store.get_item(s.scheduler_item).await.unwrap();
    assert_eq!(scheduler.kind, ItemKind::Scheduler);
    // A pending sweep takes no runs yet.
    assert!(is_conflict(
        store
            .enqueue_sweep_run(run("sw1", "q", 0, Some(2)), T0)
            .await
    ));
    store
        .set_sweep_state("sw1", SweepState::Running, None, T0)
        .await
        .unwrap();
    let first = store
        .enqueue_sweep_run(run("sw1", "q", 0, Some(2)), T0)
        .await
        .unwrap();
    assert_eq!(first.sweep_index, Some(0));
    let again = store
        .enqueue_sweep_run(run("sw1", "q", 0, Some(2)), T0)
        .await
        .unwrap();
    assert_eq!(again.id, first.id, "the same index is the same run");
    store
        .enqueue_sweep_run(run("sw1", "q", 1, Some(2)), T0)
        .await
        .unwrap();
    assert!(is_conflict(
        store
            .enqueue_sweep_run(run("sw1", "q", 2, Some(2)), T0)
            .await
    ));
    let filter = ItemFilter {
        sweep: Some("sw1".into()),
        ..ItemFilter::default()
    };
    let runs = store.list_items(&filter).await.unwrap();
    assert_eq!(
        runs.iter().map(|i| i.sweep_index).collect::<Vec<_>>(),
        [Some(1), Some(0)]
    );
    // Kinds: an agent at its scheduler cap takes runs only, and the other way round.
    let a = agent(&store).await;
    let taken = lease_kinds(&store, a, "q", true, false).await;
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|l| l.item.kind == ItemKind::Run));
    let taken = lease_kinds(&store, a, "q", false, true).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].item.id, s.scheduler_item);
    assert_eq!(store.list_sweeps().await.unwrap().len(), 1);
}

pub async fn paused_sweeps_hold_their_runs(store: DynStore) {
    queue(&store, "q").await;
    sweep(&store, "sw2", "q").await;
    store
        .set_sweep_state("sw2", SweepState::Running, None, T0)
        .await
        .unwrap();
    let r = store
        .enqueue_sweep_run(run("sw2", "q", 0, None), T0)
        .await
        .unwrap();
    store
        .set_sweep_state("sw2", SweepState::Paused, None, T0)
        .await
        .unwrap();
    assert!(is_conflict(
        store.enqueue_sweep_run(run("sw2", "q", 1, None), T0).await
    ));
    let plain = enqueue(&store, "q", Priority::Low, "plain").await;
    let a = agent(&store).await;
    let taken = lease_kinds(&store, a, "q", true, false).await;
    assert_eq!(
        taken.iter().map(|l| l.item.id).collect::<Vec<_>>(),
        [plain],
        "a paused sweep's run waits; other items do not"
    );
    store
        .set_sweep_state("sw2", SweepState::Running, None, T0)
        .await
        .unwrap();
    let taken = lease_kinds(&store, a, "q", true, false).await;
    assert_eq!(taken.iter().map(|l| l.item.id).collect::<Vec<_>>(), [r.id]);
    // Ended is final.
    store
        .set_sweep_state("sw2", SweepState::Finished, Some("done".into()), T0)
        .await
        .unwrap();
    assert!(is_conflict(
        store
            .set_sweep_state("sw2", SweepState::Running, None, T0)
            .await
    ));
    let s = store.get_sweep("sw2").await.unwrap();
    assert_eq!(
        (s.state, s.message.as_deref()),
        (SweepState::Finished, Some("done"))
    );
}

pub async fn cancelling_a_sweep_cancels_its_items(store: DynStore) {
    queue(&store, "q").await;
    let s = sweep(&store, "sw3", "q").await;
    store
        .set_sweep_state("sw3", SweepState::Running, None, T0)
        .await
        .unwrap();
    let live = store
        .enqueue_sweep_run(run("sw3", "q", 0, None), T0)
        .await
        .unwrap();
    let a = agent(&store).await;
    let taken = lease_kinds(&store, a, "q", true, false).await;
    store
        .ack(live.id, ack(taken[0].fence, "swrun0"), T0)
        .await
        .unwrap();
    let waiting = store
        .enqueue_sweep_run(run("sw3", "q", 1, None), T0)
        .await
        .unwrap();
    let (after, touched) = store
        .set_sweep_state("sw3", SweepState::Cancelled, None, T0)
        .await
        .unwrap();
    assert_eq!(after.state, SweepState::Cancelled);
    assert_eq!(touched.len(), 3, "scheduler, live run, waiting run");
    let get = |id| store.get_item(id);
    assert_eq!(get(waiting.id).await.unwrap().state, ItemState::Cancelled);
    assert_eq!(
        get(s.scheduler_item).await.unwrap().state,
        ItemState::Cancelled
    );
    let live = get(live.id).await.unwrap();
    assert!(live.cancel_requested && live.state == ItemState::Claimed);
    let r = store.get_run(&"swrun0".parse().unwrap()).await.unwrap();
    assert!(r.stop_requested, "its agent hears it must stop the run");
}

pub async fn lost_schedulers_go_back_to_their_queue(store: DynStore) {
    queue(&store, "q").await;
    let s = sweep(&store, "sw4", "q").await;
    let a = agent(&store).await;
    let taken = lease_kinds(&store, a, "q", false, true).await;
    store
        .ack(s.scheduler_item, ack(taken[0].fence, "sched4"), T0)
        .await
        .unwrap();
    let plain = enqueue(&store, "q", Priority::Medium, "plain").await;
    let taken = lease_kinds(&store, a, "q", true, false).await;
    store
        .ack(plain, ack(taken[0].fence, "plain4"), T0)
        .await
        .unwrap();
    let lost = store.lose_agents(T0 + 1, T0 + 2, T0 + 2).await.unwrap();
    assert_eq!(lost.agents, [a]);
    let scheduler = store.get_item(s.scheduler_item).await.unwrap();
    assert_eq!(
        scheduler.state,
        ItemState::Pending,
        "a scheduler keeps its state on the server: it always goes back"
    );
    assert_eq!(
        store.get_item(plain).await.unwrap().state,
        ItemState::Failed
    );
}

pub async fn metrics_are_kept_once_per_line_and_stop_reasons_stick(store: DynStore) {
    queue(&store, "q").await;
    let item = enqueue(&store, "q", Priority::Medium, "m").await;
    let a = agent(&store).await;
    let fence = lease_kinds(&store, a, "q", true, true).await[0].fence;
    let id = "metrics1".parse().unwrap();
    store.ack(item, ack(fence, "metrics1"), T0).await.unwrap();
    let recs = |from: u64, n: u64| -> Vec<serde_json::Map<String, serde_json::Value>> {
        (from..from + n)
            .map(|i| {
                json!({"step": i, "loss": 1.0 / (i + 1) as f64})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect()
    };
    assert_eq!(
        store
            .append_metrics(&id, Some(0), recs(0, 3), T0)
            .await
            .unwrap(),
        3
    );
    // Lines 1 and 2 shipped again, with line 3: only line 3 is new.
    assert_eq!(
        store
            .append_metrics(&id, Some(1), recs(1, 3), T0)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store
            .append_metrics(&id, None, recs(9, 1), T0)
            .await
            .unwrap(),
        5
    );
    let kept = store.read_metrics(&id).await.unwrap();
    let steps: Vec<u64> = kept.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 1, 2, 3, 9]);
    store
        .request_stop(
            &id,
            Some("hyperband: worse than the cut at step 3".into()),
            T0,
        )
        .await
        .unwrap();
    let mut stopped = update(fence, RunState::Stopped, Some(143));
    stopped.message = Some("stopped on request".into());
    let r = store.update_run(&id, stopped, T0).await.unwrap();
    assert_eq!(
        r.message.as_deref(),
        Some("hyperband: worse than the cut at step 3")
    );
    assert!(is_conflict(
        store.append_metrics(&id, None, recs(10, 1), T0).await
    ));
}

pub async fn job_versions_are_one_per_content(store: DynStore) {
    use liftoff_types::job::{JobKind, JobSource};
    let spec = |entry: &str| liftoff_types::JobSpec {
        kind: JobKind::Image,
        source: JobSource {
            image: Some("python:3.11".into()),
            digest: None,
            repo: None,
            commit: None,
        },
        entrypoint: vec!["python".into(), entry.into()],
        default_config: serde_json::Map::new(),
        input_schema: None,
    };
    let (v0, new) = store
        .put_job_version("train", "k0", spec("a.py"), T0)
        .await
        .unwrap();
    assert!(new && v0.version == 0);
    let (again, new) = store
        .put_job_version("train", "k0", spec("a.py"), T0)
        .await
        .unwrap();
    assert!(
        !new && again.version == 0,
        "the same content is the same version"
    );
    let (v1, new) = store
        .put_job_version("train", "k1", spec("b.py"), T0)
        .await
        .unwrap();
    assert!(new && v1.version == 1);
    store
        .put_job_version("eval", "k0", spec("e.py"), T0)
        .await
        .unwrap();
    let latest = store.get_job_version("train", None).await.unwrap();
    assert_eq!(
        (latest.version, latest.spec.entrypoint[1].as_str()),
        (1, "b.py")
    );
    assert_eq!(
        store
            .get_job_version("train", Some(0))
            .await
            .unwrap()
            .spec
            .entrypoint[1],
        "a.py"
    );
    assert!(matches!(
        store.get_job_version("train", Some(7)).await,
        Err(crate::StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.list_job_versions(Some("train")).await.unwrap().len(),
        2
    );
    assert_eq!(store.list_job_versions(None).await.unwrap().len(), 3);
}

pub async fn ended_sweeps_are_pruned_whole_and_only_when_all_is_old(store: DynStore) {
    queue(&store, "q").await;
    let a = agent(&store).await;
    let mut runs = Vec::new();
    for id in ["old", "late"] {
        sweep(&store, id, "q").await;
        store
            .set_sweep_state(id, SweepState::Running, None, T0)
            .await
            .unwrap();
        let item = store
            .enqueue_sweep_run(run(id, "q", 0, None), T0)
            .await
            .unwrap();
        let taken = lease_kinds(&store, a, "q", true, false).await;
        let run_id = format!("{id}-run");
        store
            .ack(item.id, ack(taken[0].fence, &run_id), T0)
            .await
            .unwrap();
        runs.push((item.id, run_id, taken[0].fence));
    }
    // `old` ends with its run at T0; `late`'s run ends after the cutoff.
    let (old, late) = (&runs[0], &runs[1]);
    store
        .update_run(
            &old.1.parse().unwrap(),
            update(old.2, RunState::Finished, Some(0)),
            T0,
        )
        .await
        .unwrap();
    for id in ["old", "late"] {
        store
            .set_sweep_state(id, SweepState::Cancelled, None, T0)
            .await
            .unwrap();
    }
    store
        .update_run(
            &late.1.parse().unwrap(),
            update(late.2, RunState::Stopped, None),
            T0 + 10_000,
        )
        .await
        .unwrap();
    let cutoff = T0 + 5_000;
    let counted = store.prune(cutoff, true).await.unwrap();
    assert_eq!(
        (counted.sweeps, counted.items, counted.runs),
        (1, 2, 1),
        "old's run and scheduler"
    );
    store.prune(cutoff, false).await.unwrap();
    assert!(store.get_sweep("old").await.is_err());
    assert!(store.get_item(old.0).await.is_err());
    assert!(store.get_run(&old.1.parse().unwrap()).await.is_err());
    let kept = store.get_sweep("late").await.unwrap();
    assert_eq!(kept.state, SweepState::Cancelled);
    assert_eq!(
        store.get_item(late.0).await.unwrap().state,
        ItemState::Stopped
    );
    assert!(store.get_item(kept.scheduler_item).await.is_ok());
}
