//! Scale-out end to end: two `liftoff server` processes on one PostgreSQL database
//! (`LIFTOFF_TEST_POSTGRES`), four `liftoff agent` processes split between them, 5,000 items:
//! every item runs exactly once (each run appends its item id to a file).

mod common;

use common::{wait_async, ServerProcess};
use liftoff_client::Client;
use liftoff_store::conformance::postgres::fresh_database;
use liftoff_types::api::RunFilter;
use liftoff_types::{LaunchSpec, NewQueue};
use std::collections::HashSet;
use std::time::Duration;

const ITEMS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_and_four_agents_run_every_item_exactly_once() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let args = |url: &str| {
        vec![
            "server".to_string(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            url.to_string(),
        ]
    };
    let a_args = args(&db.url);
    let a = ServerProcess::start_with(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let b = ServerProcess::start_with(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    // The first replica made the admin token; the second found one and made none.
    assert!(b.client_file()["token"].is_null());
    let via_a = a.client();
    let token = a.client_file()["token"].as_str().unwrap().to_string();
    let via_b = Client::new(&b.url(), Some(token)).unwrap();
    via_a.create_queue(&NewQueue::named("q")).await.unwrap();

    let effects = a.dir.path().join("effects");
    let script = format!("echo $LIFTOFF_ITEM_ID >> {}", effects.display());
    let spec = LaunchSpec::command(vec!["sh".into(), "-c".into(), script]);
    // Enqueue through both replicas at once, from several tasks.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let client = if t % 2 == 0 {
            via_a.clone()
        } else {
            via_b.clone()
        };
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ITEMS / 8 {
                client.enqueue("q", &spec).await.unwrap();
            }
        }));
    }
    let dir = a.dir.path().to_path_buf();
    let agent_args = ["--queue", "q", "--max-jobs", "4"];
    let _agents = [
        a.agent_at(&a.url(), &dir.join("agent-1"), &agent_args, &[]),
        a.agent_at(&a.url(), &dir.join("agent-2"), &agent_args, &[]),
        a.agent_at(&b.url(), &dir.join("agent-3"), &agent_args, &[]),
        a.agent_at(&b.url(), &dir.join("agent-4"), &agent_args, &[]),
    ];
    for task in tasks {
        task.await.unwrap();
    }
    wait_async("every item to end", Duration::from_secs(600), || async {
        let d = via_b.get_queue("q").await.unwrap().depth.unwrap();
        d.finished + d.failed + d.stopped + d.cancelled == ITEMS as u64
    })
    .await;
    let depth = via_a.get_queue("q").await.unwrap().depth.unwrap();
    assert_eq!(depth.finished, ITEMS as u64, "{depth:?}");
    let lines: Vec<String> = std::fs::read_to_string(&effects)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let unique: HashSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), ITEMS, "every item ran");
    assert_eq!(lines.len(), ITEMS, "no item ran twice");
    let agents = via_a.list_agents().await.unwrap();
    assert_eq!(agents.len(), 4);
    for agent in agents {
        let filter = RunFilter {
            agent: Some(agent.id),
            limit: Some(1),
            ..RunFilter::default()
        };
        let runs = via_b.list_runs(&filter).await.unwrap();
        assert_eq!(runs.len(), 1, "agent {} took no work", agent.name);
    }
}

/// A loopback TCP proxy in front of PostgreSQL that can cut every connection and refuse new
/// ones, as a database restart or a broken network would, and let them through again.
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn to(upstream: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (is_open, cut) = (open.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let mut cut = cut.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { port, open, cuts }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_loses_its_database_says_so_and_serves_again_when_it_returns() {
    let Some(db) = fresh_database().await else {
        return;
    };
    // postgres://user@host:port/name -> the same through the proxy.
    let (head, rest) = db.url.split_once('@').unwrap();
    let (upstream, name) = rest.split_once('/').unwrap();
    let proxy = Proxy::to(upstream.to_string()).await;
    let url = format!("{head}@127.0.0.1:{}/{name}", proxy.port);
    let server =
        ServerProcess::start_with(&["server", "--bind", "127.0.0.1:0", "--database", &url]);
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let spec = LaunchSpec::command(vec!["true".into()]);
    let first = client.enqueue("q", &spec).await.unwrap().id;
    let ready = format!("{}/readyz", server.url());
    let readiness = || async { reqwest::get(&ready).await.unwrap().status().as_u16() };
    assert_eq!(readiness().await, 200);

    proxy.cut();
    // Callers are told to try again, and why: not an internal error.
    let refused = client.enqueue("q", &spec).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(503), "{refused}");
    assert!(
        refused.to_string().contains("cannot reach its database"),
        "{refused}"
    );
    assert_eq!(readiness().await, 503);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("the database cannot be reached"), "{log}");

    proxy.restore();
    wait_async(
        "the server to be ready again",
        Duration::from_secs(20),
        || async { readiness().await == 200 },
    )
    .await;
    let second = client.enqueue("q", &spec).await.unwrap().id;
    let items = client.list_items(&Default::default()).await.unwrap();
    let ids: Vec<_> = items.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 2, "only what was answered is stored: {ids:?}");
    assert!(ids.contains(&first) && ids.contains(&second));
}
