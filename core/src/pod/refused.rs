//! Why simcache refuses a pod setting: the field at fault and the rule it
//! breaks. Conditions and `kubectl describe` show the message as
//! `<field>: <rule>`; callers and tests can match on the rule.

use thiserror::Error;

use super::SIMULATION_CONTAINER;

/// A pod setting simcache will not apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{at}: {rule}")]
pub struct Refused {
    /// The field, as a user writes it (`Simulation spec.podTemplate.spec.volumes[0] (run)`).
    pub at: String,
    pub rule: Rule,
}

impl Refused {
    pub(crate) fn new(at: impl Into<String>, rule: Rule) -> Self {
        Refused {
            at: at.into(),
            rule,
        }
    }

    /// The same refusal, with its field under `parent` (`parent.field`).
    pub fn under(self, parent: &str) -> Self {
        Refused {
            at: format!("{parent}.{}", self.at),
            rule: self.rule,
        }
    }
}

/// The rule a refused setting breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rule {
    #[error(
        "simcache sets this key on its pods; choose another (keys under simcache.io/ are simcache's)"
    )]
    OwnedKey,
    #[error(
        "the operator's --pod-node-selector sets it to `{ours}`; it can't be changed to `{wanted}`"
    )]
    FixedNodeSelector { ours: String, wanted: String },
    #[error(
        "simcache uses this volume name (names starting simcache- are simcache's); choose another"
    )]
    OwnedVolume,
    #[error("a second volume with this name")]
    DuplicateVolume,
    #[error(
        "`{0}`: the sidecar is simcache's and can't be changed; use name: {SIMULATION_CONTAINER}"
    )]
    SidecarContainer(String),
    #[error(
        "`{0}`: a template can only shape the simulation's container, not add one; use name: {SIMULATION_CONTAINER}"
    )]
    ExtraContainer(String),
    #[error("the generated pod has no simulation container")]
    NoSimulationContainer,
    #[error(
        "simcache injects this variable (names starting SIMCACHE_ are simcache's); choose another name"
    )]
    OwnedVariable,
    #[error("{0} is simcache's run directory; mount elsewhere")]
    RunDirectoryMount(String),
    #[error(
        "names no volume in Simulation spec.podTemplate.spec.volumes (simcache's volumes can't be mounted again)"
    )]
    UnknownVolume,
    #[error("`{0}` is not a resource name")]
    ResourceName(String),
    #[error("`{0}` is not a quantity (e.g. 250m, 1.5, 64Mi, 2Gi)")]
    Quantity(String),
    #[error("cannot be merged: {0}")]
    Unmergeable(String),
    #[error("the operator enforces Pod Security level {level} on run pods: {problem}")]
    PodSecurity {
        level: &'static str,
        problem: String,
    },
    #[error(
        "ServiceAccount `{0}` is not one the operator allows run pods (--allowed-service-account)"
    )]
    ServiceAccount(String),
}
