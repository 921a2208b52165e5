//! `liftoff bench wal`: the SQLite WAL under sustained writes with readers, the way it once
//! grew without bound (two clients enqueueing for 30 s left a 1.41 GB WAL beside an 18.6 MB
//! database). A real `liftoff server`; two clients enqueue flat out and one lists items all
//! along; the WAL's size is sampled every 20 ms. Then the server is stopped with SIGTERM and
//! what it left is measured.

use clap::Args;
use liftoff_types::LaunchSpec;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct WalBench {
    /// Seconds of sustained writes.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Clients enqueueing at once.
    #[arg(long, default_value_t = 2)]
    pub writers: u32,
}

pub async fn run(b: WalBench) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("liftoff-bench").tempdir()?;
    let data = tmp.path().join("data");
    let exe = std::env::current_exe()?;
    let mut server = super::spawn_server(&exe, &data, &[])?;
    let result = measure(&b, &data).await;
    // A clean stop, as an operator's: the WAL it leaves is part of the figure.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = server.wait();
    let mut figures = result?;
    let size = |name: &str| std::fs::metadata(data.join(name)).map_or(0, |m| m.len());
    figures.insert("wal_after_stop_bytes".into(), json!(size("liftoff.db-wal")));
    figures.insert("database_bytes".into(), json!(size("liftoff.db")));
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}

async fn measure(
    b: &WalBench,
    data: &std::path::Path,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    super::server_up(data).await?;
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("client.json"))?)?;
    let (url, token) = (file["url"].as_str(), file["token"].as_str());
    let client = liftoff_client::Client::new(url.unwrap_or_default(), token.map(str::to_string))?;
    client
        .create_queue(&liftoff_types::NewQueue::named("default"))
        .await?;
    let until = Instant::now() + Duration::from_secs(b.seconds);
    let mut writers = Vec::new();
    for w in 0..b.writers {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let argv = vec![
                    "python3".into(),
                    "train.py".into(),
                    format!("--seed={w}-{n}"),
                ];
                client
                    .enqueue("default", &LaunchSpec::command(argv))
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let reader = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                client.list_items(&Default::default()).await?;
                n += 1;
            }
            anyhow::Ok(n)
        })
    };
    let wal = data.join("liftoff.db-wal");
    let started = Instant::now();
    let mut largest = 0u64;
    while Instant::now() < until {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut enqueued = 0;
    for w in writers {
        enqueued += w.await??;
    }
    let listings = reader.await??;
    let secs = started.elapsed().as_secs_f64();
    let mut out = serde_json::Map::new();
    out.insert("seconds".into(), json!(b.seconds));
    out.insert("writers".into(), json!(b.writers));
    out.insert("enqueued".into(), json!(enqueued));
    out.insert(
        "enqueues_per_s".into(),
        json!((enqueued as f64 / secs).round()),
    );
    out.insert("listings".into(), json!(listings));
    out.insert("wal_peak_bytes".into(), json!(largest));
    out.insert(
        "wal_limit_bytes".into(),
        json!(liftoff_store::sqlite::DEFAULT_WAL_LIMIT),
    );
    Ok(out)
}
