//! The one function that decides a run's next status from what happened
//! ([`Outcome`]): which fields each phase sets and clears, which conditions
//! change, the event to publish and the cache decision to count.

use super::*;

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

/// A condition to set: (status, reason, message).
type Said = (Truth, &'static str, String);

/// What an outcome says beyond the status fields it sets: the event, the
/// cache decision to count, and the conditions it speaks to.
#[derive(Default)]
struct Effect {
    event: Option<Note>,
    lookup: Option<&'static str>,
    inputs: Option<Said>,
    checked: Option<Said>,
    ready_reason: Option<&'static str>,
}

/// The next status after `outcome`, at `now`, for the run's `generation`.
pub fn transition(
    prev: &SimulationRunStatus,
    outcome: Outcome,
    now: Timestamp,
    generation: Option<i64>,
) -> Transition {
    let mut s = prev.clone();
    let effect = match outcome {
        Outcome::SimulationMissing {
            simulation,
            namespace,
        } => simulation_missing(&mut s, &simulation, &namespace),
        Outcome::Refused(r) => refused(&mut s, &r, now),
        Outcome::CacheHit { ident, result } => cache_hit(&mut s, &ident, result, now),
        Outcome::Waiting {
            ident,
            holder,
            execution_id,
        } => waiting(&mut s, prev, &ident, &holder, &execution_id),
        Outcome::Started {
            ident,
            cache,
            check,
            attempt,
            pod,
            execution_id,
        } => {
            identified(&mut s, &ident);
            started(&mut s, cache, check, attempt, &pod, &execution_id, now)
        }
        Outcome::PodRefused { ident, message } => pod_refused(&mut s, prev, &ident, &message),
        Outcome::Succeeded {
            execution_id,
            cache,
            outputs,
            result_id,
            duration,
        } => {
            s.outputs = outputs;
            s.result_id = result_id;
            succeeded(&mut s, &execution_id, cache, duration, now)
        }
        Outcome::AttemptFailed {
            message,
            next_attempt,
            limit,
            after,
        } => attempt_failed(&mut s, prev, &message, next_attempt, limit, after, now),
        Outcome::Failed { message } => failed(&mut s, prev, message, now),
        Outcome::AttemptLost => {
            s.phase = Phase::Pending;
            s.message = Some("the running attempt left no record; starting over".into());
            Effect::default()
        }
        Outcome::SpecChanged { generation } => return spec_changed(s, prev, generation, now),
        Outcome::CleanedUp => return cleaned_up(s, now),
    };
    settle(s, prev, effect, generation, now)
}

fn identified(s: &mut SimulationRunStatus, id: &Ident) {
    s.input_hash = Some(id.hash.clone());
    s.cache_key = Some(id.key.clone());
}

fn inputs_valid() -> Option<Said> {
    Some((
        Truth::True,
        "Valid",
        "inputs checked and hashed".to_string(),
    ))
}

fn simulation_missing(s: &mut SimulationRunStatus, simulation: &str, namespace: &str) -> Effect {
    s.phase = Phase::Pending;
    let message = format!("waiting for Simulation {simulation:?} in namespace {namespace:?}");
    s.message = Some(message.clone());
    Effect {
        inputs: Some((Truth::Unknown, "SimulationNotFound", message)),
        ready_reason: Some("SimulationNotFound"),
        ..Effect::default()
    }
}

fn refused(s: &mut SimulationRunStatus, r: &Refusal, now: Timestamp) -> Effect {
    s.phase = Phase::Failed;
    s.message = Some(r.to_string());
    s.completion_time = Some(Time(now));
    Effect {
        inputs: Some((Truth::False, r.reason(), r.to_string())),
        checked: Some((
            Truth::False,
            CacheCheck::Skipped.reason(),
            "the run was refused; the cache was not consulted".into(),
        )),
        ready_reason: Some(r.reason()),
        event: note(true, r.reason(), r.to_string()),
        ..Effect::default()
    }
}

fn cache_hit(
    s: &mut SimulationRunStatus,
    ident: &Ident,
    result: CachedResult,
    now: Timestamp,
) -> Effect {
    identified(s, ident);
    let execution = result.execution_id;
    s.phase = Phase::Cached;
    s.cache_status = Some(CacheStatus::Hit);
    s.message = Some(format!(
        "served from the cache: execution {execution} computed these inputs"
    ));
    s.cached_from = Some(execution.clone());
    s.outputs = result.outputs;
    s.result_id = result.result_id;
    s.duration_seconds = result.duration;
    s.completion_time = Some(Time(now));
    Effect {
        inputs: inputs_valid(),
        checked: Some((
            Truth::True,
            CacheCheck::Hit.reason(),
            format!("cached by execution {execution}"),
        )),
        lookup: Some("hit"),
        event: note(
            false,
            "CacheHit",
            format!("served from the cache (execution {execution}); no pod started"),
        ),
        ..Effect::default()
    }
}

fn waiting(
    s: &mut SimulationRunStatus,
    prev: &SimulationRunStatus,
    ident: &Ident,
    holder: &str,
    execution_id: &str,
) -> Effect {
    identified(s, ident);
    s.phase = Phase::WaitingForCache;
    s.message = Some(format!(
        "waiting for {holder} (execution {execution_id}), which is computing the same inputs"
    ));
    s.waiting_for = Some(holder.to_string());
    let mut effect = Effect {
        inputs: inputs_valid(),
        checked: Some((
            Truth::True,
            CacheCheck::Miss.reason(),
            format!("not cached yet; {holder} is computing it"),
        )),
        ..Effect::default()
    };
    if prev.phase != Phase::WaitingForCache {
        effect.lookup = Some("wait");
        effect.event = note(
            false,
            "WaitingForCache",
            format!("{holder} is computing the same inputs; waiting for its result"),
        );
    }
    effect
}

fn started(
    s: &mut SimulationRunStatus,
    cache: CacheStatus,
    check: CacheCheck,
    attempt: i32,
    pod: &str,
    execution_id: &str,
    now: Timestamp,
) -> Effect {
    s.phase = Phase::Running;
    s.cache_status = Some(cache);
    s.execution_id = Some(execution_id.to_string());
    s.pod_name = Some(pod.to_string());
    s.attempts = attempt;
    s.start_time = s.start_time.clone().or(Some(Time(now)));
    s.message = Some(format!("attempt {attempt} running in pod {pod}"));
    let why = match check {
        CacheCheck::Miss => "not in the cache",
        CacheCheck::LookupFailed => "the cache could not be read; running without it",
        _ => "cacheMode does not read the cache",
    };
    Effect {
        inputs: inputs_valid(),
        checked: Some((
            (check == CacheCheck::Miss).into(),
            check.reason(),
            why.into(),
        )),
        lookup: match check {
            CacheCheck::Miss => Some("miss"),
            CacheCheck::Skipped => Some("bypass"),
            CacheCheck::LookupFailed => Some("error"),
            CacheCheck::Hit => None,
        },
        event: note(
            false,
            "Started",
            format!("attempt {attempt}: pod {pod}, execution {execution_id}"),
        ),
        ..Effect::default()
    }
}

fn pod_refused(
    s: &mut SimulationRunStatus,
    prev: &SimulationRunStatus,
    ident: &Ident,
    message: &str,
) -> Effect {
    identified(s, ident);
    s.phase = Phase::Pending;
    let msg = format!("cannot create the pod: {message}");
    let event = if prev.message.as_deref() != Some(msg.as_str()) {
        note(true, "PodCreateFailed", msg.clone())
    } else {
        None
    };
    s.message = Some(msg);
    Effect {
        event,
        inputs: inputs_valid(),
        ready_reason: Some("PodCreateFailed"),
        ..Effect::default()
    }
}

fn succeeded(
    s: &mut SimulationRunStatus,
    execution_id: &str,
    cache: CacheStatus,
    duration: Option<f64>,
    now: Timestamp,
) -> Effect {
    s.phase = Phase::Succeeded;
    s.cache_status = Some(cache);
    s.duration_seconds = duration;
    s.completion_time = Some(Time(now));
    s.message = Some(format!("execution {execution_id} succeeded"));
    Effect {
        event: note(
            false,
            "Succeeded",
            format!(
                "execution {execution_id} succeeded in {:.1} s; result cached: {}",
                duration.unwrap_or_default(),
                cache_status_name(cache)
            ),
        ),
        ..Effect::default()
    }
}

fn attempt_failed(
    s: &mut SimulationRunStatus,
    prev: &SimulationRunStatus,
    message: &str,
    next_attempt: i32,
    limit: i32,
    after: Duration,
    now: Timestamp,
) -> Effect {
    s.phase = Phase::Pending;
    s.message = Some(format!(
        "attempt {} failed: {message}; attempt {next_attempt} of {} in {} s",
        prev.attempts,
        limit + 1,
        after.as_secs()
    ));
    let wait = SignedDuration::from_millis(after.as_millis() as i64);
    s.next_attempt_time = Some(Time(now.checked_add(wait).unwrap_or(now)));
    Effect {
        ready_reason: Some("RetryBackoff"),
        event: note(
            true,
            "AttemptFailed",
            format!("attempt {} failed: {message}", prev.attempts),
        ),
        ..Effect::default()
    }
}

fn failed(
    s: &mut SimulationRunStatus,
    prev: &SimulationRunStatus,
    message: String,
    now: Timestamp,
) -> Effect {
    s.phase = Phase::Failed;
    s.completion_time = Some(Time(now));
    if let Some(t) = &prev.start_time {
        s.duration_seconds = Some(now.duration_since(t.0).as_secs_f64().max(0.0));
    }
    s.message = Some(message.clone());
    Effect {
        event: note(true, "Failed", message),
        ..Effect::default()
    }
}

/// A finished run's spec was edited: only the SpecChanged condition moves.
fn spec_changed(
    mut s: SimulationRunStatus,
    prev: &SimulationRunStatus,
    generation: i64,
    now: Timestamp,
) -> Transition {
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
    Transition {
        status: s,
        event: note(true, "SpecChanged", msg),
        entered: None,
        lookup: None,
    }
}

/// The run's pods and token Secret are gone; nothing else changes.
fn cleaned_up(mut s: SimulationRunStatus, now: Timestamp) -> Transition {
    s.cleanup_time = Some(Time(now));
    let pods = s.attempts;
    Transition {
        status: s,
        event: note(
            false,
            "CleanedUp",
            format!("deleted the run's {pods} pod(s) and its token Secret; its record stays"),
        ),
        entered: None,
        lookup: None,
    }
}

/// Clears what the new phase does not keep, and sets the conditions the
/// outcome spoke to, Completed and Ready.
fn settle(
    mut s: SimulationRunStatus,
    prev: &SimulationRunStatus,
    effect: Effect,
    generation: Option<i64>,
    now: Timestamp,
) -> Transition {
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
    if let Some((t, reason, msg)) = effect.inputs {
        conditions::set(c, INPUTS_VALID, t, reason, msg, generation, now);
    }
    if let Some((t, reason, msg)) = effect.checked {
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
    let ready_reason = effect.ready_reason.unwrap_or(phase);
    conditions::set(c, READY, ok, ready_reason, message, generation, now);
    Transition {
        entered: (s.phase != prev.phase).then_some(s.phase),
        status: s,
        event: effect.event,
        lookup: effect.lookup,
    }
}
