//! Bearer tokens and scopes.
//!
//! A token is `lft_` and 40 hex digits of randomness; the store keeps only its SHA-256 (a
//! random 160-bit secret needs no slow hash). Recently seen tokens are cached for a few
//! seconds so the hot path (lease, ack) does not read the token table on every request; a
//! deleted token therefore stops working within [`CACHE_TTL`].

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use liftoff_store::Store;
use liftoff_types::{RunId, Scope, TokenInfo};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;

/// What a route needs from the caller's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Listings and shows: every scope.
    Read,
    /// Enqueue, cancel, stop: `admin` and `user`.
    Submit,
    /// The agent protocol (register, heartbeat, lease, ack, fail, warn, release, run state):
    /// `admin` and `agent`.
    Work,
    /// Queues and tokens: `admin` only.
    Admin,
}

impl Access {
    pub fn allows(self, scope: Scope) -> bool {
        match self {
            Access::Read => scope != Scope::Run,
            Access::Submit => matches!(scope, Scope::Admin | Scope::User),
            Access::Work => matches!(scope, Scope::Admin | Scope::Agent),
            Access::Admin => scope == Scope::Admin,
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Access::Read => "an admin, user or agent token",
            Access::Submit => "an admin or user token",
            Access::Work => "an admin or agent token",
            Access::Admin => "an admin token",
        }
    }
}

/// Checks tokens against the store.
pub struct Auth {
    enabled: bool,
    cache: Mutex<HashMap<String, (TokenInfo, Instant)>>,
}

impl Auth {
    pub fn new(enabled: bool) -> Auth {
        Auth {
            enabled,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    async fn lookup(&self, store: &dyn Store, token: &str) -> Result<TokenInfo, ApiError> {
        let hash = hash_token(token);
        if let Some(info) = self.cached(&hash) {
            return Ok(info);
        }
        let info = store
            .token_by_hash(&hash)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, (info.clone(), Instant::now()));
        }
        Ok(info)
    }

    fn cached(&self, hash: &str) -> Option<TokenInfo> {
        let cache = self.cache.lock().ok()?;
        let (info, at) = cache.get(hash)?;
        // A run token is revoked when its run ends: never trust a cached one.
        (at.elapsed() < CACHE_TTL && info.scope != Scope::Run).then(|| info.clone())
    }
}

/// A new random token with its hash.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("lft_{}", hex::encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated caller. Extracting it answers 401 without a valid token; handlers then
/// call [`Caller::require`] for the route's [`Access`].
pub struct Caller {
    pub scope: Scope,
    /// For a run token: its run.
    pub run_id: Option<RunId>,
}

impl Caller {
    /// Reading one run: any reader, or that run's own token.
    pub fn require_run(&self, run: &RunId) -> Result<(), ApiError> {
        if self.scope == Scope::Run && self.run_id.as_ref() == Some(run) {
            return Ok(());
        }
        self.require(Access::Read)
    }

    /// Writing to one run (its metrics): an agent, or that run's own token.
    pub fn require_run_write(&self, run: &RunId) -> Result<(), ApiError> {
        if self.scope == Scope::Run && self.run_id.as_ref() == Some(run) {
            return Ok(());
        }
        self.require(Access::Work)
    }

    /// Steering a sweep or stopping a run: users do it, and so do agents (a sweep's
    /// scheduler runs inside one).
    pub fn require_steer(&self) -> Result<(), ApiError> {
        if Access::Work.allows(self.scope) {
            return Ok(());
        }
        self.require(Access::Submit)
    }

    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        if access.allows(self.scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a {} token may not do this; it needs {}",
                self.scope,
                access.needs()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.auth.enabled() {
            return Ok(Caller {
                scope: Scope::Admin,
                run_id: None,
            });
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        let info = state.auth.lookup(state.store.as_ref(), token).await?;
        Ok(Caller {
            scope: info.scope,
            run_id: info.run_id,
        })
    }
}
