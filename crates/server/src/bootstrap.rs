//! First start of a local server: the admin token and the client file.
//!
//! A fresh store has no tokens, so nobody could call the API. The first start creates an
//! admin token and writes it, with the server's URL, to `<data_dir>/client.json` (mode 0600),
//! where the CLI on the same machine finds it. The secret is never logged: the log says where
//! the file is. Later starts only update the URL in that file.

use crate::auth::new_token;
use liftoff_store::{Store, StoreResult};
use liftoff_types::{now_ms, ClientFile, Scope};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Creates the admin token if the store has no token at all; returns the secret then.
pub async fn first_admin_token(store: &dyn Store) -> StoreResult<Option<String>> {
    if !store.list_tokens().await?.is_empty() {
        return Ok(None);
    }
    let (token, hash) = new_token();
    store
        .create_token(
            "admin (created at first start)",
            Scope::Admin,
            &hash,
            now_ms(),
        )
        .await?;
    Ok(Some(token))
}

/// Writes `<dir>/client.json` with `url`, keeping the token already there unless a new one
/// is given. Written to a temporary file and renamed, so a reader never sees half of it.
pub fn write_client_file(dir: &Path, url: &str, token: Option<&str>) -> std::io::Result<PathBuf> {
    let path = dir.join(ClientFile::NAME);
    let old: Option<ClientFile> = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let file = ClientFile {
        url: url.to_string(),
        token: token
            .map(str::to_string)
            .or_else(|| old.and_then(|o| o.token)),
    };
    let tmp = dir.join(format!(".{}.tmp", ClientFile::NAME));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(&tmp)?;
    out.write_all(&serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?)?;
    out.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
