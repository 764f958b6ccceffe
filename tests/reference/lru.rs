//! LRU (libCacheSim `lru`): a hit moves the session to the head; the tail goes.

use super::queue::Queue;
use super::Policy;

#[derive(Debug, Default)]
pub struct Lru {
    queue: Queue,
}

impl Lru {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for Lru {
    fn name(&self) -> String {
        "lru".into()
    }

    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.queue.push_head(id);
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.queue.move_to_head(id);
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        evicted.extend(self.queue.pop_tail());
    }

    fn forget(&mut self, id: u64) {
        self.queue.remove(id);
    }
}
