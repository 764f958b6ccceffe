//! CLOCK, 1-bit or n-bit (libCacheSim `clock`, Clock.c, `-e n-bit-counter=N`).
//!
//! A session enters at the head with its counter at 0 (its bit is *not* set:
//! a session must be hit once to survive a pass). A hit raises the counter, up
//! to 2^bits - 1, without moving the session. Evicting looks at the tail: a
//! non-zero counter is decremented and the session goes back to the head; the
//! first one found at 0 goes. That is the hand sweeping tail to head.

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, PLAN_WALK};

#[derive(Debug)]
pub struct Clock {
    bits: u32,
    max: u32,
    queue: Queue,
    counter: HashMap<u64, u32>,
}

impl Clock {
    /// `bits`: 1 to 8 (libCacheSim's default is 1).
    pub fn new(bits: u32) -> Result<Self, String> {
        if !(1..=8).contains(&bits) {
            return Err(format!("expected 1 to 8, got {bits}"));
        }
        Ok(Self {
            bits,
            max: (1 << bits) - 1,
            queue: Queue::new(),
            counter: HashMap::new(),
        })
    }
}

impl Policy for Clock {
    fn name(&self) -> String {
        if self.bits == 1 {
            "clock".into()
        } else {
            format!("clock-{}", self.bits)
        }
    }

    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.queue.push_head(id);
        self.counter.insert(id, 0);
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if let Some(c) = self.counter.get_mut(&id) {
            *c = (*c + 1).min(self.max);
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        while let Some(id) = self.queue.tail() {
            let c = self
                .counter
                .get_mut(&id)
                .expect("every queued session has a counter");
            if *c >= 1 {
                *c -= 1;
                self.queue.move_to_head(id);
            } else {
                self.queue.remove(id);
                self.counter.remove(&id);
                evicted.push(id);
                return;
            }
        }
    }

    fn plans(&self) -> bool {
        true
    }

    /// The sessions at 0 from the tail up to the head (what the hand sends
    /// to the head comes back behind any arrival), among the first
    /// [`PLAN_WALK`].
    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        let first = self.queue.iter().take(PLAN_WALK);
        out.extend(first.filter(|id| self.counter[id] == 0).take(count));
    }

    fn forget(&mut self, id: u64) {
        self.queue.remove(id);
        self.counter.remove(&id);
    }
}
