//! `liftoff items`, `liftoff runs` and `liftoff cancel`.

use crate::connect::Global;
use crate::output::{self, age};
use clap::Args;
use liftoff_types::api::{ItemFilter, RunFilter};
use liftoff_types::{now_ms, AgentId, Item, ItemState, RunState};

#[derive(Args, Debug)]
pub struct ItemsArgs {
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    #[arg(long)]
    pub state: Option<ItemState>,
    /// Only items with an id above this (paging).
    #[arg(long)]
    pub after: Option<i64>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Only the runs of this sweep.
    #[arg(long)]
    pub sweep: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    #[arg(long)]
    pub state: Option<RunState>,
    #[arg(long)]
    pub agent: Option<AgentId>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub async fn items(g: &Global, args: ItemsArgs) -> anyhow::Result<()> {
    let filter = ItemFilter {
        queue: args.queue,
        state: args.state,
        after: args.after,
        limit: Some(args.limit),
        sweep: args.sweep,
    };
    let items = g.client()?.list_items(&filter).await?;
    let now = now_ms();
    let rows = items.iter().map(|i| item_row(i, now)).collect();
    let headers = [
        "ID", "QUEUE", "STATE", "PRIORITY", "POS", "ATTEMPTS", "RUN", "AGE", "WHAT",
    ];
    output::print(g.output, &items, &headers, rows)
}

fn item_row(i: &Item, now: i64) -> Vec<String> {
    let what = match (&i.spec.job, &i.spec.overrides.entry_point) {
        (Some(job), _) => job.clone(),
        (None, Some(argv)) => argv.join(" "),
        (None, None) if i.kind == liftoff_types::ItemKind::Scheduler => format!(
            "scheduler of sweep {}",
            i.spec.sweep_id.as_deref().unwrap_or("?")
        ),
        (None, None) => String::new(),
    };
    let what = match &i.failure {
        Some(f) => format!("{what}  [{} failed: {}]", f.phase, f.message),
        None => what,
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
        i.attempts.to_string(),
        i.run_id.as_ref().map_or("-".into(), ToString::to_string),
        age(i.created_at_ms, now),
        what,
    ]
}

pub async fn runs(g: &Global, args: RunsArgs) -> anyhow::Result<()> {
    let filter = RunFilter {
        queue: args.queue,
        state: args.state,
        agent: args.agent,
        limit: Some(args.limit),
    };
    let runs = g.client()?.list_runs(&filter).await?;
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
                r.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let headers = [
        "RUN", "ITEM", "QUEUE", "STATE", "EXIT", "AGENT", "AGE", "MESSAGE",
    ];
    output::print(g.output, &runs, &headers, rows)
}

pub async fn cancel(g: &Global, id: &str) -> anyhow::Result<()> {
    let client = g.client()?;
    let id = crate::commands::ids::item_of(&client, id).await?;
    let item = client.cancel_item(id).await?;
    let rows = vec![item_row(&item, now_ms())];
    let headers = [
        "ID", "QUEUE", "STATE", "PRIORITY", "POS", "ATTEMPTS", "RUN", "AGE", "WHAT",
    ];
    output::print(g.output, &item, &headers, rows)
}
