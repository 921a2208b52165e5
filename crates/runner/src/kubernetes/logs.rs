//! A pod's log into the run's output file. The kubelet keeps a container's whole log and
//! reads it back the same way every time, so a follower that starts again (after a broken
//! stream, or in a restarted agent) reads from the start and skips as many bytes as the file
//! already holds: nothing written twice, nothing lost (as the container runner's follower).

use super::watch::View;
use futures_util::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub async fn follow(
    api: Api<Pod>,
    view: Arc<View>,
    run: String,
    pod: String,
    container: String,
    output: PathBuf,
) {
    let mut failures = 0u32;
    loop {
        let whole = match follow_once(&api, &pod, &container, &output).await {
            Ok(()) => {
                failures = 0;
                true
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(%pod, error = %e, "following the pod's log");
                false
            }
        };
        // The stream ends when the container does, or when the connection breaks: a pod
        // whose container still runs is followed again.
        let running = {
            let seen = view.lock();
            !seen.deleted.contains(&run)
                && seen.pods.get(&run).is_some_and(|p| {
                    p.metadata.name.as_deref() == Some(pod.as_str())
                        && p.status
                            .as_ref()
                            .and_then(|s| s.container_statuses.as_ref())
                            .and_then(|s| s.iter().find(|s| s.name == container))
                            .and_then(|s| s.state.as_ref())
                            .is_some_and(|s| s.terminated.is_none())
                })
        };
        if !running || failures > 300 {
            // A followed stream that ended with its container has it all; after a broken
            // one, one last read without following adds what the file lacks.
            if !whole {
                let _ = read(&api, &pod, &container, &output, false).await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn follow_once(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
    output: &PathBuf,
) -> std::io::Result<()> {
    read(api, pod, container, output, true).await
}

async fn read(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
    output: &PathBuf,
    follow: bool,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)?;
    let mut skip = file.metadata()?.len();
    let params = LogParams {
        container: Some(container.to_string()),
        follow,
        ..Default::default()
    };
    let mut stream = api
        .log_stream(pod, &params)
        .await
        .map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let already = skip.min(n as u64) as usize;
        skip -= already as u64;
        if already < n {
            file.write_all(&buf[already..n])?;
        }
    }
}
