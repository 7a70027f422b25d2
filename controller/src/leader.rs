//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does
//! it: the holder renews the lease well within its duration; another replica
//! takes it over only once it has not been renewed for a whole duration.
//! Writes use the lease's resourceVersion, so two replicas can never both
//! win. Only the leader runs the controllers; every replica serves the API.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// Pure: may `me` take or keep a lease held by `holder`, last renewed at
/// `renewed`, with `duration` seconds of validity, at `now`?
pub fn may_take(
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    duration_secs: i32,
    me: &str,
    now: Timestamp,
) -> bool {
    match holder {
        None | Some("") => true,
        Some(h) if h == me => true,
        Some(_) => match renewed {
            None => true,
            Some(r) => now.duration_since(r).as_secs_f64() > f64::from(duration_secs),
        },
    }
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    fn spec(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes or renews the lease; true while this replica holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        if !may_take(
            holder,
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_duration_seconds.unwrap_or(15),
            &self.identity,
            Timestamp::now(),
        ) {
            return Ok(false);
        }
        let ours = holder == Some(self.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut next = current;
        next.spec = Some(self.spec(acquired, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote first (resourceVersion moved on).
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(
                        lease = self.name,
                        identity = self.identity,
                        "became the leader"
                    );
                    return;
                }
                Ok(false) if !logged => {
                    tracing::info!(lease = self.name, "another replica leads; waiting");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: cannot reach the lease"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    fn retry_period(&self) -> Duration {
        (self.duration / 4).max(Duration::from_millis(250))
    }

    /// Renews until the lease is lost (returns then). Renewals that fail for
    /// longer than the lease lasts count as lost: another replica may lead.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = self.name, "lost the leader lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: renewal failed");
                    if last_ok.elapsed() > self.duration {
                        tracing::error!("could not renew the leader lease in time");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on shutdown so that another replica leads at once.
    pub async fn release(&self) {
        let Ok(Some(mut l)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = l.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        // Expired at once: the next candidate does not wait a duration.
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &l)
            .await
        {
            tracing::warn!(error = %e, "could not release the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_only_when_free_ours_or_expired() {
        let now = Timestamp::now();
        let ago = |s: i64| now - k8s_openapi::jiff::SignedDuration::from_secs(s);
        assert!(may_take(None, None, 15, "me", now));
        assert!(may_take(Some(""), Some(now), 15, "me", now));
        assert!(may_take(Some("me"), Some(now), 15, "me", now));
        assert!(!may_take(Some("other"), Some(ago(5)), 15, "me", now));
        assert!(may_take(Some("other"), Some(ago(16)), 15, "me", now));
    }
}
