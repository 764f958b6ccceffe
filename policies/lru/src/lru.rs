//! LRU state: a [`SlotList`] of live sessions, least recently touched first.
//! Inserting and accessing move an entry to the back in O(1) (a slot-indexed
//! relink, no hashing); eviction reads from the front.
//!
//! Event semantics:
//! - `inserted` and `accessed` both mean "touched now": the entry moves to the
//!   back (or is added if unknown, since the host's table is the truth and the
//!   policy may have missed the insert, e.g. after a replay).
//! - `removed` (any cause) forgets the entry; unknown ids are ignored.
//! - Recency is the order of events, not their timestamps, matching a
//!   request-by-request LRU such as libCacheSim's.
//!
//! Victims without candidates: the front of the order, which is stable between
//! events in the sense of `stable-order` (touches go to the back, so events
//! that name none of the first k leave them first, in order). With candidates:
//! the candidates ordered by last touch time (the event time, ties by event
//! order). A candidate the policy has no record of is ranked by the host's
//! last-access word instead, after known ones touched at the same microsecond:
//! the likely reason it is unknown is a touch the host has not flushed to us
//! yet.

use std::num::NonZeroU64;

use shadowcat_policy_sdk::{
    Candidate, Choice, Config, Needs, PREFETCH_BATCH_SIZE, Policy, RemovalCause, Session, SlotList,
    Table, Traits, pick_lowest,
};

#[derive(Clone, Copy, Debug)]
struct Touch {
    time: u64,
    /// Never 0, so that a slot's `Option` needs no tag of its own: 32 bytes
    /// per slot rather than 40, two to a cache line, none across two.
    seq: NonZeroU64,
}

const _: () = assert!(size_of::<Option<Touch>>() == size_of::<Touch>());

pub struct Lru {
    order: SlotList<Touch>,
    seq: NonZeroU64,
}

impl Default for Lru {
    fn default() -> Self {
        Self::new()
    }
}

impl Lru {
    pub fn new() -> Self {
        Self {
            order: SlotList::new(),
            seq: NonZeroU64::MIN,
        }
    }

    #[inline(always)]
    pub fn touch(&mut self, id: u64, time: u64) {
        self.seq = self.seq.saturating_add(1);
        let touch = Touch {
            time,
            seq: self.seq,
        };
        match self.order.move_to_back(id) {
            Some(entry) => *entry = touch,
            // Untracked only if its slot cannot be had (memory): the host then
            // fills from its own order.
            None => _ = self.order.push_back(id, touch),
        }
    }

    #[inline]
    pub fn remove(&mut self, id: u64) {
        self.order.remove(id);
    }

    /// Known ids, least recently used first.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.order.iter().map(|(id, _)| id)
    }

    pub fn pick(&self, count: usize, candidates: &[Candidate], out: &mut Vec<u64>) {
        if candidates.is_empty() {
            out.extend(self.ids().take(count));
        } else {
            pick_lowest(
                count,
                candidates,
                |c| match self.order.get(c.id) {
                    Some(t) => (t.time, false, t.seq.get()),
                    None => (c.last_access, true, 0),
                },
                out,
            );
        }
    }
}

impl Policy for Lru {
    const NAME: &'static str = "lru";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const NEEDS: Needs = Needs::INSERTED.union(Needs::ACCESSED).union(Needs::REMOVED);
    const TRAITS: Traits = Traits::STABLE_ORDER;
    const BATCH_SIZE: u32 = PREFETCH_BATCH_SIZE;

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        Ok(Self::new())
    }

    // Inlined into the SDK's event loop, where a call per event costs more
    // than the relink it makes.
    #[inline(always)]
    fn on_insert(&mut self, session: &Session) {
        self.touch(session.id, session.time);
    }

    #[inline(always)]
    fn on_access(&mut self, session: &Session) {
        self.touch(session.id, session.time);
    }

    fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
        self.remove(id);
    }

    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>) {
        self.pick(count, choice.candidates, out);
    }
}
