//! Ships a run's output file to the server as it grows, in chunks, from the offset the server
//! has; the journal remembers that offset so a restarted agent resumes without gaps or
//! repeats (the server also skips bytes it already has).

use liftoff_client::Client;
use liftoff_types::api::MAX_LOG_CHUNK;
use liftoff_types::RunId;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

/// How often a growing file is looked at while the run is alive.
const POLL: Duration = Duration::from_millis(100);

pub struct Shipper {
    pub client: Client,
    pub run: RunId,
    pub fence: i64,
    pub path: PathBuf,
}

impl Shipper {
    /// Ships from `offset` until `done` turns true and the file is drained; returns the
    /// offset the server holds. Stops early if the server refuses (the run moved on).
    pub async fn run(&self, mut offset: u64, mut done: watch::Receiver<bool>) -> u64 {
        loop {
            let finished = *done.borrow();
            let chunk = self.read(offset).await;
            if !chunk.is_empty() {
                let sent = crate::report::retry("shipping output", || {
                    self.client
                        .append_log(&self.run, self.fence, offset, chunk.clone())
                })
                .await;
                match sent {
                    Ok(length) => offset = length.max(offset),
                    Err(e) => {
                        tracing::warn!(run = %self.run, error = %e, "output no longer accepted");
                        return offset;
                    }
                }
                continue;
            }
            if finished {
                return offset;
            }
            let _ = tokio::time::timeout(POLL, done.changed()).await;
        }
    }

    async fn read(&self, offset: u64) -> Vec<u8> {
        let Ok(mut file) = tokio::fs::File::open(&self.path).await else {
            return Vec::new();
        };
        if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let _ = (&mut file)
            .take(MAX_LOG_CHUNK as u64)
            .read_to_end(&mut buf)
            .await;
        buf
    }
}

/// The last `lines` lines of a file (read from its last 256 KiB), for failure reports.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let text: String = (0..500).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = super::tail(&path, 200);
        assert_eq!(tail.lines().count(), 200);
        assert!(tail.starts_with("line 300") && tail.ends_with("line 499"));
        assert_eq!(super::tail(&dir.path().join("none"), 5), "");
    }
}
