//! Redis's LFU (`maxmemory-policy allkeys-lfu`; `evict.c`, `db.c`) per
//! session: a logarithmic frequency counter that decays with time, and
//! eviction of the coldest among a few sessions the host samples.
//!
//! - A new session starts at `LFU_INIT_VAL` = 5, so it can gather requests
//!   before it is judged. A request first decays the counter, then raises it
//!   by one with probability `1 / ((counter - 5) * lfu-log-factor + 1)`
//!   (`counter - 5` floored at 0), saturating at 255, and stamps the minute of
//!   the request.
//! - Decay: the counter loses one per `lfu-decay-time` minutes since that
//!   stamp, floored at 0 (`LFUDecrAndReturn`). Time is the latest the policy
//!   has seen: event times, and `maintain` ticks, which move it on while no
//!   request comes (the proxy ticks on its cleanup interval, a replay every 60
//!   s of trace time). Without ticks the counters of an idle table would never
//!   age.
//! - Eviction: among the host-sampled candidates (`samples` of them), the
//!   lowest decayed counter goes, ties to the first sampled; with no usable
//!   candidate, the lowest among all sessions, ties to the lowest id.
//!
//! Config, with redis.conf's defaults:
//! - `lfu-log-factor` (0 to 2^31 - 1, default 10): how slowly the counter
//!   grows. redis.conf tabulates, for 10: about 10 after 100 requests, 18
//!   after 1,000, 142 after 100,000.
//! - `lfu-decay-time` (minutes, 0 to 2^31 - 1, default 1; 0: never decay).
//! - `samples` (1 to 1024, default 5): candidates per eviction, redis.conf's
//!   `maxmemory-samples 5`. It is what `info` declares, so the host samples
//!   that many.
//! - `seed` (default 0): the generator behind the probabilistic increment
//!   (Redis uses `rand()`), so a replay repeats.
//!
//! Left out from Redis: its 16-entry pool of the best candidates of earlier
//! samples (the host samples afresh each time), and its 16-bit minute stamp
//! that wraps after 45 days (here it does not wrap).
//!
//! The choice depends on the sample, so `stable-order` cannot hold. Around
//! that, the table's protocol (re-arrivals, pinned refusals) is
//! `shadowcat-policy-sim`'s; sampled candidates are never pinned, and the
//! host's re-ask after a refused proposal samples afresh.
//!
//! Costs: O(1) per event (a slot-indexed counter); a decision O(samples).

use shadowcat_policy_sdk::bindings::shadowcat::policy::types::Table as WitTable;
use shadowcat_policy_sdk::{Adapter, Config, Guest, Info, SlotMap, Table, Traits, with_policy};
use shadowcat_policy_sim::{OnTable, Simulated, bad_value};

/// The counter a new session starts at (`LFU_INIT_VAL` in Redis's server.h).
pub const LFU_INIT_VAL: u8 = 5;
const MICROS_PER_MINUTE: u64 = 60_000_000;

/// redis.conf's defaults (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub log_factor: u32,
    pub decay_minutes: u64,
    pub samples: u32,
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

impl Params {
    fn from_config(config: &Config) -> Result<Self, String> {
        let d = Self::default();
        let params = Self {
            log_factor: config.u32_or("lfu-log-factor", d.log_factor)?,
            decay_minutes: config.u64_or("lfu-decay-time", d.decay_minutes)?,
            samples: config.u32_or("samples", d.samples)?,
            seed: config.u64_or("seed", d.seed)?,
        };
        // Redis's own bounds for the first two (config.c).
        if params.log_factor > i32::MAX as u32 {
            return Err(bad_value(
                "lfu-log-factor",
                "0 to 2147483647",
                params.log_factor,
            ));
        }
        if params.decay_minutes > i32::MAX as u64 {
            return Err(bad_value(
                "lfu-decay-time",
                "0 to 2147483647 (minutes)",
                params.decay_minutes,
            ));
        }
        if !(1..=1024).contains(&params.samples) {
            return Err(bad_value("samples", "1 to 1024", params.samples));
        }
        Ok(params)
    }
}

/// SplitMix64, as the reference model draws: the same sequence everywhere.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    counter: u8,
    /// Minute of the last request (Redis's `ldt`).
    stamp: u64,
}

pub struct LfuDecay {
    params: Params,
    entries: SlotMap<Entry>,
    /// The latest time seen, microseconds.
    now: u64,
    rng: SplitMix64,
}

impl LfuDecay {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            entries: SlotMap::new(),
            now: 0,
            rng: SplitMix64(params.seed),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The session's counter decayed to the latest time seen.
    pub fn counter(&self, id: u64) -> Option<u8> {
        self.entries.get(id).map(|e| self.decayed(e))
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
        if r < p { counter + 1 } else { counter }
    }

    fn advance(&mut self, time: u64) {
        self.now = self.now.max(time);
    }
}

impl Simulated for LfuDecay {
    const NAME: &'static str = "lfu-decay";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const TRAITS: Traits = Traits::SAMPLED;
    /// The default; `info` reports the configured `samples`.
    const SAMPLE_SIZE: u32 = 5;

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(
            Self::NAME,
            &["lfu-log-factor", "lfu-decay-time", "samples", "seed"],
        )?;
        Ok(Self::new(Params::from_config(config)?))
    }

    fn admit(&mut self, id: u64, _key: u64, time: u64, _evicted: &mut Vec<u64>) {
        self.advance(time);
        let entry = Entry {
            counter: LFU_INIT_VAL,
            stamp: self.now / MICROS_PER_MINUTE,
        };
        // Untracked only without memory for the slot; the host then chooses.
        let _ = self.entries.insert(id, entry);
    }

    fn hit(&mut self, id: u64, time: u64, _evicted: &mut Vec<u64>) {
        let Some(&entry) = self.entries.get(id) else {
            return;
        };
        self.advance(time);
        let counter = self.decayed(&entry);
        let counter = self.log_incr(counter);
        let stamp = self.now / MICROS_PER_MINUTE;
        if let Some(e) = self.entries.get_mut(id) {
            *e = Entry { counter, stamp };
        }
    }

    fn evict(&mut self, candidates: &[u64], evicted: &mut Vec<u64>) {
        let mut best: Option<(u8, u64)> = None;
        if candidates.is_empty() {
            for (id, entry) in self.entries.iter() {
                let rank = (self.decayed(entry), id);
                if best.is_none_or(|b| rank < b) {
                    best = Some(rank);
                }
            }
        } else {
            for &id in candidates {
                let Some(entry) = self.entries.get(id) else {
                    continue;
                };
                let counter = self.decayed(entry);
                if best.is_none_or(|(c, _)| counter < c) {
                    best = Some((counter, id));
                }
            }
        }
        if let Some((_, id)) = best {
            self.entries.remove(id);
            evicted.push(id);
        }
    }

    fn forget(&mut self, id: u64) {
        self.entries.remove(id);
    }

    fn maintain(&mut self, now: u64) {
        self.advance(now);
    }
}

type Exported = OnTable<LfuDecay>;

/// The SDK's exports, except that `info` declares the configured sample
/// size, which a `Policy` constant cannot.
pub struct Export;

impl Guest for Export {
    fn create(table: WitTable, config: Vec<(String, String)>) -> Result<(), String> {
        Adapter::<Exported>::create(table, config)
    }

    fn info() -> Info {
        let mut info = Adapter::<Exported>::info();
        if let Ok(samples) = with_policy::<Exported, _>(|p| p.policy().params().samples) {
            info.sample_size = samples;
        }
        info
    }

    fn observe(events: Vec<u64>) -> Result<(), String> {
        Adapter::<Exported>::observe(events)
    }

    fn victims(count: u32, input: Vec<u64>) -> Result<Vec<u64>, String> {
        Adapter::<Exported>::victims(count, input)
    }

    fn adjust_quotas(usage: Vec<u64>) -> Result<Vec<u64>, String> {
        Adapter::<Exported>::adjust_quotas(usage)
    }

    fn maintain(now: u64) -> Result<(), String> {
        Adapter::<Exported>::maintain(now)
    }
}

const _: () = Adapter::<Exported>::CHECKED;

// Natively the exports have no caller, and their names break the linker's
// version script (see `export_policy!`).
#[cfg(target_arch = "wasm32")]
shadowcat_policy_sdk::bindings::export!(Export with_types_in shadowcat_policy_sdk::bindings);

#[cfg(test)]
mod tests;
