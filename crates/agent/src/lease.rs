//! The agent's side of its lease (HTCondor's job lease): the server declares an agent lost
//! once it has not heard from it for its `agent_timeout`, and may then give the agent's items
//! to another agent. So the agent, and the supervisor its local runs live under, stop those
//! runs by then: no item runs twice at once, and the server's `lost` and the machine agree.
//!
//! The lease runs from the moment a heartbeat that the server answered was *sent* (the
//! server heard from the agent no earlier than that), for the server's timeout. Each answered
//! beat renews it, and the runners are told (the local runner passes it to its supervisor,
//! which stops its runs on its own if the agent dies). A beat's wait on the server is at
//! most a third of the timeout, so a live agent renews well before its lease runs out.

use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The lease's terms, as the server's `/limits` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    /// The server's agent timeout.
    pub timeout: Duration,
    /// Between the polite and the forced stop of a run whose lease lapsed: half the
    /// server's `lost_grace`, the time a lost agent's items wait before they go out again.
    pub grace: Duration,
}

impl Terms {
    /// The terms in a `/limits` answer; `None` from a server that gives none (an earlier
    /// version, which never waits for a lost agent's runs: no lease then).
    pub fn from_limits(limits: &Value) -> Option<Terms> {
        let ms = |key: &str| limits.get(key).and_then(Value::as_u64);
        Some(Terms::of(&liftoff_types::LeaseTerms {
            agent_timeout_ms: ms("agent_timeout_ms")?,
            lost_grace_ms: ms("lost_grace_ms")?,
        }))
    }

    /// The terms as a heartbeat's answer gives them.
    pub fn of(terms: &liftoff_types::LeaseTerms) -> Terms {
        Terms {
            timeout: Duration::from_millis(terms.agent_timeout_ms),
            grace: Duration::from_millis(terms.lost_grace_ms / 2),
        }
    }

    /// How long a heartbeat may wait on the server and still renew the lease in time.
    pub fn beat_wait(&self, wanted: Duration) -> Duration {
        wanted.min(self.timeout / 3)
    }
}

/// Where the agent's lease stands.
pub struct Lease {
    state: Mutex<State>,
}

struct State {
    /// As the server last gave them (every heartbeat's answer has them).
    terms: Option<Terms>,
    /// When the last heartbeat the server answered was sent (or the agent started).
    from: Instant,
    lapsed: bool,
}

/// What an answered or failed heartbeat changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// The lease ran out: the agent's runs must stop.
    Lapsed,
    /// Answered again after a lapse.
    Back,
}

impl Lease {
    /// A lease from `from` (when the agent's first call at its start, answered, was sent).
    pub fn new(terms: Option<Terms>, from: Instant) -> Lease {
        Lease {
            state: Mutex::new(State {
                terms,
                from,
                lapsed: false,
            }),
        }
    }

    pub fn terms(&self) -> Option<Terms> {
        crate::state::lock(&self.state).terms
    }

    /// The server's terms now (a restarted server may have others).
    pub fn set_terms(&self, terms: Terms) {
        crate::state::lock(&self.state).terms = Some(terms);
    }

    /// Where the lease runs from now.
    pub fn start(&self) -> Instant {
        crate::state::lock(&self.state).from
    }

    /// When the lease runs out unless renewed, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        let state = crate::state::lock(&self.state);
        Some(state.from + state.terms?.timeout)
    }

    /// A heartbeat sent at `sent` was answered: the lease runs from then. Returns the time
    /// left and the change. A lapsed lease stays lapsed until [`Lease::resume`], once the
    /// runners have the renewal (no run may start before the supervisor has it).
    pub fn renewed(&self, sent: Instant) -> (Duration, Change) {
        let mut state = crate::state::lock(&self.state);
        let Some(terms) = state.terms else {
            return (Duration::MAX, Change::None);
        };
        state.from = state.from.max(sent);
        let change = if state.lapsed {
            Change::Back
        } else {
            Change::None
        };
        let left = (state.from + terms.timeout).saturating_duration_since(Instant::now());
        (left, change)
    }

    /// A heartbeat failed (or did not come back in time): has the lease just lapsed?
    pub fn unanswered(&self) -> Change {
        let mut state = crate::state::lock(&self.state);
        let Some(terms) = state.terms else {
            return Change::None;
        };
        if !state.lapsed && Instant::now() >= state.from + terms.timeout {
            state.lapsed = true;
            return Change::Lapsed;
        }
        Change::None
    }

    /// Ends a lapse (the runners have the renewal).
    pub fn resume(&self) {
        crate::state::lock(&self.state).lapsed = false;
    }

    pub fn is_lapsed(&self) -> bool {
        crate::state::lock(&self.state).lapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_lease_runs_from_the_last_answered_beat_sent() {
        let terms = Terms::from_limits(&serde_json::json!({
            "artifact_limit": 1, "agent_timeout_ms": 9_000, "lost_grace_ms": 4_000
        }))
        .unwrap();
        assert_eq!(terms.grace, Duration::from_secs(2));
        assert_eq!(
            terms.beat_wait(Duration::from_secs(10)),
            Duration::from_secs(3)
        );
        assert_eq!(
            Terms::from_limits(&serde_json::json!({"artifact_limit": 1})),
            None
        );

        let lease = Lease::new(Some(terms), Instant::now());
        let sent = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        // Answered 3 s after it was sent: 6 s are left, not 9.
        assert_eq!(lease.renewed(sent), (Duration::from_secs(6), Change::None));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(lease.unanswered(), Change::None, "1 s is left");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(lease.unanswered(), Change::Lapsed);
        assert_eq!(lease.unanswered(), Change::None, "said once");
        assert!(lease.is_lapsed());
        let sent = Instant::now();
        assert_eq!(lease.renewed(sent).1, Change::Back);
        assert!(lease.is_lapsed(), "until the runners have it");
        lease.resume();
        assert!(!lease.is_lapsed());
        // No lease from a server that gives no terms.
        let none = Lease::new(None, Instant::now());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(none.unanswered(), Change::None);
    }
}
