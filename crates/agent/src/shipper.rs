//! Ships a run's output file to the server as it grows, in chunks, from the offset the server
//! has; the journal remembers that offset so a restarted agent resumes without gaps or
//! repeats (the server also skips bytes it already has).

use liftoff_client::Client;
use liftoff_types::api::MAX_LOG_CHUNK;
use liftoff_types::RunId;
use std::path::PathBuf;
use std::time::Duration;
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
        // A run just started has written nothing yet: look first after a poll period or
        // its end, whichever comes first (a short run costs one read, not two).
        let _ = tokio::time::timeout(POLL, done.changed()).await;
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
        read_from(&self.path, offset, MAX_LOG_CHUNK).await
    }
}

/// The last `lines` lines of a file (read from its last 256 KiB), for failure reports.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = open_no_link(path) else {
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

/// Ships a run's metrics file (`LIFTOFF_METRICS_FILE`: one JSON object per line) as it
/// grows. Only whole lines go (the last line once the run has ended); each batch carries its
/// first line's number, so a restart that ships from the top again adds nothing twice. A
/// line that is not a JSON object is skipped (and said once in the agent's log).
pub struct MetricsShipper {
    pub client: Client,
    pub run: RunId,
    pub path: PathBuf,
}

/// Most bytes read per batch.
const METRICS_CHUNK: usize = 1024 * 1024;

impl MetricsShipper {
    pub async fn run(&self, mut done: watch::Receiver<bool>) {
        let (mut offset, mut line) = (0u64, 0u64);
        let mut warned = false;
        let _ = tokio::time::timeout(POLL, done.changed()).await;
        loop {
            let finished = *done.borrow();
            let buf = read_from(&self.path, offset, METRICS_CHUNK).await;
            // Whole lines only while the run may still be writing.
            let take = match buf.iter().rposition(|b| *b == b'\n') {
                Some(end) => end + 1,
                None if finished => buf.len(),
                None => 0,
            };
            if take > 0 {
                let text = String::from_utf8_lossy(&buf[..take]);
                let mut batch = Vec::new();
                let mut first = line;
                for raw in text.lines() {
                    match serde_json::from_str::<serde_json::Value>(raw) {
                        Ok(serde_json::Value::Object(record)) => batch.push(record),
                        _ if raw.trim().is_empty() => {}
                        _ => {
                            if !warned {
                                tracing::warn!(run = %self.run, line, "a metrics line is not a JSON object; skipped");
                                warned = true;
                            }
                            // Keep line numbers true: ship what came before on its own.
                            if !self.send(first, std::mem::take(&mut batch)).await {
                                return;
                            }
                            first = line + 1;
                        }
                    }
                    line += 1;
                }
                if !self.send(first, batch).await {
                    return;
                }
                offset += take as u64;
                continue;
            }
            if finished {
                return;
            }
            let _ = tokio::time::timeout(POLL, done.changed()).await;
        }
    }

    /// Returns false when the server no longer takes metrics for the run.
    async fn send(
        &self,
        first_line: u64,
        records: Vec<serde_json::Map<String, serde_json::Value>>,
    ) -> bool {
        if records.is_empty() {
            return true;
        }
        let req = liftoff_types::sweep::MetricsAppend {
            first_line: Some(first_line),
            records,
        };
        match crate::report::retry("shipping metrics", || {
            self.client.append_metrics(&self.run, &req)
        })
        .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(run = %self.run, error = %e, "metrics no longer accepted");
                false
            }
        }
    }
}

/// Opens a run's file for reading, refusing a symbolic link: a run (a container's root above
/// all) may replace its own files, and a link would make the agent read and ship a file of
/// its own choosing.
fn open_no_link(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Reads up to `max` bytes of `path` from `offset` (nothing if the file is not there yet).
///
/// The file is in the agent's own state directory, on a local disk: opening it and reading a
/// little from the page cache takes microseconds, less than a trip through the blocking pool
/// and back (which every short run paid several times over). Only a big read goes there.
async fn read_from(path: &std::path::Path, offset: u64, max: usize) -> Vec<u8> {
    use std::io::{Read, Seek};
    const INLINE: u64 = 64 * 1024;
    // Looked at before it is opened: most looks find nothing new (a short run's one look at
    // its empty output), and then one `stat` is all they cost.
    let len = std::fs::symlink_metadata(path).map_or(0, |m| m.len());
    if len <= offset {
        return Vec::new();
    }
    let Ok(file) = open_no_link(path) else {
        return Vec::new();
    };
    let want = (len - offset).min(max as u64);
    let read = move || {
        let mut file = file;
        let mut buf = Vec::with_capacity(want as usize);
        if file.seek(std::io::SeekFrom::Start(offset)).is_ok() {
            let _ = (&mut file).take(max as u64).read_to_end(&mut buf);
        }
        buf
    };
    if want <= INLINE {
        read()
    } else {
        tokio::task::spawn_blocking(read).await.unwrap_or_default()
    }
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
