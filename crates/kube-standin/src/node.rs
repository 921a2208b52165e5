//! The stand-in's one node and its controllers, woken by every change to the objects:
//!
//! - The Job controller makes a Job's pod from its template (one at a time, a new one after
//!   a failure while `backoffLimit` allows), keeps the Job's status and its `Complete` /
//!   `Failed` conditions, and deletes a finished Job after `ttlSecondsAfterFinished`.
//! - The scheduler binds a pod when its requests fit what the node has left; otherwise the
//!   pod stays `Pending` with `PodScheduled=False`, reason `Unschedulable`, and the message
//!   a real scheduler gives.
//! - The kubelet runs a bound pod's first container on the Docker engine. It never pulls:
//!   an image the engine lacks is `ErrImagePull`, then `ImagePullBackOff` (tests must not
//!   reach a registry). The container's end gives the exit code and `OOMKilled`.

use crate::store::{Kind, Store};
use crate::Shared;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod kubelet;

use kubelet::kubelet;
pub use kubelet::{remove_all, stop_container};

const NODE: &str = "standin-node";
const INSTANCE_LABEL: &str = "liftoff.kube-standin";
const REMOVED_ANNOTATION: &str = "standin.liftoff/removed-unfinished-pods";
const MADE_ANNOTATION: &str = "standin.liftoff/jobs-made";

/// Removes a pod; one that had not succeeded counts against its Job.
fn remove_pod(store: &mut Store, ns: &str, name: &str) {
    let Some(pod) = store.remove(Kind::Pod, ns, name) else {
        return;
    };
    if pod["status"]["phase"] == "Succeeded" {
        return;
    }
    let owner = pod["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["kind"] == "Job"))
        .and_then(|r| r["name"].as_str())
        .map(str::to_string);
    if let Some(job) = owner {
        store.update(Kind::Job, ns, &job, |j| {
            let n = j["metadata"]["annotations"][REMOVED_ANNOTATION]
                .as_str()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            j["metadata"]["annotations"][REMOVED_ANNOTATION] = json!((n + 1).to_string());
        });
    }
}

pub async fn run(shared: Arc<Shared>) {
    let mut tick = shared.lock().tick.subscribe();
    loop {
        jobsets(&shared);
        jobs(&shared);
        pods(&shared);
        tokio::select! {
            _ = tick.changed() => {}
            _ = shared.node.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn owned_by(object: &Value, uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

fn condition(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

fn age_secs(stamp: &Value) -> Option<i64> {
    let at = chrono::DateTime::parse_from_rfc3339(stamp.as_str()?).ok()?;
    Some((chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds())
}

/// What a deleted owner leaves: with `cascade`, its pods end (gracefully) and its secrets
/// go; without, they stay, no longer owned (an orphan).
pub fn dependents(store: &mut Store, ns: &str, uid: &str, cascade: bool, grace: Option<i64>) {
    // A JobSet's Jobs go first, each with what it owns in turn.
    let jobs: Vec<(String, String)> = store
        .list(Kind::Job, Some(ns))
        .filter(|o| owned_by(o, uid))
        .filter_map(|o| {
            let name = o["metadata"]["name"].as_str()?.to_string();
            Some((name, o["metadata"]["uid"].as_str()?.to_string()))
        })
        .collect();
    for (name, job_uid) in jobs {
        if cascade {
            store.remove(Kind::Job, ns, &name);
            dependents(store, ns, &job_uid, true, grace);
        } else {
            store.update(Kind::Job, ns, &name, |o| {
                if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
            });
        }
    }
    for kind in [Kind::Pod, Kind::Secret] {
        let names: Vec<String> = store
            .list(kind, Some(ns))
            .filter(|o| owned_by(o, uid))
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for name in names {
            if !cascade {
                store.update(kind, ns, &name, |o| {
                    if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid);
                    }
                });
            } else if kind == Kind::Pod {
                let now = crate::now();
                store.update(kind, ns, &name, |p| {
                    if p["metadata"]["deletionTimestamp"].is_null() {
                        let g = grace
                            .or(p["spec"]["terminationGracePeriodSeconds"].as_i64())
                            .unwrap_or(30);
                        p["metadata"]["deletionTimestamp"] = json!(now);
                        p["metadata"]["deletionGracePeriodSeconds"] = json!(g);
                    }
                });
            } else {
                store.remove(kind, ns, &name);
            }
        }
    }
}

/// The JobSet controller: a Job per replica of each replicated job (made once), and the
/// JobSet's `Completed` / `Failed` condition from its Jobs'.
fn jobsets(shared: &Shared) {
    let mut store = shared.lock();
    for (ns, name) in store.names(Kind::JobSet) {
        let Some(set) = store.get(Kind::JobSet, &ns, &name).cloned() else {
            continue;
        };
        if condition(&set, "Completed") || condition(&set, "Failed") {
            continue;
        }
        let uid = set["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let made = !set["metadata"]["annotations"][MADE_ANNOTATION].is_null();
        if !made {
            for rj in set["spec"]["replicatedJobs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let rj_name = rj["name"].as_str().unwrap_or("job");
                for i in 0..rj["replicas"].as_u64().unwrap_or(1).min(64) {
                    let job_name = format!("{name}-{rj_name}-{i}");
                    let mut job = json!({
                        "metadata": rj["template"]["metadata"].clone(),
                        "spec": rj["template"]["spec"].clone(),
                    });
                    if !job["metadata"].is_object() {
                        job["metadata"] = json!({});
                    }
                    let meta = &mut job["metadata"];
                    if !meta["labels"].is_object() {
                        meta["labels"] = json!({});
                    }
                    meta["name"] = json!(job_name);
                    meta["namespace"] = json!(ns);
                    meta["uid"] = json!(crate::uid());
                    meta["creationTimestamp"] = json!(crate::now());
                    meta["labels"]["jobset.sigs.k8s.io/jobset-name"] = json!(name);
                    meta["labels"]["jobset.sigs.k8s.io/replicatedjob-name"] = json!(rj_name);
                    meta["ownerReferences"] = json!([{"apiVersion": "jobset.x-k8s.io/v1alpha2",
                        "kind": "JobSet", "name": name, "uid": uid, "controller": true,
                        "blockOwnerDeletion": true}]);
                    let template = &mut job["spec"]["template"];
                    if !template["metadata"].is_object() {
                        template["metadata"] = json!({});
                    }
                    if !template["metadata"]["labels"].is_object() {
                        template["metadata"]["labels"] = json!({});
                    }
                    template["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] = json!(name);
                    job["status"] = json!({});
                    store.put(Kind::Job, job);
                }
            }
            store.update(Kind::JobSet, &ns, &name, |s| {
                s["metadata"]["annotations"][MADE_ANNOTATION] = json!("true");
            });
            continue;
        }
        let children: Vec<Value> = store
            .list(Kind::Job, Some(&ns))
            .filter(|j| owned_by(j, &uid))
            .cloned()
            .collect();
        let now = crate::now();
        let failed = children.iter().any(|j| condition(j, "Failed"));
        let done = !children.is_empty() && children.iter().all(|j| condition(j, "Complete"));
        if failed || done {
            let (kind, reason, message) = if failed {
                (
                    "Failed",
                    "FailedJobs",
                    "jobset failed due to one or more job failures",
                )
            } else {
                (
                    "Completed",
                    "AllJobsCompleted",
                    "jobset completed successfully",
                )
            };
            store.update(Kind::JobSet, &ns, &name, |s| {
                s["status"]["conditions"] = json!([{"type": kind, "status": "True",
                    "reason": reason, "message": message, "lastTransitionTime": now}]);
            });
        }
    }
}

fn jobs(shared: &Shared) {
    let mut store = shared.lock();
    for (ns, name) in store.names(Kind::Job) {
        let Some(job) = store.get(Kind::Job, &ns, &name).cloned() else {
            continue;
        };
        let uid = job["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let pods: Vec<Value> = store
            .list(Kind::Pod, Some(&ns))
            .filter(|p| owned_by(p, &uid))
            .cloned()
            .collect();
        let phase = |p: &Value| {
            p["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string()
        };
        let active = pods
            .iter()
            .filter(|p| matches!(phase(p).as_str(), "Pending" | "Running"))
            .count();
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count();
        // Pods deleted before they succeeded count as failed, as the Job controller counts
        // them (it tracks them with a finalizer); the stand-in keeps the count on the Job.
        let removed = job["metadata"]["annotations"][REMOVED_ANNOTATION]
            .as_str()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() + removed;
        let backoff = job["spec"]["backoffLimit"].as_u64().unwrap_or(6) as usize;
        let finished = condition(&job, "Complete") || condition(&job, "Failed");
        let now = crate::now();
        if finished {
            let ttl = job["spec"]["ttlSecondsAfterFinished"].as_i64();
            let done_at = &job["status"]["completionTime"];
            let done_at = if done_at.is_null() {
                job["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.last())
                    .map(|c| c["lastTransitionTime"].clone())
                    .unwrap_or_default()
            } else {
                done_at.clone()
            };
            if let (Some(ttl), Some(age)) = (ttl, age_secs(&done_at)) {
                if age >= ttl {
                    store.remove(Kind::Job, &ns, &name);
                    dependents(&mut store, &ns, &uid, true, None);
                }
            }
            continue;
        }
        let made_pod = if succeeded == 0 && failed <= backoff && active == 0 {
            let pod = pod_of(&job, &ns, &name, &uid);
            store.put(Kind::Pod, pod);
            true
        } else {
            false
        };
        store.update(Kind::Job, &ns, &name, |job| {
            let status = &mut job["status"];
            if status["startTime"].is_null() {
                status["startTime"] = json!(now);
            }
            status["active"] = json!(active + usize::from(made_pod));
            status["ready"] = json!(pods.iter().filter(|p| phase(p) == "Running").count());
            if succeeded > 0 {
                status["succeeded"] = json!(succeeded);
            }
            if failed > 0 {
                status["failed"] = json!(failed);
            }
            let mut add = |kind: &str, reason: &str, message: &str| {
                let entry = json!({"type": kind, "status": "True", "reason": reason,
                    "message": message, "lastProbeTime": now, "lastTransitionTime": now});
                match status["conditions"].as_array_mut() {
                    Some(cs) => cs.push(entry),
                    None => status["conditions"] = json!([entry]),
                }
            };
            if succeeded > 0 {
                add(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                add(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                status["completionTime"] = json!(now);
                status["active"] = json!(0);
            } else if failed > backoff {
                add(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                );
                add(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                );
                status["active"] = json!(0);
            }
        });
    }
}

/// A Job's next pod, from its template, owned by the Job.
fn pod_of(job: &Value, ns: &str, name: &str, uid: &str) -> Value {
    let template = &job["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in [
        ("batch.kubernetes.io/job-name", name),
        ("job-name", name),
        ("batch.kubernetes.io/controller-uid", uid),
        ("controller-uid", uid),
    ] {
        labels[k] = json!(v);
    }
    json!({
        "metadata": {
            "name": format!("{name}-{}", crate::api::suffix()),
            "generateName": format!("{name}-"),
            "namespace": ns,
            "uid": crate::uid(),
            "creationTimestamp": crate::now(),
            "labels": labels,
            "annotations": template["metadata"]["annotations"].clone(),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    })
}

/// A quantity of CPU in millicores (`500m`, `2`, `1.5`).
pub fn cpu_millis(q: &Value) -> Option<u64> {
    let text = match q {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    if let Some(m) = text.strip_suffix('m') {
        return m.parse().ok();
    }
    text.parse::<f64>()
        .ok()
        .map(|c| (c * 1000.0).round() as u64)
}

/// A quantity of memory in bytes (`128Mi`, `1G`, `1000`).
pub fn bytes(q: &Value) -> Option<u64> {
    let text = match q {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, scale) in units {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * scale as f64) as u64);
        }
    }
    text.parse::<f64>().ok().map(|n| n as u64)
}

/// A pod's requests (or its limits where it names no request): millicores and bytes.
fn requests(pod: &Value) -> (u64, u64) {
    let mut total = (0, 0);
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let r = &c["resources"];
        let pick = |k: &str| {
            let v = &r["requests"][k];
            if v.is_null() {
                r["limits"][k].clone()
            } else {
                v.clone()
            }
        };
        total.0 += cpu_millis(&pick("cpu")).unwrap_or(0);
        total.1 += bytes(&pick("memory")).unwrap_or(0);
    }
    total
}

fn pods(shared: &Arc<Shared>) {
    let mut store = shared.lock();
    let all: Vec<Value> = store.list(Kind::Pod, None).cloned().collect();
    let bound = |p: &Value| p["spec"]["nodeName"].as_str() == Some(NODE);
    let live = |p: &Value| matches!(p["status"]["phase"].as_str(), Some("Pending" | "Running"));
    let (mut cpu, mut memory) = all
        .iter()
        .filter(|p| bound(p) && live(p))
        .map(requests)
        .fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
    for pod in all {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (ns.clone(), name.clone());
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            let mut kubelets = shared.lock_kubelets();
            match kubelets.get_mut(&key) {
                Some(k) if k.container.is_some() => {
                    if !k.stopping {
                        drop(kubelets);
                        stop_container(shared.clone(), &ns, &name, grace, true);
                    }
                }
                other => {
                    if let Some(k) = other {
                        k.gone = true;
                    }
                    kubelets.remove(&key);
                    remove_pod(&mut store, &ns, &name);
                }
            }
            continue;
        }
        if !bound(&pod) {
            if !live(&pod) {
                continue;
            }
            let (c, m) = requests(&pod);
            let now = crate::now();
            if cpu + c <= shared.config.cpu_millis && memory + m <= shared.config.memory_bytes {
                cpu += c;
                memory += m;
                store.update(Kind::Pod, &ns, &name, |p| {
                    p["spec"]["nodeName"] = json!(NODE);
                    p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True",
                        "lastProbeTime": null, "lastTransitionTime": now}]);
                });
            } else {
                let mut short = Vec::new();
                if cpu + c > shared.config.cpu_millis {
                    short.push("1 Insufficient cpu");
                }
                if memory + m > shared.config.memory_bytes {
                    short.push("1 Insufficient memory");
                }
                let message = format!(
                    "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
                    short.join(", ")
                );
                store.update(Kind::Pod, &ns, &name, |p| {
                    let same = p["status"]["conditions"][0]["message"] == message.as_str();
                    if !same {
                        p["status"]["conditions"] = json!([{"type": "PodScheduled",
                            "status": "False", "reason": "Unschedulable", "message": message,
                            "lastProbeTime": null, "lastTransitionTime": now}]);
                    }
                });
            }
            continue;
        }
        let pending = pod["status"]["phase"] == "Pending";
        let mut kubelets = shared.lock_kubelets();
        if pending && !kubelets.contains_key(&key) {
            kubelets.insert(key, crate::Kubelet::default());
            tokio::spawn(kubelet(shared.clone(), ns, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kubelet::image_name_ok;
    use super::*;

    #[test]
    fn quantities_read_as_the_api_writes_them() {
        assert_eq!(cpu_millis(&json!("500m")), Some(500));
        assert_eq!(cpu_millis(&json!("1.5")), Some(1500));
        assert_eq!(cpu_millis(&json!(2)), Some(2000));
        assert_eq!(bytes(&json!("128Mi")), Some(128 << 20));
        assert_eq!(bytes(&json!("1G")), Some(1_000_000_000));
        assert!(image_name_ok("busybox:1.36"));
        assert!(image_name_ok("registry.local:5000/team/img@sha256:abc"));
        assert!(!image_name_ok("Bad Image"));
        assert!(!image_name_ok("UPPER"));
    }
}
