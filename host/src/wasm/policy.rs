//! A WebAssembly policy as the session table sees it: the
//! [`EvictionPolicy`] front, and the batching of events into `observe` calls.
//!
//! The rest of the policy host lives beside this module: [`super::checkout`]
//! takes the instance out for a call and decides what a fault costs (backoff,
//! quarantine, recovery with a chunked warm-up); [`super::reload`] swaps in a
//! new policy file (file watch, SIGHUP).
//!
//! # Why events are batched
//!
//! One call into a component costs about as much as handling a few dozen
//! events inside it, so the request path never calls the guest. The table
//! holds the events back under its own lock and hands them over in batches
//! (`record_batch`, which packs them into a buffer under a leaf lock, one
//! round per batch rather than per request); the buffer asks for a flush once
//! the policy's batch size is reached. A decision takes the pending events
//! along in its own `victims` call.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::checkout::{Runtime, Slot};
use super::engine::{LoadedComponent, PolicyEngine};
use super::error::PolicyError;
use super::health::{FaultHistory, FaultLog};
use super::instance::{CallError, EventNeeds, Fault, Instance, PolicyInfo, PolicyTable};
use super::metrics::{PolicyMetrics, PolicyMetricsSnapshot};
use super::names::NameHistory;
use crate::eviction::packed::{self, KIND_ACCESSED, KIND_INSERTED, KIND_REFUSED, KIND_REMOVED};
use crate::eviction::{
    Arriving, EvictionPolicy, FlushHint, LiveSessions, PackedEvent, PolicyEvent, QuotaAdjustment,
    QuotaUsage, Refusal, RemovalCause, Unavailable, VictimRequest,
};
use crate::session::{Micros, SessionId};

/// Most events handed to one `observe` call (and riding on one `victims`
/// call). It bounds guest memory per call, and keeps a call within the call
/// deadline: a warm-up after a recovery replays every live session, and a slow
/// guest given a whole large table in one call would time out, fault again and
/// end up quarantined by its own recovery.
pub const EVENTS_PER_CALL: usize = 4_096;
/// Calls per latency sample. The two clock reads of a timed call cost some 8 %
/// of a short `victims` call, and the quantiles of a regular one-in-eight
/// sample follow those of every call.
const TIMED_ONE_IN: u64 = 8;

/// Victims asked of a `stable-order` policy per call at most, by default: one
/// is used now, the rest are handed out by later evictions without a call
/// (as long as no event names them). A call costs about as much as a few
/// dozen evictions from the queue; the host asks [`PREFETCH_START`] at first
/// and asks more while its answers are used up (see [`next_depth`]).
pub const PREFETCH: usize = 128;
/// Victims asked per call of a policy that chooses ahead, at first and at
/// least (or the prefetch limit, if lower). Fewer cost more on every policy
/// measured: a call per handful of evictions.
const PREFETCH_START: usize = 32;
/// Ends a `stable-order` answer to say that the sessions inserted after it
/// follow the listed victims, oldest first (see `victims` in
/// `wit/0.2.0/policy.wit`). It names no session: a host that does not know it
/// refuses it as not live and fills from its own order.
pub const ARRIVALS: u64 = u64::MAX;
/// Ends a `stable-order` answer as [`ARRIVALS`] does, for a policy whose
/// arrivals follow only while a victim it chose ahead is still queued: once
/// the host has handed out, or seen events name, every one it queued, the
/// promise ends and the host asks again (SIEVE's hand chases the arrivals,
/// but wraps to the oldest sessions once it passes the newest). Slot
/// `u32::MAX` too, so it names no session either.
pub const ARRIVALS_WHILE_QUEUED: u64 = 0xffff_fffe_ffff_ffff;
/// Follows the victims in a `ghost-conditional` answer: what changed in the
/// policy's ghosts comes after it (see `victims` in `wit/0.3.0/policy.wit`).
pub const GHOSTS: u64 = 0xffff_fffd_ffff_ffff;
/// Set in the word after [`GHOSTS`]: the keys listed are all of the policy's
/// ghosts, replacing what the host knew.
pub const GHOSTS_REPLACED: u64 = 1 << 63;
/// Ghost keys kept per policy at most, per session of the table's capacity
/// (a ghost list longer than a few tables forgets nothing useful), and at
/// least and at most in all.
const GHOSTS_PER_SESSION: u64 = 4;
const MIN_GHOSTS: usize = 1 << 10;
const MAX_GHOSTS: usize = 1 << 22;
/// The stable key of a session the host knows none for: no policy can
/// recognise it, so it is never taken for a ghost.
const NO_KEY: u64 = 0;
/// Victims of one `ghost-conditional` answer handed out at most: every
/// arrival is checked against their keys until the policy answers again, so
/// an answer whose arrivals follow for ever must end some time.
const MAX_HANDED_SINCE_ANSWER: usize = 64;
pub(super) const WORDS_PER_EVENT: usize = packed::WORDS;
// One bit per event kind, at the kind's number, so that a packed event's
// kind tells whether it is wanted.
const NEED_INSERTED: u8 = 1 << KIND_INSERTED;
const NEED_ACCESSED: u8 = 1 << KIND_ACCESSED;
const NEED_REMOVED: u8 = 1 << KIND_REMOVED;
const NEED_REFUSED: u8 = 1 << KIND_REFUSED;
const NEED_ALL: u8 = NEED_INSERTED | NEED_ACCESSED | NEED_REMOVED | NEED_REFUSED;
/// The `victims` input header: event count, arriving key, arriving size.
const VICTIMS_HEADER: usize = 3;

/// Victims a stable-order policy chose ahead, handed out one eviction at a
/// time (see [`EvictionPolicy::ready_victims`]). Lives under the event
/// buffer's lock so that every event is checked against it as it is recorded.
#[derive(Default)]
struct Ready {
    victims: VecDeque<SessionId>,
    /// The last victims handed to the table, kept until it says which it did
    /// not need ([`EvictionPolicy::unused_victims`]), minus any an event
    /// named since: those go back to the front, still the policy's choice.
    handed: Vec<SessionId>,
    /// The handed victims head a fresh answer rather than coming from the
    /// queue: the promise of `stable-order` does not cover an answer's first
    /// victim, so if unused they are dropped, and the queue behind them too
    /// (the policy is asked again).
    handed_fresh: bool,
    /// The queued and handed victims by slot: most events name none of
    /// them, and this tells so without a scan. Kept exact as victims leave:
    /// a mark left behind by an evicted victim would send every event of the
    /// session that takes its slot next (at once, on a full table) to a scan.
    mask: SlotCounts,
    /// Whether sessions inserted since the answer join the queue at its
    /// back, in the order they arrive.
    arrivals: Arrivals,
    /// The policy declared `ghost-conditional`: its choices ahead hold only
    /// while no arrival may be one of its ghosts, no session leaves unasked
    /// and no event names a victim.
    conditional: bool,
    ghosts: Ghosts,
    /// Victims the last answer queued, and those handed out from the queue
    /// since (arrivals that joined it included): how far ahead the next
    /// call should ask.
    queued_by_answer: usize,
    served: usize,
}

/// Victims to ask for in the next call, after an answer that queued `queued`
/// of which `served` were handed out before the policy was asked again. A
/// queue handed out whole says the policy's order held all along: asking
/// twice as many halves the calls (each costs thousands of instructions in
/// the sandbox's entry and exit alone). One mostly forgotten or dropped (an
/// LRU whose victims come back, a 2Q whose ghosts arrive) says the work of
/// choosing that far ahead was wasted. Between `PREFETCH_START` and `most`.
fn next_depth(depth: usize, queued: usize, served: usize, most: usize) -> usize {
    let floor = PREFETCH_START.min(most);
    let next = if queued == 0 {
        depth
    } else if served >= queued {
        depth.saturating_mul(2)
    } else if served.saturating_mul(2) < queued {
        depth / 2
    } else {
        depth
    };
    next.clamp(floor, most)
}

/// What the host knows of a `ghost-conditional` policy's ghosts: a superset,
/// so that an arrival the policy would recognise is never taken for a
/// stranger.
#[derive(Default)]
struct Ghosts {
    /// Its ghosts as of its last answer. A map for its entry, which toggles a
    /// key in one probe: half of an answer's changes are keys that leave.
    keys: HashMap<u64, (), foldhash::fast::RandomState>,
    /// The keys of the victims evicted since, which it may have remembered
    /// since: a few (see [`MAX_HANDED_SINCE_ANSWER`]), scanned.
    evicted: Vec<u64>,
    /// A bit per key in `evicted`, of 256 by a hash of the key: most
    /// arrivals find theirs clear and skip the scan, which cost 2Q some 30
    /// instructions per eviction at a dozen keys.
    evicted_bits: [u64; 4],
    /// It reported more ghosts than `limit`: until an answer that replaces
    /// them fits, any arrival may be one.
    overflowed: bool,
    limit: usize,
    /// The last key `keys` was found not to hold, until `keys` changes: an
    /// arrival is asked about when its victim is handed out and again when
    /// it is inserted, and the second answer then skips the lookup.
    outside: u64,
}

impl Ghosts {
    fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// The word of `evicted_bits` and the bit in it for `key`.
    #[inline]
    fn evicted_bit(key: u64) -> (usize, u64) {
        let bit = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
        (bit / 64, 1 << (bit % 64))
    }

    /// Whether an arrival with `key` may be one the policy remembers; never
    /// one without a key (0), which nobody can recognise.
    #[inline]
    fn may_hold(&mut self, key: u64) -> bool {
        if key == NO_KEY {
            return false;
        }
        if self.overflowed || self.was_evicted(key) {
            return true;
        }
        if key == self.outside {
            return false;
        }
        let held = !self.keys.is_empty() && self.keys.contains_key(&key);
        if !held {
            self.outside = key;
        }
        held
    }

    #[inline]
    fn was_evicted(&self, key: u64) -> bool {
        let (word, bit) = Self::evicted_bit(key);
        self.evicted_bits[word] & bit != 0 && self.evicted.contains(&key)
    }

    /// A victim handed out from the answer left.
    fn evicted(&mut self, key: u64) {
        if key != NO_KEY {
            self.evicted.push(key);
            let (word, bit) = Self::evicted_bit(key);
            self.evicted_bits[word] |= bit;
        }
    }

    /// Evictions so far are covered by the policy's next answer.
    fn forget_evictions(&mut self) {
        if !self.evicted.is_empty() {
            self.evicted.clear();
            self.evicted_bits = [0; 4];
        }
    }

    /// An answer's ghost section (what follows [`GHOSTS`]): each change
    /// since the previous answer, in order (a key listed joined if it was
    /// not a ghost, left if it was), or all of them.
    fn answered(&mut self, section: &[u64]) {
        self.forget_evictions();
        self.outside = NO_KEY;
        let Some((&head, keys)) = section.split_first() else {
            return;
        };
        if head & GHOSTS_REPLACED != 0 {
            if keys.len() > self.limit {
                self.overflow();
            } else {
                self.keys.clear();
                self.keys.extend(keys.iter().map(|&key| (key, ())));
                self.overflowed = false;
            }
        } else if !self.overflowed {
            for &key in keys {
                match self.keys.entry(key) {
                    Entry::Occupied(ghost) => {
                        ghost.remove();
                    }
                    Entry::Vacant(stranger) => {
                        stranger.insert(());
                    }
                }
            }
            if self.keys.len() > self.limit {
                self.overflow();
            }
        }
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.keys = HashMap::default();
        self.forget_evictions();
    }
}

/// Whether the sessions inserted after an answer follow its victims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Arrivals {
    #[default]
    Stay,
    /// As long as the promise holds (the answer ended in [`ARRIVALS`]).
    Follow,
    /// Until the queue runs dry (the answer ended in
    /// [`ARRIVALS_WHILE_QUEUED`]).
    FollowWhileQueued,
}

impl Arrivals {
    /// What the last id of an answer says.
    fn of_answer(last: Option<&u64>) -> Self {
        match last {
            Some(&ARRIVALS) => Self::Follow,
            Some(&ARRIVALS_WHILE_QUEUED) => Self::FollowWhileQueued,
            _ => Self::Stay,
        }
    }
}

/// How many queued or handed victims have a slot equal to each value modulo
/// 8,192, with a bit per value set while its count is above 0. Wide enough
/// that a full prefetch queue leaves nearly every event's bit clear: at
/// 1,024, a queue of 128 marked one value in nine, and the events that
/// shared a mark with no victim (most of those marked) each scanned the
/// queue for nothing, 4 % of lru.wasm's time on a table of 8,000. The bits,
/// 1 KiB, are what every event reads, the counts only what joins or leaves.
/// A count that reached 255 stays there until the next full reset: it may
/// then send events to a needless scan, never skip a needed one.
struct SlotCounts {
    bits: [u64; SLOT_COUNTS / 64],
    counts: [u8; SLOT_COUNTS],
    /// A count reached 255: only a full reset is exact.
    saturated: bool,
}

const SLOT_COUNTS: usize = 8192;

impl Default for SlotCounts {
    fn default() -> Self {
        Self {
            bits: [0; SLOT_COUNTS / 64],
            counts: [0; SLOT_COUNTS],
            saturated: false,
        }
    }
}

impl SlotCounts {
    fn locate(id: SessionId) -> usize {
        id.slot() as usize % SLOT_COUNTS
    }

    fn add(&mut self, id: SessionId) {
        let at = Self::locate(id);
        self.counts[at] = self.counts[at].saturating_add(1);
        self.saturated |= self.counts[at] == u8::MAX;
        self.bits[at / 64] |= 1 << (at % 64);
    }

    fn remove(&mut self, id: SessionId, times: usize) {
        let at = Self::locate(id);
        let count = &mut self.counts[at];
        if *count == u8::MAX {
            return;
        }
        *count = count.saturating_sub(u8::try_from(times).unwrap_or(u8::MAX));
        if *count == 0 {
            self.bits[at / 64] &= !(1 << (at % 64));
        }
    }

    fn contains(&self, id: SessionId) -> bool {
        let at = Self::locate(id);
        self.bits[at / 64] & (1 << (at % 64)) != 0
    }

    /// Whether exactly one queued or handed victim has `id`'s slot value.
    fn holds_one(&self, id: SessionId) -> bool {
        self.counts[Self::locate(id)] == 1
    }

    /// Zeroes the counts under set bits only (every other count is 0):
    /// writing all 8,192 counts would cost more cache lines than the
    /// victims they count.
    fn clear(&mut self) {
        for (word, bits) in self.bits.iter_mut().enumerate() {
            let mut left = *bits;
            while left != 0 {
                self.counts[word * 64 + left.trailing_zeros() as usize] = 0;
                left &= left - 1;
            }
            *bits = 0;
        }
        self.saturated = false;
    }

    /// [`Self::clear`] for a mask that counts exactly the ids of `lists`
    /// (with repeats): a queue's worth of writes rather than a pass over
    /// every bit. Slices: a chained iterator over the queue cost 2Q, which
    /// drops its queue at every returning client it remembers, 1 % more.
    fn clear_counting(&mut self, lists: [&[SessionId]; 3]) {
        if self.saturated {
            self.clear();
            return;
        }
        for list in lists {
            for &id in list {
                let at = Self::locate(id);
                self.counts[at] = 0;
                self.bits[at / 64] &= !(1 << (at % 64));
            }
        }
    }

    /// Resets a count stuck at 255 (every other count is 0 when nothing is
    /// queued or handed).
    fn clear_if_saturated(&mut self) {
        if self.saturated {
            self.clear();
        }
    }
}

impl Ready {
    /// Takes a fresh answer in place of the queue: its first `count`
    /// distinct victims are handed to the table now (appended to `out`),
    /// the rest queued. Returns how many repeats were dropped (each id
    /// stays at its first place).
    fn install_answer(
        &mut self,
        answer: &[u64],
        count: usize,
        out: &mut Vec<SessionId>,
        arrivals: Arrivals,
    ) -> usize {
        self.unmark_all();
        self.victims.clear();
        self.handed.clear();
        self.handed_fresh = true;
        self.arrivals = arrivals;
        let mut repeats = 0;
        for (at, &bits) in answer.iter().enumerate() {
            let id = SessionId::from_bits(bits);
            // The mask counts this answer's victims alone: it finds repeats
            // as it is built, and only a shared mark costs a look back.
            if self.mask.contains(id) && answer[..at].contains(&bits) {
                repeats += 1;
            } else {
                self.mask.add(id);
            }
        }
        let distinct;
        let answer = if repeats > 0 {
            distinct = without_repeats(answer);
            &distinct[..]
        } else {
            answer
        };
        // Copied by slices, which the usual answer is: a push per victim
        // would check the queue's room and wrap each time.
        let (now, ahead) = answer.split_at(count.min(answer.len()));
        self.handed
            .extend(now.iter().map(|&bits| SessionId::from_bits(bits)));
        out.extend_from_slice(&self.handed);
        self.victims
            .extend(ahead.iter().map(|&bits| SessionId::from_bits(bits)));
        self.queued_by_answer = self.victims.len();
        self.served = 0;
        repeats
    }

    /// Victims handed to the table from now on, which the mask counts
    /// already (they move from the queue to the hand); forgets the
    /// previous ones.
    fn hand_counted(&mut self, ids: &[SessionId], fresh: bool) {
        self.handed_fresh = fresh;
        for &id in &self.handed {
            self.mask.remove(id, 1);
        }
        self.handed.clear();
        // One or two as a rule: pushed, where a copy calls memcpy.
        for &id in ids {
            self.handed.push(id);
        }
    }

    /// The table did not need `unused` (a tail of what it was handed): the
    /// ones no event has named since become the next victims again.
    fn give_back(&mut self, unused: &[SessionId]) {
        if self.handed_fresh {
            if unused.iter().any(|id| self.handed.contains(id)) {
                self.drop_queue();
            }
        } else {
            for &id in unused.iter().rev() {
                if self.handed.contains(&id) {
                    self.victims.push_front(id);
                }
            }
        }
        // Every id given back was counted once, as handed: the mask is
        // cleared by what it counted, then counts the queue alone.
        self.unmark_all();
        self.handed.clear();
        for &id in &self.victims {
            self.mask.add(id);
        }
    }

    /// An event named `id`: it is no longer a choice made ahead. The others
    /// keep their order (what `stable-order` promises).
    #[inline(always)]
    fn forget(&mut self, id: SessionId) {
        if self.mask.contains(id) {
            // Most marked ids are the victim handed out last, leaving with
            // its slot's bucket to itself: settled here, where a call
            // would cost more than the work.
            if self.handed.len() == 1 && self.handed[0] == id && self.mask.holds_one(id) {
                self.handed.clear();
                self.mask.remove(id, 1);
            } else {
                self.forget_marked(id);
            }
        }
    }

    /// [`Self::forget`] for an id whose slot's mark is set: out of line, as
    /// most events find it clear.
    #[inline(never)]
    fn forget_marked(&mut self, id: SessionId) {
        // Most of these are a handed victim's own removal: once it is out
        // of the handed ones, a count back at 0 says no queued victim is
        // `id` either, without a scan of the queue.
        // Handed victims are distinct (an answer's repeats are dropped) and
        // their order does not matter: the first match is the only one.
        if let Some(at) = self.handed.iter().position(|&v| v == id) {
            self.handed.swap_remove(at);
            self.mask.remove(id, 1);
        }
        // Queued victims are distinct as a rule (an answer's repeats are
        // dropped, arrivals are new sessions): the first match is taken out
        // by position, which moves the shorter side of the queue, where a
        // `retain` of a deep queue cost some 1,600 instructions each time
        // (an LRU's victims are often requested). A copy behind it would
        // keep the mark set, and is looked for only then.
        let (mut from, mut removed) = (0, false);
        while self.mask.contains(id) {
            let Some(at) = self.victims.range(from..).position(|&v| v == id) else {
                break;
            };
            self.victims.remove(from + at);
            self.mask.remove(id, 1);
            from += at;
            removed = true;
        }
        if removed {
            self.ran_dry_if_empty();
        }
    }

    /// What an event the policy is told of does to the choices made ahead:
    /// an arrival may join them, a named one is forgotten, and a refusal ends
    /// the promise (a policy told of refusals may answer differently once it
    /// knows: it holds a pinned session back for a while).
    // Once per event recorded: a call costs more than its common case.
    #[inline(always)]
    fn observe(&mut self, event: &PackedEvent) {
        let (kind, id) = (packed::kind(event), packed::id(event));
        if self.conditional {
            // Most events are requests for sessions no victim is.
            if kind != KIND_ACCESSED || self.mask.contains(id) {
                self.observe_conditional(kind, id, event[3]);
            }
        } else if kind == KIND_REFUSED {
            self.forget(id);
            self.drop_queue();
        } else if kind == KIND_INSERTED && self.arrivals != Arrivals::Stay {
            self.mask.add(id);
            self.victims.push_back(id);
        } else if !self.is_empty() {
            self.forget(id);
        }
    }

    /// [`Self::observe`] for a `ghost-conditional` policy: the promise
    /// holds while the only sessions to leave are victims handed out, the
    /// arrivals are strangers to it, and no event names a victim otherwise.
    #[inline(never)]
    fn observe_conditional(&mut self, kind: u64, id: SessionId, key: u64) {
        let live = !self.victims.is_empty() || self.arrivals != Arrivals::Stay;
        match kind {
            KIND_REMOVED if self.mask.contains(id) && self.handed.contains(&id) => {
                self.forget(id);
                if live {
                    self.ghosts.evicted(key);
                    if self.ghosts.evicted.len() > MAX_HANDED_SINCE_ANSWER {
                        self.drop_queue();
                    }
                }
            }
            KIND_INSERTED if live && !self.ghosts.may_hold(key) => {
                if self.arrivals != Arrivals::Stay {
                    self.mask.add(id);
                    self.victims.push_back(id);
                }
            }
            KIND_ACCESSED if !self.names_victim(id) => {}
            _ => {
                // A refusal, a session leaving unasked, a possible ghost
                // arriving, or a victim named: the policy is asked again.
                self.forget(id);
                if live {
                    self.drop_queue();
                }
            }
        }
    }

    /// Exactly: the mask's buckets are shared, and a needless drop costs a
    /// call.
    fn names_victim(&self, id: SessionId) -> bool {
        self.mask.contains(id) && (self.handed.contains(&id) || self.victims.contains(&id))
    }

    /// Whether a victim chosen ahead may be handed out to make room for
    /// `arriving`: not for one a `ghost-conditional` policy may recognise,
    /// whose choice then depends on it (the queue goes; it is asked again).
    #[inline]
    fn may_hand_out(&mut self, arriving: Option<Arriving>) -> bool {
        if self.conditional && arriving.is_some_and(|a| self.ghosts.may_hold(a.key)) {
            self.drop_queue();
            return false;
        }
        true
    }

    /// Clears the mask, which counts the queued and handed victims.
    fn unmark_all(&mut self) {
        let (front, back) = self.victims.as_slices();
        self.mask.clear_counting([front, back, &self.handed]);
    }

    fn drop_queue(&mut self) {
        self.unmark_all();
        for &id in &self.handed {
            self.mask.add(id);
        }
        self.victims.clear();
        self.arrivals = Arrivals::Stay;
        self.ghosts.forget_evictions();
    }

    /// Called when the queue lost its last victim: arrivals that follow only
    /// while one is queued follow no more.
    fn ran_dry_if_empty(&mut self) {
        if self.victims.is_empty() && self.arrivals == Arrivals::FollowWhileQueued {
            self.arrivals = Arrivals::Stay;
        }
    }

    fn is_empty(&self) -> bool {
        self.victims.is_empty() && self.handed.is_empty()
    }

    fn clear(&mut self) {
        self.drop_queue();
        self.handed.clear();
        self.mask.clear();
        // A new instance starts without ghosts.
        self.ghosts = Ghosts::with_limit(self.ghosts.limit);
    }
}

/// Ghost keys kept for a `ghost-conditional` policy of `table`.
fn ghost_limit(table: &PolicyTable) -> usize {
    let per_table = table.capacity.saturating_mul(GHOSTS_PER_SESSION);
    usize::try_from(per_table)
        .unwrap_or(usize::MAX)
        .clamp(MIN_GHOSTS, MAX_GHOSTS)
}

/// Packed events behind room for the `victims` header, so that a call takes
/// the buffer as its input instead of copying the events behind a header
/// (a copy of every event, which by then has usually left the cache).
struct EventWords(Vec<u64>);

impl Default for EventWords {
    fn default() -> Self {
        Self(vec![0; VICTIMS_HEADER])
    }
}

impl EventWords {
    fn events(&self) -> &[u64] {
        &self.0[VICTIMS_HEADER..]
    }

    /// Words of events buffered.
    fn len(&self) -> usize {
        self.0.len() - VICTIMS_HEADER
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend(&mut self, words: &[u64]) {
        self.0.extend_from_slice(words);
    }

    fn clear(&mut self) {
        self.0.truncate(VICTIMS_HEADER);
    }

    fn drop_oldest(&mut self, words: usize) {
        let words = words.min(self.len());
        self.0.drain(VICTIMS_HEADER..VICTIMS_HEADER + words);
    }

    /// The buffer as it is, header room first; `spare` (emptied) takes its
    /// place, so neither side reallocates in the steady state.
    fn take(&mut self, mut spare: Vec<u64>) -> Vec<u64> {
        spare.clear();
        spare.resize(VICTIMS_HEADER, 0);
        std::mem::replace(&mut self.0, spare)
    }
}

/// What the event buffer's lock guards.
#[derive(Default)]
struct Buffered {
    /// Packed events waiting for the next call.
    words: EventWords,
    ready: Ready,
}

/// Packed events waiting for the next call into the guest.
pub(super) struct EventBuffer {
    /// A leaf lock: taken under the table lock by `record`.
    words: Mutex<Buffered>,
    needs: AtomicU8,
    batch_words: AtomicUsize,
    /// Candidates the table samples per decision; read under the table lock,
    /// so it lives here rather than behind the instance's lock.
    sample_size: AtomicUsize,
    /// The policy declared `stable-order` or `ghost-conditional`: victims
    /// are chosen ahead.
    chooses_ahead: AtomicBool,
    /// It declared `ghost-conditional`: its answers carry its ghosts.
    ghost_conditional: AtomicBool,
    /// Victims to ask for in the next call (see [`next_depth`]; a
    /// ghost-conditional policy's stays at the start); set under
    /// the lock with the answer's queue, read without it before a call.
    depth: AtomicUsize,
    /// No live instance (faulted or quarantined): nothing could take the
    /// events, and a recreated instance is rebuilt from the table anyway, so
    /// buffering them would only grow without bound.
    dropping: AtomicBool,
}

impl EventBuffer {
    /// `ghost_limit`: ghost keys kept at most for a `ghost-conditional`
    /// policy (see [`ghost_limit`]).
    fn new(info: &PolicyInfo, ghost_limit: usize) -> Self {
        let mut buffered = Buffered::default();
        buffered.ready.ghosts = Ghosts::with_limit(ghost_limit);
        let buffer = Self {
            words: Mutex::new(buffered),
            needs: AtomicU8::new(0),
            batch_words: AtomicUsize::new(0),
            sample_size: AtomicUsize::new(0),
            chooses_ahead: AtomicBool::new(false),
            ghost_conditional: AtomicBool::new(false),
            depth: AtomicUsize::new(PREFETCH_START),
            dropping: AtomicBool::new(false),
        };
        buffer.configure(info);
        buffer
    }

    /// Which events to keep and when to ask for a flush, as `info` says.
    pub(super) fn configure(&self, info: &PolicyInfo) {
        let EventNeeds {
            inserted,
            accessed,
            removed,
            refused,
        } = info.needs;
        let bits = (if inserted { NEED_INSERTED } else { 0 })
            | (if accessed { NEED_ACCESSED } else { 0 })
            | (if removed { NEED_REMOVED } else { 0 })
            | (if refused { NEED_REFUSED } else { 0 });
        self.needs.store(bits, Ordering::Release);
        self.batch_words.store(
            info.batch_size as usize * WORDS_PER_EVENT,
            Ordering::Release,
        );
        self.sample_size
            .store(info.sample_size as usize, Ordering::Release);
        let traits = info.traits;
        self.chooses_ahead.store(
            traits.stable_order || traits.ghost_conditional,
            Ordering::Release,
        );
        self.ghost_conditional
            .store(traits.ghost_conditional, Ordering::Release);
        // Choices of a previous instance or file are not this one's.
        let ready = &mut self.words.lock().ready;
        ready.clear();
        ready.conditional = traits.ghost_conditional;
        // A new policy (or file) has not shown how far its order holds.
        self.depth.store(PREFETCH_START, Ordering::Relaxed);
    }

    fn record(&self, event: PolicyEvent) -> FlushHint {
        self.record_batch(&[packed::pack(event)], None)
    }

    /// Buffers the events the policy needs, under one lock round; with
    /// `ready`, then takes up to that many victims chosen ahead.
    // Once per eviction (and per batch of requests): inlined into the
    // policy's entry points, whose call is the table's.
    #[inline(always)]
    fn record_batch(
        &self,
        events: &[PackedEvent],
        ready: Option<(Option<Arriving>, usize, &mut Vec<SessionId>)>,
    ) -> FlushHint {
        let needs = self.needs.load(Ordering::Relaxed);
        let wanted = |event: &PackedEvent| needs & (1 << packed::kind(event)) != 0;
        let dropping = self.dropping.load(Ordering::Relaxed);
        if ready.is_none() && (dropping || !events.iter().any(wanted)) {
            return FlushHint::Idle;
        }
        let mut buffered = self.words.lock();
        let Buffered {
            words,
            ready: queue,
        } = &mut *buffered;
        if !dropping {
            // Every kind wanted: the batch goes over as it is, in one copy.
            let whole = needs == NEED_ALL;
            if whole {
                words.extend(events.as_flattened());
            }
            for event in events.iter().filter(|e| wanted(e)) {
                if !whole {
                    words.extend(event);
                }
                queue.observe(event);
            }
        }
        if let Some((arriving, count, out)) = ready {
            Self::take_ready_locked(queue, arriving, count, out);
        }
        if words.len() >= self.batch_words.load(Ordering::Relaxed) {
            FlushHint::FlushSoon
        } else {
            FlushHint::Idle
        }
    }

    /// Drops what is pending and everything recorded until [`Self::resume`].
    pub(super) fn stop(&self) {
        self.dropping.store(true, Ordering::Relaxed);
        let mut buffered = self.words.lock();
        buffered.words.clear();
        buffered.ready.clear();
    }

    /// Buffers events again; returns whether they were being dropped.
    pub(super) fn resume(&self) -> bool {
        self.dropping.swap(false, Ordering::AcqRel)
    }

    pub(super) fn clear(&self) {
        let mut buffered = self.words.lock();
        buffered.words.clear();
        buffered.ready.clear();
    }

    pub(super) fn words(&self) -> usize {
        self.words.lock().words.len()
    }

    /// Drops the oldest `words` buffered (events a snapshot covers).
    pub(super) fn drop_oldest(&self, words: usize) {
        let mut buffered = self.words.lock();
        buffered.words.drop_oldest(words);
    }

    fn is_empty(&self) -> bool {
        self.words.lock().words.is_empty()
    }

    /// Hands the first `count` victims of `answer` to the table now (onto
    /// `out`) and queues the rest, minus any that an event recorded since
    /// the guest was called (still buffered) already named; returns the
    /// repeats dropped (see [`Ready::install_answer`]).
    /// `ghosts`: the answer's ghost section, for a `ghost-conditional` policy.
    /// `most`: the prefetch limit, which the next call's depth may grow to.
    fn install_ready(
        &self,
        answer: &[u64],
        count: usize,
        out: &mut Vec<SessionId>,
        arrivals: Arrivals,
        ghosts: &[u64],
        most: usize,
    ) -> usize {
        let mut buffered = self.words.lock();
        let Buffered { words, ready } = &mut *buffered;
        // A ghost-conditional answer is dropped at the first arrival the
        // policy may remember, whatever its length: asking further ahead
        // measured worse for 2Q and S3-FIFO, so its depth stays at the start.
        if !ready.conditional {
            let depth = next_depth(
                self.depth.load(Ordering::Relaxed),
                ready.queued_by_answer,
                ready.served,
                most,
            );
            self.depth.store(depth, Ordering::Relaxed);
        }
        let repeats = ready.install_answer(answer, count, out, arrivals);
        if ready.conditional {
            ready.ghosts.answered(ghosts);
        }
        // Recorded while the policy chose: it has not seen them.
        for event in words.events().as_chunks::<WORDS_PER_EVENT>().0 {
            ready.observe(event);
        }
        repeats
    }

    // Once per eviction, from the table's hot path: a call's entry and exit
    // cost a quarter of its work.
    #[inline(always)]
    fn take_ready_locked(
        ready: &mut Ready,
        arriving: Option<Arriving>,
        count: usize,
        out: &mut Vec<SessionId>,
    ) {
        if !ready.may_hand_out(arriving) {
            return;
        }
        let from = out.len();
        // One at a time: an eviction takes one or two, and a drain's set-up
        // and tear-down cost more than that (as does an iterator adapter's
        // extend, which cannot know how many it will get).
        for _ in 0..count {
            let Some(id) = ready.victims.pop_front() else {
                break;
            };
            out.push(id);
        }
        let taken = &out[from..];
        ready.served += taken.len();
        ready.hand_counted(taken, false);
        if !taken.is_empty() {
            ready.ran_dry_if_empty();
        }
        if ready.is_empty() {
            ready.mask.clear_if_saturated();
        }
    }

    fn give_back(&self, unused: &[SessionId]) {
        self.words.lock().ready.give_back(unused);
    }
}

/// Ids of an answer that an earlier place in it already holds. Cheap for
/// the answer that repeats none, the usual one: a bit per slot (modulo the
/// bitmap's size), and a scan only when two ids share a bit.
fn repeats(answer: &[u64]) -> usize {
    match answer.len() {
        // A sampled policy's usual answer: one victim per call.
        0..2 => 0,
        // A bitmap 16 times the answer's length keeps shared bits rare; the
        // usual answer is short, and zeroing a large one would cost it more
        // than its scan. (A prefetched answer's repeats are found as its
        // victim mask is built: see `Ready::install_answer`.)
        2..=64 => repeats_in::<16>(answer),
        _ => {
            let mut seen = HashSet::with_capacity(answer.len());
            answer.iter().filter(|&&id| !seen.insert(id)).count()
        }
    }
}

/// [`repeats`] with a bitmap of `WORDS` words.
fn repeats_in<const WORDS: usize>(answer: &[u64]) -> usize {
    let mut seen = [0u64; WORDS];
    let mut repeats = 0;
    for (at, &id) in answer.iter().enumerate() {
        // The low word is the slot, which live sessions never share.
        let bit = id as usize % (WORDS * 64);
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if seen[word] & mask != 0 && answer[..at].contains(&id) {
            repeats += 1;
        }
        seen[word] |= mask;
    }
    repeats
}

/// `answer` without its repeats, each id at its first place.
fn without_repeats(answer: &[u64]) -> Vec<u64> {
    let mut seen = HashSet::with_capacity(answer.len());
    answer
        .iter()
        .copied()
        .filter(|&id| seen.insert(id))
        .collect()
}

pub struct WasmPolicy {
    pub(super) engine: Arc<PolicyEngine>,
    pub(super) table: PolicyTable,
    pub(super) config: Vec<(String, String)>,
    pub(super) runtime: Mutex<Runtime>,
    pub(super) returned: Condvar,
    pub(super) events: EventBuffer,
    pub(super) quarantined: AtomicBool,
    pub(super) live_sessions: OnceLock<LiveSessions>,
    pub(super) metrics: PolicyMetrics,
    pub(super) names: NameHistory,
    pub(super) fault_log: FaultLog,
    /// The last fault or guest error, for reports such as `policy check`.
    pub(super) last_problem: Mutex<Option<String>>,
    /// Victims asked per call of a policy that chooses ahead: the engine's
    /// [`PolicyLimits::prefetch`](super::engine::PolicyLimits::prefetch)
    /// unless `policy check` sets it, to compare the policy's answers with and
    /// without.
    prefetch: AtomicUsize,
}

impl WasmPolicy {
    /// Loads, validates, instantiates and creates a policy for `table` (a
    /// plain capacity converts: sessions, no expiry).
    pub fn load(
        engine: Arc<PolicyEngine>,
        path: &Path,
        table: impl Into<PolicyTable>,
        config: Vec<(String, String)>,
    ) -> Result<Arc<Self>, PolicyError> {
        let component = engine.load(path)?;
        Self::from_component(engine, component, table, config)
    }

    /// Instantiates and creates a policy from a component already loaded (so
    /// that opening one policy at several capacities compiles it once).
    pub fn from_component(
        engine: Arc<PolicyEngine>,
        component: LoadedComponent,
        table: impl Into<PolicyTable>,
        config: Vec<(String, String)>,
    ) -> Result<Arc<Self>, PolicyError> {
        let table = table.into();
        let instance = Instance::start(&engine, &component, table, &config)
            .map_err(|e| e.into_policy_error(engine.limits()))?;
        let info = instance.info.clone();
        Ok(Arc::new(Self {
            names: NameHistory::new(&info.name),
            events: EventBuffer::new(&info, ghost_limit(&table)),
            runtime: Mutex::new(Runtime {
                slot: Slot::Ready(Box::new(instance)),
                component,
                info,
                health: FaultHistory::default(),
            }),
            table,
            config,
            returned: Condvar::new(),
            quarantined: AtomicBool::new(false),
            live_sessions: OnceLock::new(),
            metrics: PolicyMetrics::default(),
            fault_log: FaultLog::default(),
            last_problem: Mutex::new(None),
            prefetch: AtomicUsize::new(engine.limits().prefetch),
            engine,
        }))
    }

    /// Victims asked per call of a `stable-order` or `ghost-conditional`
    /// policy from now on (1: none ahead), whatever the engine's limits say.
    pub(super) fn set_prefetch(&self, prefetch: usize) {
        self.prefetch.store(prefetch.max(1), Ordering::Relaxed);
    }

    /// Where a fresh instance gets the live sessions to warm up from (after a
    /// fault or a hot reload). Without it, a new instance starts empty and the
    /// host fallback covers what it does not know.
    pub fn set_live_sessions(&self, source: LiveSessions) {
        let _ = self.live_sessions.set(source);
    }

    pub fn info(&self) -> PolicyInfo {
        self.runtime.lock().info.clone()
    }

    pub fn path(&self) -> PathBuf {
        self.runtime.lock().component.path.clone()
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> PolicyMetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The last fault or `Err` answer, with the call it happened in.
    pub fn last_problem(&self) -> Option<String> {
        self.last_problem.lock().clone()
    }

    /// Events buffered for the next delivery.
    pub fn pending_events(&self) -> usize {
        self.events.words() / WORDS_PER_EVENT
    }

    /// The packed input of `victims`: the header (event count, arriving key,
    /// arriving size), the buffered events, the candidates. The events ride
    /// on the victims call itself, saving an `observe` call and its
    /// allocations per decision; a backlog larger than one call takes goes
    /// through `observe` first.
    fn victims_input(
        &self,
        instance: &mut Instance,
        request: &VictimRequest<'_>,
    ) -> Result<Vec<u64>, Fault> {
        let (key, size) = request
            .arriving
            .map_or((0, 0), |a| (a.key, u64::from(a.weight)));
        // One lock round in the common case: a backlog too large to ride
        // along (rare: a flush was missed) is delivered first, outside it.
        let mut buffered = self.events.words.lock();
        if buffered.words.len() > EVENTS_PER_CALL * WORDS_PER_EVENT {
            drop(buffered);
            self.deliver(instance)?;
            buffered = self.events.words.lock();
        }
        let mut input = buffered
            .words
            .take(std::mem::take(&mut instance.spare_events));
        drop(buffered);
        let events = (input.len() - VICTIMS_HEADER) / WORDS_PER_EVENT;
        input[..VICTIMS_HEADER].copy_from_slice(&[events as u64, key, size]);
        for c in request.candidates {
            input.extend_from_slice(&[c.id.to_bits(), c.last_access, c.requests, c.key]);
        }
        self.metrics
            .events_delivered
            .fetch_add(events as u64, Ordering::Relaxed);
        Ok(input)
    }

    fn recycle(&self, instance: &mut Instance, mut words: Vec<u64>) {
        words.clear();
        instance.spare_events = words;
    }

    /// Delivers buffered events to the instance the caller holds, at most
    /// [`EVENTS_PER_CALL`] per call. A batch the guest answers with `Err` is
    /// lost (the guest said it could not apply it), and delivery goes on.
    pub(super) fn deliver(&self, instance: &mut Instance) -> Result<(), Fault> {
        let mut pending = self
            .events
            .words
            .lock()
            .words
            .take(std::mem::take(&mut instance.spare_events));
        let mut result = Ok(());
        for chunk in pending[VICTIMS_HEADER..].chunks(EVENTS_PER_CALL * WORDS_PER_EVENT) {
            match self.timed(|| instance.observe(chunk)) {
                Ok(()) => {
                    self.metrics
                        .events_delivered
                        .fetch_add((chunk.len() / WORDS_PER_EVENT) as u64, Ordering::Relaxed);
                }
                Err(CallError::Guest(message)) => self.guest_error("observe", &message),
                Err(CallError::Fault(fault)) => {
                    result = Err(fault);
                    break;
                }
            }
        }
        pending.clear();
        instance.spare_events = pending;
        result
    }

    /// Counts the call and times one call in [`TIMED_ONE_IN`] into the latency
    /// histogram.
    pub(super) fn timed<R>(&self, call: impl FnOnce() -> R) -> R {
        let nth = self.metrics.calls.fetch_add(1, Ordering::Relaxed);
        if !nth.is_multiple_of(TIMED_ONE_IN) {
            return call();
        }
        let start = Instant::now();
        let result = call();
        self.metrics.latency.record(start.elapsed());
        result
    }

    fn deliver_then<R>(
        &self,
        instance: &mut Instance,
        call: impl FnOnce(&mut Instance) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        self.deliver(instance).map_err(CallError::Fault)?;
        self.timed(|| call(instance))
    }
}

impl EvictionPolicy for WasmPolicy {
    /// The name the policy reports, as of its latest (re)load.
    fn name(&self) -> &str {
        self.names.current()
    }

    fn record(&self, event: PolicyEvent) -> FlushHint {
        self.events.record(event)
    }

    fn takes_batches(&self) -> bool {
        true
    }

    fn record_batch(&self, events: &[PackedEvent]) -> FlushHint {
        self.events.record_batch(events, None)
    }

    fn record_then_ready(
        &self,
        events: &[PackedEvent],
        arriving: Option<Arriving>,
        count: usize,
        out: &mut Vec<SessionId>,
    ) -> FlushHint {
        if self.events.chooses_ahead.load(Ordering::Relaxed) {
            self.events
                .record_batch(events, Some((arriving, count, out)))
        } else {
            self.events.record_batch(events, None)
        }
    }

    fn victims(
        &self,
        request: VictimRequest<'_>,
        out: &mut Vec<SessionId>,
    ) -> Result<(), Unavailable> {
        let count = request.count;
        if count == 0 {
            // Nothing to evict now, and an answer's first victim is not one
            // the policy promised to keep choosing: nothing to queue either.
            return Ok(());
        }
        let prefetch = self.prefetch.load(Ordering::Relaxed);
        let stable = prefetch > 1 && self.events.chooses_ahead.load(Ordering::Acquire);
        let conditional = self.events.ghost_conditional.load(Ordering::Relaxed);
        let depth = self.events.depth.load(Ordering::Relaxed).min(prefetch);
        let ask = match (stable, conditional, request.arriving) {
            // A ghost-conditional answer's victims after the first are for
            // later arrivals: several needed now are asked one at a time
            // (the table asks again), and none ahead without an arrival.
            (_, true, Some(_)) if count > 1 => 1,
            (true, true, None) => count,
            (true, _, _) => count.max(depth),
            (false, _, _) => count,
        };
        let ask32 = u32::try_from(ask).unwrap_or(u32::MAX);
        let chosen = self.with_instance("victims", true, |me, instance| {
            let input = me
                .victims_input(instance, &request)
                .map_err(CallError::Fault)?;
            let result = me.timed(|| instance.victims(ask32, &input));
            me.recycle(instance, input);
            result
        });
        match chosen {
            Ok(answer) => {
                // The ghost section (after the victims) counts toward nothing.
                // Looked for only where it may be: a scan of a deep answer.
                let ghosts_at = conditional
                    .then(|| answer.iter().position(|&w| w == GHOSTS))
                    .flatten();
                let (ids, ghosts) = match ghosts_at {
                    Some(at) => (&answer[..at], &answer[at + 1..]),
                    None => (&answer[..], &[][..]),
                };
                if ids.len() > ask {
                    self.metrics
                        .excess_victims
                        .fetch_add((ids.len() - ask) as u64, Ordering::Relaxed);
                }
                let mut answer = &ids[..ids.len().min(ask)];
                // Arrivals are learned from `inserted` events: a policy that
                // is not sent them cannot have them follow.
                let arrivals =
                    if stable && self.events.needs.load(Ordering::Relaxed) & NEED_INSERTED != 0 {
                        Arrivals::of_answer(answer.last())
                    } else {
                        Arrivals::Stay
                    };
                if arrivals != Arrivals::Stay {
                    answer = &answer[..answer.len() - 1];
                }
                self.metrics
                    .proposed_victims
                    .fetch_add(answer.len() as u64, Ordering::Relaxed);
                // A repeat is an invalid proposal, but the table stops at the
                // room it needs and the queue forgets every copy of a victim
                // once it leaves: neither would see most repeats. Counted
                // here, and dropped so that a repeat the table does reach is
                // not counted twice.
                let repeated = if stable {
                    self.events
                        .install_ready(answer, count, out, arrivals, ghosts, prefetch)
                } else {
                    let distinct;
                    let repeated = repeats(answer);
                    if repeated > 0 {
                        distinct = without_repeats(answer);
                        answer = &distinct;
                    }
                    out.extend(
                        answer
                            .iter()
                            .take(count)
                            .map(|&id| SessionId::from_bits(id)),
                    );
                    repeated
                };
                if repeated > 0 {
                    self.metrics
                        .repeated_victims
                        .fetch_add(repeated as u64, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(why) => {
                self.metrics.fallbacks.fetch_add(1, Ordering::Relaxed);
                Err(why)
            }
        }
    }

    fn flush(&self) {
        if self.events.is_empty() {
            return;
        }
        // Never waits: a busy instance's holder delivers the backlog with its
        // own call, and the request path must not queue behind it.
        let _ = self.with_instance("observe", false, |me, instance| {
            me.deliver(instance).map_err(CallError::Fault)
        });
    }

    fn maintain(&self, now: Micros) {
        let _ = self.with_instance("maintain", true, |me, instance| {
            me.deliver_then(instance, |i| i.maintain(now))?;
            // Added, not stored: a recreated instance counts from zero, and
            // the counter must not go back.
            me.metrics
                .log_lines_dropped
                .fetch_add(instance.take_log_lines_dropped(), Ordering::Relaxed);
            Ok(())
        });
    }

    fn attach_live_sessions(&self, source: LiveSessions) {
        self.set_live_sessions(source);
    }

    fn sample_size(&self) -> usize {
        self.events.sample_size.load(Ordering::Acquire)
    }

    fn learns_from_refusals(&self) -> bool {
        self.events.needs.load(Ordering::Acquire) & NEED_REFUSED != 0
    }

    fn ready_victims(&self, arriving: Option<Arriving>, count: usize, out: &mut Vec<SessionId>) {
        if self.events.chooses_ahead.load(Ordering::Relaxed) {
            let ready = &mut self.events.words.lock().ready;
            EventBuffer::take_ready_locked(ready, arriving, count, out);
        }
    }

    fn unused_victims(&self, unused: &[SessionId]) {
        if self.events.chooses_ahead.load(Ordering::Relaxed) {
            self.events.give_back(unused);
        }
    }

    fn adjust_quotas(&self, usage: &[QuotaUsage], out: &mut Vec<QuotaAdjustment>) {
        if usage.is_empty() {
            return;
        }
        let packed: Vec<u64> = usage
            .iter()
            .flat_map(|u| {
                [
                    u.id.to_bits(),
                    u.admitted,
                    u.rejected,
                    u.window_ms,
                    u.key,
                    u64::from(u.tenant),
                ]
            })
            .collect();
        let Ok(answer) = self.with_instance("adjust-quotas", true, |me, instance| {
            me.deliver_then(instance, |i| i.adjust_quotas(&packed))
        }) else {
            return;
        };
        // A ragged tail (not three words) is ignored rather than trusted.
        let before = out.len();
        for triple in answer.chunks_exact(3).take(usage.len()) {
            out.push(QuotaAdjustment {
                id: SessionId::from_bits(triple[0]),
                per_second: u32::try_from(triple[1]).unwrap_or(u32::MAX),
                burst: u32::try_from(triple[2]).unwrap_or(u32::MAX),
            });
        }
        self.metrics
            .quota_adjustments
            .fetch_add((out.len() - before) as u64, Ordering::Relaxed);
    }
}

/// Causes and refusal reasons as the WIT numbers them (checked here so a
/// reordering of an enum cannot silently change the wire format).
const _: () = {
    assert!(RemovalCause::ExpiredIdle as u8 == 0);
    assert!(RemovalCause::ExpiredAge as u8 == 1);
    assert!(RemovalCause::Evicted as u8 == 2);
    assert!(RemovalCause::Closed as u8 == 3);
    assert!(RemovalCause::Deleted as u8 == 4);
    assert!(RemovalCause::Shutdown as u8 == 5);
    assert!(RemovalCause::UpstreamFailed as u8 == 6);
    assert!(Refusal::Pinned as u8 == 0);
    assert!(Refusal::NotLive as u8 == 1);
};

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::wasm::bindings::InterfaceVersion;
    use crate::wasm::instance::PolicyTraits;

    #[test]
    fn repeats_within_an_answer_are_counted_and_dropped() {
        let id = |slot: u32, generation: u32| SessionId::new(slot, generation).to_bits();
        assert_eq!(repeats(&[]), 0);
        // Slots 1,024 apart share a bit of the small answer's bitmap; other
        // generations of one slot are other sessions.
        let distinct = [id(3, 0), id(3 + 1_024, 0), id(3, 1), id(9, 0)];
        assert_eq!(repeats(&distinct), 0);
        let answer = [
            id(3, 0),
            id(9, 0),
            id(3, 0),
            id(3 + 1_024, 0),
            id(9, 0),
            id(3, 0),
        ];
        assert_eq!(repeats(&answer), 3);
        assert_eq!(
            without_repeats(&answer),
            [id(3, 0), id(9, 0), id(3 + 1_024, 0)]
        );
        // Past the bitmap's reach, the set: slots far apart, and a repeat
        // far back, are told apart as well.
        let mut deep: Vec<u64> = (0..100).map(|slot| id(slot * 4_096, 0)).collect();
        assert_eq!(repeats(&deep), 0);
        deep.push(id(0, 0));
        assert_eq!(repeats(&deep), 1);
        assert_eq!(without_repeats(&deep).len(), 100);
        // A long answer (a byte-mode table asks for many) too.
        let mut long: Vec<u64> = (0..500).map(|slot| id(slot, 0)).collect();
        assert_eq!(repeats(&long), 0);
        long.extend([id(7, 0), id(499, 0)]);
        assert_eq!(repeats(&long), 2);
        assert_eq!(without_repeats(&long).len(), 500);
    }

    #[test]
    fn prefetch_depth_doubles_while_answers_are_used_up_and_halves_when_wasted() {
        // Every victim queued was handed out: twice as deep, up to the limit.
        assert_eq!(next_depth(32, 31, 31, 128), 64);
        assert_eq!(next_depth(64, 63, 70, 128), 128);
        assert_eq!(next_depth(128, 127, 127, 128), 128);
        // Most forgotten or dropped: half as deep, never below the start.
        assert_eq!(next_depth(128, 127, 10, 128), 64);
        assert_eq!(next_depth(64, 63, 0, 128), PREFETCH_START);
        assert_eq!(next_depth(PREFETCH_START, 31, 0, 128), PREFETCH_START);
        // In between, or nothing queued (a first call): as it was.
        assert_eq!(next_depth(64, 63, 40, 128), 64);
        assert_eq!(next_depth(64, 0, 0, 128), 64);
        // A lower limit (`--policy-prefetch`) bounds the start too.
        assert_eq!(next_depth(PREFETCH_START, 7, 7, 8), 8);
        assert_eq!(next_depth(PREFETCH_START, 0, 0, 1), 1);
    }

    /// The buffer counts what the table took from an answer's queue, and
    /// the next answer's depth follows.
    #[test]
    fn event_buffer_asks_deeper_after_an_answer_handed_out_whole() {
        let buffer = buffer(EVERY_KIND);
        let depth = || buffer.depth.load(Ordering::Relaxed);
        let answer = |first: u32| -> Vec<u64> {
            (first..first + 4)
                .map(|slot| SessionId::new(slot, 0).to_bits())
                .collect()
        };
        assert_eq!(depth(), PREFETCH_START);
        buffer.install_ready(
            &answer(0),
            0,
            &mut Vec::new(),
            Arrivals::Stay,
            &[],
            PREFETCH,
        );
        let mut out = Vec::new();
        for _ in 0..4 {
            buffer.record_batch(&[], Some((None, 1, &mut out)));
        }
        assert_eq!(out.len(), 4);
        // The next answer is installed after the queue ran dry: all served.
        buffer.install_ready(
            &answer(10),
            0,
            &mut Vec::new(),
            Arrivals::Stay,
            &[],
            PREFETCH,
        );
        assert_eq!(depth(), 2 * PREFETCH_START);
        // This one is dropped by a refusal before anything is taken.
        buffer.record_batch(&[event(KIND_REFUSED, SessionId::new(11, 0))], None);
        buffer.install_ready(
            &answer(20),
            0,
            &mut Vec::new(),
            Arrivals::Stay,
            &[],
            PREFETCH,
        );
        assert_eq!(depth(), PREFETCH_START);
    }

    const EVERY_KIND: EventNeeds = EventNeeds {
        inserted: true,
        accessed: true,
        removed: true,
        refused: true,
    };

    fn buffer(needs: EventNeeds) -> EventBuffer {
        EventBuffer::new(
            &PolicyInfo {
                name: "test".into(),
                version: "0".into(),
                interface: InterfaceVersion::V0_2,
                needs,
                traits: PolicyTraits {
                    stable_order: true,
                    sampled: false,
                    ghost_conditional: false,
                },
                batch_size: 1 << 16,
                sample_size: 0,
            },
            MIN_GHOSTS,
        )
    }

    fn event(kind: u64, id: SessionId) -> PackedEvent {
        packed::pack(match kind {
            KIND_INSERTED => PolicyEvent::Inserted {
                id,
                time: 7,
                weight: 1,
                key: 9,
                tenant: 0,
            },
            KIND_ACCESSED => PolicyEvent::Accessed {
                id,
                time: 7,
                weight: 1,
            },
            KIND_REMOVED => PolicyEvent::Removed {
                id,
                time: 7,
                cause: RemovalCause::Evicted,
                key: 9,
            },
            _ => PolicyEvent::Refused {
                id,
                time: 7,
                reason: Refusal::Pinned,
            },
        })
    }

    fn ready(buffer: &EventBuffer) -> Vec<SessionId> {
        let mut out = Vec::new();
        EventBuffer::take_ready_locked(&mut buffer.words.lock().ready, None, usize::MAX, &mut out);
        out
    }

    /// Every mix of kinds, in batches of every length: what is buffered is
    /// exactly the wanted events, in order.
    #[test]
    fn event_buffer_keeps_only_the_kinds_the_policy_needs_in_order() {
        let needs = EventNeeds {
            inserted: true,
            accessed: false,
            removed: true,
            refused: false,
        };
        let buffer = buffer(needs);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut expected = Vec::new();
        for batch in 0..64 {
            let events: Vec<PackedEvent> = (0..batch)
                .map(|i| event(rng.random_range(0..4), SessionId::new(i, batch)))
                .collect();
            buffer.record_batch(&events, None);
            for e in &events {
                if matches!(packed::kind(e), KIND_INSERTED | KIND_REMOVED) {
                    expected.extend_from_slice(e);
                }
            }
            assert_eq!(
                buffer.words.lock().words.events(),
                expected,
                "after a batch of {batch}"
            );
        }
    }

    /// Queued victims leave the queue only when an event names them (an id
    /// sharing a victim's bit in the mask does not), a refusal drops the
    /// queue, and arrivals join it while the answer said they follow.
    #[test]
    fn event_buffer_checks_events_against_the_victims_queued() {
        let buffer = buffer(EVERY_KIND);
        let (a, b, c) = (
            SessionId::new(5, 0),
            SessionId::new(6, 0),
            SessionId::new(7, 0),
        );
        let ahead = [a, b, c].map(SessionId::to_bits);
        buffer.install_ready(&ahead, 0, &mut Vec::new(), Arrivals::Stay, &[], PREFETCH);
        // Slot 5 + SLOT_COUNTS shares `a`'s bit; another generation of `b`
        // is not `b`.
        let lookalikes = [
            event(KIND_ACCESSED, SessionId::new(5 + SLOT_COUNTS as u32, 0)),
            event(KIND_REMOVED, SessionId::new(6, 1)),
            event(KIND_INSERTED, SessionId::new(40, 0)),
            event(KIND_ACCESSED, b),
        ];
        buffer.record_batch(&lookalikes, None);
        assert_eq!(ready(&buffer), vec![a, c]);
        // Delivered: the next answer has seen them.
        buffer.words.lock().words.clear();

        buffer.install_ready(&ahead, 0, &mut Vec::new(), Arrivals::Follow, &[], PREFETCH);
        let d = SessionId::new(41, 0);
        buffer.record_batch(&[event(KIND_INSERTED, d)], None);
        assert_eq!(ready(&buffer), vec![a, b, c, d]);
        buffer.words.lock().words.clear();

        // A named victim goes with every copy of it (an arrival already
        // queued), and only it, though another victim shares its mark.
        let twin = SessionId::new(6 + SLOT_COUNTS as u32, 0);
        let with_twin = [a, b, twin, c].map(SessionId::to_bits);
        buffer.install_ready(
            &with_twin,
            0,
            &mut Vec::new(),
            Arrivals::Follow,
            &[],
            PREFETCH,
        );
        buffer.record_batch(&[event(KIND_INSERTED, b), event(KIND_INSERTED, d)], None);
        buffer.record_batch(&[event(KIND_ACCESSED, b)], None);
        assert_eq!(ready(&buffer), vec![a, twin, c, d]);
        buffer.words.lock().words.clear();

        buffer.install_ready(&ahead, 0, &mut Vec::new(), Arrivals::Follow, &[], PREFETCH);
        buffer.record_batch(&[event(KIND_REFUSED, SessionId::new(99, 0))], None);
        buffer.record_batch(&[event(KIND_INSERTED, SessionId::new(42, 0))], None);
        assert_eq!(ready(&buffer), vec![], "a refusal ends the promise");
    }

    /// A call takes the events with the header's room in front, and the
    /// buffer left behind starts empty with that room again, whatever the
    /// spare vector it was handed held.
    #[test]
    fn event_words_hand_over_their_events_behind_header_room() {
        let mut words = EventWords::default();
        assert!(words.is_empty());
        words.extend(&[1, 2, 3, 4, 5, 6]);
        words.extend(&[7, 8, 9]);
        words.drop_oldest(3);
        assert_eq!(words.events(), [4, 5, 6, 7, 8, 9]);
        let taken = words.take(vec![42; 20]);
        assert_eq!(taken.len(), VICTIMS_HEADER + 6);
        assert_eq!(&taken[VICTIMS_HEADER..], [4, 5, 6, 7, 8, 9]);
        assert!(words.is_empty());
        assert_eq!(words.0, vec![0; VICTIMS_HEADER]);
        words.extend(&[10, 11, 12]);
        words.drop_oldest(usize::MAX);
        assert!(words.is_empty());
        words.extend(&[13, 14, 15]);
        words.clear();
        assert_eq!(words.events(), [] as [u64; 0]);
        assert_eq!(words.len(), 0);
    }

    /// The counts of exactly the queued and handed victims.
    fn exact_mask(ready: &Ready) -> ([u64; SLOT_COUNTS / 64], [u8; SLOT_COUNTS]) {
        let mut counts = SlotCounts::default();
        for &id in ready.victims.iter().chain(&ready.handed) {
            counts.add(id);
        }
        (counts.bits, counts.counts)
    }

    fn conditional_ready() -> Ready {
        Ready {
            conditional: true,
            ghosts: Ghosts::with_limit(MIN_GHOSTS),
            ..Ready::default()
        }
    }

    fn keyed(kind: u64, id: SessionId, key: u64) -> PackedEvent {
        let mut event = event(kind, id);
        event[3] = key;
        event
    }

    fn arriving(key: u64) -> Option<Arriving> {
        Some(Arriving { key, weight: 1 })
    }

    fn take(ready: &mut Ready, arriving: Option<Arriving>) -> Vec<SessionId> {
        let mut out = Vec::new();
        EventBuffer::take_ready_locked(ready, arriving, 1, &mut out);
        out
    }

    /// An answer of a `ghost-conditional` policy: `first` evicted now, the
    /// rest queued, and its ghost section.
    fn answer(ready: &mut Ready, first: SessionId, ahead: &[SessionId], ghosts: &[u64]) {
        install(ready, &[first], ahead, Arrivals::Stay);
        ready.ghosts.answered(ghosts);
    }

    /// An answer that hands `now` to the table and queues `ahead`; returns
    /// the repeats dropped.
    fn install(
        ready: &mut Ready,
        now: &[SessionId],
        ahead: &[SessionId],
        arrivals: Arrivals,
    ) -> usize {
        let answer: Vec<u64> = now.iter().chain(ahead).map(|id| id.to_bits()).collect();
        ready.install_answer(&answer, now.len(), &mut Vec::new(), arrivals)
    }

    /// An answer's repeats are found as its mask is built (a shared mark
    /// that is another victim is not one), dropped at their later places
    /// and counted, and what is handed and queued is counted exactly.
    #[test]
    fn answer_repeats_are_dropped_and_counted_as_the_mask_is_built() {
        let (a, b, c, twin) = (
            SessionId::new(3, 0),
            SessionId::new(4, 0),
            SessionId::new(5, 0),
            SessionId::new(3 + SLOT_COUNTS as u32, 0),
        );
        let mut ready = Ready::default();
        assert_eq!(install(&mut ready, &[a], &[twin, b, c], Arrivals::Stay), 0);
        assert_eq!(ready.handed, [a]);
        assert_eq!(Vec::from(ready.victims.clone()), [twin, b, c]);
        let mut out = vec![c];
        let answer = [a, b, a, twin, b, c, a].map(SessionId::to_bits);
        assert_eq!(
            ready.install_answer(&answer, 2, &mut out, Arrivals::Stay),
            3
        );
        assert_eq!(out, [c, a, b], "appended, the first two distinct");
        assert_eq!(ready.handed, [a, b]);
        assert_eq!(Vec::from(ready.victims.clone()), [twin, c]);
        assert_eq!((ready.mask.bits, ready.mask.counts), exact_mask(&ready));
        assert_eq!(ready.queued_by_answer, 2);
    }

    /// Victims chosen ahead go to arrivals the policy does not remember; an
    /// arrival whose key is one of its ghosts, or the key of a victim evicted
    /// since its answer, gets none (the policy is asked), and the queue goes.
    #[test]
    fn conditional_victims_go_only_to_strangers() {
        let ids: Vec<SessionId> = (1..=4).map(|slot| SessionId::new(slot, 0)).collect();
        let mut ready = conditional_ready();
        answer(&mut ready, ids[0], &ids[1..], &[0, 70, 71]);
        ready.observe(&keyed(KIND_REMOVED, ids[0], 10));
        assert_eq!(take(&mut ready, arriving(5)), [ids[1]], "a stranger");
        ready.observe(&keyed(KIND_REMOVED, ids[1], 11));
        assert!(ready.ghosts.may_hold(11), "a victim evicted since");
        assert_eq!(take(&mut ready, arriving(71)), [], "a ghost");
        assert!(ready.victims.is_empty(), "the queue went");
        // The next answer covers the evictions it saw: 10 joined its
        // ghosts, 11 did not, 70 left.
        answer(&mut ready, ids[2], &ids[3..], &[0, 10, 70]);
        assert!(ready.ghosts.may_hold(10) && ready.ghosts.may_hold(71));
        assert!(!ready.ghosts.may_hold(11) && !ready.ghosts.may_hold(70));
        ready.observe(&keyed(KIND_REMOVED, ids[2], 12));
        assert_eq!(take(&mut ready, arriving(11)), [ids[3]]);
        assert_eq!(take(&mut ready, None), [], "nothing left");
    }

    /// A session without a key (0) is nobody's ghost: evicting one marks
    /// nothing, and an arrival without one gets victims even while the host
    /// cannot tell the others apart.
    #[test]
    fn conditional_arrivals_without_a_key_are_strangers() {
        let ids: Vec<SessionId> = (1..=4).map(|slot| SessionId::new(slot, 0)).collect();
        let mut ready = conditional_ready();
        answer(&mut ready, ids[0], &ids[1..], &[0, 70]);
        ready.observe(&keyed(KIND_REMOVED, ids[0], NO_KEY));
        assert!(ready.ghosts.evicted.is_empty());
        assert_eq!(take(&mut ready, arriving(NO_KEY)), [ids[1]]);
        ready.ghosts.overflow();
        ready.observe(&keyed(KIND_REMOVED, ids[1], NO_KEY));
        assert_eq!(take(&mut ready, arriving(NO_KEY)), [ids[2]]);
        ready.observe(&keyed(KIND_REMOVED, ids[2], NO_KEY));
        assert_eq!(take(&mut ready, arriving(5)), [], "any other may be one");
    }

    /// Anything else that could change the policy's next choices makes the
    /// host ask again: a session leaving unasked, an event naming a queued
    /// victim (even a request, which a FIFO ignores), a refusal, an arrival
    /// that may be a ghost. Requests for other sessions change nothing.
    #[test]
    fn conditional_victims_go_when_anything_else_happens() {
        let ids: Vec<SessionId> = (1..=4).map(|slot| SessionId::new(slot, 0)).collect();
        let other = SessionId::new(9, 0);
        let voiding = [
            keyed(KIND_REMOVED, other, 0),
            keyed(KIND_ACCESSED, ids[2], 0),
            keyed(KIND_REFUSED, ids[1], 0),
            keyed(KIND_INSERTED, SessionId::new(8, 0), 70),
        ];
        for (i, event) in voiding.iter().enumerate() {
            let mut ready = conditional_ready();
            answer(&mut ready, ids[0], &ids[1..], &[0, 70]);
            ready.observe(&keyed(KIND_ACCESSED, other, 0));
            ready.observe(&keyed(KIND_INSERTED, SessionId::new(7, 0), 5));
            assert_eq!(ready.victims.len(), 3, "event {i}: nothing named yet");
            ready.observe(event);
            assert_eq!(take(&mut ready, arriving(5)), [], "event {i}");
            assert_eq!(ready.mask.bits, exact_mask(&ready).0, "event {i}");
        }
    }

    /// Arrivals follow the listed victims while they are strangers; a ghost
    /// arriving ends the promise.
    #[test]
    fn conditional_arrivals_follow_while_strangers() {
        let ids: Vec<SessionId> = (1..=6).map(|slot| SessionId::new(slot, 0)).collect();
        let mut ready = conditional_ready();
        install(&mut ready, &[ids[0]], &[ids[1]], Arrivals::Follow);
        ready.ghosts.answered(&[0, 70]);
        ready.observe(&keyed(KIND_REMOVED, ids[0], 10));
        ready.observe(&keyed(KIND_INSERTED, ids[2], 5));
        assert_eq!(take(&mut ready, arriving(6)), [ids[1]]);
        ready.observe(&keyed(KIND_REMOVED, ids[1], 11));
        ready.observe(&keyed(KIND_INSERTED, ids[3], 6));
        assert_eq!(take(&mut ready, arriving(7)), [ids[2]], "an arrival");
        ready.observe(&keyed(KIND_REMOVED, ids[2], 5));
        ready.observe(&keyed(KIND_INSERTED, ids[4], 70));
        assert_eq!(take(&mut ready, arriving(8)), [], "a ghost arrived");
    }

    /// Ghosts are kept up to the limit: past it, or past it in one
    /// replacing answer, every arrival may be one until an answer that
    /// replaces them fits.
    #[test]
    fn conditional_ghosts_past_the_limit_stop_the_hand_out() {
        let ids: Vec<SessionId> = (1..=3).map(|slot| SessionId::new(slot, 0)).collect();
        let mut ready = conditional_ready();
        let many: Vec<u64> = (0..=MIN_GHOSTS as u64).collect();
        let mut section = vec![0];
        section.extend(&many);
        answer(&mut ready, ids[0], &ids[1..], &section);
        assert!(ready.ghosts.overflowed && ready.ghosts.keys.is_empty());
        ready.observe(&keyed(KIND_REMOVED, ids[0], 5_000));
        assert_eq!(take(&mut ready, arriving(5_001)), [], "any arrival");
        answer(&mut ready, ids[0], &ids[1..], &[0, 4, 5]);
        assert!(ready.ghosts.overflowed, "changes cannot repair it");
        answer(&mut ready, ids[0], &ids[1..], &[GHOSTS_REPLACED, 4, 5]);
        assert!(!ready.ghosts.overflowed);
        assert!(ready.ghosts.may_hold(4) && ready.ghosts.may_hold(5));
        ready.observe(&keyed(KIND_REMOVED, ids[0], 6));
        assert_eq!(take(&mut ready, arriving(7)), [ids[1]]);
    }

    /// Random answers (changes or replacements, past the limit too),
    /// evictions and forgetting: `may_hold` says exactly what a plain set
    /// of the ghosts and a list of the keys evicted since say, for keys that
    /// share bits of the evicted filter, and never for the key of nobody.
    #[test]
    fn ghosts_answer_may_hold_exactly_as_a_set_and_a_list() {
        let mut rng = SmallRng::seed_from_u64(5);
        let limit = 24;
        let mut ghosts = Ghosts::with_limit(limit);
        let (mut set, mut evicted, mut overflowed) = (HashSet::new(), Vec::new(), false);
        // 600 keys over the filter's 256 bits: many share one.
        let key = |rng: &mut SmallRng| rng.random_range(0..600u64);
        // Asked again, and named by answers, often: a stranger's answer is
        // kept until the ghosts change.
        let mut last_asked = NO_KEY;
        for step in 0..50_000 {
            match rng.random_range(0..10) {
                0 | 1 => {
                    let replaced = rng.random_range(0..8) == 0;
                    let count = rng.random_range(0..if replaced { 30 } else { 6 });
                    let mut keys: Vec<u64> = (0..count)
                        .map(|_| key(&mut rng))
                        .filter(|&k| k != NO_KEY)
                        .collect();
                    if last_asked != NO_KEY && rng.random_bool(0.5) {
                        keys.push(last_asked);
                    }
                    let mut section = vec![if replaced { GHOSTS_REPLACED } else { 0 }];
                    section.extend(&keys);
                    ghosts.answered(&section);
                    evicted.clear();
                    if replaced {
                        set = keys.iter().copied().collect();
                        overflowed = set.len() > limit || keys.len() > limit;
                    } else if !overflowed {
                        for k in keys {
                            if !set.remove(&k) {
                                set.insert(k);
                            }
                        }
                        overflowed = set.len() > limit;
                    }
                    if overflowed {
                        set.clear();
                    }
                }
                2..=4 => {
                    let k = key(&mut rng);
                    ghosts.evicted(k);
                    if k != NO_KEY && !overflowed {
                        evicted.push(k);
                    }
                }
                5 => {
                    ghosts.forget_evictions();
                    evicted.clear();
                }
                _ => {
                    let k = if rng.random_bool(0.5) {
                        last_asked
                    } else {
                        key(&mut rng)
                    };
                    last_asked = k;
                    let expected =
                        k != NO_KEY && (overflowed || set.contains(&k) || evicted.contains(&k));
                    assert_eq!(ghosts.may_hold(k), expected, "step {step}: key {k}");
                }
            }
            assert_eq!(ghosts.overflowed, overflowed, "step {step}");
        }
    }

    /// A victim's mark goes when the victim does (unless another victim
    /// shares it), so the session that takes an evicted victim's slot is not
    /// checked against the queue on each of its events.
    #[test]
    fn victim_mask_lets_a_victim_go_with_its_last_holder() {
        let mut ready = Ready::default();
        let (a, b, twin) = (
            SessionId::new(5, 0),
            SessionId::new(6, 0),
            SessionId::new(5 + SLOT_COUNTS as u32, 0),
        );
        install(&mut ready, &[], &[a, b, twin], Arrivals::Stay);
        let mut out = Vec::new();
        EventBuffer::take_ready_locked(&mut ready, None, 1, &mut out);
        assert_eq!(out, vec![a]);
        ready.observe(&event(KIND_REMOVED, a));
        let successor = SessionId::new(5, 1);
        assert!(ready.mask.contains(successor), "`twin` still counts");
        ready.observe(&event(KIND_REMOVED, twin));
        assert!(!ready.mask.contains(successor));
        EventBuffer::take_ready_locked(&mut ready, None, 1, &mut out);
        assert_eq!(out, vec![a, b]);
        // The next hand replaces `b`, which the table did not report unused.
        ready.hand_counted(&[], false);
        assert!(!ready.mask.contains(b));
        assert_eq!(ready.mask.bits, [0; SLOT_COUNTS / 64]);
    }

    /// A count that reached 255 cannot be taken down one victim at a time,
    /// so it may outlast the victims it counted: the mask is then reset
    /// whole, when a new answer comes and when the queue goes, and counts
    /// exactly again.
    #[test]
    fn victim_mask_with_a_count_at_255_is_reset_whole() {
        let mut ready = Ready::default();
        let crowd = |generation| -> Vec<SessionId> {
            (0..300)
                .map(|k| SessionId::new(7 + k * SLOT_COUNTS as u32, generation))
                .collect()
        };
        let exact = |ready: &Ready| (ready.mask.bits, ready.mask.counts) == exact_mask(ready);
        install(&mut ready, &[], &crowd(0), Arrivals::Stay);
        assert!(ready.mask.saturated && exact(&ready));
        for id in crowd(0) {
            ready.observe(&event(KIND_REMOVED, id));
        }
        assert!(ready.victims.is_empty());
        assert!(ready.mask.contains(crowd(0)[0]), "the count stays at 255");
        let (b, c) = (SessionId::new(8, 0), SessionId::new(9, 0));
        install(&mut ready, &[b], &[c], Arrivals::Stay);
        assert!(exact(&ready) && !ready.mask.saturated);
        install(&mut ready, &[], &crowd(1), Arrivals::Stay);
        for &id in &crowd(1)[1..] {
            ready.observe(&event(KIND_REMOVED, id));
        }
        // A refusal ends the promise: the queue goes.
        ready.observe(&event(KIND_REFUSED, crowd(1)[0]));
        assert!(ready.victims.is_empty());
        assert!(exact(&ready) && !ready.mask.saturated);
    }

    /// Random installs, hands, give-backs and events over a few slots (so
    /// marks are shared): after every step the mask counts exactly the
    /// victims still queued or handed.
    #[test]
    fn victim_mask_stays_exact_under_any_sequence() {
        for conditional in [false, true] {
            victim_mask_stays_exact(conditional);
        }
    }

    fn victim_mask_stays_exact(conditional: bool) {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut ready = Ready {
            conditional,
            ghosts: Ghosts::with_limit(MIN_GHOSTS),
            ..Ready::default()
        };
        let id = |rng: &mut SmallRng| {
            let slot = rng.random_range(0..6) + SLOT_COUNTS as u32 * rng.random_range(0..2);
            SessionId::new(slot, rng.random_range(0..2))
        };
        for step in 0..20_000 {
            match rng.random_range(0..10) {
                0 => {
                    let now: Vec<SessionId> =
                        (0..rng.random_range(0..2)).map(|_| id(&mut rng)).collect();
                    let ahead: Vec<SessionId> =
                        (0..rng.random_range(0..6)).map(|_| id(&mut rng)).collect();
                    let arrivals = [
                        Arrivals::Stay,
                        Arrivals::Follow,
                        Arrivals::FollowWhileQueued,
                    ][rng.random_range(0..3)];
                    install(&mut ready, &now, &ahead, arrivals);
                    let ghosts: Vec<u64> = (0..rng.random_range(0..4))
                        .map(|_| rng.random_range(0..4))
                        .collect();
                    ready.ghosts.answered(&ghosts);
                }
                1 | 2 => {
                    let mut out = Vec::new();
                    let arriving = Some(Arriving {
                        key: rng.random_range(0..8),
                        weight: 1,
                    });
                    let count = rng.random_range(0..3);
                    EventBuffer::take_ready_locked(&mut ready, arriving, count, &mut out);
                }
                3 => {
                    let handed = ready.handed.clone();
                    let unused = &handed[rng.random_range(0..=handed.len())..];
                    ready.give_back(unused);
                }
                _ => {
                    let kind = [KIND_INSERTED, KIND_ACCESSED, KIND_REMOVED, KIND_REFUSED]
                        [rng.random_range(0..4)];
                    let mut event = event(kind, id(&mut rng));
                    event[3] = rng.random_range(0..8);
                    ready.observe(&event);
                }
            }
            assert_eq!(
                (ready.mask.bits, ready.mask.counts),
                exact_mask(&ready),
                "after step {step}"
            );
        }
    }
}
