//! Single flight, in two halves.
//!
//! - **In a process** ([`Flights`]): the first request for a key starts the
//!   work in a task of its own (a reader that goes away does not stop it);
//!   the requests that arrive while it runs join it and get its outcome. The
//!   reader that started it may take something the work sends early (a body
//!   still being written: [`Flight::outcome_or_begun`]) instead of waiting.
//! - **Across processes** ([`Wakers::until_done`]): the work takes a lease or
//!   a slot in the store and the others wait for its commit, woken by the
//!   NOTIFY that names their key ([`Wakers::wake`]) or by a timeout, whichever
//!   comes first; [`heartbeat`] keeps a lease held while its holder works.
//!
//! The SFM proxy uses both halves; the SOR's fills (each sidecar has its own
//! disk tier) only the first.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};

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

    /// For the reader that started the work: whichever comes first, what the
    /// work sent through `begun` or its outcome (a work that never sends
    /// drops its sender, and the outcome is awaited).
    pub async fn outcome_or_begun<B>(&self, begun: oneshot::Receiver<B>) -> Early<T, B> {
        tokio::select! {
            Ok(b) = begun => Early::Begun(b),
            o = self.outcome() => Early::Ended(o),
        }
    }

    /// It has an outcome, or its task died without one.
    fn ended(&self) -> bool {
        self.done.borrow().is_some() || self.done.has_changed().is_err()
    }
}

/// What the reader that started a flight gets first.
#[derive(Debug, PartialEq)]
pub enum Early<T, B> {
    /// The work ended (`None`: its task died without an outcome).
    Ended(Option<T>),
    /// The work sent this before it ended.
    Begun(B),
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

/// What one round of work against the store decided.
pub enum Round<T> {
    Done(T),
    /// Someone else holds the work: wait for their NOTIFY, at most this long.
    WaitUpTo(Duration),
}

/// Past this many wakers, those nobody waits on are dropped on the next
/// lookup: keys name pieces of data, so the map would otherwise grow with
/// every piece ever fetched.
const WAKERS_BEFORE_PRUNING: usize = 256;

/// The waiters across processes, one [`Notify`] per key, woken when a NOTIFY
/// names the key.
pub struct Wakers<K> {
    map: Mutex<HashMap<K, Arc<Notify>>>,
}

impl<K> Default for Wakers<K> {
    fn default() -> Self {
        Wakers {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Wakers<K> {
    /// Runs `round` until it is done; between rounds waits for a wake of
    /// `key` or the round's timeout. The waiter is registered before each
    /// round looks at the store, so a commit and its NOTIFY landing between
    /// the look and the wait are not missed.
    pub async fn until_done<T, F, Fut>(&self, key: K, mut round: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Round<T>>,
    {
        loop {
            let waker = self.waker(key.clone());
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match round().await {
                Round::Done(t) => return t,
                Round::WaitUpTo(d) => {
                    let _ = tokio::time::timeout(d, notified).await;
                }
            }
        }
    }

    /// Wakes whoever waits on `key` in this process.
    pub fn wake(&self, key: &K) {
        let waker = self.map.lock().get(key).cloned();
        if let Some(w) = waker {
            w.notify_waiters();
        }
    }

    /// The waker for `key`, made on first use. A waker nobody holds is
    /// pruned: a waiter takes its `Arc` before it looks at the store, so
    /// pruning cannot lose a notification meant for it.
    fn waker(&self, key: K) -> Arc<Notify> {
        let mut map = self.map.lock();
        if map.len() >= WAKERS_BEFORE_PRUNING {
            map.retain(|_, w| Arc::strong_count(w) > 1);
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }
}

/// Runs `renew` every third of `ttl_ms` until the handle is aborted: what
/// keeps a lease or a slot ours while its holder works.
pub fn heartbeat<F, Fut>(ttl_ms: i64, renew: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let every = Duration::from_millis((ttl_ms / 3).max(50) as u64);
        loop {
            tokio::time::sleep(every).await;
            renew().await;
        }
    })
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

    #[tokio::test]
    async fn the_starter_takes_what_the_work_sends_early_or_else_its_outcome() {
        let flights: Arc<Flights<u8, u8>> = Arc::default();
        // The work sends early and then goes on: the starter has it at once.
        let (tell, begun) = oneshot::channel();
        let (hold, held) = oneshot::channel::<()>();
        let (f, _) = flights.join_or_start(1, 1, move |_| async move {
            let _ = tell.send("growing");
            let _ = held.await;
            5
        });
        assert_eq!(f.outcome_or_begun(begun).await, Early::Begun("growing"));
        let _ = hold.send(());
        assert_eq!(f.outcome().await, Some(5));
        // A work that never sends (drops its sender): the outcome.
        let (tell, begun) = oneshot::channel::<&str>();
        let (f, _) = flights.join_or_start(2, 1, move |_| async move {
            drop(tell);
            6
        });
        assert_eq!(f.outcome_or_begun(begun).await, Early::Ended(Some(6)));
    }

    #[test]
    fn wakers_nobody_waits_on_are_pruned_and_held_ones_kept() {
        let wakers: Wakers<usize> = Wakers::default();
        let held = wakers.waker(0);
        for k in 1..WAKERS_BEFORE_PRUNING {
            wakers.waker(k);
        }
        assert_eq!(wakers.map.lock().len(), WAKERS_BEFORE_PRUNING);
        // The next lookup prunes every waker but the held one.
        let again = wakers.waker(0);
        assert_eq!(wakers.map.lock().len(), 1);
        assert!(Arc::ptr_eq(&held, &again), "a waiter's waker survives");
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_its_key_and_runs_another_round() {
        let wakers: Arc<Wakers<&str>> = Arc::default();
        let rounds = Arc::new(AtomicUsize::new(0));
        let (w, r) = (wakers.clone(), rounds.clone());
        // An hour's timeout: only a wake can bring the second round.
        let waiting = tokio::spawn(async move {
            w.until_done("k", || {
                let r = r.clone();
                async move {
                    match r.fetch_add(1, Ordering::SeqCst) {
                        0 => Round::WaitUpTo(Duration::from_secs(3600)),
                        n => Round::Done(n),
                    }
                }
            })
            .await
        });
        // Wake until the waiter has run its second round; a wake of another
        // key (or before it registered) changes nothing.
        while !waiting.is_finished() {
            wakers.wake(&"other");
            if rounds.load(Ordering::SeqCst) >= 1 {
                wakers.wake(&"k");
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(waiting.await.ok(), Some(1));
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_round_that_waits_runs_again_when_its_timeout_passes() {
        let wakers: Wakers<u8> = Wakers::default();
        let mut n = 0;
        let got = wakers
            .until_done(1, || {
                n += 1;
                let n = n;
                async move {
                    if n < 3 {
                        Round::WaitUpTo(Duration::from_millis(1))
                    } else {
                        Round::Done(n)
                    }
                }
            })
            .await;
        assert_eq!(got, 3);
    }
}
