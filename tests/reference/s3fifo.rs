//! S3-FIFO (libCacheSim `s3fifo`, S3FIFO.c; Yang et al., SOSP'23).
//!
//! Three FIFO queues: small (10% of the capacity), main (the rest) and a ghost
//! of keys (90% of the capacity). Every session has a counter `f`.
//!
//! - An arrival whose key is in the ghost leaves it and enters main; any other
//!   enters small. Both start at `f = 0`.
//! - A hit raises `f`, uncapped.
//! - Eviction: from main if main is over its size or small is empty, else from
//!   small. From small: the tail with `f >= move-to-main-threshold` (2 in
//!   libCacheSim) moves to main's head with `f = 0` and the walk goes on; the
//!   first other tail goes, its key into the ghost (trimmed from its tail, and
//!   left alone if already there). If small empties without an eviction, main
//!   evicts. From main: a tail with `f >= 1` goes back to the head with
//!   `f = min(f, 3) - 1`; the first tail at 0 goes.

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, ARRIVALS, NO_KEY, PLAN_WALK};

/// libCacheSim's defaults (S3FIFO.c): `fifo-size-ratio=0.10`,
/// `ghost-size-ratio=0.90`, `move-to-main-threshold=2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub small_ratio: f64,
    pub ghost_ratio: f64,
    pub move_to_main_threshold: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            small_ratio: 0.10,
            ghost_ratio: 0.90,
            move_to_main_threshold: 2,
        }
    }
}

#[derive(Debug)]
pub struct S3Fifo {
    params: Params,
    main_size: usize,
    ghost_size: usize,
    small: Queue,
    main: Queue,
    ghost: Queue,
    freq: HashMap<u64, u64>,
    key: HashMap<u64, u64>,
    ghost_hit: bool,
}

impl S3Fifo {
    pub fn new(capacity: usize, params: Params) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&params.small_ratio) {
            return Err(format!(
                "small-ratio: expected 0 to 1, got {}",
                params.small_ratio
            ));
        }
        if !(params.ghost_ratio >= 0.0 && params.ghost_ratio.is_finite()) {
            return Err(format!(
                "ghost-ratio: expected 0 or more, got {}",
                params.ghost_ratio
            ));
        }
        if params.move_to_main_threshold == 0 {
            return Err("move-to-main-threshold: expected 1 or more, got 0".into());
        }
        // C truncation, as libCacheSim sizes its queues.
        let small_size = (capacity as f64 * params.small_ratio) as usize;
        Ok(Self {
            params,
            main_size: capacity - small_size,
            ghost_size: (capacity as f64 * params.ghost_ratio) as usize,
            small: Queue::new(),
            main: Queue::new(),
            ghost: Queue::new(),
            freq: HashMap::new(),
            key: HashMap::new(),
            ghost_hit: false,
        })
    }

    fn ghost_put(&mut self, key: u64) {
        if key == NO_KEY || self.ghost.contains(key) {
            return;
        }
        while !self.ghost.is_empty() && self.ghost.len() + 1 > self.ghost_size {
            self.ghost.pop_tail();
        }
        if self.ghost_size > 0 {
            self.ghost.push_head(key);
        }
    }

    fn gone(&mut self, id: u64, evicted: &mut Vec<u64>) {
        self.freq.remove(&id);
        self.key.remove(&id);
        evicted.push(id);
    }

    /// True if it evicted; false if small emptied into main.
    fn evict_small(&mut self, evicted: &mut Vec<u64>) -> bool {
        while let Some(id) = self.small.pop_tail() {
            if self.freq[&id] >= self.params.move_to_main_threshold {
                self.main.push_head(id);
                self.freq.insert(id, 0);
            } else {
                self.ghost_put(self.key[&id]);
                self.gone(id, evicted);
                return true;
            }
        }
        false
    }

    fn evict_main(&mut self, evicted: &mut Vec<u64>) {
        while let Some(id) = self.main.pop_tail() {
            let f = self.freq[&id];
            if f >= 1 {
                self.main.push_head(id);
                self.freq.insert(id, f.min(3) - 1);
            } else {
                self.gone(id, evicted);
                return;
            }
        }
    }
}

impl Policy for S3Fifo {
    fn name(&self) -> String {
        "s3fifo".into()
    }

    fn arrive(&mut self, key: u64) {
        self.ghost_hit = key != NO_KEY && self.ghost.remove(key);
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.key.insert(id, key);
        self.freq.insert(id, 0);
        if self.ghost_hit {
            self.main.push_head(id);
        } else {
            self.small.push_head(id);
        }
        self.ghost_hit = false;
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if let Some(f) = self.freq.get_mut(&id) {
            *f += 1;
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        loop {
            if self.main.len() > self.main_size || self.small.is_empty() {
                self.evict_main(evicted);
                return;
            }
            if self.evict_small(evicted) {
                return;
            }
        }
    }

    fn plans(&self) -> bool {
        true
    }

    fn plans_for_strangers(&self) -> bool {
        true
    }

    /// Once the arrival at hand is in small, or in main if it was a ghost,
    /// each later arrival in small: main's next session at 0 on its walk's
    /// first pass while main is over its size (what the walk passes over
    /// goes behind the pass, as promotions do; at most `PLAN_WALK` per step),
    /// otherwise small's next tail below the threshold (those at or above it
    /// move to main on the way, at most `PLAN_WALK` per step), then the
    /// arrivals: not after one that was a ghost (the first of them is not in
    /// small), nor if the promotions on the way put main over its size.
    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        let threshold = self.params.move_to_main_threshold;
        let mut main_len = self.main.len() + usize::from(self.ghost_hit);
        let (mut main, mut small) = (self.main.iter(), self.small.iter());
        for _ in 0..count {
            if main_len > self.main_size {
                let Some(id) = main
                    .by_ref()
                    .take(PLAN_WALK + 1)
                    .find(|id| self.freq[id] == 0)
                else {
                    return;
                };
                out.push(id);
                main_len -= 1;
                continue;
            }
            let mut promoted = 0;
            loop {
                let Some(id) = small.next() else {
                    if !self.ghost_hit && main_len <= self.main_size {
                        out.push(ARRIVALS);
                    }
                    return;
                };
                if self.freq[&id] < threshold {
                    out.push(id);
                    break;
                }
                main_len += 1;
                promoted += 1;
                if promoted > PLAN_WALK {
                    return;
                }
            }
        }
    }

    fn next_victim(&self) -> Option<u64> {
        if self.main.len() > self.main_size {
            return self
                .main
                .iter()
                .take(PLAN_WALK + 1)
                .find(|id| self.freq[id] == 0);
        }
        let threshold = self.params.move_to_main_threshold;
        self.small
            .iter()
            .take(PLAN_WALK + 1)
            .find(|id| self.freq[id] < threshold)
    }

    fn forget(&mut self, id: u64) {
        self.small.remove(id);
        self.main.remove(id);
        self.freq.remove(&id);
        self.key.remove(&id);
    }
}
