//! `object.stat` and `object.sha256`.

use std::io::Read;

use serde_json::{Value, json};
use sha2::Digest;

use super::runner::{Bounds, FnError, Input};
use crate::source::ObjectInfo;

pub fn stat(key: &str, info: &ObjectInfo) -> Value {
    json!({
        "path": key,
        "size": info.size,
        "etag": info.http_etag(),
        "last_modified_ms": info.last_modified_ms,
    })
}

/// Hashes in 1 MiB steps, checking the deadline between them.
pub fn sha256(input: Input, b: &Bounds) -> Result<Value, FnError> {
    let mut h = sha2::Sha256::new();
    match input {
        Input::Bytes(bytes) => {
            for chunk in bytes.chunks(1 << 20) {
                b.check_deadline()?;
                h.update(chunk);
            }
        }
        Input::File(mut f) => {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                b.check_deadline()?;
                let n = f.read(&mut buf).map_err(|e| FnError::Io(e.to_string()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    Ok(json!({ "sha256": hex::encode(h.finalize()) }))
}
