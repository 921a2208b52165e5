//! The dashboard: HTML pages served by the server itself, for people watching their queues,
//! runs, agents, sweeps and jobs in a browser.
//!
//! Pages are rendered here (with `maud`, escaped by default) from the same store reads and
//! the same pending reasons the API gives; actions (stop, cancel, rerun, a sweep's state, a
//! launch) call the API's own handlers, so their rules are the API's. Nothing is fetched
//! from elsewhere: the stylesheet and the one small script are compiled into the binary.
//!
//! Each page has a live part (`#live`), re-rendered on the server and pushed over
//! server-sent events when something changes (see [`live`]); a run's output is appended as it
//! comes. Who may see and do what: [`session`].

mod actions;
mod agents;
mod chart;
mod item;
mod jobs;
mod live;
mod overview;
mod queue;
pub mod session;
mod sweeps;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use liftoff_types::Millis;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use session::Viewer;

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The dashboard's routes (merged beside `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(session::login_page).post(session::login))
        .route("/login/link", get(session::open_link))
        .route("/logout", post(session::logout))
        .route("/queues/{name}", get(queue::page))
        .route("/items/{id}", get(item::page))
        .route("/items/{id}/output", get(item::output))
        .route("/items/{id}/files/{name}", get(item::file))
        .route("/items/{id}/stop", post(actions::stop))
        .route("/items/{id}/cancel", post(actions::cancel))
        .route("/items/{id}/rerun", post(actions::rerun))
        .route("/runs/{id}", get(item::run_page))
        .route("/agents", get(agents::page))
        .route("/sweeps", get(sweeps::list_page))
        .route("/sweeps/{id}", get(sweeps::page))
        .route("/sweeps/{id}/state", post(actions::sweep_state))
        .route("/jobs", get(jobs::list_page))
        .route("/jobs/{name}", get(jobs::page).post(jobs::launch))
        .route("/events", get(live::events))
        .route("/assets/{name}", get(asset))
        .layer(axum::middleware::map_response(secure_headers))
}

/// No framing, no scripts or styles but ours, no referrer leaving the site (`same-origin`:
/// with `no-referrer` a browser sends `Origin: null` on our own form posts).
async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return error_page(ApiError::not_found("no such asset")),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The live part of the page at `path`, as its page renders it.
pub(crate) async fn fragment(
    state: &AppState,
    viewer: &Viewer,
    path: &str,
) -> Result<Markup, ApiError> {
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match parts.as_slice() {
        [""] => overview::live(state, viewer).await,
        ["queues", name] => queue::live(state, viewer, name).await,
        ["items", id] => {
            let id = id
                .parse()
                .map_err(|_| ApiError::not_found(format!("no item {id:?}")))?;
            item::live(state, viewer, id).await
        }
        ["agents"] => agents::live(state).await,
        ["sweeps"] => sweeps::list_live(state).await,
        ["sweeps", id] => sweeps::live(state, viewer, id).await,
        ["jobs"] => jobs::list_live(state).await,
        ["jobs", name] => jobs::live(state, name).await,
        _ => Err(ApiError::not_found(format!("no page {path:?}"))),
    }
}

/// A whole page: the live part of `path`, then what does not change (`rest`).
pub(crate) async fn page(
    state: &AppState,
    viewer: &Viewer,
    title: &str,
    path: &str,
    rest: Markup,
) -> Response {
    match fragment(state, viewer, path).await {
        Ok(live) => {
            let body = html! {
                div #live { (live) }
                (rest)
            };
            layout(title, Some(viewer), Some(path), body).into_response()
        }
        Err(e) => error_page(e),
    }
}

/// The frame of every page. `live`: the path the page's live part is pushed for.
pub(crate) fn layout(
    title: &str,
    viewer: Option<&Viewer>,
    live: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · liftoff" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body data-live=[live] data-now=(liftoff_types::now_ms()) {
                header {
                    nav aria-label="main" {
                        a.brand href="/" { "liftoff" }
                        a href="/" { "Overview" }
                        a href="/agents" { "Agents" }
                        a href="/sweeps" { "Sweeps" }
                        a href="/jobs" { "Jobs" }
                        @if let Some(v) = viewer {
                            span.who {
                                "signed in with " (if v.scope == liftoff_types::Scope::Admin { "an " } else { "a " })
                                strong { (v.scope) } " token"
                            }
                            form.inline.logout method="post" action="/logout" {
                                (csrf(v))
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An error as a page, with the API's status and message.
pub(crate) fn error_page(e: ApiError) -> Response {
    let body = html! {
        section.error-page {
            h1 { (e.status.as_u16()) " " (e.status.canonical_reason().unwrap_or("")) }
            p.error role="alert" { (e.message) }
            @for f in &e.fields {
                p.error { code { (f.field) } ": " (f.message) }
            }
            p { a href="/" { "Back to the overview" } }
        }
    };
    (e.status, layout("Error", None, None, body)).into_response()
}

/// `%XX` sequences decoded (queue and job names in paths); invalid ones kept as they are.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A state as a word in a badge (the word carries the meaning; the colour only helps).
pub(crate) fn badge(state: impl std::fmt::Display) -> Markup {
    let s = state.to_string();
    html! { span class={ "badge s-" (s) } { (s) } }
}

/// `2026-12-03 12:40:05 UTC`.
pub(crate) fn time(ms: Millis) -> String {
    let (year, month, day, rest) = liftoff_types::utc_parts(ms);
    let rem = rest / 1000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3 s`, `4 min`, `2 h 5 min`, `3 d`.
pub(crate) fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d", s / 86_400),
    }
}

/// A time: the page's script shows how long ago (and keeps it counting); the markup holds
/// only the time itself, so a live part does not change, and is not sent again, as time
/// passes.
pub(crate) fn ago(ms: Millis) -> Markup {
    html! { time.ago datetime=(ms) title=(time(ms)) { (time(ms)) } }
}

/// A number as a person reads it: at most 6 significant digits.
pub(crate) fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    if !(1e-4..1e7).contains(&v.abs()) {
        return format!("{v:.4e}");
    }
    let digits = (5 - v.abs().log10().floor() as i32).clamp(0, 10) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Text whose `backquoted` parts are commands: shown as code, the rest as text.
pub(crate) fn prose(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

/// JSON as indented text.
pub(crate) fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The hidden field every form of a page carries.
pub(crate) fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A one-button form posting to `action`.
pub(crate) fn action(viewer: &Viewer, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(viewer))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// What an item runs: `job@version`, its command, or which sweep it schedules.
pub(crate) fn what(item: &liftoff_types::Item) -> String {
    let spec = &item.spec;
    if item.kind == liftoff_types::ItemKind::Scheduler {
        return format!(
            "the scheduler of sweep {}",
            spec.sweep_id.as_deref().unwrap_or("?")
        );
    }
    if let Some(job) = &spec.job {
        return job.clone();
    }
    if let Some(argv) = &spec.overrides.entry_point {
        return argv.join(" ");
    }
    if let Some(d) = &spec.docker {
        return serde_json::to_string(d).unwrap_or_default();
    }
    "(nothing to run)".to_string()
}

/// A chart's SVG as markup: [`chart`] builds it and escapes every text it holds.
pub(crate) fn raw_svg(svg: String) -> PreEscaped<String> {
    PreEscaped(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_796_300_405_000), "2026-12-03 12:20:05 UTC");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(num(0.123456789), "0.123457");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(1234.5678), "1234.57");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1e-9), "1.0000e-9");
    }

    #[test]
    fn backquotes_become_code() {
        let m = prose("start one with `liftoff agent -q gpu` now").into_string();
        assert_eq!(m, "start one with <code>liftoff agent -q gpu</code> now");
        assert_eq!(prose("a <b>").into_string(), "a &lt;b&gt;");
    }

    #[test]
    fn names_in_paths_are_decoded() {
        assert_eq!(decode("gpu%2Dq"), "gpu-q");
        assert_eq!(decode("a%"), "a%");
        assert_eq!(decode("a%zz"), "a%zz");
        assert_eq!(decode("plain"), "plain");
        assert_eq!(decode("%aé"), "%aé", "a character cut in two is not hex");
    }
}
