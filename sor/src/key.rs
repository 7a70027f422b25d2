//! Logical keys: the only way a caller names data in a system of record.
//!
//! A key is a relative, normalised, `/`-separated name. Anything that could
//! walk out of the SOR's prefix or directory (`..`, an absolute path, a
//! backslash, a control character, an encoded form of those) is refused
//! before any I/O, so a refused request reads and writes nothing.

use std::fmt;

use percent_encoding::percent_decode_str;

pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the path is empty")]
    Empty,
    #[error("the path is {0} bytes; at most {MAX_KEY_BYTES} are allowed")]
    TooLong(usize),
    #[error("the path must be relative to the system of record (no leading '/')")]
    Absolute,
    #[error("the path contains a backslash; use '/' between segments")]
    Backslash,
    #[error("the path contains a control character")]
    Control,
    #[error("the path has an empty, '.' or '..' segment")]
    BadSegment,
    #[error("the path is not valid percent-encoded UTF-8")]
    Encoding,
}

impl Key {
    /// Checks a key exactly as given (already decoded by the router).
    pub fn parse(s: &str) -> Result<Key, KeyError> {
        check(s)?;
        // A second decoding must not reveal anything the first hid:
        // `%2e%2e` arrives here as `..`, but `%252e%252e` arrives as `%2e%2e`.
        let decoded = percent_decode_str(s)
            .decode_utf8()
            .map_err(|_| KeyError::Encoding)?;
        if decoded != s {
            check(&decoded)?;
        }
        Ok(Key(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the key lies under `prefix` (a logical prefix, may be empty).
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix)
    }
}

fn check(s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    if s.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(s.len()));
    }
    if s.starts_with('/') {
        return Err(KeyError::Absolute);
    }
    if s.contains('\\') {
        return Err(KeyError::Backslash);
    }
    if s.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    if s.split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(KeyError::BadSegment);
    }
    Ok(())
}

/// A listing prefix: empty, or a key-shaped string that may end with `/`.
pub fn parse_prefix(s: &str) -> Result<String, KeyError> {
    if s.is_empty() {
        return Ok(String::new());
    }
    Key::parse(s.strip_suffix('/').unwrap_or(s))?;
    Ok(s.to_string())
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_pass() {
        for k in [
            "a.json",
            "dir/sub/file1.snappy.parquet",
            "with space/x",
            "ünï/cödé",
        ] {
            assert_eq!(Key::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn every_attack_is_refused_with_its_reason() {
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("/etc/passwd", KeyError::Absolute),
            ("../secret", KeyError::BadSegment),
            ("a/../../b", KeyError::BadSegment),
            ("a/./b", KeyError::BadSegment),
            ("a//b", KeyError::BadSegment),
            ("a/", KeyError::BadSegment),
            ("..\\windows", KeyError::Backslash),
            ("a\0b", KeyError::Control),
            ("a\nb", KeyError::Control),
            ("%2e%2e/secret", KeyError::BadSegment),
            ("a/%2E%2E/b", KeyError::BadSegment),
            ("%2fetc%2fpasswd", KeyError::Absolute),
            ("a%5cb", KeyError::Backslash),
            ("a%00b", KeyError::Control),
            ("bad%ff", KeyError::Encoding),
        ];
        for (k, want) in cases {
            assert_eq!(Key::parse(k).unwrap_err(), *want, "{k:?}");
        }
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(Key::parse(&long).unwrap_err(), KeyError::TooLong(1025));
        assert!(Key::parse(&"a".repeat(MAX_KEY_BYTES)).is_ok());
    }

    #[test]
    fn prefixes_may_end_with_a_slash() {
        assert_eq!(parse_prefix("").unwrap(), "");
        assert_eq!(parse_prefix("dir/").unwrap(), "dir/");
        assert_eq!(parse_prefix("dir/fi").unwrap(), "dir/fi");
        assert!(parse_prefix("../").is_err());
        assert!(parse_prefix("/").is_err());
    }
}
