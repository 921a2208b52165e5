//! Sweeps as the server keeps them: a W&B sweep config, its state, the scheduler item that
//! drives it, and the wire shapes of its runs and their metrics.
//!
//! States (FORMATS.md): `pending` until an agent takes the scheduler, then `running`;
//! `paused` and back; `finished`, `cancelled` and `crashed` end it. A sweep's runs start
//! only while it is `running`.

use crate::ids::{ItemId, RunId};
use crate::item::{string_enum, ItemState};
use crate::run::RunState;
use crate::spec::LaunchSpec;
use crate::Millis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// Where a sweep is in its life.
    SweepState {
        Pending = "pending",
        Running = "running",
        Paused = "paused",
        Finished = "finished",
        Cancelled = "cancelled",
        Crashed = "crashed",
    }
);

impl SweepState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SweepState::Finished | SweepState::Cancelled | SweepState::Crashed
        )
    }

    /// Whether a sweep may go from `self` to `to`. Terminal states are final; `running` is
    /// reached from `pending` (its scheduler started) or `paused` (resumed).
    pub fn may_become(self, to: SweepState) -> bool {
        use SweepState::*;
        match (self, to) {
            (from, _) if from.is_terminal() => false,
            (Pending | Paused, Running) => true,
            (Pending | Running, Paused) => true,
            (_, Finished | Cancelled | Crashed) => true,
            _ => false,
        }
    }
}

/// A sweep id: 1 to 64 characters of `[a-z0-9]`, chosen by the server.
pub fn check_sweep_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!("{id:?} is not a sweep id (1 to 64 of a-z, 0-9)"));
    }
    Ok(())
}

/// A sweep as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sweep {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The queue its runs (and its scheduler) go to.
    pub queue: String,
    pub state: SweepState,
    /// Why it ended the way it did (crashed: the scheduler's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The sweep config as given (W&B's sweep YAML, as JSON).
    #[schema(value_type = Object)]
    pub config: Value,
    /// Most of its runs live at once.
    pub concurrency: u32,
    /// The item of kind `scheduler` that drives it.
    pub scheduler_item: ItemId,
    pub created_at_ms: Millis,
    pub updated_at_ms: Millis,
}

/// `POST /sweeps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSweep {
    pub queue: String,
    /// W&B's sweep config (the YAML, as JSON).
    #[schema(value_type = Object)]
    pub config: Value,
    /// Most runs live at once (1 to 1000; default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// `POST /sweeps/{id}/state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepStateChange {
    pub state: SweepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /sweeps/{id}/runs`: the scheduler enqueues the run with this index. The same index
/// twice gives back the first item, so a scheduler resumed elsewhere never doubles a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepRunRequest {
    pub index: u32,
    pub spec: LaunchSpec,
}

/// One metric of a run, summed up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricSummary {
    pub last: f64,
    pub min: f64,
    pub max: f64,
    /// The step of the last value.
    pub step: u64,
    pub count: u64,
}

/// A run's metrics: every record as sent, and a summary per numeric key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunMetrics {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Map<String, Value>>,
    pub summary: std::collections::BTreeMap<String, MetricSummary>,
}

/// Keys a record uses for its step; not metrics themselves.
pub const STEP_KEYS: &[&str] = &["step", "_step"];

impl RunMetrics {
    /// The summary of `records`; a record's step is its `step` (or `_step`) or its position.
    pub fn summarize(records: Vec<Map<String, Value>>) -> RunMetrics {
        let mut summary: std::collections::BTreeMap<String, MetricSummary> = Default::default();
        for (i, rec) in records.iter().enumerate() {
            let step = record_step(rec, i);
            for (key, v) in rec {
                let Some(v) = v.as_f64().filter(|v| v.is_finite()) else {
                    continue;
                };
                if STEP_KEYS.contains(&key.as_str()) || key.starts_with('_') {
                    continue;
                }
                summary
                    .entry(key.clone())
                    .and_modify(|s| {
                        s.last = v;
                        s.step = step;
                        s.min = s.min.min(v);
                        s.max = s.max.max(v);
                        s.count += 1;
                    })
                    .or_insert(MetricSummary {
                        last: v,
                        min: v,
                        max: v,
                        step,
                        count: 1,
                    });
            }
        }
        RunMetrics { records, summary }
    }

    /// One metric's `(step, value)` history, in the order sent.
    pub fn history(&self, name: &str) -> Vec<(u64, f64)> {
        self.records
            .iter()
            .enumerate()
            .filter_map(|(i, rec)| {
                let v = rec.get(name)?.as_f64().filter(|v| v.is_finite())?;
                Some((record_step(rec, i), v))
            })
            .collect()
    }
}

fn record_step(rec: &Map<String, Value>, position: usize) -> u64 {
    STEP_KEYS
        .iter()
        .find_map(|k| rec.get(*k).and_then(Value::as_u64))
        .unwrap_or(position as u64)
}

/// `POST /runs/{id}/metrics`: records (JSON objects) to append. The agent shipping a run's
/// metrics file gives each batch's first line number, so a batch sent twice is kept once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsAppend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Map<String, Value>>,
}

/// Most records in one append, bytes in one record, and records kept per run.
pub const MAX_METRICS_BATCH: usize = 10_000;
pub const MAX_METRIC_RECORD: usize = 64 * 1024;
pub const MAX_METRICS_PER_RUN: u64 = 1_000_000;

/// One run of a sweep as its scheduler and `sweep show` see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SweepRun {
    pub index: u32,
    pub item_id: ItemId,
    pub item_state: ItemState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
    /// A stop was asked (by a user, or by hyperband) and the run has not ended yet.
    pub stop_requested: bool,
    /// The run's parameters (its run config).
    #[schema(value_type = Object)]
    pub params: Value,
    /// The sweep's metric: its summary and `(step, value)` history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<(u64, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /sweeps/{id}`: the sweep, counts of its runs by item state, and the best run so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SweepView {
    pub sweep: Sweep,
    pub runs: Vec<SweepRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<SweepRun>,
}

/// A stop with the reason recorded on the run (hyperband's cut, a user's note).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use SweepState::*;
        assert!(Pending.may_become(Running));
        assert!(Running.may_become(Paused) && Paused.may_become(Running));
        assert!(Running.may_become(Cancelled) && Paused.may_become(Finished));
        assert!(!Running.may_become(Running) && !Running.may_become(Pending));
        assert!(!Finished.may_become(Running) && !Cancelled.may_become(Cancelled));
    }

    #[test]
    fn summary_keeps_last_min_max_by_step() {
        let recs: Vec<Map<String, Value>> = [
            serde_json::json!({"step": 1, "loss": 3.0, "note": "x"}),
            serde_json::json!({"step": 2, "loss": 1.0}),
            serde_json::json!({"step": 3, "loss": 2.0, "acc": 0.5}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let m = RunMetrics::summarize(recs);
        let loss = &m.summary["loss"];
        assert_eq!(
            (loss.last, loss.min, loss.max, loss.step, loss.count),
            (2.0, 1.0, 3.0, 3, 3)
        );
        assert!(!m.summary.contains_key("step") && !m.summary.contains_key("note"));
        assert_eq!(m.history("loss"), vec![(1, 3.0), (2, 1.0), (3, 2.0)]);
        assert_eq!(m.history("acc"), vec![(3, 0.5)]);
    }

    #[test]
    fn sweep_ids() {
        assert!(check_sweep_id("ab12").is_ok());
        assert!(check_sweep_id("").is_err() && check_sweep_id("A").is_err());
        assert!(check_sweep_id("../x").is_err());
    }
}
