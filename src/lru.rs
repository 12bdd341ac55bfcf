//! A bounded map with least-recently-used eviction in O(1): a hash map from key to a slot of a
//! slab, the slots linked most → least recently used by index. Every operation (look-up,
//! insert, removal, eviction) costs one hash look-up and a constant number of link updates,
//! whatever the number of entries: no scan, ever.
//!
//! The users (`cache::CoalescingCache`, `oidc::reuse`) keep their own rules on top (single
//! flight, expiry): this module only stores, orders and evicts.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::Hash;

/// "No slot": the end of the list.
const NIL: usize = usize::MAX;

struct Slot<K, V> {
    key: K,
    value: V,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// See the module documentation.
pub struct Lru<K, V> {
    index: HashMap<K, usize>,
    /// `None` for a free slot (its index is in `free`).
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` entries (at least 1). Nothing is allocated up
    /// front: memory grows with the entries actually stored.
    pub fn new(capacity: usize) -> Self {
        Lru {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            capacity: capacity.max(1),
        }
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The value for `key`, marked most recently used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = *self.index.get(key)?;
        self.unlink(at);
        self.push_newest(at);
        self.slots
            .get_mut(at)
            .and_then(Option::as_mut)
            .map(|slot| &mut slot.value)
    }

    /// Stores `value` under `key` as the most recently used entry, replacing any value there.
    /// When full, the least recently used entry makes room; it is returned.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(&at) = self.index.get(&key) {
            self.unlink(at);
            self.push_newest(at);
            if let Some(slot) = self.slots.get_mut(at).and_then(Option::as_mut) {
                let old = std::mem::replace(&mut slot.value, value);
                return Some((key, old));
            }
            return None;
        }
        let evicted = if self.index.len() >= self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        let slot = Slot {
            key: key.clone(),
            value,
            newer: NIL,
            older: NIL,
        };
        let at = match self.free.pop() {
            Some(at) => {
                if let Some(free) = self.slots.get_mut(at) {
                    *free = Some(slot);
                }
                at
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, at);
        self.push_newest(at);
        evicted
    }

    /// Removes the entry for `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.index.remove(key)?;
        self.take(at).map(|(_, value)| value)
    }

    /// Removes and returns the least recently used entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        let at = self.oldest;
        let (key, value) = self.take(at)?;
        self.index.remove(&key);
        Some((key, value))
    }

    /// Unlinks and frees slot `at` (already out of the index, or about to be).
    fn take(&mut self, at: usize) -> Option<(K, V)> {
        self.unlink(at);
        let slot = self.slots.get_mut(at)?.take()?;
        self.free.push(at);
        Some((slot.key, slot.value))
    }

    fn links(&mut self, at: usize) -> Option<&mut Slot<K, V>> {
        self.slots.get_mut(at).and_then(Option::as_mut)
    }

    fn unlink(&mut self, at: usize) {
        let Some(slot) = self.links(at) else { return };
        let (newer, older) = (slot.newer, slot.older);
        slot.newer = NIL;
        slot.older = NIL;
        match self.links(newer) {
            Some(n) => n.older = older,
            None => {
                if self.newest == at {
                    self.newest = older;
                }
            }
        }
        match self.links(older) {
            Some(o) => o.newer = newer,
            None => {
                if self.oldest == at {
                    self.oldest = newer;
                }
            }
        }
    }

    fn push_newest(&mut self, at: usize) {
        let previous = self.newest;
        if let Some(slot) = self.links(at) {
            slot.older = previous;
            slot.newer = NIL;
        }
        if let Some(p) = self.links(previous) {
            p.newer = at;
        }
        self.newest = at;
        if self.oldest == NIL {
            self.oldest = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys from least to most recently used, walking the links (checks them both ways).
    fn order(lru: &Lru<u32, u32>) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = lru.oldest;
        let mut newer_seen = NIL;
        while let Some(slot) = lru.slots.get(at).and_then(Option::as_ref) {
            assert_eq!(slot.older, newer_seen, "back link of {}", slot.key);
            out.push(slot.key);
            newer_seen = at;
            at = slot.newer;
        }
        assert_eq!(lru.newest, newer_seen);
        assert_eq!(out.len(), lru.len());
        out
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(3);
        for k in 1..=3 {
            assert!(lru.insert(k, k * 10).is_none());
        }
        assert_eq!(order(&lru), [1, 2, 3]);
        assert_eq!(lru.get_mut(&1).copied(), Some(10));
        assert_eq!(order(&lru), [2, 3, 1]);
        assert_eq!(lru.insert(4, 40), Some((2, 20)));
        assert_eq!(order(&lru), [3, 1, 4]);
        assert_eq!(lru.get_mut(&2), None);
        assert_eq!(lru.insert(1, 11), Some((1, 10)), "replaced, not evicted");
        assert_eq!(order(&lru), [3, 4, 1]);
        assert_eq!(lru.remove(&4), Some(40));
        assert_eq!(order(&lru), [3, 1]);
        assert_eq!(lru.pop_oldest(), Some((3, 30)));
        assert_eq!(lru.pop_oldest(), Some((1, 11)));
        assert_eq!(lru.pop_oldest(), None);
        assert_eq!(order(&lru), Vec::<u32>::new());
    }

    #[test]
    fn slots_are_reused_and_memory_stays_bounded() {
        let mut lru = Lru::new(100);
        for k in 0..10_000u32 {
            lru.insert(k, k);
            if k % 3 == 0 {
                lru.remove(&(k / 2));
            }
            if k % 7 == 0 {
                lru.get_mut(&(k / 3));
            }
        }
        assert!(lru.len() <= 100);
        assert!(lru.slots.len() <= 100, "{} slots", lru.slots.len());
        let order = order(&lru);
        assert_eq!(order.last(), Some(&9_999));
    }

    #[test]
    fn a_capacity_of_one() {
        let mut lru = Lru::new(0);
        lru.insert(1, 1);
        assert_eq!(lru.insert(2, 2), Some((1, 1)));
        assert_eq!(order(&lru), [2]);
        assert_eq!(lru.remove(&2), Some(2));
        assert_eq!(lru.len(), 0);
        lru.insert(3, 3);
        assert_eq!(order(&lru), [3]);
    }
}
