//! Watching runs: `liftoff launch --wait`, `liftoff logs [-f]`, `liftoff stop`, and
//! `liftoff agents`.

use crate::connect::Global;
use crate::output::{self, age};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use liftoff_client::Client;
use liftoff_types::{now_ms, Item, ItemId, ItemState, RunId, RunState};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What a person sees while an item waits: a spinner on a terminal, else one plain line per
/// change of state.
struct Progress {
    bar: Option<ProgressBar>,
    last: String,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            last: String::new(),
        }
    }

    fn show(&mut self, message: String) {
        if message == self.last {
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(message.clone()),
            None => eprintln!("{message}"),
        }
        self.last = message;
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn describe(item: &Item) -> String {
    if let Some(why) = &item.pending_reason {
        return format!("item {} is pending: {why}", item.id);
    }
    match (item.state, item.position) {
        (ItemState::Pending, Some(0)) => {
            format!("item {} is next on queue {}", item.id, item.queue)
        }
        (ItemState::Pending, Some(p)) => format!(
            "item {} is waiting on queue {} ({p} ahead)",
            item.id, item.queue
        ),
        (state, _) => format!("item {} is {state}", item.id),
    }
}

/// Follows an item from the queue to its run's end, streaming the run's output; returns the
/// exit code to exit with (the run's own when it has one).
pub async fn wait(client: &Client, id: ItemId) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut pause = Duration::from_millis(5);
    let run_id = loop {
        let item = client.get_item(id).await?;
        if let Some(run) = item.run_id.clone() {
            break run;
        }
        if item.state.is_terminal() {
            progress.done();
            let why = item
                .failure
                .map(|f| format!(" ({} failed: {})", f.phase, f.message))
                .unwrap_or_default();
            eprintln!("item {id} ended {}{why}", item.state);
            return Ok(1);
        }
        progress.show(describe(&item));
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    };
    progress.done();
    stream(client, &run_id, 0, true).await?;
    let run = client.get_run(&run_id).await?;
    let item = client.get_item(id).await?;
    let code = exit_code(run.state, run.exit_code);
    let why = match (&item.failure, &run.message) {
        (Some(f), _) => format!(": {}", f.message),
        (None, Some(m)) => format!(": {m}"),
        _ => String::new(),
    };
    eprintln!(
        "run {} {}{why} after {:.1}s",
        run.id,
        run.state,
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}

fn exit_code(state: RunState, code: Option<i32>) -> u8 {
    match (state, code) {
        (RunState::Finished, _) => 0,
        (_, Some(c)) if (1..=255).contains(&c) => c as u8,
        _ => 1,
    }
}

/// Copies a run's output to stdout; with `follow`, until the run ends.
async fn stream(client: &Client, run: &RunId, offset: u64, follow: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if !follow {
        out.write_all(&client.read_log(run, offset).await?)?;
        return Ok(out.flush()?);
    }
    let mut follower = client.follow_log(run, offset).await?;
    while let Some(chunk) = follower.next().await? {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

pub async fn logs(g: &Global, id: &str, follow: bool) -> anyhow::Result<()> {
    let client = g.client()?;
    let run = crate::commands::ids::run_of(&client, id, follow).await?;
    stream(&client, &run, 0, follow).await
}

pub async fn stop(g: &Global, id: &str) -> anyhow::Result<()> {
    let client = g.client()?;
    let run = crate::commands::ids::run_of(&client, id, false).await?;
    let run = client.stop_run(&run).await.context("stopping the run")?;
    eprintln!("asked run {} to stop; its agent stops it now", run.id);
    Ok(())
}

pub async fn agents(g: &Global) -> anyhow::Result<()> {
    let agents = g.client()?.list_agents().await?;
    let now = now_ms();
    let limit = |n: i64| {
        if n < 0 {
            "∞".to_string()
        } else {
            n.to_string()
        }
    };
    let rows = agents
        .iter()
        .map(|a| {
            let ids: Vec<String> = a.in_flight.iter().map(ToString::to_string).collect();
            vec![
                a.name.clone(),
                a.id.to_string(),
                a.status.to_string(),
                age(a.heartbeat_at_ms, now),
                format!("{}/{}", a.running_jobs, limit(a.max_jobs)),
                format!("{}/{}", a.running_schedulers, limit(a.max_schedulers)),
                if ids.is_empty() {
                    "-".into()
                } else {
                    ids.join(",")
                },
                a.queues.join(","),
            ]
        })
        .collect();
    let headers = [
        "NAME",
        "ID",
        "STATUS",
        "HEARTBEAT",
        "JOBS",
        "SCHEDULERS",
        "IN-FLIGHT",
        "QUEUES",
    ];
    output::print(g.output, &agents, &headers, rows)
}
