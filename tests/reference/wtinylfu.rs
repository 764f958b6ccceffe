//! W-TinyLFU exactly as libCacheSim implements it (`wtinylfu`, WTinyLFU.c with
//! its defaults `main-cache=SLRU, window-size=0.01`), quirks included, so that
//! its miss counts can be reproduced. [`super::caffeine`] is the adaptive
//! variant that Caffeine ships.
//!
//! - A window LRU nominally 1% of the capacity (but unbounded: it only gives
//!   way when the whole cache is full), and a main SLRU of the rest, split
//!   into probation (1/5) and protected (4/5), each truncated, so they can sum
//!   to one less than the main size.
//! - A counting Bloom filter for frequency: 10 hashes over one array of
//!   `ceil(bpe * main size)` counters (false-positive rate 0.001), every
//!   counter incremented on `add` (no conservative update), the estimate the
//!   minimum. All counters halve after 32 x main-size main hits.
//! - The filter counts every miss, every main hit and every window victim
//!   examined; window hits are not counted.
//! - Eviction loops: a window victim that wins against the main victim (a
//!   strictly higher estimate) is admitted, and the loop goes on with the next
//!   window victim until one loses or the window empties (then main evicts).
//!   One miss can therefore evict several sessions.
//! - A probation hit promotes to protected; a protected overflow demotes its
//!   LRU to probation, and a probation overflow then evicts from main. A hit
//!   can therefore evict.
//!
//! Under the table's protocol those extra evictions are handed out as later
//! victims (see [`super::Reference`]).

use std::collections::HashMap;

use super::queue::Queue;
use super::Policy;

#[derive(Debug)]
pub struct WTinyLfu {
    capacity: usize,
    main_size: usize,
    probation_max: usize,
    protected_max: usize,
    window: Queue,
    probation: Queue,
    protected: Queue,
    sketch: CountingBloomFilter,
    main_hits: u64,
    halve_after: u64,
    key: HashMap<u64, u64>,
}

impl WTinyLfu {
    pub fn new(capacity: usize) -> Self {
        let window = (capacity as f64 * 0.01) as usize;
        let main_size = capacity - window;
        Self {
            capacity,
            main_size,
            probation_max: (main_size as f64 * (1.0 / 5.0)) as usize,
            protected_max: (main_size as f64 * (4.0 / 5.0)) as usize,
            window: Queue::new(),
            probation: Queue::new(),
            protected: Queue::new(),
            sketch: CountingBloomFilter::new(main_size, 0.001),
            main_hits: 0,
            halve_after: 32 * main_size as u64,
            key: HashMap::new(),
        }
    }

    pub fn sketch(&self) -> &CountingBloomFilter {
        &self.sketch
    }

    fn main_len(&self) -> usize {
        self.probation.len() + self.protected.len()
    }

    fn main_victim(&self) -> Option<u64> {
        self.probation.tail().or_else(|| self.protected.tail())
    }

    fn main_evict(&mut self, evicted: &mut Vec<u64>) {
        let id = match self.probation.pop_tail() {
            Some(id) => id,
            None => match self.protected.pop_tail() {
                Some(id) => id,
                None => return,
            },
        };
        self.key.remove(&id);
        evicted.push(id);
    }

    fn main_insert(&mut self, id: u64, evicted: &mut Vec<u64>) {
        if self.probation.len() < self.probation_max {
            self.probation.push_head(id);
        } else if self.protected.len() < self.protected_max {
            self.protected.push_head(id);
        } else {
            while self.main_len() + 1 > self.main_size {
                self.main_evict(evicted);
            }
            self.probation.push_head(id);
        }
    }

    fn main_find(&mut self, id: u64, evicted: &mut Vec<u64>) -> bool {
        if self.protected.contains(id) {
            self.protected.move_to_head(id);
            return true;
        }
        if !self.probation.remove(id) {
            return false;
        }
        self.protected.push_head(id);
        while self.protected.len() > self.protected_max {
            let demoted = self.protected.pop_tail().expect("protected overflows");
            self.probation.push_head(demoted);
            while self.probation.len() > self.probation_max {
                self.main_evict(evicted);
            }
        }
        true
    }
}

impl Policy for WTinyLfu {
    fn name(&self) -> String {
        "wtinylfu-libcachesim".into()
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.key.insert(id, key);
        self.window.push_head(id);
        self.sketch.add(key);
    }

    fn hit(&mut self, id: u64, _time: u64, evicted: &mut Vec<u64>) {
        if self.window.contains(id) {
            self.window.move_to_head(id);
        }
        if self.main_find(id, evicted) {
            self.sketch.add(self.key[&id]);
            self.main_hits += 1;
            if self.main_hits >= self.halve_after {
                self.main_hits = 0;
                self.sketch.halve();
            }
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        loop {
            let Some(candidate) = self.window.tail() else {
                self.main_evict(evicted);
                return;
            };
            let key = self.key[&candidate];
            let mut done = false;
            if self.main_len() < self.main_size {
                self.window.remove(candidate);
                self.main_insert(candidate, evicted);
            } else {
                let victim = self.main_victim().expect("main is full");
                if self.sketch.estimate(key) > self.sketch.estimate(self.key[&victim]) {
                    self.main_evict(evicted);
                    self.window.remove(candidate);
                    self.main_insert(candidate, evicted);
                } else {
                    self.window.remove(candidate);
                    self.key.remove(&candidate);
                    evicted.push(candidate);
                    done = true;
                }
            }
            self.sketch.add(key);
            if done {
                return;
            }
        }
    }

    fn forget(&mut self, id: u64) {
        self.window.remove(id);
        self.probation.remove(id);
        self.protected.remove(id);
        self.key.remove(&id);
    }
}

/// libCacheSim's `minimalIncrementCBF`: despite the name, `add` increments all
/// `k` counters.
#[derive(Debug, Clone)]
pub struct CountingBloomFilter {
    hashes: usize,
    counters: Vec<u32>,
}

impl CountingBloomFilter {
    /// Sized as libCacheSim sizes it for `entries` at false-positive rate `error`.
    // libCacheSim's literals (ln 2 squared, and ln 2 cut to 15 digits), kept
    // digit for digit so the sizes match.
    #[allow(clippy::approx_constant)]
    pub fn new(entries: usize, error: f64) -> Self {
        let bits_per_entry = -error.ln() / 0.480_453_013_918_201;
        let hashes = (0.693_147_180_559_945 * bits_per_entry).ceil() as usize;
        let mut len = ((bits_per_entry * entries as f64).ceil() as usize).min(i32::MAX as usize);
        if len < hashes {
            len = 2 * hashes;
        }
        Self {
            hashes,
            counters: vec![0; len],
        }
    }

    pub fn hashes(&self) -> usize {
        self.hashes
    }

    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Double hashing from two seeded XXH64 digests of the key's 8 bytes.
    fn indexes(&self, key: u64) -> impl Iterator<Item = usize> {
        let a = xxh64_u64(key, 0x1234_5678) as u32;
        let b = xxh64_u64(key, 0x1234_4321) as u32;
        let len = self.counters.len() as u32;
        (0..self.hashes as u32).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % len) as usize)
    }

    pub fn add(&mut self, key: u64) {
        for i in self.indexes(key).collect::<Vec<_>>() {
            self.counters[i] += 1;
        }
    }

    pub fn estimate(&self, key: u64) -> u32 {
        self.indexes(key)
            .map(|i| self.counters[i])
            .min()
            .unwrap_or(0)
    }

    pub fn halve(&mut self) {
        for c in &mut self.counters {
            *c >>= 1;
        }
    }
}

/// XXH64 of the 8 little-endian bytes of `v` (the short-input path of the
/// reference algorithm), as libCacheSim hashes object ids.
pub fn xxh64_u64(v: u64, seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    let mut h = seed.wrapping_add(P5).wrapping_add(8);
    let k = v.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1);
    h ^= k;
    h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}
