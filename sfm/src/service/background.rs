//! What runs beside the requests: counter flushes, gauge samples, the
//! store's change events and registry reloads.

use super::*;

impl SfmService {
    /// Writes the counters gathered since the last flush.
    pub async fn flush_counters(&self) {
        let pending: Vec<(String, Counters)> = self.counters.lock().drain().collect();
        for (conn, c) in pending {
            if c.is_zero() {
                continue;
            }
            if let Err(e) = self.store.add_counters(&conn, c).await {
                tracing::warn!(error = %e, "could not write SFM counters; keeping them for the next flush");
                keep_for_next_flush(&mut self.counters.lock(), conn, c);
            }
        }
    }

    /// Refreshes the cached-amount and reachability gauges.
    pub async fn sample_gauges(&self) {
        for d in self.registry.all() {
            // Every device's counters exist from the first scrape, at zero.
            self.metrics.coalesced.with_label_values(&[&d.label]);
            self.metrics.stale_served.with_label_values(&[&d.label]);
            self.metrics
                .reachable
                .with_label_values(&[&d.label])
                .set(i64::from(d.failures == 0));
            if let Ok(kinds) = self.store.by_kind(Some(&d.conn_key)).await {
                for k in Kind::ALL {
                    let (n, bytes) = kinds
                        .iter()
                        .find(|(name, _, _)| name == k.as_str())
                        .map_or((0, 0), |(_, n, b)| (*n, *b));
                    self.metrics
                        .cached_objects
                        .with_label_values(&[&d.label, k.as_str()])
                        .set(n);
                    self.metrics
                        .cached_bytes
                        .with_label_values(&[&d.label, k.as_str()])
                        .set(bytes);
                }
            }
        }
    }

    /// Applies another process's change event.
    pub async fn apply(&self, sig: Signal<SfmEnvelope>) {
        match sig {
            Signal::Connected => {
                self.memory.invalidate_all();
                self.index.lock().clear();
                self.coherent
                    .store(true, std::sync::atomic::Ordering::Release);
                let _ = self.registry.reload().await;
            }
            Signal::Lost => {
                self.coherent
                    .store(false, std::sync::atomic::Ordering::Release);
                self.memory.invalidate_all();
                self.index.lock().clear();
            }
            Signal::Event(env) => {
                let own = env.origin == self.store.origin();
                match reaction(env.event, own) {
                    Reaction::ForgetBody(key) => self.memory.invalidate(&key),
                    Reaction::WakeFetch(key) => self.lease_wakers.wake(&key),
                    Reaction::WakeSlot(conn_key) => self.slot_wakers.wake(&conn_key),
                    Reaction::Nothing => {}
                    Reaction::ReloadDevice {
                        conn_key,
                        forget_memory,
                    } => {
                        if forget_memory {
                            self.forget_device_memory(&conn_key);
                        }
                        match self.registry.reload_one(&conn_key).await {
                            Ok(Some(gone)) => self.metrics.forget(&gone),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "could not reload a device registration")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Starts the background work: change events (PostgreSQL), counter
    /// flushing, registry reloads and gauge sampling. Abort the handles to stop.
    pub fn spawn_background(
        self: &Arc<Self>,
        pg: Option<simcache_store::postgres::PgConfig>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(config) = pg {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let listener = simcache_store::events::listen_on::<SfmEnvelope>(
                config,
                simcache_store::sfm::CHANNEL,
                tx,
            );
            let svc = self.clone();
            // Until LISTEN is in place, memory is bypassed.
            self.coherent
                .store(false, std::sync::atomic::Ordering::Release);
            tasks.push(tokio::spawn(async move {
                while let Some(sig) = rx.recv().await {
                    svc.apply(sig).await;
                }
                listener.abort();
            }));
        }
        let svc = self.clone();
        let every = self.cfg.flush_interval;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                svc.flush_counters().await;
            }
        }));
        let svc = self.clone();
        let every = self.cfg.registry_refresh;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match svc.registry.reload().await {
                    Ok(gone) => gone.iter().for_each(|g| svc.metrics.forget(g)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reload SFM device registrations")
                    }
                }
                svc.sample_gauges().await;
            }
        }));
        tasks
    }
}

/// What another process's change event asks of this one.
#[derive(Debug, PartialEq)]
enum Reaction {
    /// Another proxy stored a newer body: drop ours from memory.
    ForgetBody(BodyKey),
    /// A fetch lease was released or failed: wake its waiters.
    WakeFetch(FlightKey),
    /// A session slot freed up: wake those waiting for one.
    WakeSlot(String),
    /// A registration changed: reload it, and forget the device's bodies
    /// when another process changed it (our own change forgot them already).
    ReloadDevice {
        conn_key: String,
        forget_memory: bool,
    },
    Nothing,
}

/// Decides what a change event does here; `own` when this process sent it.
fn reaction(event: SfmEvent, own: bool) -> Reaction {
    match event {
        SfmEvent::Body { .. } if own => Reaction::Nothing,
        SfmEvent::Body { conn_key, kind, id } => {
            match Kind::ALL.into_iter().find(|k| k.as_str() == kind) {
                Some(kind) => Reaction::ForgetBody(BodyKey { conn_key, kind, id }),
                // A kind this version does not know holds nothing here.
                None => Reaction::Nothing,
            }
        }
        SfmEvent::Lease {
            conn_key,
            fetch_key,
        } => Reaction::WakeFetch((conn_key, fetch_key)),
        SfmEvent::Slot { conn_key } => Reaction::WakeSlot(conn_key),
        SfmEvent::Device { conn_key } => Reaction::ReloadDevice {
            conn_key,
            forget_memory: !own,
        },
    }
}

/// Puts back counters a flush could not write, added to any gathered since.
fn keep_for_next_flush(pending: &mut HashMap<String, Counters>, conn: String, c: Counters) {
    let e = pending.entry(conn).or_default();
    e.hits += c.hits;
    e.misses += c.misses;
    e.upstream_calls += c.upstream_calls;
    e.coalesced += c.coalesced;
    e.stale_served += c.stale_served;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_proxys_body_is_forgotten_and_our_own_kept() {
        let body = |kind: &str| SfmEvent::Body {
            conn_key: "c1".into(),
            kind: kind.into(),
            id: "ev-1".into(),
        };
        assert_eq!(
            reaction(body("event"), false),
            Reaction::ForgetBody(BodyKey {
                conn_key: "c1".into(),
                kind: Kind::Event,
                id: "ev-1".into()
            })
        );
        assert_eq!(reaction(body("event"), true), Reaction::Nothing);
        assert_eq!(reaction(body("hologram"), false), Reaction::Nothing);
    }

    #[test]
    fn leases_and_slots_wake_their_waiters_whoever_sent_them() {
        for own in [true, false] {
            let lease = SfmEvent::Lease {
                conn_key: "c1".into(),
                fetch_key: "events".into(),
            };
            assert_eq!(
                reaction(lease, own),
                Reaction::WakeFetch(("c1".into(), "events".into()))
            );
            let slot = SfmEvent::Slot {
                conn_key: "c1".into(),
            };
            assert_eq!(reaction(slot, own), Reaction::WakeSlot("c1".into()));
        }
    }

    #[test]
    fn a_registration_change_reloads_and_forgets_only_when_another_made_it() {
        let device = || SfmEvent::Device {
            conn_key: "c1".into(),
        };
        assert_eq!(
            reaction(device(), false),
            Reaction::ReloadDevice {
                conn_key: "c1".into(),
                forget_memory: true
            }
        );
        assert_eq!(
            reaction(device(), true),
            Reaction::ReloadDevice {
                conn_key: "c1".into(),
                forget_memory: false
            }
        );
    }

    #[test]
    fn counters_a_flush_could_not_write_are_added_to_the_next() {
        let mut pending = HashMap::new();
        let since = Counters {
            hits: 1,
            ..Counters::default()
        };
        pending.insert("c1".to_string(), since);
        let unwritten = Counters {
            hits: 2,
            misses: 3,
            upstream_calls: 4,
            coalesced: 5,
            stale_served: 6,
        };
        keep_for_next_flush(&mut pending, "c1".into(), unwritten);
        keep_for_next_flush(&mut pending, "c2".into(), unwritten);
        assert_eq!(
            pending["c1"],
            Counters {
                hits: 3,
                ..unwritten
            }
        );
        assert_eq!(pending["c2"], unwritten);
    }
}
