//! Runs a function within bounds: a fixed number at a time off the async
//! workers, a bounded queue (429 beyond it), a deadline the functions check
//! per row group or batch, a memory budget checked before any data is read,
//! and a cap on the answer's size.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{Builtin, Call};
use crate::source::ObjectInfo;

/// The object a function reads.
pub enum Input {
    Bytes(Bytes),
    File(std::fs::File),
}

/// What a function may spend.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub deadline: Instant,
    pub timeout: Duration,
    pub memory_bytes: u64,
}

impl Bounds {
    pub fn check_deadline(&self) -> Result<(), FnError> {
        if Instant::now() > self.deadline {
            Err(FnError::Deadline(self.timeout))
        } else {
            Ok(())
        }
    }

    /// Refuses work whose estimated memory exceeds the budget.
    pub fn check_memory(&self, need: u64, what: &str) -> Result<(), FnError> {
        if need > self.memory_bytes {
            Err(FnError::Budget(format!(
                "{what} needs about {need} bytes of memory, more than the function memory budget of {} bytes (--sor-function-memory-bytes)",
                self.memory_bytes
            )))
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FnError {
    #[error("{0}")]
    Budget(String),
    #[error("the function ran past its deadline of {0:?} (--sor-function-timeout-secs)")]
    Deadline(Duration),
    #[error("{0}")]
    NotApplicable(String),
    #[error("{0}")]
    NoValue(String),
    #[error(
        "the answer is {size} bytes, more than the cap of {cap} bytes; ask for fewer rows or columns"
    )]
    OutputCap { size: usize, cap: usize },
    #[error("{running} functions are running and {queued} waiting; retry shortly")]
    QueueFull { running: usize, queued: usize },
    #[error("reading the cached object failed: {0}")]
    Io(String),
}

impl FnError {
    /// The label of `simcache_sor_function_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            FnError::Budget(_) => "budget",
            FnError::Deadline(_) => "timeout",
            FnError::OutputCap { .. } => "output-cap",
            FnError::QueueFull { .. } => "queue-full",
            FnError::NotApplicable(_) | FnError::NoValue(_) => "not-applicable",
            FnError::Io(_) => "io",
        }
    }
}

pub struct Runner {
    slots: Arc<Semaphore>,
    concurrency: usize,
    admitted: AtomicUsize,
    queue: usize,
    timeout: Duration,
    memory_bytes: u64,
    output_cap: usize,
}

/// Held while a call is admitted (running or queued).
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runner {
    pub fn new(
        concurrency: usize,
        queue: usize,
        timeout: Duration,
        memory_bytes: u64,
        output_cap: usize,
    ) -> Self {
        Runner {
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            admitted: AtomicUsize::new(0),
            queue,
            timeout,
            memory_bytes,
            output_cap,
        }
    }

    /// Runs `call` on `input`; the answer is JSON bytes.
    pub async fn run(
        &self,
        call: &Call,
        key: &str,
        info: &ObjectInfo,
        input: Input,
        footers: Arc<dyn super::parquet_fns::Footers>,
    ) -> Result<Bytes, FnError> {
        let n = self.admitted.fetch_add(1, Ordering::AcqRel) + 1;
        let _admitted = Admitted(&self.admitted);
        if n > self.concurrency + self.queue {
            return Err(FnError::QueueFull {
                running: self.concurrency.min(n - 1),
                queued: (n - 1).saturating_sub(self.concurrency),
            });
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| FnError::Io("shutting down".into()))?;
        // The deadline starts once the call runs, not while it queues.
        let bounds = Bounds {
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
            memory_bytes: self.memory_bytes,
        };
        let (call, key, info) = (call.clone(), key.to_string(), info.clone());
        let cap = self.output_cap;
        tokio::task::spawn_blocking(move || {
            let v = execute(&call, &key, &info, input, &bounds, footers.as_ref())?;
            let body = serde_json::to_vec(&v).map_err(|e| FnError::Io(e.to_string()))?;
            if body.len() > cap {
                return Err(FnError::OutputCap {
                    size: body.len(),
                    cap,
                });
            }
            Ok(Bytes::from(body))
        })
        .await
        .map_err(|e| FnError::Io(format!("function task: {e}")))?
    }
}

/// Runs one built-in synchronously (on a blocking thread).
pub fn execute(
    call: &Call,
    key: &str,
    info: &ObjectInfo,
    input: Input,
    b: &Bounds,
    footers: &dyn super::parquet_fns::Footers,
) -> Result<Value, FnError> {
    use super::{json_fns, object_fns, parquet_fns};
    match call.builtin {
        Builtin::ObjectStat => Ok(object_fns::stat(key, info)),
        Builtin::ObjectSha256 => object_fns::sha256(input, b),
        Builtin::JsonGet | Builtin::JsonKeys | Builtin::JsonLen => {
            let pointer = call
                .args
                .get("pointer")
                .and_then(Value::as_str)
                .unwrap_or("");
            json_fns::run(call.builtin, pointer, input, info.size, b)
        }
        p if p.is_parquet() => {
            let columns: Option<Vec<String>> =
                call.args.get("columns").and_then(Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                });
            let n = call.args.get("n").and_then(Value::as_u64).unwrap_or(5);
            parquet_fns::run(p, columns.as_deref(), n as usize, input, b, footers)
        }
        other => Err(FnError::NotApplicable(format!(
            "{} is not runnable",
            other.name()
        ))),
    }
}

/// The answer's envelope, shared by both routes. The result is spliced in
/// as it was stored, not parsed again.
pub fn envelope(
    call: &Call,
    sor: &str,
    key: &str,
    object_etag: &str,
    cached: bool,
    result: &[u8],
) -> Bytes {
    let head = json!({
        "function": call.name,
        "builtin": call.builtin.name(),
        "sor": sor,
        "path": key,
        "etag": object_etag,
        "cached": cached,
    })
    .to_string();
    let mut out = Vec::with_capacity(head.len() + result.len() + 12);
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(if result.is_empty() { b"null" } else { result });
    out.push(b'}');
    Bytes::from(out)
}
