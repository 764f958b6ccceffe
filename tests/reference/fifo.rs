//! FIFO (libCacheSim `fifo`): hits change nothing; the oldest insertion goes.

use super::queue::Queue;
use super::Policy;

#[derive(Debug, Default)]
pub struct Fifo {
    queue: Queue,
}

impl Fifo {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for Fifo {
    fn name(&self) -> String {
        "fifo".into()
    }

    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.queue.push_head(id);
    }

    fn hit(&mut self, _id: u64, _time: u64, _evicted: &mut Vec<u64>) {}

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        evicted.extend(self.queue.pop_tail());
    }

    fn forget(&mut self, id: u64) {
        self.queue.remove(id);
    }
}
