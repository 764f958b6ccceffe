//! W-TinyLFU as Caffeine runs it (`BoundedLocalCache` and `FrequencySketch`,
//! Caffeine 3; Einziger, Friedman and Manes, "TinyLFU", ACM ToS 2017, and
//! "Adaptive Software Cache Management", Middleware 2018). libCacheSim's fixed
//! variant is [`super::wtinylfu`].
//!
//! - A window LRU, initially `C - (long)(0.99 C)` sessions (1%, at least 1),
//!   and a main SLRU of the rest: protected at most `(long)(0.8 main)`,
//!   probation whatever remains.
//! - A count-min sketch of 4-bit counters, 4 rows, 16 counters per power of two
//!   of the capacity; every request counts its key once (a miss on arrival, a
//!   hit on access). After `10 C` counted additions all counters halve.
//! - Window overflow moves the window's LRU to probation's MRU end as a
//!   candidate. When the table is full the candidate competes with the main
//!   victim (probation's LRU, else protected's, else the window's): the
//!   candidate stays only with a strictly higher frequency, else it goes.
//!   Without a candidate, because the window is below its maximum, the main
//!   victim goes: the arriving session, which Caffeine would let compete, is
//!   always admitted here, which is also why the window keeps at least 1 slot.
//! - Hits: window and protected move to their MRU end; probation promotes to
//!   protected, whose overflow demotes its LRU back to probation.
//! - Hill climbing: every `10 C` requests (once the cache has been half full)
//!   the sample's hit rate is compared with the previous one. The window moves
//!   by the step size in the same direction if the hit rate did not drop, the
//!   other way if it did; the step restarts at 6.25% of the capacity after a
//!   change of 5 points or more, and otherwise decays by 0.98. Growing takes
//!   from protected (probation's LRU entries, then protected's, move into the
//!   window); shrinking moves the window's LRU entries to probation; the window
//!   never drops below 1. The first step shrinks.
//!
//! Left out: the random admission of a warm losing candidate (1 in 128 when its
//! frequency is above 5), Caffeine's defence against hash flooding, which would
//! make the model nondeterministic; and the sketch's block layout (Caffeine
//! packs a key's four counters into one 64-byte block for cache locality,
//! which changes collisions, not semantics).

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, NO_KEY};

const PERCENT_MAIN: f64 = 0.99;
const PERCENT_MAIN_PROTECTED: f64 = 0.80;
const HILL_CLIMBER_RESTART_THRESHOLD: f64 = 0.05;
const HILL_CLIMBER_STEP_PERCENT: f64 = 0.0625;
const HILL_CLIMBER_STEP_DECAY_RATE: f64 = 0.98;
/// Caffeine moves at most this many entries per maintenance cycle; the rest of
/// an adjustment carries over to the next cycle.
const QUEUE_TRANSFER_THRESHOLD: usize = 1_000;

#[derive(Debug)]
pub struct Caffeine {
    maximum: usize,
    window_max: usize,
    protected_max: usize,
    window: Queue,
    probation: Queue,
    protected: Queue,
    key: HashMap<u64, u64>,
    /// Allocated once the cache is half full, as Caffeine does; until then
    /// nothing is counted and the climber does not sample.
    sketch: Option<FrequencySketch>,
    hits_in_sample: u64,
    misses_in_sample: u64,
    previous_hit_rate: f64,
    step_size: f64,
    /// Window change still to apply (positive: grow).
    adjustment: i64,
}

impl Caffeine {
    pub fn new(capacity: usize) -> Self {
        let max = capacity;
        let window = max - (PERCENT_MAIN * max as f64) as usize;
        Self {
            maximum: max,
            window_max: window,
            protected_max: (PERCENT_MAIN_PROTECTED * (max - window) as f64) as usize,
            window: Queue::new(),
            probation: Queue::new(),
            protected: Queue::new(),
            key: HashMap::new(),
            sketch: None,
            hits_in_sample: 0,
            misses_in_sample: 0,
            previous_hit_rate: 0.0,
            step_size: -HILL_CLIMBER_STEP_PERCENT * max as f64,
            adjustment: 0,
        }
    }

    pub fn window_max(&self) -> usize {
        self.window_max
    }

    pub fn protected_max(&self) -> usize {
        self.protected_max
    }

    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    pub fn sketch(&self) -> Option<&FrequencySketch> {
        self.sketch.as_ref()
    }

    fn len(&self) -> usize {
        self.window.len() + self.probation.len() + self.protected.len()
    }

    fn frequency(&self, id: u64) -> u8 {
        match (&self.sketch, self.key[&id]) {
            (Some(sketch), key) if key != NO_KEY => sketch.frequency(key),
            _ => 0,
        }
    }

    fn count(&mut self, key: u64) {
        if key != NO_KEY {
            if let Some(sketch) = &mut self.sketch {
                sketch.increment(key);
            }
        }
    }

    fn gone(&mut self, id: u64, evicted: &mut Vec<u64>) {
        self.window.remove(id);
        self.probation.remove(id);
        self.protected.remove(id);
        self.key.remove(&id);
        evicted.push(id);
    }

    fn evict_from_window(&mut self) {
        while self.window.len() > self.window_max {
            let Some(id) = self.window.pop_tail() else {
                break;
            };
            self.probation.push_head(id);
        }
    }

    fn demote_from_protected(&mut self) {
        while self.protected.len() > self.protected_max {
            let Some(id) = self.protected.pop_tail() else {
                break;
            };
            self.probation.push_head(id);
        }
    }

    fn climb(&mut self) {
        self.determine_adjustment();
        self.demote_from_protected();
        match self.adjustment {
            0 => {}
            a if a > 0 => self.increase_window(),
            _ => self.decrease_window(),
        }
    }

    fn determine_adjustment(&mut self) {
        let Some(sketch) = &self.sketch else {
            self.previous_hit_rate = 0.0;
            self.hits_in_sample = 0;
            self.misses_in_sample = 0;
            return;
        };
        let requests = self.hits_in_sample + self.misses_in_sample;
        if requests < sketch.sample_size() {
            return;
        }
        let hit_rate = self.hits_in_sample as f64 / requests as f64;
        let change = hit_rate - self.previous_hit_rate;
        let amount = if change >= 0.0 {
            self.step_size
        } else {
            -self.step_size
        };
        let next_step = if change.abs() >= HILL_CLIMBER_RESTART_THRESHOLD {
            let sign = if amount >= 0.0 { 1.0 } else { -1.0 };
            HILL_CLIMBER_STEP_PERCENT * self.maximum as f64 * sign
        } else {
            HILL_CLIMBER_STEP_DECAY_RATE * amount
        };
        self.previous_hit_rate = hit_rate;
        self.adjustment = amount as i64;
        self.step_size = next_step;
        self.hits_in_sample = 0;
        self.misses_in_sample = 0;
    }

    fn increase_window(&mut self) {
        if self.protected_max == 0 {
            return;
        }
        let mut quota = (self.adjustment as usize).min(self.protected_max);
        self.protected_max -= quota;
        self.window_max += quota;
        self.demote_from_protected();
        for _ in 0..QUEUE_TRANSFER_THRESHOLD {
            if quota == 0 {
                break;
            }
            let Some(id) = self
                .probation
                .pop_tail()
                .or_else(|| self.protected.pop_tail())
            else {
                break;
            };
            quota -= 1;
            self.window.push_head(id);
        }
        self.protected_max += quota;
        self.window_max -= quota;
        self.adjustment = quota as i64;
    }

    fn decrease_window(&mut self) {
        if self.window_max <= 1 {
            return;
        }
        let mut quota = (self.adjustment.unsigned_abs() as usize).min(self.window_max - 1);
        self.protected_max += quota;
        self.window_max -= quota;
        for _ in 0..QUEUE_TRANSFER_THRESHOLD {
            if quota == 0 {
                break;
            }
            let Some(id) = self.window.pop_tail() else {
                break;
            };
            quota -= 1;
            self.probation.push_head(id);
        }
        self.protected_max -= quota;
        self.window_max += quota;
        self.adjustment = -(quota as i64);
    }
}

impl Policy for Caffeine {
    fn name(&self) -> String {
        "wtinylfu".into()
    }

    fn arrive(&mut self, key: u64) {
        // Counted before the eviction it may cause, as Caffeine's write task
        // counts the new key before evicting.
        if self.sketch.is_none() && self.len() + 1 >= self.maximum / 2 {
            self.sketch = Some(FrequencySketch::new(self.maximum));
        }
        self.count(key);
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.key.insert(id, key);
        self.window.push_head(id);
        self.misses_in_sample += 1;
        self.evict_from_window();
        self.climb();
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        let Some(&key) = self.key.get(&id) else {
            return;
        };
        self.count(key);
        self.hits_in_sample += 1;
        if self.window.contains(id) {
            self.window.move_to_head(id);
        } else if self.probation.contains(id) {
            if self.protected_max == 0 {
                self.probation.move_to_head(id);
            } else {
                self.probation.remove(id);
                self.protected.push_head(id);
                self.demote_from_protected();
            }
        } else if self.protected.contains(id) {
            self.protected.move_to_head(id);
        }
        self.climb();
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        // The arrival takes a window slot; if that overflows the window, its
        // LRU entry becomes the candidate for main.
        let candidate = if self.window.len() >= self.window_max {
            self.window
                .pop_tail()
                .inspect(|&id| self.probation.push_head(id))
        } else {
            None
        };
        let victim = self
            .probation
            .tail()
            .or_else(|| self.protected.tail())
            .or_else(|| self.window.tail());
        let loser = match (candidate, victim) {
            (Some(c), Some(v)) if c != v => {
                if self.frequency(c) > self.frequency(v) {
                    v
                } else {
                    c
                }
            }
            (Some(c), _) => c,
            (None, Some(v)) => v,
            (None, None) => return,
        };
        self.gone(loser, evicted);
    }

    fn forget(&mut self, id: u64) {
        self.window.remove(id);
        self.probation.remove(id);
        self.protected.remove(id);
        self.key.remove(&id);
    }
}

/// Caffeine's popularity sketch: a count-min sketch of 4-bit counters that
/// halves itself after `10 x capacity` additions, so that the history ages.
#[derive(Debug, Clone)]
pub struct FrequencySketch {
    width: usize,
    counters: Vec<u8>,
    sample_size: u64,
    /// Additions since the last halving (corrected at each halving).
    size: u64,
}

impl FrequencySketch {
    const DEPTH: usize = 4;
    const MAX_COUNT: u8 = 15;
    const SEEDS: [u64; 4] = [
        0x97CB_3127_8F5C_5A51,
        0xC3A5_C85C_97CB_3127,
        0xB492_B66F_BE98_F273,
        0x9AE1_6A3B_2F90_404F,
    ];

    pub fn new(capacity: usize) -> Self {
        // 16 counters per power of two of the capacity, as Caffeine's table of
        // `max(ceilingPowerOfTwo(capacity), 8)` longs of sixteen 4-bit counters.
        let width = 4 * capacity.max(8).next_power_of_two();
        Self {
            width,
            counters: vec![0; Self::DEPTH * width],
            sample_size: if capacity == 0 {
                10
            } else {
                10 * capacity as u64
            },
            size: 0,
        }
    }

    pub fn sample_size(&self) -> u64 {
        self.sample_size
    }

    /// Additions counted towards the next halving.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn index(&self, row: usize, key: u64) -> usize {
        let mut h = key ^ Self::SEEDS[row];
        // splitmix64's finaliser: every input bit reaches every output bit.
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
        row * self.width + (h as usize & (self.width - 1))
    }

    pub fn frequency(&self, key: u64) -> u8 {
        (0..Self::DEPTH)
            .map(|row| self.counters[self.index(row, key)])
            .min()
            .unwrap_or(0)
    }

    pub fn increment(&mut self, key: u64) {
        let mut added = false;
        for row in 0..Self::DEPTH {
            let i = self.index(row, key);
            if self.counters[i] < Self::MAX_COUNT {
                self.counters[i] += 1;
                added = true;
            }
        }
        if added {
            self.size += 1;
            if self.size == self.sample_size {
                self.reset();
            }
        }
    }

    /// Halves every counter. Each halving drops the odd counters' low bits,
    /// a quarter of an addition each (an addition touches four counters), which
    /// Caffeine takes off the running size before halving it.
    fn reset(&mut self) {
        let mut odd = 0u64;
        for c in &mut self.counters {
            odd += u64::from(*c & 1);
            *c >>= 1;
        }
        self.size = self.size.saturating_sub(odd >> 2) >> 1;
    }
}
