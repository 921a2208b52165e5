//! `/`: every queue with its pending and running counts and the agents serving it (a
//! warning on a queue nobody serves), then the latest items.

use super::session::Viewer;
use super::{ago, badge, what};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use liftoff_types::api::ItemFilter;
use liftoff_types::Agent;
use maud::{html, Markup};

pub async fn page(viewer: Viewer, State(state): State<AppState>) -> Response {
    super::page(&state, &viewer, "Overview", "/", html! {}).await
}

/// An agent's free run slots, as text.
pub(crate) fn free_slots(a: &Agent) -> String {
    if a.max_jobs < 0 {
        "unlimited".to_string()
    } else {
        (a.max_jobs - i64::from(a.running_jobs)).max(0).to_string()
    }
}

pub async fn live(state: &AppState, _viewer: &Viewer) -> Result<Markup, ApiError> {
    let queues = state.store.list_queues().await?;
    let agents = state.store.list_agents().await?;
    let mut rows = Vec::with_capacity(queues.len());
    for q in &queues {
        let depth = state.store.get_queue(&q.name, true).await?.depth;
        rows.push((q, depth.unwrap_or_default()));
    }
    let recent = state
        .store
        .list_items(&ItemFilter {
            limit: Some(20),
            ..ItemFilter::default()
        })
        .await?;
    Ok(html! {
        h1 { "Queues" }
        @if queues.is_empty() {
            p.empty { "No queues yet: " code { "liftoff queue create NAME" } " makes one." }
        } @else {
            table.queues {
                thead { tr { th { "Queue" } th { "Runs on" } th.num { "Pending" } th.num { "Running" } th.num { "Ended" } th { "Agents serving it" } } }
                tbody {
                    @for (q, d) in &rows {
                        @let serving: Vec<&Agent> = crate::pending::serving(&agents, &q.name).collect();
                        tr data-queue=(q.name) {
                            td { a href={ "/queues/" (q.name) } { (q.name) } }
                            td { (q.resource) }
                            td.num.pending { (d.pending) }
                            td.num.running { (d.leased + d.claimed) }
                            td.num { (d.finished + d.failed + d.stopped + d.cancelled) }
                            td {
                                @if serving.is_empty() {
                                    span.warning role="status" { "⚠ no agent serves this queue: its items wait until one does" }
                                } @else {
                                    @for a in &serving {
                                        span.agent { (a.name) ": " (free_slots(a)) " free" } " "
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Latest items" }
        @if recent.is_empty() {
            p.empty { "Nothing launched yet: " code { "liftoff launch -q QUEUE -- COMMAND" } }
        } @else {
            table.items {
                thead { tr { th { "Item" } th { "Queue" } th { "State" } th { "Command" } th { "Enqueued" } } }
                tbody {
                    @for i in &recent {
                        tr data-item=(i.id) {
                            td { a href={ "/items/" (i.id) } { "#" (i.id) } }
                            td { a href={ "/queues/" (i.queue) } { (i.queue) } }
                            td { (badge(i.state)) }
                            td.what { (what(i)) }
                            td { (ago(i.created_at_ms)) }
                        }
                    }
                }
            }
        }
    })
}
