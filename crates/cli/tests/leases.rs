//! Never two at once: the agent's lease on its runs. An agent the server declares lost has
//! its runs stopped on its machine (by its supervisor when the agent is dead, by the agent
//! when it is cut off from the server) before another agent may start the item again.
//! Through the real binaries; each run writes its start and end to a ledger.

mod common;

use common::{wait_async, ServerProcess};
use liftoff_client::Client;
use liftoff_types::{ItemId, ItemState, LaunchSpec, NewQueue, Phase, RunState};
use std::path::Path;
use std::time::{Duration, Instant};

/// A run that records `start RUN PID` and, on SIGTERM, `end RUN PID` in the ledger.
fn ledgered(ledger: &Path, seconds: u32) -> LaunchSpec {
    let l = ledger.display();
    let script = format!(
        "echo \"start $LIFTOFF_RUN_ID $$\" >> {l}; \
         trap 'echo \"end $LIFTOFF_RUN_ID $$\" >> {l}; exit 143' TERM; \
         sleep {seconds} & wait $!; echo \"done $LIFTOFF_RUN_ID $$\" >> {l}"
    );
    LaunchSpec::command(vec!["sh".into(), "-c".into(), script])
}

fn lines(ledger: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

fn starts(ledger: &Path) -> Vec<(String, i32)> {
    lines(ledger)
        .into_iter()
        .filter(|l| l[0] == "start")
        .map(|l| (l[1].clone(), l[2].parse().unwrap()))
        .collect()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

async fn item_state(client: &Client, item: ItemId) -> ItemState {
    client.get_item(item).await.unwrap().state
}

/// Waits until the server knows the item's run runs (a run whose agent dies before saying
/// so counts as never started).
async fn running(client: &Client, item: ItemId) {
    wait_async(
        "the server to hear the run runs",
        Duration::from_secs(20),
        || async {
            let Some(run) = client.get_item(item).await.unwrap().run_id else {
                return false;
            };
            client.get_run(&run).await.unwrap().state == RunState::Running
        },
    )
    .await;
}

fn server(timeout: &str, grace: &str) -> ServerProcess {
    ServerProcess::start_with(&[
        "server",
        "--bind",
        "127.0.0.1:0",
        "--agent-timeout",
        timeout,
        "--lost-grace",
        grace,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_run_is_stopped_before_its_next_attempt_starts_elsewhere() {
    let server = server("3", "4");
    let client = server.client();
    let mut again = NewQueue::named("again");
    again.requeue_lost = true;
    client.create_queue(&again).await.unwrap();
    let dir = server.dir.path();
    let ledger = dir.join("ledger");
    let mut first = server.agent(&dir.join("a"), &["--queue", "again"]);
    let item = client
        .enqueue("again", &ledgered(&ledger, 120))
        .await
        .unwrap()
        .id;
    common::wait_for(
        "the first attempt to start",
        Duration::from_secs(20),
        || starts(&ledger).len() == 1,
    );
    running(&client, item).await;
    let (first_run, first_pid) = starts(&ledger)[0].clone();
    first.kill9();
    // Another machine's agent is there at once, waiting for work.
    let _second = server.agent(&dir.join("b"), &["--queue", "again"]);
    common::wait_for(
        "the second attempt to start",
        Duration::from_secs(40),
        || starts(&ledger).len() == 2,
    );
    assert!(
        !alive(first_pid),
        "the first attempt still runs beside the second"
    );
    let order: Vec<String> = lines(&ledger)
        .iter()
        .map(|l| format!("{} {}", l[0], l[1]))
        .collect();
    let second_run = starts(&ledger)[1].0.clone();
    assert_ne!(first_run, second_run);
    assert_eq!(
        order,
        vec![
            format!("start {first_run}"),
            format!("end {first_run}"),
            format!("start {second_run}"),
        ],
        "the first attempt ended (SIGTERM) before the second started"
    );
    let shown = client.get_item(item).await.unwrap();
    assert_eq!((shown.state, shown.attempts), (ItemState::Claimed, 1));
    let lost = client.get_run(&first_run.parse().unwrap()).await.unwrap();
    assert_eq!(lost.state, RunState::Lost);
    client.cancel_item(item).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_requeue_a_dead_agents_run_is_gone_within_timeout_and_grace() {
    let server = server("3", "4");
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    let ledger = dir.join("ledger");
    let state = dir.join("a");
    let mut agent = server.agent(&state, &["--queue", "q"]);
    // Ignores SIGTERM: only the forced stop after the grace ends it.
    let l = ledger.display();
    let stubborn = LaunchSpec::command(vec![
        "sh".into(),
        "-c".into(),
        format!("echo \"start $LIFTOFF_RUN_ID $$\" >> {l}; trap '' TERM; sleep 120 & wait $!; sleep 120"),
    ]);
    let item = client.enqueue("q", &stubborn).await.unwrap().id;
    common::wait_for("the run to start", Duration::from_secs(20), || {
        starts(&ledger).len() == 1
    });
    running(&client, item).await;
    let pid = starts(&ledger)[0].1;
    agent.kill9();
    let killed = Instant::now();
    common::wait_for("the run's process to go", Duration::from_secs(20), || {
        !alive(pid) && common::group_alive(pid).is_empty()
    });
    let gone = killed.elapsed();
    // Timeout 3 s from the last answered beat (sent up to a beat's 1 s wait before the
    // kill), then the forced stop 2 s (half the lost grace) later.
    assert!(
        gone <= Duration::from_millis(6_500),
        "gone {gone:?} after the kill (timeout 3 s + grace 2 s)"
    );
    assert!(
        gone >= Duration::from_millis(1_500),
        "stopped {gone:?} after the kill: before the lease could have lapsed"
    );
    wait_async("the item to fail", Duration::from_secs(20), || async {
        item_state(&client, item).await == ItemState::Failed
    })
    .await;
    let failure = client.get_item(item).await.unwrap().failure.unwrap();
    assert_eq!(failure.phase, Phase::Agent, "{}", failure.message);
    let log = std::fs::read_to_string(state.join("supervisor.log")).unwrap();
    assert!(log.contains("lease lapsed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_its_server_stops_its_runs_and_a_short_outage_spares_them() {
    let mut server = server("4", "4");
    let client = server.client();
    let mut again = NewQueue::named("again");
    again.requeue_lost = true;
    client.create_queue(&again).await.unwrap();
    let dir = server.dir.path();
    let ledger = dir.join("ledger");
    let agent = server.agent(&dir.join("a"), &["--queue", "again"]);
    let item = client
        .enqueue("again", &ledgered(&ledger, 120))
        .await
        .unwrap()
        .id;
    common::wait_for("the run to start", Duration::from_secs(20), || {
        starts(&ledger).len() == 1
    });
    running(&client, item).await;
    let (run, pid) = starts(&ledger)[0].clone();
    // A restart of the server: a moment away, the run goes on.
    server.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(pid), "a short outage stopped the run");
    // Away for longer than the agent timeout: the agent stops its run on its own.
    let addr_gone = Instant::now();
    server.kill9();
    common::wait_for("the run to be stopped", Duration::from_secs(20), || {
        lines(&ledger).iter().any(|l| l[0] == "end" && l[1] == run)
    });
    assert!(
        addr_gone.elapsed() <= Duration::from_secs(9),
        "stopped {:?} after the server went (timeout 4 s)",
        addr_gone.elapsed()
    );
    assert!(!alive(pid));
    server.restart();
    // Back: the item runs again, once, as the lost run of a requeueing queue.
    let deadline = Instant::now() + Duration::from_secs(40);
    while starts(&ledger).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no next attempt: {:?}\n{}",
            client.get_item(item).await,
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = client.get_item(item).await.unwrap();
    assert_eq!(shown.attempts, 1, "{shown:?}");
    let lost = client.get_run(&run.parse().unwrap()).await.unwrap();
    assert_eq!(lost.state, RunState::Lost, "{:?}", lost.message);
    client.cancel_item(item).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_finished_while_its_agent_was_lost_ends_finished_when_it_returns() {
    let mut server = server("2", "4");
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    let (ledger, state) = (dir.join("ledger"), dir.join("a"));
    let mut agent = server.agent(&state, &["--queue", "q"]);
    let l = ledger.display();
    let spec = LaunchSpec::command(vec![
        "sh".into(),
        "-c".into(),
        format!("echo \"start $LIFTOFF_RUN_ID $$\" >> {l}; sleep 1.5; echo \"done $LIFTOFF_RUN_ID $$\" >> {l}"),
    ]);
    let item = client.enqueue("q", &spec).await.unwrap().id;
    running(&client, item).await;
    // The agent dies, and the server is down when the run ends, so the supervisor's report
    // of the end finds nobody; the server, back, calls the run lost.
    agent.kill9();
    server.kill9();
    common::wait_for("the run to finish", Duration::from_secs(20), || {
        lines(&ledger).iter().any(|l| l[0] == "done")
    });
    let supervisor_log = state.join("supervisor.log");
    common::wait_for(
        "the supervisor's report to fail",
        Duration::from_secs(20),
        || {
            let log = std::fs::read_to_string(&supervisor_log).unwrap_or_default();
            // The reporter says what it left, and its failure is noted by the supervisor.
            log.contains("0 end(s) reported, 1 left for the agent")
                && log.contains("reporting 1 end(s) no agent heard")
        },
    );
    server.restart();
    wait_async(
        "the item to fail as lost",
        Duration::from_secs(20),
        || async { item_state(&client, item).await == ItemState::Failed },
    )
    .await;
    let _back = server.agent(&state, &["--queue", "q"]);
    wait_async(
        "the item to be finished",
        Duration::from_secs(20),
        || async { item_state(&client, item).await == ItemState::Finished },
    )
    .await;
    let shown = client.get_item(item).await.unwrap();
    assert!(shown.failure.is_none(), "{:?}", shown.failure);
    assert!(
        shown
            .warnings
            .iter()
            .any(|w| w.message.contains("came back")),
        "{:?}",
        shown.warnings
    );
    assert_eq!(starts(&ledger).len(), 1, "it ran once");
}
