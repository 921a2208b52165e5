//! Retries by cause, as both stores apply them (the policy itself is in
//! [`liftoff_types::retry`]): an item's retry context read from its queue and its spec, the
//! retry a run's end or a failure report earns, and what is written for it.

use crate::StoreResult;
use liftoff_types::{Phase, RetryCause, RetryCounts, RetryPolicy};
use serde::Deserialize;

/// What a retry decision needs: the policy that holds for the item (its launch's within its
/// queue's) and the retries it has had.
#[derive(Clone, Debug, Default)]
pub struct RetryContext {
    pub policy: RetryPolicy,
    pub done: RetryCounts,
}

/// The launch's own policy, read from the stored spec without the rest of it.
#[derive(Deserialize)]
struct SpecRetry {
    #[serde(default)]
    retry: Option<RetryPolicy>,
}

impl RetryContext {
    /// From the queue's columns, the item's spec (JSON) and its retries (JSON).
    pub fn read(
        queue_retry: Option<&str>,
        requeue_lost: bool,
        max_attempts: u32,
        spec: &str,
        retries: &str,
    ) -> StoreResult<RetryContext> {
        let queue: Option<RetryPolicy> = queue_retry.map(serde_json::from_str).transpose()?;
        let queue = RetryPolicy::effective(queue.as_ref(), requeue_lost, max_attempts);
        let launch = serde_json::from_str::<SpecRetry>(spec)
            .ok()
            .and_then(|s| s.retry);
        // Checked at enqueue; a queue changed since cannot be exceeded either.
        let policy = match launch {
            Some(own) => own.within(&queue).unwrap_or(queue),
            None => queue,
        };
        Ok(RetryContext {
            policy,
            done: serde_json::from_str(retries)?,
        })
    }

    /// A retry for `cause`: the counts to store and the wait, or `None` when none is left.
    pub fn retry(&self, cause: RetryCause, exit_code: Option<i32>) -> Option<Retry> {
        let wait_ms = self.policy.retry_after(cause, exit_code, &self.done)?;
        let mut counts = self.done.clone();
        *counts.entry(cause).or_default() += 1;
        let n = counts[&cause];
        Some(Retry {
            cause,
            counts: serde_json::to_string(&counts).unwrap_or_else(|_| "{}".into()),
            wait_ms: wait_ms as i64,
            note: format!(
                "retry {n} of {} for {cause}{}",
                self.policy.limit(cause),
                if wait_ms > 0 {
                    format!(", after {} s", wait_ms / 1000)
                } else {
                    String::new()
                }
            ),
        })
    }

    /// Why no retry was left, for the failure message.
    pub fn exhausted(&self, cause: RetryCause) -> String {
        let limit = self.policy.limit(cause);
        let had = self.done.get(&cause).copied().unwrap_or(0);
        match limit {
            0 => String::new(),
            _ => format!(" (retried {had} of {limit} times for {cause})"),
        }
    }
}

/// A retry to write: the item back to pending with these counts, leased no sooner than
/// `wait_ms` from now, and a warning with `note`.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub cause: RetryCause,
    pub counts: String,
    pub wait_ms: i64,
    pub note: String,
}

/// The cause of an agent's failure report: what it says, else its phase and exit code.
pub fn failure_cause(
    phase: Phase,
    exit_code: Option<i32>,
    said: Option<RetryCause>,
) -> Option<RetryCause> {
    said.or(match (phase, exit_code) {
        (Phase::Build, _) => Some(RetryCause::Build),
        (Phase::Run, Some(code)) if code != 0 => Some(RetryCause::ExitCode),
        _ => None,
    })
}

/// The warning a retried item gets.
pub fn warning(retry: &Retry, message: &str) -> String {
    format!("{}: {message}", retry.note)
}
