//! `/queues/NAME`: the queue's pending items in the order they will be taken, each with its
//! position, priority and pending reason (the API's and the CLI's), its live and latest
//! ended items, and its config template.

use super::session::Viewer;
use super::{ago, badge, pretty, what};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use liftoff_types::api::ItemFilter;
use liftoff_types::{Item, ItemState};
use maud::{html, Markup};

/// Most pending items a page lists (the rest are counted).
const SHOWN: usize = 200;

pub async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    let path = format!("/queues/{}", super::session::encode(&name));
    // Outside the live part: a reader's open <details> stays open.
    let rest = match state.store.get_queue(&name, false).await {
        Ok(queue) => html! {
            details {
                summary { "Config template" }
                pre.json { (pretty(&queue.config)) }
                @if !queue.template_variables.is_empty() {
                    h3 { "Template variables" }
                    pre.json { (pretty(&serde_json::to_value(&queue.template_variables).unwrap_or_default())) }
                }
            }
        },
        Err(_) => html! {},
    };
    super::page(&state, &viewer, &format!("Queue {name}"), &path, rest).await
}

async fn items(
    state: &AppState,
    name: &str,
    item_state: ItemState,
    limit: u32,
) -> Result<Vec<Item>, ApiError> {
    Ok(state
        .store
        .list_items(&ItemFilter {
            queue: Some(name.to_string()),
            state: Some(item_state),
            limit: Some(limit),
            ..ItemFilter::default()
        })
        .await?)
}

pub async fn live(state: &AppState, viewer: &Viewer, name: &str) -> Result<Markup, ApiError> {
    let queue = state.store.get_queue(name, true).await?;
    let depth = queue.depth.clone().unwrap_or_default();
    // The front of the queue in lease order (a high-priority item enqueued late may be
    // first), read along the store's pending index.
    let mut pending = state.store.pending_front(name, SHOWN as u32).await?;
    crate::pending::explain(state.store.as_ref(), &mut pending).await?;
    let mut live = items(state, name, ItemState::Claimed, 100).await?;
    live.extend(items(state, name, ItemState::Leased, 100).await?);
    let recent: Vec<Item> = state
        .store
        .list_items(&ItemFilter {
            queue: Some(name.to_string()),
            limit: Some(60),
            ..ItemFilter::default()
        })
        .await?
        .into_iter()
        .filter(|i| i.state.is_terminal())
        .take(30)
        .collect();
    let agents = state.store.list_agents().await?;
    let serving: Vec<_> = crate::pending::serving(&agents, &queue.name).collect();
    Ok(html! {
        h1 { "Queue " (queue.name) }
        p.facts {
            "runs on " strong { (queue.resource) } " · "
            (depth.pending) " pending · " (depth.leased + depth.claimed) " running · "
            (depth.finished) " finished · " (depth.failed) " failed · "
            (depth.stopped) " stopped · " (depth.cancelled) " cancelled · "
            @if let Some(cap) = queue.max_concurrency { "at most " (cap) " live runs · " }
            @if queue.prioritization { "priorities on · " }
            @if queue.requeue_lost { "a run lost with its agent starts again" } @else { "a run lost with its agent fails" }
        }
        @if serving.is_empty() {
            p.warning role="status" { "⚠ no agent serves this queue: its items wait until one does. Start one: "
                code { "liftoff agent -q " (queue.name) } " (beside " code { "liftoff up" } ", add " code { "--state-dir DIR" } ")" }
        } @else {
            p { "Served by " @for a in &serving { span.agent { (a.name) ": " (super::overview::free_slots(a)) " free" } " " } }
        }
        h2 { "Pending, in the order they will start" }
        @if pending.is_empty() {
            p.empty { "Nothing pending." }
        } @else {
            table.pending {
                thead { tr { th.num { "Ahead of it" } th { "Item" } th { "Priority" } th { "Command" } th { "Why it waits" } th { "Enqueued" } @if viewer.may_submit() { th {} } } }
                tbody {
                    @for i in &pending {
                        tr data-item=(i.id) {
                            td.num { @match i.position { Some(0) => "next", Some(p) => (p), None => "" } }
                            td { a href={ "/items/" (i.id) } { "#" (i.id) } }
                            td { (format!("{:?}", i.priority).to_lowercase()) }
                            td.what { (what(i)) }
                            td.reason { (super::prose(i.pending_reason.as_deref().unwrap_or(""))) }
                            td { (ago(i.created_at_ms)) }
                            @if viewer.may_submit() { td { (super::action(viewer, &format!("/items/{}/cancel", i.id), "Cancel", "danger")) } }
                        }
                    }
                }
            }
            @if depth.pending as usize > pending.len() {
                p.more { "and " (depth.pending as usize - pending.len()) " more" }
            }
        }
        h2 { "Running" }
        @if live.is_empty() { p.empty { "Nothing running." } } @else {
            table.running {
                thead { tr { th { "Item" } th { "State" } th { "Command" } th { "Started" } } }
                tbody { @for i in &live {
                    tr data-item=(i.id) {
                        td { a href={ "/items/" (i.id) } { "#" (i.id) } }
                        td { (badge(i.state)) }
                        td.what { (what(i)) }
                        td { @if let Some(at) = i.started_at_ms { (ago(at)) } }
                    }
                } }
            }
        }
        h2 { "Latest ended" }
        @if recent.is_empty() { p.empty { "Nothing has ended yet." } } @else {
            table.ended {
                thead { tr { th { "Item" } th { "State" } th { "Command" } th { "Ended" } } }
                tbody { @for i in &recent {
                    tr data-item=(i.id) {
                        td { a href={ "/items/" (i.id) } { "#" (i.id) } }
                        td { (badge(i.state)) }
                        td.what { (what(i)) }
                        td { @if let Some(at) = i.ended_at_ms { (ago(at)) } }
                    }
                } }
            }
        }
    })
}
