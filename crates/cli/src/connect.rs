//! Where the CLI finds its server and token: flags, then `LIFTOFF_URL`/`LIFTOFF_TOKEN`, then
//! the `client.json` a local server wrote into the data directory.

use anyhow::{bail, Context};
use clap::Args;
use liftoff_client::Client;
use liftoff_types::ClientFile;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct Global {
    /// The server's URL.
    #[arg(long, global = true, env = "LIFTOFF_URL")]
    pub url: Option<String>,
    /// An API token (never printed).
    #[arg(long, global = true, env = "LIFTOFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The data directory (database, client file).
    #[arg(long, global = true, env = "LIFTOFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output format of listings.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

impl Global {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::default_data_dir)
    }

    /// A client for the server these options point at.
    pub fn client(&self) -> anyhow::Result<Client> {
        let file_path = self.data_dir().join(ClientFile::NAME);
        let file: Option<ClientFile> = match std::fs::read(&file_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", file_path.display()))?,
            ),
            Err(_) => None,
        };
        let url = match (&self.url, &file) {
            (Some(url), _) => url.clone(),
            (None, Some(f)) => f.url.clone(),
            (None, None) => bail!(
                "no server given: pass --url or set LIFTOFF_URL (no {} found; start one with `liftoff server` or `liftoff up`)",
                file_path.display()
            ),
        };
        let token = self.token.clone().or_else(|| file.and_then(|f| f.token));
        Ok(Client::new(&url, token)?)
    }
}
