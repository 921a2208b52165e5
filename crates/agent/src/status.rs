//! The agent's status line (the seed's `print_status`): one line, printed when it changes and
//! periodically.

use liftoff_types::{AgentStatus, ItemId};

/// A snapshot of what the agent is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub status: AgentStatus,
    pub queues: Vec<String>,
    pub jobs: usize,
    pub max_jobs: i64,
    pub schedulers: usize,
    pub max_schedulers: i64,
    pub in_flight: Vec<ItemId>,
}

fn limit(n: i64) -> String {
    if n < 0 {
        "∞".to_string()
    } else {
        n.to_string()
    }
}

impl Snapshot {
    pub fn line(&self) -> String {
        let ids: Vec<String> = self.in_flight.iter().map(ToString::to_string).collect();
        let ids = if ids.is_empty() {
            "-".to_string()
        } else {
            ids.join(",")
        };
        format!(
            "agent {} · {} · queues {} · jobs {}/{} · schedulers {}/{} · in flight {}",
            self.name,
            self.status,
            self.queues.join(","),
            self.jobs,
            limit(self.max_jobs),
            self.schedulers,
            limit(self.max_schedulers),
            ids
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_clear_line() {
        let s = Snapshot {
            name: "box-1".into(),
            status: AgentStatus::Running,
            queues: vec!["a".into(), "b".into()],
            jobs: 2,
            max_jobs: 4,
            schedulers: 0,
            max_schedulers: -1,
            in_flight: vec![ItemId(7), ItemId(9)],
        };
        assert_eq!(
            s.line(),
            "agent box-1 · running · queues a,b · jobs 2/4 · schedulers 0/∞ · in flight 7,9"
        );
    }
}
