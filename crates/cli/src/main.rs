//! `liftoff`: the one binary. Subcommands run the server, manage queues and tokens, launch
//! runs, list items and runs, and benchmark the queue.

mod bench;
mod commands;
mod connect;
mod dirlock;
mod output;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "liftoff",
    version,
    about = "A self-hosted launch system for ML runs: queues, agents, sweeps."
)]
struct Cli {
    #[command(flatten)]
    global: connect::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server and an agent in one process, with a `default` queue: zero set-up.
    #[command(
        after_help = "Examples:\n  liftoff up\n  liftoff up --bind 0.0.0.0:8765 --max-jobs 4\n  liftoff up --database postgres://liftoff@db/liftoff"
    )]
    Up(commands::up::UpArgs),
    /// Run the server (HTTP API over an embedded SQLite file).
    #[command(
        after_help = "Examples:\n  liftoff server --bind 0.0.0.0:8765\n  liftoff server --database postgres://liftoff@db/liftoff --agent-timeout 60\n  liftoff server --retention 30d --artifact-limit 4G"
    )]
    Server(commands::server::ServerArgs),
    /// Run an agent: lease runs from queues and run them here.
    #[command(
        after_help = "Examples:\n  liftoff agent --queue gpu --max-jobs 2\n  liftoff agent -q gpu -q cpu -c agent.yaml\n  LIFTOFF_URL=http://head:8765 LIFTOFF_TOKEN=... liftoff agent -q default"
    )]
    Agent(commands::agent::AgentArgs),
    /// Create, list, show and delete queues.
    #[command(subcommand)]
    Queue(commands::queue::QueueCommand),
    /// Put a run on a queue; prints the item id.
    #[command(
        after_help = "Examples:\n  liftoff launch -- python3 train.py --epochs 3\n  liftoff launch -q gpu --config lr=0.01 --wait -- python3 train.py\n  liftoff launch --code . -- python3 train.py\n  liftoff launch --job mnist:v2 --config-file overrides.yaml\n  liftoff logs -f $(liftoff launch -- python3 train.py)"
    )]
    Launch(commands::launch::LaunchArgs),
    /// List items (what is on the queues and what became of it).
    Items(commands::list::ItemsArgs),
    /// List runs.
    Runs(commands::list::RunsArgs),
    /// Print a run's output (-f: follow it until the run ends).
    #[command(
        after_help = "Examples:\n  liftoff logs 12\n  liftoff logs -f 5jwu8tjc\n  liftoff logs -f $(liftoff launch -- python3 train.py)"
    )]
    Logs {
        /// A run id, or an item id (its latest run; -f waits for it to start).
        id: String,
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Everything known about an item and its latest run: state history, command or job,
    /// config, resource args, exit code, duration, failure and its files, metrics.
    #[command(after_help = "Examples:\n  liftoff show 12\n  liftoff show 5jwu8tjc -o json")]
    Show {
        /// An item id, or a run id (its item).
        id: String,
    },
    /// Enqueue an item's spec again on its queue, with config changes; prints the new id.
    #[command(
        after_help = "Examples:\n  liftoff rerun 12\n  liftoff rerun 12 --config lr=0.01 --config model.width=128"
    )]
    Rerun {
        /// An item id, or a run id (its item).
        id: String,
        /// A run config entry to change: KEY=VALUE (dots nest: model.width=128).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// Stop a run (its agent hears at once; SIGTERM, grace, SIGKILL).
    #[command(after_help = "Examples:\n  liftoff stop 12\n  liftoff stop 5jwu8tjc")]
    Stop {
        /// A run id, or an item id (its latest run).
        id: String,
    },
    /// List agents: status, heartbeat age, running counts against limits, in-flight items.
    #[command(after_help = "Examples:\n  liftoff agents\n  liftoff agents -o json")]
    Agents,
    /// Cancel an item (a running one is stopped by its agent).
    #[command(after_help = "Examples:\n  liftoff cancel 12\n  liftoff cancel 12 --force")]
    Cancel {
        /// An item id, or a run id (its item).
        id: String,
        /// End a running item now, without waiting for its agent (for an agent that is gone
        /// for good); its run is recorded `lost`, and its process may still be running.
        #[arg(long)]
        force: bool,
    },
    /// Jobs: versioned code, git or image recipes to launch with overrides.
    #[command(subcommand)]
    Job(commands::job::JobCommand),
    /// Sweeps: W&B sweep files run by schedulers on agents.
    #[command(subcommand)]
    Sweep(commands::sweep::SweepCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Print a link that opens the dashboard in a browser, signed in as this CLI's token
    /// (valid 2 minutes; the session it opens lasts 12 hours).
    #[command(after_help = "Examples:\n  liftoff dashboard\n  xdg-open \"$(liftoff dashboard)\"")]
    Dashboard,
    /// Measure liftoff's own speed; prints JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Remove ended items with their runs, logs and metrics, long-stopped agents and
    /// unreferenced code archives (admin). Live items are never touched.
    #[command(
        after_help = "Examples:\n  liftoff prune --older-than 30d --dry-run\n  liftoff prune --older-than 12h"
    )]
    Prune {
        /// What ended longer ago than this goes (`30d`, `12h`, `30m`).
        #[arg(long, default_value = "30d", value_parser = commands::server::parse_age)]
        older_than: u64,
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  liftoff completions bash > ~/.local/share/bash-completion/completions/liftoff\n  liftoff completions zsh > ~/.zfunc/_liftoff"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The local runner's supervisor (started by agents; not for people).
    #[command(hide = true)]
    Supervise(commands::agent::SuperviseArgs),
    /// Reports runs' ends while their agent is away (run by the supervisor; not for people).
    #[command(hide = true)]
    ReportEnds(commands::agent::ReportEndsArgs),
}

fn main() -> ExitCode {
    // `liftoff stamp FILE`: write the time and exit, before anything else runs. The agent
    // benchmark's runs use it to record when they started.
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.len() == 3 && args[1] == "stamp" {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return match std::fs::write(&args[2], nanos.to_string()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "liftoff", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Command::Supervise(args) = &cli.command {
        return match commands::agent::supervise(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    let verbose = matches!(cli.command, Command::Server(_) | Command::Up(_));
    init_logging(verbose);
    let runtime = match runtime_for(&cli.command).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// The server (and the queue bench, which measures it) gets a worker thread per core: it
/// answers many agents and clients at once. Everything else, the agent and `up` above all,
/// runs on one thread: an agent's work is short steps that wait on something (the server,
/// the supervisor, a file), with whatever blocks or computes at length on blocking threads.
/// On two workers those steps went back and forth between the threads (`perf sched` on
/// `bench agent`: the two workers waking each other several times per short run).
fn runtime_for(command: &Command) -> tokio::runtime::Builder {
    match command {
        Command::Server(_) | Command::Bench(bench::BenchCommand::Queue(_)) => {
            tokio::runtime::Builder::new_multi_thread()
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Launch(args) => return commands::launch::run(g, args).await.map(ExitCode::from),
        Command::Up(args) => commands::up::run(g, args).await,
        Command::Agent(args) => commands::agent::run(g, args).await,
        Command::ReportEnds(args) => commands::agent::report_ends(g, args).await,
        Command::Logs { id, follow } => commands::follow::logs(g, &id, follow).await,
        Command::Show { id } => commands::show::show(g, &id).await,
        Command::Rerun { id, config } => commands::show::rerun(g, &id, &config).await,
        Command::Stop { id } => commands::follow::stop(g, &id).await,
        Command::Agents => commands::follow::agents(g).await,
        Command::Dashboard => commands::token::dashboard(g).await,
        Command::Supervise(_) | Command::Completions { .. } => Ok(()),
        Command::Prune {
            older_than,
            dry_run,
        } => commands::prune::prune(g, older_than, dry_run).await,
        Command::Server(args) => commands::server::run(g, args).await,
        Command::Queue(cmd) => commands::queue::run(g, cmd).await,
        Command::Items(args) => commands::list::items(g, args).await,
        Command::Runs(args) => commands::list::runs(g, args).await,
        Command::Cancel { id, force } => commands::list::cancel(g, &id, force).await,
        Command::Token(cmd) => commands::token::run(g, cmd).await,
        Command::Sweep(cmd) => commands::sweep::run(g, cmd).await,
        Command::Job(cmd) => commands::job::run(g, cmd).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

/// A reader that went away (`liftoff runs | head -1`) ends the command quietly and with
/// success, as ripgrep does: `println!` would panic (exit 101) and a write error would be
/// reported as one.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// One line on stderr: the error and its causes, then a non-zero exit.
fn fail(e: &anyhow::Error) -> ExitCode {
    if broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
    eprintln!("error: {}", chain.join(": "));
    ExitCode::FAILURE
}

/// Logging to stderr: `warn` and up (`info` for the long-running `server` and `up`), or what
/// `LIFTOFF_LOG` says (a level, or `target=level` pairs such as `liftoff_agent=debug,warn`).
///
/// A plain target filter, not `EnvFilter`: that one compiles its directives with the `regex`
/// crate, whose code and tables were a few hundred KiB of an idle agent's resident memory.
fn init_logging(verbose: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let default = if verbose {
        LevelFilter::INFO
    } else {
        LevelFilter::WARN
    };
    let asked = std::env::var("LIFTOFF_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match asked.as_deref().map(str::parse::<Targets>) {
        Some(Ok(targets)) => targets,
        Some(Err(e)) => {
            eprintln!("liftoff: LIFTOFF_LOG not understood ({e}); logging at {default}");
            Targets::new().with_default(default)
        }
        None => Targets::new().with_default(default),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init();
}

/// The data directory when none is given: `$XDG_DATA_HOME/liftoff`, else
/// `~/.local/share/liftoff`, else `./.liftoff`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("liftoff");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/liftoff"),
        None => PathBuf::from(".liftoff"),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::{CommandFactory, Parser};

    /// Every command people use shows examples under `-h`, and every example parses: a flag
    /// renamed without its example updated fails here.
    #[test]
    fn every_command_has_examples_that_parse() {
        fn walk(cmd: &clap::Command, path: Vec<String>, seen: &mut usize) {
            let subs: Vec<_> = cmd
                .get_subcommands()
                .filter(|c| !c.is_hide_set() && c.get_name() != "help")
                .collect();
            if subs.is_empty() {
                let help = cmd.get_after_help().map(|h| h.to_string());
                let help = help.unwrap_or_else(|| panic!("`{}` has no examples", path.join(" ")));
                let mut n = 0;
                for line in help
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("liftoff "))
                {
                    let line = line.replace("$(liftoff launch -- python3 train.py)", "12");
                    let line = line.split(" > ").next().unwrap();
                    let args = shlex::split(line).unwrap();
                    let argv = std::iter::once("liftoff".to_string()).chain(args);
                    if let Err(e) = Cli::try_parse_from(argv) {
                        panic!("`liftoff {line}` does not parse: {e}");
                    }
                    n += 1;
                }
                assert!(n > 0, "`{}` has no example lines", path.join(" "));
                *seen += 1;
            }
            for sub in subs {
                let mut p = path.clone();
                p.push(sub.get_name().to_string());
                walk(sub, p, seen);
            }
        }
        let mut seen = 0;
        walk(&Cli::command(), vec![], &mut seen);
        assert!(seen > 30, "{seen}");
    }
}
