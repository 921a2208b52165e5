//! Bearer tokens and scopes.
//!
//! A token is `lft_` and 40 hex digits of randomness; the store keeps only its SHA-256 (a
//! random 160-bit secret needs no slow hash). Recently seen tokens are cached for a few
//! seconds so the hot path (lease, ack) does not read the token table on every request; a
//! deleted token therefore stops working within [`CACHE_TTL`].
//!
//! Run tokens (scope `run`, one per run, handed to the run in its environment) are signed
//! rather than stored: `lfr_{run}.{item}.{mac}`, the MAC being the first 20 bytes of
//! HMAC-SHA256 over the run and item ids under a key all servers of a store share (kept in
//! the store as the secret [`RUN_KEY`]). Why: a stored token cost every run an insert at its
//! start and a delete at its end, with their index pages, on the path of every short run. A
//! signed one is checked against its run at each use, so it still stops working the moment
//! its run ends. Run tokens stored by earlier versions are still looked up by hash.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hmac::{Hmac, KeyInit, Mac};
use liftoff_store::{Store, StoreError};
use liftoff_types::{ItemId, RunId, Scope, TokenInfo};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;
/// The store secret run tokens are signed with.
pub const RUN_KEY: &str = "run_token_key";
const RUN_PREFIX: &str = "lfr_";
/// Bytes of the MAC a run token carries (160 bits, as a stored token's randomness).
const RUN_MAC_LEN: usize = 20;

/// What a route needs from the caller's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Listings and shows: every scope but `run`.
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
            Access::Read => "an admin, user, agent or read token",
            Access::Submit => "an admin or user token",
            Access::Work => "an admin or agent token",
            Access::Admin => "an admin token",
        }
    }
}

/// Checks tokens against the store, and signs run tokens.
pub struct Auth {
    enabled: bool,
    cache: Mutex<HashMap<String, (TokenInfo, Instant)>>,
    run_tokens: RunTokens,
}

impl Auth {
    /// `run_key`: the store's [`RUN_KEY`] secret.
    pub fn new(enabled: bool, run_key: &str) -> Auth {
        Auth {
            enabled,
            cache: Mutex::new(HashMap::new()),
            run_tokens: RunTokens {
                key: run_key.as_bytes().to_vec(),
            },
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The token of the run `run` of item `item`.
    pub fn run_token(&self, run: &RunId, item: ItemId) -> String {
        self.run_tokens.mint(run, item)
    }

    /// A MAC under the store's shared key for `purpose` (the dashboard's session cookies and
    /// their forms' CSRF fields), so every server of a store accepts what another signed.
    pub fn sign(&self, purpose: &str, data: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.run_tokens.key).expect("HMAC takes any key");
        mac.update(b"liftoff ");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..RUN_MAC_LEN])
    }

    /// The caller a bearer token (of any scope) stands for.
    pub async fn lookup(&self, store: &dyn Store, token: &str) -> Result<Caller, ApiError> {
        if let Some(signed) = token.strip_prefix(RUN_PREFIX) {
            return self.run_caller(store, signed).await;
        }
        self.by_hash(store, &hash_token(token)).await
    }

    /// The caller of a stored token, by its hash (a dashboard session holds the hash, never
    /// the token): revoking the token ends the session within [`CACHE_TTL`].
    pub async fn by_hash(&self, store: &dyn Store, hash: &str) -> Result<Caller, ApiError> {
        let hash = hash.to_string();
        let info = match self.cached(&hash) {
            Some(info) => info,
            None => {
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
                info
            }
        };
        Ok(Caller {
            scope: info.scope,
            run_id: info.run_id,
        })
    }

    /// A run token's caller: its signature checks (before any read), and its run is the one
    /// it was made for and has not ended.
    async fn run_caller(&self, store: &dyn Store, signed: &str) -> Result<Caller, ApiError> {
        let (run, item) = self
            .run_tokens
            .verify(signed)
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        let live = match store.get_run(&run).await {
            Ok(live) => live,
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::unauthorized("unknown or revoked token"))
            }
            Err(e) => return Err(e.into()),
        };
        if live.item_id != item {
            // The run id was taken again by another item's run (user-given ids).
            return Err(ApiError::unauthorized("unknown or revoked token"));
        }
        if live.state.is_terminal() {
            return Err(ApiError::unauthorized(format!(
                "run {run} has ended: its token no longer works"
            )));
        }
        Ok(Caller {
            scope: Scope::Run,
            run_id: Some(run),
        })
    }

    fn cached(&self, hash: &str) -> Option<TokenInfo> {
        let cache = self.cache.lock().ok()?;
        let (info, at) = cache.get(hash)?;
        // A run token is revoked when its run ends: never trust a cached one.
        (at.elapsed() < CACHE_TTL && info.scope != Scope::Run).then(|| info.clone())
    }
}

/// Signs and checks run tokens (see the module's doc).
struct RunTokens {
    key: Vec<u8>,
}

impl RunTokens {
    fn mac(&self, run: &str, item: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        // Lengths first, so no two (run, item) pairs sign the same bytes.
        mac.update(b"liftoff run token v1\0");
        mac.update(&(run.len() as u64).to_le_bytes());
        mac.update(run.as_bytes());
        mac.update(item.as_bytes());
        mac
    }

    fn mint(&self, run: &RunId, item: ItemId) -> String {
        let item = item.to_string();
        let tag = self.mac(run.as_str(), &item).finalize().into_bytes();
        format!(
            "{RUN_PREFIX}{run}.{item}.{}",
            hex::encode(&tag[..RUN_MAC_LEN])
        )
    }

    /// The run and item a token (without its prefix) names, when its MAC checks (in
    /// constant time).
    fn verify(&self, signed: &str) -> Option<(RunId, ItemId)> {
        let mut parts = signed.splitn(3, '.');
        let (run, item, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let tag = hex::decode(tag).ok().filter(|t| t.len() == RUN_MAC_LEN)?;
        self.mac(run, item).verify_truncated_left(&tag).ok()?;
        Some((run.parse().ok()?, item.parse().ok()?))
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
        state.auth.lookup(state.store.as_ref(), token).await
    }
}
