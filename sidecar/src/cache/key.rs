//! What a cache key may be. Keys look like `{name}/{version}/{hash}` and may
//! one day name files, so anything that could climb a directory is refused.

pub const MAX_KEY_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cache_key is empty")]
    Empty,
    #[error("cache_key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("cache_key contains a control character")]
    ControlCharacter,
    #[error("cache_key contains a backslash")]
    Backslash,
    #[error("cache_key must not start or end with '/' or contain an empty segment ('//')")]
    EmptySegment,
    #[error("cache_key must not contain '.' or '..' segments")]
    DotSegment,
}

pub fn validate(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::ControlCharacter);
    }
    if key.contains('\\') {
        return Err(KeyError::Backslash);
    }
    for seg in key.split('/') {
        match seg {
            "" => return Err(KeyError::EmptySegment),
            "." | ".." => return Err(KeyError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_seed_keys() {
        for k in [
            "thermal_sim/350K",
            "thermal_sim/350K/result",
            "thermal/1.0.0/2824bf41",
            "a.b-c_d",
        ] {
            assert_eq!(validate(k), Ok(()), "{k}");
        }
    }

    #[test]
    fn refuses_bad_keys_by_name() {
        assert_eq!(validate(""), Err(KeyError::Empty));
        assert_eq!(
            validate(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong)
        );
        assert_eq!(validate("a\u{0}b"), Err(KeyError::ControlCharacter));
        assert_eq!(validate("a\\b"), Err(KeyError::Backslash));
        assert_eq!(validate("/abs"), Err(KeyError::EmptySegment));
        assert_eq!(validate("a//b"), Err(KeyError::EmptySegment));
        assert_eq!(validate("a/"), Err(KeyError::EmptySegment));
        assert_eq!(validate("a/../b"), Err(KeyError::DotSegment));
        assert_eq!(validate(".."), Err(KeyError::DotSegment));
    }
}
