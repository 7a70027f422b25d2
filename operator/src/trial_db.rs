//! The trial database's password: made once, in the cluster, by the
//! operator pod's init container, and never again. A password rendered by
//! the chart would change on every `helm template` (Argo CD, Flux render
//! that way, where `lookup` sees nothing) and lock the operator out of a
//! database initialised with the first one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

/// Where the trial database lives and who logs in.
#[derive(Debug, Clone, clap::Args)]
pub struct TrialDb {
    /// The Secret to make (keys `password` and `url`).
    #[arg(long)]
    pub secret: String,
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The database's Service host name.
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value = "simcache")]
    pub username: String,
    #[arg(long, default_value = "simcache")]
    pub database: String,
}

/// What [`ensure`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// There already (made earlier, by another replica, or by the user):
    /// left exactly as it was.
    Kept,
}

/// The Secret for `password` (URL-safe: hex).
pub fn secret(t: &TrialDb, password: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(t.secret.clone()),
            namespace: Some(t.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                simcache_core::pod::MANAGED_BY.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "simcache.io/purpose".to_string(),
                "trial database credentials; made once, never rotated".to_string(),
            )])),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("password".to_string(), password.to_string()),
            (
                "url".to_string(),
                format!(
                    "postgres://{}:{password}@{}:5432/{}",
                    t.username, t.host, t.database
                ),
            ),
        ])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Makes the Secret unless it exists; never changes one that does.
pub async fn ensure(client: kube::Client, t: &TrialDb) -> anyhow::Result<Ensured> {
    let api: Api<Secret> = Api::namespaced(client, &t.namespace);
    if api.get_opt(&t.secret).await?.is_some() {
        return Ok(Ensured::Kept);
    }
    let password = simcache_store::random::hex_id::<24>()?;
    match api
        .create(&PostParams::default(), &secret(t, &password))
        .await
    {
        Ok(_) => Ok(Ensured::Created),
        // Another replica's init container was first: theirs stands.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Ensured::Kept),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_carries_the_password_for_the_service() {
        let t = TrialDb {
            secret: "s".into(),
            namespace: "simcache".into(),
            host: "simcache-postgresql.simcache.svc".into(),
            username: "simcache".into(),
            database: "simcache".into(),
        };
        let s = secret(&t, "abc123");
        let d = s.string_data.unwrap();
        assert_eq!(d["password"], "abc123");
        assert_eq!(
            d["url"],
            "postgres://simcache:abc123@simcache-postgresql.simcache.svc:5432/simcache"
        );
    }
}
