//! A typed client for the liftoff HTTP API, used by the agent, the CLI and tests.
//!
//! Every method maps to one route. Errors keep the server's JSON error body, so callers can
//! tell a conflict (a stale fence: stop working on the item) from a transient failure (the
//! server unreachable: retry).

use liftoff_types::api::{
    AckBatch, AckOutcome, AckRequest, AckResponse, AckedRun, CreateTokenRequest, CreatedToken,
    EntryError, ErrorBody, FailRequest, ItemAck, ItemFilter, LeaseRequest, LeaseResponse,
    LogAppend, LogQuery, ReleaseRequest, ReportBatch, ReportOutcome, ReportedRun, RunFilter,
    RunReport, WarnRequest,
};
use liftoff_types::job::JobVersionCreated;
use liftoff_types::sweep::{
    CreateSweep, MetricsAppend, RunMetrics, StopRequest, SweepRunRequest, SweepStateChange,
    SweepView,
};
use liftoff_types::{
    Agent, AgentId, Heartbeat, HeartbeatReply, Item, ItemId, JobSpec, JobVersion, LaunchSpec,
    NewAgent, NewQueue, Queue, Run, RunId, RunUpdate, Sweep, SweepState, TokenInfo,
};
pub use reqwest::StatusCode;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Time allowed for an ordinary request; a lease adds its `wait_ms` to this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an archive's upload or download may take (a gigabyte on a slow link).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{} ({status})", body.error.message)]
    Api { status: StatusCode, body: ErrorBody },
    /// The server could not be reached or the connection broke: worth retrying.
    #[error("cannot reach the liftoff server at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server's answer could not be read")]
    Decode(#[source] reqwest::Error),
    #[error("invalid server URL {0:?}")]
    BadUrl(String),
    /// A local file an upload reads or a download writes.
    #[error("{context}: {source}")]
    File {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The request was never delivered (a batch that could not be sent, a sender that
    /// stopped): worth trying again later.
    #[error("not sent: {0}")]
    Unsent(String),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A stale fence or an item that moved on: the work must be abandoned, not retried.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    /// Worth trying again later (network trouble, a server error).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Unsent(_) => true,
            ClientError::Api { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    in_process: Option<InProcess>,
}

/// The API answered in this process: the server's own router, for an agent that runs in the
/// server's process (`liftoff up`). Requests and answers are the same as over HTTP (same
/// routes, same bearer token checked, same JSON), without the socket and the HTTP framing
/// on both sides, which cost a short run about as much as its own process start. Bodies are
/// whole: not for following a log.
pub type InProcess =
    std::sync::Arc<dyn Fn(http::Request<bytes::Bytes>) -> InProcessAnswer + Send + Sync + 'static>;
/// What an [`InProcess`] call answers.
pub type InProcessAnswer =
    std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<bytes::Bytes>> + Send>>;

impl std::fmt::Debug for Client {
    // The token stays out of debug output and so out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> ClientResult<Client> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(url.to_string()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.clone(),
                source: e,
            })?;
        Ok(Client {
            http,
            base,
            token,
            in_process: None,
        })
    }

    /// This client with its requests answered by `answer` in this process instead of over
    /// HTTP; its URL stays what runs and other processes use.
    pub fn in_process(mut self, answer: InProcess) -> Client {
        self.in_process = Some(answer);
        self
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The token, for a helper process of the same agent (the supervisor's `tell-ends`):
    /// passed in an environment of its own, never printed.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(REQUEST_TIMEOUT);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> ClientResult<T> {
        let resp = self.check(req).await?;
        resp.json().await.map_err(ClientError::Decode)
    }

    async fn check(&self, req: RequestBuilder) -> ClientResult<reqwest::Response> {
        let resp = match &self.in_process {
            Some(answer) => self.answer_in_process(answer, req).await?,
            None => req.send().await.map_err(|e| self.transport(e))?,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
            error: liftoff_types::api::ErrorDetail {
                code: "error".into(),
                message: if text.is_empty() {
                    status.to_string()
                } else {
                    text
                },
                fields: Vec::new(),
            },
        });
        Err(ClientError::Api { status, body })
    }

    fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            url: self.base.clone(),
            source,
        }
    }

    /// Sends `req` to the in-process answerer as the socket would carry it (method, path
    /// and query, headers, body), within the request's timeout.
    async fn answer_in_process(
        &self,
        answer: &InProcess,
        req: RequestBuilder,
    ) -> ClientResult<reqwest::Response> {
        let mut req = req.build().map_err(|e| self.transport(e))?;
        let timeout = req.timeout().copied().unwrap_or(REQUEST_TIMEOUT);
        let path = match req.url().query() {
            Some(q) => format!("{}?{q}", req.url().path()),
            None => req.url().path().to_string(),
        };
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .map(bytes::Bytes::copy_from_slice)
            .unwrap_or_default();
        let mut call = http::Request::new(body);
        *call.method_mut() = req.method().clone();
        *call.uri_mut() = path.parse().map_err(|_| ClientError::BadUrl(path))?;
        *call.headers_mut() = std::mem::take(req.headers_mut());
        match tokio::time::timeout(timeout, answer(call)).await {
            Ok(answered) => Ok(reqwest::Response::from(answered)),
            Err(_) => Err(ClientError::Api {
                status: StatusCode::GATEWAY_TIMEOUT,
                body: ErrorBody {
                    error: liftoff_types::api::ErrorDetail {
                        code: "timeout".into(),
                        message: format!("no answer within {timeout:?}"),
                        fields: Vec::new(),
                    },
                },
            }),
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ClientResult<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> ClientResult<()> {
        self.check(self.request(Method::POST, path).json(body))
            .await
            .map(drop)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn healthz(&self) -> ClientResult<serde_json::Value> {
        self.get("/healthz").await
    }

    // Queues.
    pub async fn create_queue(&self, queue: &NewQueue) -> ClientResult<Queue> {
        self.post("/api/v1/queues", queue).await
    }

    pub async fn list_queues(&self) -> ClientResult<Vec<Queue>> {
        self.get("/api/v1/queues").await
    }

    pub async fn get_queue(&self, name: &str) -> ClientResult<Queue> {
        self.get(&format!("/api/v1/queues/{}", seg(name))).await
    }

    pub async fn delete_queue(&self, name: &str, force: bool) -> ClientResult<()> {
        let req = self
            .request(Method::DELETE, &format!("/api/v1/queues/{}", seg(name)))
            .query(&[("force", force)]);
        self.check(req).await.map(drop)
    }

    pub async fn enqueue(&self, queue: &str, spec: &LaunchSpec) -> ClientResult<Item> {
        self.post(&format!("/api/v1/queues/{}/items", seg(queue)), spec)
            .await
    }

    // Items.
    pub async fn list_items(&self, filter: &ItemFilter) -> ClientResult<Vec<Item>> {
        self.send(self.request(Method::GET, "/api/v1/items").query(filter))
            .await
    }

    pub async fn get_item(&self, id: ItemId) -> ClientResult<Item> {
        self.get(&format!("/api/v1/items/{id}")).await
    }

    pub async fn item_file(&self, id: ItemId, name: &str) -> ClientResult<String> {
        let req = self.request(
            Method::GET,
            &format!("/api/v1/items/{id}/files/{}", seg(name)),
        );
        self.check(req)
            .await?
            .text()
            .await
            .map_err(ClientError::Decode)
    }

    pub async fn cancel_item(&self, id: ItemId) -> ClientResult<Item> {
        self.post(
            &format!("/api/v1/items/{id}/cancel"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Ends a running item without its agent (`cancel --force`).
    pub async fn force_cancel_item(&self, id: ItemId) -> ClientResult<Item> {
        self.post(
            &format!("/api/v1/items/{id}/cancel?force=true"),
            &serde_json::json!({}),
        )
        .await
    }

    // The agent protocol.
    pub async fn register_agent(&self, agent: &NewAgent) -> ClientResult<Agent> {
        self.post("/api/v1/agents", agent).await
    }

    /// A heartbeat; with `wait_ms`, the server holds the answer until something must stop.
    pub async fn heartbeat(&self, id: AgentId, beat: &Heartbeat) -> ClientResult<HeartbeatReply> {
        let http = self
            .request(Method::POST, &format!("/api/v1/agents/{id}/heartbeat"))
            .timeout(REQUEST_TIMEOUT + Duration::from_millis(beat.wait_ms))
            .json(beat);
        self.send(http).await
    }

    pub async fn stop_agent(&self, id: AgentId) -> ClientResult<Agent> {
        self.post(&format!("/api/v1/agents/{id}/stop"), &serde_json::json!({}))
            .await
    }

    /// Appends output at `offset`; answers the length the server now holds.
    pub async fn append_log(
        &self,
        id: &RunId,
        fence: i64,
        offset: u64,
        data: Vec<u8>,
    ) -> ClientResult<u64> {
        let req = self
            .request(Method::POST, &format!("/api/v1/runs/{id}/logs"))
            .query(&LogAppend { fence, offset })
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data);
        let answer: serde_json::Value = self.send(req).await?;
        Ok(answer["length"].as_u64().unwrap_or(offset))
    }

    /// A run's output from `offset`, as far as the server has it.
    pub async fn read_log(&self, id: &RunId, offset: u64) -> ClientResult<Vec<u8>> {
        let req = self
            .request(Method::GET, &format!("/api/v1/runs/{id}/logs"))
            .query(&LogQuery {
                offset,
                follow: false,
            });
        let resp = self.check(req).await?;
        Ok(resp.bytes().await.map_err(ClientError::Decode)?.to_vec())
    }

    /// Follows a run's output until the run ends: call [`LogFollower::next`] for each piece.
    pub async fn follow_log(&self, id: &RunId, offset: u64) -> ClientResult<LogFollower> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/runs/{id}/logs", self.base))
            .query(&LogQuery {
                offset,
                follow: true,
            });
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Ok(LogFollower {
            resp: self.check(req).await?,
        })
    }

    pub async fn lease(&self, id: AgentId, req: &LeaseRequest) -> ClientResult<LeaseResponse> {
        let http = self
            .request(Method::POST, &format!("/api/v1/agents/{id}/lease"))
            .timeout(REQUEST_TIMEOUT + Duration::from_millis(req.wait_ms))
            .json(req);
        self.send(http).await
    }

    pub async fn ack(&self, id: ItemId, req: &AckRequest) -> ClientResult<AckResponse> {
        self.post(&format!("/api/v1/items/{id}/ack"), req).await
    }

    pub async fn fail(&self, id: ItemId, req: &FailRequest) -> ClientResult<Item> {
        self.post(&format!("/api/v1/items/{id}/fail"), req).await
    }

    pub async fn warn(&self, id: ItemId, req: &WarnRequest) -> ClientResult<()> {
        self.post_empty(&format!("/api/v1/items/{id}/warn"), req)
            .await
    }

    pub async fn release(&self, id: ItemId, fence: i64) -> ClientResult<()> {
        self.post_empty(
            &format!("/api/v1/items/{id}/release"),
            &ReleaseRequest { fence },
        )
        .await
    }

    /// Several acks in one request; each answered on its own.
    pub async fn ack_batch(
        &self,
        agent: AgentId,
        acks: Vec<ItemAck>,
    ) -> ClientResult<Vec<ClientResult<AckedRun>>> {
        let answers: Vec<AckOutcome> = self
            .post(&format!("/api/v1/agents/{agent}/acks"), &AckBatch { acks })
            .await?;
        Ok(answers
            .into_iter()
            .map(|a| match a {
                AckOutcome::Ok(ack) => Ok(ack),
                AckOutcome::Error(e) => Err(entry_error(e)),
            })
            .collect())
    }

    /// Several run reports in one request; each answered on its own.
    pub async fn report_batch(
        &self,
        agent: AgentId,
        reports: Vec<RunReport>,
    ) -> ClientResult<Vec<ClientResult<ReportedRun>>> {
        let answers: Vec<ReportOutcome> = self
            .post(
                &format!("/api/v1/agents/{agent}/reports"),
                &ReportBatch { reports },
            )
            .await?;
        Ok(answers
            .into_iter()
            .map(|a| match a {
                ReportOutcome::Ok(run) => Ok(run),
                ReportOutcome::Error(e) => Err(entry_error(e)),
            })
            .collect())
    }

    pub async fn update_run(&self, id: &RunId, update: &RunUpdate) -> ClientResult<Run> {
        self.post(&format!("/api/v1/runs/{id}/state"), update).await
    }

    // Runs and agents.
    pub async fn list_runs(&self, filter: &RunFilter) -> ClientResult<Vec<Run>> {
        self.send(self.request(Method::GET, "/api/v1/runs").query(filter))
            .await
    }

    pub async fn get_run(&self, id: &RunId) -> ClientResult<Run> {
        self.get(&format!("/api/v1/runs/{id}")).await
    }

    pub async fn stop_run(&self, id: &RunId) -> ClientResult<Run> {
        self.post(&format!("/api/v1/runs/{id}/stop"), &serde_json::json!({}))
            .await
    }

    /// A stop whose reason becomes the stopped run's message.
    pub async fn stop_run_because(&self, id: &RunId, reason: &str) -> ClientResult<Run> {
        let body = StopRequest {
            reason: Some(reason.to_string()),
        };
        self.post(&format!("/api/v1/runs/{id}/stop"), &body).await
    }

    // Metrics.
    /// Appends metric records to a run; returns how many the run now has.
    pub async fn append_metrics(&self, id: &RunId, req: &MetricsAppend) -> ClientResult<u64> {
        let answer: serde_json::Value = self
            .post(&format!("/api/v1/runs/{id}/metrics"), req)
            .await?;
        Ok(answer["count"].as_u64().unwrap_or(0))
    }

    pub async fn run_metrics(&self, id: &RunId) -> ClientResult<RunMetrics> {
        self.get(&format!("/api/v1/runs/{id}/metrics")).await
    }

    // Jobs.
    /// Uploads a code archive under its SHA-256 (`sha256:HEX`); returns whether it was new.
    pub async fn upload_artifact(&self, digest: &str, bytes: Vec<u8>) -> ClientResult<bool> {
        let req = self
            .request(
                Method::PUT,
                &format!("/api/v1/artifacts/{}", encode(digest)),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        let answer: serde_json::Value = self.send(req).await?;
        Ok(answer["new"].as_bool().unwrap_or(false))
    }

    /// Prunes (admin): `{items, runs, agents, archives}` removed, or counted with `dry_run`.
    pub async fn prune(
        &self,
        req: &liftoff_types::api::PruneRequest,
    ) -> ClientResult<serde_json::Value> {
        self.post("/api/v1/prune", req).await
    }

    /// The server's limits (`artifact_limit`: the largest archive it takes, in bytes).
    pub async fn limits(&self) -> ClientResult<serde_json::Value> {
        self.get("/api/v1/limits").await
    }

    /// Whether the server already has the archive `digest`.
    pub async fn has_artifact(&self, digest: &str) -> ClientResult<bool> {
        let req = self.request(
            Method::HEAD,
            &format!("/api/v1/artifacts/{}", encode(digest)),
        );
        match self.check(req).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads the archive in the file at `path`, streamed (never whole in memory); `sent`
    /// counts the bytes gone, for a progress bar. Returns whether it was new.
    pub async fn upload_artifact_file(
        &self,
        digest: &str,
        path: &std::path::Path,
        sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> ClientResult<bool> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| ClientError::File {
                context: format!("reading {}", path.display()),
                source,
            })?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let chunks = futures_util::stream::unfold(file, move |mut file| {
            let sent = sent.clone();
            async move {
                let mut buf = vec![0u8; 256 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        Some((Ok::<_, std::io::Error>(buf), file))
                    }
                    Err(e) => Some((Err(e), file)),
                }
            }
        });
        let req = self
            .request(
                Method::PUT,
                &format!("/api/v1/artifacts/{}", encode(digest)),
            )
            .timeout(TRANSFER_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(chunks));
        let answer: serde_json::Value = self.send(req).await?;
        Ok(answer["new"].as_bool().unwrap_or(false))
    }

    /// Downloads an archive into `out` as it arrives (never whole in memory, except through
    /// an in-process server, which answers with whole bodies).
    pub async fn download_artifact_to(
        &self,
        digest: &str,
        out: &mut tokio::fs::File,
    ) -> ClientResult<u64> {
        use tokio::io::AsyncWriteExt;
        let req = self
            .request(
                Method::GET,
                &format!("/api/v1/artifacts/{}", encode(digest)),
            )
            .timeout(TRANSFER_TIMEOUT);
        let mut resp = self.check(req).await?;
        let mut total = 0;
        while let Some(chunk) = resp.chunk().await.map_err(ClientError::Decode)? {
            total += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(|source| ClientError::File {
                    context: "writing the archive".into(),
                    source,
                })?;
        }
        out.flush().await.map_err(|source| ClientError::File {
            context: "writing the archive".into(),
            source,
        })?;
        Ok(total)
    }

    pub async fn download_artifact(&self, digest: &str) -> ClientResult<Vec<u8>> {
        let req = self.request(
            Method::GET,
            &format!("/api/v1/artifacts/{}", encode(digest)),
        );
        let resp = self.check(req).await?;
        Ok(resp.bytes().await.map_err(ClientError::Decode)?.to_vec())
    }

    pub async fn create_job_version(
        &self,
        name: &str,
        spec: &JobSpec,
    ) -> ClientResult<JobVersionCreated> {
        self.post(&format!("/api/v1/jobs/{}/versions", encode(name)), spec)
            .await
    }

    pub async fn list_jobs(&self) -> ClientResult<Vec<JobVersion>> {
        self.get("/api/v1/jobs").await
    }

    pub async fn job_versions(&self, name: &str) -> ClientResult<Vec<JobVersion>> {
        self.get(&format!("/api/v1/jobs/{}", encode(name))).await
    }

    /// One version of a job: `vN`, `N` or `latest`.
    pub async fn job_version(&self, name: &str, version: &str) -> ClientResult<JobVersion> {
        self.get(&format!(
            "/api/v1/jobs/{}/versions/{}",
            encode(name),
            encode(version)
        ))
        .await
    }

    // Sweeps.
    pub async fn create_sweep(&self, req: &CreateSweep) -> ClientResult<Sweep> {
        self.post("/api/v1/sweeps", req).await
    }

    pub async fn list_sweeps(&self) -> ClientResult<Vec<Sweep>> {
        self.get("/api/v1/sweeps").await
    }

    pub async fn get_sweep(&self, id: &str) -> ClientResult<SweepView> {
        self.get(&format!("/api/v1/sweeps/{}", encode(id))).await
    }

    /// The sweep alone, without its runs (cheap: what an agent checks before a run starts).
    pub async fn sweep_state(&self, id: &str) -> ClientResult<Sweep> {
        let view: SweepView = self
            .get(&format!("/api/v1/sweeps/{}?runs=false", encode(id)))
            .await?;
        Ok(view.sweep)
    }

    pub async fn set_sweep_state(
        &self,
        id: &str,
        state: SweepState,
        message: Option<String>,
    ) -> ClientResult<Sweep> {
        let body = SweepStateChange { state, message };
        self.post(&format!("/api/v1/sweeps/{}/state", encode(id)), &body)
            .await
    }

    pub async fn enqueue_sweep_run(&self, id: &str, req: &SweepRunRequest) -> ClientResult<Item> {
        self.post(&format!("/api/v1/sweeps/{}/runs", encode(id)), req)
            .await
    }

    pub async fn list_agents(&self) -> ClientResult<Vec<Agent>> {
        self.get("/api/v1/agents").await
    }

    // Tokens.
    pub async fn create_token(&self, req: &CreateTokenRequest) -> ClientResult<CreatedToken> {
        self.post("/api/v1/tokens", req).await
    }

    /// A link (a path on this server) that opens the dashboard signed in, for 2 minutes.
    pub async fn login_link(&self) -> ClientResult<String> {
        let answer: serde_json::Value = self
            .post("/api/v1/login-links", &serde_json::json!({}))
            .await?;
        Ok(answer["path"].as_str().unwrap_or("/").to_string())
    }

    pub async fn list_tokens(&self) -> ClientResult<Vec<TokenInfo>> {
        self.get("/api/v1/tokens").await
    }

    pub async fn delete_token(&self, id: i64) -> ClientResult<()> {
        self.check(self.request(Method::DELETE, &format!("/api/v1/tokens/{id}")))
            .await
            .map(drop)
    }
}

fn entry_error(e: EntryError) -> ClientError {
    ClientError::Api {
        status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body: ErrorBody { error: e.error },
    }
}

/// An open, streaming read of a run's output.
pub struct LogFollower {
    resp: reqwest::Response,
}

impl LogFollower {
    /// The next piece of output; `None` once the run has ended and all was read.
    pub async fn next(&mut self) -> ClientResult<Option<Vec<u8>>> {
        let chunk = self.resp.chunk().await.map_err(ClientError::Decode)?;
        Ok(chunk.map(|c| c.to_vec()))
    }
}

/// Percent-encodes one path segment: names come from users and must not change the route.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment from user input, percent-encoded so that it stays one segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
