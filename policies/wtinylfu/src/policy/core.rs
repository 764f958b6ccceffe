//! W-TinyLFU in Caffeine's manner: a window LRU in front of a segmented LRU
//! main cache, a frequency sketch deciding which of the window's oldest entry
//! and the main cache's victim stays, and a hill climber moving the boundary
//! between window and main. `tests/reference/tinylfu.rs` is the model it
//! matches step for step.

use shadowcat_policy_sdk::SlotList;
use shadowcat_policy_sim::NO_KEY;

use super::Params;
use super::sketch::Sketch;

const HILL_CLIMBER_RESTART_THRESHOLD: f64 = 0.05;
const HILL_CLIMBER_STEP_PERCENT: f64 = 0.0625;
const HILL_CLIMBER_STEP_DECAY_RATE: f64 = 0.98;
/// Caffeine moves at most this many entries per maintenance cycle; the rest of
/// an adjustment carries over to the next cycle.
const QUEUE_TRANSFER_THRESHOLD: usize = 1_000;
/// The climber's sample, in requests per session of capacity (Caffeine's
/// sketch sample size).
const CLIMBER_SAMPLE: u64 = 10;

/// Queues list sessions oldest (LRU) first; each entry holds the session's key.
pub struct Core {
    params: Params,
    maximum: u64,
    /// Requests per climber sample: computed once, as on wasm32 the
    /// saturating 64-bit product is a 128-bit multiplication by a library
    /// call, which cost every request some 70 instructions.
    climber_sample: u64,
    window_max: u64,
    protected_max: u64,
    window: SlotList<u64>,
    probation: SlotList<u64>,
    protected: SlotList<u64>,
    /// Allocated once the table is half full, as Caffeine and moka do: keys
    /// seen before then count nothing.
    sketch: Option<Sketch>,
    /// The sketch could not be had; not asked for again.
    no_sketch: bool,
    hits_in_sample: u64,
    misses_in_sample: u64,
    previous_hit_rate: f64,
    step_size: f64,
    /// Window change still to apply (positive: grow).
    adjustment: i64,
}

impl Core {
    pub fn new(capacity: u64, params: Params) -> Self {
        let max = capacity;
        let window = (max - ((1.0 - params.window) * max as f64) as u64).max(1);
        let main = max.saturating_sub(window);
        Self {
            params,
            maximum: max,
            climber_sample: CLIMBER_SAMPLE.saturating_mul(max.max(1)),
            window_max: window,
            protected_max: (params.protected * main as f64) as u64,
            window: SlotList::new(),
            probation: SlotList::new(),
            protected: SlotList::new(),
            sketch: None,
            no_sketch: false,
            hits_in_sample: 0,
            misses_in_sample: 0,
            previous_hit_rate: 0.0,
            step_size: -HILL_CLIMBER_STEP_PERCENT * max as f64,
            adjustment: 0,
        }
    }

    fn resident(&self) -> u64 {
        (self.window.len() + self.probation.len() + self.protected.len()) as u64
    }

    fn key(&self, id: u64) -> Option<u64> {
        self.window
            .get(id)
            .or_else(|| self.probation.get(id))
            .or_else(|| self.protected.get(id))
            .copied()
    }

    /// The sketch's estimate for a session's key: by key, as the queues
    /// hold it next to the id (looking the id up again in three queues per
    /// estimate cost `victim-sample=16` a tenth of its instructions).
    fn frequency(&self, key: u64) -> u32 {
        match &self.sketch {
            Some(sketch) if key != NO_KEY => sketch.frequency(key),
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

    /// The sketch starts once the table is half full, then counts the key.
    pub fn arrive(&mut self, key: u64) {
        if self.sketch.is_none() && !self.no_sketch && self.resident() + 1 >= self.maximum / 2 {
            let p = &self.params;
            self.sketch = Sketch::new(self.maximum, p.sketch_width, p.sample, p.doorkeeper);
            self.no_sketch = self.sketch.is_none();
        }
        self.count(key);
    }

    pub fn admit(&mut self, id: u64, key: u64) {
        // Fails only without memory for the slot; the host then chooses.
        if self.window.push_back(id, key).is_err() {
            return;
        }
        self.misses_in_sample += 1;
        self.evict_from_window();
        self.climb();
    }

    pub fn hit(&mut self, id: u64) {
        let Some(key) = self.key(id) else {
            return;
        };
        self.count(key);
        self.hits_in_sample += 1;
        if self.window.move_to_back(id).is_some() || self.protected.move_to_back(id).is_some() {
        } else if self.protected_max == 0 {
            self.probation.move_to_back(id);
        } else if self.probation.remove(id).is_some() {
            let _ = self.protected.push_back(id, key);
            self.demote_from_protected();
        }
        self.climb();
    }

    /// One eviction: the loser, already out of the queues.
    pub fn evict(&mut self) -> Option<u64> {
        let loser = if self.window.len() as u64 >= self.window_max && !self.window.is_empty() {
            let (candidate, key) = self.window.pop_front()?;
            // Untracked (no memory for its slot), it counts nothing.
            let tracked = self.probation.push_back(candidate, key).is_ok();
            match self.probation_victim(candidate) {
                Some((victim, f)) if tracked && self.frequency(key) > f => victim,
                _ => candidate,
            }
        } else {
            self.probation
                .front()
                .or_else(|| self.protected.front())
                .or_else(|| self.window.front())?
                .0
        };
        self.forget(loser);
        Some(loser)
    }

    pub fn forget(&mut self, id: u64) {
        self.window.remove(id);
        self.probation.remove(id);
        self.protected.remove(id);
    }

    /// The main victim and its frequency: the least frequent of the oldest
    /// probation entries other than `candidate`, the oldest of them on a tie.
    fn probation_victim(&self, candidate: u64) -> Option<(u64, u32)> {
        let mut best: Option<(u64, u32)> = None;
        for (id, &key) in self
            .probation
            .iter()
            .filter(|&(id, _)| id != candidate)
            .take(self.params.victim_sample as usize)
        {
            let f = self.frequency(key);
            if best.is_none_or(|(_, bf)| f < bf) {
                best = Some((id, f));
            }
        }
        best
    }

    fn evict_from_window(&mut self) {
        while self.window.len() as u64 > self.window_max {
            let Some((id, key)) = self.window.pop_front() else {
                break;
            };
            let _ = self.probation.push_back(id, key);
        }
    }

    fn demote_from_protected(&mut self) {
        while self.protected.len() as u64 > self.protected_max {
            let Some((id, key)) = self.protected.pop_front() else {
                break;
            };
            let _ = self.probation.push_back(id, key);
        }
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
        if requests < self.climber_sample {
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
        let mut quota = (self.adjustment as u64).min(self.protected_max);
        self.protected_max -= quota;
        self.window_max += quota;
        self.demote_from_protected();
        for _ in 0..QUEUE_TRANSFER_THRESHOLD {
            if quota == 0 {
                break;
            }
            let Some((id, key)) = self
                .probation
                .pop_front()
                .or_else(|| self.protected.pop_front())
            else {
                break;
            };
            quota -= 1;
            let _ = self.window.push_back(id, key);
        }
        self.protected_max += quota;
        self.window_max -= quota;
        self.adjustment = quota as i64;
    }

    fn decrease_window(&mut self) {
        if self.window_max <= 1 {
            return;
        }
        let mut quota = self.adjustment.unsigned_abs().min(self.window_max - 1);
        self.protected_max += quota;
        self.window_max -= quota;
        for _ in 0..QUEUE_TRANSFER_THRESHOLD {
            if quota == 0 {
                break;
            }
            let Some((id, key)) = self.window.pop_front() else {
                break;
            };
            quota -= 1;
            let _ = self.probation.push_back(id, key);
        }
        self.protected_max -= quota;
        self.window_max += quota;
        self.adjustment = -(quota as i64);
    }
}
