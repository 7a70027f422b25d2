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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_sim2l() {
        assert_eq!(format_ms(1_704_110_400_000), "2024-01-01T12:00:00");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00");
    }
}
