//! Bounded functions over cached data (Parquet and JSON), run beside the
//! request on the cached copy.

use super::*;

impl SorService {
    pub fn functions(&self) -> &Catalog {
        &self.functions
    }

    /// Decides a call from a function name and the caller's arguments.
    pub fn call_for(
        &self,
        name: &str,
        args: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Call, CallError> {
        self.functions.call(name, args)
    }

    /// Runs `call` on the object at `key`: the result from memory when the
    /// same call ran on the same version, else computed within bounds.
    pub async fn run_function(
        self: &Arc<Self>,
        sor: &str,
        key: &Key,
        call: &Call,
    ) -> Result<FnAnswer, FnFailure> {
        // A fresh copy and a result for its version: answer without
        // touching the object at all.
        let id = id_of(sor, key.as_str());
        if let Some(meta) = self.fresh_meta(&id) {
            let object_etag = meta.info.http_etag();
            let fingerprint = call.fingerprint(sor, key.as_str(), &object_etag);
            if let Some(MemValue::Result(b)) = self.memory.get(&fingerprint) {
                return Ok(FnAnswer {
                    body: envelope(call, sor, key.as_str(), &object_etag, true, &b),
                    result: b,
                    etag: call.etag(sor, key.as_str(), &object_etag),
                    object_etag,
                    cached: true,
                });
            }
        }
        let resolved = self.resolve(sor, key).await?;
        let object_etag = resolved.meta.info.http_etag();
        let fingerprint = call.fingerprint(sor, key.as_str(), &object_etag);
        let etag = call.etag(sor, key.as_str(), &object_etag);
        if let Some(MemValue::Result(b)) = self.memory.get(&fingerprint) {
            return Ok(FnAnswer {
                body: envelope(call, sor, key.as_str(), &object_etag, true, &b),
                result: b,
                object_etag,
                etag,
                cached: true,
            });
        }
        let input = match resolved.place {
            Place::Memory(b) => Input::Bytes(b),
            Place::Disk(f) => Input::File(f),
            Place::Growing(g) => {
                let f = g.verified().await.map_err(ReadError::Source)?;
                Input::File(f.try_clone().map_err(|e| {
                    ReadError::Source(SourceError::Unavailable(format!("cache disk: {e}")))
                })?)
            }
            Place::Remote => {
                return Err(FnFailure::TooLarge {
                    size: resolved.meta.info.size,
                    limit: self.limits.max_object_bytes,
                });
            }
        };
        let started = Instant::now();
        let footers = Arc::new(FooterSlot {
            memory: self.memory.clone(),
            key: format!("footer\0{id}\0{object_etag}"),
        });
        let r = self
            .runner
            .run(call, key.as_str(), &resolved.meta.info, input, footers)
            .await;
        let name = call.builtin.name();
        match r {
            Ok(result) => {
                self.metrics
                    .function_duration
                    .with_label_values(&[name])
                    .observe(started.elapsed().as_secs_f64());
                self.memory
                    .insert(fingerprint, MemValue::Result(result.clone()));
                Ok(FnAnswer {
                    body: envelope(call, sor, key.as_str(), &object_etag, false, &result),
                    result,
                    object_etag,
                    etag,
                    cached: false,
                })
            }
            Err(e) => {
                self.metrics
                    .function_rejections
                    .with_label_values(&[name, e.reason()])
                    .inc();
                Err(FnFailure::Function(e))
            }
        }
    }
}
