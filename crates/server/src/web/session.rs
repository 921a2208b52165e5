//! Logging in to the dashboard: a token typed once becomes a session cookie, and every form
//! carries a field that proves it came from one of our pages.
//!
//! The cookie is `{token hash}.{expiry ms}.{mac}`, signed with the store's shared key
//! ([`crate::auth::Auth::sign`]): it holds no secret (the hash cannot be used as a bearer
//! token), any server of the store accepts it, and revoking the token ends the session (the
//! hash is looked up on every request, through the token cache). `HttpOnly` keeps it from
//! scripts, `SameSite=Strict` from other sites' requests. Forms also carry a CSRF field, a
//! MAC of the cookie, and a POST whose `Origin` (or `Sec-Fetch-Site`) says it came from
//! elsewhere is refused, so a forged request fails even from a browser that sends the cookie.
//! With auth off (loopback only, as for the API) there is no login and the caller is admin.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use liftoff_types::{now_ms, Scope};
use maud::html;
use serde::Deserialize;

pub const COOKIE: &str = "liftoff_session";
/// How long a login lasts.
const SESSION_MS: i64 = 12 * 3600 * 1000;
const PURPOSE: &str = "dashboard session v1";
const CSRF_PURPOSE: &str = "dashboard form v1";
const LINK_PURPOSE: &str = "dashboard login link v1";
/// How long a login link (`liftoff dashboard`) may be opened.
const LINK_MS: i64 = 120_000;

/// Who is looking at a page: their scope, and the CSRF value their forms carry.
pub struct Viewer {
    pub scope: Scope,
    pub csrf: String,
}

impl Viewer {
    /// The API's caller for this viewer (actions go through the API's own checks).
    pub fn caller(&self) -> Caller {
        Caller {
            scope: self.scope,
            run_id: None,
        }
    }

    /// May stop runs and steer sweeps (admin, user, agent), as `Caller::require_steer`.
    pub fn may_steer(&self) -> bool {
        self.caller().require_steer().is_ok()
    }

    /// May launch, cancel and rerun (admin, user), as `Access::Submit`.
    pub fn may_submit(&self) -> bool {
        crate::auth::Access::Submit.allows(self.scope)
    }
}

/// A page asked for without a session: the login page, then back.
pub enum NoSession {
    Login(String),
    Refused(ApiError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Login(next) => {
                Redirect::to(&format!("/login?next={}", encode(&next))).into_response()
            }
            NoSession::Refused(e) => super::error_page(e),
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, NoSession> {
        if !state.auth.enabled() {
            return Ok(Viewer {
                scope: Scope::Admin,
                csrf: state.auth.sign(CSRF_PURPOSE, "no auth"),
            });
        }
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let Some(cookie) = cookie(&parts.headers) else {
            return Err(NoSession::Login(next));
        };
        let Some(hash) = verify(state, PURPOSE, &cookie) else {
            return Err(NoSession::Login(next));
        };
        match state.auth.by_hash(state.store.as_ref(), &hash).await {
            Ok(caller) => Ok(Viewer {
                scope: caller.scope,
                csrf: state.auth.sign(CSRF_PURPOSE, &cookie),
            }),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(NoSession::Login(next)),
            Err(e) => Err(NoSession::Refused(e)),
        }
    }
}

/// The session cookie's value, when the request has one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The token hash a cookie (or a login link's code) stands for, when its MAC checks and it
/// has not expired.
fn verify(state: &AppState, purpose: &str, cookie: &str) -> Option<String> {
    let (signed, mac) = cookie.rsplit_once('.')?;
    let (hash, expires) = signed.split_once('.')?;
    let expected = state.auth.sign(purpose, signed);
    if !constant_eq(expected.as_bytes(), mac.as_bytes()) {
        return None;
    }
    let expires: i64 = expires.parse().ok()?;
    (expires > now_ms() && hash.len() == 64).then(|| hash.to_string())
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a form post that did not come from one of our pages: a wrong or missing CSRF
/// field, or a browser saying the request is cross-site.
pub fn check_form(headers: &HeaderMap, viewer: &Viewer, csrf: &str) -> Result<(), ApiError> {
    check_origin(headers)?;
    if !constant_eq(csrf.as_bytes(), viewer.csrf.as_bytes()) {
        return Err(ApiError::forbidden(
            "this form did not come from a page of this dashboard (its csrf field is wrong): \
             reload the page and try again",
        ));
    }
    Ok(())
}

/// A POST from another site: `Sec-Fetch-Site: cross-site`, or an `Origin` other than the
/// host the request was sent to.
fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || ApiError::forbidden("cross-site form posts are refused");
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site")
    {
        return Err(refused());
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    // Behind a proxy that rewrites `Host`, the host the browser used is the forwarded one (a
    // cross-site form cannot set that header, and we answer no CORS preflight).
    let hosts: Vec<&str> = [header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .collect();
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| hosts.contains(&o));
    if same {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Percent-encodes what goes in a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where to go after logging in: only a path of this site (never `//host` or a URL).
fn local_path(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from URLs (`/\t/host` is `//host` to them).
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.bytes().any(|b| b < 0x21 || b == 0x7f) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    if !state.auth.enabled() {
        return Redirect::to(&local_path(q.next.as_deref())).into_response();
    }
    login_form(&local_path(q.next.as_deref()), None, StatusCode::OK)
}

fn login_form(next: &str, problem: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.login {
            h1 { "Log in to liftoff" }
            p { "Paste a token: " code { "liftoff token create --scope read" } " makes one that only reads; "
                "the admin token is in the server's " code { "client.json" } "." }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                @if let Some(problem) = problem {
                    p.error role="alert" { (problem) }
                }
                button type="submit" { "Log in" }
            }
        }
    };
    (status, super::layout("Log in", None, None, body)).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login`: checks the token and sets the session cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    if let Err(e) = check_origin(&headers) {
        return super::error_page(e);
    }
    let token = form.token.trim();
    if token.is_empty() || token.len() > 512 {
        return login_form(&next, Some("Paste a token."), StatusCode::UNAUTHORIZED);
    }
    if token.starts_with("lfr_") {
        return login_form(
            &next,
            Some("A run's token cannot open the dashboard; use a user, read or admin token."),
            StatusCode::FORBIDDEN,
        );
    }
    let hash = crate::auth::hash_token(token);
    match state.auth.by_hash(state.store.as_ref(), &hash).await {
        Ok(caller) if caller.scope != Scope::Run => {}
        Ok(_) | Err(_) => {
            return login_form(
                &next,
                Some("That token is unknown or revoked."),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
    signed_in(&state, &hash, &headers, &next)
}

/// The session cookie for `hash`, and on to `next`.
fn signed_in(state: &AppState, hash: &str, headers: &HeaderMap, next: &str) -> Response {
    let signed = format!("{hash}.{}", now_ms() + SESSION_MS);
    let value = format!("{signed}.{}", state.auth.sign(PURPOSE, &signed));
    // Over HTTPS (a TLS proxy in front), the cookie is never sent in the clear.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    let cookie = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_MS / 1000,
        if secure { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

/// `POST /api/v1/login-links`: a link that opens the dashboard signed in as the caller's
/// token, for [`LINK_MS`] (what `liftoff dashboard` prints). The link holds the token's
/// hash, signed, never the token; run tokens get none.
#[utoipa::path(post, path = "/api/v1/login-links", tag = "meta",
    responses((status = 200, body = Object), (status = 401, body = liftoff_types::api::ErrorBody)))]
pub async fn login_link(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    caller.require(crate::auth::Access::Read)?;
    if !state.auth.enabled() {
        return Ok(axum::Json(serde_json::json!({"path": "/"})));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let signed = format!("{}.{}", crate::auth::hash_token(token), now_ms() + LINK_MS);
    let code = format!("{signed}.{}", state.auth.sign(LINK_PURPOSE, &signed));
    Ok(axum::Json(serde_json::json!({
        "path": format!("/login/link?code={code}"),
        "expires_in_s": LINK_MS / 1000,
    })))
}

#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    code: String,
}

/// `GET /login/link?code=...`: a login link opened; signed in, on to the overview.
pub async fn open_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LinkQuery>,
) -> Response {
    if !state.auth.enabled() {
        return Redirect::to("/").into_response();
    }
    let refused = || {
        login_form(
            "/",
            Some("This login link is wrong or has expired (links last 2 minutes): run `liftoff dashboard` again, or paste a token."),
            StatusCode::UNAUTHORIZED,
        )
    };
    let Some(hash) = verify(&state, LINK_PURPOSE, &q.code) else {
        return refused();
    };
    match state.auth.by_hash(state.store.as_ref(), &hash).await {
        Ok(caller) if caller.scope != Scope::Run => signed_in(&state, &hash, &headers, "/"),
        _ => refused(),
    }
}

/// `POST /logout`: forgets the cookie.
pub async fn logout(headers: HeaderMap) -> Response {
    if let Err(e) = check_origin(&headers) {
        return super::error_page(e);
    }
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/queues/a?x=1")), "/queues/a?x=1");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(Some("/\n/evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(check_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(check_origin(&h).is_err());
        // Behind a proxy that rewrote Host.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8765".parse().unwrap());
        h.insert("x-forwarded-host", "liftoff.example".parse().unwrap());
        h.insert(header::ORIGIN, "https://liftoff.example".parse().unwrap());
        assert!(check_origin(&h).is_ok());
    }
}
