//! SIEVE (Zhang et al., "SIEVE is Simpler than LRU", NSDI'24), as libCacheSim
//! defines it (`sieve`, Sieve.c), so its miss counts compare with
//! libCacheSim's figures.
//!
//! A session enters at the head unvisited; a request marks it visited and
//! does not move it. The hand starts at the tail and walks toward the head,
//! clearing visited marks and wrapping from the head to the tail; the first
//! unvisited session goes, and the hand stays just past it, so the next
//! eviction resumes there. New sessions thus wait at the head while the hand
//! sweeps the old ones: one-hit clients leave quickly, used ones stay without
//! being moved on every request.
//!
//! No config: the published algorithm has no parameter.
//!
//! `stable-order`: after the first victim, the next ones are the unvisited
//! sessions from the hand to the head, in that order. No event but one naming
//! such a session changes that: a request marks only its own session, an
//! arrival enters at the head, past them all, and only the hand clears marks.
//! Past the head come the sessions that arrive after the answer, in arrival
//! order, a requested one passed (the table skips it): when the walk reaches
//! the head, the answer ends in `ARRIVALS_WHILE_QUEUED` and the host evicts
//! each arrival in turn without asking. Only while one is left, though: the
//! hand that evicts the newest session wraps to the tail, to marks it has yet
//! to clear, so once the host has used or seen named every victim it queued
//! it stops queueing arrivals and asks. The table's protocol
//! (re-arrivals, pinned refusals, planned steps) is `shadowcat-policy-sim`'s.
//!
//! Costs: O(1) per event; an eviction step is amortised O(1) (each cleared
//! mark was set by a request).

use shadowcat_policy_sdk::{ARRIVALS_WHILE_QUEUED, Config, SlotList, Table, Traits, export_policy};
use shadowcat_policy_sim::{OnTable, PLAN_WALK, Simulated};

#[derive(Default)]
pub struct Sieve {
    /// Tail at the front, head at the back; the value is the visited mark.
    queue: SlotList<bool>,
    /// Where the next eviction starts; `None`: at the tail.
    hand: Option<u64>,
}

impl Sieve {
    pub fn hand(&self) -> Option<u64> {
        self.hand
    }

    /// The session after `id` toward the head.
    fn toward_head(&self, id: u64) -> Option<u64> {
        self.queue.next(id).map(|(next, _)| next)
    }

    fn tail(&self) -> Option<u64> {
        self.queue.front().map(|(id, _)| id)
    }

    /// Where the next eviction starts.
    fn start(&self) -> Option<u64> {
        self.hand
            .filter(|&h| self.queue.contains(h))
            .or_else(|| self.tail())
    }
}

impl Simulated for Sieve {
    const NAME: &'static str = "sieve";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const TRAITS: Traits = Traits::STABLE_ORDER;

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        Ok(Self::default())
    }

    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        // Fails only without memory for the slot; the host then chooses.
        let _ = self.queue.push_back(id, false);
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if let Some(visited) = self.queue.get_mut(id) {
            *visited = true;
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        let Some(mut at) = self.start() else {
            return;
        };
        while let Some(visited) = self.queue.get_mut(at).filter(|v| **v) {
            *visited = false;
            match self.toward_head(at).or_else(|| self.tail()) {
                Some(next) => at = next,
                None => break,
            }
        }
        self.hand = self.toward_head(at);
        self.queue.remove(at);
        evicted.push(at);
    }

    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        let mut listed = 0;
        let mut at = self.start();
        for _ in 0..PLAN_WALK {
            let Some(id) = at.filter(|_| listed < count) else {
                break;
            };
            if self.queue.get(id) == Some(&false) {
                out.push(id);
                listed += 1;
            }
            at = self.toward_head(id);
        }
        if at.is_none() && listed < count {
            out.push(ARRIVALS_WHILE_QUEUED);
        }
    }

    fn next_victim(&self, out: &mut Vec<u64>) {
        let mut at = self.start();
        while let Some(id) = at {
            if self.queue.get(id) == Some(&false) {
                out.push(id);
                return;
            }
            at = self.toward_head(id);
        }
    }

    fn forget(&mut self, id: u64) {
        if self.hand == Some(id) {
            self.hand = self.toward_head(id);
        }
        self.queue.remove(id);
    }
}

export_policy!(OnTable<Sieve>);

#[cfg(test)]
mod tests;
