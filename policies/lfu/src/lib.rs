//! Least frequently used: evict the session with the fewest hits while cached,
//! ties broken toward the least recently accessed.
//!
//! Frequency protects sessions that are used steadily from a burst of one-off
//! sessions, which is what LRU gets wrong; the price is that a formerly busy
//! session lingers, since counts are never aged. The semantics follow
//! libCacheSim's LFU so that hit ratios can be compared with its figures.
//!
//! Event semantics:
//! - `inserted`: the session starts at count 1 (a session re-admitted after a
//!   removal starts over). An insert for an id already tracked is counted as an
//!   access, since ids are never reused and it is the same session.
//! - `accessed`: count + 1 and it becomes the most recent at that count. An
//!   access for an unknown id is taken as its insert (count 1): the host's table
//!   is the truth and the policy may have missed it, e.g. after a replay.
//! - `removed` (any cause): forgotten, count and all; unknown ids are ignored.
//!
//! State: a map id -> (count, sequence of last touch) and an ordered set keyed
//! by (count, sequence), so every event is O(log n) and eviction reads the set's
//! front.
//!
//! Victims with candidates: known candidates ranked by (count, last touch);
//! candidates the policy has no record of are treated as count 0, so they come
//! first, ordered by the host's last-access word.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use shadowcat_policy_sdk::{
    Candidate, Config, Needs, Policy, RemovalCause, export_policy, pick_lowest,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    count: u64,
    /// Event sequence number of the last insert or access; unique.
    seq: u64,
}

pub struct Lfu {
    ranks: HashMap<u64, Rank>,
    order: BTreeMap<Rank, u64>,
    seq: u64,
}

impl Lfu {
    fn touch(&mut self, id: u64) {
        self.seq += 1;
        let seq = self.seq;
        let rank = self.ranks.entry(id).or_insert(Rank { count: 0, seq: 0 });
        if rank.count > 0 {
            self.order.remove(rank);
        }
        rank.count = rank.count.saturating_add(1);
        rank.seq = seq;
        self.order.insert(*rank, id);
    }
}

impl Policy for Lfu {
    const NAME: &'static str = "lfu";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const NEEDS: Needs = Needs::INSERTED.union(Needs::ACCESSED).union(Needs::REMOVED);

    fn create(_capacity: u64, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        Ok(Self {
            ranks: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        })
    }

    fn on_insert(&mut self, id: u64, _time: u64, _size: u32) {
        self.touch(id);
    }

    fn on_access(&mut self, id: u64, _time: u64, _size: u32) {
        self.touch(id);
    }

    fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
        if let Some(rank) = self.ranks.remove(&id) {
            self.order.remove(&rank);
        }
    }

    fn victims(&mut self, count: usize, candidates: &[Candidate], out: &mut Vec<u64>) {
        if candidates.is_empty() {
            out.extend(self.order.values().take(count));
        } else {
            pick_lowest(
                count,
                candidates,
                |c| match self.ranks.get(&c.id) {
                    Some(r) => (r.count, 0, r.seq),
                    None => (0, c.last_access, 0),
                },
                out,
            );
        }
    }
}

export_policy!(Lfu);
