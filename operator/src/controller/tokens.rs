//! A run's secrets: its run token (the simulation's access to its own run
//! API), its ingest token (the sidecar's upload to the operator) and, when
//! pods share the cache, its cache session. Kept in one Secret per run so
//! that a restarted operator hands out the same ones.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::PostParams;
use simcache_auth::{AuthConfig, Authenticator, Privilege, PrivilegeSet};
use simcache_crds::SimulationRun;

use super::{Context, Error, Result};
use crate::runs::pod::{
    RunTokens, TOKEN_KEY_INGEST, TOKEN_KEY_RUN, TOKEN_KEY_SESSION, secret_name, token_secret,
};

/// The run's tokens: from its Secret when it exists, else new ones in a new
/// Secret.
pub async fn ensure(ctx: &Context, run: &SimulationRun, uid: &str) -> Result<RunTokens> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let secrets = ctx.api::<Secret>(&ns);
    let secret = secret_name(&name, uid);
    if let Some(s) = secrets.get_opt(&secret).await?
        && let Some(t) = read(&s)
    {
        return Ok(t);
    }
    let tokens = RunTokens {
        run: simcache_store::random::token()?,
        ingest: simcache_store::random::token()?,
        cache_session: cache_session(ctx, &ns, &name, run.spec.timeout_seconds).await?,
    };
    match secrets
        .create(
            &PostParams::default(),
            &token_secret(&ns, &name, uid, &tokens),
        )
        .await
    {
        Ok(_) => Ok(tokens),
        // Another reconcile made it first; the session made here expires
        // unused.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            read(&secrets.get(&secret).await?).ok_or(Error::TokensMissing {
                namespace: ns,
                name: secret,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The tokens a run's Secret holds (the cache session is optional: Secrets
/// made before the cache was shared lack it).
pub fn read(s: &Secret) -> Option<RunTokens> {
    let read = |k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Some(RunTokens {
        run: read(TOKEN_KEY_RUN)?,
        ingest: read(TOKEN_KEY_INGEST)?,
        cache_session: read(TOKEN_KEY_SESSION),
    })
}

/// With a cache shared through PostgreSQL, a session for the run's
/// simulation: it may read and write cache entries and nothing else, for as
/// long as the run may take (its timeout plus an hour, else a day).
async fn cache_session(
    ctx: &Context,
    ns: &str,
    name: &str,
    timeout_seconds: Option<i64>,
) -> Result<Option<String>> {
    if ctx.cfg.sidecar.cache_db_secret.is_none() {
        return Ok(None);
    }
    let hours = timeout_seconds.map_or(24.0, |s| s as f64 / 3600.0 + 1.0);
    let auth = Authenticator::new(ctx.stores.sessions.clone(), AuthConfig::default());
    let issued = auth
        .create_for_service(
            &format!("run:{ns}/{name}"),
            PrivilegeSet::of(&[Privilege::ReadCache, Privilege::WriteCache]),
            hours,
        )
        .await
        .map_err(Error::Session)?;
    Ok(Some(issued.token))
}
