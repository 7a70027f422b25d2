//! What a sweep does next (pure): which points get their run now, and the
//! counts and phase its status shows. The controller gathers the facts
//! (the runs that exist, which points are cached) and applies the plan.

use std::collections::{BTreeSet, HashMap};

use simcache_crds::{FailurePolicy, Phase, SweepPhase};

/// Runs created in one reconcile at most: a 100,000-point sweep is made
/// over several passes rather than in one burst at the API server.
pub const MAX_CREATES_PER_PASS: usize = 500;

/// What the controller knows about one point's run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunFacts {
    pub phase: Phase,
    /// For a Cached run, the producing run's duration.
    pub duration_seconds: Option<f64>,
}

/// Everything the plan depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Each point's run name, in point order.
    pub names: &'a [String],
    /// The runs that exist, by name.
    pub runs: &'a HashMap<String, RunFacts>,
    /// Points whose result is already in the cache (their runs cost nothing).
    pub cached: &'a BTreeSet<usize>,
    pub max_parallel: usize,
    pub failure_policy: FailurePolicy,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub cached: i64,
    pub failed: i64,
    /// Made, not finished: Pending, WaitingForCache or Running.
    pub in_flight: i64,
    pub compute_seconds_saved: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Points whose run to create now, in order.
    pub create: Vec<usize>,
    pub counts: Counts,
    pub phase: SweepPhase,
    /// Every point finished, or the sweep stopped and nothing runs.
    pub completed: bool,
    pub message: String,
}

pub fn count(f: &Facts) -> Counts {
    let mut c = Counts {
        total: f.names.len() as i64,
        ..Default::default()
    };
    for name in f.names {
        match f.runs.get(name) {
            None => c.pending += 1,
            Some(r) => match r.phase {
                Phase::Pending | Phase::WaitingForCache => {
                    c.pending += 1;
                    c.in_flight += 1;
                }
                Phase::Running => {
                    c.running += 1;
                    c.in_flight += 1;
                }
                Phase::Succeeded => c.succeeded += 1,
                Phase::Cached => {
                    c.cached += 1;
                    c.compute_seconds_saved += r.duration_seconds.unwrap_or(0.0);
                }
                Phase::Failed => c.failed += 1,
            },
        }
    }
    c
}

pub fn plan(f: &Facts) -> Plan {
    let counts = count(f);
    let stopped = f.failure_policy == FailurePolicy::StopOnFirstFailure && counts.failed > 0;
    let mut create = Vec::new();
    if !stopped {
        // Cached points cost nothing and never wait for a slot; the others
        // fill the slots maxParallel leaves.
        let mut slots = (f.max_parallel as i64 - counts.in_flight).max(0);
        for (i, name) in f.names.iter().enumerate() {
            if create.len() >= MAX_CREATES_PER_PASS {
                break;
            }
            if f.runs.contains_key(name) {
                continue;
            }
            if f.cached.contains(&i) {
                create.push(i);
            } else if slots > 0 {
                create.push(i);
                slots -= 1;
            }
        }
    }
    let finished = counts.succeeded + counts.cached + counts.failed;
    let (phase, completed, message) = if stopped {
        if counts.in_flight == 0 {
            (
                SweepPhase::Failed,
                true,
                format!(
                    "stopped after a failure (failurePolicy StopOnFirstFailure): {finished}/{} points finished, {} failed",
                    counts.total, counts.failed
                ),
            )
        } else {
            (
                SweepPhase::Running,
                false,
                format!(
                    "a run failed; starting no more, waiting for the {} still going",
                    counts.in_flight
                ),
            )
        }
    } else if finished == counts.total {
        let phase = if counts.failed == 0 {
            SweepPhase::Succeeded
        } else if counts.failed == counts.total {
            SweepPhase::Failed
        } else {
            SweepPhase::PartiallyFailed
        };
        (
            phase,
            true,
            format!(
                "{} points: {} computed, {} from the cache, {} failed",
                counts.total, counts.succeeded, counts.cached, counts.failed
            ),
        )
    } else {
        (
            SweepPhase::Running,
            false,
            format!(
                "{finished}/{} points finished, {} computing",
                counts.total, counts.running
            ),
        )
    };
    Plan {
        create,
        counts,
        phase,
        completed,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    fn facts<'a>(
        names: &'a [String],
        runs: &'a HashMap<String, RunFacts>,
        cached: &'a BTreeSet<usize>,
        max_parallel: usize,
        policy: FailurePolicy,
    ) -> Facts<'a> {
        Facts {
            names,
            runs,
            cached,
            max_parallel,
            failure_policy: policy,
        }
    }

    fn run(phase: Phase) -> RunFacts {
        RunFacts {
            phase,
            duration_seconds: Some(2.5),
        }
    }

    #[test]
    fn runs_start_up_to_max_parallel_and_cached_points_at_once() {
        let n = names(10);
        let runs = HashMap::new();
        let cached: BTreeSet<usize> = [1, 7].into();
        let p = plan(&facts(&n, &runs, &cached, 3, FailurePolicy::Continue));
        assert_eq!(p.create, [0, 1, 2, 3, 7], "3 slots plus the 2 cached");
        assert_eq!(p.phase, SweepPhase::Running);
        assert!(!p.completed);
        // With 2 of 3 slots taken, one more starts.
        let runs: HashMap<_, _> = [
            ("p0".to_string(), run(Phase::Running)),
            ("p1".to_string(), run(Phase::Cached)),
            ("p2".to_string(), run(Phase::WaitingForCache)),
            ("p3".to_string(), run(Phase::Succeeded)),
        ]
        .into();
        let p = plan(&facts(
            &n,
            &runs,
            &BTreeSet::new(),
            3,
            FailurePolicy::Continue,
        ));
        assert_eq!(p.create, [4]);
        assert_eq!(
            (
                p.counts.pending,
                p.counts.running,
                p.counts.succeeded,
                p.counts.cached
            ),
            (7, 1, 1, 1)
        );
        assert_eq!(p.counts.in_flight, 2);
        assert_eq!(p.counts.compute_seconds_saved, 2.5);
        assert_eq!(p.message, "2/10 points finished, 1 computing");
    }

    #[test]
    fn a_finished_sweep_says_how_it_ended() {
        let n = names(3);
        let all = |phases: [Phase; 3]| -> HashMap<String, RunFacts> {
            n.iter().cloned().zip(phases.map(run)).collect()
        };
        let none = BTreeSet::new();
        for (phases, want) in [
            (
                [Phase::Succeeded, Phase::Cached, Phase::Succeeded],
                SweepPhase::Succeeded,
            ),
            (
                [Phase::Succeeded, Phase::Failed, Phase::Cached],
                SweepPhase::PartiallyFailed,
            ),
            (
                [Phase::Failed, Phase::Failed, Phase::Failed],
                SweepPhase::Failed,
            ),
        ] {
            let runs = all(phases);
            let p = plan(&facts(&n, &runs, &none, 2, FailurePolicy::Continue));
            assert_eq!((p.phase, p.completed), (want, true), "{phases:?}");
            assert!(p.create.is_empty());
        }
        let runs = all([Phase::Succeeded, Phase::Cached, Phase::Cached]);
        let p = plan(&facts(&n, &runs, &none, 2, FailurePolicy::Continue));
        assert_eq!(
            p.message,
            "3 points: 1 computed, 2 from the cache, 0 failed"
        );
        assert_eq!(p.counts.compute_seconds_saved, 5.0);
    }

    #[test]
    fn stop_on_first_failure_starts_nothing_more_and_fails_once_the_rest_end() {
        let n = names(6);
        let mut runs: HashMap<_, _> = [
            ("p0".to_string(), run(Phase::Failed)),
            ("p1".to_string(), run(Phase::Running)),
        ]
        .into();
        let cached: BTreeSet<usize> = [4].into();
        let p = plan(&facts(
            &n,
            &runs,
            &cached,
            4,
            FailurePolicy::StopOnFirstFailure,
        ));
        assert!(p.create.is_empty(), "not even cached points");
        assert_eq!((p.phase, p.completed), (SweepPhase::Running, false));
        runs.insert("p1".into(), run(Phase::Succeeded));
        let p = plan(&facts(
            &n,
            &runs,
            &cached,
            4,
            FailurePolicy::StopOnFirstFailure,
        ));
        assert_eq!((p.phase, p.completed), (SweepPhase::Failed, true));
        assert!(
            p.message.contains("2/6 points finished, 1 failed"),
            "{}",
            p.message
        );
        // Continue goes on past it.
        let p = plan(&facts(&n, &runs, &cached, 4, FailurePolicy::Continue));
        assert_eq!(p.create, [2, 3, 4, 5]);
    }

    #[test]
    fn one_pass_creates_a_bounded_number_of_runs() {
        let n = names(2000);
        let runs = HashMap::new();
        let cached: BTreeSet<usize> = (0..2000).collect();
        let p = plan(&facts(&n, &runs, &cached, 10, FailurePolicy::Continue));
        assert_eq!(p.create.len(), MAX_CREATES_PER_PASS);
    }
}
