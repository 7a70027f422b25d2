//! The disk tier's byte budget: least-recently-used entries go first, and
//! space for a fill is reserved before it starts so concurrent fills never
//! overrun the cap together. Pure bookkeeping; the disk tier deletes the
//! files it is told to.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Lru {
    cap: u64,
    used: u64,
    reserved: u64,
    tick: u64,
    /// id → (size, last use).
    entries: HashMap<String, (u64, u64)>,
    by_use: BTreeMap<u64, String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Reserved(pub u64);

impl Lru {
    pub fn new(cap: u64) -> Self {
        Lru {
            cap,
            ..Default::default()
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Marks `id` as just used.
    pub fn touch(&mut self, id: &str) {
        self.tick += 1;
        let t = self.tick;
        if let Some((_, last)) = self.entries.get_mut(id) {
            self.by_use.remove(last);
            *last = t;
            self.by_use.insert(t, id.to_string());
        }
    }

    /// Makes room for `size` bytes, evicting the least recently used
    /// entries. `None` when it cannot fit even after evicting everything
    /// not reserved (the object then streams through unfilled). Returns the
    /// evicted ids with the reservation.
    pub fn reserve(&mut self, size: u64) -> (Option<Reserved>, Vec<String>) {
        if size > self.cap.saturating_sub(self.reserved) {
            return (None, Vec::new());
        }
        let mut evicted = Vec::new();
        while self.used + self.reserved + size > self.cap {
            match self.pop_oldest() {
                Some(id) => evicted.push(id),
                None => return (None, evicted),
            }
        }
        self.reserved += size;
        (Some(Reserved(size)), evicted)
    }

    /// A reserved fill failed or was abandoned.
    pub fn release(&mut self, r: Reserved) {
        self.reserved = self.reserved.saturating_sub(r.0);
    }

    /// A reserved fill completed as `id`; an older entry of the same id is replaced.
    pub fn commit(&mut self, r: Reserved, id: &str) {
        self.remove(id);
        self.reserved = self.reserved.saturating_sub(r.0);
        self.insert_unreserved(id, r.0);
    }

    /// Adds an entry found on disk at start (no reservation); evicts if the
    /// cap shrank since.
    pub fn insert_unreserved(&mut self, id: &str, size: u64) -> Vec<String> {
        self.remove(id);
        self.tick += 1;
        self.entries.insert(id.to_string(), (size, self.tick));
        self.by_use.insert(self.tick, id.to_string());
        self.used += size;
        let mut evicted = Vec::new();
        while self.used + self.reserved > self.cap {
            match self.pop_oldest() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        evicted
    }

    pub fn remove(&mut self, id: &str) -> bool {
        match self.entries.remove(id) {
            Some((size, last)) => {
                self.by_use.remove(&last);
                self.used -= size;
                true
            }
            None => false,
        }
    }

    fn pop_oldest(&mut self) -> Option<String> {
        let (_, id) = self.by_use.pop_first()?;
        if let Some((size, _)) = self.entries.remove(&id) {
            self.used -= size;
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first() {
        let mut l = Lru::new(100);
        for id in ["a", "b", "c"] {
            let (r, ev) = l.reserve(30);
            assert!(ev.is_empty());
            l.commit(r.unwrap(), id);
        }
        l.touch("a");
        let (r, ev) = l.reserve(30);
        assert_eq!(ev, vec!["b".to_string()]);
        l.commit(r.unwrap(), "d");
        assert!(l.contains("a") && l.contains("c") && l.contains("d") && !l.contains("b"));
        assert_eq!(l.used(), 90);
    }

    #[test]
    fn reservations_count_against_the_cap() {
        let mut l = Lru::new(100);
        let (r1, _) = l.reserve(60);
        let r1 = r1.unwrap();
        // Two fills of 60 cannot run together under a cap of 100.
        let (r2, ev) = l.reserve(60);
        assert!(r2.is_none() && ev.is_empty());
        l.release(r1);
        assert_eq!(l.reserved(), 0);
        assert!(l.reserve(60).0.is_some());
    }

    #[test]
    fn an_object_over_the_cap_is_never_reserved() {
        let mut l = Lru::new(100);
        let (r, _) = l.reserve(40);
        l.commit(r.unwrap(), "keep");
        let (r, ev) = l.reserve(101);
        assert!(
            r.is_none() && ev.is_empty(),
            "nothing evicted for a fill that cannot fit"
        );
        assert!(l.contains("keep"));
    }

    #[test]
    fn replacing_an_id_does_not_double_count() {
        let mut l = Lru::new(100);
        let (r, _) = l.reserve(40);
        l.commit(r.unwrap(), "x");
        let (r, _) = l.reserve(50);
        l.commit(r.unwrap(), "x");
        assert_eq!((l.used(), l.len()), (50, 1));
        assert!(l.remove("x"));
        assert_eq!(l.used(), 0);
    }

    #[test]
    fn a_shrunk_cap_evicts_at_start() {
        let mut l = Lru::new(50);
        assert!(l.insert_unreserved("a", 30).is_empty());
        assert_eq!(l.insert_unreserved("b", 30), vec!["a".to_string()]);
    }
}
