//! `json.get`, `json.keys`, `json.len` over an RFC 6901 pointer.

use std::io::Read;

use serde_json::{Value, json};

use super::Builtin;
use super::runner::{Bounds, FnError, Input};

/// A parsed document takes several times its text; this is the estimate
/// checked against the memory budget before parsing.
const PARSED_FACTOR: u64 = 6;

pub fn run(
    f: Builtin,
    pointer: &str,
    input: Input,
    size: u64,
    b: &Bounds,
) -> Result<Value, FnError> {
    b.check_memory(
        size.saturating_mul(PARSED_FACTOR),
        "parsing this JSON document",
    )?;
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(FnError::NotApplicable(format!(
            "pointer {pointer:?} must be empty or start with '/' (RFC 6901)"
        )));
    }
    let doc: Value = match input {
        Input::Bytes(bytes) => serde_json::from_slice(&bytes),
        Input::File(mut file) => {
            let mut text = Vec::with_capacity(size as usize);
            file.read_to_end(&mut text)
                .map_err(|e| FnError::Io(e.to_string()))?;
            serde_json::from_slice(&text)
        }
    }
    .map_err(|e| FnError::NotApplicable(format!("the object is not JSON: {e}")))?;
    b.check_deadline()?;
    let v = doc
        .pointer(pointer)
        .ok_or_else(|| FnError::NoValue(format!("no value at pointer {pointer:?}")))?;
    match f {
        Builtin::JsonGet => Ok(json!({ "pointer": pointer, "value": v })),
        Builtin::JsonKeys => match v {
            Value::Object(m) => {
                Ok(json!({ "pointer": pointer, "keys": m.keys().collect::<Vec<_>>() }))
            }
            other => Err(FnError::NotApplicable(format!(
                "the value at {pointer:?} is {}, not an object",
                kind(other)
            ))),
        },
        Builtin::JsonLen => {
            let n = match v {
                Value::Object(m) => m.len(),
                Value::Array(a) => a.len(),
                Value::String(s) => s.chars().count(),
                other => {
                    return Err(FnError::NotApplicable(format!(
                        "the value at {pointer:?} is {}, which has no length",
                        kind(other)
                    )));
                }
            };
            Ok(json!({ "pointer": pointer, "len": n }))
        }
        _ => Err(FnError::NotApplicable("not a JSON function".into())),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn bounds(mem: u64) -> Bounds {
        Bounds {
            deadline: Instant::now() + Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            memory_bytes: mem,
        }
    }

    fn run_on(f: Builtin, p: &str, doc: &str, mem: u64) -> Result<Value, FnError> {
        run(
            f,
            p,
            Input::Bytes(bytes::Bytes::from(doc.to_string())),
            doc.len() as u64,
            &bounds(mem),
        )
    }

    #[test]
    fn pointers_keys_and_lengths() {
        let doc = r#"{"a": {"b": [1, 2, 3], "c": "héllo"}, "x~y": 1}"#;
        assert_eq!(
            run_on(Builtin::JsonGet, "/a/b/1", doc, 1 << 20).unwrap()["value"],
            json!(2)
        );
        assert_eq!(
            run_on(Builtin::JsonGet, "/x~0y", doc, 1 << 20).unwrap()["value"],
            json!(1)
        );
        assert_eq!(
            run_on(Builtin::JsonKeys, "", doc, 1 << 20).unwrap()["keys"],
            json!(["a", "x~y"])
        );
        assert_eq!(
            run_on(Builtin::JsonLen, "/a/b", doc, 1 << 20).unwrap()["len"],
            json!(3)
        );
        assert_eq!(
            run_on(Builtin::JsonLen, "/a/c", doc, 1 << 20).unwrap()["len"],
            json!(5)
        );
        assert!(matches!(
            run_on(Builtin::JsonGet, "/nope", doc, 1 << 20),
            Err(FnError::NoValue(_))
        ));
        assert!(matches!(
            run_on(Builtin::JsonKeys, "/a/b", doc, 1 << 20),
            Err(FnError::NotApplicable(_))
        ));
        assert!(matches!(
            run_on(Builtin::JsonGet, "a", doc, 1 << 20),
            Err(FnError::NotApplicable(_))
        ));
        assert!(matches!(
            run_on(Builtin::JsonGet, "", "{not json", 1 << 20),
            Err(FnError::NotApplicable(_))
        ));
        let e = run_on(Builtin::JsonGet, "", doc, 10).unwrap_err();
        assert!(
            matches!(e, FnError::Budget(ref m) if m.contains("memory budget")),
            "{e}"
        );
    }
}
