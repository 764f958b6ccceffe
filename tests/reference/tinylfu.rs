//! W-TinyLFU as the shipped guests define it (`policies/wtinylfu`, and
//! `policies/wtinylfu-tuned` with other defaults). [`Params::caffeine`]
//! decides exactly as [`super::caffeine`] on a replay; [`Params::tuned`] is the
//! variant that misses least on the measured workloads (`benches/caches.rs`).
//! Each eviction step evicts exactly one session.
//!
//! - A window LRU of `C - (long)((1 - window) C)` sessions (at least 1) takes
//!   every arriving session; a main SLRU holds the rest: protected at most
//!   `(long)(protected x main)`, probation whatever remains. Window overflow
//!   moves the window's LRU entry to probation's MRU end.
//! - Frequency: a count-min sketch of 4-bit counters, 4 rows of
//!   `sketch-width x ceilPow2(max(C, 8))` counters each (at most 2^23), allocated
//!   once the table holds half its capacity, as Caffeine and moka do; keys seen
//!   before then count 0. Each insert and each access adds its key once. With a
//!   doorkeeper, a key's first addition only sets its bits in a Bloom filter of
//!   as many bits as the sketch has counters (3 probes), and its frequency is the
//!   sketch's estimate plus that bit. After `sample x C` additions every counter
//!   halves, the doorkeeper clears, and the addition count becomes
//!   `(count - odd / 4) / 2` (`odd`: counters that lost their low bit).
//!   The arriving session's key is added on arrival, before the eviction it
//!   causes, as Caffeine counts a new key before evicting.
//! - A victim, when the window is full: the window's LRU entry (the candidate)
//!   moves to probation's MRU end and competes with the main victim, the least
//!   frequent of the `victim-sample` entries at probation's LRU end other than
//!   the candidate (the oldest of them on a tie). The candidate stays only with
//!   a strictly higher frequency; with no such entry in probation it loses.
//!   When the window is not full, the main victim goes (probation's, else
//!   protected's LRU entry, else the window's).
//! - Hits: window and protected move to their MRU end; probation promotes to
//!   protected, whose overflow demotes its LRU entries to probation's MRU end.
//! - With `adaptive`, Caffeine's hill climber moves the window (see
//!   [`super::caffeine`] for its rules), every `10 C` requests once the sketch
//!   exists.

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, NO_KEY};

const HILL_CLIMBER_RESTART_THRESHOLD: f64 = 0.05;
const HILL_CLIMBER_STEP_PERCENT: f64 = 0.0625;
const HILL_CLIMBER_STEP_DECAY_RATE: f64 = 0.98;
const QUEUE_TRANSFER_THRESHOLD: usize = 1_000;
/// The climber's sample, in requests per capacity (Caffeine's sketch sample).
const CLIMBER_SAMPLE: u64 = 10;
/// Widest sketch row, in counters.
pub const MAX_WIDTH: usize = 1 << 23;

/// Every setting of the policy, as its `key=value` config names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// `window`: initial window share of the capacity.
    pub window: f64,
    /// `protected`: protected share of the main cache.
    pub protected: f64,
    /// `adaptive`: move the window by hill climbing.
    pub adaptive: bool,
    /// `sketch-width`: counters per row per power of two of the capacity.
    pub sketch_width: u32,
    /// `sample`: additions between halvings, per session of capacity.
    pub sample: u32,
    /// `doorkeeper`: a first addition only marks a Bloom filter.
    pub doorkeeper: bool,
    /// `victim-sample`: probation entries the main victim is chosen from.
    pub victim_sample: u32,
}

impl Params {
    /// Caffeine 3's defaults (`BoundedLocalCache`, `FrequencySketch`).
    pub const fn caffeine() -> Self {
        Self {
            window: 0.01,
            protected: 0.80,
            adaptive: true,
            sketch_width: 4,
            sample: 10,
            doorkeeper: false,
            victim_sample: 1,
        }
    }

    /// The defaults of `wtinylfu-tuned`.
    pub const fn tuned() -> Self {
        Self {
            window: 0.03,
            protected: 0.80,
            adaptive: false,
            sketch_width: 16,
            sample: 30,
            doorkeeper: true,
            victim_sample: 16,
        }
    }
}

#[derive(Debug)]
pub struct TinyLfu {
    params: Params,
    maximum: usize,
    window_max: usize,
    protected_max: usize,
    window: Queue,
    probation: Queue,
    protected: Queue,
    key: HashMap<u64, u64>,
    sketch: Option<Sketch>,
    hits_in_sample: u64,
    misses_in_sample: u64,
    previous_hit_rate: f64,
    step_size: f64,
    adjustment: i64,
}

impl TinyLfu {
    pub fn new(capacity: usize, params: Params) -> Result<Self, String> {
        if !(params.window > 0.0 && params.window < 1.0) {
            return Err(format!(
                "window: expected a share above 0 and below 1, got {}",
                params.window
            ));
        }
        if !(0.0..=1.0).contains(&params.protected) {
            return Err(format!(
                "protected: expected a share from 0 to 1, got {}",
                params.protected
            ));
        }
        if !params.sketch_width.is_power_of_two() || params.sketch_width > 256 {
            return Err(format!(
                "sketch-width: expected a power of two from 1 to 256, got {}",
                params.sketch_width
            ));
        }
        if params.sample == 0 {
            return Err("sample: expected at least 1".into());
        }
        if params.victim_sample == 0 || params.victim_sample > 1024 {
            return Err(format!(
                "victim-sample: expected 1 to 1024, got {}",
                params.victim_sample
            ));
        }
        let max = capacity;
        let window = (max - ((1.0 - params.window) * max as f64) as usize).max(1);
        let main = max.saturating_sub(window);
        Ok(Self {
            params,
            maximum: max,
            window_max: window,
            protected_max: (params.protected * main as f64) as usize,
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
        })
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

    pub fn sketch(&self) -> Option<&Sketch> {
        self.sketch.as_ref()
    }

    fn resident(&self) -> usize {
        self.window.len() + self.probation.len() + self.protected.len()
    }

    fn frequency(&self, id: u64) -> u32 {
        match (&self.sketch, self.key.get(&id)) {
            (Some(sketch), Some(&key)) if key != NO_KEY => sketch.frequency(key),
            _ => 0,
        }
    }

    fn count(&mut self, key: u64) {
        if key == NO_KEY {
            return;
        }
        if let Some(sketch) = &mut self.sketch {
            sketch.increment(key);
        }
    }

    fn unlink(&mut self, id: u64) {
        self.window.remove(id);
        self.probation.remove(id);
        self.protected.remove(id);
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

    /// The main victim: the least frequent of the oldest probation entries
    /// other than `candidate`.
    fn probation_victim(&self, candidate: Option<u64>) -> Option<u64> {
        let mut best: Option<(u32, u64)> = None;
        for id in self
            .probation
            .iter()
            .filter(|&id| Some(id) != candidate)
            .take(self.params.victim_sample as usize)
        {
            let f = self.frequency(id);
            if best.is_none_or(|(bf, _)| f < bf) {
                best = Some((f, id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// One eviction: the loser, already out of the structures.
    fn step(&mut self) -> Option<u64> {
        let loser = if self.window.len() >= self.window_max && !self.window.is_empty() {
            let candidate = self.window.pop_tail()?;
            self.probation.push_head(candidate);
            match self.probation_victim(Some(candidate)) {
                Some(victim) if self.frequency(candidate) > self.frequency(victim) => victim,
                _ => candidate,
            }
        } else {
            self.probation
                .tail()
                .or_else(|| self.protected.tail())
                .or_else(|| self.window.tail())?
        };
        self.unlink(loser);
        self.key.remove(&loser);
        Some(loser)
    }

    fn climb(&mut self) {
        if !self.params.adaptive {
            return;
        }
        self.determine_adjustment();
        self.demote_from_protected();
        match self.adjustment {
            0 => {}
            a if a > 0 => self.increase_window(),
            _ => self.decrease_window(),
        }
    }

    fn determine_adjustment(&mut self) {
        if self.sketch.is_none() {
            self.previous_hit_rate = 0.0;
            self.hits_in_sample = 0;
            self.misses_in_sample = 0;
            return;
        }
        let requests = self.hits_in_sample + self.misses_in_sample;
        if requests < CLIMBER_SAMPLE * (self.maximum.max(1) as u64) {
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

impl Policy for TinyLfu {
    fn name(&self) -> String {
        "wtinylfu".into()
    }

    /// The sketch starts once the table is half full, then counts the key.
    fn arrive(&mut self, key: u64) {
        if self.sketch.is_none() && self.resident() + 1 >= self.maximum / 2 {
            self.sketch = Some(Sketch::new(self.maximum, &self.params));
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
        evicted.extend(self.step());
    }

    fn forget(&mut self, id: u64) {
        self.unlink(id);
        self.key.remove(&id);
    }
}

/// The count-min sketch (with its optional doorkeeper) that [`TinyLfu`] uses.
#[derive(Debug, Clone)]
pub struct Sketch {
    width: usize,
    counters: Vec<u8>,
    /// Bloom filter bits, empty without a doorkeeper.
    door: Vec<bool>,
    sample_size: u64,
    size: u64,
}

impl Sketch {
    const DEPTH: usize = 4;
    const MAX_COUNT: u8 = 15;
    const SEEDS: [u64; 4] = [
        0x97CB_3127_8F5C_5A51,
        0xC3A5_C85C_97CB_3127,
        0xB492_B66F_BE98_F273,
        0x9AE1_6A3B_2F90_404F,
    ];
    const DOOR_SEED: u64 = 0xCBF2_9CE4_8422_2325;
    const DOOR_PROBES: u64 = 3;

    pub fn new(capacity: usize, params: &Params) -> Self {
        let width =
            (params.sketch_width as usize * capacity.max(8).next_power_of_two()).min(MAX_WIDTH);
        let door_bits = if params.doorkeeper {
            Self::DEPTH * width
        } else {
            0
        };
        Self {
            width,
            counters: vec![0; Self::DEPTH * width],
            door: vec![false; door_bits],
            sample_size: u64::from(params.sample) * capacity.max(1) as u64,
            size: 0,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn sample_size(&self) -> u64 {
        self.sample_size
    }

    /// Additions counted towards the next halving.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn index(&self, row: usize, key: u64) -> usize {
        row * self.width + (mix(key ^ Self::SEEDS[row]) as usize & (self.width - 1))
    }

    /// Double hashing from one digest: probe i is `h + i (h >> 32 | 1)`.
    fn door_probes(&self, key: u64) -> impl Iterator<Item = usize> {
        let h = mix(key ^ Self::DOOR_SEED);
        let step = (h >> 32) | 1;
        let mask = self.door.len() as u64 - 1;
        (0..Self::DOOR_PROBES).map(move |i| (h.wrapping_add(i.wrapping_mul(step)) & mask) as usize)
    }

    fn in_door(&self, key: u64) -> bool {
        !self.door.is_empty() && self.door_probes(key).all(|i| self.door[i])
    }

    pub fn frequency(&self, key: u64) -> u32 {
        let estimate = (0..Self::DEPTH)
            .map(|row| self.counters[self.index(row, key)])
            .min()
            .unwrap_or(0);
        u32::from(estimate) + u32::from(self.in_door(key))
    }

    pub fn increment(&mut self, key: u64) {
        let added = if !self.door.is_empty() && !self.in_door(key) {
            for i in self.door_probes(key).collect::<Vec<_>>() {
                self.door[i] = true;
            }
            true
        } else {
            let mut added = false;
            for row in 0..Self::DEPTH {
                let i = self.index(row, key);
                if self.counters[i] < Self::MAX_COUNT {
                    self.counters[i] += 1;
                    added = true;
                }
            }
            added
        };
        if added {
            self.size += 1;
            if self.size == self.sample_size {
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        let mut odd = 0u64;
        for c in &mut self.counters {
            odd += u64::from(*c & 1);
            *c >>= 1;
        }
        self.door.fill(false);
        self.size = self.size.saturating_sub(odd >> 2) >> 1;
    }
}

/// splitmix64's finaliser: every input bit reaches every output bit.
fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}
