//! `liftoff items`, `liftoff runs` and `liftoff cancel`.

use crate::connect::Global;
use crate::output::{self, age};
use clap::Args;
use liftoff_types::api::{ItemFilter, RunFilter};
use liftoff_types::{now_ms, AgentId, Item, ItemState, RunState};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  liftoff items\n  liftoff items --queue gpu --state failed --limit 20\n  liftoff items --job mnist:v2 --watch"
)]
pub struct ItemsArgs {
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    #[arg(long)]
    pub state: Option<ItemState>,
    /// Only the runs of this sweep.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Only the items of this job (`name` for any version, `name:v3` for one).
    #[arg(long)]
    pub job: Option<String>,
    /// Only items older than this id (the next page of the newest-first listing).
    #[arg(long, conflicts_with = "after")]
    pub before: Option<i64>,
    /// Only items newer than this id, oldest first (paging forward).
    #[arg(long)]
    pub after: Option<i64>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Redraw the listing whenever it changes (Ctrl-C to leave).
    #[arg(long, short = 'w')]
    pub watch: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  liftoff runs --state running --watch\n  liftoff runs --agent 3 -o json\n  liftoff runs --sweep 2 --state failed\n  liftoff runs --job mnist:v2"
)]
pub struct RunsArgs {
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    #[arg(long)]
    pub state: Option<RunState>,
    #[arg(long)]
    pub agent: Option<AgentId>,
    /// Only the runs of this sweep.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Only the runs of this job (`name` for any version, `name:v3` for one).
    #[arg(long)]
    pub job: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Redraw the listing whenever it changes (Ctrl-C to leave).
    #[arg(long, short = 'w')]
    pub watch: bool,
}

const ITEM_HEADERS: [&str; 10] = [
    "ID", "QUEUE", "STATE", "PRIORITY", "POS", "ATTEMPTS", "RUN", "AGE", "TOOK", "WHAT",
];

pub async fn items(g: &Global, args: ItemsArgs) -> anyhow::Result<()> {
    let filter = ItemFilter {
        queue: args.queue,
        state: args.state,
        after: args.after,
        before: args.before,
        limit: Some(args.limit),
        sweep: args.sweep,
        job: args.job,
    };
    let client = g.client()?;
    watch(
        g,
        args.watch,
        || async {
            let items = client.list_items(&filter).await?;
            let now = now_ms();
            let rows = items.iter().map(|i| item_row(i, now)).collect();
            Ok((serde_json::to_value(&items)?, rows))
        },
        &ITEM_HEADERS,
    )
    .await
}

/// Prints a listing once, or with `--watch` redraws it on a terminal each time it changes
/// (checked every second; ages alone do not count as a change).
async fn watch<F, Fut>(g: &Global, on: bool, fetch: F, headers: &[&str]) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(serde_json::Value, Vec<Vec<String>>)>>,
{
    let (value, rows) = fetch().await?;
    if !on {
        return output::print(g.output, &value, headers, rows);
    }
    let mut last = None;
    let mut shown = (value, rows);
    loop {
        if last.as_ref() != Some(&shown.0) {
            // Clear the screen and home the cursor, as `watch(1)` does.
            print!("\x1b[2J\x1b[H");
            output::print(g.output, &shown.0, headers, shown.1)?;
            last = Some(shown.0);
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        shown = fetch().await?;
    }
}

/// A short duration: `850ms`, `42s`, `3m12s`, `2h05m`.
pub fn took(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

fn span(started: Option<i64>, ended: Option<i64>, now: i64) -> String {
    match (started, ended) {
        (Some(s), Some(e)) => took(e - s),
        (Some(s), None) => format!("{}…", took(now - s)),
        _ => "-".into(),
    }
}

/// What an item runs, for people: its name, job or command.
pub fn what(i: &Item) -> String {
    let what = match (&i.spec.job, &i.spec.overrides.entry_point) {
        (Some(job), _) => job.clone(),
        (None, Some(argv)) => argv.join(" "),
        (None, None) if i.kind == liftoff_types::ItemKind::Scheduler => format!(
            "scheduler of sweep {}",
            i.spec.sweep_id.as_deref().unwrap_or("?")
        ),
        (None, None) => String::new(),
    };
    match &i.spec.name {
        Some(name) if !what.is_empty() => format!("{name}: {what}"),
        Some(name) => name.clone(),
        None => what,
    }
}

fn item_row(i: &Item, now: i64) -> Vec<String> {
    let what = match (&i.failure, &i.pending_reason) {
        (Some(f), _) => format!("{}  [{} failed: {}]", what(i), f.phase, f.message),
        (None, Some(why)) => format!("{}  [{why}]", what(i)),
        (None, None) => what(i),
    };
    let state = if i.cancel_requested && !i.state.is_terminal() {
        format!("{} (cancelling)", i.state)
    } else {
        i.state.to_string()
    };
    vec![
        i.id.to_string(),
        i.queue.clone(),
        state,
        i.priority.to_string(),
        i.position.map_or("-".into(), |p| p.to_string()),
        super::show::attempts(i),
        i.run_id.as_ref().map_or("-".into(), ToString::to_string),
        age(i.created_at_ms, now),
        span(i.started_at_ms, i.ended_at_ms, now),
        what,
    ]
}

pub async fn runs(g: &Global, args: RunsArgs) -> anyhow::Result<()> {
    let filter = RunFilter {
        queue: args.queue,
        state: args.state,
        agent: args.agent,
        sweep: args.sweep,
        job: args.job,
        limit: Some(args.limit),
    };
    let headers = [
        "RUN", "ITEM", "QUEUE", "STATE", "EXIT", "AGENT", "AGE", "TOOK", "MESSAGE",
    ];
    let client = g.client()?;
    watch(
        g,
        args.watch,
        || async {
            let runs = client.list_runs(&filter).await?;
            let now = now_ms();
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.item_id.to_string(),
                        r.queue.clone(),
                        r.state.to_string(),
                        r.exit_code.map_or("-".into(), |c| c.to_string()),
                        r.agent_id.to_string(),
                        age(r.created_at_ms, now),
                        span(r.started_at_ms, r.ended_at_ms, now),
                        r.message.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            Ok((serde_json::to_value(&runs)?, rows))
        },
        &headers,
    )
    .await
}

pub async fn cancel(g: &Global, id: &str, force: bool) -> anyhow::Result<()> {
    let client = g.client()?;
    let id = crate::commands::ids::item_of(&client, id).await?;
    let item = if force {
        client.force_cancel_item(id).await?
    } else {
        client.cancel_item(id).await?
    };
    let rows = vec![item_row(&item, now_ms())];
    output::print(g.output, &item, &ITEM_HEADERS, rows)
}
