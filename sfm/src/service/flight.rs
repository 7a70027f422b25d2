//! One fetch for the whole cluster: readers in this process join its flight,
//! and the cluster agrees through the store's fetch lease, woken by NOTIFY.

use std::sync::atomic::Ordering::Relaxed;

use super::*;

impl SfmService {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch_and_wait(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        kind: Kind,
        flags: Flags,
        query: &str,
        arrived_ms: i64,
        copy: Option<Arc<StoredBody>>,
        wait_ms: Option<i64>,
    ) -> Answer {
        let deadline = wait_ms.map(|w| Instant::now() + Duration::from_millis(w.max(0) as u64));
        loop {
            let (flight, joined) = self.join_or_start(dev, op, flags, query, arrived_ms);
            if joined {
                self.count(dev, |c| c.coalesced += 1);
                self.metrics
                    .coalesced
                    .with_label_values(&[&dev.label])
                    .inc();
            }
            let outcome = flight.outcome();
            let outcome = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), outcome).await {
                    Ok(o) => o,
                    Err(_) => {
                        // A slow fetch: the reader takes its copy; the fetch goes on.
                        return self.stale_or_unavailable(
                            dev,
                            copy.as_deref(),
                            Some("fetch still in progress after staleAfterSeconds"),
                        );
                    }
                },
                None => outcome.await,
            };
            let fetch_started = match &outcome {
                Some(Outcome::Fetched(b)) => b.fetch_started_ms,
                _ => flight.started_ms,
            };
            if !serves_the_read(flags.force, fetch_started, arrived_ms) {
                continue;
            }
            let now = clock::now_ms();
            return match outcome {
                Some(Outcome::Fetched(b)) => Answer::from_body(&b, Source::Device, now),
                Some(Outcome::Failed(f)) => {
                    let usable = copy.as_deref().filter(|b| {
                        freshness::usable_when_unreachable(kind, &copy_of(b), &dev.rules, now)
                    });
                    match (f.unreachable, usable) {
                        (true, Some(b)) => {
                            self.stale_or_unavailable(dev, Some(b), Some(&f.message))
                        }
                        _ => Answer {
                            status: f.status,
                            body: f.body,
                            source: if f.from_upstream {
                                Source::Device
                            } else {
                                Source::Proxy
                            },
                            etag: None,
                            age_secs: None,
                            upstream_error: None,
                            retry_after_secs: None,
                            content_type: None,
                        },
                    }
                }
                None => Answer::detail(StatusCode::INTERNAL_SERVER_ERROR, "fetch task ended"),
            };
        }
    }

    /// Joins the flight in this process for the same data, or starts one.
    /// Returns the flight and whether it was joined.
    pub(super) fn join_or_start(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        flags: Flags,
        query: &str,
        arrived_ms: i64,
    ) -> (Arc<Flight>, bool) {
        let key = (dev.conn_key.clone(), fetch_key(op, flags));
        let fetch = key.1.clone();
        // Called only by the reader that starts the fetch: joiners clone nothing.
        self.flights
            .join_or_start(key, clock::now_ms(), |started_ms| {
                let (svc, dev, query) = (self.clone(), dev.clone(), query.to_string());
                let need_after = flags.force.then_some(arrived_ms.min(started_ms));
                async move {
                    svc.fetch_through_cluster(
                        &dev, op, flags, &query, &fetch, started_ms, need_after,
                    )
                    .await
                }
            })
    }

    /// The cluster-wide half of a fetch: if another process committed what
    /// we need meanwhile, take it; else take the fetch lease and fetch, or
    /// wait for the holder's commit (taking over an expired lease).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch_through_cluster(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        flags: Flags,
        query: &str,
        fetch_key: &str,
        started_ms: i64,
        need_after: Option<i64>,
    ) -> Outcome {
        let conn = dev.conn_key.as_str();
        // Seen held in an earlier round: a failure recorded since is the
        // holder's answer to this very fetch.
        let saw_held = std::sync::atomic::AtomicBool::new(false);
        let (this, saw_held) = (self, &saw_held);
        let round = move || async move {
            if let Some(b) = this
                .committed_by_others(dev, op, flags, need_after, started_ms)
                .await
            {
                return Round::Done(Outcome::Fetched(b));
            }
            let now = clock::now_ms();
            match this
                .store
                .try_lease(
                    conn,
                    fetch_key,
                    &this.holder,
                    this.cfg.lease_ttl.as_millis() as i64,
                    now,
                )
                .await
            {
                // The fetch starts now: a forced read that arrived before
                // this moment is answered by it, wherever it waits.
                Ok(true) => {
                    return Round::Done(
                        this.fetch_holding_lease(dev, op, flags, query, fetch_key, now)
                            .await,
                    );
                }
                Ok(false) => {}
                Err(e) => return Round::Done(Outcome::Failed(store_failure(&e))),
            }
            let wait = match this.store.lease(conn, fetch_key).await {
                Ok(LeaseState::Failed { status, body, .. }) if saw_held.load(Relaxed) => {
                    return Round::Done(Outcome::Failed(Failure {
                        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                        unreachable: status >= 502,
                        message: format!("upstream answered {status}"),
                        body,
                        from_upstream: true,
                    }));
                }
                Ok(LeaseState::Held { expires_at_ms }) => {
                    saw_held.store(true, Relaxed);
                    (expires_at_ms - now).clamp(10, 1000)
                }
                Ok(_) => 10,
                Err(e) => return Round::Done(Outcome::Failed(store_failure(&e))),
            };
            Round::WaitUpTo(Duration::from_millis(wait as u64))
        };
        self.lease_wakers
            .until_done((conn.to_string(), fetch_key.to_string()), round)
            .await
    }

    /// What another process committed that satisfies this fetch, if anything.
    pub(super) async fn committed_by_others(
        &self,
        dev: &Device,
        op: Op,
        flags: Flags,
        need_after: Option<i64>,
        flight_started_ms: i64,
    ) -> Option<Arc<StoredBody>> {
        let kind = kind_of(op)?;
        let key = match op {
            Op::Event(i) | Op::Waveform(i) => {
                let id = self.store.identity_at(&dev.conn_key, i).await.ok()??;
                BodyKey {
                    conn_key: dev.conn_key.clone(),
                    kind,
                    id,
                }
            }
            _ => self.body_key(dev, op, flags).await.ok()??,
        };
        let b = self
            .store
            .body(&key.conn_key, kind.as_str(), &key.id)
            .await
            .ok()??;
        let fresh = freshness::is_fresh(kind, &copy_of(&b), &dev.rules, clock::now_ms());
        takes_the_place_of_a_fetch(&b, fresh, need_after, flight_started_ms).then(|| Arc::new(b))
    }
}

/// Whether a fetch that began at `fetch_started_ms` answers a read that
/// arrived at `arrived_ms`: a forced read needs a fetch that began after
/// it arrived (one that began earlier is waited out, then the next one is
/// joined); any other read takes what the flight brought.
pub(super) fn serves_the_read(force: bool, fetch_started_ms: i64, arrived_ms: i64) -> bool {
    !force || fetch_started_ms >= arrived_ms
}

/// Whether a body another proxy committed makes this proxy's fetch
/// needless: for a forced read, one fetched after the read's cut-off;
/// otherwise one fresh by the rules, or committed after this flight began
/// (as fresh as a fetch of our own could be, eventsFreshSeconds 0 too).
pub(super) fn takes_the_place_of_a_fetch(
    b: &StoredBody,
    fresh_by_the_rules: bool,
    need_after: Option<i64>,
    flight_started_ms: i64,
) -> bool {
    match need_after {
        Some(t) => b.fetch_started_ms >= t,
        None => fresh_by_the_rules || b.fetched_at_ms >= flight_started_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fetch_started_ms: i64, fetched_at_ms: i64) -> StoredBody {
        StoredBody {
            body: Bytes::new(),
            etag: String::new(),
            fetched_at_ms,
            fetch_started_ms,
            stale: false,
        }
    }

    #[test]
    fn a_forced_read_is_served_only_by_a_fetch_begun_after_it_arrived() {
        assert!(serves_the_read(false, 10, 20), "a plain read takes any");
        assert!(!serves_the_read(true, 10, 20), "begun before: wait it out");
        assert!(serves_the_read(true, 20, 20));
        assert!(serves_the_read(true, 25, 20));
    }

    #[test]
    fn another_proxys_commit_replaces_a_fetch_when_it_is_as_fresh() {
        // A forced read: only what was fetched after its cut-off.
        assert!(!takes_the_place_of_a_fetch(
            &body(99, 150),
            true,
            Some(100),
            0
        ));
        assert!(takes_the_place_of_a_fetch(
            &body(100, 150),
            false,
            Some(100),
            0
        ));
        // Otherwise: fresh by the rules, or committed after this flight began.
        assert!(takes_the_place_of_a_fetch(&body(0, 10), true, None, 50));
        assert!(!takes_the_place_of_a_fetch(&body(0, 10), false, None, 50));
        assert!(takes_the_place_of_a_fetch(&body(0, 60), false, None, 50));
    }
}
