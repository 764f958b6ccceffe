//! An ordered list of distinct ids with a head (newest) and a tail (oldest), the
//! building block of every model: libCacheSim's queues, with O(log n) moves.
//!
//! Order is kept by a stamp that grows with every push, so "move to head" is a
//! re-stamp and "toward head" is the next larger stamp.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Clone)]
pub struct Queue {
    next_stamp: u64,
    stamp_of: HashMap<u64, u64>,
    by_stamp: BTreeMap<u64, u64>,
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_stamp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stamp.is_empty()
    }

    pub fn contains(&self, x: u64) -> bool {
        self.stamp_of.contains_key(&x)
    }

    /// Puts `x` at the head; if it is already queued it moves there.
    pub fn push_head(&mut self, x: u64) {
        self.remove(x);
        self.next_stamp += 1;
        self.stamp_of.insert(x, self.next_stamp);
        self.by_stamp.insert(self.next_stamp, x);
    }

    pub fn move_to_head(&mut self, x: u64) {
        debug_assert!(self.contains(x));
        self.push_head(x);
    }

    /// True if `x` was queued.
    pub fn remove(&mut self, x: u64) -> bool {
        match self.stamp_of.remove(&x) {
            Some(stamp) => {
                self.by_stamp.remove(&stamp);
                true
            }
            None => false,
        }
    }

    /// The oldest entry.
    pub fn tail(&self) -> Option<u64> {
        self.by_stamp.values().next().copied()
    }

    /// The newest entry.
    pub fn head(&self) -> Option<u64> {
        self.by_stamp.values().next_back().copied()
    }

    pub fn pop_tail(&mut self) -> Option<u64> {
        let x = self.tail()?;
        self.remove(x);
        Some(x)
    }

    /// The entry just newer than `x` (libCacheSim's `prev`), if any.
    pub fn toward_head(&self, x: u64) -> Option<u64> {
        let stamp = *self.stamp_of.get(&x)?;
        self.by_stamp
            .range(stamp + 1..)
            .next()
            .map(|(_, &next)| next)
    }

    /// Tail (oldest) to head (newest).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.by_stamp.values().copied()
    }
}
