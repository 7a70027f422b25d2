//! The phase table: every (phase, outcome) pair through `transition`, and
//! every branch of the `decide_*` functions.

use super::*;
use crate::attempt::{Ingested, PodOutcome};
use serde_json::json;
use simcache_rundb::ParamError;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn t0() -> Timestamp {
    at("2026-03-01T10:00:00Z")
}

fn ident() -> Ident {
    Ident {
        hash: "h".into(),
        key: "thermal/1/h".into(),
    }
}

const PHASES: [Phase; 6] = [
    Phase::Pending,
    Phase::WaitingForCache,
    Phase::Running,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Cached,
];

fn outcomes() -> Vec<Outcome> {
    vec![
        Outcome::SimulationMissing {
            simulation: "thermal".into(),
            namespace: "ns".into(),
        },
        Outcome::Refused(Refusal::InvalidInputs(ParamError::WrongType {
            name: "temperature".into(),
            expected: simcache_rundb::ValueType::Number,
            got: "string",
            value: "\"hot\"".into(),
        })),
        Outcome::Refused(Refusal::VersionMismatch {
            simulation: "thermal".into(),
            have: "1".into(),
            want: "2".into(),
        }),
        Outcome::CacheHit {
            ident: ident(),
            result: CachedResult {
                execution_id: "e0".into(),
                outputs: BTreeMap::from([("y".to_string(), json!(1))]),
                result_id: Some(3),
                duration: Some(2.5),
            },
        },
        Outcome::Waiting {
            ident: ident(),
            holder: "ns/other".into(),
            execution_id: "e9".into(),
        },
        Outcome::Started {
            ident: ident(),
            cache: CacheStatus::Miss,
            check: CacheCheck::Miss,
            attempt: 1,
            pod: "p-1".into(),
            execution_id: "e1".into(),
        },
        Outcome::Started {
            ident: ident(),
            cache: CacheStatus::Skipped,
            check: CacheCheck::Skipped,
            attempt: 2,
            pod: "p-2".into(),
            execution_id: "e2".into(),
        },
        Outcome::Started {
            ident: ident(),
            cache: CacheStatus::LookupFailure,
            check: CacheCheck::LookupFailed,
            attempt: 1,
            pod: "p-1".into(),
            execution_id: "e1".into(),
        },
        Outcome::PodRefused {
            ident: ident(),
            message: "exceeded quota".into(),
        },
        Outcome::Succeeded {
            execution_id: "e1".into(),
            cache: CacheStatus::Populated,
            outputs: BTreeMap::from([("y".to_string(), json!(2))]),
            result_id: Some(4),
            duration: Some(1.5),
        },
        Outcome::AttemptFailed {
            message: "exit code 3".into(),
            next_attempt: 2,
            limit: 2,
            after: Duration::from_secs(10),
        },
        Outcome::Failed {
            message: "the simulation exited with code 3".into(),
        },
        Outcome::AttemptLost,
        Outcome::SpecChanged { generation: 3 },
        Outcome::CleanedUp,
    ]
}

/// What each outcome leads to: the phase (None: unchanged), the event's
/// reason and whether it is a warning, and the cache decision counted.
fn expected(
    o: &Outcome,
) -> (
    Option<Phase>,
    Option<(&'static str, bool)>,
    Option<&'static str>,
) {
    match o {
        Outcome::SimulationMissing { .. } => (Some(Phase::Pending), None, None),
        Outcome::Refused(Refusal::InvalidInputs(_)) => {
            (Some(Phase::Failed), Some(("InvalidInputs", true)), None)
        }
        Outcome::Refused(Refusal::VersionMismatch { .. }) => {
            (Some(Phase::Failed), Some(("VersionMismatch", true)), None)
        }
        Outcome::CacheHit { .. } => (Some(Phase::Cached), Some(("CacheHit", false)), Some("hit")),
        Outcome::Waiting { .. } => (
            Some(Phase::WaitingForCache),
            Some(("WaitingForCache", false)),
            Some("wait"),
        ),
        Outcome::Started { check, .. } => (
            Some(Phase::Running),
            Some(("Started", false)),
            Some(match check {
                CacheCheck::Miss => "miss",
                CacheCheck::LookupFailed => "error",
                _ => "bypass",
            }),
        ),
        Outcome::PodRefused { .. } => (Some(Phase::Pending), Some(("PodCreateFailed", true)), None),
        Outcome::Succeeded { .. } => (Some(Phase::Succeeded), Some(("Succeeded", false)), None),
        Outcome::AttemptFailed { .. } => {
            (Some(Phase::Pending), Some(("AttemptFailed", true)), None)
        }
        Outcome::Failed { .. } => (Some(Phase::Failed), Some(("Failed", true)), None),
        Outcome::AttemptLost => (Some(Phase::Pending), None, None),
        Outcome::SpecChanged { .. } => (None, Some(("SpecChanged", true)), None),
        Outcome::CleanedUp => (None, Some(("CleanedUp", false)), None),
    }
}

/// A plausible status of a run in `phase`, with every condition set at t0.
fn status_in(phase: Phase) -> SimulationRunStatus {
    let mut s = SimulationRunStatus {
        phase,
        attempts: 1,
        observed_generation: Some(2),
        start_time: Some(Time(t0())),
        message: Some(format!("in {}", phase_name(phase))),
        ..Default::default()
    };
    match phase {
        Phase::WaitingForCache => s.waiting_for = Some("ns/other".into()),
        Phase::Running => {
            s.pod_name = Some("p-1".into());
            s.execution_id = Some("e1".into());
        }
        Phase::Cached => {
            s.cached_from = Some("e0".into());
            s.completion_time = Some(Time(t0()));
        }
        Phase::Succeeded | Phase::Failed => s.completion_time = Some(Time(t0())),
        Phase::Pending => {}
    }
    let finished = is_finished(phase);
    for (t, ok) in [
        (INPUTS_VALID, true),
        (CACHE_CHECKED, true),
        (COMPLETED, finished),
        (READY, matches!(phase, Phase::Succeeded | Phase::Cached)),
    ] {
        conditions::set(&mut s.conditions, t, ok, "Before", "", Some(2), t0());
    }
    s
}

#[test]
fn every_phase_and_outcome_pair_follows_the_table() {
    let now = t0() + SignedDuration::from_secs(60);
    for from in PHASES {
        for o in outcomes() {
            let prev = status_in(from);
            let (want_phase, want_event, want_lookup) = expected(&o);
            let what = format!("{from:?} + {o:?}");
            let t = transition(&prev, o.clone(), now, Some(3));
            let s = &t.status;
            let phase = want_phase.unwrap_or(from);
            assert_eq!(s.phase, phase, "{what}");
            assert_eq!(
                t.entered,
                (phase != from).then_some(phase),
                "{what}: the phase metric counts changes only"
            );
            // Events: the table's, except repeats that say nothing new.
            let repeat_wait =
                matches!(o, Outcome::Waiting { .. }) && from == Phase::WaitingForCache;
            let got = t.event.as_ref().map(|n| (n.reason, n.warning));
            if repeat_wait {
                assert_eq!(got, None, "{what}: no event for waiting on");
                assert_eq!(t.lookup, None, "{what}");
            } else {
                assert_eq!(got, want_event, "{what}");
                assert_eq!(t.lookup, want_lookup, "{what}");
            }
            if want_phase.is_none() {
                // Bookkeeping of a finished run: the phase conditions stay.
                for c in &prev.conditions {
                    assert!(s.conditions.contains(c), "{what}: {c:?} kept");
                }
                assert_eq!(s.observed_generation, Some(2), "{what}: describes what ran");
                continue;
            }
            // Fields each phase owns, and only it.
            assert_eq!(
                s.waiting_for.is_some(),
                phase == Phase::WaitingForCache,
                "{what}"
            );
            assert_eq!(s.cached_from.is_some(), phase == Phase::Cached, "{what}");
            assert_eq!(is_finished(phase), s.completion_time.is_some(), "{what}");
            if phase != Phase::Pending {
                assert_eq!(s.next_attempt_time, None, "{what}");
            }
            if phase == Phase::Running {
                assert!(s.pod_name.is_some() && s.execution_id.is_some(), "{what}");
                assert_eq!(
                    s.start_time,
                    Some(Time(t0())),
                    "{what}: the first start stays"
                );
            }
            assert!(s.message.is_some(), "{what}");
            assert_eq!(s.observed_generation, Some(3), "{what}");
            // Conditions: Completed and Ready always; each names the
            // generation; the transition time moves only on a flip.
            let completed = conditions::find(&s.conditions, COMPLETED).unwrap();
            assert_eq!(completed.status == "True", is_finished(phase), "{what}");
            assert_eq!(completed.reason, phase_name(phase), "{what}");
            assert_eq!(
                Some(completed.message.as_str()),
                s.message.as_deref(),
                "{what}"
            );
            let ready = conditions::find(&s.conditions, READY).unwrap();
            assert_eq!(
                ready.status == "True",
                matches!(phase, Phase::Succeeded | Phase::Cached),
                "{what}"
            );
            for c in &s.conditions {
                let before = conditions::find(&prev.conditions, &c.type_).unwrap();
                if before.status == c.status {
                    assert_eq!(
                        c.last_transition_time, before.last_transition_time,
                        "{what}: {c:?}"
                    );
                } else {
                    assert_eq!(c.last_transition_time, Time(now), "{what}: {c:?}");
                }
                if c.reason != "Before" {
                    assert_eq!(c.observed_generation, Some(3), "{what}: {c:?}");
                }
            }
        }
    }
}

#[test]
fn each_outcome_sets_what_it_learned() {
    let now = t0();
    let prev = SimulationRunStatus::default();
    let find = |s: &SimulationRunStatus, t: &str| conditions::find(&s.conditions, t).cloned();

    let hit = transition(&prev, outcomes()[3].clone(), now, Some(1)).status;
    assert_eq!(hit.cache_status, Some(CacheStatus::Hit));
    assert_eq!((hit.result_id, hit.duration_seconds), (Some(3), Some(2.5)));
    assert_eq!(hit.outputs["y"], json!(1));
    assert_eq!(hit.cache_key.as_deref(), Some("thermal/1/h"));
    let c = find(&hit, CACHE_CHECKED).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Hit"));
    assert_eq!(find(&hit, INPUTS_VALID).unwrap().status, "True");
    assert_eq!(find(&hit, COMPLETED).unwrap().reason, "Cached");

    let refused = transition(&prev, outcomes()[1].clone(), now, Some(1)).status;
    let c = find(&refused, INPUTS_VALID).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "InvalidInputs")
    );
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("temperature: expected number")
    );
    let c = find(&refused, CACHE_CHECKED).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Skipped"));
    assert_eq!(find(&refused, READY).unwrap().reason, "InvalidInputs");

    let missing = transition(&prev, outcomes()[0].clone(), now, Some(1)).status;
    assert_eq!(find(&missing, INPUTS_VALID).unwrap().status, "Unknown");
    assert_eq!(find(&missing, READY).unwrap().reason, "SimulationNotFound");

    for (i, reason, status) in [
        (5, "Miss", "True"),
        (6, "Skipped", "False"),
        (7, "LookupFailed", "False"),
    ] {
        let s = transition(&prev, outcomes()[i].clone(), now, Some(1)).status;
        let c = find(&s, CACHE_CHECKED).unwrap();
        assert_eq!((c.reason.as_str(), c.status.as_str()), (reason, status));
    }

    // A retry waits; the next attempt starts a fresh clock but keeps the first start.
    let running = status_in(Phase::Running);
    let backoff = transition(&running, outcomes()[10].clone(), now, Some(2)).status;
    assert_eq!(
        backoff.next_attempt_time,
        Some(Time(now + SignedDuration::from_secs(10)))
    );
    assert_eq!(find(&backoff, READY).unwrap().reason, "RetryBackoff");
    assert!(
        backoff
            .message
            .as_deref()
            .unwrap()
            .contains("attempt 2 of 3 in 10 s")
    );
    assert_eq!(
        backoff_left(&backoff, now + SignedDuration::from_secs(4)),
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        backoff_left(&backoff, now + SignedDuration::from_secs(10)),
        None
    );

    // Failing measures the time since the first start.
    let failed = transition(
        &running,
        outcomes()[11].clone(),
        t0() + SignedDuration::from_secs(90),
        Some(2),
    )
    .status;
    assert_eq!(failed.duration_seconds, Some(90.0));
    assert_eq!(find(&failed, COMPLETED).unwrap().reason, "Failed");

    // A pod refused twice for the same reason is reported once.
    let refused_pod = transition(&prev, outcomes()[8].clone(), now, Some(1));
    assert!(refused_pod.event.is_some());
    let again = transition(&refused_pod.status, outcomes()[8].clone(), now, Some(1));
    assert_eq!(again.event, None);

    // The spec change names the generation and how to re-run.
    let done = status_in(Phase::Succeeded);
    let changed = transition(&done, Outcome::SpecChanged { generation: 3 }, now, Some(3)).status;
    let c = find(&changed, SPEC_CHANGED).unwrap();
    assert_eq!(
        (c.status.as_str(), c.observed_generation),
        ("True", Some(3))
    );
    assert!(c.message.contains("new name") && c.message.contains("cacheMode: Refresh"));
    assert!(!spec_change_unreported(&changed, Some(3)));
    assert!(spec_change_unreported(&changed, Some(4)));
    assert!(spec_change_unreported(&done, Some(3)));
    assert!(!spec_change_unreported(&done, Some(2)));
}

fn entry() -> Box<CacheEntry> {
    Box::new(crate::record::cache_entry(
        &crate::record::RunKey {
            simulation_id: 1,
            name: "thermal",
            version: "1",
            hash: "h",
            cache_key: "thermal/1/h",
        },
        "e0",
        Some("/runs/e0.db".into()),
        10,
        &json!({"y": 1}),
        Some(3),
        "ns/r",
        Some(2.5),
        None,
        0,
    ))
}

#[test]
fn pending_asks_only_for_what_it_needs() {
    use PendingDecision::*;
    let facts = |mode, lookup, lease| PendingFacts {
        mode,
        backoff_left: None,
        lookup,
        lease,
    };
    let held = || Lease::HeldBy {
        holder: "ns/a".into(),
        execution_id: "e".into(),
    };
    let start = |cache, check, holds_lease| Start {
        cache,
        check,
        holds_lease,
    };
    let table: Vec<(PendingFacts, PendingDecision)> = vec![
        (
            facts(CacheMode::Use, Lookup::NotAsked, Lease::NotAsked),
            LookUp,
        ),
        (
            facts(CacheMode::Use, Lookup::Hit(entry()), Lease::NotAsked),
            Serve(entry()),
        ),
        (
            facts(CacheMode::Use, Lookup::Miss, Lease::NotAsked),
            AcquireLease,
        ),
        (
            facts(CacheMode::Use, Lookup::Miss, Lease::Taken),
            start(CacheStatus::Miss, CacheCheck::Miss, true),
        ),
        (
            facts(CacheMode::Use, Lookup::Miss, held()),
            WaitFor {
                holder: "ns/a".into(),
                execution_id: "e".into(),
            },
        ),
        (
            facts(
                CacheMode::Use,
                Lookup::Failed("down".into()),
                Lease::NotAsked,
            ),
            start(CacheStatus::LookupFailure, CacheCheck::LookupFailed, false),
        ),
        // Refresh never reads the cache but still computes a key once.
        (
            facts(CacheMode::Refresh, Lookup::NotAsked, Lease::NotAsked),
            AcquireLease,
        ),
        (
            facts(CacheMode::Refresh, Lookup::NotAsked, Lease::Taken),
            start(CacheStatus::Miss, CacheCheck::Skipped, true),
        ),
        (
            facts(CacheMode::Refresh, Lookup::NotAsked, held()),
            WaitFor {
                holder: "ns/a".into(),
                execution_id: "e".into(),
            },
        ),
        (
            facts(CacheMode::Bypass, Lookup::NotAsked, Lease::NotAsked),
            start(CacheStatus::Skipped, CacheCheck::Skipped, false),
        ),
    ];
    for (f, want) in table {
        assert_eq!(decide_pending(&f), want, "{f:?}");
        let mut waiting = f.clone();
        waiting.backoff_left = Some(Duration::from_secs(3));
        assert_eq!(decide_pending(&waiting), Backoff(Duration::from_secs(3)));
    }
    let r = CachedResult::of(&entry());
    assert_eq!(r.execution_id, "e0");
    assert_eq!((r.result_id, r.duration), (Some(3), Some(2.5)));
    assert_eq!(r.outputs["y"], json!(1));
}

#[test]
fn running_attempts_succeed_retry_or_fail() {
    let facts = |pod, ingested: Option<&str>, elapsed| AttemptFacts {
        pod,
        ingested: ingested.map(|s| Ingested {
            run_status: s.into(),
            error_message: None,
            last_logs: vec![],
            age: Duration::from_secs(0),
        }),
        elapsed: Duration::from_secs(elapsed),
        timeout: Some(Duration::from_secs(60)),
        pod_finished_for: Some(Duration::from_secs(1)),
    };
    assert_eq!(
        decide_running(&facts(Some(PodOutcome::Active), None, 5), 1, 0),
        RunningDecision::Wait
    );
    assert_eq!(
        decide_running(
            &facts(Some(PodOutcome::Succeeded), Some("completed"), 5),
            1,
            0
        ),
        RunningDecision::Succeed
    );
    assert!(matches!(
        decide_running(&facts(Some(PodOutcome::Succeeded), Some("failed"), 5), 1, 1),
        RunningDecision::Retry {
            next_attempt: 2,
            stop_pod: false,
            ..
        }
    ));
    assert!(matches!(
        decide_running(&facts(Some(PodOutcome::Succeeded), Some("failed"), 5), 2, 1),
        RunningDecision::Fail {
            stop_pod: false,
            ..
        }
    ));
    // A timeout stops the pod.
    assert!(matches!(
        decide_running(&facts(Some(PodOutcome::Active), None, 61), 1, 0),
        RunningDecision::Fail { stop_pod: true, ref message } if message.contains("timed out")
    ));
}

#[test]
fn finished_runs_clean_up_after_their_ttl_and_report_edits() {
    let f = |leftovers, finished_for, ttl, spec_changed| FinishedFacts {
        leftovers,
        finished_for: Duration::from_secs(finished_for),
        ttl: Duration::from_secs(ttl),
        spec_changed,
    };
    let plan = |clean_up, report_spec_change| FinishedPlan {
        report_spec_change,
        clean_up,
    };
    assert_eq!(
        decide_finished(&f(false, 10, 0, false)),
        plan(Cleanup::Nothing, false)
    );
    assert_eq!(
        decide_finished(&f(true, 0, 0, false)),
        plan(Cleanup::Now, false)
    );
    assert_eq!(
        decide_finished(&f(true, 10, 3600, true)),
        plan(Cleanup::After(Duration::from_secs(3590)), true)
    );
    assert_eq!(
        decide_finished(&f(true, 3600, 3600, false)),
        plan(Cleanup::Now, false)
    );

    let hour = Duration::from_secs(3600);
    assert_eq!(ttl_after_finished(Some(0), Some(60), hour), Duration::ZERO);
    assert_eq!(
        ttl_after_finished(None, Some(60), hour),
        Duration::from_secs(60)
    );
    assert_eq!(ttl_after_finished(None, None, hour), hour);

    let mut s = status_in(Phase::Succeeded);
    assert!(has_leftovers(&s));
    assert_eq!(
        finished_for(&s, t0() + SignedDuration::from_secs(30)),
        Duration::from_secs(30)
    );
    s.cleanup_time = Some(Time(t0()));
    assert!(!has_leftovers(&s), "cleaned up once");
    let cached = SimulationRunStatus {
        phase: Phase::Cached,
        ..Default::default()
    };
    assert!(!has_leftovers(&cached), "a cache hit made no pod");
}
