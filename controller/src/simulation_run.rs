//! The SimulationRun controller: gather facts → decide → apply.
//!
//! The decisions and the status they lead to are pure (`runs::lifecycle`);
//! this file only asks the cluster and the stores, acts on a decision, and
//! applies the transition (one patch, one event, the metrics). It is
//! level-triggered: names are deterministic, creations tolerate "already
//! exists", the ledger ingests an execution once, and a finished run's
//! clean-up is read from its status, so an operator restarted at any point
//! picks up where the last one stopped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use simcache_crds::{
    CacheMode, CacheStatus, Phase, SFMDevice, Simulation, SimulationRun, SimulationRunStatus,
};
use simcache_store::cache::{CacheEntry, HitDelta};
use simcache_store::clock::now_ms;
use simcache_store::ledger::{IngestRecord, LeaseOutcome};

use crate::error::PlanError;
use crate::status::patch_run;
use crate::{Context, Error, Result, tokens};
use simcache_core::attempt::{AttemptFacts, Ingested, pod_outcome};
use simcache_core::cache_key::{RunIdentity, identify, run_schema};
use simcache_core::lifecycle::{
    self, CacheCheck, CachedResult, Cleanup, FinishedFacts, Ident, Lease, Lookup, Outcome,
    PendingDecision, PendingFacts, RunningDecision, Transition, decide_finished, decide_pending,
    decide_running, transition,
};
use simcache_core::pod::sor_wiring;
use simcache_core::pod::{
    PodPlan, SIMULATION_CONTAINER, SfmDeviceRef, build_pod, execution_id, pod_name, secret_name,
};
use simcache_core::record::{self, Completed, Execution, cache_outcome};

/// While a pod runs, how often the run is looked at (and its lease renewed).
const WATCH_RUNNING: Duration = Duration::from_secs(2);
/// How often a waiting run checks the cache again.
const WATCH_WAITING: Duration = Duration::from_secs(1);
/// How often a run whose Simulation is missing looks again.
const WATCH_MISSING: Duration = Duration::from_secs(10);
/// How soon a run whose pod was refused tries again.
const RETRY_POD: Duration = Duration::from_secs(30);

/// One reconciliation's view of a run.
struct Run<'a> {
    ctx: &'a Context,
    obj: &'a SimulationRun,
    ns: String,
    name: String,
}

pub async fn reconcile(run: Arc<SimulationRun>, ctx: Arc<Context>) -> Result<Action> {
    let r = Run {
        ns: run.namespace().unwrap_or_default(),
        name: run.name_any(),
        ctx: &ctx,
        obj: &run,
    };
    let status = run.status.clone().unwrap_or_default();
    let sim = ctx.simulation(&r.ns, &run.spec.simulation.name);
    if lifecycle::is_finished(status.phase) {
        return r.finished(status, sim.as_deref()).await;
    }
    let Some(sim) = sim else {
        if status.phase != Phase::Pending {
            // Started already: the Simulation was deleted since, or the
            // watch has not caught up. Keep the attempt; look again.
            return Ok(Action::requeue(WATCH_MISSING));
        }
        let missing = Outcome::SimulationMissing {
            simulation: run.spec.simulation.name.clone(),
            namespace: r.ns.clone(),
        };
        r.apply(&status, missing).await?;
        return Ok(Action::requeue(WATCH_MISSING));
    };
    let id = match identify(&sim, &run.spec) {
        Ok(id) => id,
        Err(refusal) => {
            let done = r.apply(&status, Outcome::Refused(refusal)).await?;
            return r.finished(done, Some(&sim)).await;
        }
    };
    match status.phase {
        Phase::Running => r.running(status, &sim, &id).await,
        _ => r.pending(status, &sim, &id).await,
    }
}

fn ident(id: &RunIdentity) -> Ident {
    Ident {
        hash: id.hash.clone(),
        key: id.key.clone(),
    }
}

impl Run<'_> {
    fn uid(&self) -> Result<String> {
        self.obj.uid().ok_or_else(|| Error::MissingUid {
            kind: "SimulationRun",
            name: format!("{}/{}", self.ns, self.name),
        })
    }

    /// `namespace/name`: who holds a cache key's lease.
    fn holder(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    /// Applies a transition: the status patch, the event, the metrics.
    async fn apply(
        &self,
        before: &SimulationRunStatus,
        outcome: Outcome,
    ) -> Result<SimulationRunStatus> {
        let Transition {
            status,
            event,
            entered,
            lookup,
        } = transition(
            before,
            outcome,
            Timestamp::now(),
            self.obj.metadata.generation,
        );
        patch_run(self.ctx, self.obj, before, &status).await?;
        let m = &self.ctx.metrics;
        if let Some(p) = entered {
            m.run_phase
                .with_label_values(&[lifecycle::phase_name(p)])
                .inc();
            if p == Phase::Succeeded
                && let Some(d) = status.duration_seconds
            {
                m.run_duration.observe(d);
            }
            // A hit carries the producing run's duration: what it saved.
            if p == Phase::Cached
                && let Some(d) = status.duration_seconds
            {
                m.compute_seconds_saved.inc_by(d.max(0.0));
            }
        }
        if let Some(l) = lookup {
            m.cache_lookups.with_label_values(&[l]).inc();
        }
        if let Some(n) = event {
            self.ctx
                .event(self.obj, n.warning, n.reason, n.message)
                .await;
        }
        Ok(status)
    }

    // ------------------------------------------------------------ Pending

    /// Not yet started (or retrying): serve from the cache, wait for an
    /// identical run, or start a pod.
    async fn pending(
        &self,
        status: SimulationRunStatus,
        sim: &Simulation,
        id: &RunIdentity,
    ) -> Result<Action> {
        let uid = self.uid()?;
        let attempt = status.attempts + 1;
        let exec_id = execution_id(&self.ns, &self.name, &uid, attempt);
        let mut facts = PendingFacts {
            mode: self.obj.spec.cache_mode,
            backoff_left: lifecycle::backoff_left(&status, Timestamp::now()),
            lookup: Lookup::NotAsked,
            lease: Lease::NotAsked,
        };
        loop {
            match decide_pending(&facts) {
                PendingDecision::Backoff(left) => return Ok(Action::requeue(left)),
                PendingDecision::LookUp => facts.lookup = self.look_up(&id.key).await,
                PendingDecision::AcquireLease => {
                    facts.lease = self.acquire_lease(&id.key, &uid, &exec_id).await?
                }
                PendingDecision::Serve(entry) => {
                    return self.serve_cached(status, sim, id, &uid, *entry).await;
                }
                PendingDecision::WaitFor {
                    holder,
                    execution_id,
                } => {
                    let waiting = Outcome::Waiting {
                        ident: ident(id),
                        holder,
                        execution_id,
                    };
                    self.apply(&status, waiting).await?;
                    return Ok(Action::requeue(WATCH_WAITING));
                }
                PendingDecision::Start { cache, check, .. } => {
                    return self
                        .start(status, sim, id, &uid, attempt, &exec_id, cache, check)
                        .await;
                }
            }
        }
    }

    /// A live entry whose run database is still there.
    async fn look_up(&self, key: &str) -> Lookup {
        let store = &self.ctx.stores.cache;
        let entry = match store.get(key, now_ms()).await {
            Ok(Some(e)) => e,
            Ok(None) => return Lookup::Miss,
            Err(e) => {
                tracing::warn!(key, error = %e, "cache lookup failed; running without the cache");
                return Lookup::Failed(e.to_string());
            }
        };
        let present = match &entry.run_db_path {
            Some(p) => tokio::fs::try_exists(Path::new(p)).await.unwrap_or(false),
            None => false,
        };
        if present {
            return Lookup::Hit(Box::new(entry));
        }
        tracing::info!(key, "cache entry without its run database; dropping it");
        match store.delete(key).await {
            Ok(_) => Lookup::Miss,
            Err(e) => Lookup::Failed(e.to_string()),
        }
    }

    async fn acquire_lease(&self, key: &str, uid: &str, exec_id: &str) -> Result<Lease> {
        let ttl = self.ctx.cfg.lease_ttl.as_millis() as i64;
        let outcome = self
            .ctx
            .stores
            .ledger
            .acquire(key, &self.holder(), uid, exec_id, ttl, now_ms())
            .await?;
        Ok(match outcome {
            LeaseOutcome::HeldBy(h) => Lease::HeldBy {
                holder: h.holder,
                execution_id: h.execution_id,
            },
            _ => Lease::Taken,
        })
    }

    async fn serve_cached(
        &self,
        status: SimulationRunStatus,
        sim: &Simulation,
        id: &RunIdentity,
        uid: &str,
        entry: CacheEntry,
    ) -> Result<Action> {
        let hit = HitDelta {
            cache_key: id.key.clone(),
            hits: 1,
            last_accessed_ms: now_ms(),
        };
        if let Err(e) = self.ctx.stores.cache.record_accesses(&[hit], 0).await {
            tracing::debug!(error = %e, "could not count the cache hit");
        }
        // Our own execution record of the hit, so the catalog's hit rate is right.
        let exec = execution_id(&self.ns, &self.name, uid, 0);
        self.record_execution(sim, id, Execution::cache_hit(&exec, &entry))
            .await;
        let hit = Outcome::CacheHit {
            ident: ident(id),
            result: CachedResult::of(&entry),
        };
        let done = self.apply(&status, hit).await?;
        self.finished(done, Some(sim)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        &self,
        status: SimulationRunStatus,
        sim: &Simulation,
        id: &RunIdentity,
        uid: &str,
        attempt: i32,
        exec_id: &str,
        cache: CacheStatus,
        check: CacheCheck,
    ) -> Result<Action> {
        if check == CacheCheck::Miss
            && let Err(e) = self.ctx.stores.cache.record_accesses(&[], 1).await
        {
            tracing::debug!(error = %e, "could not count the cache miss");
        }
        let pod = match self.ensure_pod(sim, id, uid, attempt, exec_id).await {
            Ok(p) => p,
            // The API server refuses the pod (quota, admission, an invalid
            // field): say so on the run and try again later.
            Err(Error::Kube(kube::Error::Api(e)))
                if (400..500).contains(&e.code) && e.code != 409 =>
            {
                let refused = Outcome::PodRefused {
                    ident: ident(id),
                    message: e.message,
                };
                self.apply(&status, refused).await?;
                return Ok(Action::requeue(RETRY_POD));
            }
            Err(Error::PodPlan(why)) => {
                let refused = Outcome::PodRefused {
                    ident: ident(id),
                    message: why.to_string(),
                };
                self.apply(&status, refused).await?;
                return Ok(Action::requeue(RETRY_POD));
            }
            Err(e) => return Err(e),
        };
        tracing::info!(
            run = self.holder(),
            attempt,
            pod,
            execution_id = exec_id,
            "attempt running"
        );
        let started = Outcome::Started {
            ident: ident(id),
            cache,
            check,
            attempt,
            pod,
            execution_id: exec_id.to_string(),
        };
        self.apply(&status, started).await?;
        Ok(Action::requeue(WATCH_RUNNING))
    }

    /// The run's token Secret and the attempt's pod, created unless they exist.
    async fn ensure_pod(
        &self,
        sim: &Simulation,
        id: &RunIdentity,
        uid: &str,
        attempt: i32,
        exec_id: &str,
    ) -> Result<String> {
        let pods = self.ctx.api::<Pod>(&self.ns);
        let pod = pod_name(&self.name, uid, attempt);
        if pods.get_opt(&pod).await?.is_some() {
            return Ok(pod);
        }
        let sor = sor_wiring::wire(&self.systems_of_record(&sim.spec.systems_of_record)?)
            .map_err(PlanError::from)?;
        if let Some(r) = &sim.spec.sidecar_resources {
            simcache_core::pod::check_resources(r)
                .map_err(|e| PlanError::from(e.under("Simulation spec.sidecarResources")))?;
        }
        let spec = &sim.spec;
        let sfm_devices = self.sfm_devices(&spec.sfm_devices);
        // The run's session reaches its Simulation's devices and no others,
        // and controls those the Simulation declares.
        let scope = run_scope(&self.ns, &spec.sfm_devices, &spec.sfm_control)?;
        let tokens = tokens::issue(self.ctx, self.obj, uid, &scope).await?;
        self.ctx
            .stores
            .ledger
            .expect_ingest(exec_id, uid, &tokens.ingest, now_ms())
            .await?;
        let schema = serde_json::to_value(run_schema(&sim.spec)).unwrap_or(Value::Null);
        let plan = PodPlan {
            namespace: &self.ns,
            run_name: &self.name,
            run_uid: uid,
            attempt,
            simulation_name: &id.name,
            simulation_version: &id.version,
            image: &spec.image,
            command: &spec.command,
            args: &spec.args,
            resources: spec.resources.as_ref(),
            security_context: spec.security_context.as_ref(),
            sidecar_resources: spec.sidecar_resources.as_ref(),
            schema: &schema,
            inputs: &id.inputs,
            input_hash: &id.hash,
            cache_key: &id.key,
            timeout_seconds: self.obj.spec.timeout_seconds,
            sidecar: &self.ctx.cfg.sidecar,
            sfm_devices: &sfm_devices,
            sor: &sor,
        };
        let mut pod_spec = build_pod(&plan);
        simcache_core::pod::template::apply(
            &mut pod_spec,
            spec.pod_template.as_ref(),
            self.obj.spec.pod.as_ref(),
            &self.ctx.cfg.sidecar.node_selector,
        )
        .map_err(PlanError::from)?;
        self.ctx
            .cfg
            .sidecar
            .pod_security
            .admit(&pod_spec)
            .map_err(PlanError::from)?;
        match pods.create(&PostParams::default(), &pod_spec).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(pod)
    }

    // ------------------------------------------------------------ Running

    /// A pod is running: has it finished, failed, timed out?
    async fn running(
        &self,
        status: SimulationRunStatus,
        sim: &Simulation,
        id: &RunIdentity,
    ) -> Result<Action> {
        let uid = self.uid()?;
        let (Some(exec_id), Some(pod_name)) =
            (status.execution_id.clone(), status.pod_name.clone())
        else {
            tracing::warn!(
                run = self.holder(),
                "Running without an execution id; starting over"
            );
            self.apply(&status, Outcome::AttemptLost).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        };
        let holds_lease = !matches!(
            status.cache_status,
            Some(CacheStatus::Skipped | CacheStatus::LookupFailure)
        );
        if holds_lease {
            self.renew_lease(&id.key, &uid, &exec_id).await?;
        }
        let pods = self.ctx.api::<Pod>(&self.ns);
        let pod = pods.get_opt(&pod_name).await?;
        let ingest = self.ctx.stores.ledger.ingest(&exec_id).await?;
        let facts = attempt_facts(&status, self.obj, pod.as_ref(), ingest.as_ref());
        let limit = self.obj.spec.retry_limit.unwrap_or(0);
        let decision = decide_running(&facts, status.attempts, limit);
        let (RunningDecision::Retry { stop_pod, .. } | RunningDecision::Fail { stop_pod, .. }) =
            &decision
        else {
            if decision == RunningDecision::Succeed
                && let Some(rec) = ingest
            {
                return self
                    .succeed(status, sim, id, &uid, rec, pod.as_ref(), holds_lease)
                    .await;
            }
            return Ok(Action::requeue(WATCH_RUNNING));
        };
        if *stop_pod && let Err(e) = pods.delete(&pod_name, &DeleteParams::default()).await {
            tracing::debug!(pod = pod_name, error = %e, "could not stop the timed-out pod");
        }
        if holds_lease {
            self.ctx.stores.ledger.release(&id.key, &uid).await?;
        }
        tracing::info!(
            run = self.holder(),
            attempt = status.attempts,
            limit,
            ?decision,
            "attempt failed"
        );
        match decision {
            RunningDecision::Retry {
                message,
                next_attempt,
                after,
                ..
            } => {
                let failed = Outcome::AttemptFailed {
                    message,
                    next_attempt,
                    limit,
                    after,
                };
                self.apply(&status, failed).await?;
                Ok(Action::requeue(after))
            }
            RunningDecision::Fail { message, .. } => {
                self.record_execution(sim, id, Execution::failed(&exec_id))
                    .await;
                let done = self.apply(&status, Outcome::Failed { message }).await?;
                self.finished(done, Some(sim)).await
            }
            RunningDecision::Wait | RunningDecision::Succeed => Ok(Action::requeue(WATCH_RUNNING)),
        }
    }

    /// Renews the cache key's lease; one lost while nobody renewed it (the
    /// operator was down) is taken back if free. Either way the attempt goes on.
    /// The Simulation's SFMDevices as the pod needs them. A device that does
    /// not exist (yet) is still listed: the proxy answers 403 for it until
    /// it is registered.
    fn sfm_devices(&self, names: &[String]) -> Vec<SfmDeviceRef> {
        names
            .iter()
            .map(|name| {
                let found = self.ctx.sfm_devices.get(
                    &kube::runtime::reflector::ObjectRef::<SFMDevice>::new(name).within(&self.ns),
                );
                SfmDeviceRef {
                    namespace: self.ns.clone(),
                    name: name.clone(),
                    authorization: found
                        .and_then(|d| d.spec.upstream.headers_secret_ref.clone())
                        .map(|r| (r.name, r.key)),
                }
            })
            .collect()
    }

    /// The Simulation's SystemsOfRecord as the watch last saw them; a
    /// missing one stops the pod from being made (the run says which).
    fn systems_of_record(&self, names: &[String]) -> Result<Vec<sor_wiring::SorRef>> {
        names
            .iter()
            .map(|name| {
                self.ctx
                    .sors
                    .get(
                        &kube::runtime::reflector::ObjectRef::<simcache_crds::SystemOfRecord>::new(
                            name,
                        )
                        .within(&self.ns),
                    )
                    .map(|s| sor_wiring::SorRef {
                        name: name.clone(),
                        spec: s.spec.clone(),
                    })
                    .ok_or_else(|| {
                        Error::PodPlan(PlanError::MissingSystemOfRecord {
                            name: name.clone(),
                            namespace: self.ns.clone(),
                        })
                    })
            })
            .collect()
    }

    async fn renew_lease(&self, key: &str, uid: &str, exec_id: &str) -> Result<()> {
        let ledger = &self.ctx.stores.ledger;
        let ttl = self.ctx.cfg.lease_ttl.as_millis() as i64;
        let now = now_ms();
        if !ledger.heartbeat(key, uid, ttl, now).await? {
            ledger
                .acquire(key, &self.holder(), uid, exec_id, ttl, now)
                .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn succeed(
        &self,
        status: SimulationRunStatus,
        sim: &Simulation,
        id: &RunIdentity,
        uid: &str,
        rec: IngestRecord,
        pod: Option<&Pod>,
        holds_lease: bool,
    ) -> Result<Action> {
        let outputs: BTreeMap<String, Value> =
            serde_json::from_value(rec.outputs.clone()).unwrap_or_default();
        let duration = rec.duration_seconds.or_else(|| {
            status
                .start_time
                .as_ref()
                .map(|t| Timestamp::now().duration_since(t.0).as_secs_f64())
        });
        let cache = if self.obj.spec.cache_mode == CacheMode::Bypass {
            status.cache_status.unwrap_or(CacheStatus::Skipped)
        } else {
            self.put_result(sim, id, &rec, &outputs, duration).await
        };
        let done = Completed {
            duration,
            node: pod
                .and_then(|p| p.spec.as_ref())
                .and_then(|sp| sp.node_name.clone()),
            run_db_path: rec.run_db_path.clone(),
            run_db_size_bytes: rec.size_bytes,
            output_count: rec.outputs.as_object().map_or(0, |o| o.len() as i64),
        };
        let execution = Execution::completed(&rec.execution_id, true, cache_outcome(cache), done);
        self.record_execution(sim, id, execution).await;
        if holds_lease {
            self.ctx.stores.ledger.release(&id.key, uid).await?;
        }
        let succeeded = Outcome::Succeeded {
            execution_id: rec.execution_id.clone(),
            cache,
            outputs,
            result_id: rec.result_id,
            duration,
        };
        let done = self.apply(&status, succeeded).await?;
        self.finished(done, Some(sim)).await
    }

    /// Writes the succeeded run's result to the cache, expiring as its
    /// policy says: `Populated`, or `PutFailure` (the run stands either way).
    async fn put_result(
        &self,
        sim: &Simulation,
        id: &RunIdentity,
        rec: &IngestRecord,
        outputs: &BTreeMap<String, Value>,
        duration: Option<f64>,
    ) -> CacheStatus {
        let sim_id = match self.catalog_id(sim, id).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(key = id.key, error = %e, "could not build the cache entry");
                return CacheStatus::PutFailure;
            }
        };
        let ttl = self.ctx.policy_of(sim).and_then(|p| p.spec.ttl_seconds);
        let entry = record::cache_entry(
            &id.run_key(sim_id),
            &rec.execution_id,
            rec.run_db_path.clone(),
            rec.size_bytes.unwrap_or(0),
            &json!(outputs),
            rec.result_id,
            &self.holder(),
            duration,
            ttl,
            now_ms(),
        );
        match self.ctx.stores.cache.put(entry).await {
            Ok(()) => CacheStatus::Populated,
            Err(e) => {
                tracing::warn!(key = id.key, error = %e, "could not write the cache entry");
                CacheStatus::PutFailure
            }
        }
    }

    async fn catalog_id(&self, sim: &Simulation, id: &RunIdentity) -> Result<i64> {
        let catalog = &self.ctx.stores.catalog;
        if let Some(s) = catalog.get(&id.name, Some(&id.version)).await? {
            return Ok(s.id);
        }
        // The Simulation controller registers it; do it here if it has not yet.
        let spec = simcache_core::cache_key::catalog_spec(sim);
        match catalog.register(&spec, Some("simcache-operator")).await? {
            simcache_store::catalog::Registration::Created(i)
            | simcache_store::catalog::Registration::Unchanged(i) => Ok(i),
        }
    }

    /// Records an execution in the catalog (idempotent per execution id). A
    /// failure is logged, not fatal: the run's own outcome stands.
    async fn record_execution(&self, sim: &Simulation, id: &RunIdentity, e: Execution<'_>) {
        let Ok(sim_id) = self.catalog_id(sim, id).await else {
            return;
        };
        let rec = e.record(&id.run_key(sim_id), "kubernetes", now_ms());
        if let Err(err) = self.ctx.stores.catalog.record_execution(&rec).await {
            tracing::warn!(execution_id = e.id, error = %err, "could not record the execution in the catalog");
        }
    }

    // ------------------------------------------------------------ Finished

    /// A finished run: report an edited spec, and delete its pod and token
    /// Secret once its TTL has passed.
    async fn finished(
        &self,
        status: SimulationRunStatus,
        sim: Option<&Simulation>,
    ) -> Result<Action> {
        let now = Timestamp::now();
        let generation = self.obj.metadata.generation;
        let facts = FinishedFacts {
            leftovers: lifecycle::has_leftovers(&status),
            finished_for: lifecycle::finished_for(&status, now),
            ttl: lifecycle::ttl_after_finished(
                self.obj.spec.ttl_seconds_after_finished,
                sim.and_then(|s| s.spec.ttl_seconds_after_finished),
                self.ctx.cfg.run_ttl_after_finished,
            ),
            spec_changed: lifecycle::spec_change_unreported(&status, generation),
        };
        let plan = decide_finished(&facts);
        if facts.leftovers {
            // The run has ended: so has its session (idempotent, and done
            // only until its pod and Secret are cleaned up).
            tokens::revoke_session(self.ctx, &self.ns, &self.name).await?;
        }
        let mut status = status;
        if plan.report_spec_change
            && let Some(g) = generation
        {
            status = self
                .apply(&status, Outcome::SpecChanged { generation: g })
                .await?;
        }
        match plan.clean_up {
            Cleanup::Nothing => Ok(Action::await_change()),
            Cleanup::After(left) => Ok(Action::requeue(left)),
            Cleanup::Now => {
                self.delete_leftovers(status.attempts).await?;
                self.apply(&status, Outcome::CleanedUp).await?;
                Ok(Action::await_change())
            }
        }
    }

    /// Deletes every attempt's pod and the token Secret (gone already is fine).
    async fn delete_leftovers(&self, attempts: i32) -> Result<()> {
        let uid = self.uid()?;
        let gone = |r: std::result::Result<_, kube::Error>| match r {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::Kube(e)),
        };
        let pods = self.ctx.api::<Pod>(&self.ns);
        for attempt in 1..=attempts {
            let name = pod_name(&self.name, &uid, attempt);
            gone(
                pods.delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
        }
        let secrets = self.ctx.api::<Secret>(&self.ns);
        let secret = secret_name(&self.name, &uid);
        gone(
            secrets
                .delete(&secret, &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
        Ok(())
    }
}

/// The scope of a run's session: the Simulation's devices in the run's
/// namespace, and those of them it declares control of. Pure.
fn run_scope(
    ns: &str,
    devices: &[String],
    control: &[String],
) -> std::result::Result<simcache_auth::Scope, PlanError> {
    if let Some(unlisted) = control.iter().find(|c| !devices.contains(c)) {
        return Err(PlanError::ControlOfUnlistedDevice(unlisted.clone()));
    }
    let named = |names: &[String]| names.iter().map(|n| format!("{ns}/{n}")).collect();
    Ok(simcache_auth::Scope {
        sfm_devices: named(devices),
        sfm_control: named(control),
    })
}

/// What the operator observes about a running attempt.
fn attempt_facts(
    status: &SimulationRunStatus,
    run: &SimulationRun,
    pod: Option<&Pod>,
    ingest: Option<&IngestRecord>,
) -> AttemptFacts {
    let now = Timestamp::now();
    let now_ms_ = now_ms();
    let since =
        |t: Timestamp| Duration::from_secs_f64(now.duration_since(t).as_secs_f64().max(0.0));
    let ingested = ingest
        .filter(|r| r.ingested_at_ms.is_some())
        .map(|r| Ingested {
            run_status: r.run_status.clone().unwrap_or_default(),
            error_message: r.error_message.clone(),
            last_logs: r.last_logs.clone(),
            age: Duration::from_millis(
                (now_ms_ - r.ingested_at_ms.unwrap_or(now_ms_)).max(0) as u64
            ),
        });
    let started = status.start_time.as_ref().map_or(now, |t| t.0);
    AttemptFacts {
        pod: pod.map(pod_outcome),
        ingested,
        elapsed: since(started),
        timeout: run
            .spec
            .timeout_seconds
            .map(|t| Duration::from_secs(t.max(1) as u64)),
        pod_finished_for: pod.and_then(finished_at).map(since),
    }
}

/// When the simulation container (or else the pod) finished.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let st = pod.status.as_ref()?;
    let from_container = st
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == SIMULATION_CONTAINER))
        .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .map(|t| t.0);
    from_container.or_else(|| {
        matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")).then(Timestamp::now)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_scope_names_its_devices_in_its_namespace_and_only_declared_control() {
        let s = run_scope(
            "lab",
            &["unit-a".into(), "unit-b".into()],
            &["unit-b".into()],
        )
        .unwrap();
        assert_eq!(s.sfm_devices, ["lab/unit-a", "lab/unit-b"]);
        assert_eq!(s.sfm_control, ["lab/unit-b"]);
        let e = run_scope("lab", &["unit-a".into()], &["unit-c".into()]).unwrap_err();
        assert!(matches!(&e, PlanError::ControlOfUnlistedDevice(d) if d == "unit-c"));
        assert!(e.to_string().contains("spec.sfmControl"), "{e}");
    }
}
