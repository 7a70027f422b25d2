//! Status conditions as Kubernetes conventions want them: one per type,
//! `lastTransitionTime` moving only when `status` flips, and every condition
//! naming the generation it describes. No I/O; the clock is passed in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::True => "True",
            Truth::False => "False",
            Truth::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Truth {
    fn from(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }
}

/// Sets condition `type_` in `conditions` (replacing the one there), keeping
/// its transition time when its status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: impl Into<Truth>,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = status.into().as_str();
    let next = |since: Time| Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let since = if c.status == status {
                c.last_transition_time.clone()
            } else {
                Time(now)
            };
            *c = next(since);
        }
        None => conditions.push(next(Time(now))),
    }
}

/// The condition of type `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let mut cs = Vec::new();
        set(&mut cs, "Ready", false, "Pending", "", Some(1), t0);
        set(&mut cs, "Ready", false, "Running", "pod p", Some(2), t1);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Time(t0), "same status");
        assert_eq!(
            (cs[0].reason.as_str(), cs[0].message.as_str()),
            ("Running", "pod p")
        );
        assert_eq!(cs[0].observed_generation, Some(2));
        set(&mut cs, "Ready", true, "Succeeded", "", Some(2), t2);
        assert_eq!(cs[0].last_transition_time, Time(t2), "flipped");
        set(
            &mut cs,
            "Completed",
            Truth::Unknown,
            "Pending",
            "",
            None,
            t2,
        );
        assert_eq!(find(&cs, "Completed").unwrap().status, "Unknown");
        assert_eq!(cs.len(), 2);
    }
}
