//! What a reconciliation can fail with. Each kind has a metric label, so
//! `simcache_operator_reconcile_failures_total{error=…}` says what breaks.

use simcache_store::StoreError;
use simcache_store::random::RandomError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{kind} {name} has no uid yet")]
    MissingUid { kind: &'static str, name: String },
    #[error("Secret {namespace}/{name} is still being deleted; the run's tokens wait for it")]
    TokenSecretBusy { namespace: String, name: String },
    #[error("creating the run's cache session: {0}")]
    Session(#[source] simcache_web::ApiError),
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The run's pod cannot be planned (a SystemOfRecord is missing or
    /// cannot be wired); the run says why and retries.
    #[error(transparent)]
    PodPlan(#[from] PlanError),
}

/// Why a run's pod cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Refused(#[from] simcache_core::pod::Refused),
    #[error(transparent)]
    Wiring(#[from] simcache_core::pod::sor_wiring::WiringError),
    #[error(
        "SystemOfRecord {name:?} does not exist in namespace {namespace}; create it or remove it from the Simulation's spec.systemsOfRecord"
    )]
    MissingSystemOfRecord { name: String, namespace: String },
    #[error(
        "spec.sfmControl names {0:?}, which spec.sfmDevices does not list; a pod controls only devices it reads"
    )]
    ControlOfUnlistedDevice(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `error` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::Store(StoreError::Unavailable(_)) => "store_unavailable",
            Error::Store(StoreError::Full(_)) => "store_full",
            Error::Store(_) => "store",
            Error::Finalizer(_) => "finalizer",
            Error::MissingUid { .. } => "missing_uid",
            Error::TokenSecretBusy { .. } => "token_secret_busy",
            Error::Session(_) => "session",
            Error::Random(_) => "random",
            Error::PodPlan(_) => "pod_plan",
        }
    }

    /// Every label, so each series exists from the first scrape.
    pub const LABELS: [&'static str; 11] = [
        "kube_api",
        "kube_client",
        "store_unavailable",
        "store_full",
        "store",
        "finalizer",
        "missing_uid",
        "token_secret_busy",
        "session",
        "random",
        "pod_plan",
    ];
}
