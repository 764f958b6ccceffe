//! Native reference models of the eviction policies, as the session table sees them.
//!
//! They exist to be obviously right, not fast: ordered maps and linear scans
//! throughout. A shipped WebAssembly policy is checked against its model here,
//! victim for victim, and each model that mirrors a libCacheSim policy is itself
//! checked against libCacheSim's miss counts on the reference trace (`tests/reference.rs`).
//!
//! # Layout
//!
//! - [`Model`]: the table's protocol, the one interface every model offers.
//! - [`Reference`]: adapts a [`Policy`] (a policy written the way its reference
//!   simulator defines it) to that protocol; the only place where the two differ.
//! - [`queue::Queue`]: the ordered list every model is built from.
//! - one file per policy: [`lru`], [`fifo`], [`lfu`], [`clock`], [`sieve`],
//!   [`arc`], [`s3fifo`], [`twoq`], [`wtinylfu`] (libCacheSim's W-TinyLFU),
//!   [`tinylfu`] (W-TinyLFU in Caffeine's manner: Caffeine's adaptive defaults, or tuned ones),
//!   [`lfu_decay`] (Redis's LFU),
//!   [`ttl`] (soonest to expire).
//! - [`driver`]: replays a trace through a model under the table's protocol.
//! - [`build`]: a model by policy name and `key=value` config, as the shipped
//!   policies take them.
//!
//! # The protocol, and why it needs an adapter
//!
//! A reference simulator evicts when *it* decides to; the table evicts only when
//! it is full and a session arrives, and asks the policy for exactly the
//! victims it needs, *before* the arriving session is inserted (with the
//! arriving session's stable key, so a policy can look it up in its ghost
//! lists or frequency sketch), then reports each removal, then inserts the
//! newcomer. The arriving session is always admitted.
//!
//! For most policies that is the same thing: libCacheSim also evicts exactly one
//! object per miss on a full cache. Two do more. libCacheSim's W-TinyLFU can
//! evict several objects on one miss, and evicts from its main cache on some
//! hits; 2Q's insert can evict once more from Am. A model therefore *detaches*
//! whatever its policy evicts: the session leaves the policy's structures at
//! once, exactly as in the simulator, and is handed to the table as the next
//! victim it asks for. Until then the table still holds it, so a request for it
//! is a hit for the table where the simulator would miss; the model then
//! treats it as the re-arrival it would have been (the policy's miss path,
//! ghost lookup included, without an eviction, since the simulator would have
//! had room). The policy's state thus stays exactly the simulator's, and the
//! only difference is in the count: [`Model::rearrivals`] counts those hits.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};

pub mod arc;
pub mod clock;
pub mod driver;
pub mod fifo;
pub mod lfu;
pub mod lfu_decay;
pub mod lru;
pub mod queue;
pub mod s3fifo;
pub mod sieve;
pub mod tinylfu;
pub mod ttl;
pub mod twoq;
pub mod wtinylfu;

/// Sessions a [`Policy::plan`] looks at, at most, as the guests'
/// `shadowcat_policy_sim::PLAN_WALK`: a plan is a prefix of the next victims,
/// and a model must answer the same prefix to compare answers.
pub const PLAN_WALK: usize = 64;

/// Ends a plan whose next victims after those listed are the sessions that
/// arrive after it, in arrival order (the guests' `ARRIVALS`): no session has
/// this id.
pub const ARRIVALS: u64 = u64::MAX;
/// [`ARRIVALS`] for as long as one of the victims the table queued from the
/// plan (listed or arrived) is left (the guests' `ARRIVALS_WHILE_QUEUED`).
pub const ARRIVALS_WHILE_QUEUED: u64 = 0xffff_fffe_ffff_ffff;

/// Whether `id` ends a plan to say the arrivals follow.
pub fn is_arrivals(id: u64) -> bool {
    id == ARRIVALS || id == ARRIVALS_WHILE_QUEUED
}

/// The key of a session whose client the host cannot identify. It never
/// matches a ghost entry: two anonymous sessions are not the same client.
pub const NO_KEY: u64 = 0;

/// A policy as the session table drives it.
///
/// `id` is a session id, new at every creation; `key` is the stable key of the
/// client behind it, the same across re-creations (the object id in a trace
/// replay). Anything that must outlive a session (ghost lists, sketches) is
/// kept by key. `time` is in microseconds.
pub trait Model: Send {
    /// The policy's name, as `--eviction-policy` would take it.
    fn name(&self) -> String;
    fn insert(&mut self, id: u64, key: u64, time: u64);
    fn access(&mut self, id: u64, time: u64);
    /// `evicted`: the table evicted it (otherwise it expired or was closed).
    fn remove(&mut self, id: u64, evicted: bool);
    /// The table did not evict a proposed victim (it was pinned).
    fn refused(&mut self, _id: u64) {}
    /// Up to `count` victims, best first, chosen before the session with
    /// `arriving_key` is inserted ([`NO_KEY`] when none arrives). `candidates`
    /// are host-sampled session ids when [`Model::sample_size`] is non-zero; a
    /// model that samples and gets none chooses among all its sessions.
    fn victims(&mut self, count: usize, arriving_key: u64, candidates: &[u64]) -> Vec<u64>;
    /// Candidates the table should sample for `victims` (0: none).
    fn sample_size(&self) -> usize {
        0
    }
    /// Periodic tick on the table's clock.
    fn maintain(&mut self, _now: u64) {}
    /// Accesses to sessions the policy had already evicted but the table still
    /// held (see the module documentation). The policy's own miss count is the
    /// table's misses plus these.
    fn rearrivals(&self) -> u64 {
        0
    }
    /// Whether the policy lists its next victims ahead ([`Policy::plan`]).
    fn plans(&self) -> bool {
        false
    }
    /// Whether its plan holds only for arrivals that are not ghosts
    /// ([`Policy::plans_for_strangers`]).
    fn plans_for_strangers(&self) -> bool {
        false
    }
    /// Up to `count` sessions the next eviction steps would take, in order.
    fn plan(&self, _count: usize) -> Vec<u64> {
        Vec::new()
    }
    /// Takes the next eviction step if `id` is what it evicts (the table
    /// evicted or refused a planned victim); returns whether it did. `id` is
    /// then detached, and the caller counts it as proposed.
    fn take_planned_step(&mut self, _id: u64) -> bool {
        false
    }
}

/// A policy written the way its reference simulator defines it: it evicts by
/// itself, from its own structures, whenever the simulator would.
///
/// Every method that can evict appends the evicted session ids to `evicted`;
/// those sessions must be gone from the policy's structures (ghost entries
/// recorded as the simulator records them).
pub trait Policy: Send {
    fn name(&self) -> String;
    /// The miss prologue, before any eviction for this arrival: ghost lookups
    /// and the adaptation they drive. Called once per arrival, with [`NO_KEY`]
    /// when no session is arriving.
    fn arrive(&mut self, _key: u64) {}
    /// The miss epilogue: the session enters the policy.
    fn admit(&mut self, id: u64, key: u64, time: u64, evicted: &mut Vec<u64>);
    fn hit(&mut self, id: u64, time: u64, evicted: &mut Vec<u64>);
    /// One eviction step of the simulator for a full cache: at least one
    /// session unless the policy holds none. `candidates` as in [`Model::victims`].
    fn evict(&mut self, candidates: &[u64], evicted: &mut Vec<u64>);
    /// The table removed a session the policy still holds (it expired, was
    /// closed, or the table chose it): it leaves no ghost, since the policy did
    /// not choose it.
    fn forget(&mut self, id: u64);
    fn sample_size(&self) -> usize {
        0
    }
    fn maintain(&mut self, _now: u64) {}
    /// Whether [`Policy::plan`] lists anything: no arrival can go ahead of
    /// the sessions it lists.
    fn plans(&self) -> bool {
        false
    }
    /// Whether [`Policy::plan`] lists the steps that follow once the arrival
    /// at hand is admitted, each for an arrival that is not a ghost (2Q:
    /// `ghost-conditional`), rather than steps no arrival can change. Such a
    /// plan is only asked for with an arrival at hand, and
    /// [`Policy::next_victim`] is then the next step's victim as things stand.
    fn plans_for_strangers(&self) -> bool {
        false
    }
    /// Up to `count` sessions the next [`Policy::evict`] steps would take, in
    /// order, stopping where an arrival could go first. A request for a
    /// listed session, its removal or its refusal is the only event that may
    /// change the list, and the table skips such a session. Where the
    /// arrivals come next, in the order they arrive, each leaving that order
    /// only when an event names it, the list may end in [`ARRIVALS`] or
    /// [`ARRIVALS_WHILE_QUEUED`] (counted in `count`).
    fn plan(&self, _count: usize, _out: &mut Vec<u64>) {}
    /// The next eviction step's victim if [`Policy::plan`] would list it
    /// first, looking past [`PLAN_WALK`] sessions where the plan can end in
    /// [`ARRIVALS`]: an arrival the table evicts as promised must be found
    /// however many requested ones lie before it.
    fn next_victim(&self) -> Option<u64> {
        let mut out = Vec::new();
        self.plan(1, &mut out);
        out.first().copied().filter(|&id| !is_arrivals(id))
    }
}

/// A [`Policy`] under the table's protocol (see the module documentation).
pub struct Reference<P> {
    policy: P,
    /// Key of every session the table holds, by id.
    keys: HashMap<u64, u64>,
    /// Sessions the policy evicted that the table still holds.
    detached: HashSet<u64>,
    /// Detached sessions not yet proposed, oldest eviction first.
    pending: VecDeque<u64>,
    /// The arrival whose prologue already ran (in `victims`), so that the
    /// insert that follows does not run it twice.
    prepared: Option<u64>,
    rearrivals: u64,
}

impl<P: Policy> Reference<P> {
    pub fn new(policy: P) -> Self {
        Self {
            policy,
            keys: HashMap::new(),
            detached: HashSet::new(),
            pending: VecDeque::new(),
            prepared: None,
            rearrivals: 0,
        }
    }

    pub fn policy(&self) -> &P {
        &self.policy
    }

    fn detach(&mut self, evicted: Vec<u64>) {
        for id in evicted {
            if self.detached.insert(id) {
                self.pending.push_back(id);
            }
        }
    }
}

impl<P: Policy> Model for Reference<P> {
    fn name(&self) -> String {
        self.policy.name()
    }

    fn insert(&mut self, id: u64, key: u64, time: u64) {
        if self.keys.contains_key(&id) {
            // A repeated insert carries nothing new; the first one stands.
            return;
        }
        self.keys.insert(id, key);
        if self.prepared.take() != Some(key) {
            self.policy.arrive(key);
        }
        let mut evicted = Vec::new();
        self.policy.admit(id, key, time, &mut evicted);
        self.detach(evicted);
    }

    fn access(&mut self, id: u64, time: u64) {
        self.prepared = None;
        let Some(&key) = self.keys.get(&id) else {
            return;
        };
        let mut evicted = Vec::new();
        if self.detached.remove(&id) {
            self.pending.retain(|&p| p != id);
            self.rearrivals += 1;
            self.policy.arrive(key);
            self.policy.admit(id, key, time, &mut evicted);
        } else {
            self.policy.hit(id, time, &mut evicted);
        }
        self.detach(evicted);
    }

    fn remove(&mut self, id: u64, _evicted: bool) {
        if self.keys.remove(&id).is_none() {
            return;
        }
        if self.detached.remove(&id) {
            self.pending.retain(|&p| p != id);
        } else {
            self.policy.forget(id);
        }
    }

    fn refused(&mut self, id: u64) {
        // Still the policy's first choice: offer it again next time.
        if self.detached.contains(&id) && !self.pending.contains(&id) {
            self.pending.push_front(id);
        }
    }

    fn victims(&mut self, count: usize, arriving_key: u64, candidates: &[u64]) -> Vec<u64> {
        if self.prepared != Some(arriving_key) {
            self.policy.arrive(arriving_key);
            self.prepared = Some(arriving_key);
        }
        let candidates: Vec<u64> = candidates
            .iter()
            .copied()
            .filter(|id| self.keys.contains_key(id) && !self.detached.contains(id))
            .collect();
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            if let Some(id) = self.pending.pop_front() {
                out.push(id);
                continue;
            }
            let mut evicted = Vec::new();
            self.policy.evict(&candidates, &mut evicted);
            if evicted.is_empty() {
                break;
            }
            self.detach(evicted);
        }
        out
    }

    fn sample_size(&self) -> usize {
        self.policy.sample_size()
    }

    fn maintain(&mut self, now: u64) {
        self.policy.maintain(now);
    }

    fn rearrivals(&self) -> u64 {
        self.rearrivals
    }

    fn plans(&self) -> bool {
        self.policy.plans()
    }

    fn plans_for_strangers(&self) -> bool {
        self.policy.plans_for_strangers()
    }

    fn plan(&self, count: usize) -> Vec<u64> {
        let mut out = Vec::new();
        self.policy.plan(count, &mut out);
        out
    }

    fn take_planned_step(&mut self, id: u64) -> bool {
        if !self.policy.plans() || self.detached.contains(&id) || !self.keys.contains_key(&id) {
            return false;
        }
        if self.policy.next_victim() != Some(id) {
            return false;
        }
        let mut evicted = Vec::new();
        self.policy.evict(&[], &mut evicted);
        assert_eq!(
            evicted,
            [id],
            "{}: the planned step evicts what the plan named",
            self.policy.name()
        );
        self.detached.insert(id);
        true
    }
}

/// What the table tells a policy at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// In sessions.
    pub capacity: usize,
    /// Microseconds without a request before a session expires; 0: never.
    pub idle_timeout: u64,
    /// Microseconds after creation at which a session expires; 0: never.
    pub max_age: u64,
}

impl Table {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            idle_timeout: 0,
            max_age: 0,
        }
    }
}

/// Every policy [`build`] knows.
pub const POLICIES: &[&str] = &[
    "lru",
    "fifo",
    "lfu",
    "clock",
    "sieve",
    "arc",
    "s3fifo",
    "twoq",
    "wtinylfu",
    "wtinylfu-tuned",
    "lfu-decay",
    "ttl",
];

/// A model by policy name, with the shipped policy's `key=value` config.
///
/// `wtinylfu` is Caffeine's adaptive variant unless `variant=libcachesim` (or
/// `variant=tuned`, the defaults of `wtinylfu-tuned`); see [`tinylfu`].
/// Unknown keys and bad values are errors naming the key, as the shipped
/// policies' `create` reports them.
pub fn build(name: &str, table: &Table, config: &[(&str, &str)]) -> Result<Box<dyn Model>, String> {
    let mut config = Config::new(config);
    let capacity = table.capacity;
    let model: Box<dyn Model> = match name {
        "lru" => Box::new(Reference::new(lru::Lru::new())),
        "fifo" => Box::new(Reference::new(fifo::Fifo::new())),
        "lfu" => Box::new(Reference::new(lfu::Lfu::new())),
        "clock" => {
            let bits = config.parse("bits", 1u32)?;
            Box::new(Reference::new(
                clock::Clock::new(bits).map_err(|e| format!("bits: {e}"))?,
            ))
        }
        "sieve" => Box::new(Reference::new(sieve::Sieve::new())),
        "arc" => Box::new(Reference::new(arc::Arc::new(capacity))),
        "s3fifo" => {
            let d = s3fifo::Params::default();
            let params = s3fifo::Params {
                small_ratio: config.parse("small-ratio", d.small_ratio)?,
                ghost_ratio: config.parse("ghost-ratio", d.ghost_ratio)?,
                move_to_main_threshold: config
                    .parse("move-to-main-threshold", d.move_to_main_threshold)?,
            };
            Box::new(Reference::new(s3fifo::S3Fifo::new(capacity, params)?))
        }
        "twoq" => {
            let d = twoq::Params::default();
            let params = twoq::Params {
                ain_ratio: config.parse("ain-ratio", d.ain_ratio)?,
                aout_ratio: config.parse("aout-ratio", d.aout_ratio)?,
            };
            Box::new(Reference::new(twoq::TwoQ::new(capacity, params)?))
        }
        "wtinylfu" | "wtinylfu-tuned" => {
            let default = if name == "wtinylfu" {
                "caffeine"
            } else {
                "tuned"
            };
            let preset = match config.take("variant").as_deref().unwrap_or(default) {
                "caffeine" => tinylfu::Params::caffeine(),
                "tuned" => tinylfu::Params::tuned(),
                "libcachesim" => {
                    config.finish()?;
                    return Ok(Box::new(Reference::new(wtinylfu::WTinyLfu::new(capacity))));
                }
                other => {
                    return Err(format!(
                        "variant: expected caffeine, tuned or libcachesim, got {other:?}"
                    ));
                }
            };
            let params = tinylfu::Params {
                window: config.parse("window", preset.window)?,
                protected: config.parse("protected", preset.protected)?,
                adaptive: config.parse("adaptive", preset.adaptive)?,
                sketch_width: config.parse("sketch-width", preset.sketch_width)?,
                sample: config.parse("sample", preset.sample)?,
                doorkeeper: config.parse("doorkeeper", preset.doorkeeper)?,
                victim_sample: config.parse("victim-sample", preset.victim_sample)?,
            };
            Box::new(Reference::new(tinylfu::TinyLfu::new(capacity, params)?))
        }
        "lfu-decay" => {
            let d = lfu_decay::Params::default();
            let params = lfu_decay::Params {
                log_factor: config.parse("lfu-log-factor", d.log_factor)?,
                decay_minutes: config.parse("lfu-decay-time", d.decay_minutes)?,
                samples: config.parse("samples", d.samples)?,
                seed: config.parse("seed", d.seed)?,
            };
            Box::new(Reference::new(lfu_decay::LfuDecay::new(params)?))
        }
        "ttl" => Box::new(Reference::new(ttl::Ttl::new(
            table.idle_timeout,
            table.max_age,
        ))),
        other => return Err(format!("unknown policy {other:?}")),
    };
    config.finish()?;
    Ok(model)
}

/// `key=value` settings, each to be taken exactly once.
struct Config<'a> {
    entries: Vec<(&'a str, &'a str)>,
}

impl<'a> Config<'a> {
    fn new(entries: &[(&'a str, &'a str)]) -> Self {
        Self {
            entries: entries.to_vec(),
        }
    }

    /// The last value given for `key` wins, as for the shipped policies.
    fn take(&mut self, key: &str) -> Option<String> {
        let value = self
            .entries
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned());
        self.entries.retain(|(k, _)| *k != key);
        value
    }

    fn parse<T: std::str::FromStr>(&mut self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e| format!("{key}: {v:?}: {e}")),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.entries.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("{key}: unknown setting")),
        }
    }
}

/// A small seeded generator (splitmix64): enough for coin flips and sampling,
/// and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n), n > 0 (the modulo bias is far below what matters here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
