//! Retries by cause: what a queue (and, within its limits, a launch) allows when a run ends
//! without finishing. Causes, as dstack, SkyPilot and Kubernetes users name them: the run was
//! `lost` with its agent, `preempted` by its backend, did not start within the agent's
//! `start-timeout`, failed its `build`, or exited with a listed `exit-code`. A maximum per
//! cause and overall, and a backoff that doubles with each retry. W&B's one rule (preempted
//! runs go back, at most 5 times) is the default; `lost` follows the queue's older
//! `requeue_lost` and `max_attempts` when the queue sets no policy.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a run's item may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryCause {
    Lost,
    Preempted,
    StartTimeout,
    Build,
    ExitCode,
}

impl RetryCause {
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryCause::Lost => "lost",
            RetryCause::Preempted => "preempted",
            RetryCause::StartTimeout => "start-timeout",
            RetryCause::Build => "build",
            RetryCause::ExitCode => "exit-code",
        }
    }
}

impl std::fmt::Display for RetryCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retries of runs that exited with one of `codes` (any non-zero code when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitCodeRetry {
    pub max: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<i32>,
}

/// A retry policy. Absent causes take the defaults ([`RetryPolicy::effective`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "start_timeout"
    )]
    pub start_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "exit_code")]
    pub exit_code: Option<ExitCodeRetry>,
    /// Retries of every cause together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Seconds before the first retry; each later one waits twice the last (at most an hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<u32>,
}

/// W&B's cap on a preempted run's resumes.
pub const DEFAULT_PREEMPTED: u32 = 5;
/// The longest wait between retries, in seconds.
pub const MAX_BACKOFF_S: u64 = 3600;

/// How many retries an item has had, by cause.
pub type RetryCounts = BTreeMap<RetryCause, u32>;

impl RetryPolicy {
    /// The policy a queue's runs get: its own `retry`, over the defaults (preempted 5; lost
    /// as `requeue_lost` and `max_attempts` say: `max_attempts - 1` when requeued, else 0).
    pub fn effective(
        queue: Option<&RetryPolicy>,
        requeue_lost: bool,
        max_attempts: u32,
    ) -> RetryPolicy {
        let given = queue.cloned().unwrap_or_default();
        RetryPolicy {
            lost: Some(given.lost.unwrap_or(if requeue_lost {
                max_attempts.saturating_sub(1)
            } else {
                0
            })),
            preempted: Some(given.preempted.unwrap_or(DEFAULT_PREEMPTED)),
            start_timeout: Some(given.start_timeout.unwrap_or(0)),
            build: Some(given.build.unwrap_or(0)),
            exit_code: given.exit_code,
            max: given.max,
            backoff: given.backoff,
        }
    }

    /// A launch's own policy over the queue's effective one: each cause it names must stay
    /// within the queue's (a launch may lower a limit, narrow the exit codes, wait longer).
    pub fn within(&self, queue: &RetryPolicy) -> Result<RetryPolicy, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut cap = |key: &str, asked: Option<u32>, allowed: Option<u32>| -> Option<u32> {
            match (asked, allowed) {
                (Some(a), Some(b)) if a > b => {
                    problems.push((
                        format!("retry.{key}"),
                        format!("{a} is over the queue's limit of {b}"),
                    ));
                    Some(b)
                }
                (Some(a), _) => Some(a),
                (None, b) => b,
            }
        };
        let lost = cap("lost", self.lost, queue.lost);
        let preempted = cap("preempted", self.preempted, queue.preempted);
        let start_timeout = cap("start-timeout", self.start_timeout, queue.start_timeout);
        let build = cap("build", self.build, queue.build);
        let max = cap("max", self.max, queue.max);
        let exit_code = match (&self.exit_code, &queue.exit_code) {
            (None, q) => q.clone(),
            (Some(a), None) => {
                problems.push((
                    "retry.exit-code".into(),
                    format!("the queue retries no exit codes (asked: at most {})", a.max),
                ));
                None
            }
            (Some(a), Some(q)) => {
                if a.max > q.max {
                    problems.push((
                        "retry.exit-code.max".into(),
                        format!("{} is over the queue's limit of {}", a.max, q.max),
                    ));
                }
                let outside: Vec<String> = a
                    .codes
                    .iter()
                    .filter(|c| !q.codes.is_empty() && !q.codes.contains(c))
                    .map(|c| c.to_string())
                    .collect();
                if !outside.is_empty() || (a.codes.is_empty() && !q.codes.is_empty()) {
                    problems.push((
                        "retry.exit-code.codes".into(),
                        format!(
                            "the queue retries exit codes {:?} only (asked: {})",
                            q.codes,
                            if a.codes.is_empty() {
                                "any".to_string()
                            } else {
                                outside.join(", ")
                            }
                        ),
                    ));
                }
                Some(a.clone())
            }
        };
        let backoff = match (self.backoff, queue.backoff) {
            (Some(a), Some(q)) if a < q => {
                problems.push((
                    "retry.backoff".into(),
                    format!("{a} s is shorter than the queue's {q} s"),
                ));
                Some(q)
            }
            (a, q) => a.or(q),
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RetryPolicy {
            lost,
            preempted,
            start_timeout,
            build,
            exit_code,
            max,
            backoff,
        })
    }

    /// Every problem with the policy's values, as `(field, problem)` under `at`.
    pub fn validate(&self, at: &str) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut limit = |key: &str, n: Option<u32>, top: u32| {
            if n.is_some_and(|n| n > top) {
                problems.push((format!("{at}.{key}"), format!("must be from 0 to {top}")));
            }
        };
        limit("lost", self.lost, 100);
        limit("preempted", self.preempted, 100);
        limit("start-timeout", self.start_timeout, 100);
        limit("build", self.build, 100);
        limit("max", self.max, 1000);
        limit("backoff", self.backoff, MAX_BACKOFF_S as u32);
        if let Some(e) = &self.exit_code {
            if e.max > 100 {
                problems.push((
                    format!("{at}.exit-code.max"),
                    "must be from 0 to 100".into(),
                ));
            }
            if e.codes.len() > 64 {
                problems.push((format!("{at}.exit-code.codes"), "at most 64 codes".into()));
            }
            if let Some(bad) = e.codes.iter().find(|c| !(1..=255).contains(*c)) {
                problems.push((
                    format!("{at}.exit-code.codes"),
                    format!("{bad} is not a failing exit code (1 to 255)"),
                ));
            }
        }
        problems
    }

    /// Whether a run that ended for `cause` (with `exit_code`) is retried, given the retries
    /// so far; if so, after how many milliseconds.
    pub fn retry_after(
        &self,
        cause: RetryCause,
        exit_code: Option<i32>,
        done: &RetryCounts,
    ) -> Option<u64> {
        let limit = match cause {
            RetryCause::Lost => self.lost.unwrap_or(0),
            RetryCause::Preempted => self.preempted.unwrap_or(DEFAULT_PREEMPTED),
            RetryCause::StartTimeout => self.start_timeout.unwrap_or(0),
            RetryCause::Build => self.build.unwrap_or(0),
            RetryCause::ExitCode => match (&self.exit_code, exit_code) {
                (Some(e), Some(code))
                    if code != 0 && (e.codes.is_empty() || e.codes.contains(&code)) =>
                {
                    e.max
                }
                _ => 0,
            },
        };
        let total: u32 = done.values().sum();
        let ok = done.get(&cause).copied().unwrap_or(0) < limit
            && self.max.is_none_or(|max| total < max);
        ok.then(|| {
            let first = self.backoff.unwrap_or(0) as u64;
            let wait = first
                .saturating_mul(1u64 << total.min(20))
                .min(MAX_BACKOFF_S);
            wait * 1000
        })
    }

    /// What the limit for `cause` is, for messages.
    pub fn limit(&self, cause: RetryCause) -> u32 {
        match cause {
            RetryCause::Lost => self.lost.unwrap_or(0),
            RetryCause::Preempted => self.preempted.unwrap_or(DEFAULT_PREEMPTED),
            RetryCause::StartTimeout => self.start_timeout.unwrap_or(0),
            RetryCause::Build => self.build.unwrap_or(0),
            RetryCause::ExitCode => self.exit_code.as_ref().map_or(0, |e| e.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(RetryCause, u32)]) -> RetryCounts {
        pairs.iter().copied().collect()
    }

    #[test]
    fn causes_are_retried_up_to_their_limits_and_the_overall_one_with_a_doubling_wait() {
        let queue = RetryPolicy {
            exit_code: Some(ExitCodeRetry {
                max: 2,
                codes: vec![1, 137],
            }),
            build: Some(1),
            max: Some(3),
            backoff: Some(10),
            ..RetryPolicy::default()
        };
        let p = RetryPolicy::effective(Some(&queue), false, 3);
        let none = RetryCounts::new();
        use RetryCause::*;
        assert_eq!(p.retry_after(ExitCode, Some(1), &none), Some(10_000));
        assert_eq!(p.retry_after(ExitCode, Some(2), &none), None, "not listed");
        assert_eq!(
            p.retry_after(Lost, None, &none),
            None,
            "the queue does not requeue"
        );
        assert_eq!(
            p.retry_after(ExitCode, Some(137), &counts(&[(ExitCode, 1)])),
            Some(20_000)
        );
        assert_eq!(
            p.retry_after(ExitCode, Some(1), &counts(&[(ExitCode, 2)])),
            None
        );
        assert_eq!(
            p.retry_after(Build, None, &counts(&[(ExitCode, 2)])),
            Some(40_000)
        );
        assert_eq!(
            p.retry_after(Preempted, None, &counts(&[(ExitCode, 2), (Build, 1)])),
            None,
            "three retries in all"
        );
        // W&B's default: five preemptions; lost as requeue_lost and max_attempts say.
        let wandb = RetryPolicy::effective(None, true, 3);
        assert_eq!(
            wandb.retry_after(Preempted, None, &counts(&[(Preempted, 4)])),
            Some(0)
        );
        assert_eq!(
            wandb.retry_after(Preempted, None, &counts(&[(Preempted, 5)])),
            None
        );
        assert_eq!(
            wandb.retry_after(Lost, None, &counts(&[(Lost, 1)])),
            Some(0)
        );
        assert_eq!(wandb.retry_after(Lost, None, &counts(&[(Lost, 2)])), None);
    }

    #[test]
    fn a_launch_may_ask_less_than_its_queue_never_more() {
        let queue = RetryPolicy::effective(
            Some(&RetryPolicy {
                exit_code: Some(ExitCodeRetry {
                    max: 2,
                    codes: vec![1],
                }),
                backoff: Some(5),
                ..RetryPolicy::default()
            }),
            false,
            3,
        );
        let fewer = RetryPolicy {
            preempted: Some(1),
            ..RetryPolicy::default()
        };
        let got = fewer.within(&queue).unwrap();
        assert_eq!((got.preempted, got.backoff), (Some(1), Some(5)));
        let more = RetryPolicy {
            lost: Some(2),
            exit_code: Some(ExitCodeRetry {
                max: 3,
                codes: vec![1, 2],
            }),
            backoff: Some(1),
            ..RetryPolicy::default()
        };
        let fields: Vec<String> = more
            .within(&queue)
            .unwrap_err()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(
            fields,
            [
                "retry.lost",
                "retry.exit-code.max",
                "retry.exit-code.codes",
                "retry.backoff"
            ]
        );
        let bad = RetryPolicy {
            exit_code: Some(ExitCodeRetry {
                max: 1,
                codes: vec![0],
            }),
            max: Some(5000),
            ..RetryPolicy::default()
        };
        let fields: Vec<String> = bad.validate("retry").into_iter().map(|p| p.0).collect();
        assert_eq!(fields, ["retry.max", "retry.exit-code.codes"]);
        let parsed: RetryPolicy =
            serde_json::from_str(r#"{"exit-code": {"max": 1}, "start-timeout": 2}"#).unwrap();
        assert_eq!(parsed.start_timeout, Some(2));
        let typo = serde_json::from_str::<RetryPolicy>(r#"{"exitcode": 1}"#).unwrap_err();
        assert!(typo.to_string().contains("exitcode"), "{typo}");
    }
}
