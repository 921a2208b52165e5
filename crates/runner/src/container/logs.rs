//! A container's output into the run's output file, from the engine's log stream (both
//! streams, in the order the engine stored them).
//!
//! The engine keeps a container's whole log, and reads it back in the same order every
//! time, so a follower that starts again (after a lost connection, or in a restarted agent)
//! reads it from the start and skips as many bytes as the file already holds: no byte is
//! written twice and none is lost, whatever moment the last follower stopped at.

use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Follows `container`'s log into `output` until the container has ended and its log is
/// read to the end.
pub async fn follow(docker: Docker, container: String, output: PathBuf) {
    // Looks at an engine that does not answer, before giving up (a minute).
    let mut unanswered = 0;
    loop {
        match follow_once(&docker, &container, &output).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(%container, error = %e, "following the container's log"),
        }
        // The stream ends when the container does, or when the connection breaks: only a
        // container that still runs is followed again.
        match super::still_running(&docker, &container).await {
            Some(false) => return,
            Some(true) => unanswered = 0,
            None if unanswered >= 300 => return,
            None => unanswered += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn follow_once(docker: &Docker, container: &str, output: &PathBuf) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)?;
    let mut skip = file.metadata()?.len();
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut stream = docker.logs(container, Some(options));
    while let Some(frame) = stream.next().await {
        let bytes = frame.map_err(std::io::Error::other)?.into_bytes();
        let already = skip.min(bytes.len() as u64) as usize;
        skip -= already as u64;
        if already < bytes.len() {
            file.write_all(&bytes[already..])?;
        }
    }
    Ok(())
}
