//! When a cached body may be served, and what a read does otherwise. Pure:
//! the service gathers the facts, this decides.

use simcache_crds::sfm::SfmCacheSpec;

/// The kinds of data cached, with their rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Cached until a config write marks it stale.
    Info,
    /// Fresh for `eventsFreshSeconds`, then revalidated.
    Events,
    /// Immutable: keyed by event identity.
    Event,
    /// Immutable: keyed by event identity.
    Waveform,
    /// Fresh for `monitorStatusTtlSeconds`.
    Status,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Info => "info",
            Kind::Events => "events",
            Kind::Event => "event",
            Kind::Waveform => "waveform",
            Kind::Status => "status",
        }
    }

    pub const ALL: [Kind; 5] = [
        Kind::Info,
        Kind::Events,
        Kind::Event,
        Kind::Waveform,
        Kind::Status,
    ];
}

/// The freshness settings of one device, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub status_ttl_ms: i64,
    pub events_fresh_ms: i64,
    pub stale_if_error_ms: i64,
    pub stale_after_ms: i64,
}

impl From<&SfmCacheSpec> for Rules {
    fn from(c: &SfmCacheSpec) -> Self {
        Rules {
            status_ttl_ms: c.monitor_status_ttl_seconds.max(0) * 1000,
            events_fresh_ms: c.events_fresh_seconds.max(0) * 1000,
            stale_if_error_ms: c.stale_if_error_seconds.max(0) * 1000,
            stale_after_ms: c.stale_after_seconds.max(0) * 1000,
        }
    }
}

/// What is known about the cached copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub fetched_at_ms: i64,
    pub fetch_started_ms: i64,
    pub stale: bool,
}

/// Whether the unit may be contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Ok,
    /// `suspend: true`: never contact the unit.
    Suspended,
    /// Failed recently; left alone until the window ends.
    BackingOff,
    /// The window ended: one caller may probe.
    ProbeDue,
}

/// The facts of one read.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub kind: Kind,
    pub copy: Option<Copy>,
    pub force: bool,
    /// When the request arrived (a forced read needs a fetch started later).
    pub arrived_ms: i64,
    pub now_ms: i64,
    pub reach: Reach,
    pub rules: Rules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The copy is fresh: serve it.
    Serve,
    /// Fetch (or join a fetch); with a copy, wait at most this long before
    /// serving it stale.
    Fetch { wait_ms: Option<i64> },
    /// Try to claim the one probe of the window; fetch if won, else as
    /// `Unavailable` / `ServeStale`.
    Probe { wait_ms: Option<i64> },
    /// Serve the copy marked stale.
    ServeStale,
    /// 503 at once.
    Unavailable,
}

/// How long past the fetch a copy counts as fresh (None: until marked stale).
fn fresh_for_ms(kind: Kind, rules: &Rules) -> Option<i64> {
    match kind {
        Kind::Info | Kind::Event | Kind::Waveform => None,
        Kind::Events => Some(rules.events_fresh_ms),
        Kind::Status => Some(rules.status_ttl_ms),
    }
}

/// Whether the copy may be served as fresh.
pub fn is_fresh(kind: Kind, c: &Copy, rules: &Rules, now_ms: i64) -> bool {
    !c.stale && fresh_for_ms(kind, rules).is_none_or(|f| now_ms - c.fetched_at_ms < f)
}

/// Whether a copy may still be served when the unit cannot be reached.
pub fn usable_when_unreachable(kind: Kind, c: &Copy, rules: &Rules, now_ms: i64) -> bool {
    let fresh_until = c.fetched_at_ms + fresh_for_ms(kind, rules).unwrap_or(0);
    match fresh_for_ms(kind, rules) {
        // Immutable or until-invalidated data stays true when merely stale.
        None if !c.stale => true,
        _ => now_ms <= fresh_until.max(c.fetched_at_ms) + rules.stale_if_error_ms,
    }
}

/// Whether a body satisfies a read that arrived at `arrived_ms`.
pub fn satisfies(f: &Facts, c: &Copy) -> bool {
    if f.force {
        c.fetch_started_ms >= f.arrived_ms
    } else {
        is_fresh(f.kind, c, &f.rules, f.now_ms)
    }
}

pub fn decide(f: &Facts) -> Decision {
    if let Some(c) = &f.copy
        && satisfies(f, c)
    {
        return Decision::Serve;
    }
    let stale_ok = f
        .copy
        .as_ref()
        .is_some_and(|c| usable_when_unreachable(f.kind, c, &f.rules, f.now_ms));
    let fallback = if stale_ok {
        Decision::ServeStale
    } else {
        Decision::Unavailable
    };
    let wait_ms = f.copy.map(|_| f.rules.stale_after_ms);
    match f.reach {
        Reach::Suspended => {
            // Serve-from-cache only: any copy at all is better than none.
            if f.copy.is_some() {
                Decision::ServeStale
            } else {
                Decision::Unavailable
            }
        }
        Reach::BackingOff => fallback,
        Reach::ProbeDue => Decision::Probe { wait_ms },
        Reach::Ok => Decision::Fetch { wait_ms },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        status_ttl_ms: 30_000,
        events_fresh_ms: 0,
        stale_if_error_ms: 60_000,
        stale_after_ms: 10_000,
    };

    fn facts(kind: Kind, copy: Option<Copy>, reach: Reach) -> Facts {
        Facts {
            kind,
            copy,
            force: false,
            arrived_ms: 100_000,
            now_ms: 100_000,
            reach,
            rules: RULES,
        }
    }

    fn copy(age_ms: i64) -> Copy {
        Copy {
            fetched_at_ms: 100_000 - age_ms,
            fetch_started_ms: 100_000 - age_ms - 5,
            stale: false,
        }
    }

    #[test]
    fn each_kind_stays_fresh_by_its_own_rule() {
        let serve = |k, c| decide(&facts(k, Some(c), Reach::Ok));
        assert_eq!(serve(Kind::Info, copy(1_000_000_000)), Decision::Serve);
        assert_eq!(serve(Kind::Waveform, copy(1_000_000_000)), Decision::Serve);
        assert_eq!(serve(Kind::Event, copy(1_000_000_000)), Decision::Serve);
        assert_eq!(serve(Kind::Status, copy(29_999)), Decision::Serve);
        let fetch = Decision::Fetch {
            wait_ms: Some(10_000),
        };
        assert_eq!(serve(Kind::Status, copy(30_000)), fetch);
        // eventsFreshSeconds 0: every list read revalidates.
        assert_eq!(serve(Kind::Events, copy(0)), fetch);
        let stale = Copy {
            stale: true,
            ..copy(1)
        };
        assert_eq!(serve(Kind::Info, stale), fetch, "a config write marked it");
        assert_eq!(
            decide(&facts(Kind::Info, None, Reach::Ok)),
            Decision::Fetch { wait_ms: None }
        );
    }

    #[test]
    fn a_forced_read_needs_a_fetch_that_started_after_it_arrived() {
        let mut f = facts(Kind::Waveform, Some(copy(10)), Reach::Ok);
        f.force = true;
        assert!(matches!(decide(&f), Decision::Fetch { .. }));
        let later = Copy {
            fetch_started_ms: 100_001,
            fetched_at_ms: 100_500,
            stale: false,
        };
        f.copy = Some(later);
        assert_eq!(decide(&f), Decision::Serve);
    }

    #[test]
    fn unreachable_units_get_stale_copies_or_503() {
        let d = |k, c, r| decide(&facts(k, c, r));
        assert_eq!(
            d(Kind::Status, Some(copy(31_000)), Reach::BackingOff),
            Decision::ServeStale
        );
        // Past its TTL plus staleIfError: too old even as a stale copy.
        assert_eq!(
            d(Kind::Status, Some(copy(30_000 + 60_001)), Reach::BackingOff),
            Decision::Unavailable
        );
        assert_eq!(
            d(Kind::Info, None, Reach::BackingOff),
            Decision::Unavailable
        );
        assert_eq!(
            d(Kind::Waveform, Some(copy(10)), Reach::BackingOff),
            Decision::Serve,
            "a fresh copy never needs the unit"
        );
        assert_eq!(
            d(Kind::Events, Some(copy(5)), Reach::ProbeDue),
            Decision::Probe {
                wait_ms: Some(10_000)
            }
        );
        assert_eq!(
            d(Kind::Events, Some(copy(5)), Reach::Suspended),
            Decision::ServeStale
        );
        assert_eq!(
            d(Kind::Events, None, Reach::Suspended),
            Decision::Unavailable
        );
    }
}
