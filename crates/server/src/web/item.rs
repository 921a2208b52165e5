//! `/items/ID` (and `/runs/ID`, which leads there): one item and its latest run — what it
//! runs, its state history with times, attempts and retries, its failure and attached files,
//! its metrics as charts, and its output, the tail shown at once and the rest following live.

use super::chart::{self, Mark, Series};
use super::session::Viewer;
use super::{ago, badge, pretty, span, time, what};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use liftoff_types::{Item, ItemId, ItemKind, RunId};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

/// How much of a run's output a page shows at first (its end); earlier output is paged.
pub const TAIL: u64 = 64 * 1024;
/// One page of earlier output.
const PAGE: u64 = 256 * 1024;
/// Most metric keys charted on one page.
const MAX_CHARTS: usize = 12;

pub async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
) -> Response {
    let item = match state.store.get_item(id).await {
        Ok(item) => item,
        Err(e) => return super::error_page(e.into()),
    };
    let rest = static_part(&state, &item).await;
    super::page(
        &state,
        &viewer,
        &format!("Item {id}"),
        &format!("/items/{id}"),
        rest,
    )
    .await
}

/// `/runs/ID`: the page of the run's item.
pub async fn run_page(
    _viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<RunId>,
) -> Response {
    match state.store.get_run(&id).await {
        Ok(run) => Redirect::to(&format!("/items/{}", run.item_id)).into_response(),
        Err(e) => super::error_page(e.into()),
    }
}

/// What does not change while the page is open: the spec, and the output pane (which the
/// live stream appends to).
async fn static_part(state: &AppState, item: &Item) -> Markup {
    let (tail, start, end) = match &item.run_id {
        Some(run) => tail(state, run).await.unwrap_or_default(),
        None => (String::new(), 0, 0),
    };
    html! {
        section.output {
            h2 { "Output" }
            @if start > 0 {
                p.more { a href={ "/items/" (item.id) "/output?before=" (start) } { "Earlier output (" (start) " bytes before this)" } }
            }
            pre #log data-item=(item.id) data-run=[item.run_id.as_ref()] data-offset=(end) aria-live="polite" { (tail) }
        }
        details {
            summary { "Launch spec and resource args" }
            h3 { "Spec" }
            pre.json { (pretty(&serde_json::to_value(&item.spec).unwrap_or_default())) }
            h3 { "Resource args (the queue's template, filled)" }
            pre.json { (pretty(&item.resource_args)) }
        }
    }
}

/// The last [`TAIL`] bytes of a run's output, with where they start and end.
async fn tail(state: &AppState, run: &RunId) -> Result<(String, u64, u64), ApiError> {
    let len = state.store.log_len(run).await?;
    let start = len.saturating_sub(TAIL);
    let chunk = state.store.read_log(run, start, TAIL as usize).await?;
    // A character cut at the end is left to the live stream, which sends it whole.
    let whole = whole_chars(&chunk.data);
    let end = start + whole as u64;
    Ok((
        String::from_utf8_lossy(&chunk.data[..whole]).into_owned(),
        start,
        end,
    ))
}

/// Where the bytes stop being whole characters: before an incomplete UTF-8 sequence at
/// their end (at most 3 bytes), else their length. Invalid bytes elsewhere do not matter.
pub fn whole_chars(bytes: &[u8]) -> usize {
    for cut in 1..=3.min(bytes.len()) {
        let at = bytes.len() - cut;
        let lead = bytes[at];
        let width = match lead {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            0x80..=0xBF => continue,
            _ => return bytes.len(),
        };
        return if width > cut { at } else { bytes.len() };
    }
    bytes.len()
}

#[derive(Deserialize)]
pub struct Before {
    before: u64,
}

/// `/items/ID/output?before=N`: the page of output that ends at byte `N`, as text.
pub async fn output(
    _viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<ItemId>,
    Query(q): Query<Before>,
) -> Response {
    let item = match state.store.get_item(id).await {
        Ok(item) => item,
        Err(e) => return super::error_page(e.into()),
    };
    let Some(run) = item.run_id else {
        return super::error_page(ApiError::not_found(format!("item {id} has not run")));
    };
    let before = q.before.min(i64::MAX as u64);
    let start = before.saturating_sub(PAGE);
    match state
        .store
        .read_log(&run, start, (before - start) as usize)
        .await
    {
        Ok(chunk) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            chunk.data,
        )
            .into_response(),
        Err(e) => super::error_page(e.into()),
    }
}

pub async fn live(state: &AppState, viewer: &Viewer, id: ItemId) -> Result<Markup, ApiError> {
    let mut item = state.store.get_item(id).await?;
    crate::pending::explain(state.store.as_ref(), std::slice::from_mut(&mut item)).await?;
    let run = match &item.run_id {
        Some(id) => state.store.get_run(id).await.ok(),
        None => None,
    };
    let metrics = match &run {
        Some(run) => state.store.read_metrics(&run.id).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let live_run = run.as_ref().is_some_and(|r| !r.state.is_terminal());
    let agent = match &run {
        Some(r) => state.store.get_agent(r.agent_id).await.ok().map(|a| a.name),
        None => None,
    };
    Ok(html! {
        h1 { "Item " (item.id) " " (badge(item.state)) }
        p.facts {
            "on queue " a href={ "/queues/" (item.queue) } { (item.queue) } " · "
            (format!("{:?}", item.priority).to_lowercase()) " priority"
            @if let Some(retried) = attempts(&item) { " · " span.attempts { (retried) } }
            @if let Some(sweep) = &item.spec.sweep_id { " · sweep " a href={ "/sweeps/" (sweep) } { (sweep) } }
        }
        p.what { "Runs " code { (what(&item)) } }
        div.actions {
            @if live_run && viewer.may_steer() && !run.as_ref().is_some_and(|r| r.stop_requested) {
                (super::action(viewer, &format!("/items/{}/stop", item.id), "Stop", "danger"))
            }
            @if !item.state.is_terminal() && !live_run && viewer.may_submit() {
                (super::action(viewer, &format!("/items/{}/cancel", item.id), "Cancel", "danger"))
            }
            @if item.state.is_terminal() && item.kind == ItemKind::Run && viewer.may_submit() {
                (super::action(viewer, &format!("/items/{}/rerun", item.id), "Run again", ""))
            }
        }
        @if let Some(reason) = &item.pending_reason {
            p.reason role="status" { "Waiting: " (super::prose(reason)) }
        }
        @if let Some(f) = &item.failure {
            section.failure {
                h2 { "Failed in the " (f.phase) " phase" }
                pre.message { (f.message) }
                @if let Some(code) = run.as_ref().and_then(|r| r.exit_code) { p { "Exit code " strong.exit { (code) } } }
                @if !f.files.is_empty() {
                    p { "Attached: " @for name in &f.files {
                        a href={ "/items/" (item.id) "/files/" (super::session::encode(name)) } { (name) } " "
                    } }
                }
            }
        }
        h2 { "History" }
        ol.history {
            li { "enqueued " (ago(item.created_at_ms)) " (" (time(item.created_at_ms)) ")" }
            @if let Some(run) = &run {
                li { "taken by agent " (agent.as_deref().unwrap_or("?")) " as run " code { (run.id) } " " (ago(run.created_at_ms)) }
                @if let Some(at) = run.started_at_ms { li { "started " (ago(at)) " (" (time(at)) ")" } }
            }
            @for w in &item.warnings { li.warning { "⚠ " (w.message) " " (ago(w.at_ms)) } }
            @for (cause, n) in &item.retries { li { "retried " (n) " time(s) after " (cause) } }
            @if let Some(at) = item.ended_at_ms.or(run.as_ref().and_then(|r| r.ended_at_ms))
                .or(item.state.is_terminal().then_some(item.updated_at_ms)) {
                li { "ended " (badge(item.state)) " " (ago(at)) " (" (time(at)) ")"
                    @if let Some(start) = item.started_at_ms { ", after " (span(at - start)) } }
            }
        }
        @if let Some(run) = &run {
            h2 { "Run " code { (run.id) } " " (badge(run.state)) }
            dl.run {
                dt { "Agent" } dd { (agent.as_deref().unwrap_or("?")) " (" (run.agent_id) ")" }
                @if let Some(code) = run.exit_code { dt { "Exit code" } dd.exit { (code) } }
                @if let Some(m) = &run.message { dt { "Message" } dd { (m) } }
                @if run.stop_requested && !run.state.is_terminal() { dt { "Stop" } dd { "asked; the agent is stopping it" } }
                dt { "Backend handle" } dd { code { (serde_json::to_string(&run.handle).unwrap_or_default()) } }
            }
        }
        (charts(&metrics))
        @if let Some(config) = run_config(&item) {
            h2 { "Config" }
            pre.json { (config) }
        }
    })
}

/// `retried 2 times (exit-code 1, lost 1)`; nothing for an item never retried.
fn attempts(i: &Item) -> Option<String> {
    if i.attempts == 0 {
        return None;
    }
    let times = if i.attempts == 1 {
        "once".to_string()
    } else {
        format!("{} times", i.attempts)
    };
    if i.retries.is_empty() {
        return Some(format!("retried {times}"));
    }
    let causes: Vec<String> = i.retries.iter().map(|(c, n)| format!("{c} {n}")).collect();
    Some(format!("retried {times} ({})", causes.join(", ")))
}

fn run_config(item: &Item) -> Option<String> {
    let config = &item.spec.overrides.run_config;
    (!config.is_empty()).then(|| pretty(&Value::Object(config.clone())))
}

/// One chart per numeric metric key, over its steps.
fn charts(records: &[serde_json::Map<String, Value>]) -> Markup {
    let mut keys: Vec<String> = Vec::new();
    let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for (i, rec) in records.iter().enumerate() {
        let step = liftoff_types::sweep::STEP_KEYS
            .iter()
            .find_map(|k| rec.get(*k).and_then(Value::as_f64))
            .unwrap_or(i as f64);
        for (k, v) in rec {
            if k.starts_with('_') || liftoff_types::sweep::STEP_KEYS.contains(&k.as_str()) {
                continue;
            }
            let Some(v) = v.as_f64() else { continue };
            if !series.contains_key(k) {
                if keys.len() >= MAX_CHARTS {
                    continue;
                }
                keys.push(k.clone());
            }
            series.entry(k.clone()).or_default().push((step, v));
        }
    }
    if keys.is_empty() {
        return html! {};
    }
    html! {
        h2 { "Metrics" }
        div.charts {
            @for k in &keys {
                (super::raw_svg(chart::svg(k, "step", k, &[Series { label: k.clone(), mark: Mark::Line, points: series[k].clone() }])))
            }
        }
    }
}

/// A run's item, for the live stream: its current run id.
pub async fn current_run(state: &AppState, id: ItemId) -> Option<RunId> {
    state.store.get_item(id).await.ok().and_then(|i| i.run_id)
}

/// `/items/ID/files/NAME`: a file attached to the item's failure, as text.
pub async fn file(
    _viewer: Viewer,
    State(state): State<AppState>,
    Path((id, name)): Path<(ItemId, String)>,
) -> Response {
    match state.store.item_file(id, &name).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => super::error_page(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::whole_chars;

    #[test]
    fn a_character_cut_at_the_end_is_held_back() {
        let e = "é".as_bytes(); // 2 bytes
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(whole_chars(b"abc"), 3);
        assert_eq!(whole_chars(&[b'a', e[0]]), 1);
        assert_eq!(whole_chars(&[b'a', e[0], e[1]]), 3);
        assert_eq!(whole_chars(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(
            whole_chars(&[0xFF, b'a', euro[0]]),
            2,
            "invalid bytes before do not matter"
        );
        assert_eq!(whole_chars(&[0x80, 0x80, 0x80, 0x80]), 4);
        assert_eq!(whole_chars(&[]), 0);
    }
}
