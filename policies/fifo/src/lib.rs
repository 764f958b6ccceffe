//! First in, first out: evict the session inserted longest ago, whatever its use.
//!
//! FIFO asks for no `accessed` events, so the host's hot path (a request touching
//! its session) never produces work for it; it is the cheapest policy to run and
//! the usual baseline for the FIFO family (SIEVE, S3-FIFO).
//!
//! Event semantics:
//! - `inserted`: appended at the back. An insert for an id already queued keeps
//!   its original place (ids are never reused, so it is the same session).
//! - `accessed`: not requested; ignored if sent anyway.
//! - `removed` (any cause): forgotten; unknown ids are ignored.
//!
//! State: a slot-indexed list in insertion order; every event is O(1) with no
//! hashing. Victims without candidates: the front of the queue, O(count), and
//! stable between events (`stable-order`: inserts go to the back). With
//! candidates: ordered by insertion time (the event time, ties by event order).
//! A candidate the policy never saw inserted is ranked by the host's
//! last-access word, after known ones at the same microsecond (it was inserted
//! no later than that, and most likely its insert is still in the host's event
//! buffer).

use shadowcat_policy_sdk::{
    Choice, Config, Needs, PREFETCH_BATCH_SIZE, Policy, RemovalCause, Session, SlotList, Table,
    Traits, export_policy, pick_lowest,
};

#[derive(Clone, Copy, Debug)]
struct Inserted {
    time: u64,
    seq: u64,
}

pub struct Fifo {
    queue: SlotList<Inserted>,
    seq: u64,
}

impl Policy for Fifo {
    const NAME: &'static str = "fifo";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const NEEDS: Needs = Needs::INSERTED.union(Needs::REMOVED);
    const TRAITS: Traits = Traits::STABLE_ORDER;
    const BATCH_SIZE: u32 = PREFETCH_BATCH_SIZE;

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        Ok(Self {
            queue: SlotList::new(),
            seq: 0,
        })
    }

    // Inlined into the SDK's event loop, where a call per event costs more
    // than the append it makes.
    #[inline(always)]
    fn on_insert(&mut self, session: &Session) {
        self.seq += 1;
        if !self.queue.contains(session.id) {
            let inserted = Inserted {
                time: session.time,
                seq: self.seq,
            };
            // Untracked only if its slot cannot be had (memory): the host then
            // fills from its own order.
            let _ = self.queue.push_back(session.id, inserted);
        }
    }

    fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
        self.queue.remove(id);
    }

    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>) {
        if choice.candidates.is_empty() {
            out.extend(self.queue.iter().take(count).map(|(id, _)| id));
        } else {
            pick_lowest(
                count,
                choice.candidates,
                |c| match self.queue.get(c.id) {
                    Some(e) => (e.time, false, e.seq),
                    None => (c.last_access, true, 0),
                },
                out,
            );
        }
    }
}

export_policy!(Fifo);

#[cfg(test)]
mod tests;
