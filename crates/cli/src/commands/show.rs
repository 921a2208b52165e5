//! `liftoff show ID` (everything known about an item and its latest run) and `liftoff rerun
//! ID` (the same spec enqueued again, with config changes).

use crate::commands::ids;
use crate::commands::list::{took, what};
use crate::connect::{Global, Output};
use liftoff_client::Client;
use liftoff_types::sweep::MetricSummary;
use liftoff_types::{Attachment, Item, ItemKind, Run};
use serde::Serialize;
use std::collections::BTreeMap;

/// Lines of an attached file shown by `show` (all of it with `-o json`).
const FILE_TAIL: usize = 20;

/// What `show` prints with `-o json`.
#[derive(Serialize)]
struct Shown {
    item: Item,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<Run>,
    files: Vec<Attachment>,
    metrics: BTreeMap<String, MetricSummary>,
}

pub async fn show(g: &Global, id: &str) -> anyhow::Result<()> {
    let client = g.client()?;
    let item = client.get_item(ids::item_of(&client, id).await?).await?;
    let run = match &item.run_id {
        Some(run) => Some(client.get_run(run).await?),
        None => None,
    };
    let mut files = Vec::new();
    for name in item.failure.iter().flat_map(|f| &f.files) {
        let content = client.item_file(item.id, name).await?;
        files.push(Attachment {
            name: name.clone(),
            content,
        });
    }
    let metrics = match &run {
        Some(run) => client.run_metrics(&run.id).await?.summary,
        None => BTreeMap::new(),
    };
    let shown = Shown {
        item,
        run,
        files,
        metrics,
    };
    match g.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Output::Table => print!("{}", describe(&shown)),
    }
    Ok(())
}

fn describe(s: &Shown) -> String {
    let i = &s.item;
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<14}{value}\n"));
    let state = match (&s.run, i.cancel_requested && !i.state.is_terminal()) {
        (_, true) => format!("{} (cancelling)", i.state),
        (Some(run), _) => format!("{} (run {})", i.state, run.state),
        (None, _) => i.state.to_string(),
    };
    line("item", format!("{} on queue {}", i.id, i.queue));
    line("state", state);
    if let Some(p) = i.position {
        line("position", format!("{p} ahead of it"));
    }
    if let Some(why) = &i.pending_reason {
        line("waiting", why.clone());
    }
    line("priority", i.priority.to_string());
    line("attempts", attempts(i));
    if let Some(name) = &i.spec.name {
        line("name", name.clone());
    }
    match (&i.spec.job, &i.spec.overrides.entry_point) {
        (Some(job), _) => {
            line("job", job.clone());
            if !i.spec.overrides.args.is_empty() {
                line("args", shell_words(&i.spec.overrides.args));
            }
        }
        (None, Some(argv)) => line("command", shell_words(argv)),
        (None, None) if i.kind == ItemKind::Scheduler => line("runs", what(i)),
        (None, None) => {}
    }
    if let Some(image) = i.spec.docker.as_ref().and_then(|d| d.docker_image.clone()) {
        line("image", image);
    }
    if let Some(sweep) = &i.spec.sweep_id {
        let index = i
            .sweep_index
            .map(|n| format!(" (run {n})"))
            .unwrap_or_default();
        line("sweep", format!("{sweep}{index}"));
    }
    line("config", compact(&i.spec.overrides.run_config));
    if i.resource_args.as_object().is_some_and(|m| !m.is_empty()) {
        line("resource args", compact(&i.resource_args));
    }
    if let Some(run) = &s.run {
        line("run", format!("{} on agent {}", run.id, run.agent_id));
        if let Some(code) = run.exit_code {
            line("exit code", code.to_string());
        }
        if let (Some(a), Some(b)) = (run.started_at_ms, run.ended_at_ms) {
            line("duration", took(b - a));
        }
        if let Some(message) = &run.message {
            line("message", message.clone());
        }
    }
    if let Some(f) = &i.failure {
        line("failed", format!("in phase {}: {}", f.phase, f.message));
    }
    out.push_str("history\n");
    for (at, event) in history(s) {
        out.push_str(&format!("  {}  {event}\n", utc(at)));
    }
    for (key, m) in &s.metrics {
        out.push_str(&format!(
            "metric {key:<7}last {} · min {} · max {} · {} values (step {})\n",
            m.last, m.min, m.max, m.count, m.step
        ));
    }
    for file in &s.files {
        let lines: Vec<&str> = file.content.lines().collect();
        let from = lines.len().saturating_sub(FILE_TAIL);
        out.push_str(&format!(
            "file {} (last {} of {} lines; all with -o json)\n",
            file.name,
            lines.len() - from,
            lines.len()
        ));
        for l in &lines[from..] {
            out.push_str(&format!("  | {l}\n"));
        }
    }
    out
}

/// What happened when, from the times the item and its run keep.
fn history(s: &Shown) -> Vec<(i64, String)> {
    let i = &s.item;
    let mut events = vec![(i.created_at_ms, "enqueued".to_string())];
    if let Some(run) = &s.run {
        events.push((
            run.created_at_ms,
            format!("taken by agent {} as run {}", run.agent_id, run.id),
        ));
        if let Some(at) = run.started_at_ms {
            events.push((at, "started".into()));
        }
        if let Some(at) = run.ended_at_ms {
            let code = run
                .exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default();
            events.push((at, format!("run ended {}{code}", run.state)));
        }
    }
    for w in &i.warnings {
        events.push((w.at_ms, format!("warning: {}", w.message)));
    }
    if i.state.is_terminal() {
        events.push((i.updated_at_ms, format!("item ended {}", i.state)));
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

fn compact(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn shell_words(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// Milliseconds since the epoch as `2026-12-02 10:04:05.123Z`.
fn utc(ms: i64) -> String {
    let (year, month, day, rest) = liftoff_types::utc_parts(ms);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// `rerun ID [--config k=v ...]`: the item's spec on its queue again; prints the new id.
pub async fn rerun(g: &Global, id: &str, config: &[String]) -> anyhow::Result<()> {
    let client = g.client()?;
    let item = client.get_item(ids::item_of(&client, id).await?).await?;
    let new = enqueue_again(&client, &item, config).await?;
    match g.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&new)?),
        Output::Table => println!("{}", new.id),
    }
    Ok(())
}

async fn enqueue_again(client: &Client, item: &Item, config: &[String]) -> anyhow::Result<Item> {
    if item.kind == ItemKind::Scheduler {
        anyhow::bail!(
            "item {} is the scheduler of a sweep; rerun its runs, or create the sweep again",
            item.id
        );
    }
    let mut spec = item.spec.clone();
    for entry in config {
        let (key, value) = super::key_value(entry)?;
        super::launch::set_dotted(&mut spec.overrides.run_config, &key, value)?;
    }
    // A rerun is a run of its own: not one of its sweep's, and with a run id of its own.
    if let Some(sweep) = spec.sweep_id.take() {
        eprintln!(
            "item {} came from sweep {sweep}; the rerun is outside it",
            item.id
        );
    }
    spec.run_id = None;
    let new = client.enqueue(&item.queue, &spec).await?;
    eprintln!(
        "item {} enqueued again on queue {} as item {}",
        item.id, item.queue, new.id
    );
    Ok(new)
}

/// An item's attempts with its retries by cause: `2 (exit-code 1, lost 1)`.
pub fn attempts(i: &liftoff_types::Item) -> String {
    if i.retries.is_empty() {
        return i.attempts.to_string();
    }
    let causes: Vec<String> = i
        .retries
        .iter()
        .map(|(cause, n)| format!("{cause} {n}"))
        .collect();
    format!("{} ({})", i.attempts, causes.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(super::utc(1_796_205_845_123), "2026-12-02 10:04:05.123Z");
    }
}
