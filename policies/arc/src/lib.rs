//! ARC, the Adaptive Replacement Cache (Megiddo and Modha, FAST'03), as
//! libCacheSim defines it (`arc`, ARC.c) with unit sizes, so its miss counts
//! compare with libCacheSim's figures.
//!
//! T1 holds sessions seen once, T2 sessions seen again; B1 and B2 are their
//! ghost lists, by the sessions' stable keys, so a client that returns under a
//! new session id is recognised. `p`, the target size of T1, adapts to which
//! ghost list returning clients come from.
//!
//! - A request: to the head of T2.
//! - An arrival whose key is in B1: `p = min(p + max(|B2|/|B1|, 1), C)`, the
//!   ratio taken before the key leaves B1; in B2: `p = max(p - max(|B1|/|B2|,
//!   1), 0)`. Either way the session enters at the head of T2, otherwise of T1.
//! - Eviction for a ghost arrival: REPLACE. Otherwise (the paper's case IV):
//!   if `|T1| + |B1| + 1 > C`, drop the B1 tail and REPLACE, or with B1 empty
//!   evict the T1 tail leaving no ghost; else drop the B2 tail if the four
//!   lists hold at least 2C and B2 is not empty, then REPLACE.
//! - REPLACE: if T1 is not empty and (`|T1| > p`, or `|T1| == p` for an
//!   arrival from B2), or T2 is empty, the T1 tail moves to the head of B1;
//!   otherwise the T2 tail moves to the head of B2.
//!
//! No config: ARC's point is that it has no parameter to tune; `p` starts at
//! 0 as in the paper. Sessions without a key (0) leave no ghost. Sizes count
//! sessions, so a table bounded in bytes is refused at `create`.
//!
//! Eviction changes `p`-driven state in `victims`, so `stable-order` is not
//! declared. Around that, the table's protocol (the arrival's ghost lookup
//! before its victims, re-arrivals, pinned refusals) is
//! `shadowcat-policy-sim`'s.
//!
//! Costs: O(1) per event (slot-indexed lists); an arrival is one or two ghost
//! lookups (the only hashing), an eviction O(1).

use shadowcat_policy_sdk::{Config, SlotList, Table, export_policy};
use shadowcat_policy_sim::{GhostList, NO_KEY, OnTable, Simulated};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ghost {
    None,
    B1,
    B2,
}

pub struct Arc {
    capacity: usize,
    p: f64,
    /// Tails at the front, heads at the back; the value is the stable key.
    t1: SlotList<u64>,
    t2: SlotList<u64>,
    b1: GhostList,
    b2: GhostList,
    /// Where the arriving session's key was found.
    arrival: Ghost,
}

impl Arc {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            p: 0.0,
            t1: SlotList::new(),
            t2: SlotList::new(),
            // |T1| + |B1| and |B2| stay within C and 2C in a full table.
            b1: GhostList::with_bound(capacity),
            b2: GhostList::with_bound(capacity * 2),
            arrival: Ghost::None,
        }
    }

    /// The target size of T1.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// |T1|, |T2|, |B1|, |B2|.
    pub fn sizes(&self) -> [usize; 4] {
        [self.t1.len(), self.t2.len(), self.b1.len(), self.b2.len()]
    }

    fn replace(&mut self, in_b2: bool, evicted: &mut Vec<u64>) {
        let t1 = self.t1.len() as f64;
        let from_t1 =
            (!self.t1.is_empty() && (t1 > self.p || (t1 == self.p && in_b2))) || self.t2.is_empty();
        let (list, ghosts) = if from_t1 {
            (&mut self.t1, &mut self.b1)
        } else {
            (&mut self.t2, &mut self.b2)
        };
        if let Some((id, key)) = list.pop_front() {
            if key != NO_KEY {
                ghosts.push_newest(key);
            }
            evicted.push(id);
        }
    }
}

impl Simulated for Arc {
    const NAME: &'static str = "arc";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        shadowcat_policy_sim::sessions_only(Self::NAME, table)?;
        let capacity = usize::try_from(table.capacity).unwrap_or(usize::MAX);
        Ok(Self::new(capacity))
    }

    fn arrive(&mut self, key: u64) {
        self.arrival = Ghost::None;
        if key == NO_KEY {
            return;
        }
        let (b1, b2) = (self.b1.len() as f64, self.b2.len() as f64);
        if self.b1.remove(key) {
            self.p = (self.p + (b2 / b1).max(1.0)).min(self.capacity as f64);
            self.arrival = Ghost::B1;
        } else if self.b2.remove(key) {
            self.p = (self.p - (b1 / b2).max(1.0)).max(0.0);
            self.arrival = Ghost::B2;
        }
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        let list = match self.arrival {
            Ghost::None => &mut self.t1,
            Ghost::B1 | Ghost::B2 => &mut self.t2,
        };
        // Fails only without memory for the slot; the host then chooses.
        let _ = list.push_back(id, key);
        self.arrival = Ghost::None;
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if let Some(key) = self.t1.remove(id) {
            let _ = self.t2.push_back(id, key);
        } else {
            self.t2.move_to_back(id);
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        let c = self.capacity;
        match self.arrival {
            Ghost::B1 => self.replace(false, evicted),
            Ghost::B2 => self.replace(true, evicted),
            Ghost::None if self.t1.len() + self.b1.len() + 1 > c => {
                if self.b1.pop_oldest().is_some() {
                    self.replace(false, evicted);
                } else if let Some((id, _)) = self.t1.pop_front() {
                    evicted.push(id);
                } else {
                    // Only when the table holds more than C sessions.
                    self.replace(false, evicted);
                }
            }
            Ghost::None => {
                let all = self.t1.len() + self.b1.len() + self.t2.len() + self.b2.len();
                if all >= 2 * c && !self.b2.is_empty() {
                    self.b2.pop_oldest();
                }
                self.replace(false, evicted);
            }
        }
    }

    fn forget(&mut self, id: u64) {
        self.t1.remove(id);
        self.t2.remove(id);
    }
}

export_policy!(OnTable<Arc>);

#[cfg(test)]
mod tests;
