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
                return Ok(answer(call, sor, key, object_etag, b, true));
            }
        }
        let resolved = self.resolve(sor, key).await?;
        let object_etag = resolved.meta.info.http_etag();
        let fingerprint = call.fingerprint(sor, key.as_str(), &object_etag);
        if let Some(MemValue::Result(b)) = self.memory.get(&fingerprint) {
            return Ok(answer(call, sor, key, object_etag, b, true));
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
                Ok(answer(call, sor, key, object_etag, result, false))
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

/// A function's result as the routes send it: the envelope, and an ETag
/// that changes with the function, its arguments and the object's version.
fn answer(
    call: &Call,
    sor: &str,
    key: &Key,
    object_etag: String,
    result: Bytes,
    cached: bool,
) -> FnAnswer {
    FnAnswer {
        body: envelope(call, sor, key.as_str(), &object_etag, cached, &result),
        etag: call.etag(sor, key.as_str(), &object_etag),
        result,
        object_etag,
        cached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(n: u64) -> Call {
        let args = serde_json::json!({ "n": n });
        Catalog::default()
            .call("parquet.head", args.as_object().cloned().unwrap())
            .unwrap()
    }

    #[test]
    fn an_answer_names_its_version_and_whether_it_was_computed() {
        let key = Key::parse("t/a.parquet").unwrap();
        let a = answer(
            &head(3),
            "data",
            &key,
            "\"v1\"".into(),
            Bytes::from_static(b"[1]"),
            true,
        );
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(body["cached"], true);
        assert_eq!(body["etag"], "\"v1\"");
        assert_eq!(body["result"], serde_json::json!([1]));
        assert_eq!(a.result.as_ref(), b"[1]");
        // The ETag moves with the object's version and with the arguments.
        let v2 = answer(&head(3), "data", &key, "\"v2\"".into(), Bytes::new(), false);
        let n4 = answer(&head(4), "data", &key, "\"v1\"".into(), Bytes::new(), false);
        assert_ne!(a.etag, v2.etag);
        assert_ne!(a.etag, n4.etag);
        let again = answer(&head(3), "data", &key, "\"v1\"".into(), Bytes::new(), false);
        assert_eq!(a.etag, again.etag);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&v2.body).unwrap()["result"],
            serde_json::Value::Null
        );
    }
}
