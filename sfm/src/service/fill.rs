//! The fetch itself: a session slot of the unit, the upstream call, and the
//! commit of its answer (bodies, the event index, invalidations) to the store.

use super::*;

impl SfmService {
    /// Takes one of the unit's session slots, waiting for one to free up.
    pub(super) async fn take_slot(&self, dev: &Device) -> Result<SlotGuard, Failure> {
        let t0 = Instant::now();
        let ttl = self.cfg.slot_ttl.as_millis() as i64;
        let this = self;
        let round = move || async move {
            match this
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
                    this.metrics
                        .session_wait
                        .observe(t0.elapsed().as_secs_f64());
                    let (store, conn, holder) = (
                        this.store.clone(),
                        dev.conn_key.clone(),
                        this.holder.clone(),
                    );
                    let beat = heartbeat(ttl, move || {
                        let (store, conn, holder) = (store.clone(), conn.clone(), holder.clone());
                        async move {
                            let _ = store
                                .renew_slot(&conn, slot, &holder, ttl, clock::now_ms())
                                .await;
                        }
                    });
                    Round::Done(Ok(SlotGuard { slot, beat }))
                }
                // A slot frees up with a NOTIFY; one whose holder died, when
                // its lease runs out.
                Ok(None) => Round::WaitUpTo(Duration::from_millis(250)),
                Err(e) => Round::Done(Err(store_failure(&e))),
            }
        };
        self.slot_wakers
            .until_done(dev.conn_key.clone(), round)
            .await
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
        self.slot_wakers.wake(&dev.conn_key);
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
        let (outcome, failed) = upstream_verdict(&reply);
        self.metrics
            .upstream_requests
            .with_label_values(&[&dev.label, op.route(), outcome])
            .inc();
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
        reply.map_err(unreached)
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
        self.lease_wakers
            .wake(&(conn.clone(), fetch_key.to_string()));
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
                let id = event_identity(i, identity::body_identity(&body), known.as_deref(), now);
                if known.is_some_and(|k| k != id) {
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

/// How an upstream call went: the metrics' outcome label, and when the
/// unit was not reached, the `Reachable` condition's (reason, message).
/// A 502 or more is the SFM service telling us it could not reach the unit.
fn upstream_verdict(
    reply: &Result<UpstreamReply, UpstreamError>,
) -> (&'static str, Option<(&'static str, String)>) {
    match reply {
        Ok(r) if r.status.as_u16() >= 502 => {
            let reason = if r.status == StatusCode::SERVICE_UNAVAILABLE {
                "ConnectRefused"
            } else {
                "ProtocolError"
            };
            let message = format!("SFM service answered {}", r.status.as_u16());
            ("unreachable", Some((reason, message)))
        }
        Ok(r) if r.status.is_success() => ("ok", None),
        Ok(_) => ("error", None),
        Err(e @ UpstreamError::Timeout(_)) => ("timeout", Some((e.reason(), e.to_string()))),
        Err(e) => ("unreachable", Some((e.reason(), e.to_string()))),
    }
}

/// The failure readers get when the SFM service gave no answer at all:
/// ours, in FastAPI's shape, and one a stale copy may stand in for.
fn unreached(e: UpstreamError) -> Failure {
    let status = match e {
        UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Failure {
        status,
        body: Bytes::from(json!({ "detail": e.to_string() }).to_string()),
        unreachable: true,
        message: e.to_string(),
        from_upstream: false,
    }
}

/// The identity an event (or waveform) at index `i` is filed under: the
/// one its body states, else the one the index had, else a placeholder
/// unique to this fetch (so an unidentifiable body never replaces another).
fn event_identity(i: i64, stated: Option<String>, known: Option<&str>, now_ms: i64) -> String {
    stated
        .or_else(|| known.map(str::to_string))
        .unwrap_or_else(|| format!("idx:{i}@{now_ms}"))
}

pub(super) struct SlotGuard {
    slot: i64,
    beat: tokio::task::JoinHandle<()>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: u16) -> Result<UpstreamReply, UpstreamError> {
        Ok(UpstreamReply {
            status: StatusCode::from_u16(code).unwrap(),
            body: Bytes::new(),
            content_type: None,
        })
    }

    #[test]
    fn the_services_own_gateway_errors_mean_the_unit_was_not_reached() {
        assert_eq!(upstream_verdict(&answered(200)), ("ok", None));
        // The unit answered, with an error of its own: reachable.
        assert_eq!(upstream_verdict(&answered(404)), ("error", None));
        let (label, failed) = upstream_verdict(&answered(503));
        assert_eq!(label, "unreachable");
        assert_eq!(
            failed,
            Some(("ConnectRefused", "SFM service answered 503".into()))
        );
        assert_eq!(
            upstream_verdict(&answered(502)).1.unwrap().0,
            "ProtocolError"
        );
        let (label, failed) = upstream_verdict(&Err(UpstreamError::Timeout(5)));
        assert_eq!(label, "timeout");
        assert_eq!(failed.unwrap().0, "Timeout");
        let refused = upstream_verdict(&Err(UpstreamError::Refused("x".into())));
        assert_eq!(refused.0, "unreachable");
    }

    #[test]
    fn no_answer_at_all_is_ours_and_lets_a_stale_copy_stand_in() {
        let f = unreached(UpstreamError::Timeout(5));
        assert_eq!(f.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(f.unreachable && !f.from_upstream);
        let body: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
        assert!(body["detail"].as_str().unwrap().contains("5 s"), "{body}");
        let f = unreached(UpstreamError::Refused("no".into()));
        assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn an_event_is_filed_under_its_stated_identity_else_the_known_one() {
        assert_eq!(
            event_identity(3, Some("ev-a".into()), Some("ev-b"), 9),
            "ev-a"
        );
        assert_eq!(event_identity(3, None, Some("ev-b"), 9), "ev-b");
        assert_eq!(event_identity(3, None, None, 9), "idx:3@9");
    }
}
