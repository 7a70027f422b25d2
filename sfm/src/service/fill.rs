//! The fetch itself: a session slot of the unit, the upstream call, and the
//! commit of its answer (bodies, the event index, invalidations) to the store.

use super::flight::heartbeat;
use super::*;

impl SfmService {
    /// Takes one of the unit's session slots, waiting for one to free up.
    pub(super) async fn take_slot(&self, dev: &Device) -> Result<SlotGuard, Failure> {
        let t0 = Instant::now();
        let ttl = self.cfg.slot_ttl.as_millis() as i64;
        loop {
            let waker = self.slot_waker(&dev.conn_key);
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self
                .store
                .try_slot(
                    &dev.conn_key,
                    dev.spec.max_concurrent_sessions,
                    &self.holder,
                    ttl,
                    clock::now_ms(),
                )
                .await
            {
                Ok(Some(slot)) => {
                    self.metrics
                        .session_wait
                        .observe(t0.elapsed().as_secs_f64());
                    let (store, conn, holder) = (
                        self.store.clone(),
                        dev.conn_key.clone(),
                        self.holder.clone(),
                    );
                    let beat = heartbeat(ttl, move || {
                        let (store, conn, holder) = (store.clone(), conn.clone(), holder.clone());
                        async move {
                            let _ = store
                                .renew_slot(&conn, slot, &holder, ttl, clock::now_ms())
                                .await;
                        }
                    });
                    return Ok(SlotGuard { slot, beat });
                }
                Ok(None) => {}
                Err(e) => return Err(store_failure(&e)),
            }
            let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
        }
    }

    pub(super) async fn release_slot(&self, dev: &Device, g: SlotGuard) {
        g.beat.abort();
        if let Err(e) = self
            .store
            .release_slot(&dev.conn_key, g.slot, &self.holder)
            .await
        {
            tracing::warn!(device = %dev.label, error = %e, "could not release a session slot; it expires");
        }
        self.slot_waker(&dev.conn_key).notify_waiters();
    }

    /// Calls upstream once, in a session slot, and records the outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call_upstream(
        &self,
        dev: &Device,
        op: Op,
        method: Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamReply, Failure> {
        let slot = self.take_slot(dev).await?;
        self.count(dev, |c| c.upstream_calls += 1);
        let t0 = Instant::now();
        let reply = self
            .upstream
            .call(
                dev,
                method,
                path,
                query,
                headers,
                body,
                self.cfg.max_upstream_body_bytes,
            )
            .await;
        self.release_slot(dev, slot).await;
        self.metrics
            .upstream_duration
            .with_label_values(&[op.route()])
            .observe(t0.elapsed().as_secs_f64());
        let now = clock::now_ms();
        let outcome = match &reply {
            Ok(r) if r.status.is_success() => "ok",
            Ok(r) if r.status.as_u16() >= 502 => "unreachable",
            Ok(_) => "error",
            Err(UpstreamError::Timeout(_)) => "timeout",
            Err(_) => "unreachable",
        };
        self.metrics
            .upstream_requests
            .with_label_values(&[&dev.label, op.route(), outcome])
            .inc();
        let failed = match &reply {
            Ok(r) if r.status.as_u16() >= 502 => Some((
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    "ConnectRefused"
                } else {
                    "ProtocolError"
                },
                format!("SFM service answered {}", r.status.as_u16()),
            )),
            Ok(_) => None,
            Err(e) => Some((e.reason(), e.to_string())),
        };
        let recorded = match &failed {
            Some((reason, msg)) => self
                .store
                .record_failure(&dev.conn_key, reason, msg, dev.backoff_ms(), now)
                .await
                .map(|_| ()),
            None => self.store.record_success(&dev.conn_key, now).await,
        };
        if let Err(e) = recorded {
            tracing::warn!(device = %dev.label, error = %e, "could not record the unit's reachability");
        }
        self.metrics
            .reachable
            .with_label_values(&[&dev.label])
            .set(i64::from(failed.is_none()));
        let _ = self.registry.reload_one(&dev.conn_key).await;
        match reply {
            Ok(r) => Ok(r),
            Err(e) => {
                let status = match e {
                    UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                Err(Failure {
                    status,
                    body: Bytes::from(json!({ "detail": e.to_string() }).to_string()),
                    unreachable: true,
                    message: e.to_string(),
                    from_upstream: false,
                })
            }
        }
    }

    pub(super) async fn fetch_holding_lease(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        flags: Flags,
        query: &str,
        fetch_key: &str,
        started_ms: i64,
    ) -> Outcome {
        let conn = dev.conn_key.clone();
        let ttl = self.cfg.lease_ttl.as_millis() as i64;
        let beat = {
            let (store, conn, key, holder) = (
                self.store.clone(),
                conn.clone(),
                fetch_key.to_string(),
                self.holder.clone(),
            );
            heartbeat(ttl, move || {
                let (store, conn, key, holder) =
                    (store.clone(), conn.clone(), key.clone(), holder.clone());
                async move {
                    let _ = store
                        .renew_lease(&conn, &key, &holder, ttl, clock::now_ms())
                        .await;
                }
            })
        };
        let path = upstream_path(op);
        let reply = self
            .call_upstream(
                dev,
                op,
                Method::GET,
                &path,
                query,
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await;
        let outcome = match reply {
            Ok(r) if r.status.is_success() => match self
                .commit(dev, op, flags, fetch_key, r.body, started_ms)
                .await
            {
                Ok(b) => Outcome::Fetched(b),
                Err(e) => Outcome::Failed(store_failure(&e)),
            },
            Ok(r) => Outcome::Failed(Failure {
                unreachable: r.status.as_u16() >= 502,
                message: format!("SFM service answered {}", r.status.as_u16()),
                status: r.status,
                body: r.body,
                from_upstream: true,
            }),
            Err(f) => Outcome::Failed(f),
        };
        beat.abort();
        if let Outcome::Failed(f) = &outcome {
            let _ = self
                .store
                .fail_lease(
                    &conn,
                    fetch_key,
                    &self.holder,
                    f.status.as_u16(),
                    f.body.clone(),
                    2000,
                    clock::now_ms(),
                )
                .await;
        }
        self.waker(&conn, fetch_key).notify_waiters();
        outcome
    }

    /// Stores what a successful fetch returned, with its index links, and
    /// releases the lease (one transaction).
    pub(super) async fn commit(
        &self,
        dev: &Device,
        op: Op,
        flags: Flags,
        fetch_key: &str,
        body: Bytes,
        started_ms: i64,
    ) -> simcache_store::Result<Arc<StoredBody>> {
        let conn = dev.conn_key.as_str();
        let now = clock::now_ms();
        let mut links = Vec::new();
        let mut unlink = Vec::new();
        let (kind, id, body) = match op {
            Op::Info | Op::Events => {
                let facts = identity::unit_facts(&body);
                if let (Some(new), Some(old)) = (&facts.serial, &dev.serial)
                    && new != old
                {
                    tracing::warn!(device = %dev.label, old = %old, new = %new, "another unit answers at this address; flushing its cache");
                    self.store.flush_device(conn).await?;
                    self.forget_device_memory(conn);
                }
                self.store
                    .record_identity(
                        conn,
                        facts.serial.as_deref(),
                        facts.firmware.as_deref(),
                        facts.event_count,
                    )
                    .await?;
                if op == Op::Info {
                    (Kind::Info, String::new(), body)
                } else {
                    let id = if flags.debug { "debug" } else { "" }.to_string();
                    let cached = self.store.body(conn, Kind::Events.as_str(), &id).await?;
                    let merged =
                        identity::merge_lists(cached.as_ref().map(|c| c.body.as_ref()), &body);
                    if let Some(listed) = identity::listed_events(&merged) {
                        let known = self.store.index(conn).await?;
                        let change = identity::reconcile(&known, &listed);
                        links = change.links;
                        unlink = change.unlink;
                    }
                    (Kind::Events, id, merged)
                }
            }
            Op::Event(i) | Op::Waveform(i) => {
                let known = self.store.identity_at(conn, i).await?;
                let id = identity::body_identity(&body)
                    .or(known.clone())
                    .unwrap_or_else(|| format!("idx:{i}@{now}"));
                if known.as_ref().is_some_and(|k| *k != id) {
                    unlink.push(i);
                }
                links.push((i, id.clone()));
                let kind = if matches!(op, Op::Event(_)) {
                    Kind::Event
                } else {
                    Kind::Waveform
                };
                (kind, id, body)
            }
            _ => (Kind::Status, String::new(), body),
        };
        let etag = etag_of(&body);
        let new = NewBody {
            kind: kind.as_str().into(),
            id: id.clone(),
            body: body.clone(),
            etag: etag.clone(),
            fetch_started_ms: started_ms,
        };
        self.store
            .commit_fetch(conn, fetch_key, &self.holder, &[new], &links, &unlink, now)
            .await?;
        let stored = Arc::new(StoredBody {
            body,
            etag,
            fetched_at_ms: now,
            fetch_started_ms: started_ms,
            stale: false,
        });
        if !links.is_empty() || !unlink.is_empty() {
            self.index.lock().remove(conn);
        }
        let key = BodyKey {
            conn_key: conn.to_string(),
            kind,
            id,
        };
        if stored.body.len() as u64 <= self.cfg.memory_max_object_bytes {
            self.memory.insert(key, stored.clone());
        } else {
            self.memory.invalidate(&key);
        }
        Ok(stored)
    }
}

pub(super) struct SlotGuard {
    slot: i64,
    beat: tokio::task::JoinHandle<()>,
}
