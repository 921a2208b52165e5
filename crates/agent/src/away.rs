//! Ends reported while the agent is away. A run that ends while no agent is connected to the
//! supervisor (its agent killed, or restarting) would be heard of only when an agent comes
//! back; back later than the agent timeout, the server has declared the run lost by then
//! and, on a queue that requeues lost runs, run its item a second time though its work was
//! done. So the supervisor runs `liftoff report-ends` for such ends (see
//! `liftoff_runner::local::Reporter`), which reports them here, from the journal and the
//! runs' exit files, with the agent's identity and token.
//!
//! It only reads the state directory: the agent that comes back re-adopts the same runs and
//! reports them again (the server takes the same end twice as once), and a run the agent had
//! decided to stop is left to it, since only the agent knows why.

use crate::journal::{read_entries, read_identity, Entry};
use crate::shipper::tail;
use liftoff_client::Client;
use liftoff_runner::local::{read_exit_record, LocalHandle};
use liftoff_runner::Exit;
use liftoff_types::api::{FailRequest, RunReport};
use liftoff_types::{Attachment, Phase, ResourceType, RunId, RunState, RunUpdate};
use std::path::Path;

/// What [`report_ends`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Ends the server took (or already had).
    pub reported: usize,
    /// Ends it refused or could not be sent: the agent reports them when it comes back.
    pub left: usize,
}

/// Reports the ends of `runs` (all ended runs in the journal when empty) to the server.
pub async fn report_ends(
    client: &Client,
    state_dir: &Path,
    runs: &[RunId],
) -> Result<Reported, String> {
    let identity = read_identity(state_dir)
        .ok_or_else(|| format!("{} holds no agent identity", state_dir.display()))?;
    if identity.server.trim_end_matches('/') != client.url() {
        return Err(format!(
            "the agent in {} belongs to {}, not {}",
            state_dir.display(),
            identity.server,
            client.url()
        ));
    }
    let ended: Vec<(Entry, Exit)> = read_entries(state_dir)
        .into_iter()
        .filter(|e| runs.is_empty() || runs.contains(&e.run_id))
        .filter_map(|e| ended_by_itself(&e).map(|exit| (e, exit)))
        .collect();
    let mut done = Reported::default();
    let mut reports = Vec::new();
    for (entry, exit) in &ended {
        if exit.success() {
            reports.push(RunReport {
                run_id: entry.run_id.clone(),
                update: RunUpdate {
                    started_at_ms: None,
                    fence: entry.fence,
                    state: RunState::Finished,
                    exit_code: Some(exit.code),
                    message: None,
                    handle: None,
                    not_started: false,
                },
            });
            continue;
        }
        let output = state_dir
            .join("runs")
            .join(entry.run_id.as_str())
            .join("output.log");
        let failure = FailRequest {
            fence: entry.fence,
            message: crate::item::exit_message(exit),
            phase: Phase::Run,
            exit_code: Some(exit.code),
            files: vec![Attachment {
                name: "output-tail.log".into(),
                content: tail(&output, crate::item::TAIL_LINES),
            }],
            cause: None,
        };
        match client.fail(entry.item_id, &failure).await {
            Ok(_) => done.reported += 1,
            Err(e) => {
                eprintln!("liftoff report-ends: run {}: {e}", entry.run_id);
                done.left += 1;
            }
        }
    }
    if !reports.is_empty() {
        let n = reports.len();
        match client.report_batch(identity.agent_id, reports).await {
            Ok(answers) => {
                for answer in answers {
                    match answer {
                        Ok(_) => done.reported += 1,
                        Err(e) => {
                            eprintln!("liftoff report-ends: {e}");
                            done.left += 1;
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("liftoff report-ends: {e}");
                done.left += n;
            }
        }
    }
    Ok(done)
}

/// The exit of a local run that ended by itself: not one the agent had decided to stop,
/// nor one of another backend (their ends stay with their backends).
fn ended_by_itself(entry: &Entry) -> Option<Exit> {
    if entry.stopped.is_some() {
        return None;
    }
    let handle = entry.handle.as_ref()?;
    if handle.runner != ResourceType::LocalProcess {
        return None;
    }
    let local = LocalHandle::of(handle).ok()?;
    let bytes = std::fs::read(&local.exit_file).ok()?;
    read_exit_record(&bytes, entry.run_id.as_str())
}
