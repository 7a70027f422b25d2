//! When a cached copy may be served without asking the SOR, and what to do
//! when asking fails. Pure: the service gathers the times and applies the answer.

use std::time::Duration;

use crate::config::Validation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub validation: Validation,
    pub ttl: Duration,
    pub stale_if_error: Duration,
}

/// What a read of a cached copy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRead {
    /// Fresh: serve it.
    Serve,
    /// Ask the SOR with `If-None-Match` first.
    Revalidate,
}

/// What a read does when the SOR could not be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Serve the copy, marked stale.
    ServeStale,
    /// Too old to serve: 503.
    Unavailable,
}

impl Rules {
    /// How long a copy validated at `validated_ms` stays fresh.
    fn fresh_for_ms(&self) -> u64 {
        match self.validation {
            Validation::Ttl => self.ttl.as_millis() as u64,
            Validation::Always => 0,
            Validation::Never => u64::MAX,
        }
    }

    pub fn on_read(&self, validated_ms: u64, now_ms: u64) -> OnRead {
        if self.validation == Validation::Never {
            return OnRead::Serve;
        }
        let age = now_ms.saturating_sub(validated_ms);
        if self.validation == Validation::Ttl && age < self.fresh_for_ms() {
            OnRead::Serve
        } else {
            OnRead::Revalidate
        }
    }

    pub fn on_error(&self, validated_ms: u64, now_ms: u64) -> OnError {
        let age = now_ms.saturating_sub(validated_ms);
        let limit = self
            .fresh_for_ms()
            .saturating_add(self.stale_if_error.as_millis() as u64);
        if age <= limit {
            OnError::ServeStale
        } else {
            OnError::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(v: Validation) -> Rules {
        Rules {
            validation: v,
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(30),
        }
    }

    #[test]
    fn ttl_serves_while_fresh_then_revalidates() {
        let r = rules(Validation::Ttl);
        assert_eq!(r.on_read(1_000, 1_000), OnRead::Serve);
        assert_eq!(r.on_read(1_000, 60_999), OnRead::Serve);
        assert_eq!(r.on_read(1_000, 61_000), OnRead::Revalidate);
        // A clock that went backwards does not make a copy older.
        assert_eq!(r.on_read(5_000, 1_000), OnRead::Serve);
    }

    #[test]
    fn always_asks_and_never_does_not() {
        assert_eq!(
            rules(Validation::Always).on_read(1_000, 1_000),
            OnRead::Revalidate
        );
        assert_eq!(rules(Validation::Never).on_read(0, u64::MAX), OnRead::Serve);
    }

    #[test]
    fn stale_copies_serve_within_the_window_only() {
        let r = rules(Validation::Ttl);
        assert_eq!(r.on_error(0, 90_000), OnError::ServeStale);
        assert_eq!(r.on_error(0, 90_001), OnError::Unavailable);
        let a = rules(Validation::Always);
        assert_eq!(a.on_error(0, 30_000), OnError::ServeStale);
        assert_eq!(a.on_error(0, 30_001), OnError::Unavailable);
    }
}
