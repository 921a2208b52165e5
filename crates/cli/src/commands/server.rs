//! `liftoff server`: the HTTP API over the embedded SQLite file in the data directory, or
//! over a PostgreSQL database shared with other server replicas (`--database postgres://...`).

use crate::connect::Global;
use anyhow::Context;
use clap::Args;
use liftoff_server::{bootstrap, Server, ServerConfig};
use liftoff_store::{PostgresStore, SqliteStore, Store};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Where a server listens unless told otherwise: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:8765";

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on. A non-loopback address requires auth (the default).
    #[arg(long, default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Serve without tokens. Refused unless --bind is a loopback address.
    #[arg(long)]
    pub no_auth: bool,
    /// Seconds without a heartbeat after which an agent is lost and its work handed back.
    /// Agents stop their runs when they have not reached the server for this long, so it is
    /// also the longest server outage runs live through (less an agent's heartbeat wait).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub agent_timeout: u64,
    /// Seconds a lost agent's started items wait before another agent may take them: the
    /// time its machine has to stop them (agents force a stop within half of it).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub lost_grace: u64,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// The largest code archive one upload may carry: bytes, or with K, M, G (1024-based).
    /// Clients learn it and check a directory against it before packing.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub artifact_limit: u64,
    /// Prune, every hour, ended items with their runs, logs and metrics, stopped agents and
    /// unreferenced code archives older than this (`90d`, `12h`, `30m`; `0`: keep all).
    #[arg(long, default_value = "90d", value_parser = parse_age)]
    pub retention: u64,
}

/// `90d`, `12h`, `30m`, `45s` or plain seconds, as seconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not an age (like 90d, 12h, 30m or 45s)"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| *s <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{text:?} is not an age of at most 100 years (like 90d)"))
}

impl LimitArgs {
    /// The retention, `None` for keep-all (0).
    pub fn retention_duration(&self) -> Option<std::time::Duration> {
        (self.retention > 0).then(|| std::time::Duration::from_secs(self.retention))
    }
}

/// `512`, `64K`, `256M`, `2G` (powers of 1024) as bytes; at most 1 TiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let scale: u64 = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size (bytes, or a number with K, M or G)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with K, M or G)"))?;
    match n.checked_mul(scale) {
        Some(b) if (1024..=1 << 40).contains(&b) => Ok(b),
        _ => Err(format!("{text:?} must be from 1K to 1024G")),
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct DatabaseArgs {
    /// The server's database: a `postgres://user:password@host:port/db` URL shared by
    /// several servers, or, by default, the SQLite file `liftoff.db` in the data directory.
    #[arg(long, env = "LIFTOFF_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

pub async fn run(g: &Global, args: ServerArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::local(args.bind);
    config.auth = !args.no_auth;
    config.agent_timeout = std::time::Duration::from_secs(args.agent_timeout);
    config.lost_grace = std::time::Duration::from_secs(args.lost_grace);
    config.artifact_limit = args.limits.artifact_limit as usize;
    config.retention = args.limits.retention_duration();
    let server = start_local(&g.data_dir(), &args.database, config, false).await?;
    shutdown_signal().await;
    tracing::info!("stopping");
    server.stop().await;
    Ok(())
}

/// Opens the data directory's database, makes the first admin token if there is none,
/// starts the server and writes the client file for the CLI on this machine.
/// Opens the store, starts the server and writes the client file. With `default_queue`
/// (`liftoff up`), a `default` queue is made first if the store has none: before the client
/// file appears, so nobody who finds the server finds it without its queue.
pub async fn start_local(
    data_dir: &Path,
    database: &DatabaseArgs,
    config: ServerConfig,
    default_queue: bool,
) -> anyhow::Result<Server> {
    // Refuse before anything is created on disk.
    config.check()?;
    let mut config = config;
    if config.artifacts.is_none() {
        config.artifacts = Some(data_dir.join("artifacts"));
    }
    create_private_dir(data_dir)?;
    crate::dirlock::hold(data_dir, "data directory")?;
    let (store, db) = open_store(data_dir, database).await?;
    let new_token = bootstrap::first_admin_token(store.as_ref()).await?;
    if default_queue {
        if let Err(liftoff_store::StoreError::NotFound { .. }) =
            store.get_queue("default", false).await
        {
            store
                .create_queue(
                    liftoff_types::NewQueue::named("default"),
                    liftoff_types::now_ms(),
                )
                .await?;
        }
    }
    let server = liftoff_server::start(config, store).await?;
    let mut addr = server.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let path =
        bootstrap::write_client_file(data_dir, &format!("http://{addr}"), new_token.as_deref())
            .with_context(|| format!("writing the client file in {}", data_dir.display()))?;
    if new_token.is_some() {
        tracing::info!(file = %path.display(), "created the admin token; it is in this file (mode 0600)");
    }
    tracing::info!(database = %db, client_file = %path.display(), "ready");
    Ok(server)
}

/// Opens the store `database` names; returns it with a description that is safe to log.
async fn open_store(
    data_dir: &Path,
    database: &DatabaseArgs,
) -> anyhow::Result<(Arc<dyn Store>, String)> {
    match database.database.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let shown = redact(url);
            let store = PostgresStore::connect(url)
                .await
                .with_context(|| format!("connecting to the database {shown}"))?;
            Ok((Arc::new(store), shown))
        }
        Some(other) => {
            let path = other.strip_prefix("sqlite:").unwrap_or(other);
            if path.contains("://") {
                anyhow::bail!(
                    "--database: {:?} is neither a postgres:// URL nor a SQLite file path",
                    redact(other)
                );
            }
            let path = Path::new(path);
            let store =
                SqliteStore::open(path).with_context(|| format!("opening {}", path.display()))?;
            Ok((Arc::new(store), path.display().to_string()))
        }
        None => {
            let db = data_dir.join("liftoff.db");
            let store =
                SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?;
            Ok((Arc::new(store), db.display().to_string()))
        }
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn database_passwords_are_never_shown() {
        assert_eq!(
            redact("postgres://lift:s3cret@db:5432/liftoff"),
            "postgres://lift:***@db:5432/liftoff"
        );
        assert_eq!(
            redact("postgres://lift@db/liftoff"),
            "postgres://lift@db/liftoff"
        );
        assert_eq!(redact("/var/lib/liftoff.db"), "/var/lib/liftoff.db");
    }
}
