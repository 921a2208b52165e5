//! Hyperband early termination as W&B runs it: brackets at `min_iter · etaᵏ` steps; at each
//! bracket, a run whose metric there is worse than the cut of all runs that reached it (the
//! best `1/eta` of them) is stopped.

use crate::config::{Goal, Hyperband};

/// One run's metric history: `(step, value)` in step order.
pub type History = Vec<(u64, f64)>;

impl Hyperband {
    /// The bracket steps up to `max_step`.
    pub fn brackets(&self, max_step: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut b = self.min_iter as f64;
        while b <= max_step as f64 {
            out.push(b.round() as u64);
            b *= self.eta;
        }
        out
    }

    /// Which of `runs` (by index) to stop; only runs in `live` are candidates, but every run
    /// (finished ones too) counts toward a bracket's cut.
    pub fn to_stop(&self, runs: &[History], live: &[bool], goal: Goal) -> Vec<usize> {
        let max_step = runs
            .iter()
            .filter_map(|h| h.last().map(|(s, _)| *s))
            .max()
            .unwrap_or(0);
        let mut stop = Vec::new();
        for bracket in self.brackets(max_step) {
            // Each run's value at the bracket: its last value at or before that step.
            let at: Vec<Option<f64>> = runs
                .iter()
                .map(|h| {
                    if h.last().is_some_and(|(s, _)| *s >= bracket) {
                        h.iter()
                            .take_while(|(s, _)| *s <= bracket)
                            .last()
                            .map(|(_, v)| *v)
                    } else {
                        None
                    }
                })
                .collect();
            let mut values: Vec<f64> = at.iter().flatten().copied().collect();
            if values.len() < 2 {
                continue;
            }
            values.sort_by(|a, b| match goal {
                Goal::Minimize => a.total_cmp(b),
                Goal::Maximize => b.total_cmp(a),
            });
            let keep = ((values.len() as f64 / self.eta).ceil() as usize).max(1);
            let cut = values[keep - 1];
            for (i, v) in at.iter().enumerate() {
                if let Some(v) = v {
                    if live[i] && goal.better(cut, *v) && !stop.contains(&i) {
                        stop.push(i);
                    }
                }
            }
        }
        stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_grow_by_eta() {
        let hb = Hyperband {
            eta: 3.0,
            min_iter: 3,
        };
        assert_eq!(hb.brackets(100), vec![3, 9, 27, 81]);
    }

    #[test]
    fn the_worse_runs_at_a_bracket_are_stopped() {
        let hb = Hyperband {
            eta: 3.0,
            min_iter: 2,
        };
        // Six runs with loss curves c/step: lower c is better.
        let runs: Vec<History> = (1..=6)
            .map(|c| (1..=3).map(|s| (s, c as f64 / s as f64)).collect())
            .collect();
        let live = vec![true; 6];
        let stop = hb.to_stop(&runs, &live, Goal::Minimize);
        // Best 1/3 of 6 = 2 runs kept at step 2.
        let mut stop = stop;
        stop.sort();
        assert_eq!(stop, vec![2, 3, 4, 5]);
        // A finished run is never asked to stop, but still counts toward the cut.
        let live = vec![true, true, true, false, false, false];
        assert_eq!(hb.to_stop(&runs, &live, Goal::Minimize), vec![2]);
        // A run that has not reached the bracket is left alone.
        let mut young = runs.clone();
        young[5] = vec![(1, 99.0)];
        assert!(!hb.to_stop(&young, &[true; 6], Goal::Minimize).contains(&5));
    }
}
