//! `liftoff bench dashboard`: the dashboard's pages on a big history. A SQLite data directory
//! gets N ended runs (default 100,000), 1,000 pending items and 50 agents serving the queue;
//! a real `liftoff server` serves it, a session is opened through `/login`, and each page is
//! fetched as a browser would (loopback HTTP, the whole response read). Printed: p50/p95 per
//! page and its weight; the time from a change (an item cancelled through the API) to its
//! page's event stream carrying it; the weight of the stylesheet and script.

use anyhow::Context;
use liftoff_store::{NewItem, SqliteStore, Store};
use liftoff_types::{now_ms, Heartbeat, LaunchSpec, NewAgent, Priority};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DashboardBench {
    /// Ended runs in the database.
    #[arg(long, default_value_t = 100_000)]
    pub runs: usize,
    /// Pending items on the queue the agents serve.
    #[arg(long, default_value_t = 1000)]
    pub pending: usize,
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Fetches timed per page.
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
    /// Changes timed from the API to the page's stream.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
}

pub async fn run(b: DashboardBench) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("liftoff-bench").tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let fill_started = Instant::now();
    let pending_ids = {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.join("liftoff.db"))?);
        super::listing::fill(&store, b.runs).await?;
        fill_live(&store, &b).await?
    };
    let fill_s = fill_started.elapsed().as_secs_f64();
    let exe = std::env::current_exe()?;
    let mut server = super::spawn_server(&exe, &data, &["--agent-timeout", "3600"])?;
    let figures = measure(&data, &b, &pending_ids).await;
    let _ = server.kill();
    let _ = server.wait();
    let mut figures = figures?;
    figures.insert("ended_runs".into(), json!(b.runs));
    figures.insert("pending_items".into(), json!(b.pending));
    figures.insert("agents".into(), json!(b.agents));
    figures.insert("fill_s".into(), json!((fill_s * 10.0).round() / 10.0));
    figures.insert("target_p95_ms".into(), json!(50));
    figures.insert("target_change_to_page_ms".into(), json!(1000));
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}

/// Pending items on `bench`, and agents serving it (busy, so the items stay pending).
async fn fill_live(store: &Arc<dyn Store>, b: &DashboardBench) -> anyhow::Result<Vec<i64>> {
    for i in 0..b.agents {
        let agent = store
            .register_agent(
                NewAgent {
                    hostname: format!("node-{i}"),
                    queues: vec!["bench".into()],
                    max_jobs: 4,
                    max_schedulers: 1,
                    version: "bench".into(),
                },
                now_ms(),
            )
            .await?;
        let beat = Heartbeat {
            running_jobs: 4,
            ..serde_json::from_value(json!({"status": "running"}))?
        };
        store.heartbeat(agent.id, beat, now_ms()).await?;
    }
    let mut ids = Vec::with_capacity(b.pending);
    for i in 0..b.pending {
        let priority = [Priority::High, Priority::Medium, Priority::Low][i % 3];
        let item = NewItem {
            queue: "bench".into(),
            spec: LaunchSpec::command(vec![
                "python3".into(),
                "train.py".into(),
                format!("--i={i}"),
            ]),
            priority,
            resource_args: json!({}),
            kind: liftoff_types::ItemKind::Run,
        };
        ids.push(store.enqueue(item, now_ms()).await?.id.0);
    }
    Ok(ids)
}

async fn measure(
    data: &std::path::Path,
    b: &DashboardBench,
    pending: &[i64],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    super::server_up(data).await?;
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("client.json"))?)?;
    let url = file["url"].as_str().context("url")?.to_string();
    let token = file["token"].as_str().context("token")?.to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = http
        .post(format!("{url}/login"))
        .form(&[("token", token.as_str()), ("next", "/")])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie from /login")?
        .to_string();
    let old_item = (b.runs / 2).max(1);
    let pages = [
        ("overview", "/".to_string()),
        ("queue", "/queues/bench".to_string()),
        ("item", format!("/items/{old_item}")),
        ("agents", "/agents".to_string()),
        ("sweeps", "/sweeps".to_string()),
        ("jobs", "/jobs".to_string()),
    ];
    let get = |path: String| {
        let (http, cookie, url) = (http.clone(), cookie.clone(), url.clone());
        async move {
            let started = Instant::now();
            let r = http
                .get(format!("{url}{path}"))
                .header("cookie", cookie)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
            let body = r.bytes().await?;
            anyhow::Ok((started.elapsed().as_secs_f64() * 1e3, body.len()))
        }
    };
    let mut figures = serde_json::Map::new();
    for (name, path) in &pages {
        get(path.clone()).await?; // the page cache
        let mut ms = Vec::with_capacity(b.samples);
        let mut bytes = 0;
        for _ in 0..b.samples {
            let (t, n) = get(path.clone()).await?;
            ms.push(t);
            bytes = n;
        }
        ms.sort_by(f64::total_cmp);
        figures.insert(
            format!("page_{name}"),
            json!({"p50_ms": super::percentile(&ms, 0.5), "p95_ms": super::percentile(&ms, 0.95), "html_bytes": bytes}),
        );
    }
    let (_, css) = get("/assets/app.css".into()).await?;
    let (_, js) = get("/assets/app.js".into()).await?;
    figures.insert("assets_bytes".into(), json!({"css": css, "js": js}));

    // A change made through the API, timed until the page's stream carries it.
    let mut ms = Vec::with_capacity(b.changes);
    for id in pending.iter().rev().take(b.changes) {
        let mut stream = http
            .get(format!("{url}/events?page=/items/{id}"))
            .header("cookie", &cookie)
            .send()
            .await?;
        let mut buf = Vec::new();
        // The first event is the page as it is.
        next_event(&mut stream, &mut buf).await?;
        let started = Instant::now();
        let r = http
            .post(format!("{url}/api/v1/items/{id}/cancel"))
            .bearer_auth(&token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "cancel {id}: {}", r.status());
        loop {
            let event =
                tokio::time::timeout(Duration::from_secs(10), next_event(&mut stream, &mut buf))
                    .await
                    .context("the page never showed the cancel")??;
            if event.contains("s-cancelled") {
                break;
            }
        }
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    figures.insert(
        "change_to_page".into(),
        json!({"p50_ms": super::percentile(&ms, 0.5), "p95_ms": super::percentile(&ms, 0.95), "max_ms": super::percentile(&ms, 1.0)}),
    );
    Ok(figures)
}

/// The next whole server-sent event of `stream`, as text (`buf` keeps what came after it).
async fn next_event(stream: &mut reqwest::Response, buf: &mut Vec<u8>) -> anyhow::Result<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            if event.starts_with(':') {
                continue; // a keep-alive
            }
            return Ok(event);
        }
        let chunk = stream.chunk().await?.context("the stream ended")?;
        buf.extend_from_slice(&chunk);
    }
}
