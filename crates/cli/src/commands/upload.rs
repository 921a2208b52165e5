//! Shipping a code directory: checked against the server's archive limit before packing,
//! packed into a temporary file (never whole in memory), and uploaded streamed, only when
//! the server does not have that content yet. A progress bar shows both on a terminal.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use liftoff_client::Client;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Packs and uploads `dir`; returns the archive's digest (`sha256:HEX`).
pub async fn ship_dir(client: &Client, dir: &Path) -> anyhow::Result<String> {
    let limit = client
        .limits()
        .await
        .ok()
        .and_then(|l| l["artifact_limit"].as_u64());
    let measured = {
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || liftoff_artifacts::pack::measure(&d))
            .await?
            .with_context(|| format!("reading {}", dir.display()))?
    };
    // An archive is about as large as what it holds when that does not compress (weights,
    // data), so a directory over the limit is refused before minutes of packing.
    if let Some(limit) = limit.filter(|l| measured.bytes > *l) {
        anyhow::bail!(too_large(dir, &measured, limit));
    }
    let bar = bar(measured.bytes, "packing");
    let staged = tempfile::NamedTempFile::new().context("making a temporary file")?;
    let written = {
        let (d, file) = (dir.to_path_buf(), staged.reopen()?);
        let counted = Counted {
            inner: std::io::BufWriter::with_capacity(256 * 1024, file),
            bar: bar.clone(),
        };
        tokio::task::spawn_blocking(move || liftoff_artifacts::pack::pack_dir_to(&d, counted))
            .await?
            .with_context(|| format!("packing {}", dir.display()))?
            .1
    };
    bar.finish_and_clear();
    if let Some(limit) = limit.filter(|l| written.bytes > *l) {
        anyhow::bail!(too_large(dir, &measured, limit));
    }
    let digest = format!("sha256:{}", written.sha256);
    if client.has_artifact(&digest).await.unwrap_or(false) {
        return Ok(digest);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let bar = bar_upload(written.bytes, sent.clone());
    let uploaded = client
        .upload_artifact_file(&digest, staged.path(), sent)
        .await;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    uploaded.with_context(|| format!("uploading {}", dir.display()))?;
    Ok(digest)
}

fn too_large(dir: &Path, m: &liftoff_artifacts::pack::Measured, limit: u64) -> String {
    let largest: Vec<String> = m
        .largest
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{} ({})", p.display(), mb(*n)))
        .collect();
    format!(
        "{} holds {} in {} files, over this server's limit of {} for a code archive \
         (largest: {}); leave big files out with .gitignore, ship the code as a git job \
         (liftoff job create git), or raise the server's --artifact-limit",
        dir.display(),
        mb(m.bytes),
        m.files,
        mb(limit),
        largest.join(", ")
    )
}

fn mb(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.2} GB", bytes as f64 / 1e9),
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A bar on a terminal's stderr, hidden otherwise.
fn bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_style(style());
    bar.set_message(what.to_string());
    bar
}

/// The upload's bar, fed from the bytes the body stream has sent.
fn bar_upload(
    total: u64,
    sent: Arc<AtomicU64>,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = bar(total, "uploading");
    let shown = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            shown.set_position(sent.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some((bar, ticker))
}

/// A writer that moves a bar by what the packer reads: the archive's bytes, which are about
/// the files' bytes for data that does not compress.
struct Counted<W> {
    inner: W,
    bar: ProgressBar,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
