//! Before the ack: the sweep lets the run start, the job's version (one the runner can run),
//! the command, and the journal entry that makes the item this agent's across a crash.

use super::prepare::{command, run_id_for};
use crate::journal::Entry;
use crate::report::{moved_on, retry};
use crate::state::Agent;
use liftoff_runner::Runner;
use liftoff_types::job::{JobKind, JobRef};
use liftoff_types::{Item, JobVersion, SweepState};
use std::sync::Arc;

/// Why an item is not acked.
pub(super) enum NotNow {
    /// Its sweep is paused, or the agent's disk is full: back to its queue, no attempt
    /// counted.
    Release,
    /// It cannot run here: it fails with phase `agent` and this message.
    Refuse(String),
}

/// What is settled before the ack: the sweep lets the run start, the job's version, the
/// command, and the journal entry that makes the item this agent's across a crash.
pub(super) async fn before_ack(
    agent: &Agent,
    runner: &Arc<dyn Runner>,
    item: &Item,
    fence: i64,
) -> Result<(Option<JobVersion>, Vec<String>, Entry), NotNow> {
    if let Some(sweep) = &item.spec.sweep_id {
        check_sweep_state(agent, sweep).await?;
    }
    let job = match &item.spec.job {
        Some(reference) => Some(
            job_version(agent, runner, reference)
                .await
                .map_err(NotNow::Refuse)?,
        ),
        None => None,
    };
    let inline_image = item
        .spec
        .docker
        .as_ref()
        .is_some_and(|d| d.docker_image.is_some());
    if inline_image && job.is_none() && !runner.capabilities().images {
        return Err(NotNow::Refuse(format!(
            "the launch spec runs an image, and queue {} runs {}, which runs no images",
            item.queue,
            runner.resource()
        )));
    }
    let (argv, entry) = own(agent, item, job.as_ref(), fence)?;
    Ok((job, argv, entry))
}

/// The seed's `check_sweep_state`: a sweep's run starts only while its sweep is `running`.
pub(super) async fn check_sweep_state(agent: &Agent, sweep: &str) -> Result<(), NotNow> {
    match retry("checking the sweep", || agent.client.sweep_state(sweep)).await {
        Ok(s) => match s.state {
            SweepState::Running => Ok(()),
            SweepState::Paused | SweepState::Pending => Err(NotNow::Release),
            ended => Err(NotNow::Refuse(format!(
                "sweep {sweep} is {ended}: its runs no longer start"
            ))),
        },
        Err(e) if moved_on(&e) => Err(NotNow::Refuse(format!("sweep {sweep}: {e}"))),
        Err(_) => Err(NotNow::Release),
    }
}

/// The job version a spec names (the server pinned it to `name:vN` at enqueue).
pub(super) async fn job_version(
    agent: &Agent,
    runner: &Arc<dyn Runner>,
    reference: &str,
) -> Result<JobVersion, String> {
    let r: JobRef = reference.parse()?;
    let version = r.version.map_or("latest".to_string(), |v| format!("v{v}"));
    let job = retry("reading the job", || {
        agent.client.job_version(&r.name, &version)
    })
    .await
    .map_err(|e| format!("job {reference}: {e}"))?;
    if job.spec.kind == JobKind::Image && !runner.capabilities().images {
        return Err(format!(
            "job {reference} runs the image {}, and the {} runner runs no images",
            job.spec.source.image.as_deref().unwrap_or("?"),
            runner.resource()
        ));
    }
    Ok(job)
}

/// What the agent needs before it acks: the command, a run id, and the journal entry that
/// makes the item this agent's across a crash.
pub(super) fn own(
    agent: &Agent,
    item: &Item,
    job: Option<&JobVersion>,
    fence: i64,
) -> Result<(Vec<String>, Entry), NotNow> {
    if agent.config.secure_mode && job.is_some() && item.spec.overrides.entry_point.is_some() {
        return Err(NotNow::Refuse(
            "secure_mode: this agent runs jobs' own entrypoints only (overrides.entry_point refused)"
                .into(),
        ));
    }
    let argv = command(&item.spec, job).map_err(NotNow::Refuse)?;
    let entry = Entry {
        item_id: item.id,
        fence,
        run_id: run_id_for(item).map_err(NotNow::Refuse)?,
        queue: item.queue.clone(),
        handle: None,
        shipped: 0,
        stopped: None,
    };
    match agent.journal.record(&entry) {
        Ok(()) => Ok((argv, entry)),
        // Not this run's fault: another agent (or this one, with space back) takes it.
        Err(e) if crate::disk::is_full(&e) => {
            agent.disk.note_full();
            Err(NotNow::Release)
        }
        Err(e) => Err(NotNow::Refuse(format!(
            "the agent cannot write its journal: {e}"
        ))),
    }
}
