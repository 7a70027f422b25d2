//! Eviction and invalidation: by key, by prefix, and from other replicas'
//! NOTIFY on the invalidation channel.

use super::*;

impl SorService {
    pub(super) fn evict_id(&self, id: &str, reason: &str) {
        if self.memory.contains_key(id) {
            self.memory.invalidate(id);
            self.metrics
                .evictions
                .with_label_values(&["memory", reason])
                .inc();
        }
        if self.disk.evict(id) {
            self.metrics
                .evictions
                .with_label_values(&["disk", reason])
                .inc();
        }
    }

    /// Evicts one key from this process's tiers only.
    pub fn evict_key(&self, sor: &str, key: &Key) -> bool {
        let id = id_of(sor, key.as_str());
        let had = self.memory.contains_key(&id) || self.disk.peek(&id).is_some();
        self.evict_id(&id, "evicted");
        had
    }

    /// Evicts every key of `sor` under `prefix` from this process's tiers.
    pub fn evict_prefix(&self, sor: &str, prefix: &str, reason: &str) -> usize {
        let (s, p) = (sor.to_string(), prefix.to_string());
        let in_memory = self
            .memory
            .iter()
            .filter(|(_, v)| object_under(v, sor, prefix))
            .count();
        let _ = self
            .memory
            .invalidate_entries_if(move |_, v| object_under(v, &s, &p));
        if in_memory > 0 {
            self.metrics
                .evictions
                .with_label_values(&["memory", reason])
                .inc_by(in_memory as u64);
        }
        let on_disk = self.disk.evict_prefix(sor, prefix);
        if on_disk > 0 {
            self.metrics
                .evictions
                .with_label_values(&["disk", reason])
                .inc_by(on_disk as u64);
        }
        in_memory.max(on_disk)
    }

    /// Evicts here and announces it to every sidecar on the same PostgreSQL.
    /// Returns how many objects this process dropped and whether the
    /// announcement went out (`false` without PostgreSQL: nobody to tell).
    pub async fn invalidate(&self, sor: &str, prefix: &str) -> Result<(usize, bool), ReadError> {
        self.source(sor)?;
        let n = self.evict_prefix(sor, prefix, "invalidated");
        let Some(sql) = &self.notify else {
            return Ok((n, false));
        };
        let payload = serde_json::to_string(&Invalidation {
            origin: self.origin.clone(),
            sor: sor.to_string(),
            prefix: prefix.to_string(),
        })
        .unwrap_or_default();
        sql.query(
            "SELECT 1 FROM pg_notify($1, $2)",
            vec![SqlValue::Text(CHANNEL.into()), SqlValue::Text(payload)],
        )
        .await
        .map_err(|e| SourceError::Unavailable(format!("announcing the invalidation: {e}")))?;
        Ok((n, true))
    }

    /// Applies what the channel says. A lost channel drops nothing: the
    /// SOR is the truth and the freshness rules still hold.
    pub fn apply(&self, signal: simcache_store::events::Signal<Invalidation>) {
        if let simcache_store::events::Signal::Event(inv) = signal
            && concerns_us(&inv, &self.origin, |sor| self.sources.contains_key(sor))
        {
            let n = self.evict_prefix(&inv.sor, &inv.prefix, "invalidated");
            tracing::debug!(sor = %inv.sor, prefix = %inv.prefix, evicted = n, "invalidation from another sidecar");
        }
    }

    /// Listens for other sidecars' invalidations for as long as the task lives.
    pub fn spawn_listener(
        self: &Arc<Self>,
        pg: simcache_store::postgres::PgConfig,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let listen = simcache_store::events::listen_on::<Invalidation>(pg, CHANNEL, tx);
        let this = self.clone();
        let apply = tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                this.apply(s);
            }
        });
        vec![listen, apply]
    }
}

/// An object of `sor` whose key starts with `prefix`.
fn object_under(v: &MemValue, sor: &str, prefix: &str) -> bool {
    matches!(v, MemValue::Object(o) if o.0.sor == sor && o.0.key.starts_with(prefix))
}

/// Whether an invalidation on the channel is for this sidecar: sent by
/// another one (ours were applied when sent), about a SOR we serve.
fn concerns_us(inv: &Invalidation, origin: &str, serves: impl Fn(&str) -> bool) -> bool {
    inv.origin != origin && serves(&inv.sor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(sor: &str, key: &str) -> MemValue {
        let meta = Meta {
            sor: sor.into(),
            key: key.into(),
            info: ObjectInfo {
                etag: "e".into(),
                last_modified_ms: 0,
                size: 1,
            },
            fetched_at_ms: 0,
            validated_at_ms: 0,
        };
        MemValue::Object(Arc::new((meta, Bytes::from_static(b"x"))))
    }

    #[test]
    fn a_prefix_covers_the_objects_of_its_sor_only() {
        assert!(object_under(
            &object("data", "runs/1.json"),
            "data",
            "runs/"
        ));
        assert!(object_under(&object("data", "runs/1.json"), "data", ""));
        assert!(!object_under(
            &object("data", "runs/1.json"),
            "other",
            "runs/"
        ));
        assert!(!object_under(&object("data", "meshes/1"), "data", "runs/"));
        // Function results are not objects: an invalidation leaves them to
        // their own key (the object's ETag is part of it).
        assert!(!object_under(&MemValue::Result(Bytes::new()), "data", ""));
    }

    #[test]
    fn only_other_sidecars_invalidations_of_served_sors_apply() {
        let inv = |origin: &str, sor: &str| Invalidation {
            origin: origin.into(),
            sor: sor.into(),
            prefix: String::new(),
        };
        let serves = |sor: &str| sor == "data";
        assert!(concerns_us(&inv("them", "data"), "us", serves));
        assert!(!concerns_us(&inv("us", "data"), "us", serves), "ours");
        assert!(
            !concerns_us(&inv("them", "other"), "us", serves),
            "not served"
        );
    }
}
