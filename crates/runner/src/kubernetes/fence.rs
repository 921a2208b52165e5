//! What a launch and a stop do beside the run's own object: the Secret made the object's
//! dependent, earlier attempts fenced off, and pods deleted with a stop's grace.

use super::*;

impl KubeRunner {
    /// Makes the run's Secret its Job's (or custom object's) dependent, so that the
    /// cluster's garbage collector deletes it with them (after `ttlSecondsAfterFinished`,
    /// or a delete by hand) even if this agent never comes back. Not fatal: without the
    /// `patch` verb the runner still deletes the Secret at release.
    pub(super) async fn own_secret(
        &self,
        c: &Connected,
        made: &manifest::Made,
        owner: &ObjectMeta,
    ) {
        let Some(uid) = &owner.uid else { return };
        let (api_version, kind) = made
            .custom
            .clone()
            .unwrap_or_else(|| ("batch/v1".into(), "Job".into()));
        let patch = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": api_version, "kind": kind, "name": made.name, "uid": uid,
        }]}});
        let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &made.namespace);
        let name = format!("{}-env", made.name);
        if let Err(e) = secrets
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(secret = %name, error = %e, "the run's Secret could not be given an owner");
        }
    }

    /// Ends the Jobs of earlier attempts of the same item (an agent that died left them).
    pub(super) async fn fence(
        &self,
        c: &Connected,
        made: &manifest::Made,
        spec: &RunSpec,
    ) -> RunnerResult<()> {
        let Some(item) = &spec.attempt_of else {
            return Ok(());
        };
        let selector = format!("{ITEM_LABEL}={}", manifest::short_hash(item));
        let lp = ListParams::default().labels(&selector);
        let names: Vec<Option<String>> = match &made.custom {
            Some((api, kind)) => {
                let resource = resource_of(api, kind);
                let objects: Api<DynamicObject> =
                    Api::namespaced_with(c.client.clone(), &made.namespace, &resource);
                let found = objects
                    .list(&lp)
                    .await
                    .map_err(|e| transient("listing earlier attempts' objects", e))?;
                found.into_iter().map(|o| o.metadata.name).collect()
            }
            None => {
                let jobs: Api<Job> = Api::namespaced(c.client.clone(), &made.namespace);
                let found = jobs
                    .list(&lp)
                    .await
                    .map_err(|e| transient("listing earlier attempts' Jobs", e))?;
                found.into_iter().map(|j| j.metadata.name).collect()
            }
        };
        let mut fenced = false;
        for name in names {
            let Some(name) = name else {
                continue;
            };
            if name == made.name {
                continue;
            }
            tracing::warn!(job = %name, %item, "deleting an earlier attempt's Job");
            let k = KubeHandle {
                namespace: made.namespace.clone(),
                job: name,
                container: made.container.clone(),
                output: None,
                api_version: made.custom.as_ref().map(|c| c.0.clone()),
                kind: made.custom.as_ref().map(|c| c.1.clone()),
            };
            self.delete(&k, None).await?;
            fenced = true;
        }
        if !fenced {
            return Ok(());
        }
        // The Job's pods go with their own grace: they are ended now, and this attempt
        // starts only once none is left.
        let ours = spec.run_id.as_str();
        let deadline = Instant::now() + Duration::from_secs(120);
        while self
            .delete_pods(c, &made.namespace, &selector, Duration::ZERO, Some(ours))
            .await?
            > 0
        {
            if Instant::now() >= deadline {
                return Err(RunnerError::Transient(
                    "an earlier attempt's pod is still there after 120 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    /// Deletes the pods `selector` finds (but `except`'s run's) with `grace`; how many there
    /// were. A Job's delete leaves its pods to the garbage collector, which gives them their
    /// own grace (30 s by default, or whatever the manifest says), not the stop's.
    pub(super) async fn delete_pods(
        &self,
        c: &Connected,
        namespace: &str,
        selector: &str,
        grace: Duration,
        except: Option<&str>,
    ) -> RunnerResult<usize> {
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), namespace);
        let found = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| transient("listing the run's pods", e))?;
        let params = DeleteParams {
            grace_period_seconds: Some(grace.as_secs().min(u32::MAX as u64) as u32),
            ..Default::default()
        };
        let mut n = 0;
        for pod in found {
            let run = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RUN_ANNOTATION));
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            if except.is_some_and(|e| run.is_some_and(|r| r == e)) {
                continue;
            }
            n += 1;
            match pods.delete(&name, &params).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(transient("deleting a pod", e)),
            }
        }
        Ok(n)
    }
}
