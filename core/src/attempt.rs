//! How a running attempt ends, decided from what the operator observes (the
//! pod's status, the ledger's ingest record, the clock), and what follows a
//! failed attempt. No I/O: the controller gathers the facts and applies the
//! verdict.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::pod::SIMULATION_CONTAINER;

/// The pod of an attempt, as far as the run is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum PodOutcome {
    /// Not started yet, or running.
    Active,
    /// The simulation container exited 0 (or the pod succeeded).
    Succeeded,
    /// It failed: exit code when known, and why.
    Failed {
        exit_code: Option<i32>,
        reason: String,
    },
}

/// Reads the pod's phase and the simulation container's termination.
pub fn pod_outcome(pod: &Pod) -> PodOutcome {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == SIMULATION_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if let Some(t) = terminated {
        return if t.exit_code == 0 {
            PodOutcome::Succeeded
        } else {
            PodOutcome::Failed {
                exit_code: Some(t.exit_code),
                reason: t
                    .message
                    .clone()
                    .or_else(|| t.reason.clone())
                    .unwrap_or_else(|| "Error".into()),
            }
        };
    }
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => PodOutcome::Succeeded,
        Some("Failed") => PodOutcome::Failed {
            exit_code: None,
            reason: status
                .and_then(|s| s.message.clone().or_else(|| s.reason.clone()))
                .unwrap_or_else(|| "the pod failed".into()),
        },
        _ => PodOutcome::Active,
    }
}

/// What the ledger knows about the attempt's run database.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    /// `completed` or `failed`, as the run database says.
    pub run_status: String,
    pub error_message: Option<String>,
    pub last_logs: Vec<String>,
    /// How long ago it arrived.
    pub age: Duration,
}

/// The facts about one running attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFacts {
    pub pod: Option<PodOutcome>,
    pub ingested: Option<Ingested>,
    /// How long the attempt has been running.
    pub elapsed: Duration,
    pub timeout: Option<Duration>,
    /// How long the pod has been finished (None while it runs).
    pub pod_finished_for: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing to conclude yet; look again later.
    Wait,
    Succeeded,
    /// The attempt failed, with a message for the user.
    Failed(String),
    /// Timed out: the pod must be stopped.
    TimedOut(String),
}

/// How long after the pod ends its run database may still arrive, and how
/// long an arrived database waits for the pod's exit code.
pub const INGEST_GRACE: Duration = Duration::from_secs(60);

fn with_logs(mut msg: String, logs: &[String]) -> String {
    if !logs.is_empty() {
        msg.push_str("; last log lines:\n");
        msg.push_str(&logs.join("\n"));
    }
    msg
}

/// Decides how a running attempt stands.
pub fn conclude(f: &AttemptFacts) -> Verdict {
    match (&f.ingested, &f.pod) {
        (Some(i), pod) => {
            if let Some(PodOutcome::Failed { exit_code, reason }) = pod {
                let what = match exit_code {
                    Some(c) => format!("the simulation exited with code {c} ({reason})"),
                    None => format!("the pod failed: {reason}"),
                };
                return Verdict::Failed(with_logs(what, &i.last_logs));
            }
            // The sidecar uploads while the pod is still stopping: wait for
            // the exit code, but not forever.
            if pod == &Some(PodOutcome::Active) && i.age < INGEST_GRACE {
                return Verdict::Wait;
            }
            if i.run_status == "completed" {
                Verdict::Succeeded
            } else {
                let why = i
                    .error_message
                    .clone()
                    .unwrap_or_else(|| format!("the run ended as {}", i.run_status));
                Verdict::Failed(with_logs(why, &i.last_logs))
            }
        }
        (None, None) => {
            Verdict::Failed("the pod disappeared before its run database was uploaded".into())
        }
        (None, Some(PodOutcome::Active)) => match f.timeout {
            Some(t) if f.elapsed > t => Verdict::TimedOut(format!(
                "timed out after {} s (timeoutSeconds {})",
                f.elapsed.as_secs(),
                t.as_secs()
            )),
            _ => Verdict::Wait,
        },
        (None, Some(outcome)) => {
            if f.pod_finished_for.unwrap_or_default() < INGEST_GRACE {
                return Verdict::Wait;
            }
            let how = match outcome {
                PodOutcome::Failed {
                    exit_code: Some(c), ..
                } => format!("exit code {c}"),
                PodOutcome::Failed { reason, .. } => reason.clone(),
                _ => "exit code 0".into(),
            };
            Verdict::Failed(format!(
                "the pod ended ({how}) without uploading its run database"
            ))
        }
    }
}

/// After a failed attempt: retry after a backoff, or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    Retry { next_attempt: i32, after: Duration },
    GiveUp,
}

/// `attempt` (1-based) failed; `retry_limit` retries are allowed. The
/// backoff doubles from 10 s, capped at 5 minutes.
pub fn after_failure(attempt: i32, retry_limit: i32) -> AfterFailure {
    if attempt > retry_limit {
        return AfterFailure::GiveUp;
    }
    let secs = 10u64
        .saturating_mul(1 << (attempt - 1).clamp(0, 10))
        .min(300);
    AfterFailure::Retry {
        next_attempt: attempt + 1,
        after: Duration::from_secs(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    fn facts(pod: Option<PodOutcome>, ingested: Option<Ingested>) -> AttemptFacts {
        AttemptFacts {
            pod,
            ingested,
            elapsed: Duration::from_secs(5),
            timeout: Some(Duration::from_secs(600)),
            pod_finished_for: Some(Duration::from_secs(1)),
        }
    }

    fn ingested(status: &str, age: u64) -> Ingested {
        Ingested {
            run_status: status.into(),
            error_message: Some("declared outputs were not produced: x".into()),
            last_logs: vec!["ERROR boom".into()],
            age: Duration::from_secs(age),
        }
    }

    #[test]
    fn the_pod_outcome_follows_the_simulation_container() {
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(pod_outcome(&running), PodOutcome::Active);
        let failed = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "simulation", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}));
        assert_eq!(
            pod_outcome(&failed),
            PodOutcome::Failed {
                exit_code: Some(3),
                reason: "Error".into()
            }
        );
        let ok = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "simulation", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"terminated": {"exitCode": 0}}}]}));
        assert_eq!(pod_outcome(&ok), PodOutcome::Succeeded);
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        assert!(
            matches!(pod_outcome(&evicted), PodOutcome::Failed { exit_code: None, reason } if reason == "Evicted")
        );
    }

    #[test]
    fn success_needs_a_completed_database_and_no_failed_exit() {
        assert_eq!(
            conclude(&facts(
                Some(PodOutcome::Succeeded),
                Some(ingested("completed", 0))
            )),
            Verdict::Succeeded
        );
        // Uploaded while the pod is still stopping: wait for the exit code…
        assert_eq!(
            conclude(&facts(
                Some(PodOutcome::Active),
                Some(ingested("completed", 1))
            )),
            Verdict::Wait
        );
        // …but not forever.
        assert_eq!(
            conclude(&facts(
                Some(PodOutcome::Active),
                Some(ingested("completed", 120))
            )),
            Verdict::Succeeded
        );
        let failed_exit = Some(PodOutcome::Failed {
            exit_code: Some(2),
            reason: "Error".into(),
        });
        match conclude(&facts(failed_exit, Some(ingested("completed", 0)))) {
            Verdict::Failed(m) => {
                assert!(
                    m.contains("exited with code 2") && m.contains("ERROR boom"),
                    "{m}"
                )
            }
            v => panic!("{v:?}"),
        }
        match conclude(&facts(
            Some(PodOutcome::Succeeded),
            Some(ingested("failed", 0)),
        )) {
            Verdict::Failed(m) => assert!(m.contains("declared outputs"), "{m}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn missing_databases_and_timeouts() {
        assert_eq!(
            conclude(&facts(Some(PodOutcome::Active), None)),
            Verdict::Wait
        );
        assert_eq!(
            conclude(&facts(Some(PodOutcome::Succeeded), None)),
            Verdict::Wait,
            "the upload may still come"
        );
        let mut late = facts(Some(PodOutcome::Succeeded), None);
        late.pod_finished_for = Some(Duration::from_secs(61));
        assert!(matches!(conclude(&late), Verdict::Failed(m) if m.contains("without uploading")));
        assert!(
            matches!(conclude(&facts(None, None)), Verdict::Failed(m) if m.contains("disappeared"))
        );
        let mut slow = facts(Some(PodOutcome::Active), None);
        slow.elapsed = Duration::from_secs(601);
        assert!(matches!(conclude(&slow), Verdict::TimedOut(_)));
    }

    #[test]
    fn retries_back_off_and_stop_at_the_limit() {
        assert_eq!(after_failure(1, 0), AfterFailure::GiveUp);
        assert_eq!(
            after_failure(1, 2),
            AfterFailure::Retry {
                next_attempt: 2,
                after: Duration::from_secs(10)
            }
        );
        assert_eq!(
            after_failure(2, 2),
            AfterFailure::Retry {
                next_attempt: 3,
                after: Duration::from_secs(20)
            }
        );
        assert_eq!(after_failure(3, 2), AfterFailure::GiveUp);
        assert!(
            matches!(after_failure(9, 10), AfterFailure::Retry { after, .. } if after == Duration::from_secs(300))
        );
    }
}
