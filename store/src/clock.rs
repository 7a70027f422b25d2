//! Time as the store keeps it: integer milliseconds since the Unix epoch (UTC),
//! identical in SQLite and PostgreSQL so comparisons never depend on a dialect.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Naive UTC ISO-8601 with seconds precision, the shape sim2l's clients read
/// (`2024-01-01T12:00:00`).
pub fn format_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// Reads the timestamps clients send: Unix seconds (a number in a string),
/// RFC 3339 (`2026-11-21T13:14:16Z`, with offset), or naive UTC as sim2l
/// writes it (`2026-11-21T13:14:16`, `2026-11-21 13:14:16.686905`).
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return secs.is_finite().then_some((secs * 1000.0) as i64);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let normalized = s.replacen(' ', "T", 1);
    let (main, frac) = match normalized.split_once('.') {
        Some((m, f)) => (m.to_string(), f.to_string()),
        None => (normalized.clone(), String::new()),
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(&main, &fmt)
        .ok()?
        .assume_utc();
    let mut ms = t.unix_timestamp() * 1000;
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
        ms += digits.parse::<i64>().ok()?;
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_timestamps_clients_send() {
        assert_eq!(
            parse_timestamp_ms("2024-01-01T12:00:00"),
            Some(1_704_110_400_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-01 12:00:00.250000"),
            Some(1_704_110_400_250)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-01T13:00:00+01:00"),
            Some(1_704_110_400_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-01T12:00:00Z"),
            Some(1_704_110_400_000)
        );
        assert_eq!(parse_timestamp_ms("1704110400"), Some(1_704_110_400_000));
        assert_eq!(parse_timestamp_ms("yesterday"), None);
        assert_eq!(parse_timestamp_ms("2024-13-01T00:00:00"), None);
    }

    #[test]
    fn formats_like_sim2l() {
        assert_eq!(format_ms(1_704_110_400_000), "2024-01-01T12:00:00");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00");
    }
}
