//! A run's exit file: the record the supervisor writes in place when a run ends, for an
//! agent that was not connected to hear it.

use crate::Exit;
use serde::{Deserialize, Serialize};

/// The size of an exit file's record: the run's id and exit as JSON, padded with spaces
/// (JSON allows them), so a record always overwrites the whole of an older one.
pub const EXIT_RECORD: usize = 96;

/// What an exit file holds. The run's id tells a record from one a reused run directory
/// still holds from its last run.
#[derive(Serialize, Deserialize)]
struct ExitRecord {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(flatten)]
    exit: Exit,
}

/// A run's exit as its exit file holds it.
pub fn exit_record(run_id: &str, exit: &Exit) -> Vec<u8> {
    let record = ExitRecord {
        run_id: Some(run_id.to_string()),
        exit: *exit,
    };
    let mut bytes = serde_json::to_vec(&record).unwrap_or_default();
    bytes.resize(bytes.len().max(EXIT_RECORD), b' ');
    bytes
}

/// The exit an exit file records for `run_id` (a record without an id is taken as its own).
pub fn read_exit_record(bytes: &[u8], run_id: &str) -> Option<Exit> {
    let record: ExitRecord = serde_json::from_slice(bytes).ok()?;
    record
        .run_id
        .is_none_or(|id| id == run_id)
        .then_some(record.exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_record_is_read_for_its_own_run_only() {
        let exit = Exit {
            code: 3,
            signal: None,
        };
        let record = exit_record("run1", &exit);
        assert_eq!(record.len(), EXIT_RECORD, "padded to a fixed size");
        assert_eq!(read_exit_record(&record, "run1"), Some(exit));
        // A reused run directory still holds its last run's record.
        assert_eq!(read_exit_record(&record, "run2"), None);
        assert_eq!(read_exit_record(&[b' '; EXIT_RECORD], "run1"), None);
        // Written by an older supervisor, without the id.
        assert_eq!(read_exit_record(br#"{"code":3}"#, "run1"), Some(exit));
    }
}
