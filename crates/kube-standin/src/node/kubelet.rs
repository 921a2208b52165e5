//! The stand-in's kubelet: runs a bound pod's first container on the Docker engine and
//! writes what happens to the pod's status (waiting reasons, running, the end with its exit
//! code and `OOMKilled`); stops containers for deletes and preemptions.

use super::*;

/// Writes a pod's status through `change`, if the pod is still there.
fn set_status(shared: &Shared, ns: &str, name: &str, change: impl FnOnce(&mut Value)) -> bool {
    shared
        .lock()
        .update(Kind::Pod, ns, name, |p| change(&mut p["status"]))
        .is_some()
}

fn container_status(name: &str, image: &str, state: Value, id: Option<&str>) -> Value {
    let running = state.get("running").is_some();
    let mut s = json!({"name": name, "image": image, "imageID": "", "ready": running,
        "started": running, "restartCount": 0, "state": state, "lastState": {}});
    if let Some(id) = id {
        s["containerID"] = json!(format!("docker://{id}"));
    }
    s
}

fn conditions(ready: bool, now: &str) -> Value {
    let t = |b: bool| if b { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": t(ready), "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Ready", "status": t(ready), "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": t(ready), "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
    ])
}

/// Keeps any `DisruptionTarget` condition a preemption put on the pod.
fn merge_conditions(status: &mut Value, fresh: Value) {
    let disruption: Vec<Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .collect();
    let mut all = fresh.as_array().cloned().unwrap_or_default();
    all.extend(disruption);
    status["conditions"] = json!(all);
}

fn waiting(
    shared: &Shared,
    ns: &str,
    name: &str,
    c: &str,
    image: &str,
    reason: &str,
    message: &str,
) -> bool {
    let now = crate::now();
    let state = if message.is_empty() {
        json!({"waiting": {"reason": reason}})
    } else {
        json!({"waiting": {"reason": reason, "message": message}})
    };
    set_status(shared, ns, name, |s| {
        merge_conditions(s, conditions(false, &now));
        s["containerStatuses"] = json!([container_status(c, image, state, None)]);
        s["hostIP"] = json!("127.0.0.1");
        if s["startTime"].is_null() {
            s["startTime"] = json!(now);
        }
    })
}

/// Docker's reference rules, roughly: lowercase repository, optional tag or digest.
pub(super) fn image_name_ok(image: &str) -> bool {
    let (path, _) = image.split_once('@').unwrap_or((image, ""));
    let last = path.rsplit('/').next().unwrap_or(path);
    let repo_len = path.len() - last.len() + last.split(':').next().unwrap_or("").len();
    let repo = &path[..repo_len];
    !repo.is_empty()
        && !image.contains(char::is_whitespace)
        && repo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
}

/// The container's environment: `env` (values and secret keys) and `envFrom` secrets.
fn environment(shared: &Shared, ns: &str, c: &Value) -> Result<Vec<String>, String> {
    use base64::Engine;
    let store = shared.lock();
    let secret = |name: &str| -> Result<HashMap<String, String>, String> {
        let s = store
            .get(Kind::Secret, ns, name)
            .ok_or_else(|| format!("secret \"{name}\" not found"))?;
        let mut out = HashMap::new();
        for (k, v) in s["data"].as_object().into_iter().flatten() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .map_err(|e| format!("secret \"{name}\" key {k}: {e}"))?;
            out.insert(k.clone(), String::from_utf8_lossy(&raw).into_owned());
        }
        Ok(out)
    };
    let mut env = Vec::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = from["secretRef"]["name"].as_str() {
            let mut pairs: Vec<_> = secret(name)?.into_iter().collect();
            pairs.sort();
            let prefix = from["prefix"].as_str().unwrap_or("");
            env.extend(pairs.into_iter().map(|(k, v)| format!("{prefix}{k}={v}")));
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        if let Some(v) = e["value"].as_str() {
            env.push(format!("{name}={v}"));
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let s = secret(r.get("name").and_then(Value::as_str).unwrap_or_default())?;
            let key = r.get("key").and_then(Value::as_str).unwrap_or_default();
            let v = s
                .get(key)
                .ok_or_else(|| format!("couldn't find key {key} in Secret"))?;
            env.push(format!("{name}={v}"));
        } else {
            env.push(format!("{name}="));
        }
    }
    Ok(env)
}

fn pod_exists(shared: &Shared, ns: &str, name: &str) -> bool {
    shared
        .lock()
        .get(Kind::Pod, ns, name)
        .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
}

/// Runs a bound pod's first container to its end.
pub(super) async fn kubelet(shared: Arc<Shared>, ns: String, name: String) {
    let Some(pod) = shared.lock().get(Kind::Pod, &ns, &name).cloned() else {
        return;
    };
    let c = pod["spec"]["containers"][0].clone();
    let cname = c["name"].as_str().unwrap_or("main").to_string();
    let image = c["image"].as_str().unwrap_or_default().to_string();
    let say =
        |reason: &str, message: &str| waiting(&shared, &ns, &name, &cname, &image, reason, message);
    say("ContainerCreating", "");
    if !image_name_ok(&image) {
        let message = format!("Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format");
        say("InvalidImageName", &message);
        return;
    }
    loop {
        match shared.docker.inspect_image(&image).await {
            Ok(_) => break,
            Err(_) => {
                let message = format!("failed to pull and unpack image \"{image}\": the stand-in's node pulls no images, and its engine has none by that name");
                if !say("ErrImagePull", &message) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let backoff = format!("Back-off pulling image \"{image}\"");
                if !pod_exists(&shared, &ns, &name) || !say("ImagePullBackOff", &backoff) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
                if !pod_exists(&shared, &ns, &name) {
                    return;
                }
            }
        }
    }
    let env = loop {
        match environment(&shared, &ns, &c) {
            Ok(env) => break env,
            Err(message) => {
                if !say("CreateContainerConfigError", &message) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !pod_exists(&shared, &ns, &name) {
                    return;
                }
            }
        }
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    };
    let limits = &c["resources"]["limits"];
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or("00000000")
        .to_string();
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint: strings(&c["command"]),
        cmd: strings(&c["args"]),
        env: Some(env),
        working_dir: c["workingDir"].as_str().map(str::to_string),
        labels: Some(HashMap::from([
            (INSTANCE_LABEL.to_string(), shared.instance.clone()),
            ("io.kubernetes.pod.name".to_string(), name.clone()),
            ("io.kubernetes.pod.namespace".to_string(), ns.clone()),
        ])),
        host_config: Some(HostConfig {
            memory: bytes(&limits["memory"]).map(|b| b as i64),
            // No swap beyond the limit, as the kubelet sets it.
            memory_swap: bytes(&limits["memory"]).map(|b| b as i64),
            nano_cpus: cpu_millis(&limits["cpu"]).map(|m| m as i64 * 1_000_000),
            network_mode: Some(shared.config.network.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cname_engine = format!("k8s_{cname}_{name}_{ns}_{}", &uid[..8.min(uid.len())]);
    let options = CreateContainerOptions {
        name: Some(cname_engine),
        platform: String::new(),
    };
    let id = match shared.docker.create_container(Some(options), body).await {
        Ok(made) => made.id,
        Err(e) => {
            say("CreateContainerError", &e.to_string());
            return;
        }
    };
    let kept = match shared.lock_kubelets().get_mut(&(ns.clone(), name.clone())) {
        Some(k) if !k.gone => {
            k.container = Some(id.clone());
            true
        }
        _ => false,
    };
    if !kept {
        let _ = shared.docker.remove_container(&id, Some(force())).await;
        return;
    }
    if let Err(e) = shared.docker.start_container(&id, None).await {
        let now = crate::now();
        let state = json!({"terminated": {"exitCode": 128, "reason": "StartError",
            "message": e.to_string(), "startedAt": now, "finishedAt": now,
            "containerID": format!("docker://{id}")}});
        set_status(&shared, &ns, &name, |s| {
            s["phase"] = json!("Failed");
            s["containerStatuses"] = json!([container_status(&cname, &image, state, Some(&id))]);
        });
        return;
    }
    let started = crate::now();
    set_status(&shared, &ns, &name, |s| {
        s["phase"] = json!("Running");
        merge_conditions(s, conditions(true, &started));
        s["podIP"] = json!("10.88.0.2");
        s["podIPs"] = json!([{"ip": "10.88.0.2"}]);
        let state = json!({"running": {"startedAt": started}});
        s["containerStatuses"] = json!([container_status(&cname, &image, state, Some(&id))]);
    });
    let mut wait = shared
        .docker
        .wait_container(&id, None::<WaitContainerOptions>);
    while let Some(step) = wait.next().await {
        if step.is_err() {
            break;
        }
    }
    ended(&shared, &ns, &name, &id).await;
}

/// Writes a container's end into its pod's status: the exit code, `OOMKilled`, the phase.
async fn ended(shared: &Shared, ns: &str, name: &str, id: &str) {
    let Some(pod) = shared.lock().get(Kind::Pod, ns, name).cloned() else {
        return;
    };
    let c = &pod["spec"]["containers"][0];
    let cname = c["name"].as_str().unwrap_or("main").to_string();
    let image = c["image"].as_str().unwrap_or_default().to_string();
    let started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let info = shared.docker.inspect_container(id, None).await.ok();
    let state = info.and_then(|i| i.state).unwrap_or_default();
    let code = state.exit_code.unwrap_or(137);
    let reason = if state.oom_killed == Some(true) {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let finished = crate::now();
    let terminated = json!({"terminated": {"exitCode": code, "reason": reason,
        "startedAt": started, "finishedAt": finished, "containerID": format!("docker://{id}")}});
    set_status(shared, ns, name, |s| {
        s["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
        merge_conditions(s, conditions(false, &finished));
        s["containerStatuses"] = json!([container_status(&cname, &image, terminated, Some(id))]);
    });
}

fn force() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    }
}

/// Stops a pod's container (SIGTERM, `grace`, SIGKILL); with `remove`, then removes it and
/// the pod (a delete), else leaves both (a preemption: the kubelet records the end).
pub fn stop_container(shared: Arc<Shared>, ns: &str, name: &str, grace: i64, remove: bool) {
    let key = (ns.to_string(), name.to_string());
    let id = {
        let mut kubelets = shared.lock_kubelets();
        let Some(k) = kubelets.get_mut(&key) else {
            return;
        };
        k.stopping = true;
        k.container.clone()
    };
    tokio::spawn(async move {
        if let Some(id) = &id {
            let options = StopContainerOptions {
                t: Some(grace.clamp(0, 3600) as i32),
                signal: None,
            };
            let _ = shared.docker.stop_container(id, Some(options)).await;
            if remove {
                // As a kubelet does: the container's end is written to the pod's status
                // before the pod goes, so watchers see how it ended.
                ended(&shared, &key.0, &key.1, id).await;
                let _ = shared.docker.remove_container(id, Some(force())).await;
            }
        }
        if remove {
            shared.lock_kubelets().remove(&key);
            remove_pod(&mut shared.lock(), &key.0, &key.1);
        }
    });
}

/// Removes every container this stand-in made (at its stop).
pub async fn remove_all(shared: &Shared) {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{INSTANCE_LABEL}={}", shared.instance)],
        )])),
        ..Default::default()
    };
    let Ok(found) = shared.docker.list_containers(Some(options)).await else {
        return;
    };
    for c in found {
        if let Some(id) = c.id {
            let _ = shared.docker.remove_container(&id, Some(force())).await;
        }
    }
}
