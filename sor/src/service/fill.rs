//! Filling the cache from the source: one flight per object in this process
//! (readers join it; the one that started it may follow the file as it grows),
//! bounded by the fetch slots, into the disk or memory tier.

use simcache_store::flight::Early;

use super::*;

impl SorService {
    /// Joins the fill of `id` in flight, or starts one.
    pub(super) async fn flight(
        self: &Arc<Self>,
        src: &Arc<Source>,
        key: &Key,
        id: &str,
        existing: Option<Meta>,
    ) -> Result<Filled, SourceError> {
        let (flight, _) = self.join_or_start(src, key, id, existing, None);
        outcome_of(&flight).await
    }

    /// As [`Self::flight`], but the request that starts the fill is answered
    /// as soon as the fill begins on disk, with the growing file.
    pub(super) async fn flight_following(
        self: &Arc<Self>,
        src: &Arc<Source>,
        key: &Key,
        id: &str,
    ) -> Result<Landed, SourceError> {
        let (tell, begun) = tokio::sync::oneshot::channel();
        let (flight, started) = self.join_or_start(src, key, id, None, Some(tell));
        if !started {
            return outcome_of(&flight).await.map(Landed::Filled);
        }
        // Whichever comes first: the fill's end, or its start on disk (a
        // fill that never reaches disk drops the sender).
        match flight.outcome_or_begun(begun).await {
            Early::Begun((meta, growing)) => Ok(Landed::Growing(meta, growing)),
            Early::Ended(outcome) => ended_or_died(outcome).map(Landed::Filled),
        }
    }

    /// The fill of `id` in flight, or a new one (`true`) running in its own
    /// task, so that a reader going away does not stop it.
    pub(super) fn join_or_start(
        self: &Arc<Self>,
        src: &Arc<Source>,
        key: &Key,
        id: &str,
        existing: Option<Meta>,
        tell: Option<Begun>,
    ) -> (Arc<Flight>, bool) {
        // Called only by the reader that starts the fill: joiners clone nothing.
        let (flight, joined) =
            self.flights
                .join_or_start(id.to_string(), simcache_store::clock::now_ms(), |_| {
                    let (this, source) = (self.clone(), src.clone());
                    let (key, id) = (key.clone(), id.to_string());
                    async move { this.fill(&source, &key, &id, existing, tell).await }
                });
        if joined {
            self.metrics
                .coalesced
                .with_label_values(&[src.name.as_str()])
                .inc();
        }
        (flight, !joined)
    }

    pub(super) fn record_fetch(
        &self,
        sor: &str,
        kind: &str,
        started: Instant,
        r: Result<(), &SourceError>,
    ) {
        let status = match r {
            Ok(()) => "ok",
            Err(SourceError::NotModified) => "not-modified",
            Err(SourceError::NotFound) => "not-found",
            Err(SourceError::Changed) => "changed",
            Err(SourceError::Denied(_)) => "denied",
            Err(SourceError::Outside) => "outside",
            Err(SourceError::Corrupt(_)) => "corrupt",
            Err(SourceError::TooLarge { .. }) => "too-large",
            Err(SourceError::Unavailable(_)) => "unavailable",
        };
        self.metrics
            .fetches
            .with_label_values(&[sor, kind, status])
            .inc();
        self.metrics
            .fetch_duration
            .with_label_values(&[sor, kind])
            .observe(started.elapsed().as_secs_f64());
    }

    pub(super) async fn fill(
        &self,
        src: &Source,
        key: &Key,
        id: &str,
        existing: Option<Meta>,
        tell: Option<Begun>,
    ) -> Result<Filled, SourceError> {
        let _slot = self
            .fetch_slots
            .acquire()
            .await
            .map_err(|_| SourceError::Unavailable("shutting down".into()))?;
        let sor = src.name.as_str();
        let kind = if existing.is_some() {
            "revalidate"
        } else {
            "get"
        };
        let started = Instant::now();
        let cond = Conditions {
            if_none_match: existing.as_ref().map(|m| m.info.etag.clone()),
            ..Conditions::default()
        };
        let fetched = src.get(key, cond).await;
        self.record_fetch(sor, kind, started, fetched.as_ref().map(|_| ()));
        let fetched = match (fetched, existing) {
            (Err(SourceError::NotModified), Some(mut m)) => {
                m.validated_at_ms = now_ms();
                self.disk.set_validated(id, m.validated_at_ms);
                if let Some(MemValue::Object(o)) = self.memory.get(id) {
                    self.memory.insert(
                        id.to_string(),
                        MemValue::Object(Arc::new((m.clone(), o.1.clone()))),
                    );
                }
                return Ok(Filled::NotModified(m));
            }
            (Err(SourceError::NotFound), Some(_)) => {
                self.evict_id(id, "deleted");
                return Err(SourceError::NotFound);
            }
            (Err(e), _) => return Err(e),
            (Ok(f), existing) => {
                if existing.is_some() {
                    self.evict_id(id, "changed");
                }
                f
            }
        };
        self.fill_from(sor, key, id, fetched, tell).await
    }

    pub(super) async fn fill_from(
        &self,
        sor: &str,
        key: &Key,
        id: &str,
        fetched: Fetched,
        tell: Option<Begun>,
    ) -> Result<Filled, SourceError> {
        let Fetched { info, mut body, .. } = fetched;
        if info.size > self.limits.max_object_bytes {
            return Ok(Filled::Uncacheable(info));
        }
        let in_memory = info.size <= self.limits.memory_object_bytes;
        let (mut disk_fill, evicted) = match self.disk.begin(info.size).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "SOR disk cache unusable; filling memory only");
                (None, 0)
            }
        };
        if evicted > 0 {
            self.metrics
                .evictions
                .with_label_values(&["disk", "capacity"])
                .inc_by(evicted as u64);
        }
        if disk_fill.is_none() && !in_memory {
            return Ok(Filled::Uncacheable(info));
        }
        let meta_of = |info: ObjectInfo| {
            let now = now_ms();
            Meta {
                sor: sor.to_string(),
                key: key.as_str().to_string(),
                info,
                fetched_at_ms: now,
                validated_at_ms: now,
            }
        };
        if let (Some(tell), Some(f), false) = (tell, disk_fill.as_ref(), in_memory) {
            let _ = tell.send((meta_of(info.clone()), f.follow()));
        }
        let mut buf = in_memory.then(|| BytesMut::with_capacity(info.size as usize));
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            within_stated_size(received, info.size)?;
            if let Some(b) = buf.as_mut() {
                b.extend_from_slice(&chunk);
            }
            if let Some(f) = disk_fill.as_mut() {
                f.write(chunk)
                    .await
                    .map_err(|e| SourceError::Unavailable(format!("cache disk: {e}")))?;
            }
        }
        self.metrics
            .fetch_bytes
            .with_label_values(&[sor])
            .inc_by(received);
        let meta = meta_of(info);
        match disk_fill {
            Some(f) => f.commit(meta.clone()).await?,
            None => exactly_stated_size(received, meta.info.size)?,
        }
        let body = buf.map(BytesMut::freeze);
        if let Some(b) = &body {
            self.memory.insert(
                id.to_string(),
                MemValue::Object(Arc::new((meta.clone(), b.clone()))),
            );
        }
        Ok(Filled::Cached(meta, body))
    }
}

/// A body may not run past the size its source stated.
fn within_stated_size(received: u64, stated: u64) -> Result<(), SourceError> {
    if received > stated {
        return Err(SourceError::Corrupt(
            "more bytes than the SOR stated".into(),
        ));
    }
    Ok(())
}

/// A finished body is exactly the size its source stated (the disk tier
/// checks its own fills, with their hash).
fn exactly_stated_size(received: u64, stated: u64) -> Result<(), SourceError> {
    if received != stated {
        return Err(SourceError::Corrupt(format!(
            "received {received} bytes, the SOR stated {stated}"
        )));
    }
    Ok(())
}

/// A flight's outcome; a fill whose task died is reported unavailable.
async fn outcome_of(flight: &Flight) -> Result<Filled, SourceError> {
    ended_or_died(flight.outcome().await)
}

fn ended_or_died(outcome: Option<Result<Filled, SourceError>>) -> Result<Filled, SourceError> {
    outcome.unwrap_or_else(|| {
        Err(SourceError::Unavailable(
            "the fill task ended without an answer".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_must_be_the_size_its_source_stated() {
        assert!(within_stated_size(10, 10).is_ok());
        assert!(matches!(
            within_stated_size(11, 10),
            Err(SourceError::Corrupt(_))
        ));
        assert!(exactly_stated_size(10, 10).is_ok());
        let short = exactly_stated_size(9, 10).unwrap_err().to_string();
        assert!(
            short.contains("received 9 bytes, the SOR stated 10"),
            "{short}"
        );
    }

    #[test]
    fn a_fill_whose_task_died_is_reported_unavailable() {
        let Err(died) = ended_or_died(None) else {
            panic!("a fill that died has no answer")
        };
        assert!(
            matches!(&died, SourceError::Unavailable(m) if m.contains("without an answer")),
            "{died}"
        );
        assert!(matches!(
            ended_or_died(Some(Err(SourceError::NotFound))),
            Err(SourceError::NotFound)
        ));
    }
}
