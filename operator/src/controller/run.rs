//! The SimulationRun controller. Level-triggered: every step reads the run's
//! status, the ledger and the pod, and moves one step on, so an operator
//! restarted at any point picks up where the last one stopped (names are
//! deterministic, creations tolerate "already exists", the ledger ingests
//! an execution once).
//!
//! Pending → (cache hit) Cached
//!         → (another run holds the key's lease) WaitingForCache → Cached | Running
//!         → (lease taken) Running → Succeeded | Failed | Pending (retry)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use simcache_crds::{
    CacheMode, CacheStatus, Phase, Simulation, SimulationRun, SimulationRunStatus,
};
use simcache_store::cache::{CacheEntry, HitDelta};
use simcache_store::clock::now_ms;
use simcache_store::ledger::LeaseOutcome;

use super::{Context, Error, Result, condition, now};
use crate::runs::identity::{cache_key, catalog_name, input_hash, resolve_inputs, run_schema};
use crate::runs::pod::{
    PodPlan, RunTokens, TOKEN_KEY_INGEST, TOKEN_KEY_RUN, TOKEN_KEY_SESSION, build_pod,
    execution_id, pod_name, secret_name, token_secret,
};
use crate::runs::record::{self, Execution, RunKey};
use crate::runs::state::{
    AfterFailure, AttemptFacts, Ingested, Verdict, after_failure, conclude, pod_outcome,
};
use simcache_auth::{AuthConfig, Authenticator, Privilege, PrivilegeSet};

/// While a pod runs, how often the run is looked at (and its lease renewed).
const WATCH_RUNNING: Duration = Duration::from_secs(2);
/// How often a waiting run checks the cache again.
const WATCH_WAITING: Duration = Duration::from_secs(1);
/// How often a run whose Simulation is missing looks again.
const WATCH_MISSING: Duration = Duration::from_secs(10);

/// What identifies the run's result.
struct Identity {
    sim: Arc<Simulation>,
    name: String,
    version: String,
    inputs: BTreeMap<String, Value>,
    hash: String,
    key: String,
}

impl Identity {
    fn run_key(&self, simulation_id: i64) -> RunKey<'_> {
        RunKey {
            simulation_id,
            name: &self.name,
            version: &self.version,
            hash: &self.hash,
            cache_key: &self.key,
        }
    }
}

fn terminal(p: Phase) -> bool {
    matches!(p, Phase::Succeeded | Phase::Failed | Phase::Cached)
}

pub async fn reconcile(run: Arc<SimulationRun>, ctx: Arc<Context>) -> Result<Action> {
    let status = run.status.clone().unwrap_or_default();
    if terminal(status.phase) {
        return Ok(Action::await_change());
    }
    let ns = run.namespace().unwrap_or_default();
    let sim_name = &run.spec.simulation.name;
    let Some(sim) = ctx
        .simulations
        .get(&ObjectRef::<Simulation>::new(sim_name).within(&ns))
    else {
        if status.phase != Phase::Pending {
            // Started already: the Simulation was deleted since, or the
            // watch has not caught up. Keep the attempt; look again.
            return Ok(Action::requeue(WATCH_MISSING));
        }
        let mut s = status.clone();
        s.message = Some(format!(
            "waiting for Simulation {sim_name:?} in namespace {ns:?}"
        ));
        set_ready(&mut s, false, "SimulationNotFound", run.metadata.generation);
        patch(&ctx, &run, &status, s).await?;
        return Ok(Action::requeue(WATCH_MISSING));
    };
    if let Some(v) = &run.spec.simulation.version
        && v != &sim.spec.version
    {
        let msg = format!(
            "Simulation {sim_name:?} is at version {:?}; this run asks for {v:?}",
            sim.spec.version
        );
        return fail(&ctx, &run, &status, "VersionMismatch", msg, None).await;
    }
    let inputs = match resolve_inputs(&sim.spec, &run.spec.inputs) {
        Ok(i) => i,
        Err(m) => {
            return fail(
                &ctx,
                &run,
                &status,
                "InvalidInputs",
                format!("invalid inputs: {m}"),
                None,
            )
            .await;
        }
    };
    let name = catalog_name(&sim);
    let version = sim.spec.version.clone();
    let hash = input_hash(&name, &version, &sim.spec.image, &inputs);
    let id = Identity {
        key: cache_key(&name, &version, &hash),
        sim,
        name,
        version,
        inputs,
        hash,
    };
    match status.phase {
        Phase::Running => watch_attempt(&ctx, &run, &status, &id).await,
        _ => start(&ctx, &run, &status, &id).await,
    }
}

fn uid(run: &SimulationRun) -> Result<String> {
    run.uid()
        .ok_or_else(|| Error::Other("the SimulationRun has no uid yet".into()))
}

fn holder_name(run: &SimulationRun) -> String {
    format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any())
}

fn set_ready(s: &mut SimulationRunStatus, ok: bool, reason: &str, generation: Option<i64>) {
    let msg = s.message.clone().unwrap_or_default();
    let c = condition(&s.conditions, "Ready", ok, reason, msg, generation);
    s.conditions = vec![c];
    s.observed_generation = generation;
}

/// Not yet started (or retrying): serve from the cache, wait for an
/// identical run, or start a pod.
async fn start(
    ctx: &Context,
    run: &SimulationRun,
    status: &SimulationRunStatus,
    id: &Identity,
) -> Result<Action> {
    // Retry backoff: the Ready condition says since when we wait.
    if let Some(wait) = remaining_backoff(status) {
        return Ok(Action::requeue(wait));
    }
    let mut s = status.clone();
    s.input_hash = Some(id.hash.clone());
    s.cache_key = Some(id.key.clone());
    let mode = run.spec.cache_mode;
    let mut cache_status = CacheStatus::Miss;
    if mode == CacheMode::Use {
        match lookup(ctx, &id.key).await {
            Ok(Some(entry)) => return serve_cached(ctx, run, status, s, id, entry).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(key = id.key, error = %e, "cache lookup failed; running without the cache");
                cache_status = CacheStatus::LookupFailure;
            }
        }
    }
    if mode == CacheMode::Bypass {
        cache_status = CacheStatus::Skipped;
        ctx.metrics
            .cache_lookups
            .with_label_values(&["bypass"])
            .inc();
    }
    let uid = uid(run)?;
    let ns = run.namespace().unwrap_or_default();
    let attempt = status.attempts + 1;
    let exec_id = execution_id(&ns, &run.name_any(), &uid, attempt);
    if mode != CacheMode::Bypass && cache_status != CacheStatus::LookupFailure {
        let outcome = ctx
            .stores
            .ledger
            .acquire(
                &id.key,
                &holder_name(run),
                &uid,
                &exec_id,
                ctx.cfg.lease_ttl.as_millis() as i64,
                now_ms(),
            )
            .await?;
        if let LeaseOutcome::HeldBy(h) = outcome {
            if status.phase != Phase::WaitingForCache {
                ctx.metrics.cache_lookups.with_label_values(&["wait"]).inc();
                ctx.metrics
                    .run_phase
                    .with_label_values(&["WaitingForCache"])
                    .inc();
                ctx.event(
                    run,
                    false,
                    "WaitingForCache",
                    format!(
                        "{} is computing the same inputs; waiting for its result",
                        h.holder
                    ),
                )
                .await;
            }
            s.phase = Phase::WaitingForCache;
            s.waiting_for = Some(h.holder.clone());
            s.message = Some(format!(
                "waiting for {} (execution {}), which is computing the same inputs",
                h.holder, h.execution_id
            ));
            set_ready(&mut s, false, "WaitingForCache", run.metadata.generation);
            patch(ctx, run, status, s).await?;
            return Ok(Action::requeue(WATCH_WAITING));
        }
    }
    if mode == CacheMode::Use && cache_status == CacheStatus::Miss {
        ctx.metrics.cache_lookups.with_label_values(&["miss"]).inc();
        let _ = ctx.stores.cache.record_accesses(&[], 1).await;
    }
    let pod = match ensure_pod(ctx, run, id, &uid, attempt, &exec_id).await {
        Ok(p) => p,
        // The API server refuses the pod (quota, admission, an invalid
        // field): say so on the run and try again later.
        Err(Error::Kube(kube::Error::Api(e))) if (400..500).contains(&e.code) && e.code != 409 => {
            let msg = format!("cannot create the pod: {}", e.message);
            if status.message.as_deref() != Some(msg.as_str()) {
                ctx.event(run, true, "PodCreateFailed", msg.clone()).await;
            }
            s.message = Some(msg);
            set_ready(&mut s, false, "PodCreateFailed", run.metadata.generation);
            patch(ctx, run, status, s).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        run = holder_name(run),
        attempt,
        pod,
        execution_id = exec_id,
        "attempt running"
    );
    s.phase = Phase::Running;
    s.cache_status = Some(cache_status);
    s.waiting_for = None;
    s.execution_id = Some(exec_id.clone());
    s.pod_name = Some(pod.clone());
    s.attempts = attempt;
    s.start_time = s.start_time.or_else(|| Some(now()));
    s.message = Some(format!("attempt {attempt} running in pod {pod}"));
    set_ready(&mut s, false, "Running", run.metadata.generation);
    ctx.metrics.run_phase.with_label_values(&["Running"]).inc();
    patch(ctx, run, status, s).await?;
    ctx.event(
        run,
        false,
        "Started",
        format!("attempt {attempt}: pod {pod}, execution {exec_id}"),
    )
    .await;
    Ok(Action::requeue(WATCH_RUNNING))
}

/// The time left of a retry backoff, if the run is in one.
fn remaining_backoff(status: &SimulationRunStatus) -> Option<Duration> {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.reason == "RetryBackoff")?;
    let AfterFailure::Retry { after, .. } = after_failure(status.attempts, i32::MAX) else {
        return None;
    };
    let since = c.last_transition_time.0;
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(since);
    let left = after.as_secs_f64() - elapsed.as_secs_f64();
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

/// A live entry whose run database is still there.
async fn lookup(ctx: &Context, key: &str) -> Result<Option<CacheEntry>> {
    let Some(entry) = ctx.stores.cache.get(key, now_ms()).await? else {
        return Ok(None);
    };
    let present = match &entry.run_db_path {
        Some(p) => tokio::fs::try_exists(Path::new(p)).await.unwrap_or(false),
        None => false,
    };
    if !present {
        tracing::info!(key, "cache entry without its run database; dropping it");
        ctx.stores.cache.delete(key).await?;
        return Ok(None);
    }
    Ok(Some(entry))
}

async fn serve_cached(
    ctx: &Context,
    run: &SimulationRun,
    status: &SimulationRunStatus,
    mut s: SimulationRunStatus,
    id: &Identity,
    entry: CacheEntry,
) -> Result<Action> {
    let meta = entry.metadata.clone().unwrap_or(Value::Null);
    s.phase = Phase::Cached;
    s.cache_status = Some(CacheStatus::Hit);
    s.cached_from = Some(entry.execution_id.clone());
    s.waiting_for = None;
    s.outputs = meta
        .get("outputs")
        .and_then(|o| serde_json::from_value(o.clone()).ok())
        .unwrap_or_default();
    s.result_id = meta.get("result_id").and_then(Value::as_i64);
    s.completion_time = Some(now());
    s.message = Some(format!(
        "served from the cache: execution {} computed these inputs",
        entry.execution_id
    ));
    set_ready(&mut s, true, "Cached", run.metadata.generation);
    let _ = ctx
        .stores
        .cache
        .record_accesses(
            &[HitDelta {
                cache_key: id.key.clone(),
                hits: 1,
                last_accessed_ms: now_ms(),
            }],
            0,
        )
        .await;
    if let Ok(uid) = uid(run) {
        // Our own execution record of the hit, so the catalog's hit rate is right.
        let ns = run.namespace().unwrap_or_default();
        let exec = execution_id(&ns, &run.name_any(), &uid, 0);
        record_execution(
            ctx,
            id,
            Execution {
                cache_hit: true,
                run_db_path: entry.run_db_path.clone(),
                run_db_size_bytes: Some(entry.size_bytes),
                ..Execution::new(&exec, "cached", "Hit")
            },
        )
        .await;
    }
    ctx.metrics.cache_lookups.with_label_values(&["hit"]).inc();
    ctx.metrics.run_phase.with_label_values(&["Cached"]).inc();
    let from = entry.execution_id.clone();
    patch(ctx, run, status, s).await?;
    ctx.event(
        run,
        false,
        "CacheHit",
        format!("served from the cache (execution {from}); no pod started"),
    )
    .await;
    Ok(Action::await_change())
}

/// The run's token Secret and the attempt's pod, created unless they exist.
async fn ensure_pod(
    ctx: &Context,
    run: &SimulationRun,
    id: &Identity,
    uid: &str,
    attempt: i32,
    exec_id: &str,
) -> Result<String> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let pods = ctx.api::<Pod>(&ns);
    let pod = pod_name(&name, uid, attempt);
    if pods.get_opt(&pod).await?.is_some() {
        return Ok(pod);
    }
    let tokens = ensure_tokens(ctx, run, uid).await?;
    ctx.stores
        .ledger
        .expect_ingest(exec_id, uid, &tokens.ingest, now_ms())
        .await?;
    let schema = serde_json::to_value(run_schema(&id.sim.spec)).unwrap_or(Value::Null);
    let spec = &id.sim.spec;
    let plan = PodPlan {
        namespace: &ns,
        run_name: &name,
        run_uid: uid,
        attempt,
        simulation_name: &id.name,
        simulation_version: &id.version,
        image: &spec.image,
        command: &spec.command,
        args: &spec.args,
        resources: spec.resources.as_ref(),
        schema: &schema,
        inputs: &id.inputs,
        input_hash: &id.hash,
        cache_key: &id.key,
        timeout_seconds: run.spec.timeout_seconds,
        sidecar: &ctx.cfg.sidecar,
    };
    match pods.create(&PostParams::default(), &build_pod(&plan)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(pod)
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// The run's tokens: from its Secret when it exists, else new ones in a new
/// Secret (so a restarted operator hands out the same tokens).
async fn ensure_tokens(ctx: &Context, run: &SimulationRun, uid: &str) -> Result<RunTokens> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let secrets = ctx.api::<Secret>(&ns);
    let secret = secret_name(&name, uid);
    if let Some(s) = secrets.get_opt(&secret).await?
        && let Some(t) = read_tokens(&s)
    {
        return Ok(t);
    }
    let tokens = RunTokens {
        run: random_token(),
        ingest: random_token(),
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
        Err(kube::Error::Api(e)) if e.code == 409 => read_tokens(&secrets.get(&secret).await?)
            .ok_or_else(|| Error::Other(format!("Secret {ns}/{secret} lacks the run tokens"))),
        Err(e) => Err(e.into()),
    }
}

fn read_tokens(s: &Secret) -> Option<RunTokens> {
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
        .map_err(|e| Error::Other(format!("creating the run's cache session: {e}")))?;
    Ok(Some(issued.token))
}

/// A pod is running: has it finished, failed, timed out?
async fn watch_attempt(
    ctx: &Context,
    run: &SimulationRun,
    status: &SimulationRunStatus,
    id: &Identity,
) -> Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let uid = uid(run)?;
    let (Some(exec_id), Some(pod_name)) = (status.execution_id.clone(), status.pod_name.clone())
    else {
        // A Running status without its attempt: start over.
        tracing::warn!(
            run = holder_name(run),
            "Running without an execution id; starting over"
        );
        let mut s = status.clone();
        s.phase = Phase::Pending;
        patch(ctx, run, status, s).await?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    let holds_lease = !matches!(
        status.cache_status,
        Some(CacheStatus::Skipped | CacheStatus::LookupFailure)
    );
    if holds_lease {
        let now = now_ms();
        let ttl = ctx.cfg.lease_ttl.as_millis() as i64;
        if !ctx.stores.ledger.heartbeat(&id.key, &uid, ttl, now).await? {
            // Lost it while nobody heartbeat (e.g. the operator was down):
            // take it back if free; either way this attempt goes on.
            let _ = ctx
                .stores
                .ledger
                .acquire(&id.key, &holder_name(run), &uid, &exec_id, ttl, now)
                .await?;
        }
    }
    let pods = ctx.api::<Pod>(&ns);
    let pod = pods.get_opt(&pod_name).await?;
    let ingest = ctx.stores.ledger.ingest(&exec_id).await?;
    let now_ms_ = now_ms();
    let ingested = ingest
        .as_ref()
        .filter(|r| r.ingested_at_ms.is_some())
        .map(|r| Ingested {
            run_status: r.run_status.clone().unwrap_or_default(),
            error_message: r.error_message.clone(),
            last_logs: r.last_logs.clone(),
            age: Duration::from_millis(
                (now_ms_ - r.ingested_at_ms.unwrap_or(now_ms_)).max(0) as u64
            ),
        });
    let started = status
        .start_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
    let since = |t: k8s_openapi::jiff::Timestamp| {
        Duration::from_secs_f64(
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t)
                .as_secs_f64()
                .max(0.0),
        )
    };
    let facts = AttemptFacts {
        pod: pod.as_ref().map(pod_outcome),
        ingested,
        elapsed: since(started),
        timeout: run
            .spec
            .timeout_seconds
            .map(|t| Duration::from_secs(t.max(1) as u64)),
        pod_finished_for: pod.as_ref().and_then(finished_at).map(since),
    };
    match conclude(&facts) {
        Verdict::Wait => Ok(Action::requeue(WATCH_RUNNING)),
        Verdict::Succeeded => {
            let Some(rec) = ingest else {
                return Ok(Action::requeue(WATCH_RUNNING));
            };
            succeed(ctx, run, status, id, &uid, rec, pod.as_ref(), holds_lease).await
        }
        Verdict::TimedOut(msg) => {
            let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
            attempt_failed(ctx, run, status, id, &uid, msg, holds_lease).await
        }
        Verdict::Failed(msg) => attempt_failed(ctx, run, status, id, &uid, msg, holds_lease).await,
    }
}

/// When the simulation container (or else the pod) finished.
fn finished_at(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    let st = pod.status.as_ref()?;
    let from_container = st
        .container_statuses
        .as_ref()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.name == crate::runs::pod::SIMULATION_CONTAINER)
        })
        .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .map(|t| t.0);
    from_container.or_else(|| {
        matches!(st.phase.as_deref(), Some("Succeeded" | "Failed"))
            .then(k8s_openapi::jiff::Timestamp::now)
    })
}

#[allow(clippy::too_many_arguments)]
async fn succeed(
    ctx: &Context,
    run: &SimulationRun,
    status: &SimulationRunStatus,
    id: &Identity,
    uid: &str,
    rec: simcache_store::ledger::IngestRecord,
    pod: Option<&Pod>,
    holds_lease: bool,
) -> Result<Action> {
    let mut s = status.clone();
    let outputs: BTreeMap<String, Value> =
        serde_json::from_value(rec.outputs.clone()).unwrap_or_default();
    let duration = rec.duration_seconds.or_else(|| {
        status.start_time.as_ref().map(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t.0)
                .as_secs_f64()
        })
    });
    let mut cache_status = status.cache_status.unwrap_or(CacheStatus::Miss);
    if run.spec.cache_mode != CacheMode::Bypass {
        let entry = cache_entry(ctx, run, id, &rec, &outputs, duration).await;
        match entry {
            Ok(e) => match ctx.stores.cache.put(e).await {
                Ok(()) => cache_status = CacheStatus::Populated,
                Err(err) => {
                    tracing::warn!(key = id.key, error = %err, "could not write the cache entry");
                    cache_status = CacheStatus::PutFailure;
                }
            },
            Err(err) => {
                tracing::warn!(key = id.key, error = %err, "could not build the cache entry");
                cache_status = CacheStatus::PutFailure;
            }
        }
    }
    let node = pod
        .and_then(|p| p.spec.as_ref())
        .and_then(|sp| sp.node_name.clone());
    record_execution(
        ctx,
        id,
        Execution {
            duration,
            node,
            run_db_path: rec.run_db_path.clone(),
            run_db_size_bytes: rec.size_bytes,
            output_count: rec.outputs.as_object().map(|o| o.len() as i64).unwrap_or(0),
            ..Execution::new(&rec.execution_id, "completed", &format!("{cache_status:?}"))
        },
    )
    .await;
    if holds_lease {
        ctx.stores.ledger.release(&id.key, uid).await?;
    }
    s.phase = Phase::Succeeded;
    s.cache_status = Some(cache_status);
    s.outputs = outputs;
    s.result_id = rec.result_id;
    s.duration_seconds = duration;
    s.completion_time = Some(now());
    s.message = Some(format!("execution {} succeeded", rec.execution_id));
    set_ready(&mut s, true, "Succeeded", run.metadata.generation);
    if let Some(d) = duration {
        ctx.metrics.run_duration.observe(d);
    }
    ctx.metrics
        .run_phase
        .with_label_values(&["Succeeded"])
        .inc();
    patch(ctx, run, status, s).await?;
    ctx.event(
        run,
        false,
        "Succeeded",
        format!(
            "execution {} succeeded in {:.1} s; result cached: {:?}",
            rec.execution_id,
            duration.unwrap_or_default(),
            cache_status
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// The cache entry of a succeeded run, expiring as its policy says.
async fn cache_entry(
    ctx: &Context,
    run: &SimulationRun,
    id: &Identity,
    rec: &simcache_store::ledger::IngestRecord,
    outputs: &BTreeMap<String, Value>,
    duration: Option<f64>,
) -> Result<CacheEntry> {
    let sim_id = catalog_id(ctx, id).await?;
    let ttl = ctx.policy_of(&id.sim).and_then(|p| p.spec.ttl_seconds);
    Ok(record::cache_entry(
        &id.run_key(sim_id),
        &rec.execution_id,
        rec.run_db_path.clone(),
        rec.size_bytes.unwrap_or(0),
        &json!(outputs),
        rec.result_id,
        &holder_name(run),
        duration,
        ttl,
        now_ms(),
    ))
}

async fn catalog_id(ctx: &Context, id: &Identity) -> Result<i64> {
    match ctx.stores.catalog.get(&id.name, Some(&id.version)).await? {
        Some(s) => Ok(s.id),
        None => {
            // The Simulation controller registers it; do it here if it has not yet.
            let spec = crate::runs::identity::catalog_spec(&id.sim);
            match ctx
                .stores
                .catalog
                .register(&spec, Some("simcache-operator"))
                .await?
            {
                simcache_store::catalog::Registration::Created(i)
                | simcache_store::catalog::Registration::Unchanged(i) => Ok(i),
            }
        }
    }
}

/// Records an execution in the catalog (idempotent per execution id). A
/// failure is logged, not fatal: the run's own outcome stands.
async fn record_execution(ctx: &Context, id: &Identity, e: Execution<'_>) {
    let Ok(sim_id) = catalog_id(ctx, id).await else {
        return;
    };
    let rec = e.record(&id.run_key(sim_id), "kubernetes", now_ms());
    if let Err(err) = ctx.stores.catalog.record_execution(&rec).await {
        tracing::warn!(execution_id = e.id, error = %err, "could not record the execution in the catalog");
    }
}

/// An attempt failed: retry after a backoff, or fail the run. A failed run
/// is never cached.
async fn attempt_failed(
    ctx: &Context,
    run: &SimulationRun,
    status: &SimulationRunStatus,
    id: &Identity,
    uid: &str,
    msg: String,
    holds_lease: bool,
) -> Result<Action> {
    if holds_lease {
        ctx.stores.ledger.release(&id.key, uid).await?;
    }
    let limit = run.spec.retry_limit.unwrap_or(0);
    tracing::info!(
        run = holder_name(run),
        attempt = status.attempts,
        limit,
        reason = msg,
        "attempt failed"
    );
    match after_failure(status.attempts, limit) {
        AfterFailure::Retry {
            next_attempt,
            after,
        } => {
            let mut s = status.clone();
            s.phase = Phase::Pending;
            s.message = Some(format!(
                "attempt {} failed: {msg}; attempt {next_attempt} of {} in {} s",
                status.attempts,
                limit + 1,
                after.as_secs()
            ));
            // A fresh transition time: the backoff counts from now.
            s.conditions.clear();
            set_ready(&mut s, false, "RetryBackoff", run.metadata.generation);
            patch(ctx, run, status, s).await?;
            ctx.event(
                run,
                true,
                "AttemptFailed",
                format!("attempt {} failed: {msg}", status.attempts),
            )
            .await;
            Ok(Action::requeue(after))
        }
        AfterFailure::GiveUp => {
            if let Some(exec_id) = &status.execution_id {
                record_execution(ctx, id, Execution::new(exec_id, "failed", "Skipped")).await;
            }
            fail(ctx, run, status, "Failed", msg, Some(status.attempts)).await
        }
    }
}

/// Ends the run as Failed with a message (no pod for invalid runs).
async fn fail(
    ctx: &Context,
    run: &SimulationRun,
    status: &SimulationRunStatus,
    reason: &str,
    msg: String,
    attempts: Option<i32>,
) -> Result<Action> {
    let mut s = status.clone();
    s.phase = Phase::Failed;
    s.waiting_for = None;
    s.completion_time = Some(now());
    if let Some(a) = attempts {
        s.attempts = a;
    }
    if let Some(t) = &status.start_time {
        s.duration_seconds = Some(
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t.0)
                .as_secs_f64(),
        );
    }
    s.message = Some(msg.clone());
    set_ready(&mut s, false, reason, run.metadata.generation);
    ctx.metrics.run_phase.with_label_values(&["Failed"]).inc();
    patch(ctx, run, status, s).await?;
    ctx.event(run, true, reason, msg).await;
    Ok(Action::await_change())
}

/// Every optional field the status may have to clear (a merge patch only
/// removes what it names as null).
const CLEARABLE: &[&str] = &[
    "cacheStatus",
    "inputHash",
    "cacheKey",
    "executionId",
    "podName",
    "cachedFrom",
    "waitingFor",
    "startTime",
    "completionTime",
    "durationSeconds",
    "outputs",
    "resultId",
    "message",
];

fn status_patch(s: &SimulationRunStatus) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        for k in CLEARABLE {
            m.entry(k.to_string()).or_insert(Value::Null);
        }
    }
    json!({ "status": v })
}

async fn patch(
    ctx: &Context,
    run: &SimulationRun,
    before: &SimulationRunStatus,
    after: SimulationRunStatus,
) -> Result<()> {
    if before == &after && run.status.is_some() {
        return Ok(());
    }
    let ns = run.namespace().unwrap_or_default();
    ctx.api::<SimulationRun>(&ns)
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status_patch(&after)),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_patch_clears_what_the_status_no_longer_has() {
        let s = SimulationRunStatus {
            phase: Phase::Running,
            pod_name: Some("p".into()),
            ..Default::default()
        };
        let p = status_patch(&s);
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["podName"], "p");
        assert!(p["status"]["waitingFor"].is_null());
        assert!(p["status"].as_object().unwrap().contains_key("waitingFor"));
    }
}
