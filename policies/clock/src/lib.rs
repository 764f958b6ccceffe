//! CLOCK (FIFO with reinsertion), 1-bit or n-bit, as libCacheSim defines it
//! (`clock`, Clock.c, `-e n-bit-counter=N`), so its miss counts compare with
//! libCacheSim's figures.
//!
//! A session enters at the head with its counter at 0: its bit is *not* set
//! on insertion, so it must be used once to survive a pass of the hand. A
//! request raises the counter, up to 2^bits - 1, without moving the session.
//! To evict, the hand looks at the tail: a non-zero counter is decremented and
//! the session goes back to the head; the first session found at 0 goes.
//!
//! Config:
//! - `bits` (1 to 8, default 1): bits per counter. One reference bit is
//!   Corbató's CLOCK (1968) and libCacheSim's default `n-bit-counter=1`; more
//!   bits let a frequently used session survive several passes.
//!
//! `stable-order`: after the first victim, the next ones are the sessions at
//! 0 from the tail to the head, in that order. No event but one naming such a
//! session changes that: a request raises only its own counter, and an
//! arrival, like a session the hand passes, goes to the head, past them all.
//! The list stops at the head: what the hand sends there comes back after
//! arrivals the list cannot know. The table's protocol (re-arrivals, pinned
//! refusals, planned steps) is `shadowcat-policy-sim`'s.
//!
//! Costs: O(1) per event (a slot-indexed counter); an eviction step is
//! amortised O(1), since each decrement is paid for by an earlier request.

use shadowcat_policy_sdk::{Config, SlotList, Table, Traits, export_policy};
use shadowcat_policy_sim::{OnTable, PLAN_WALK, Simulated, bad_value};

pub struct Clock {
    max: u8,
    /// Tail (next for the hand) at the front, head at the back; the value is
    /// the session's counter.
    queue: SlotList<u8>,
}

impl Clock {
    pub const DEFAULT_BITS: u32 = 1;

    pub fn new(bits: u32) -> Result<Self, String> {
        if !(1..=8).contains(&bits) {
            return Err(bad_value("bits", "1 to 8", bits));
        }
        Ok(Self {
            max: ((1u32 << bits) - 1) as u8,
            queue: SlotList::new(),
        })
    }

    /// A session's counter, for tests.
    pub fn counter(&self, id: u64) -> Option<u8> {
        self.queue.get(id).copied()
    }
}

impl Simulated for Clock {
    const NAME: &'static str = "clock";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const TRAITS: Traits = Traits::STABLE_ORDER;

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &["bits"])?;
        Self::new(config.u32_or("bits", Self::DEFAULT_BITS)?)
    }

    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        // Fails only without memory for the slot; the host then chooses.
        let _ = self.queue.push_back(id, 0);
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if let Some(counter) = self.queue.get_mut(id) {
            *counter = counter.saturating_add(1).min(self.max);
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        while let Some((id, &counter)) = self.queue.front() {
            if counter == 0 {
                self.queue.remove(id);
                evicted.push(id);
                return;
            }
            if let Some(c) = self.queue.move_to_back(id) {
                *c = counter - 1;
            }
        }
    }

    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        let walk = self.queue.iter().take(PLAN_WALK);
        let at_zero = walk.filter(|(_, counter)| **counter == 0);
        out.extend(at_zero.map(|(id, _)| id).take(count));
    }

    fn forget(&mut self, id: u64) {
        self.queue.remove(id);
    }
}

export_policy!(OnTable<Clock>);

#[cfg(test)]
mod tests;
