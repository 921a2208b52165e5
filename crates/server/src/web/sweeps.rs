//! `/sweeps` and `/sweeps/ID`: a sweep's state and best run, its metric per run with the
//! best so far, each parameter against the metric, and its runs; pause, resume and cancel.

use super::chart::{self, Mark, Series};
use super::session::Viewer;
use super::{ago, badge};
use crate::api::sweeps::ShowParams;
use crate::error::ApiError;
use crate::extract::{Path as ApiPath, Query as ApiQuery};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use liftoff_sweep::SweepConfig;
use liftoff_types::sweep::SweepView;
use liftoff_types::SweepState;
use maud::{html, Markup};
use serde_json::Value;

/// Most parameters given a chart of their own.
const MAX_PARAM_CHARTS: usize = 8;

pub async fn list_page(viewer: Viewer, State(state): State<AppState>) -> Response {
    super::page(&state, &viewer, "Sweeps", "/sweeps", html! {}).await
}

pub async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/sweeps/{}", super::session::encode(&id));
    super::page(&state, &viewer, &format!("Sweep {id}"), &path, html! {}).await
}

pub async fn list_live(state: &AppState) -> Result<Markup, ApiError> {
    let mut sweeps = state.store.list_sweeps().await?;
    sweeps.sort_by_key(|s| -s.created_at_ms);
    Ok(html! {
        h1 { "Sweeps" }
        @if sweeps.is_empty() {
            p.empty { "No sweeps yet: " code { "liftoff sweep create -q QUEUE sweep.yaml" } }
        } @else {
            table.sweeps {
                thead { tr { th { "Sweep" } th { "State" } th { "Queue" } th { "Method" } th { "Created" } } }
                tbody { @for s in &sweeps {
                    tr {
                        td { a href={ "/sweeps/" (s.id) } { (s.name.as_deref().unwrap_or(&s.id)) } }
                        td { (badge(s.state)) }
                        td { a href={ "/queues/" (s.queue) } { (s.queue) } }
                        td { (s.config.get("method").and_then(Value::as_str).unwrap_or("")) }
                        td { (ago(s.created_at_ms)) }
                    }
                } }
            }
        }
    })
}

pub async fn live(state: &AppState, viewer: &Viewer, id: &str) -> Result<Markup, ApiError> {
    let axum::Json(view) = crate::api::sweeps::show(
        viewer.caller(),
        State(state.clone()),
        ApiPath(id.to_string()),
        ApiQuery(ShowParams { runs: true }),
    )
    .await?;
    let SweepView { sweep, runs, best } = view;
    let config = SweepConfig::parse(&sweep.config).ok();
    let metric = config.as_ref().and_then(|c| c.metric.clone());
    let metric_name = metric
        .as_ref()
        .map_or("metric".to_string(), |m| m.name.clone());
    // The metric per run in sweep order, and the best so far after each.
    let mut points = Vec::new();
    let mut best_line = Vec::new();
    let mut best_so_far: Option<f64> = None;
    let mut ordered: Vec<_> = runs.iter().collect();
    ordered.sort_by_key(|r| r.index);
    // Only runs that ended: a running run's latest value is not its result.
    for r in ordered.iter().filter(|r| r.item_state.is_terminal()) {
        let Some(v) = r.metric.as_ref().map(|m| m.last) else {
            continue;
        };
        points.push((f64::from(r.index), v));
        best_so_far = Some(match (best_so_far, &metric) {
            (Some(b), Some(m)) if !m.goal.better(v, b) => b,
            _ => v,
        });
        if let Some(b) = best_so_far {
            best_line.push((f64::from(r.index), b));
        }
    }
    let main = chart::svg(
        &format!("{metric_name} per run"),
        "run (in sweep order)",
        &metric_name,
        &[
            Series {
                label: format!("{metric_name} of a run"),
                mark: Mark::Dots,
                points,
            },
            Series {
                label: "best so far".into(),
                mark: Mark::Dashed,
                points: best_line,
            },
        ],
    );
    // Each numeric parameter against the metric.
    let mut names: Vec<String> = Vec::new();
    for r in &runs {
        if let Some(obj) = r.params.as_object() {
            for (k, v) in obj {
                if v.is_number() && !names.contains(k) && names.len() < MAX_PARAM_CHARTS {
                    names.push(k.clone());
                }
            }
        }
    }
    let params: Vec<String> = names
        .iter()
        .map(|name| {
            let pts: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.item_state.is_terminal())
                .filter_map(|r| Some((r.params.get(name)?.as_f64()?, r.metric.as_ref()?.last)))
                .collect();
            chart::svg(
                &format!("{metric_name} against {name}"),
                name,
                &metric_name,
                &[Series {
                    label: "a run".into(),
                    mark: Mark::Dots,
                    points: pts,
                }],
            )
        })
        .collect();
    let live = !sweep.state.is_terminal();
    Ok(html! {
        h1 { "Sweep " (sweep.name.as_deref().unwrap_or(&sweep.id)) " " (badge(sweep.state)) }
        p.facts {
            "on queue " a href={ "/queues/" (sweep.queue) } { (sweep.queue) } " · "
            (sweep.config.get("method").and_then(Value::as_str).unwrap_or("?")) " search · "
            @if let Some(m) = &metric { (format!("{:?}", m.goal).to_lowercase()) " " code { (m.name) } " · " }
            "at most " (sweep.concurrency) " at once · " (runs.len())
            @if let Some(cap) = sweep.config.get("run_cap").and_then(Value::as_u64) { " of " (cap) } " runs"
            @if let Some(job) = sweep.config.get("job").and_then(Value::as_str) { " · job " code { (job) } }
        }
        @if let Some(m) = &sweep.message { p.message { (m) } }
        @if live && viewer.may_steer() {
            div.actions {
                @if sweep.state == SweepState::Paused {
                    (state_button(viewer, &sweep.id, "running", "Resume"))
                } @else {
                    (state_button(viewer, &sweep.id, "paused", "Pause"))
                }
                (state_button(viewer, &sweep.id, "finished", "Finish (no new runs)"))
                (state_button(viewer, &sweep.id, "cancelled", "Cancel sweep"))
            }
        }
        @if let Some(b) = &best {
            p.best { "Best so far: " a href={ "/items/" (b.item_id) } { "item " (b.item_id) } " (run " (b.index) " of the sweep) with "
                code { (metric_name) " = " (b.metric.as_ref().map_or(String::new(), |m| super::num(m.last))) } " at "
                code { (serde_json::to_string(&b.params).unwrap_or_default()) } }
        }
        div.charts #sweep-chart { (super::raw_svg(main)) }
        @if !params.is_empty() {
            h2 { "Parameters against " (metric_name) }
            div.charts { @for svg in params { (super::raw_svg(svg)) } }
        }
        h2 { "Runs" }
        table.runs {
            thead { tr { th.num { "#" } th { "Item" } th { "State" } th { "Parameters" } th.num { (metric_name) } } }
            tbody { @for r in &ordered {
                tr {
                    td.num { (r.index) }
                    td { a href={ "/items/" (r.item_id) } { "item " (r.item_id) } }
                    td { (badge(r.item_state)) @if r.stop_requested { " (stopping)" } }
                    td { code { (serde_json::to_string(&r.params).unwrap_or_default()) } }
                    td.num { @if let Some(m) = &r.metric { (super::num(m.last)) } }
                }
            } }
        }
    })
}

fn state_button(viewer: &Viewer, id: &str, to: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/sweeps/" (id) "/state" } {
            (super::csrf(viewer))
            input type="hidden" name="state" value=(to);
            button type="submit" { (label) }
        }
    }
}
