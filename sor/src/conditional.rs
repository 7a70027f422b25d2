//! HTTP preconditions and byte ranges over a known representation (RFC 9110
//! §13 and §14), decided without I/O.

/// What the preconditions say to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    /// `If-None-Match` matched: 304.
    NotModified,
    /// `If-Match` did not: 412.
    Failed,
}

/// Splits a list of entity tags (`"a", W/"b"`) and says whether `etag`
/// is among them. `strong` refuses weak tags (If-Match, If-Range).
fn matches(list: &str, etag: &str, strong: bool) -> bool {
    list.split(',').map(str::trim).any(|t| {
        if t == "*" {
            return true;
        }
        let (weak, bare) = match t.strip_prefix("W/") {
            Some(b) => (true, b),
            None => (false, t),
        };
        if strong && weak {
            return false;
        }
        let ours = etag.strip_prefix("W/").unwrap_or(etag);
        bare == ours
    })
}

pub fn evaluate(etag: &str, if_match: Option<&str>, if_none_match: Option<&str>) -> Precondition {
    if let Some(m) = if_match
        && !matches(m, etag, true)
    {
        return Precondition::Failed;
    }
    if let Some(n) = if_none_match
        && matches(n, etag, false)
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// The part of a representation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Full,
    /// Bytes `start..end` (end exclusive).
    Part {
        start: u64,
        end: u64,
    },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Reads one `Range: bytes=...` header against a representation of `size`
/// bytes. Several ranges, other units or a malformed header mean the whole
/// representation (a server may ignore Range). `if_range` is the request's
/// `If-Range`: a range applies only when it names the current ETag or
/// (for a date) the exact `Last-Modified`.
pub fn wanted(
    range: Option<&str>,
    size: u64,
    if_range: Option<&str>,
    etag: &str,
    last_modified: &str,
) -> Wanted {
    let Some(r) = range else {
        return Wanted::Full;
    };
    if let Some(ir) = if_range {
        let ir = ir.trim();
        let holds = if ir.starts_with('"') || ir.starts_with("W/") {
            matches(ir, etag, true)
        } else {
            ir == last_modified
        };
        if !holds {
            return Wanted::Full;
        }
    }
    let Some(spec) = r.trim().strip_prefix("bytes=") else {
        return Wanted::Full;
    };
    if spec.contains(',') {
        return Wanted::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Wanted::Full;
        };
        if n == 0 || size == 0 {
            return Wanted::Unsatisfiable;
        }
        return Wanted::Part {
            start: size.saturating_sub(n),
            end: size,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return Wanted::Full;
    };
    let end = if b.is_empty() {
        size
    } else {
        match b.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(size),
            _ => return Wanted::Full,
        }
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "\"abc\"";
    const LM: &str = "Tue, 01 Dec 2026 00:00:00 GMT";

    #[test]
    fn preconditions() {
        assert_eq!(evaluate(E, None, None), Precondition::Proceed);
        assert_eq!(evaluate(E, Some("\"abc\""), None), Precondition::Proceed);
        assert_eq!(
            evaluate(E, Some("\"x\", \"abc\""), None),
            Precondition::Proceed
        );
        assert_eq!(evaluate(E, Some("*"), None), Precondition::Proceed);
        assert_eq!(evaluate(E, Some("\"old\""), None), Precondition::Failed);
        assert_eq!(evaluate(E, Some("W/\"abc\""), None), Precondition::Failed);
        assert_eq!(
            evaluate(E, None, Some("\"abc\"")),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(E, None, Some("W/\"abc\"")),
            Precondition::NotModified
        );
        assert_eq!(evaluate(E, None, Some("\"old\"")), Precondition::Proceed);
        // If-Match is checked first.
        assert_eq!(
            evaluate(E, Some("\"old\""), Some("\"abc\"")),
            Precondition::Failed
        );
    }

    #[test]
    fn ranges() {
        let w = |r: &str| wanted(Some(r), 100, None, E, LM);
        assert_eq!(w("bytes=0-9"), Wanted::Part { start: 0, end: 10 });
        assert_eq!(
            w("bytes=90-"),
            Wanted::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            w("bytes=90-500"),
            Wanted::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            w("bytes=-10"),
            Wanted::Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(w("bytes=-500"), Wanted::Part { start: 0, end: 100 });
        assert_eq!(w("bytes=100-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=0-1,5-6"), Wanted::Full);
        assert_eq!(w("items=0-1"), Wanted::Full);
        assert_eq!(w("bytes=9-1"), Wanted::Full);
        assert_eq!(w("bytes=x-1"), Wanted::Full);
        assert_eq!(wanted(None, 100, None, E, LM), Wanted::Full);
        assert_eq!(
            wanted(Some("bytes=0-0"), 0, None, E, LM),
            Wanted::Unsatisfiable
        );
    }

    #[test]
    fn if_range_applies_the_range_only_to_the_same_representation() {
        let part = Wanted::Part { start: 0, end: 5 };
        assert_eq!(wanted(Some("bytes=0-4"), 100, Some(E), E, LM), part);
        assert_eq!(
            wanted(Some("bytes=0-4"), 100, Some("\"old\""), E, LM),
            Wanted::Full
        );
        assert_eq!(
            wanted(Some("bytes=0-4"), 100, Some("W/\"abc\""), E, LM),
            Wanted::Full
        );
        assert_eq!(wanted(Some("bytes=0-4"), 100, Some(LM), E, LM), part);
        assert_eq!(
            wanted(
                Some("bytes=0-4"),
                100,
                Some("Mon, 30 Nov 2026 00:00:00 GMT"),
                E,
                LM
            ),
            Wanted::Full
        );
    }
}
