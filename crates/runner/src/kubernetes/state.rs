//! What a run's objects say of it, as the agent needs it: a pod's state (pending reasons,
//! image pull failures after their grace, preemption, OOM, the exit code), a Job's when its
//! pod is gone, and a custom object's from its conditions. Pure: reads the objects the
//! watches hold.

use super::Live;
use crate::{Exit, RunStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use std::time::{Duration, Instant};

/// A pod's state as the agent needs it.
pub(super) fn pod_state(pod: &Pod, name: &str, live: &mut Live, pull_grace: Duration) -> RunStatus {
    let Some(status) = &pod.status else {
        return RunStatus::Starting(None);
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    {
        let why = c
            .reason
            .clone()
            .unwrap_or_else(|| "DisruptionTarget".into());
        return RunStatus::Preempted(match &c.message {
            Some(m) => format!("{why}: {m}"),
            None => why,
        });
    }
    // The run's container (a real kubelet lists sidecars too, sorted by name).
    let container = status
        .container_statuses
        .as_deref()
        .and_then(|s| s.iter().find(|c| c.name == name));
    if let Some(t) = container.and_then(|c| c.state.as_ref()?.terminated.as_ref()) {
        let exit = Exit {
            code: t.exit_code,
            signal: None,
        };
        return match t.reason.as_deref() {
            Some("OOMKilled") => RunStatus::Failed {
                message: "OOMKilled: the container ran out of memory".into(),
                exit: Some(exit),
            },
            _ => RunStatus::Exited(exit),
        };
    }
    if container.is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())) {
        live.pull_failing = None;
        return RunStatus::Running;
    }
    if let Some(w) = container.and_then(|c| c.state.as_ref()?.waiting.as_ref()) {
        let reason = w.reason.clone().unwrap_or_default();
        let said = match &w.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason.clone(),
        };
        if matches!(
            reason.as_str(),
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
        ) {
            let since = *live.pull_failing.get_or_insert_with(Instant::now);
            if reason == "InvalidImageName" || since.elapsed() >= pull_grace {
                return RunStatus::NotStarted(said);
            }
        }
        return RunStatus::Starting(Some(said));
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
        return RunStatus::Starting(Some(match &c.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason,
        }));
    }
    match status.phase.as_deref() {
        Some("Failed") => {
            let reason = status.reason.clone().unwrap_or_else(|| "Failed".into());
            let message = format!("{reason}: {}", status.message.clone().unwrap_or_default());
            if reason == "Evicted" {
                RunStatus::Preempted(message)
            } else {
                RunStatus::Failed {
                    message,
                    exit: None,
                }
            }
        }
        Some("Succeeded") => RunStatus::Exited(Exit {
            code: 0,
            signal: None,
        }),
        _ => RunStatus::Starting(Some("the pod is pending".into())),
    }
}

/// A custom object's state: ended by its conditions (`Completed`/`Complete`/`Succeeded`,
/// `Failed`), with the exit code of its pod; until then what its pod says, but a pod's end
/// is not the object's (other replicas may still run, a controller may start another).
pub(super) fn custom_state(object: &DynamicObject, pod: Option<RunStatus>) -> RunStatus {
    let conditions = object.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pod_exit = match &pod {
        Some(RunStatus::Exited(e)) => Some(*e),
        Some(RunStatus::Failed { exit, .. }) => *exit,
        _ => None,
    };
    for c in conditions.iter().filter(|c| c["status"] == "True") {
        let said = format!(
            "{}: {}",
            c["reason"].as_str().unwrap_or_default(),
            c["message"].as_str().unwrap_or_default()
        );
        match c["type"].as_str().unwrap_or_default() {
            "Completed" | "Complete" | "Succeeded" => {
                return RunStatus::Exited(pod_exit.unwrap_or(Exit {
                    code: 0,
                    signal: None,
                }))
            }
            "Failed" => {
                return match pod {
                    Some(p @ RunStatus::Failed { .. }) | Some(p @ RunStatus::Preempted(_)) => p,
                    _ => RunStatus::Failed {
                        message: said,
                        exit: pod_exit,
                    },
                }
            }
            _ => {}
        }
    }
    match pod {
        Some(RunStatus::Exited(_)) | Some(RunStatus::Failed { .. }) | Some(RunStatus::Gone) => {
            RunStatus::Running
        }
        Some(other) => other,
        None => RunStatus::Starting(Some(format!(
            "the {} has no pod yet",
            object.types.as_ref().map_or("object", |t| t.kind.as_str())
        ))),
    }
}

/// A Job's state when its pod is gone.
pub(super) fn job_state(job: &Job) -> RunStatus {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in conditions.iter().filter(|c| c.status == "True") {
        let said = format!(
            "{}: {}",
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        );
        match c.type_.as_str() {
            "Complete" => {
                return RunStatus::Exited(Exit {
                    code: 0,
                    signal: None,
                })
            }
            "Failed" => {
                return RunStatus::Failed {
                    message: said,
                    exit: None,
                }
            }
            _ => {}
        }
    }
    RunStatus::Starting(Some("waiting for the Job's pod".into()))
}
