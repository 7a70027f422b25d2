//! A run's secrets: its run token (the simulation's access to its own run
//! API), its ingest token (the sidecar's upload to the operator) and, when
//! pods share the cache, its cache session. Kept in one Secret per run,
//! written afresh for each attempt and never read back by the operator.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use simcache_auth::{AuthConfig, Authenticator};
use simcache_crds::SimulationRun;

use crate::{Context, Error, Result};
use simcache_core::pod::{RunTokens, secret_name, token_secret};

/// New tokens in a new Secret, for an attempt about to get its pod. The
/// operator never reads a Secret (its RBAC has no `get` on Secrets): a
/// Secret left by an earlier attempt, or by a reconcile cut short before
/// its pod was made, is replaced; no pod uses it, since the attempt's pod
/// does not exist yet.
pub async fn issue(
    ctx: &Context,
    run: &SimulationRun,
    uid: &str,
    scope: &simcache_auth::Scope,
) -> Result<RunTokens> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let secrets = ctx.api::<Secret>(&ns);
    let secret = secret_name(&name, uid);
    match secrets.delete(&secret, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let tokens = RunTokens {
        run: simcache_store::random::token()?,
        ingest: simcache_store::random::token()?,
        cache_session: cache_session(ctx, &ns, &name, run.spec.timeout_seconds, scope).await?,
    };
    match secrets
        .create(
            &PostParams::default(),
            &token_secret(&ns, &name, uid, &tokens),
        )
        .await
    {
        Ok(_) => Ok(tokens),
        // The deleted one is still going (a finalizer someone else put on
        // it): try again later; the session made here expires unused.
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::TokenSecretBusy {
            namespace: ns,
            name: secret,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Ends the run's stored session (the shared tier then refuses it, after
/// at most its session cache's few seconds). Pods' own tokens end with
/// their pod; nothing to do for them.
pub async fn revoke_session(ctx: &Context, ns: &str, name: &str) -> Result<()> {
    if ctx.cfg.sidecar.shared_tier_url.is_none() {
        return Ok(());
    }
    ctx.stores
        .sessions
        .delete_sessions_of(&run_session_owner(ns, name))
        .await
        .map_err(Error::Store)?;
    Ok(())
}

/// What a run's session may do: the pod's privileges, and device control
/// when its Simulation declares control of a device (the scope then says
/// which).
fn run_privileges(scope: &simcache_auth::Scope) -> simcache_auth::PrivilegeSet {
    let base = simcache_auth::authenticator::pod_session_privileges();
    if scope.sfm_control.is_empty() {
        base
    } else {
        base.with(&[simcache_auth::Privilege::ControlSfm])
    }
}

/// Whose the run's stored session is, as the sessions table names it.
fn run_session_owner(ns: &str, name: &str) -> String {
    format!("run:{ns}/{name}")
}

/// The run's own session at its sidecar: it may use the cache, its
/// systems of record and its devices there and nothing else. Pods with
/// their own cache get a fresh token their sidecar alone knows (it ends
/// with the pod); with the shared tier, a stored session the tier checks,
/// for as long as the run may take (its timeout plus an hour, else a day).
async fn cache_session(
    ctx: &Context,
    ns: &str,
    name: &str,
    timeout_seconds: Option<i64>,
    scope: &simcache_auth::Scope,
) -> Result<Option<String>> {
    if ctx.cfg.sidecar.shared_tier_url.is_none() {
        return Ok(Some(simcache_store::random::token()?));
    }
    let hours = timeout_seconds.map_or(24.0, |s| s as f64 / 3600.0 + 1.0);
    let auth = Authenticator::new(ctx.stores.sessions.clone(), AuthConfig::default());
    let issued = auth
        .create_scoped(
            &run_session_owner(ns, name),
            run_privileges(scope),
            hours,
            scope,
        )
        .await
        .map_err(Error::Session)?;
    Ok(Some(issued.token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcache_auth::{Privilege, Scope};

    #[test]
    fn a_run_controls_devices_only_when_its_simulation_declares_it() {
        let reads = Scope {
            sfm_devices: vec!["lab/unit-a".into()],
            sfm_control: vec![],
        };
        assert!(!run_privileges(&reads).allows(Privilege::ControlSfm));
        assert!(run_privileges(&reads).allows(Privilege::ReadSfm));
        let controls = Scope {
            sfm_control: vec!["lab/unit-a".into()],
            ..reads
        };
        assert!(run_privileges(&controls).allows(Privilege::ControlSfm));
        assert!(!run_privileges(&controls).allows(Privilege::ManageUsers));
    }
}
