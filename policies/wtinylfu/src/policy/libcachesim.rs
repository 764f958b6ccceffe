//! W-TinyLFU exactly as libCacheSim implements it (`WTinyLFU.c` with its
//! defaults `main-cache=SLRU, window-size=0.01`), quirks included, so that its
//! miss counts compare with libCacheSim's figures; `tests/reference/wtinylfu.rs`
//! is the model, and `/work/refsim/DEFINITIONS.md` section 9 the definition.
//!
//! - A window LRU nominally 1% of the capacity but unbounded (it only gives
//!   way when the whole cache is full), and a main SLRU of the rest split
//!   into probation (1/5) and protected (4/5), each truncated, so they can sum
//!   to one less than the main size.
//! - A counting Bloom filter: 10 hashes (double hashing of two seeded XXH64
//!   digests) over one array of `ceil(bpe x main)` counters sized for a 0.001
//!   false-positive rate; `add` increments all ten, the estimate is their
//!   minimum. Every counter halves after `32 x main` main hits.
//! - The filter counts every miss, every main hit and every window victim
//!   examined; window hits are not counted.
//! - Eviction loops: a window victim that beats the main victim (a strictly
//!   higher estimate) is admitted and the loop goes on with the next one, until
//!   one loses or the window empties (then main evicts). A probation hit
//!   promotes to protected, whose overflow demotes to probation, whose overflow
//!   evicts: a hit can evict.

use shadowcat_policy_sdk::SlotList;

pub struct LibCacheSim {
    main_size: u64,
    probation_max: u64,
    protected_max: u64,
    window: SlotList<u64>,
    probation: SlotList<u64>,
    protected: SlotList<u64>,
    filter: CountingBloomFilter,
    main_hits: u64,
    halve_after: u64,
}

impl LibCacheSim {
    pub fn new(capacity: u64) -> Self {
        let window = (capacity as f64 * 0.01) as u64;
        let main_size = capacity - window;
        Self {
            main_size,
            probation_max: (main_size as f64 * (1.0 / 5.0)) as u64,
            protected_max: (main_size as f64 * (4.0 / 5.0)) as u64,
            window: SlotList::new(),
            probation: SlotList::new(),
            protected: SlotList::new(),
            filter: CountingBloomFilter::new(main_size, 0.001),
            main_hits: 0,
            halve_after: 32 * main_size,
        }
    }

    fn main_len(&self) -> u64 {
        (self.probation.len() + self.protected.len()) as u64
    }

    fn main_victim(&self) -> Option<(u64, u64)> {
        self.probation
            .front()
            .or_else(|| self.protected.front())
            .map(|(id, &key)| (id, key))
    }

    fn main_evict(&mut self, evicted: &mut Vec<u64>) {
        if let Some((id, _)) = self
            .probation
            .pop_front()
            .or_else(|| self.protected.pop_front())
        {
            evicted.push(id);
        }
    }

    fn main_insert(&mut self, id: u64, key: u64, evicted: &mut Vec<u64>) {
        if (self.probation.len() as u64) < self.probation_max {
            let _ = self.probation.push_back(id, key);
        } else if (self.protected.len() as u64) < self.protected_max {
            let _ = self.protected.push_back(id, key);
        } else {
            while self.main_len() + 1 > self.main_size && self.main_len() > 0 {
                self.main_evict(evicted);
            }
            let _ = self.probation.push_back(id, key);
        }
    }

    /// A main hit, with libCacheSim's SLRU promotion; `None` if `id` is not
    /// in main.
    fn main_find(&mut self, id: u64, evicted: &mut Vec<u64>) -> Option<u64> {
        if let Some(&mut key) = self.protected.move_to_back(id) {
            return Some(key);
        }
        let key = self.probation.remove(id)?;
        let _ = self.protected.push_back(id, key);
        while self.protected.len() as u64 > self.protected_max {
            let Some((demoted, k)) = self.protected.pop_front() else {
                break;
            };
            let _ = self.probation.push_back(demoted, k);
            while self.probation.len() as u64 > self.probation_max {
                self.main_evict(evicted);
            }
        }
        Some(key)
    }

    pub fn admit(&mut self, id: u64, key: u64) {
        if self.window.push_back(id, key).is_ok() {
            self.filter.add(key);
        }
    }

    pub fn hit(&mut self, id: u64, evicted: &mut Vec<u64>) {
        self.window.move_to_back(id);
        if let Some(key) = self.main_find(id, evicted) {
            self.filter.add(key);
            self.main_hits += 1;
            if self.main_hits >= self.halve_after {
                self.main_hits = 0;
                self.filter.halve();
            }
        }
    }

    pub fn evict(&mut self, evicted: &mut Vec<u64>) {
        loop {
            let Some((candidate, &key)) = self.window.front() else {
                self.main_evict(evicted);
                return;
            };
            let mut done = false;
            if self.main_len() < self.main_size {
                self.window.remove(candidate);
                self.main_insert(candidate, key, evicted);
            } else {
                let Some((_, victim_key)) = self.main_victim() else {
                    // A main of size 0: the window is all there is.
                    self.window.remove(candidate);
                    evicted.push(candidate);
                    return;
                };
                if self.filter.estimate(key) > self.filter.estimate(victim_key) {
                    self.main_evict(evicted);
                    self.window.remove(candidate);
                    self.main_insert(candidate, key, evicted);
                } else {
                    self.window.remove(candidate);
                    evicted.push(candidate);
                    done = true;
                }
            }
            self.filter.add(key);
            if done {
                return;
            }
        }
    }

    pub fn forget(&mut self, id: u64) {
        self.window.remove(id);
        self.probation.remove(id);
        self.protected.remove(id);
    }
}

/// libCacheSim's `minimalIncrementCBF`: despite the name, `add` increments all
/// `k` counters.
struct CountingBloomFilter {
    hashes: u32,
    counters: Vec<u32>,
}

impl CountingBloomFilter {
    // libCacheSim's literals (ln 2 squared, and ln 2 cut to 15 digits), kept
    // digit for digit so the sizes match.
    #[allow(clippy::approx_constant)]
    fn new(entries: u64, error: f64) -> Self {
        let bits_per_entry = -error.ln() / 0.480_453_013_918_201;
        let hashes = (0.693_147_180_559_945 * bits_per_entry).ceil() as u32;
        let mut len = ((bits_per_entry * entries as f64).ceil() as u64).min(i32::MAX as u64);
        if len < u64::from(hashes) {
            len = 2 * u64::from(hashes);
        }
        let mut counters = Vec::new();
        // Without the memory the filter is empty: every estimate is 0 and
        // nothing is admitted over a main victim, rather than a trap.
        if counters.try_reserve_exact(len as usize).is_ok() {
            counters.resize(len as usize, 0);
        }
        Self { hashes, counters }
    }

    /// Double hashing from two seeded XXH64 digests of the key's 8 bytes.
    fn indexes(&self, key: u64) -> impl Iterator<Item = usize> + use<> {
        let a = xxh64_u64(key, 0x1234_5678) as u32;
        let b = xxh64_u64(key, 0x1234_4321) as u32;
        let len = self.counters.len() as u32;
        (0..self.hashes).map(move |i| match len {
            0 => 0,
            len => (a.wrapping_add(i.wrapping_mul(b)) % len) as usize,
        })
    }

    fn add(&mut self, key: u64) {
        if self.counters.is_empty() {
            return;
        }
        for i in self.indexes(key) {
            self.counters[i] = self.counters[i].saturating_add(1);
        }
    }

    fn estimate(&self, key: u64) -> u32 {
        if self.counters.is_empty() {
            return 0;
        }
        self.indexes(key)
            .map(|i| self.counters[i])
            .min()
            .unwrap_or(0)
    }

    fn halve(&mut self) {
        for c in &mut self.counters {
            *c >>= 1;
        }
    }
}

/// XXH64 of the 8 little-endian bytes of `v` (the short-input path of the
/// reference algorithm), as libCacheSim hashes object ids.
fn xxh64_u64(v: u64, seed: u64) -> u64 {
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
