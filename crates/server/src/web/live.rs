//! `/events`: a page's live part, pushed as server-sent events.
//!
//! The stream waits on [`crate::wake::Wakers::changes`] (every write through the API, every
//! wake from another server, a reaper pass that changed something), then after a short
//! pause (so a burst of writes makes one render) renders the page's live part again and
//! sends it when it differs from the last one sent (`live`). It also re-renders every
//! [`TICK`], for what changes without a write here (ages, another replica's writes). On an
//! item's page it follows the item's current run's output (`log`, each event's id the run
//! and the offset it reaches, so a reconnecting browser resumes where it was; `logreset`
//! when a retry starts a new run). A stream lasts [`LIFETIME`], then the browser reconnects
//! and its session is checked again (a revoked token stops seeing pages).

use super::session::{NoSession, Viewer};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use liftoff_types::{ItemId, RunId};
use serde::Deserialize;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Re-render at least this often.
const TICK: Duration = Duration::from_secs(2);
/// Writes within this of the first make one render.
const SETTLE: Duration = Duration::from_millis(100);
/// Renders of one stream are at least this far apart: a busy server (a write every few
/// milliseconds) costs each open page a few renders a second, not one per write.
const MIN_GAP: Duration = Duration::from_millis(400);
const LIFETIME: Duration = Duration::from_secs(300);
/// Most output one event carries.
const LOG_CHUNK: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct EventsQuery {
    page: String,
    /// Follow this item's output.
    item: Option<ItemId>,
    /// The run and offset the page's output pane already shows.
    run: Option<RunId>,
    #[serde(default)]
    offset: u64,
}

struct Follow {
    item: ItemId,
    run: Option<RunId>,
    offset: u64,
    /// The start of a character split across two reads.
    carry: Vec<u8>,
}

struct Live {
    state: AppState,
    viewer: Viewer,
    page: String,
    changes: tokio::sync::watch::Receiver<u64>,
    last: Option<u64>,
    follow: Option<Follow>,
    out: VecDeque<Event>,
    first: bool,
    until: Instant,
    rendered: Instant,
}

pub async fn events(
    viewer: Result<Viewer, NoSession>,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    let Ok(viewer) = viewer else {
        return (StatusCode::UNAUTHORIZED, "log in again").into_response();
    };
    if q.page.len() > 512 || !q.page.starts_with('/') {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "page: must be a path of this site",
        )
            .into_response();
    }
    if i64::try_from(q.offset).is_err() {
        return (StatusCode::UNPROCESSABLE_ENTITY, "offset: out of range").into_response();
    }
    let mut follow = q.item.map(|item| Follow {
        item,
        run: q.run.clone(),
        offset: q.offset,
        carry: Vec::new(),
    });
    // A reconnecting browser says how far its output pane got.
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| id.rsplit_once(':'))
        .and_then(|(run, offset)| Some((run.parse::<RunId>().ok()?, offset.parse::<i64>().ok()?)))
        .filter(|(_, offset)| *offset >= 0);
    if let (Some(f), Some((run, offset))) = (follow.as_mut(), resumed) {
        f.run = Some(run);
        f.offset = offset as u64;
    }
    let live = Live {
        changes: state.wakers.changes(),
        state,
        viewer,
        page: q.page,
        last: None,
        follow,
        out: VecDeque::new(),
        first: true,
        until: Instant::now() + LIFETIME,
        rendered: Instant::now(),
    };
    let stream = futures_util::stream::unfold(live, next);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn next(mut l: Live) -> Option<(Result<Event, std::convert::Infallible>, Live)> {
    loop {
        if let Some(event) = l.out.pop_front() {
            return Some((Ok(event), l));
        }
        if Instant::now() >= l.until {
            return None;
        }
        if !l.first {
            tokio::select! {
                changed = l.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let gap = MIN_GAP.saturating_sub(l.rendered.elapsed());
                    tokio::time::sleep(SETTLE.max(gap)).await;
                }
                _ = tokio::time::sleep(TICK) => {}
            }
            l.changes.borrow_and_update();
        }
        l.first = false;
        l.rendered = Instant::now();
        render(&mut l).await;
        follow(&mut l).await;
    }
}

async fn render(l: &mut Live) {
    match super::fragment(&l.state, &l.viewer, &l.page).await {
        Ok(markup) => {
            let html = markup.into_string();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            html.hash(&mut h);
            let h = h.finish();
            if l.last != Some(h) {
                l.last = Some(h);
                if let Ok(e) = Event::default().event("live").json_data(html) {
                    l.out.push_back(e);
                }
            }
        }
        Err(e) => {
            if let Ok(e) = Event::default().event("problem").json_data(e.message) {
                l.out.push_back(e);
            }
        }
    }
}

async fn follow(l: &mut Live) {
    let Some(f) = l.follow.as_mut() else { return };
    let current = super::item::current_run(&l.state, f.item).await;
    if current != f.run {
        if f.run.is_some() {
            l.out
                .push_back(Event::default().event("logreset").data("new run"));
        }
        f.run = current;
        f.offset = 0;
        f.carry.clear();
    }
    let Some(run) = f.run.clone() else { return };
    // A few chunks per pass, so a page opened on a long run catches up without one
    // enormous event.
    for _ in 0..4 {
        let Ok(chunk) = l.state.store.read_log(&run, f.offset, LOG_CHUNK).await else {
            return;
        };
        if chunk.data.is_empty() && (f.carry.is_empty() || !chunk.ended) {
            return;
        }
        f.offset = chunk.next_offset;
        let mut bytes = std::mem::take(&mut f.carry);
        bytes.extend_from_slice(&chunk.data);
        // A character cut by the read waits for its rest, unless the run has ended.
        let whole = if chunk.ended && chunk.data.is_empty() {
            bytes.len()
        } else {
            super::item::whole_chars(&bytes)
        };
        let text = String::from_utf8_lossy(&bytes[..whole]).into_owned();
        f.carry = bytes[whole..].to_vec();
        let shown = f.offset - f.carry.len() as u64;
        if let Ok(e) = Event::default()
            .event("log")
            .id(format!("{run}:{shown}"))
            .json_data(text)
        {
            l.out.push_back(e);
        }
    }
}
