//! `liftoff up`: a server and an agent in one process on the embedded SQLite file, with a
//! `default` local-process queue. The zero-set-up way to run liftoff on one machine.

use super::agent::AgentArgs;
use super::server::{start_local, DatabaseArgs, DEFAULT_BIND};
use crate::connect::Global;
use anyhow::Context;
use clap::Args;
use liftoff_client::Client;
use liftoff_server::ServerConfig;
use liftoff_types::{now_ms, Scope};
use std::net::SocketAddr;
use std::path::Path;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Address to listen on. A non-loopback address requires auth (always on here).
    #[arg(long, default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub limits: super::server::LimitArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub async fn run(g: &Global, args: UpArgs) -> anyhow::Result<()> {
    let data_dir = g.data_dir();
    let mut config = ServerConfig::local(args.bind);
    config.artifact_limit = args.limits.artifact_limit as usize;
    config.retention = args.limits.retention_duration();
    let server = start_local(&data_dir, &args.database, config, true).await?;
    let store = server.state.store.clone();
    let token = agent_token(&data_dir, store.as_ref()).await?;
    let cfg = args.agent.load(data_dir.join("agent"))?;
    // The agent reaches the server in this process: the same API, without a socket.
    let client = Client::new(&server.url(), Some(token))?.in_process(in_process(&server));
    eprintln!(
        "liftoff is up at {} (the dashboard: `liftoff dashboard` prints a login link) \
         · data in {} · launch with: liftoff launch --wait -- CMD",
        server.url(),
        data_dir.display()
    );
    let agent = super::agent::start(client, cfg).await?;
    agent.run(super::agent::signals()).await;
    server.stop().await;
    Ok(())
}

/// Answers the client's requests with `server`'s own router, in this process (same routes,
/// limits and auth as its socket). Bodies come whole: not for following a log.
pub(crate) fn in_process(server: &liftoff_server::Server) -> liftoff_client::InProcess {
    let router = server.router();
    std::sync::Arc::new(move |request: http::Request<bytes::Bytes>| {
        use tower::ServiceExt;
        let router = router.clone();
        Box::pin(async move {
            let request = request.map(axum::body::Body::from);
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(body) => http::Response::from_parts(parts, body),
                Err(e) => {
                    let mut failed = http::Response::new(bytes::Bytes::from(e.to_string()));
                    *failed.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    failed
                }
            }
        })
    })
}

/// The in-process agent's own token (scope `agent`), kept in the data directory (0600).
async fn agent_token(data_dir: &Path, store: &dyn liftoff_store::Store) -> anyhow::Result<String> {
    let path = data_dir.join("agent.token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        let hash = liftoff_server::auth::hash_token(&token);
        if store.token_by_hash(&hash).await?.is_some() {
            return Ok(token);
        }
    }
    let (token, hash) = liftoff_server::auth::new_token();
    store
        .create_token("liftoff up agent", Scope::Agent, &hash, now_ms())
        .await?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}
