//! Single flight within a process: the first request for a key starts the
//! work in a task of its own (a reader that goes away does not stop it);
//! the requests that arrive while it runs join it and get its outcome.
//! Across processes the work itself takes a lease ([`crate::lease`]) and
//! wakes the others with NOTIFY; the SFM proxy does both, the SOR's fills
//! (each sidecar has its own disk tier) only this half.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// The work in flight for each key.
pub struct Flights<K, T> {
    map: Mutex<HashMap<K, Arc<Flight<T>>>>,
}

/// One piece of work and, once it ends, its outcome.
pub struct Flight<T> {
    /// When it started (milliseconds, the caller's clock): a reader that
    /// needs work begun after it arrived can tell.
    pub started_ms: i64,
    done: watch::Receiver<Option<T>>,
}

impl<T: Clone> Flight<T> {
    /// Waits for the outcome; `None` when the work's task died without one.
    pub async fn outcome(&self) -> Option<T> {
        let mut rx = self.done.clone();
        loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                return Some(o);
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// It has an outcome, or its task died without one.
    fn ended(&self) -> bool {
        self.done.borrow().is_some() || self.done.has_changed().is_err()
    }
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, T> Flights<K, T>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// The flight of `key` under way (joined: `true`), or a new one that
    /// runs `work` (given its start time `now_ms`) in its own task.
    pub fn join_or_start<F, Fut>(
        self: &Arc<Self>,
        key: K,
        now_ms: i64,
        work: F,
    ) -> (Arc<Flight<T>>, bool)
    where
        F: FnOnce(i64) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut map = self.map.lock();
        if let Some(f) = map.get(&key)
            && !f.ended()
        {
            return (f.clone(), true);
        }
        let (tx, rx) = watch::channel(None);
        let flight = Arc::new(Flight {
            started_ms: now_ms,
            done: rx,
        });
        map.insert(key.clone(), flight.clone());
        drop(map);
        let running = work(now_ms);
        let flights = self.clone();
        tokio::spawn(async move {
            let outcome = running.await;
            let _ = tx.send(Some(outcome));
            flights.forget(&key, now_ms);
        });
        (flight, false)
    }

    /// Drops the ended flight of `key` that started at `started_ms` (a newer
    /// one under the same key stays).
    fn forget(&self, key: &K, started_ms: i64) {
        let mut map = self.map.lock();
        if map
            .get(key)
            .is_some_and(|f| f.started_ms == started_ms && f.ended())
        {
            map.remove(key);
        }
    }

    /// Flights under way.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn readers_arriving_during_the_work_join_it_and_later_ones_start_anew() {
        let flights: Arc<Flights<&str, u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let r = runs.clone();
        let (first, joined) = flights.join_or_start("k", 1, move |_| async move {
            r.fetch_add(1, Ordering::SeqCst);
            let _ = wait.await;
            7
        });
        assert!(!joined);
        let (second, joined) = flights.join_or_start("k", 2, |_| async { 99 });
        assert!(joined, "a reader during the work joins it");
        assert_eq!(second.started_ms, 1);
        let _ = go.send(());
        assert_eq!(first.outcome().await, Some(7));
        assert_eq!(second.outcome().await, Some(7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once it has ended, the next reader starts new work.
        let (third, joined) = flights.join_or_start("k", 3, |_| async { 8 });
        assert!(!joined);
        assert_eq!(third.outcome().await, Some(8));
    }

    #[tokio::test]
    async fn work_whose_task_dies_ends_without_an_outcome() {
        let flights: Arc<Flights<u8, u8>> = Arc::default();
        let (f, _) = flights.join_or_start(1, 1, |_| async { panic!("the work failed") });
        assert_eq!(f.outcome().await, None);
    }
}
