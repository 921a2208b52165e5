//! `liftoff queue create|list|show|delete`.

use crate::connect::Global;
use crate::output;
use anyhow::Context;
use clap::{Args, Subcommand};
use liftoff_types::{NewQueue, ResourceType, TemplateVariable};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Create a queue.
    #[command(
        after_help = "Examples:\n  liftoff queue create gpu\n  liftoff queue create licensed --max-concurrency 2 --requeue-lost\n  liftoff queue create flaky --retry exit-code=3:1,137 --retry backoff=30 --retry max=4\n  liftoff queue create cluster --resource slurm --config '{\"partition\":\"gpu\",\"gres\":\"gpu:{{gpus}}\"}' --variable 'gpus={\"type\":\"integer\",\"minimum\":1,\"maximum\":8,\"default\":1}'\n  liftoff queue create containers --resource container --config @queue.yaml"
    )]
    Create(CreateArgs),
    /// List queues.
    #[command(after_help = "Examples:\n  liftoff queue list\n  liftoff queue list -o json")]
    List,
    /// Show a queue and how many items it holds in each state.
    #[command(after_help = "Examples:\n  liftoff queue show gpu")]
    Show { name: String },
    /// Delete a queue (refused while it has live items, unless --force).
    #[command(
        after_help = "Examples:\n  liftoff queue delete old\n  liftoff queue delete old --force"
    )]
    Delete {
        name: String,
        /// Cancel its live items first.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// local-process, container, slurm, kubernetes or ray.
    #[arg(long, default_value = "local-process")]
    pub resource: ResourceType,
    /// The config template (default resource args) as JSON, or @FILE (JSON or YAML).
    #[arg(long)]
    pub config: Option<String>,
    /// A template variable: NAME=SCHEMA, e.g. 'gpus={"type":"integer","minimum":0,"maximum":8,"default":1}'.
    #[arg(long = "variable", value_name = "NAME=SCHEMA")]
    pub variables: Vec<String>,
    /// Run items in enqueue order whatever their priority.
    #[arg(long)]
    pub no_prioritization: bool,
    /// Lease expiries an item survives before it fails.
    #[arg(long, default_value_t = liftoff_types::queue::default_max_attempts())]
    pub max_attempts: u32,
    /// Put runs whose agent was lost back on the queue.
    #[arg(long)]
    pub requeue_lost: bool,
    /// At most N of the queue's runs at once, across all agents (W&B's max_concurrency).
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Retries by cause, one flag each: lost=N, preempted=N (default 5), start-timeout=N,
    /// build=N, exit-code=N[:CODE,...], max=N (all causes), backoff=SECONDS (doubles).
    #[arg(long = "retry", value_name = "CAUSE=N")]
    pub retry: Vec<String>,
}

pub async fn run(g: &Global, cmd: QueueCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    match cmd {
        QueueCommand::Create(args) => {
            let queue = client.create_queue(&new_queue(args)?).await?;
            output::print(g.output, &queue, &["QUEUE"], vec![vec![queue.name.clone()]])
        }
        QueueCommand::List => {
            let queues = client.list_queues().await?;
            let rows = queues
                .iter()
                .map(|q| {
                    let vars: Vec<&str> = q.template_variables.keys().map(String::as_str).collect();
                    vec![
                        q.name.clone(),
                        q.resource.to_string(),
                        q.prioritization.to_string(),
                        vars.join(","),
                    ]
                })
                .collect();
            output::print(
                g.output,
                &queues,
                &["NAME", "RESOURCE", "PRIORITIZATION", "VARIABLES"],
                rows,
            )
        }
        QueueCommand::Show { name } => {
            let q = client.get_queue(&name).await?;
            let d = q.depth.clone().unwrap_or_default();
            let rows = vec![
                vec!["name".into(), q.name.clone()],
                vec!["resource".into(), q.resource.to_string()],
                vec!["prioritization".into(), q.prioritization.to_string()],
                vec!["max attempts".into(), q.max_attempts.to_string()],
                vec!["requeue lost".into(), q.requeue_lost.to_string()],
                vec![
                    "max concurrency".into(),
                    q.max_concurrency
                        .map_or("none".to_string(), |n| format!("{n} ({} live)", d.live_runs)),
                ],
                vec![
                    "retries".into(),
                    super::retry::describe(&liftoff_types::RetryPolicy::effective(
                        q.retry.as_ref(),
                        q.requeue_lost,
                        q.max_attempts,
                    )),
                ],
                vec!["config".into(), q.config.to_string()],
                vec!["variables".into(), serde_json::to_string(&q.template_variables)?],
                vec![
                    "items".into(),
                    format!(
                        "pending {} · leased {} · claimed {} · finished {} · failed {} · stopped {} · cancelled {}",
                        d.pending, d.leased, d.claimed, d.finished, d.failed, d.stopped, d.cancelled
                    ),
                ],
            ];
            output::print(g.output, &q, &["FIELD", "VALUE"], rows)
        }
        QueueCommand::Delete { name, force } => {
            client.delete_queue(&name, force).await?;
            eprintln!("deleted queue {name}");
            Ok(())
        }
    }
}

fn new_queue(args: CreateArgs) -> anyhow::Result<NewQueue> {
    let mut queue = NewQueue::named(&args.name);
    queue.resource = args.resource;
    queue.prioritization = !args.no_prioritization;
    queue.max_attempts = args.max_attempts;
    queue.requeue_lost = args.requeue_lost;
    queue.max_concurrency = args.max_concurrency;
    queue.retry = super::retry::parse(&args.retry)?;
    if let Some(config) = args.config {
        queue.config = match config.strip_prefix('@') {
            Some(path) => super::read_document(&PathBuf::from(path))?,
            None => {
                serde_norway::from_str(&config).context("--config is not valid JSON or YAML")?
            }
        };
    }
    for var in args.variables {
        let (name, schema) = var
            .split_once('=')
            .with_context(|| format!("--variable {var:?} must be NAME=SCHEMA"))?;
        let schema: TemplateVariable = serde_json::from_str(schema)
            .with_context(|| format!("--variable {name}: the schema is not valid"))?;
        queue.template_variables.insert(name.to_string(), schema);
    }
    Ok(queue)
}
