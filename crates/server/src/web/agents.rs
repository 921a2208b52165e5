//! `/agents`: every agent with its status, heartbeat age, queues and the runner each uses,
//! slots (shared by those runners) and the items it is working on.

use super::session::Viewer;
use super::{ago, badge};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};

pub async fn page(viewer: Viewer, State(state): State<AppState>) -> Response {
    super::page(&state, &viewer, "Agents", "/agents", html! {}).await
}

pub async fn live(state: &AppState) -> Result<Markup, ApiError> {
    let mut agents = state.store.list_agents().await?;
    // Which runner each queue uses: an agent's slots are shared by the runners of its queues.
    let runners: std::collections::HashMap<String, String> = state
        .store
        .list_queues()
        .await?
        .into_iter()
        .map(|q| (q.name, q.resource.to_string()))
        .collect();
    // Live ones first, then the most recently heard from.
    agents.sort_by_key(|a| {
        (
            matches!(
                a.status,
                liftoff_types::AgentStatus::Lost | liftoff_types::AgentStatus::Stopped
            ),
            -a.heartbeat_at_ms,
        )
    });
    Ok(html! {
        h1 { "Agents" }
        @if agents.is_empty() {
            p.empty { "No agent has registered: " code { "liftoff agent -q QUEUE" } " starts one." }
        } @else {
            table.agents {
                thead { tr { th { "Agent" } th { "Host" } th { "Status" } th { "Heard from" } th { "Queues (runner)" } th.num { "Runs (of slots)" } th.num { "Free" } th { "Working on" } th { "Version" } } }
                tbody {
                    @for a in &agents {
                        tr data-agent=(a.id) {
                            td { (a.name) }
                            td { (a.hostname) }
                            td { (badge(a.status)) @if a.stop_requested { " (stop asked)" } }
                            td { (ago(a.heartbeat_at_ms)) }
                            td { @for q in &a.queues {
                                a href={ "/queues/" (q) } { (q) }
                                @if let Some(r) = runners.get(q) { " (" (r) ")" }
                                " "
                            } }
                            td.num { (a.running_jobs) " of " @if a.max_jobs < 0 { "unlimited" } @else { (a.max_jobs) }
                                @if a.running_schedulers > 0 { " · " (a.running_schedulers) " sweep scheduler(s)" } }
                            td.num { (super::overview::free_slots(a)) }
                            td { @for i in &a.in_flight { a href={ "/items/" (i) } { "#" (i) } " " } }
                            td { (a.version) }
                        }
                    }
                }
            }
        }
    })
}
