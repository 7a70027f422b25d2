//! Invalidation patterns: globs where `*` (and sim2l's SQL-style `%`) match any
//! run of characters, `/` included, `?` one character, `[...]` a class, and `\`
//! escapes. `_` is a literal, as in a cache key. Pure: no I/O.

use globset::GlobMatcher;

/// Longest pattern accepted.
pub const MAX_PATTERN_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong,
    #[error("pattern contains a control character")]
    ControlCharacter,
    #[error("invalid pattern: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct KeyPattern {
    source: String,
    matcher: GlobMatcher,
    prefix: String,
}

impl KeyPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong);
        }
        if pattern.chars().any(char::is_control) {
            return Err(PatternError::ControlCharacter);
        }
        // `%` is sim2l's "any run"; everything else globset understands. Braces
        // are not part of our syntax, so escape them to keep them literal.
        let mut translated = String::with_capacity(pattern.len() + 4);
        let mut escaped = false;
        for c in pattern.chars() {
            if escaped {
                translated.push('\\');
                translated.push(c);
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '%' => translated.push('*'),
                '{' | '}' => {
                    translated.push('\\');
                    translated.push(c);
                }
                _ => translated.push(c),
            }
        }
        if escaped {
            return Err(PatternError::Invalid(
                "pattern ends with a lone backslash".into(),
            ));
        }
        let glob = globset::GlobBuilder::new(&translated)
            .literal_separator(false)
            .backslash_escape(true)
            .empty_alternates(false)
            .build()
            .map_err(|e| PatternError::Invalid(e.kind().to_string()))?;
        Ok(KeyPattern {
            source: pattern.to_string(),
            matcher: glob.compile_matcher(),
            prefix: literal_prefix(pattern),
        })
    }

    pub fn matches(&self, key: &str) -> bool {
        self.matcher.is_match(key)
    }

    /// The characters every match starts with; lets the store narrow its scan.
    pub fn literal_prefix(&self) -> &str {
        &self.prefix
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '%' | '?' | '[' => break,
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => break,
            },
            _ => out.push(c),
        }
    }
    out
}

/// Smallest string greater than every string starting with `prefix`, for a
/// `key >= prefix AND key < upper` range scan. None when there is no bound.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        KeyPattern::parse(p).unwrap().matches(k)
    }

    #[test]
    fn star_and_percent_match_any_run_including_slashes() {
        assert!(m("thermal_sim/*", "thermal_sim/350K/result"));
        assert!(m("thermal_sim/%", "thermal_sim/350K/result"));
        assert!(m("*", "anything/at/all"));
        assert!(!m("thermal_sim/*", "other/350K"));
    }

    #[test]
    fn question_mark_is_one_char_and_underscore_is_literal() {
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "abbc"));
        assert!(m("thermal_sim", "thermal_sim"));
        assert!(!m("thermal_sim", "thermalXsim"));
    }

    #[test]
    fn classes_escapes_and_braces() {
        assert!(m("run[0-9]", "run7"));
        assert!(!m("run[0-9]", "runx"));
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "axb"));
        assert!(m("x{a,b}", "x{a,b}"));
    }

    #[test]
    fn invalid_patterns_are_named() {
        assert_eq!(KeyPattern::parse("").unwrap_err(), PatternError::Empty);
        assert!(matches!(
            KeyPattern::parse("run[0-9").unwrap_err(),
            PatternError::Invalid(_)
        ));
        assert!(matches!(
            KeyPattern::parse("ab\\").unwrap_err(),
            PatternError::Invalid(_)
        ));
        assert_eq!(
            KeyPattern::parse("a\nb").unwrap_err(),
            PatternError::ControlCharacter
        );
        assert_eq!(
            KeyPattern::parse(&"a".repeat(2000)).unwrap_err(),
            PatternError::TooLong
        );
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(
            KeyPattern::parse("thermal/1.0/*").unwrap().literal_prefix(),
            "thermal/1.0/"
        );
        assert_eq!(KeyPattern::parse("*x").unwrap().literal_prefix(), "");
        assert_eq!(KeyPattern::parse(r"a\*b*").unwrap().literal_prefix(), "a*b");
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper_bound(""), None);
    }
}
