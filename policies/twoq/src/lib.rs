//! 2Q, the full version (Johnson and Shasha, "2Q: a low overhead high
//! performance buffer management replacement algorithm", VLDB'94), as
//! libCacheSim defines it (`twoq`, TwoQ.c), so its miss counts compare with
//! libCacheSim's figures.
//!
//! Ain is a FIFO of first-time sessions, Am an LRU of returning ones, Aout a
//! FIFO of the stable keys of sessions evicted from Ain (the ghost), so a
//! client that returns under a new session id is recognised.
//!
//! - A request in Ain changes nothing; in Am it moves to the MRU end.
//! - An arrival whose key is in Aout leaves it and enters Am (first evicting
//!   Am's LRU while Am holds Km or more: libCacheSim's bound, which a full
//!   table never reaches but one that lost sessions to expiry can); any other
//!   enters Ain.
//! - Eviction: while Ain holds more than Kin, its tail goes and its key
//!   enters Aout (trimmed from its tail); otherwise Am's LRU goes, leaving no
//!   ghost (Ain's tail if Am is empty).
//!
//! Config (sizes are the capacity times the ratio, truncated):
//! - `ain-ratio` (0 to 1, default 0.25): Kin; Km is the rest. The paper
//!   recommends Kin at 25% of the page slots.
//! - `aout-ratio` (0 or more, default 0.5): Kout, keys Aout remembers. The
//!   paper recommends 50% of the page slots.
//!
//! The next victims depend on the arriving session's Aout lookup (a ghost
//! goes to Am, anyone else to Ain, whose length chooses between the queues),
//! so the order is `ghost-conditional` rather than stable: while the
//! arrivals are strangers, the victims are Am's first `Kin - |Ain| + 1` (if
//! Ain holds Kin or fewer, counting the arrival at hand), then Ain from its
//! tail, then the arrivals in turn; Aout's changes go to the host with each
//! answer, and it asks again whenever an arrival may be in Aout. Around
//! that, the table's protocol (re-arrivals, pinned refusals, an admission
//! that evicts from Am) is `shadowcat-policy-sim`'s. Sessions without a key
//! (0) leave no ghost. Sizes count sessions, so a table bounded in bytes is
//! refused at `create`.
//!
//! Costs: O(1) per event and per eviction; an arrival is one Aout lookup (the
//! only hashing).

use shadowcat_policy_sdk::{
    ARRIVALS, Config, GhostChanges, SlotList, Table, Traits, export_policy,
};
use shadowcat_policy_sim::{GhostList, NO_KEY, OnTable, Simulated, bad_value, fraction};

/// The paper's recommendations, libCacheSim's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub ain_ratio: f64,
    pub aout_ratio: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            ain_ratio: 0.25,
            aout_ratio: 0.5,
        }
    }
}

impl Params {
    fn from_config(config: &Config) -> Result<Self, String> {
        let d = Self::default();
        let params = Self {
            ain_ratio: config.f64_or("ain-ratio", d.ain_ratio)?,
            aout_ratio: config.f64_or("aout-ratio", d.aout_ratio)?,
        };
        if !(0.0..=1.0).contains(&params.ain_ratio) {
            return Err(bad_value("ain-ratio", "0 to 1", params.ain_ratio));
        }
        if params.aout_ratio < 0.0 {
            return Err(bad_value("aout-ratio", "0 or more", params.aout_ratio));
        }
        Ok(params)
    }
}

pub struct TwoQ {
    kin: usize,
    kout: usize,
    km: usize,
    /// Tails (FIFO) or LRU ends at the front; the value is the stable key.
    ain: SlotList<u64>,
    am: SlotList<u64>,
    aout: GhostList,
    /// The arriving session's key was in Aout.
    ghost_hit: bool,
}

impl TwoQ {
    pub fn new(capacity: u64, params: Params) -> Self {
        let kin = fraction(capacity, params.ain_ratio);
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let kout = size(fraction(capacity, params.aout_ratio));
        Self {
            kin: size(kin),
            kout,
            km: size(capacity - kin),
            ain: SlotList::new(),
            am: SlotList::new(),
            aout: {
                let mut aout = GhostList::with_bound(kout);
                aout.track_changes();
                aout
            },
            ghost_hit: false,
        }
    }

    /// |Ain|, |Am|, |Aout|.
    pub fn sizes(&self) -> [usize; 3] {
        [self.ain.len(), self.am.len(), self.aout.len()]
    }
}

impl Simulated for TwoQ {
    const NAME: &'static str = "twoq";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const TRAITS: Traits = Traits::GHOST_CONDITIONAL;

    fn create(table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &["ain-ratio", "aout-ratio"])?;
        let params = Params::from_config(config)?;
        shadowcat_policy_sim::sessions_only(Self::NAME, table)?;
        Ok(Self::new(table.capacity, params))
    }

    fn arrive(&mut self, key: u64) {
        self.ghost_hit = key != NO_KEY && self.aout.remove(key);
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, evicted: &mut Vec<u64>) {
        // Pushes fail only without memory for the slot; the host then chooses.
        if self.ghost_hit {
            while !self.am.is_empty() && self.am.len() + 1 > self.km {
                if let Some((lru, _)) = self.am.pop_front() {
                    evicted.push(lru);
                }
            }
            let _ = self.am.push_back(id, key);
        } else {
            let _ = self.ain.push_back(id, key);
        }
        self.ghost_hit = false;
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.am.move_to_back(id);
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        if self.ain.len() > self.kin {
            if let Some((id, key)) = self.ain.pop_front() {
                if key != NO_KEY && !self.aout.contains(key) {
                    while !self.aout.is_empty() && self.aout.len() + 1 > self.kout {
                        self.aout.pop_oldest();
                    }
                    if self.kout > 0 {
                        self.aout.push_new(key);
                    }
                }
                evicted.push(id);
            }
        } else if let Some((id, _)) = self.am.pop_front().or_else(|| self.ain.pop_front()) {
            evicted.push(id);
        }
    }

    fn forget(&mut self, id: u64) {
        self.ain.remove(id);
        self.am.remove(id);
    }

    /// The steps after the arrival at hand is admitted, each for an arrival
    /// that does not hit Aout (so enters Ain): while Ain holds Kin or
    /// fewer, Am's LRU goes and Ain grows by one; then Ain's tail goes and
    /// its length stays, down to the arrivals. The arrival at hand enters
    /// Ain, or Am if it hit Aout: then nothing if its admission evicts from
    /// Am, and Ain's sessions are not followed by the arrivals (the first
    /// of which, this one, is not in Ain). Nothing past Am's end.
    ///
    /// Planning past a returning client saves the call that would follow
    /// it: over a third of 2Q's calls on the default trace.
    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        if self.ghost_hit && !self.am.is_empty() && self.am.len() + 1 > self.km {
            return;
        }
        let mut ain_len = self.ain.len() + usize::from(!self.ghost_hit);
        let (mut am, mut ain) = (self.am.iter(), self.ain.iter());
        for _ in 0..count {
            if ain_len > self.kin {
                match ain.next() {
                    Some((id, _)) => out.push(id),
                    None => {
                        if !self.ghost_hit {
                            out.push(ARRIVALS);
                        }
                        return;
                    }
                }
            } else {
                match am.next() {
                    Some((id, _)) => out.push(id),
                    None => return,
                }
                ain_len += 1;
            }
        }
    }

    fn next_victim(&self, out: &mut Vec<u64>) {
        let next = if self.ain.len() > self.kin {
            self.ain.front()
        } else {
            self.am.front().or_else(|| self.ain.front())
        };
        out.extend(next.map(|(id, _)| id));
    }

    fn ghost_changes(&mut self, changes: &mut GhostChanges) {
        self.aout.drain_changes(changes);
    }
}

export_policy!(OnTable<TwoQ>);

#[cfg(test)]
mod tests;
