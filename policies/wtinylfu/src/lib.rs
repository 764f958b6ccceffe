//! W-TinyLFU (Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient
//! Cache Admission Policy", ACM ToS 2017) with Caffeine's adaptive window
//! (Einziger, Eytan, Friedman and Manes, "Adaptive Software Cache
//! Management", Middleware 2018), as Caffeine 3 runs it by default.
//!
//! A small window LRU takes every arriving session, so a burst of new
//! clients is served by recency; a segmented LRU main cache (probation, then
//! protected once requested again) holds the rest. When the window
//! overflows, its oldest session and the main cache's victim compete: the one
//! whose client the frequency sketch has seen more often stays. The sketch
//! counts stable keys, so a client that comes back under a new session id
//! keeps its history. A hill climber moves the boundary between window and
//! main toward whichever gives more hits.
//!
//! # Settings
//!
//! `variant` picks a set of defaults; every other key overrides one of them.
//!
//! | key | meaning | `caffeine` (default) | `tuned` | source |
//! |---|---|---|---|---|
//! | `variant` | `caffeine`, `tuned` or `libcachesim` | | | |
//! | `window` | initial window share of the capacity, above 0 and below 1 (the window keeps at least 1 session) | 0.01 | 0.03 | Caffeine `PERCENT_MAIN = 0.99` |
//! | `protected` | protected share of the main cache, 0 to 1 | 0.8 | 0.8 | Caffeine `PERCENT_MAIN_PROTECTED` |
//! | `adaptive` | move the window by hill climbing | true | false | Caffeine; the climber's constants are fixed at Caffeine's: a sample of 10 x capacity requests, a step of 6.25% of the capacity restarting after a hit-rate change of 5 points, decaying by 0.98 otherwise, at most 1,000 sessions moved per step |
//! | `sketch-width` | counters per sketch row per power of two of the capacity, a power of two up to 256 (rows are capped at 2^23 counters) | 4 | 16 | Caffeine's table of `ceilPow2(capacity)` longs of sixteen 4-bit counters, four per key |
//! | `sample` | additions between halvings of the sketch, per session of capacity | 10 | 30 | TinyLFU's sample size W = 10 C; Caffeine `sampleSize = 10 * maximum` |
//! | `doorkeeper` | a key's first addition only marks a Bloom filter | false | true | TinyLFU's doorkeeper (Caffeine 3 has none) |
//! | `victim-sample` | the main victim is the least frequent of this many oldest probation sessions (1 to 1024) | 1 | 16 | Caffeine and the paper: 1, probation's LRU session |
//!
//! `variant=libcachesim` is libCacheSim's `wtinylfu` (`WTinyLFU.c`, window
//! 1%, SLRU main, a counting Bloom filter), quirks included, so its miss
//! ratio compares with libCacheSim's published figures; it takes no other
//! key. `variant=tuned` is what `wtinylfu-tuned` runs by default.
//!
//! A bad value is refused at `create` with a message naming the key, and so
//! is a table bounded in bytes (the queue sizes count sessions).
//!
//! # Semantics (Caffeine-style variants)
//!
//! `tests/reference/tinylfu.rs` is the definition this matches step for step;
//! in brief:
//! - Sizes: window `C - (long)((1 - window) C)` (at least 1), protected
//!   `(long)(protected x main)`, probation the rest of main. The window
//!   overflows into probation's MRU end.
//! - The sketch is allocated once the table is half full, as Caffeine and moka
//!   do (keys seen before then count 0); every arrival and every request adds
//!   its key once. An arrival is counted before the eviction it causes, as
//!   Caffeine counts a new key before evicting. Sessions without a key (0)
//!   count 0.
//! - A victim, when the window is full: the window's oldest session moves to
//!   probation's MRU end as the candidate and competes with the main victim;
//!   it stays only with a strictly higher frequency. When the window is below
//!   its size, the main victim goes.
//! - Hits: window and protected move to their MRU end; probation promotes to
//!   protected, whose overflow demotes back to probation.
//!
//! Eviction changes state while choosing (the candidate moves), so
//! `stable-order` is not declared. Around the policy, the table's protocol
//! (the arrival counted before its victims, re-arrivals of a session evicted
//! but still held, pinned refusals) is `shadowcat-policy-sim`'s.
//!
//! Costs: O(1) per event (slot-indexed lists, four counters); an eviction
//! O(`victim-sample`); a halving O(sketch), every `sample x C` additions.
//! Memory: the sketch, `2 x sketch-width x ceilPow2(C)` bytes (a quarter more
//! with the doorkeeper), allocated when the table is half full, plus a few
//! words per session.

mod policy;

use shadowcat_policy_sim::OnTable;

pub use policy::{Defaults, Params, Variant, WTinyLfu};

/// `wtinylfu`: Caffeine's defaults.
pub struct Caffeine;

impl Defaults for Caffeine {
    const NAME: &'static str = "wtinylfu";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const VARIANT: Variant = Variant::Caffeine;
}

shadowcat_policy_sdk::export_policy!(OnTable<WTinyLfu<Caffeine>>);

#[cfg(test)]
mod tests;
