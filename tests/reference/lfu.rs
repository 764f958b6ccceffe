//! LFU (libCacheSim `lfu`, LFU.c): the session with the fewest hits while
//! cached goes; among equals, the one that reached its count first, which is
//! the least recently accessed. A new session starts at 1, remembering nothing
//! of earlier sessions of the same client; no aging.

use std::collections::{BTreeSet, HashMap};

use super::Policy;

#[derive(Debug, Default)]
pub struct Lfu {
    clock: u64,
    /// Per session: (count, when it entered that count).
    state: HashMap<u64, (u64, u64)>,
    order: BTreeSet<(u64, u64, u64)>,
}

impl Lfu {
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&mut self, id: u64, count: u64) {
        self.clock += 1;
        if let Some((c, t)) = self.state.insert(id, (count, self.clock)) {
            self.order.remove(&(c, t, id));
        }
        self.order.insert((count, self.clock, id));
    }
}

impl Policy for Lfu {
    fn name(&self) -> String {
        "lfu".into()
    }

    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.set(id, 1);
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if let Some(&(count, _)) = self.state.get(&id) {
            self.set(id, count + 1);
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        if let Some(&(count, t, id)) = self.order.iter().next() {
            self.order.remove(&(count, t, id));
            self.state.remove(&id);
            evicted.push(id);
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some((c, t)) = self.state.remove(&id) {
            self.order.remove(&(c, t, id));
        }
    }
}
