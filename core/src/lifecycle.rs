//! The SimulationRun state machine, without I/O.
//!
//! The controller gathers facts (the cache, the lease, the pod, the ledger,
//! the clock), asks a `decide_*` function what to do, does it, and hands the
//! [`Outcome`] to [`transition`], which alone decides the next status: which
//! fields each phase sets and clears, which conditions change, the event to
//! publish and the metrics to count.
//!
//! ```text
//! Pending ─(hit)──────────────────────────────▶ Cached
//!    │ ─(an identical run holds the lease)─▶ WaitingForCache ─▶ Cached | Running
//!    │ ─(invalid)─────────────────────────────▶ Failed
//!    └─(pod created)─▶ Running ─▶ Succeeded | Failed | Pending (retry after a backoff)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use simcache_crds::{CacheMode, CacheStatus, Phase, SimulationRunStatus};
use simcache_store::cache::CacheEntry;

use crate::attempt::{AfterFailure, AttemptFacts, Verdict, after_failure, conclude};
use crate::cache_key::Refusal;
use crate::conditions::{self, Truth};

/// The run's conditions, as the CRD documents them.
pub const INPUTS_VALID: &str = "InputsValid";
pub const CACHE_CHECKED: &str = "CacheChecked";
pub const COMPLETED: &str = "Completed";
pub const READY: &str = "Ready";
/// Set when a finished run's spec was edited (runs are immutable once finished).
pub const SPEC_CHANGED: &str = "SpecChanged";

/// True for the phases a run never leaves.
pub fn is_finished(p: Phase) -> bool {
    matches!(p, Phase::Succeeded | Phase::Failed | Phase::Cached)
}

/// Every phase, in the order a run goes through them.
pub const PHASES: [Phase; 6] = [
    Phase::Pending,
    Phase::WaitingForCache,
    Phase::Running,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Cached,
];

/// The phase as metrics and conditions name it.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Pending => "Pending",
        Phase::WaitingForCache => "WaitingForCache",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
        Phase::Cached => "Cached",
    }
}

// ---------------------------------------------------------------- Pending

/// A cached result, as a run served from it reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResult {
    pub execution_id: String,
    pub outputs: BTreeMap<String, Value>,
    pub result_id: Option<i64>,
    /// How long the run that computed it took.
    pub duration: Option<f64>,
}

impl CachedResult {
    /// What a cache entry written by [`crate::record::cache_entry`] holds.
    pub fn of(entry: &CacheEntry) -> CachedResult {
        let meta = entry.metadata.as_ref();
        let field = |k: &str| meta.and_then(|m| m.get(k));
        CachedResult {
            execution_id: entry.execution_id.clone(),
            outputs: field("outputs")
                .and_then(|o| serde_json::from_value(o.clone()).ok())
                .unwrap_or_default(),
            result_id: field("result_id").and_then(Value::as_i64),
            duration: field("duration_seconds").and_then(Value::as_f64),
        }
    }
}

/// What the cache said, once asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    NotAsked,
    Hit(Box<CacheEntry>),
    Miss,
    Failed(String),
}

/// The cache key's lease (one computation per key), once asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Lease {
    NotAsked,
    Taken,
    HeldBy {
        holder: String,
        execution_id: String,
    },
}

/// The facts of a run that has not started (or waits to retry).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingFacts {
    pub mode: CacheMode,
    /// Time left of a retry backoff.
    pub backoff_left: Option<Duration>,
    pub lookup: Lookup,
    pub lease: Lease,
}

/// How the cache was consulted, as the `CacheChecked` condition says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheCheck {
    Hit,
    Miss,
    LookupFailed,
    /// Not read: `Bypass` or `Refresh`.
    Skipped,
}

impl CacheCheck {
    pub fn reason(self) -> &'static str {
        match self {
            CacheCheck::Hit => "Hit",
            CacheCheck::Miss => "Miss",
            CacheCheck::LookupFailed => "LookupFailed",
            CacheCheck::Skipped => "Skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PendingDecision {
    /// In a retry backoff: look again then.
    Backoff(Duration),
    /// Ask the cache (then decide again).
    LookUp,
    /// Ask for the key's lease (then decide again).
    AcquireLease,
    Serve(Box<CacheEntry>),
    WaitFor {
        holder: String,
        execution_id: String,
    },
    Start {
        cache: CacheStatus,
        check: CacheCheck,
        holds_lease: bool,
    },
}

/// What a run that has not started does next. Facts not gathered yet are
/// asked for (`LookUp`, `AcquireLease`), so the controller gathers only
/// what the decision needs.
pub fn decide_pending(f: &PendingFacts) -> PendingDecision {
    use PendingDecision::*;
    if let Some(left) = f.backoff_left {
        return Backoff(left);
    }
    let check = match f.mode {
        CacheMode::Bypass => {
            return Start {
                cache: CacheStatus::Skipped,
                check: CacheCheck::Skipped,
                holds_lease: false,
            };
        }
        CacheMode::Refresh => CacheCheck::Skipped,
        CacheMode::Use => match &f.lookup {
            Lookup::NotAsked => return LookUp,
            Lookup::Hit(e) => return Serve(e.clone()),
            // The cache is down: run without it (no lease either, it lives
            // in the same store).
            Lookup::Failed(_) => {
                return Start {
                    cache: CacheStatus::LookupFailure,
                    check: CacheCheck::LookupFailed,
                    holds_lease: false,
                };
            }
            Lookup::Miss => CacheCheck::Miss,
        },
    };
    match &f.lease {
        Lease::NotAsked => AcquireLease,
        Lease::HeldBy {
            holder,
            execution_id,
        } => WaitFor {
            holder: holder.clone(),
            execution_id: execution_id.clone(),
        },
        Lease::Taken => Start {
            cache: CacheStatus::Miss,
            check,
            holds_lease: true,
        },
    }
}

/// Time left before a failed run's next attempt.
pub fn backoff_left(status: &SimulationRunStatus, now: Timestamp) -> Option<Duration> {
    if status.phase != Phase::Pending {
        return None;
    }
    let at = status.next_attempt_time.as_ref()?.0;
    let left = at.duration_since(now);
    (left > SignedDuration::ZERO).then(|| Duration::from_millis(left.as_millis().max(1) as u64))
}

// ---------------------------------------------------------------- Running

#[derive(Debug, Clone, PartialEq)]
pub enum RunningDecision {
    /// Nothing to conclude yet.
    Wait,
    Succeed,
    /// The attempt failed; another follows after `after`.
    Retry {
        message: String,
        next_attempt: i32,
        after: Duration,
        stop_pod: bool,
    },
    /// The attempt failed and no retry is left.
    Fail {
        message: String,
        stop_pod: bool,
    },
}

/// How a running attempt (number `attempt`, with `retry_limit` retries
/// allowed) stands.
pub fn decide_running(f: &AttemptFacts, attempt: i32, retry_limit: i32) -> RunningDecision {
    let (message, stop_pod) = match conclude(f) {
        Verdict::Wait => return RunningDecision::Wait,
        Verdict::Succeeded => return RunningDecision::Succeed,
        Verdict::Failed(m) => (m, false),
        Verdict::TimedOut(m) => (m, true),
    };
    match after_failure(attempt, retry_limit) {
        AfterFailure::Retry {
            next_attempt,
            after,
        } => RunningDecision::Retry {
            message,
            next_attempt,
            after,
            stop_pod,
        },
        AfterFailure::GiveUp => RunningDecision::Fail { message, stop_pod },
    }
}

// ---------------------------------------------------------------- Finished

/// The facts of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedFacts {
    /// A pod (and so the token Secret) was made and not yet deleted.
    pub leftovers: bool,
    /// How long ago the run finished.
    pub finished_for: Duration,
    /// How long its pod and Secret are kept after it finishes.
    pub ttl: Duration,
    /// Its spec was edited after it finished, and that was not yet reported.
    pub spec_changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Nothing,
    Now,
    After(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedPlan {
    pub report_spec_change: bool,
    pub clean_up: Cleanup,
}

pub fn decide_finished(f: &FinishedFacts) -> FinishedPlan {
    let clean_up = if !f.leftovers {
        Cleanup::Nothing
    } else if f.finished_for >= f.ttl {
        Cleanup::Now
    } else {
        Cleanup::After(f.ttl - f.finished_for)
    };
    FinishedPlan {
        report_spec_change: f.spec_changed,
        clean_up,
    }
}

/// Whether the finished run still has a pod and token Secret to delete.
pub fn has_leftovers(status: &SimulationRunStatus) -> bool {
    status.attempts > 0 && status.cleanup_time.is_none()
}

/// How long a finished run's pod and Secret are kept: the run's own
/// setting, else its Simulation's, else the operator's.
pub fn ttl_after_finished(
    run: Option<i64>,
    simulation: Option<i64>,
    default: Duration,
) -> Duration {
    run.or(simulation)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(default)
}

/// A finished run whose spec moved past the generation it ran, not yet
/// reported by a `SpecChanged` condition for that generation.
pub fn spec_change_unreported(status: &SimulationRunStatus, generation: Option<i64>) -> bool {
    let (Some(now), Some(ran)) = (generation, status.observed_generation) else {
        return false;
    };
    now > ran
        && conditions::find(&status.conditions, SPEC_CHANGED)
            .is_none_or(|c| c.observed_generation != Some(now))
}

/// How long the run has been finished.
pub fn finished_for(status: &SimulationRunStatus, now: Timestamp) -> Duration {
    status
        .completion_time
        .as_ref()
        .map(|t| now.duration_since(t.0))
        .filter(|d| *d > SignedDuration::ZERO)
        .map(|d| Duration::from_millis(d.as_millis() as u64))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- Transition

/// The run's identity as its status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub hash: String,
    pub key: String,
}

/// What happened to the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    SimulationMissing {
        simulation: String,
        namespace: String,
    },
    Refused(Refusal),
    CacheHit {
        ident: Ident,
        result: CachedResult,
    },
    Waiting {
        ident: Ident,
        holder: String,
        execution_id: String,
    },
    Started {
        ident: Ident,
        cache: CacheStatus,
        check: CacheCheck,
        attempt: i32,
        pod: String,
        execution_id: String,
    },
    /// The API server refused the attempt's pod (quota, admission, …).
    PodRefused {
        ident: Ident,
        message: String,
    },
    Succeeded {
        execution_id: String,
        cache: CacheStatus,
        outputs: BTreeMap<String, Value>,
        result_id: Option<i64>,
        duration: Option<f64>,
    },
    /// An attempt failed; attempt `next_attempt` of `limit + 1` follows.
    AttemptFailed {
        message: String,
        next_attempt: i32,
        limit: i32,
        after: Duration,
    },
    /// The last attempt failed.
    Failed {
        message: String,
    },
    /// Running without a record of its attempt: start over.
    AttemptLost,
    /// A finished run's spec was edited to generation `generation`.
    SpecChanged {
        generation: i64,
    },
    /// The finished run's pod and token Secret were deleted.
    CleanedUp,
}

/// An event to publish about the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The next status, and what to publish and count about the change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: SimulationRunStatus,
    pub event: Option<Note>,
    /// The phase entered (a phase-transition metric), if it changed.
    pub entered: Option<Phase>,
    /// A cache decision to count (`hit`, `miss`, `wait`, `bypass`).
    pub lookup: Option<&'static str>,
}

fn note(warning: bool, reason: &'static str, message: impl Into<String>) -> Option<Note> {
    Some(Note {
        warning,
        reason,
        message: message.into(),
    })
}

/// The next status after `outcome`, at `now`, for the run's `generation`.
pub fn transition(
    prev: &SimulationRunStatus,
    outcome: Outcome,
    now: Timestamp,
    generation: Option<i64>,
) -> Transition {
    let mut s = prev.clone();
    let mut event = None;
    let mut lookup = None;
    // (InputsValid, CacheChecked) when this outcome says something about them.
    let mut inputs: Option<(Truth, &'static str, String)> = None;
    let mut checked: Option<(Truth, &'static str, String)> = None;
    let mut ready_reason: Option<&'static str> = None;
    let identified = |s: &mut SimulationRunStatus, id: &Ident| {
        s.input_hash = Some(id.hash.clone());
        s.cache_key = Some(id.key.clone());
    };
    let valid = || {
        Some((
            Truth::True,
            "Valid",
            "inputs checked and hashed".to_string(),
        ))
    };
    match outcome {
        Outcome::SimulationMissing {
            simulation,
            namespace,
        } => {
            s.phase = Phase::Pending;
            s.message = Some(format!(
                "waiting for Simulation {simulation:?} in namespace {namespace:?}"
            ));
            inputs = Some((
                Truth::Unknown,
                "SimulationNotFound",
                s.message.clone().unwrap_or_default(),
            ));
            ready_reason = Some("SimulationNotFound");
        }
        Outcome::Refused(r) => {
            s.phase = Phase::Failed;
            s.message = Some(r.to_string());
            s.completion_time = Some(Time(now));
            inputs = Some((Truth::False, r.reason(), r.to_string()));
            checked = Some((
                Truth::False,
                CacheCheck::Skipped.reason(),
                "the run was refused; the cache was not consulted".into(),
            ));
            ready_reason = Some(r.reason());
            event = note(true, r.reason(), r.to_string());
        }
        Outcome::CacheHit { ident, result } => {
            identified(&mut s, &ident);
            s.phase = Phase::Cached;
            s.cache_status = Some(CacheStatus::Hit);
            s.message = Some(format!(
                "served from the cache: execution {} computed these inputs",
                result.execution_id
            ));
            s.cached_from = Some(result.execution_id.clone());
            s.outputs = result.outputs;
            s.result_id = result.result_id;
            s.duration_seconds = result.duration;
            s.completion_time = Some(Time(now));
            inputs = valid();
            checked = Some((
                Truth::True,
                CacheCheck::Hit.reason(),
                format!("cached by execution {}", result.execution_id),
            ));
            lookup = Some("hit");
            event = note(
                false,
                "CacheHit",
                format!(
                    "served from the cache (execution {}); no pod started",
                    result.execution_id
                ),
            );
        }
        Outcome::Waiting {
            ident,
            holder,
            execution_id,
        } => {
            identified(&mut s, &ident);
            s.phase = Phase::WaitingForCache;
            s.message = Some(format!(
                "waiting for {holder} (execution {execution_id}), which is computing the same inputs"
            ));
            s.waiting_for = Some(holder.clone());
            inputs = valid();
            checked = Some((
                Truth::True,
                CacheCheck::Miss.reason(),
                format!("not cached yet; {holder} is computing it"),
            ));
            if prev.phase != Phase::WaitingForCache {
                lookup = Some("wait");
                event = note(
                    false,
                    "WaitingForCache",
                    format!("{holder} is computing the same inputs; waiting for its result"),
                );
            }
        }
        Outcome::Started {
            ident,
            cache,
            check,
            attempt,
            pod,
            execution_id,
        } => {
            identified(&mut s, &ident);
            s.phase = Phase::Running;
            s.cache_status = Some(cache);
            s.execution_id = Some(execution_id.clone());
            s.pod_name = Some(pod.clone());
            s.attempts = attempt;
            s.start_time = s.start_time.or(Some(Time(now)));
            s.message = Some(format!("attempt {attempt} running in pod {pod}"));
            inputs = valid();
            let why = match check {
                CacheCheck::Miss => "not in the cache",
                CacheCheck::LookupFailed => "the cache could not be read; running without it",
                _ => "cacheMode does not read the cache",
            };
            checked = Some((
                (check == CacheCheck::Miss).into(),
                check.reason(),
                why.into(),
            ));
            lookup = match check {
                CacheCheck::Miss => Some("miss"),
                CacheCheck::Skipped => Some("bypass"),
                CacheCheck::LookupFailed => Some("error"),
                CacheCheck::Hit => None,
            };
            event = note(
                false,
                "Started",
                format!("attempt {attempt}: pod {pod}, execution {execution_id}"),
            );
        }
        Outcome::PodRefused { ident, message } => {
            identified(&mut s, &ident);
            s.phase = Phase::Pending;
            let msg = format!("cannot create the pod: {message}");
            if prev.message.as_deref() != Some(msg.as_str()) {
                event = note(true, "PodCreateFailed", msg.clone());
            }
            s.message = Some(msg);
            inputs = valid();
            ready_reason = Some("PodCreateFailed");
        }
        Outcome::Succeeded {
            execution_id,
            cache,
            outputs,
            result_id,
            duration,
        } => {
            s.phase = Phase::Succeeded;
            s.cache_status = Some(cache);
            s.outputs = outputs;
            s.result_id = result_id;
            s.duration_seconds = duration;
            s.completion_time = Some(Time(now));
            s.message = Some(format!("execution {execution_id} succeeded"));
            event = note(
                false,
                "Succeeded",
                format!(
                    "execution {execution_id} succeeded in {:.1} s; result cached: {}",
                    duration.unwrap_or_default(),
                    cache_status_name(cache)
                ),
            );
        }
        Outcome::AttemptFailed {
            message,
            next_attempt,
            limit,
            after,
        } => {
            s.phase = Phase::Pending;
            s.message = Some(format!(
                "attempt {} failed: {message}; attempt {next_attempt} of {} in {} s",
                prev.attempts,
                limit + 1,
                after.as_secs()
            ));
            let wait = SignedDuration::from_millis(after.as_millis() as i64);
            s.next_attempt_time = Some(Time(now.checked_add(wait).unwrap_or(now)));
            ready_reason = Some("RetryBackoff");
            event = note(
                true,
                "AttemptFailed",
                format!("attempt {} failed: {message}", prev.attempts),
            );
        }
        Outcome::Failed { message } => {
            s.phase = Phase::Failed;
            s.completion_time = Some(Time(now));
            if let Some(t) = &prev.start_time {
                s.duration_seconds = Some(now.duration_since(t.0).as_secs_f64().max(0.0));
            }
            s.message = Some(message.clone());
            event = note(true, "Failed", message);
        }
        Outcome::AttemptLost => {
            s.phase = Phase::Pending;
            s.message = Some("the running attempt left no record; starting over".into());
        }
        Outcome::SpecChanged { generation } => {
            let msg = format!(
                "spec generation {generation} was not applied: a run is immutable once it has finished \
                 (it ran generation {}). To run other inputs, create a run with a new name; \
                 to compute the same inputs again, create one with cacheMode: Refresh",
                prev.observed_generation.unwrap_or_default()
            );
            conditions::set(
                &mut s.conditions,
                SPEC_CHANGED,
                true,
                "Immutable",
                msg.clone(),
                Some(generation),
                now,
            );
            return Transition {
                status: s,
                event: note(true, "SpecChanged", msg),
                entered: None,
                lookup: None,
            };
        }
        Outcome::CleanedUp => {
            s.cleanup_time = Some(Time(now));
            let pods = s.attempts;
            return Transition {
                status: s,
                event: note(
                    false,
                    "CleanedUp",
                    format!(
                        "deleted the run's {pods} pod(s) and its token Secret; its record stays"
                    ),
                ),
                entered: None,
                lookup: None,
            };
        }
    }
    // What each phase keeps: fields of other phases are cleared.
    if s.phase != Phase::WaitingForCache {
        s.waiting_for = None;
    }
    if s.phase != Phase::Cached {
        s.cached_from = None;
    }
    if s.phase != Phase::Pending {
        s.next_attempt_time = None;
    }
    if !is_finished(s.phase) {
        s.completion_time = None;
    }
    s.observed_generation = generation;
    let finished = is_finished(s.phase);
    let phase = phase_name(s.phase);
    let message = s.message.clone().unwrap_or_default();
    let c = &mut s.conditions;
    if let Some((t, reason, msg)) = inputs {
        conditions::set(c, INPUTS_VALID, t, reason, msg, generation, now);
    }
    if let Some((t, reason, msg)) = checked {
        conditions::set(c, CACHE_CHECKED, t, reason, msg, generation, now);
    }
    conditions::set(
        c,
        COMPLETED,
        finished,
        phase,
        message.clone(),
        generation,
        now,
    );
    let ok = matches!(s.phase, Phase::Succeeded | Phase::Cached);
    let ready_reason = ready_reason.unwrap_or(phase);
    conditions::set(c, READY, ok, ready_reason, message, generation, now);
    Transition {
        entered: (s.phase != prev.phase).then_some(s.phase),
        status: s,
        event,
        lookup,
    }
}

/// The cache status as the CRD spells it.
pub fn cache_status_name(c: CacheStatus) -> &'static str {
    match c {
        CacheStatus::Hit => "Hit",
        CacheStatus::Miss => "Miss",
        CacheStatus::Populated => "Populated",
        CacheStatus::Skipped => "Skipped",
        CacheStatus::LookupFailure => "LookupFailure",
        CacheStatus::PutFailure => "PutFailure",
    }
}

#[cfg(test)]
mod tests;
