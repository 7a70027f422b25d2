//! One retry schedule for every loop that waits for something to come back
//! (the database at start, a lost LISTEN channel, an upload): exponential,
//! capped, and jittered so that many pods restarted together do not knock
//! on the database in step.

use std::time::Duration;

use backon::BackoffBuilder;

/// Delays from `first`, doubling up to `cap`, each with random jitter; never
/// runs out (callers stop on their own deadline).
pub fn delays(first: Duration, cap: Duration) -> impl Iterator<Item = Duration> + Send {
    backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let first = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let runs: Vec<Vec<Duration>> = (0..8)
            .map(|_| delays(first, cap).take(12).collect())
            .collect();
        for d in &runs {
            assert!(d[0] >= first && d[0] < first * 2, "{d:?}");
            assert!(d[3] >= first * 8, "doubling: {d:?}");
            // Jitter adds at most one more delay's worth.
            assert!(d.iter().all(|x| *x <= cap * 2), "{d:?}");
            assert!(d[11] >= cap, "capped at {cap:?}: {d:?}");
        }
        assert!(
            runs.iter().any(|r| r != &runs[0]),
            "jitter: eight schedules cannot all be equal"
        );
    }
}
