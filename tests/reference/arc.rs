//! ARC (libCacheSim `arc`, ARC.c; Megiddo and Modha, FAST'03), unit sizes.
//!
//! T1 (seen once) and T2 (seen again) hold sessions; B1 and B2 are their ghost
//! lists, by key. `p`, the target size of T1, is a float starting at 0.
//!
//! - Hit in T1 or T2: to the head of T2.
//! - Arrival whose key is in B1: `p = min(p + max(|B2|/|B1|, 1), C)`, the ratio
//!   taken before the key leaves B1; in B2: `p = max(p - max(|B1|/|B2|, 1), 0)`.
//!   Either way the session enters at the head of T2, otherwise of T1.
//! - Eviction for a ghost arrival: REPLACE. Otherwise (the paper's case IV):
//!   if `|T1| + |B1| + 1 > C`, drop the B1 tail and REPLACE, or, with B1 empty,
//!   evict the T1 tail leaving no ghost; else drop the B2 tail if the four lists
//!   hold at least 2C and B2 is not empty, then REPLACE.
//! - REPLACE: if T1 is not empty and (`|T1| > p`, or `|T1| == p` for an arrival
//!   from B2), or T2 is empty, the T1 tail moves to the head of B1; otherwise
//!   the T2 tail moves to the head of B2.

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, NO_KEY};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ghost {
    None,
    B1,
    B2,
}

#[derive(Debug)]
pub struct Arc {
    capacity: usize,
    p: f64,
    t1: Queue,
    t2: Queue,
    b1: Queue,
    b2: Queue,
    key: HashMap<u64, u64>,
    /// Where the arriving session's key was found.
    arrival: Ghost,
}

impl Arc {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            p: 0.0,
            t1: Queue::new(),
            t2: Queue::new(),
            b1: Queue::new(),
            b2: Queue::new(),
            key: HashMap::new(),
            arrival: Ghost::None,
        }
    }

    /// The target size of T1.
    pub fn p(&self) -> f64 {
        self.p
    }

    fn ghost(&mut self, list: Ghost, id: u64) {
        let key = self.key[&id];
        if key == NO_KEY {
            return;
        }
        match list {
            Ghost::B1 => self.b1.push_head(key),
            Ghost::B2 => self.b2.push_head(key),
            Ghost::None => {}
        }
    }

    fn replace(&mut self, in_b2: bool, evicted: &mut Vec<u64>) {
        let t1 = self.t1.len() as f64;
        let from_t1 =
            (!self.t1.is_empty() && (t1 > self.p || (t1 == self.p && in_b2))) || self.t2.is_empty();
        let (queue, ghost) = if from_t1 {
            (&mut self.t1, Ghost::B1)
        } else {
            (&mut self.t2, Ghost::B2)
        };
        if let Some(id) = queue.pop_tail() {
            self.ghost(ghost, id);
            self.key.remove(&id);
            evicted.push(id);
        }
    }
}

impl Policy for Arc {
    fn name(&self) -> String {
        "arc".into()
    }

    fn arrive(&mut self, key: u64) {
        self.arrival = Ghost::None;
        if key == NO_KEY {
            return;
        }
        let (b1, b2) = (self.b1.len() as f64, self.b2.len() as f64);
        if self.b1.contains(key) {
            self.p = (self.p + (b2 / b1).max(1.0)).min(self.capacity as f64);
            self.b1.remove(key);
            self.arrival = Ghost::B1;
        } else if self.b2.contains(key) {
            self.p = (self.p - (b1 / b2).max(1.0)).max(0.0);
            self.b2.remove(key);
            self.arrival = Ghost::B2;
        }
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.key.insert(id, key);
        if self.arrival == Ghost::None {
            self.t1.push_head(id);
        } else {
            self.t2.push_head(id);
        }
        self.arrival = Ghost::None;
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if self.t1.remove(id) || self.t2.contains(id) {
            self.t2.push_head(id);
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        let c = self.capacity;
        match self.arrival {
            Ghost::B1 => self.replace(false, evicted),
            Ghost::B2 => self.replace(true, evicted),
            Ghost::None if self.t1.len() + self.b1.len() + 1 > c => {
                if self.b1.pop_tail().is_some() {
                    self.replace(false, evicted);
                } else if let Some(id) = self.t1.pop_tail() {
                    self.key.remove(&id);
                    evicted.push(id);
                } else {
                    // Only reachable when the table holds more than C sessions.
                    self.replace(false, evicted);
                }
            }
            Ghost::None => {
                let all = self.t1.len() + self.b1.len() + self.t2.len() + self.b2.len();
                if all >= 2 * c && !self.b2.is_empty() {
                    self.b2.pop_tail();
                }
                self.replace(false, evicted);
            }
        }
    }

    fn forget(&mut self, id: u64) {
        self.t1.remove(id);
        self.t2.remove(id);
        self.key.remove(&id);
    }
}
