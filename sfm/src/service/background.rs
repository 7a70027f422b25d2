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
                let mut map = self.counters.lock();
                let e = map.entry(conn).or_default();
                e.hits += c.hits;
                e.misses += c.misses;
                e.upstream_calls += c.upstream_calls;
                e.coalesced += c.coalesced;
                e.stale_served += c.stale_served;
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
                match env.event {
                    SfmEvent::Body { conn_key, kind, id } if !own => {
                        if let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind) {
                            self.memory.invalidate(&BodyKey { conn_key, kind, id });
                        }
                    }
                    SfmEvent::Body { .. } => {}
                    SfmEvent::Lease {
                        conn_key,
                        fetch_key,
                    } => {
                        self.waker(&conn_key, &fetch_key).notify_waiters();
                    }
                    SfmEvent::Slot { conn_key } => self.slot_waker(&conn_key).notify_waiters(),
                    SfmEvent::Device { conn_key } => {
                        if !own {
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
