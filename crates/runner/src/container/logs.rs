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
    let mut stream = docker.logs(container, Some(options(true)));
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut ended_at: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(frame) => {
                    let bytes = frame.map_err(std::io::Error::other)?.into_bytes();
                    write_new(&mut file, &mut skip, &bytes)?;
                }
                None => return Ok(()),
            },
            _ = check.tick() => match ended_at {
                None => {
                    if super::still_running(docker, container).await == Some(false) {
                        ended_at = Some(std::time::Instant::now());
                    }
                }
                // Podman may keep a followed log open after its container has ended (seen
                // in CI: the run never ended). Past a grace for the last frames, what is
                // left is read once, without following, and the follower is done.
                Some(at) if at.elapsed() >= ENDED_GRACE => {
                    drop(stream);
                    return read_rest(docker, container, &mut file).await;
                }
                Some(_) => {}
            },
        }
    }
}

/// How long a followed log may stay open once its container has ended.
const ENDED_GRACE: Duration = Duration::from_secs(2);

fn options(follow: bool) -> LogsOptions {
    LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

/// The log read from its start once more, without following: what the file lacks is added.
async fn read_rest(
    docker: &Docker,
    container: &str,
    file: &mut std::fs::File,
) -> std::io::Result<()> {
    let mut skip = file.metadata()?.len();
    let mut stream = docker.logs(container, Some(options(false)));
    while let Some(frame) = stream.next().await {
        let bytes = frame.map_err(std::io::Error::other)?.into_bytes();
        write_new(file, &mut skip, &bytes)?;
    }
    Ok(())
}

/// Writes what of `bytes` lies past the `skip` bytes the file already holds.
fn write_new(file: &mut std::fs::File, skip: &mut u64, bytes: &[u8]) -> std::io::Result<()> {
    let already = (*skip).min(bytes.len() as u64) as usize;
    *skip -= already as u64;
    if already < bytes.len() {
        file.write_all(&bytes[already..])?;
    }
    Ok(())
}
