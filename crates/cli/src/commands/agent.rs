//! `liftoff agent`: an agent alone, against a server; and the pieces `liftoff up` shares with
//! it (building the runner, signal handling). `liftoff supervise` is the local runner's
//! supervisor process, started by agents; `liftoff report-ends` is what the supervisor runs to
//! report ends while its agent is away.

use crate::connect::Global;
use anyhow::Context;
use clap::Args;
use liftoff_agent::{config, Agent, AgentConfig, Control};
use liftoff_client::Client;
use liftoff_runner::local::{Reporter, SupervisorCommand};
use liftoff_runner::{registry, Runners};
use liftoff_types::ResourceType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// A queue to lease from (repeat for several; round-robin).
    #[arg(long = "queue", short = 'q')]
    pub queues: Vec<String>,
    /// Concurrent runs (-1 = unlimited).
    #[arg(long, short = 'j', allow_negative_numbers = true)]
    pub max_jobs: Option<i64>,
    /// Concurrent sweep schedulers (-1 = unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub max_schedulers: Option<i64>,
    /// An agent config file (W&B's launch-config.yaml keys are accepted).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Where the agent keeps its journal and run directories.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// More status lines (-v every 20 s; -vv internal logs too).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl AgentArgs {
    /// The validated config: defaults (the state directory in the data directory), file,
    /// env, flags. Every problem at once.
    pub fn load(&self, default_state: PathBuf) -> anyhow::Result<AgentConfig> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let flags = config::Flags {
            queues: self.queues.clone(),
            max_jobs: self.max_jobs,
            max_schedulers: self.max_schedulers,
            verbosity: (self.verbose > 0).then_some(self.verbose),
            state_dir: self.state_dir.clone(),
        };
        let defaults = AgentConfig {
            state_dir: default_state,
            ..AgentConfig::default()
        };
        let (cfg, notices) = config::load(defaults, self.config.as_deref(), &env, &flags)?;
        for notice in notices {
            eprintln!("note: {notice}");
        }
        Ok(cfg)
    }
}

pub async fn run(g: &Global, args: AgentArgs) -> anyhow::Result<()> {
    let cfg = args.load(g.data_dir().join("agent"))?;
    let client = g.client()?;
    let agent = start(client, cfg).await?;
    agent.run(signals()).await;
    Ok(())
}

/// Builds a runner for each resource type its queues run (from the config's `runners:`
/// sections, or each type's defaults) and starts the agent.
pub async fn start(client: Client, cfg: AgentConfig) -> anyhow::Result<Arc<Agent>> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating {}", cfg.state_dir.display()))?;
    crate::dirlock::hold(&cfg.state_dir, "agent state directory")?;
    let mut resources: Vec<ResourceType> = Vec::new();
    for queue in &cfg.queues {
        let q = liftoff_agent::until_answered("reading the queues", client.url(), || {
            client.get_queue(queue)
        })
        .await
        .with_context(|| format!("queue {queue:?}"))?;
        if !resources.contains(&q.resource) {
            resources.push(q.resource);
        }
    }
    let context = registry::Context {
        state_dir: cfg.state_dir.clone(),
        hostname: cfg.hostname.clone(),
        supervisor: supervisor_command(&client, &cfg.state_dir)?,
        env: std::env::vars().collect(),
        slurm_poll_every: cfg.slurm_poll_interval,
        max_jobs: u32::try_from(cfg.max_jobs).ok(),
        base_image: cfg.base_image.clone(),
        registry: cfg.registry.clone(),
    };
    let runners =
        Runners::build(&resources, &cfg.runners, &context).map_err(|e| anyhow::anyhow!(e))?;
    let agent = Agent::start(client, cfg, runners, std::env::vars()).await?;
    eprintln!("{}", agent.snapshot().line());
    Ok(agent)
}

/// How the local runner starts its supervisor, and what the supervisor runs to tell a run's
/// end while no agent is connected: this binary's `report-ends`, given the server and token
/// in its environment only (never on a command line, never to a run).
fn supervisor_command(client: &Client, state_dir: &Path) -> anyhow::Result<SupervisorCommand> {
    let program = std::env::current_exe().context("finding the liftoff binary")?;
    let mut env = vec![
        ("LIFTOFF_URL".to_string(), client.url().to_string()),
        // No client file is read from there: the URL and token are given.
        (
            "LIFTOFF_DATA_DIR".to_string(),
            state_dir.to_string_lossy().into_owned(),
        ),
    ];
    if let Some(token) = client.token() {
        env.push(("LIFTOFF_TOKEN".to_string(), token.to_string()));
    }
    Ok(SupervisorCommand {
        reporter: Some(Reporter {
            program: program.clone(),
            args: vec![
                "report-ends".into(),
                "--state-dir".into(),
                state_dir.to_string_lossy().into_owned(),
            ],
            env,
        }),
        program,
        args: vec!["supervise".into()],
    })
}

/// SIGINT/SIGTERM as agent controls: the first stops cleanly, the next stops runs now.
pub fn signals() -> mpsc::Receiver<Control> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        crate::commands::server::shutdown_signal().await;
        let _ = tx.send(Control::Stop).await;
        crate::commands::server::shutdown_signal().await;
        let _ = tx.send(Control::StopNow).await;
    });
    rx
}

#[derive(Args, Debug)]
pub struct SuperviseArgs {
    #[arg(long)]
    pub socket: PathBuf,
}

/// The supervisor's own process: no runtime, no logging set-up, just its loop.
pub fn supervise(args: &SuperviseArgs) -> anyhow::Result<()> {
    liftoff_runner::local::supervisor::run(&args.socket)
        .with_context(|| format!("supervising on {}", args.socket.display()))
}

#[derive(Args, Debug)]
pub struct ReportEndsArgs {
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The runs whose ends to tell (every ended run in the journal when none is given).
    pub runs: Vec<liftoff_types::RunId>,
}

/// Reports the ends of runs that ended while their agent was away (run by the supervisor).
pub async fn report_ends(g: &Global, args: ReportEndsArgs) -> anyhow::Result<()> {
    let client = g.client()?;
    let reporting = liftoff_agent::away::report_ends(&client, &args.state_dir, &args.runs);
    let told = tokio::time::timeout(std::time::Duration::from_secs(30), reporting)
        .await
        .context("the server did not answer within 30 s")?
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "liftoff report-ends: {} end(s) reported, {} left for the agent",
        told.reported, told.left
    );
    // A non-zero exit puts a line in the supervisor's log: the agent must report the rest.
    anyhow::ensure!(told.left == 0, "{} end(s) could not be reported", told.left);
    Ok(())
}
