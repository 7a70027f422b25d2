//! Waiting on conditions, not on the clock: on a loaded machine every fixed
//! sleep is a guess, so tests poll for what they expect, with a deadline
//! generous enough for a busy 2-core CI box.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen "soon".
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often a condition is looked at again.
const EVERY: Duration = Duration::from_millis(20);

/// Polls `f` until it returns `Some`, for up to `within`; panics naming
/// `what` when it never does.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() >= within {
            panic!("{what} did not happen within {} s", within.as_secs_f64());
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let mut n = 0;
        let got = eventually("the third look", PATIENCE, || {
            n += 1;
            let v = (n >= 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never did not happen within")]
    async fn names_what_never_happened() {
        eventually("never", Duration::from_millis(50), || async { None::<()> }).await;
    }
}
