//! 2Q (libCacheSim `twoq`, TwoQ.c; Johnson and Shasha, VLDB'94), the full version.
//!
//! Ain is a FIFO of first-time sessions, Am an LRU of returning ones, Aout a
//! FIFO of keys evicted from Ain (the ghost). Kin = 25% and Kout = 50% of the
//! capacity, Km the rest.
//!
//! - A hit in Ain changes nothing; a hit in Am moves to its MRU end.
//! - An arrival whose key is in Aout leaves it and enters Am (first evicting
//!   Am's LRU while Am holds Km or more: libCacheSim's bound, which a full
//!   cache never reaches but a table that lost sessions to expiry can);
//!   any other enters Ain.
//! - Eviction: while Ain holds more than Kin, its tail goes and its key enters
//!   Aout (trimmed from its tail); otherwise Am's LRU goes, leaving no ghost.

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, ARRIVALS, NO_KEY};

/// libCacheSim's defaults (TwoQ.c): `Ain-size-ratio=0.25`, `Aout-size-ratio=0.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub ain_ratio: f64,
    pub aout_ratio: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            ain_ratio: 0.25,
            aout_ratio: 0.5,
        }
    }
}

#[derive(Debug)]
pub struct TwoQ {
    kin: usize,
    kout: usize,
    km: usize,
    ain: Queue,
    aout: Queue,
    am: Queue,
    key: HashMap<u64, u64>,
    ghost_hit: bool,
}

impl TwoQ {
    pub fn new(capacity: usize, params: Params) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&params.ain_ratio) {
            return Err(format!(
                "ain-ratio: expected 0 to 1, got {}",
                params.ain_ratio
            ));
        }
        if !(params.aout_ratio >= 0.0 && params.aout_ratio.is_finite()) {
            return Err(format!(
                "aout-ratio: expected 0 or more, got {}",
                params.aout_ratio
            ));
        }
        let kin = (capacity as f64 * params.ain_ratio) as usize;
        Ok(Self {
            kin,
            kout: (capacity as f64 * params.aout_ratio) as usize,
            km: capacity - kin,
            ain: Queue::new(),
            aout: Queue::new(),
            am: Queue::new(),
            key: HashMap::new(),
            ghost_hit: false,
        })
    }
}

impl Policy for TwoQ {
    fn name(&self) -> String {
        "twoq".into()
    }

    fn arrive(&mut self, key: u64) {
        self.ghost_hit = key != NO_KEY && self.aout.remove(key);
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, evicted: &mut Vec<u64>) {
        self.key.insert(id, key);
        if self.ghost_hit {
            while !self.am.is_empty() && self.am.len() + 1 > self.km {
                let lru = self.am.pop_tail().expect("am is not empty");
                self.key.remove(&lru);
                evicted.push(lru);
            }
            self.am.push_head(id);
        } else {
            self.ain.push_head(id);
        }
        self.ghost_hit = false;
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if self.am.contains(id) {
            self.am.move_to_head(id);
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        if self.ain.len() > self.kin {
            let id = self.ain.pop_tail().expect("ain holds more than kin");
            let key = self.key.remove(&id).expect("every session has a key");
            if key != NO_KEY && !self.aout.contains(key) {
                while !self.aout.is_empty() && self.aout.len() + 1 > self.kout {
                    self.aout.pop_tail();
                }
                if self.kout > 0 {
                    self.aout.push_head(key);
                }
            }
            evicted.push(id);
        } else if let Some(id) = self.am.pop_tail().or_else(|| self.ain.pop_tail()) {
            // Ain is drained only past Kin in libCacheSim; the fallback serves
            // a table whose Am emptied through expiry.
            self.key.remove(&id);
            evicted.push(id);
        }
    }

    fn forget(&mut self, id: u64) {
        self.ain.remove(id);
        self.am.remove(id);
        self.key.remove(&id);
    }

    fn plans(&self) -> bool {
        true
    }

    fn plans_for_strangers(&self) -> bool {
        true
    }

    /// Once the arrival at hand is in Ain, or in Am if it hit Aout (unless
    /// its admission evicts from Am), each later arrival in Ain: Am's LRU
    /// while Ain holds Kin or fewer (one more each time), then Ain's tail,
    /// then the arrivals (not after one that hit Aout: the first of them is
    /// not in Ain).
    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        if self.ghost_hit && !self.am.is_empty() && self.am.len() + 1 > self.km {
            return;
        }
        let mut ain_len = self.ain.len() + usize::from(!self.ghost_hit);
        let (mut am, mut ain) = (self.am.iter(), self.ain.iter());
        for _ in 0..count {
            if ain_len <= self.kin {
                let Some(id) = am.next() else { return };
                out.push(id);
                ain_len += 1;
            } else if let Some(id) = ain.next() {
                out.push(id);
            } else {
                if !self.ghost_hit {
                    out.push(ARRIVALS);
                }
                return;
            }
        }
    }

    fn next_victim(&self) -> Option<u64> {
        if self.ain.len() > self.kin {
            self.ain.tail()
        } else {
            self.am.tail().or_else(|| self.ain.tail())
        }
    }
}
