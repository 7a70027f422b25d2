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

mod transition;

pub use transition::{Ident, Note, Outcome, Transition, transition};

#[cfg(test)]
mod tests;
