//! The shapes of identifier-like and path-like fields, once: the CRD
//! schemas carry them as patterns (the API server refuses a CR that breaks
//! one), and the operator and sidecar check the same rules in code, since
//! a CR can predate a pattern and a sidecar can be started by hand.

/// An object name another CR refers to (a DNS-1123 subdomain).
pub const OBJECT_NAME: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

/// A clean relative path: `/`-separated segments of letters, digits, `_`,
/// `-` and `.`, none starting with `.` (so no `.`, `..` or hidden names),
/// no empty segment but an optional trailing `/`; the empty string too.
pub const RELATIVE_PATH: &str =
    r"^([A-Za-z0-9_-][A-Za-z0-9._-]*/)*([A-Za-z0-9_-][A-Za-z0-9._-]*)?$";

/// Whether `s` is an object name (at most 253 characters).
pub fn is_object_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether `n` names a system of record: 1-63 lowercase letters, digits
/// and `-`, starting with a letter and not ending with `-` (it is a URL
/// segment, `/sor/{name}`, and part of a volume name).
pub fn is_sor_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.ends_with('-')
}

/// Whether `b` is an S3 bucket name: 3-63 lowercase letters, digits, `.`
/// and `-`.
pub fn is_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
}

/// Whether `n` is a namespace name (a DNS-1123 label).
pub fn is_namespace(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `s` is a clean relative path ([`RELATIVE_PATH`]).
pub fn is_relative_path(s: &str) -> bool {
    let body = s.strip_suffix('/').unwrap_or(s);
    if body.is_empty() {
        return s.is_empty();
    }
    body.split('/').all(|seg| {
        let b = seg.as_bytes();
        !b.is_empty()
            && b[0] != b'.'
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_clean_or_refused() {
        for ok in ["", "a", "a/b", "a/b/", "inputs/2026/", "x.parquet", "a_b-c"] {
            assert!(is_relative_path(ok), "{ok:?}");
        }
        for bad in [
            "/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            ".hidden",
            "a/.",
            "a,db=file:///etc",
            "a b",
            "a=b",
            "a\\b",
            "a/b//",
        ] {
            assert!(!is_relative_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        for ok in ["a", "unit-a", "unit.a", "0x"] {
            assert!(is_object_name(ok), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "A", "a,b", "ns/a", "a b", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad:?}");
        }
    }
}
