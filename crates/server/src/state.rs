//! What every handler shares: the store, the long-poll wakers and the token checker.

use crate::auth::Auth;
use crate::wake::Wakers;
use liftoff_store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub wakers: Arc<Wakers>,
    pub auth: Arc<Auth>,
}
