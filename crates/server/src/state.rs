//! What every handler shares: the store, the long-poll wakers and the token checker.

use crate::auth::Auth;
use crate::wake::Wakers;
use liftoff_store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// An agent not heard from for this long is declared lost.
    pub agent_timeout: std::time::Duration,
    pub wakers: Arc<Wakers>,
    pub auth: Arc<Auth>,
    /// Uploaded code archives, by digest.
    pub artifacts: Option<Arc<dyn liftoff_artifacts::ArtifactStore>>,
    /// Largest archive one upload may carry, in bytes.
    pub artifact_limit: usize,
}
