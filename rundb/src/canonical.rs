//! Canonical JSON: object keys sorted, no whitespace, integral floats
//! written as integers. The same value always gives the same bytes, whatever
//! order a client wrote its keys in, so it is what run identities hash.
//!
//! The bytes are serde_json's compact output (same string escaping, same
//! shortest float form, `zmij`'s). The float formatter is a direct
//! dependency rather than whatever serde_json uses, because a cache key must
//! not change when serde_json changes its formatter (it moved from `ryu` to
//! `zmij`, which writes `1e+308` where `ryu` wrote `1e308`). Writing the bytes
//! directly also skips serde_json's per-value serializer set-up: a 1 MB input
//! document is hashed on every reconcile.

use std::io::Write;

use serde_json::{Map, Value};

/// The canonical form of `v` as a string.
pub fn canonical_json(v: &Value) -> String {
    let mut enc = Encoder::new(Vec::new());
    enc.value(v);
    // Writing into a Vec cannot fail, and the bytes are UTF-8 by construction.
    let _ = enc.finish();
    String::from_utf8(enc.out).unwrap_or_default()
}

/// Streams the canonical form of `v` into `w` (e.g. straight into a hasher).
pub fn write_canonical<W: Write>(v: &Value, w: &mut W) -> std::io::Result<()> {
    let mut enc = Encoder::new(w);
    enc.value(v);
    enc.finish()
}

/// Bytes go into a local buffer (a push is a few instructions, where a
/// `Write` call per token cost as much as walking the value) and reach the
/// writer in chunks.
struct Encoder<W: Write> {
    buf: Vec<u8>,
    out: W,
    error: Option<std::io::Error>,
    /// Whether a large array may still be split across two threads (once
    /// per document).
    may_split: bool,
}

const CHUNK: usize = 32 * 1024;

/// Arrays with this many elements are encoded in two halves at once.
const SPLIT_MIN: usize = 4096;

impl<W: Write> Encoder<W> {
    fn new(out: W) -> Self {
        Encoder {
            buf: Vec::with_capacity(CHUNK + 1024),
            out,
            error: None,
            may_split: true,
        }
    }

    fn flush_if_full(&mut self) {
        if self.buf.len() >= CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.write_direct(&buf);
        self.buf = buf;
        self.buf.clear();
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.flush();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.buf.extend_from_slice(b"null"),
            Value::Bool(true) => self.buf.extend_from_slice(b"true"),
            Value::Bool(false) => self.buf.extend_from_slice(b"false"),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.string(s),
            Value::Array(a) if a.len() >= SPLIT_MIN && self.may_split => {
                // Walking a large value is bound by memory latency, not by
                // arithmetic: a second thread walking the second half takes
                // the time of a 1 MB document from ~4.5 to ~2.5 ms.
                // One split per document: a thread per nested array would cost
                // more than it saves.
                self.may_split = false;
                let (left, right) = a.split_at(a.len() / 2);
                let right_bytes = std::thread::scope(|scope| {
                    let worker = scope.spawn(|| {
                        let mut enc = Encoder::new(Vec::new());
                        enc.may_split = false;
                        enc.elements(right, true);
                        let _ = enc.finish();
                        enc.out
                    });
                    self.buf.push(b'[');
                    self.elements(left, true);
                    worker.join()
                });
                match right_bytes {
                    Ok(bytes) => {
                        self.buf.push(b',');
                        self.flush();
                        self.write_direct(&bytes);
                    }
                    // The worker cannot panic short of allocation failure;
                    // encode the half here rather than lose it.
                    Err(_) => self.elements(right, false),
                }
                self.buf.push(b']');
            }
            Value::Array(a) => {
                self.buf.push(b'[');
                self.elements(a, true);
                self.buf.push(b']');
            }
            Value::Object(m) => self.object(m),
        }
    }

    fn elements(&mut self, a: &[Value], first: bool) {
        for (i, x) in a.iter().enumerate() {
            if i > 0 || !first {
                self.buf.push(b',');
            }
            self.value(x);
            self.flush_if_full();
        }
    }

    /// Bytes already encoded elsewhere, past the (empty) buffer.
    fn write_direct(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(bytes)
        {
            self.error = Some(e);
        }
    }

    fn object(&mut self, m: &Map<String, Value>) {
        self.buf.push(b'{');
        let entry = |enc: &mut Self, i: usize, k: &str, x: &Value| {
            if i > 0 {
                enc.buf.push(b',');
            }
            enc.string(k);
            enc.buf.push(b':');
            enc.value(x);
            enc.flush_if_full();
        };
        if maps_iterate_sorted() {
            for (i, (k, x)) in m.iter().enumerate() {
                entry(self, i, k, x);
            }
        } else {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (k, x)) in entries.into_iter().enumerate() {
                entry(self, i, k, x);
            }
        }
        self.buf.push(b'}');
    }

    /// serde_json escapes exactly the control characters, `"` and `\`; a
    /// string without them is written as it is.
    fn string(&mut self, s: &str) {
        if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.buf, s);
            return;
        }
        self.buf.reserve(s.len() + 2);
        self.buf.push(b'"');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(b'"');
    }

    /// Integers as integers, integral floats (below 2^53) as integers too so
    /// `300` and `300.0` hash alike, other floats in `zmij`'s shortest form.
    fn number(&mut self, n: &serde_json::Number) {
        if let Some(u) = n.as_u64() {
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
        } else if let Some(i) = n.as_i64() {
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
        } else if let Some(f) = n.as_f64() {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                let i = f as i64;
                self.buf
                    .extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else if f.is_finite() {
                self.buf
                    .extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes());
            } else {
                // A JSON number is always finite; written as serde_json would.
                let _ = serde_json::to_writer(&mut self.buf, n);
            }
        }
    }
}

/// Whether serde_json's `Map` iterates in key order: it is a `BTreeMap`
/// unless some crate in the build turns on serde_json's `preserve_order`.
/// Asked once, so objects are not walked twice to check their order.
fn maps_iterate_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.keys().next().map(String::as_str) == Some("a")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_integral_float_spelling_do_not_matter() {
        let a = json!({"b": [1, {"y": 2, "x": 1.0}], "a": "s"});
        let b = json!({"a": "s", "b": [1.0, {"x": 1, "y": 2}]});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":"s","b":[1,{"x":1,"y":2}]}"#);
        assert_ne!(
            canonical_json(&json!({"a": 1.5})),
            canonical_json(&json!({"a": 1}))
        );
    }

    /// Apart from integral floats, the bytes are serde_json's compact output
    /// of the sorted value: strings that need escaping, non-ASCII, extreme
    /// numbers.
    #[test]
    fn the_bytes_are_serde_jsons() {
        let v = json!({
            "plain": "thermal/350K",
            "escapes": "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f}",
            "unicode": "Grüße – 温度 🌡",
            "slash": "a/b",
            "key \"quoted\"\n": true,
            "numbers": [0, -1, u64::MAX, i64::MIN, 0.1, -1.25, 1e-300, 1.7976931348623157e308, 2.5e-8, 123456.789],
            "nested": {"z": null, "a": [false, {}, []]}
        });
        assert_eq!(canonical_json(&v), serde_json::to_string(&v).unwrap());
        // Integral floats are the one spelling that differs.
        assert_eq!(
            canonical_json(&json!([300.0, -2.0, 1e15])),
            "[300,-2,1000000000000000]"
        );
        assert_eq!(canonical_json(&json!([1e16])), "[1e+16]");
    }

    /// Large arrays are encoded in two halves on two threads; the bytes
    /// must be those of one pass, also when nested and when streamed.
    #[test]
    fn large_arrays_encode_as_one_pass_would() {
        let row = |i: usize| json!({"i": i, "x": (i as f64 + 0.5) * 0.37, "s": format!("p\"{i}"), "b": i.is_multiple_of(2)});
        let flat: Vec<Value> = (0..SPLIT_MIN * 2 + 1).map(row).collect();
        let nested: Vec<Value> = (0..3)
            .map(|k| Value::Array((0..SPLIT_MIN + k).map(row).collect()))
            .collect();
        for v in [
            json!({"mesh": flat, "t": 0.5}),
            json!({"outer": nested}),
            Value::Array((0..SPLIT_MIN).map(row).collect()),
        ] {
            let want = serde_json::to_string(&v).unwrap();
            assert_eq!(canonical_json(&v), want);
            let mut streamed = Vec::new();
            write_canonical(&v, &mut OneByteAtATime(&mut streamed)).unwrap();
            assert_eq!(String::from_utf8(streamed).unwrap(), want);
        }
    }

    struct OneByteAtATime<'a>(&'a mut Vec<u8>);

    impl Write for OneByteAtATime<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match buf.first() {
                Some(b) => {
                    self.0.push(*b);
                    Ok(1)
                }
                None => Ok(0),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
