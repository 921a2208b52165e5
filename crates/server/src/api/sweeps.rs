//! Sweep routes: create (the config checked with every problem named by key path, the
//! scheduler item enqueued with it), list, show (its runs with their parameters and metric,
//! and the best so far), state changes (users pause, resume, cancel, finish; the scheduler
//! starts, finishes or crashes it), and the scheduler's enqueue of a run by index.

use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::extract::{Body, Path, Query};
use crate::state::AppState;
use crate::wake::{agent_key, queue_key};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use liftoff_store::{NewItem, NewSweep, NewSweepRun};
use liftoff_sweep::SweepConfig;
use liftoff_types::api::{ErrorBody, FieldError, ItemFilter};
use liftoff_types::sweep::{
    check_sweep_id, CreateSweep, RunMetrics, SweepRun, SweepRunRequest, SweepStateChange, SweepView,
};
use liftoff_types::{now_ms, Item, ItemKind, LaunchSpec, Priority, Sweep, SweepState};
use rand::Rng;

const DEFAULT_CONCURRENCY: u32 = 4;
const MAX_CONCURRENCY: u32 = 1000;
/// Largest sweep config, serialized.
const MAX_CONFIG: usize = 256 * 1024;
const MAX_MESSAGE: usize = 16 * 1024;

/// The config's problems as field errors under `config.`.
fn config_problems(problems: Vec<String>) -> ApiError {
    ApiError::invalid(
        problems
            .into_iter()
            .map(|p| {
                let (path, rule) = p.split_once(": ").unwrap_or(("", p.as_str()));
                FieldError {
                    field: format!("config.{path}"),
                    message: rule.to_string(),
                    rule: None,
                }
            })
            .collect(),
    )
}

fn parse_config(sweep: &Sweep) -> Result<SweepConfig, ApiError> {
    SweepConfig::parse(&sweep.config).map_err(config_problems)
}

fn check_id(id: &str) -> Result<(), ApiError> {
    check_sweep_id(id).map_err(|e| ApiError::not_found(format!("sweep: {e}")))
}

/// A sweep must say what its runs run: a `job` this server has, or a `program` (needed by
/// W&B's default command and any command that names `${program}`).
/// Checks the sweep names something to run. For a job, returns its version's reference
/// (`name:vN`): a sweep's runs all run the version that was the latest at its creation, so
/// a version made mid-sweep does not change what the later runs compare.
async fn check_runs_something(
    state: &AppState,
    config: &SweepConfig,
    raw: &serde_json::Value,
) -> Result<Option<String>, ApiError> {
    let field = |f: &str, m: String| liftoff_types::api::FieldError {
        field: f.into(),
        message: m,
        rule: None,
    };
    if let Some(job) = raw.get("job").and_then(|j| j.as_str()) {
        let r: liftoff_types::job::JobRef = job
            .parse()
            .map_err(|e: String| ApiError::invalid(vec![field("config.job", e)]))?;
        return match state.store.get_job_version(&r.name, r.version).await {
            Ok(version) => Ok(Some(version.reference())),
            Err(liftoff_store::StoreError::NotFound { .. }) => Err(ApiError::invalid(vec![field(
                "config.job",
                format!("no job {job} on this server (liftoff job list shows them)"),
            )])),
            Err(e) => Err(e.into()),
        };
    }
    let needs_program = config
        .command
        .as_ref()
        .is_none_or(|words| words.iter().any(|w| w.contains("${program}")));
    if config.program.is_none() && needs_program {
        return Err(ApiError::invalid(vec![field(
            "config",
            "says neither what to run: give `program` (a script) or `job`".into(),
        )]));
    }
    Ok(None)
}

/// Create a sweep on a queue; its scheduler is enqueued there for an agent to run.
#[utoipa::path(post, path = "/api/v1/sweeps", tag = "sweeps", request_body = CreateSweep,
    responses((status = 201, body = Sweep), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Body(req): Body<CreateSweep>,
) -> Result<(StatusCode, Json<Sweep>), ApiError> {
    caller.require(Access::Submit)?;
    let mut problems = Vec::new();
    let concurrency = req.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        problems.push((
            "concurrency".to_string(),
            format!("{concurrency} is not within 1 to {MAX_CONCURRENCY}"),
        ));
    }
    if req.config.to_string().len() > MAX_CONFIG {
        problems.push((
            "config".into(),
            format!("is larger than {MAX_CONFIG} bytes"),
        ));
    }
    ApiError::check(problems)?;
    let config = SweepConfig::parse(&req.config).map_err(config_problems)?;
    let queue = state.store.get_queue(&req.queue, false).await?;
    let mut req = req;
    if let Some(pinned) = check_runs_something(&state, &config, &req.config).await? {
        req.config["job"] = serde_json::Value::String(pinned);
    }
    let id = new_id();
    let scheduler = NewItem {
        queue: queue.name.clone(),
        spec: LaunchSpec {
            sweep_id: Some(id.clone()),
            name: Some(format!("sweep {id} scheduler")),
            ..LaunchSpec::default()
        },
        // Ahead of runs: a sweep whose scheduler waits behind its own runs never starts.
        priority: Priority::High,
        resource_args: serde_json::json!({}),
        kind: ItemKind::Scheduler,
    };
    let sweep = NewSweep {
        id,
        name: config.name.clone(),
        queue: queue.name.clone(),
        config: req.config,
        concurrency,
    };
    let sweep = state.store.create_sweep(sweep, scheduler, now_ms()).await?;
    state
        .wakers
        .wake_one(&queue_key(&queue.name), liftoff_types::ItemKind::Scheduler);
    Ok((StatusCode::CREATED, Json(sweep)))
}

fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// List sweeps, oldest first.
#[utoipa::path(get, path = "/api/v1/sweeps", tag = "sweeps", responses((status = 200, body = Vec<Sweep>)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<Sweep>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(state.store.list_sweeps().await?))
}

/// A sweep with its runs (parameters, state, the sweep's metric and its history) and the
/// best run so far by the sweep's goal (a run's value is the last it reported).
#[utoipa::path(get, path = "/api/v1/sweeps/{id}", tag = "sweeps", params(ShowParams),
    responses((status = 200, body = SweepView), (status = 404, body = ErrorBody)))]
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ShowParams>,
) -> Result<Json<SweepView>, ApiError> {
    caller.require(Access::Read)?;
    check_id(&id)?;
    let sweep = state.store.get_sweep(&id).await?;
    if !params.runs {
        return Ok(Json(SweepView {
            sweep,
            runs: Vec::new(),
            best: None,
        }));
    }
    let config = SweepConfig::parse(&sweep.config).ok();
    let metric = config.as_ref().and_then(|c| c.metric.clone());
    let mut runs = Vec::new();
    let mut after = 0;
    loop {
        let filter = ItemFilter {
            sweep: Some(id.clone()),
            after: Some(after),
            limit: Some(1000),
            ..ItemFilter::default()
        };
        let page = state.store.list_items(&filter).await?;
        let full = page.len() == 1000;
        for item in page {
            after = item.id.0;
            runs.push(sweep_run(&state, item, metric.as_ref().map(|m| m.name.as_str())).await?);
        }
        if !full {
            break;
        }
    }
    let best = metric.and_then(|m| {
        runs.iter()
            .filter_map(|r| r.metric.as_ref().map(|s| (s.last, r)))
            .reduce(|a, b| if m.goal.better(b.0, a.0) { b } else { a })
            .map(|(_, r)| r.clone())
    });
    Ok(Json(SweepView { sweep, runs, best }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ShowParams {
    /// With its runs (default); `false` for the sweep alone (an agent checking its state).
    #[serde(default = "yes")]
    pub runs: bool,
}

fn yes() -> bool {
    true
}

async fn sweep_run(
    state: &AppState,
    item: Item,
    metric: Option<&str>,
) -> Result<SweepRun, ApiError> {
    let mut out = SweepRun {
        index: item.sweep_index.unwrap_or_default(),
        item_id: item.id,
        item_state: item.state,
        run_id: item.run_id.clone(),
        run_state: None,
        stop_requested: false,
        params: serde_json::Value::Object(item.spec.overrides.run_config.clone()),
        metric: None,
        history: Vec::new(),
        message: item.failure.as_ref().map(|f| f.message.clone()),
    };
    if let Some(run_id) = &item.run_id {
        let run = state.store.get_run(run_id).await?;
        out.run_state = Some(run.state);
        out.stop_requested = run.stop_requested && !run.state.is_terminal();
        if out.message.is_none() {
            out.message = run.message;
        }
        if let Some(name) = metric {
            let metrics = RunMetrics::summarize(state.store.read_metrics(run_id).await?);
            out.metric = metrics.summary.get(name).cloned();
            out.history = metrics.history(name);
        }
    }
    Ok(out)
}

/// Change a sweep's state: `paused`, `running` (resume), `cancelled` (its live runs are
/// stopped), `finished` (no new runs; live ones finish); `crashed` from its scheduler.
#[utoipa::path(post, path = "/api/v1/sweeps/{id}/state", tag = "sweeps", request_body = SweepStateChange,
    responses((status = 200, body = Sweep), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_state(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(change): Body<SweepStateChange>,
) -> Result<Json<Sweep>, ApiError> {
    caller.require_steer()?;
    check_id(&id)?;
    if change
        .message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_MESSAGE)
    {
        ApiError::check(vec![(
            "message".into(),
            format!("is longer than {MAX_MESSAGE} bytes"),
        )])?;
    }
    let (sweep, touched) = state
        .store
        .set_sweep_state(&id, change.state, change.message, now_ms())
        .await?;
    for item in touched {
        if let Some(agent) = item.agent_id {
            state.wakers.wake(&agent_key(agent));
        }
    }
    if sweep.state == SweepState::Running {
        // Resumed: its runs that waited in the queue may be leased now.
        state.wakers.wake(&queue_key(&sweep.queue));
    }
    Ok(Json(sweep))
}

/// The scheduler enqueues the sweep's run number `index` (the same index again gives back
/// the same item); refused past `run_cap` or while the sweep is not running.
#[utoipa::path(post, path = "/api/v1/sweeps/{id}/runs", tag = "sweeps", request_body = SweepRunRequest,
    responses((status = 201, body = Item), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn enqueue_run(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<SweepRunRequest>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    caller.require(Access::Work)?;
    check_id(&id)?;
    let sweep = state.store.get_sweep(&id).await?;
    let config = parse_config(&sweep)?;
    let mut spec = req.spec;
    spec.sweep_id = Some(id.clone());
    let item = super::queues::new_item(&state, &sweep.queue, spec, ItemKind::Run).await?;
    let run = NewSweepRun {
        sweep: id,
        index: req.index,
        run_cap: config.run_cap,
        item,
    };
    let item = state.store.enqueue_sweep_run(run, now_ms()).await?;
    state.wakers.wake_one(&queue_key(&item.queue), item.kind);
    Ok((StatusCode::CREATED, Json(item)))
}
