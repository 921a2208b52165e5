//! The Ray Jobs REST API of a cluster's dashboard, as the runner uses it: submit, list, logs,
//! stop, and the package store that `working_dir` URIs point into. Every call is counted (a
//! benchmark reports calls per run). What Ray answers is mapped to [`RunStatus`] by
//! [`status_of`], a pure function.

use crate::{Exit, RunStatus, RunnerError, RunnerResult};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One job as `GET /api/jobs/` lists it (the fields liftoff reads).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct JobInfo {
    #[serde(default)]
    pub submission_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub driver_exit_code: Option<i32>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl JobInfo {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }

    pub fn ended(&self) -> bool {
        matches!(self.status.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED")
    }
}

/// What Ray's state for a job means to liftoff.
pub fn status_of(job: &JobInfo) -> RunStatus {
    let message = || job.message.clone().unwrap_or_default();
    match job.status.as_str() {
        "PENDING" => RunStatus::Starting(job.message.clone()),
        "RUNNING" => RunStatus::Running,
        "SUCCEEDED" => RunStatus::Exited(Exit {
            code: 0,
            signal: None,
        }),
        // The driver ran and exited non-zero: its code is the run's (a negative one is the
        // signal that ended it, as Python's subprocess reports it).
        "FAILED" if job.driver_exit_code.is_some_and(|c| c != 0) => {
            let code = job.driver_exit_code.unwrap_or(1);
            RunStatus::Exited(if code < 0 {
                Exit {
                    code: 128 - code,
                    signal: Some(-code),
                }
            } else {
                Exit { code, signal: None }
            })
        }
        // Its environment could not be made (a pip install failed): it never started.
        "FAILED" if job.error_type.as_deref() == Some("RUNTIME_ENV_SETUP_FAILED") => {
            RunStatus::NotStarted(format!(
                "Ray could not set up the run's runtime_env: {}",
                message()
            ))
        }
        "FAILED" => RunStatus::Failed {
            message: format!("Ray failed the job: {}", message()),
            exit: None,
        },
        "STOPPED" => RunStatus::Failed {
            message: format!("the Ray job was stopped: {}", message()),
            exit: job.driver_exit_code.map(|code| Exit { code, signal: None }),
        },
        other => RunStatus::Failed {
            message: format!("Ray reports the job as {other:?}: {}", message()),
            exit: None,
        },
    }
}

/// How a submission went.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    New,
    /// Ray already has a job under this submission id.
    Exists,
}

/// One cluster's Jobs API.
pub struct Api<'a> {
    pub http: &'a reqwest::Client,
    /// `http://HOST:8265`, no trailing slash.
    pub base: &'a str,
    pub headers: &'a [(String, String)],
    pub calls: &'a Arc<AtomicU64>,
}

/// An HTTP client for [`Api`] (for callers without `reqwest` of their own).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::new()
}

/// The longest one call may take (a package upload gets longer).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Api<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(CALL_TIMEOUT);
        for (name, value) in self.headers {
            req = req.header(name, value);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> RunnerResult<(u16, String)> {
        let resp = req.send().await.map_err(|e| {
            RunnerError::Transient(format!("Ray at {} did not answer {what}: {e}", self.base))
        })?;
        let code = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| {
            RunnerError::Transient(format!(
                "Ray at {} cut its answer to {what}: {e}",
                self.base
            ))
        })?;
        Ok((code, text))
    }

    fn refused(&self, what: &str, code: u16, text: &str) -> RunnerError {
        // Ray answers errors with a Python traceback: its last line says what went wrong.
        let last = text.trim().lines().last().unwrap_or("").trim();
        let message = format!("Ray at {} refused {what} ({code}): {last}", self.base);
        if code >= 500 || code == 429 {
            RunnerError::Transient(message)
        } else {
            RunnerError::Permanent(message)
        }
    }

    pub async fn submit(&self, body: &serde_json::Value) -> RunnerResult<Submitted> {
        let req = self.request(reqwest::Method::POST, "/api/jobs/").json(body);
        let (code, text) = self.send(req, "a submission").await?;
        match code {
            200 => Ok(Submitted::New),
            // Ray says so in a 500 (a ValueError the handler does not map).
            _ if text.contains("already exists") => Ok(Submitted::Exists),
            _ => Err(self.refused("the submission", code, &text)),
        }
    }

    pub async fn list(&self) -> RunnerResult<Vec<JobInfo>> {
        let req = self.request(reqwest::Method::GET, "/api/jobs/");
        let (code, text) = self.send(req, "the job list").await?;
        if code != 200 {
            return Err(self.refused("the job list", code, &text));
        }
        serde_json::from_str(&text).map_err(|e| {
            RunnerError::Transient(format!("Ray's job list is not what liftoff reads: {e}"))
        })
    }

    pub async fn get(&self, id: &str) -> RunnerResult<Option<JobInfo>> {
        let req = self.request(reqwest::Method::GET, &format!("/api/jobs/{id}"));
        let (code, text) = self.send(req, "a job's state").await?;
        match code {
            200 => serde_json::from_str(&text).map(Some).map_err(|e| {
                RunnerError::Transient(format!("Ray's job {id} is not what liftoff reads: {e}"))
            }),
            404 => Ok(None),
            _ => Err(self.refused("a job's state", code, &text)),
        }
    }

    /// The job's whole log so far (the API has no offset).
    pub async fn logs(&self, id: &str) -> RunnerResult<String> {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let req = self.request(reqwest::Method::GET, &format!("/api/jobs/{id}/logs"));
        let (code, text) = self.send(req, "a job's logs").await?;
        match code {
            200 => serde_json::from_str::<Logs>(&text)
                .map(|l| l.logs)
                .map_err(|e| RunnerError::Transient(format!("Ray's logs of {id}: {e}"))),
            404 => Ok(String::new()),
            _ => Err(self.refused("a job's logs", code, &text)),
        }
    }

    /// Removes an ended job's record (Ray refuses a live one).
    pub async fn delete(&self, id: &str) -> RunnerResult<()> {
        let req = self.request(reqwest::Method::DELETE, &format!("/api/jobs/{id}"));
        let (code, text) = self.send(req, "a delete").await?;
        match code {
            200 | 404 => Ok(()),
            _ => Err(self.refused("the delete", code, &text)),
        }
    }

    pub async fn stop(&self, id: &str) -> RunnerResult<()> {
        let req = self.request(reqwest::Method::POST, &format!("/api/jobs/{id}/stop"));
        let (code, text) = self.send(req, "a stop").await?;
        match code {
            200 | 404 => Ok(()),
            _ => Err(self.refused("the stop", code, &text)),
        }
    }

    /// Whether the cluster holds a package; asking also pins it for a while (Ray's own
    /// SDK asks the same before it submits), so it is not collected before the job starts.
    pub async fn package_exists(&self, uri: &str) -> RunnerResult<bool> {
        let req = self.request(reqwest::Method::GET, &package_path(uri)?);
        let (code, text) = self.send(req, "a package lookup").await?;
        match code {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused("the package lookup", code, &text)),
        }
    }

    pub async fn upload_package(&self, uri: &str, zip: Vec<u8>) -> RunnerResult<()> {
        let req = self
            .request(reqwest::Method::PUT, &package_path(uri)?)
            .timeout(Duration::from_secs(600))
            .body(zip);
        let (code, text) = self.send(req, "a package upload").await?;
        match code {
            200 => Ok(()),
            _ => Err(self.refused("the package upload", code, &text)),
        }
    }
}

/// `gcs://_ray_pkg_X.zip` → `/api/packages/gcs/_ray_pkg_X.zip`.
fn package_path(uri: &str) -> RunnerResult<String> {
    let (protocol, name) = uri
        .split_once("://")
        .ok_or_else(|| RunnerError::Permanent(format!("{uri:?} is not a package URI")))?;
    Ok(format!("/api/packages/{protocol}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, code: Option<i32>, error_type: Option<&str>) -> JobInfo {
        JobInfo {
            status: status.into(),
            message: Some("m".into()),
            driver_exit_code: code,
            error_type: error_type.map(str::to_string),
            ..JobInfo::default()
        }
    }

    #[test]
    fn rays_states_map_to_a_runs() {
        assert_eq!(
            status_of(&job("PENDING", None, None)),
            RunStatus::Starting(Some("m".into()))
        );
        assert_eq!(status_of(&job("RUNNING", None, None)), RunStatus::Running);
        assert!(
            matches!(status_of(&job("SUCCEEDED", None, None)), RunStatus::Exited(e) if e.success())
        );
        assert!(
            matches!(status_of(&job("FAILED", Some(3), None)), RunStatus::Exited(e) if e.code == 3)
        );
        assert!(matches!(
            status_of(&job("FAILED", None, Some("RUNTIME_ENV_SETUP_FAILED"))),
            RunStatus::NotStarted(m) if m.contains("runtime_env")
        ));
        assert!(matches!(
            status_of(&job("FAILED", None, None)),
            RunStatus::Failed { exit: None, .. }
        ));
        assert!(
            matches!(status_of(&job("STOPPED", None, None)), RunStatus::Failed { message, .. } if message.contains("stopped"))
        );
    }

    #[test]
    fn a_jobs_list_as_ray_prints_it_parses() {
        let text = r#"[{"type": "SUBMISSION", "job_id": null, "submission_id": "t1", "driver_info": null,
          "status": "FAILED", "entrypoint": "exit 3", "message": "Job entrypoint command failed with exit code 3",
          "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR", "start_time": 1, "end_time": 2,
          "metadata": {"liftoff_agent": "x"}, "runtime_env": {}, "driver_exit_code": 3},
          {"type": "DRIVER", "job_id": "01000000", "submission_id": null, "status": "SUCCEEDED", "metadata": null}]"#;
        let jobs: Vec<JobInfo> = serde_json::from_str(text).unwrap();
        assert_eq!(jobs[0].meta("liftoff_agent"), Some("x"));
        assert_eq!(jobs[0].driver_exit_code, Some(3));
        assert_eq!(jobs[1].submission_id, None);
        assert_eq!(
            package_path("gcs://_ray_pkg_ab.zip").unwrap(),
            "/api/packages/gcs/_ray_pkg_ab.zip"
        );
    }
}
