//! `liftoff sweep create|list|show|pause|resume|cancel|finish`.

use crate::connect::{Global, Output};
use crate::output;
use anyhow::Context;
use clap::{Args, Subcommand};
use liftoff_sweep::SweepConfig;
use liftoff_types::sweep::{CreateSweep, SweepRun};
use liftoff_types::SweepState;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Create a sweep from a W&B sweep file (YAML or JSON); its runs go to --queue.
    #[command(
        after_help = "Examples:\n  liftoff sweep create sweep.yaml\n  liftoff sweep create sweep.yaml -q gpu --concurrency 4\n  liftoff sweep create sweep.yaml --job mnist:v2"
    )]
    Create(CreateArgs),
    /// List sweeps.
    #[command(after_help = "Examples:\n  liftoff sweep list")]
    List,
    /// A sweep's state, its best run, and its runs with their parameters and metric.
    #[command(after_help = "Examples:\n  liftoff sweep show 3\n  liftoff sweep show 3 -o json")]
    Show { id: String },
    /// Start no new runs until resumed (live runs go on).
    #[command(after_help = "Examples:\n  liftoff sweep pause 3")]
    Pause { id: String },
    /// Resume a paused sweep.
    #[command(after_help = "Examples:\n  liftoff sweep resume 3")]
    Resume { id: String },
    /// End the sweep and stop its live runs.
    #[command(after_help = "Examples:\n  liftoff sweep cancel 3")]
    Cancel { id: String },
    /// End the sweep: no new runs; live ones finish.
    #[command(after_help = "Examples:\n  liftoff sweep finish 3")]
    Finish { id: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The sweep file (W&B's sweep YAML).
    pub file: PathBuf,
    /// The queue its scheduler and runs go to.
    #[arg(long, short = 'q', default_value = "default")]
    pub queue: String,
    /// Most runs live at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Sweep over a job (NAME, NAME:vN): its runs run the job with the parameters as their
    /// config (and as --name=value arguments). Overrides the file's `job`.
    #[arg(long)]
    pub job: Option<String>,
}

pub async fn run(g: &Global, cmd: SweepCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    let (id, state) = match cmd {
        SweepCommand::Create(args) => {
            let mut config = read_config(&args.file)?;
            if let Some(job) = args.job {
                config["job"] = serde_json::Value::String(job);
            }
            let req = CreateSweep {
                queue: args.queue,
                config,
                concurrency: args.concurrency,
            };
            let sweep = client.create_sweep(&req).await?;
            // The id alone, as `launch` prints its item's: `sid=$(liftoff sweep create ...)`.
            match g.output {
                crate::connect::Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&sweep)?)
                }
                crate::connect::Output::Table => println!("{}", sweep.id),
            }
            return Ok(());
        }
        SweepCommand::List => {
            let sweeps = client.list_sweeps().await?;
            let rows = sweeps
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.name.clone().unwrap_or_default(),
                        s.queue.clone(),
                        s.state.to_string(),
                        s.config["method"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            return output::print(
                g.output,
                &sweeps,
                &["SWEEP", "NAME", "QUEUE", "STATE", "METHOD"],
                rows,
            );
        }
        SweepCommand::Show { id } => return show(g, &client, &id).await,
        SweepCommand::Pause { id } => (id, SweepState::Paused),
        SweepCommand::Resume { id } => (id, SweepState::Running),
        SweepCommand::Cancel { id } => (id, SweepState::Cancelled),
        SweepCommand::Finish { id } => (id, SweepState::Finished),
    };
    let sweep = client.set_sweep_state(&id, state, None).await?;
    output::print(
        g.output,
        &sweep,
        &["SWEEP", "STATE"],
        vec![vec![sweep.id.clone(), sweep.state.to_string()]],
    )
}

/// Reads the sweep file and checks it here, so every problem is printed (by key path) before
/// anything is sent. A relative `program` is made absolute against the file's directory, and
/// the sweep's runs start in the program's directory.
fn read_config(file: &Path) -> anyhow::Result<serde_json::Value> {
    let mut config: serde_json::Value = super::read_document(file)?;
    if let Err(problems) = SweepConfig::parse(&config) {
        anyhow::bail!(
            "{} is not a valid sweep config:\n  {}",
            file.display(),
            problems.join("\n  ")
        );
    }
    if let Some(program) = config.get("program").and_then(|p| p.as_str()) {
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
        let path = dir.map_or_else(|| PathBuf::from(program), |d| d.join(program));
        if Path::new(program).is_relative() && path.exists() {
            let absolute = std::fs::canonicalize(&path)
                .with_context(|| format!("resolving program {}", path.display()))?;
            config["program"] = serde_json::Value::String(absolute.to_string_lossy().into());
        }
    }
    Ok(config)
}

async fn show(g: &Global, client: &liftoff_client::Client, id: &str) -> anyhow::Result<()> {
    let view = client.get_sweep(id).await?;
    if g.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let s = &view.sweep;
    let metric = s.config["metric"]["name"].as_str().unwrap_or("metric");
    println!(
        "sweep {} ({}) on queue {}: {}{}",
        s.id,
        s.config["method"].as_str().unwrap_or("?"),
        s.queue,
        s.state,
        s.message
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    let cap = s.config["run_cap"]
        .as_u64()
        .map_or("no run_cap".to_string(), |c| format!("run_cap {c}"));
    println!(
        "runs: {} of {cap}; concurrency {}",
        view.runs.len(),
        s.concurrency
    );
    match &view.best {
        Some(best) => println!(
            "best: run {} {metric}={} {}",
            best.run_id.as_ref().map_or("-", |r| r.as_str()),
            best.metric.as_ref().map_or(f64::NAN, |m| m.last),
            best.params
        ),
        None => println!("best: none yet"),
    }
    println!();
    let rows: Vec<Vec<String>> = view.runs.iter().map(row).collect();
    print!(
        "{}",
        output::table(&["#", "RUN", "STATE", metric, "PARAMS", "NOTE"], &rows)
    );
    Ok(())
}

fn row(r: &SweepRun) -> Vec<String> {
    let state = r
        .run_state
        .map_or_else(|| r.item_state.to_string(), |s| s.to_string());
    vec![
        r.index.to_string(),
        r.run_id.as_ref().map_or("-".into(), |id| id.to_string()),
        state,
        r.metric
            .as_ref()
            .map_or("-".into(), |m| format!("{:.6}", m.last)),
        r.params.to_string(),
        r.message.clone().unwrap_or_default(),
    ]
}
