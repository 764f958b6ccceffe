//! Redis's LFU (`maxmemory-policy allkeys-lfu`; `evict.c`, `db.c`), per session.
//!
//! - An 8-bit logarithmic counter: a new session starts at `LFU_INIT_VAL` = 5
//!   (so that it can gather hits before it is judged); an access first decays
//!   the counter, then raises it by one with probability
//!   `1 / ((counter - 5) * lfu-log-factor + 1)` (`(counter - 5)` floored at 0),
//!   saturating at 255, and stamps the time of the access.
//! - Decay: the counter loses one per `lfu-decay-time` minutes elapsed since
//!   that stamp, floored at 0; 0 disables decay (`LFUDecrAndReturn`).
//! - Eviction: among host-sampled sessions (`maxmemory-samples`), the one with
//!   the lowest decayed counter goes; ties go to the first sampled.
//!
//! Defaults, from redis.conf: `lfu-log-factor 10`, `lfu-decay-time 1`,
//! `maxmemory-samples 5`. redis.conf's table for factor 10 gives a counter of
//! about 10 after 100 hits, 18 after 1,000 and 142 after 100,000. Its prose
//! says a decay period halves large counters; that was an earlier design, and
//! the code (which this follows) subtracts one per period.
//!
//! Left out: Redis keeps the best candidates of earlier samples in a 16-entry
//! eviction pool; here the host samples afresh for every decision. Redis keeps
//! the stamp in 16 bits of minutes (it wraps after 45 days); here it does not
//! wrap. Redis draws with `rand()`; here a seeded generator, so runs repeat.
//! Eviction decays counters to the time of the latest event seen, since a
//! `victims` call carries no clock.

use std::collections::BTreeMap;

use super::{Policy, SplitMix64};

/// The counter a new session starts at (`LFU_INIT_VAL` in Redis's server.h).
pub const LFU_INIT_VAL: u8 = 5;
const MICROS_PER_MINUTE: u64 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `lfu-log-factor`: how slowly the counter grows (0 to i32::MAX).
    pub log_factor: u32,
    /// `lfu-decay-time`, in minutes (0: never decay).
    pub decay_minutes: u64,
    /// `maxmemory-samples`: candidates per eviction (1 to 1024).
    pub samples: usize,
    /// Seed of the generator behind the probabilistic increment.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            log_factor: 10,
            decay_minutes: 1,
            samples: 5,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    counter: u8,
    /// Minute of the last access (Redis's `ldt`).
    stamp: u64,
}

#[derive(Debug)]
pub struct LfuDecay {
    params: Params,
    entries: BTreeMap<u64, Entry>,
    now: u64,
    rng: SplitMix64,
}

impl LfuDecay {
    pub fn new(params: Params) -> Result<Self, String> {
        if params.log_factor > i32::MAX as u32 {
            return Err(format!(
                "lfu-log-factor: expected 0 to {}, got {}",
                i32::MAX,
                params.log_factor
            ));
        }
        if params.decay_minutes > i32::MAX as u64 {
            return Err(format!(
                "lfu-decay-time: expected 0 to {}, got {}",
                i32::MAX,
                params.decay_minutes
            ));
        }
        if !(1..=1024).contains(&params.samples) {
            return Err(format!(
                "samples: expected 1 to 1024, got {}",
                params.samples
            ));
        }
        Ok(Self {
            params,
            entries: BTreeMap::new(),
            now: 0,
            rng: SplitMix64(params.seed),
        })
    }

    /// The session's counter decayed to the latest time seen.
    pub fn counter(&self, id: u64) -> Option<u8> {
        self.entries.get(&id).map(|e| self.decayed(e))
    }

    fn decayed(&self, entry: &Entry) -> u8 {
        if self.params.decay_minutes == 0 {
            return entry.counter;
        }
        let minutes = (self.now / MICROS_PER_MINUTE).saturating_sub(entry.stamp);
        let periods = minutes / self.params.decay_minutes;
        u64::from(entry.counter).saturating_sub(periods) as u8
    }

    fn log_incr(&mut self, counter: u8) -> u8 {
        if counter == u8::MAX {
            return counter;
        }
        let r = self.rng.next_f64();
        let base = f64::from(counter.saturating_sub(LFU_INIT_VAL));
        let p = 1.0 / (base * f64::from(self.params.log_factor) + 1.0);
        if r < p {
            counter + 1
        } else {
            counter
        }
    }

    fn advance(&mut self, time: u64) {
        self.now = self.now.max(time);
    }
}

impl Policy for LfuDecay {
    fn name(&self) -> String {
        "lfu-decay".into()
    }

    fn admit(&mut self, id: u64, _key: u64, time: u64, _evicted: &mut Vec<u64>) {
        self.advance(time);
        let entry = Entry {
            counter: LFU_INIT_VAL,
            stamp: self.now / MICROS_PER_MINUTE,
        };
        self.entries.insert(id, entry);
    }

    fn hit(&mut self, id: u64, time: u64, _evicted: &mut Vec<u64>) {
        self.advance(time);
        let Some(&entry) = self.entries.get(&id) else {
            return;
        };
        let counter = self.decayed(&entry);
        let counter = self.log_incr(counter);
        let entry = Entry {
            counter,
            stamp: self.now / MICROS_PER_MINUTE,
        };
        self.entries.insert(id, entry);
    }

    fn evict(&mut self, candidates: &[u64], evicted: &mut Vec<u64>) {
        let all: Vec<u64>;
        let pool = if candidates.is_empty() {
            all = self.entries.keys().copied().collect();
            &all
        } else {
            candidates
        };
        let mut best: Option<(u8, u64)> = None;
        for &id in pool {
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            let counter = self.decayed(entry);
            if best.is_none_or(|(c, _)| counter < c) {
                best = Some((counter, id));
            }
        }
        if let Some((_, id)) = best {
            self.entries.remove(&id);
            evicted.push(id);
        }
    }

    fn forget(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    fn sample_size(&self) -> usize {
        self.params.samples
    }

    fn maintain(&mut self, now: u64) {
        self.advance(now);
    }
}
