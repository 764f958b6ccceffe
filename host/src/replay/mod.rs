//! Replaying a trace through the session table.
//!
//! The replay drives the very [`SessionTable`] and policy the proxy uses, on the
//! trace's virtual time (a manual clock; nothing sleeps). Each request names an
//! object; the replay keeps the object's session handle like a client keeps its
//! session id. A request whose session is still in the table is a hit (a touch);
//! otherwise it is a miss: the session is created again, evicting as the policy
//! decides. Every request counts, cold misses included, with no warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{TableConfig, MAX_SESSIONS_LIMIT};
use crate::eviction::EvictionPolicy;
use crate::session::{
    Clock, MetricsSnapshot, Micros, NewSession, SessionId, SessionTable, TableError,
};
use crate::trace::{IdMap, Trace};

/// What the capacity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityMode {
    /// Every object counts 1.
    Objects,
    /// Objects count their size in bytes.
    Bytes,
}

/// The outcome of one replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOutcome {
    pub requests: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Misses of objects larger than the whole capacity (byte mode): counted as
    /// misses and never admitted.
    pub too_large: u64,
    /// Decisions the table made from its own LRU order because the policy
    /// proposed too few valid victims (a fault, a timeout, a bad answer).
    pub fallback_victims: u64,
    pub wall: Duration,
    /// The table's metrics at the end (fallbacks by reason, invalid victims).
    pub table: MetricsSnapshot,
}

impl ReplayOutcome {
    pub fn miss_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.misses as f64 / self.requests as f64
        }
    }

    /// Millions of requests per second of wall time.
    pub fn throughput_mrps(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.requests as f64 / secs / 1e6
        }
    }
}

// The causes are in the messages, not `source`s, so that a report of the
// whole chain does not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid capacity: {0}")]
    Capacity(crate::config::ConfigError),
    #[error("the session table refused a request: {0}")]
    Table(TableError),
}

impl From<crate::config::ConfigError> for ReplayError {
    fn from(error: crate::config::ConfigError) -> Self {
        Self::Capacity(error)
    }
}

impl From<TableError> for ReplayError {
    fn from(error: TableError) -> Self {
        Self::Table(error)
    }
}

/// Trace time between two maintenance ticks of the policy (the proxy's
/// default cleanup interval).
pub const MAINTAIN_EVERY: Micros = 60_000_000;

/// No session: the table never hands out this id (its slot would be the
/// 2^32-th, past any configurable bound).
const NO_SESSION: u64 = u64::MAX;

/// No object: a table slot no session of the replay has taken yet.
const NO_OWNER: u32 = u32::MAX;

/// How far ahead in the trace an object's handle is prefetched. Whether a
/// request is a hit is a branch on that handle, the least predictable one of
/// the loop; read only when its turn comes, the handle is often not in the
/// cache yet and a mispredicted branch waits for it (at a 10 % capacity that
/// cost more than the failing touches it replaced). Prefetched a few requests
/// ahead, it is there in time. (A plain read thrown away does not do: the
/// loop waited on it there instead, for a fifth of its time at 1 %.)
/// Distances of 8 and 16 measured the same.
const LOOK_AHEAD: usize = 8;

/// How often (in requests) the progress callback is called.
pub const PROGRESS_EVERY: usize = 1 << 16;

/// Replays `trace` through a table of `capacity` (objects or bytes) evicting by
/// `policy`. `progress` receives the number of requests done so far.
pub fn replay(
    trace: &Trace,
    policy: Arc<dyn EvictionPolicy>,
    capacity: u64,
    mode: CapacityMode,
    progress: &mut dyn FnMut(u64),
) -> Result<ReplayOutcome, ReplayError> {
    let config = match mode {
        CapacityMode::Objects => {
            TableConfig::unbounded_in_time(usize::try_from(capacity).unwrap_or(usize::MAX))
        }
        CapacityMode::Bytes => TableConfig {
            weight_capacity: Some(capacity),
            ..TableConfig::unbounded_in_time(trace.distinct_ids().clamp(1, MAX_SESSIONS_LIMIT))
        },
    };
    let clock = Clock::manual();
    let table: Arc<SessionTable<()>> = SessionTable::builder(config)
        .policy(policy)
        .clock(clock.clone())
        .build_shared()?;
    // Objects numbered densely up front, so the replay loop indexes a vector
    // instead of probing a hash map on every request.
    let (objects, distinct) = dense_object_numbers(trace);
    // Each object's session handle as its bits, NO_SESSION for none: half the
    // size of an `Option<SessionId>`, so more of the vector stays in cache.
    // Written out before the clock starts: a zeroed allocation would be
    // mapped lazily, and its page faults would be timed as the table's.
    let mut sessions: Vec<u64> = Vec::with_capacity(distinct);
    sessions.resize(distinct, NO_SESSION);
    // The object whose session last took each table slot. A slot is reused
    // only once its session is gone, so an object whose handle names a slot
    // another object has taken since is known to be evicted without asking
    // the table: a touch that could only fail (a lock round and a lookup, on
    // nearly every miss of a small cache) is skipped. The check reads this
    // vector, one entry per slot and so small enough to stay in cache,
    // instead of clearing the evicted object's handle in `sessions` (a store
    // at a random place in a vector of every object, on every miss).
    let mut slot_owner: Vec<u32> = Vec::new();
    let mut misses = 0u64;
    let mut too_large = 0u64;
    let started = Instant::now();
    let mut next_tick = trace
        .requests
        .first()
        .map_or(u64::MAX, |r| r.time.saturating_add(MAINTAIN_EVERY));
    for (index, (request, &object)) in trace.requests.iter().zip(&objects).enumerate() {
        if index % PROGRESS_EVERY == 0 {
            progress(index as u64);
        }
        clock.set(request.time);
        if request.time >= next_tick {
            // As the proxy's cleanup does on the wall clock: decaying and
            // adapting policies are measured with their ticks.
            table.run_maintenance();
            next_tick = request.time.saturating_add(MAINTAIN_EVERY);
        }
        let weight = match mode {
            CapacityMode::Objects => 1,
            CapacityMode::Bytes => request.size,
        };
        if let Some(&ahead) = objects.get(index + LOOK_AHEAD) {
            prefetch(&sessions, ahead as usize);
        }
        let held = SessionId::from_bits(sessions[object as usize]);
        if slot_owner.get(held.slot() as usize) == Some(&object) {
            match table.touch(held, u64::from(request.size)) {
                Ok(()) => continue,
                // Gone while its slot stayed free: the slot is no longer this
                // object's to lose.
                Err(TableError::UnknownSession(_)) => {
                    if let Some(owner) = slot_owner.get_mut(held.slot() as usize) {
                        *owner = NO_OWNER;
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        misses += 1;
        // Key 0 means "no key" to a policy; object ids start at 0.
        let new = NewSession::anonymous(())
            .with_weight(weight)
            .with_key(request.id.wrapping_add(1));
        match table.create(new).map_err(|r| r.error) {
            Ok(created) => {
                let taken = created.id.slot() as usize;
                if slot_owner.len() <= taken {
                    slot_owner.resize(taken + 1, NO_OWNER);
                }
                slot_owner[taken] = object;
                sessions[object as usize] = created.id.to_bits();
            }
            Err(TableError::TooLarge { .. }) => too_large += 1,
            Err(other) => return Err(other.into()),
        }
    }
    let wall = started.elapsed();
    progress(trace.requests.len() as u64);
    let metrics = table.metrics();
    Ok(ReplayOutcome {
        requests: trace.requests.len() as u64,
        misses,
        evictions: metrics.evicted,
        too_large,
        fallback_victims: metrics.fallback_victims,
        wall,
        table: metrics,
    })
}

/// Asks the processor to bring `slice[index]` into cache without waiting for
/// it: a plain read here would hold up the loop at the look-ahead instead of
/// at the request, gaining nothing.
#[inline]
fn prefetch<T>(slice: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(item) = slice.get(index) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of every x86_64 processor, and a prefetch only
        // hints the cache: it never faults and reads nothing into the program.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(item).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slice, index);
}

/// Numbers the trace's objects 0, 1, 2, ... in order of first request; returns
/// the number of each request's object and how many objects there are.
fn dense_object_numbers(trace: &Trace) -> (Vec<u32>, usize) {
    let mut numbers: IdMap<u32> =
        IdMap::with_capacity_and_hasher(trace.len() / 4 + 16, Default::default());
    let objects = trace
        .requests
        .iter()
        .map(|r| {
            let next = numbers.len() as u32;
            *numbers.entry(r.id).or_insert(next)
        })
        .collect();
    (objects, numbers.len())
}
