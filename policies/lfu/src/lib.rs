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
//! State: O(1) frequency buckets. Each distinct count held by some session has
//! a bucket; buckets form a list in increasing count, and each bucket lists its
//! sessions least recently touched first, linked through their slots. A touch
//! moves a session from its bucket's list to the tail of the next bucket
//! (created after it if that count is missing); an emptied bucket is unlinked.
//! A session alone at its count, with no bucket at the next, raises its
//! bucket's count instead. Every event is O(1) with no hashing, and victims
//! read from the lowest bucket up, O(count).
//!
//! `stable-order`, with a short list where needed: an arriving session starts
//! at count 1 as the most recent there, so it lands behind every session
//! already at count 1 but ahead of any with a higher count. The answer
//! therefore lists further victims only from the count-1 bucket, whose order
//! no arrival or access of another session changes; when the lowest count is
//! higher it is the first victim alone (good for the eviction at hand). Once
//! the count-1 sessions are listed whole (or there are none), the arrivals
//! come next, in the order they arrive, until one is accessed: the answer
//! ends in `ARRIVALS`, and the host evicts each in turn without asking. In a
//! table where most sessions have been hit at least once, as in a small cache
//! under a skewed load, nearly every eviction is such an arrival.
//!
//! Victims with candidates: known candidates ranked by (count, last touch);
//! candidates the policy has no record of are treated as count 0, so they come
//! first, ordered by the host's last-access word.

use shadowcat_policy_sdk::{
    ARRIVALS, Choice, Config, NO_SLOT, Needs, Policy, RemovalCause, Session, SlotMap, Table,
    Traits, export_policy, pick_lowest, slot,
};

#[derive(Clone, Copy, Debug)]
struct Entry {
    bucket: u32,
    /// Neighbours in the bucket, by slot.
    prev: u32,
    next: u32,
    /// Event sequence number of the last insert or access; unique.
    seq: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    count: u64,
    /// Least and most recently touched sessions, by slot.
    head: u32,
    tail: u32,
    /// Neighbouring buckets (lower and higher counts), by index.
    lower: u32,
    higher: u32,
}

const NONE: u32 = NO_SLOT;

pub struct Lfu {
    entries: SlotMap<Entry>,
    buckets: Vec<Bucket>,
    /// Indices of unused buckets, for reuse.
    spare: Vec<u32>,
    /// The bucket with the lowest count, or NONE.
    lowest: u32,
    seq: u64,
}

impl Lfu {
    fn new() -> Self {
        Self {
            entries: SlotMap::new(),
            buckets: Vec::new(),
            spare: Vec::new(),
            lowest: NONE,
            seq: 0,
        }
    }

    /// A bucket for `count` linked between `lower` and `higher`.
    fn new_bucket(&mut self, count: u64, lower: u32, higher: u32) -> u32 {
        let bucket = Bucket {
            count,
            head: NONE,
            tail: NONE,
            lower,
            higher,
        };
        let index = match self.spare.pop() {
            Some(i) => {
                self.buckets[i as usize] = bucket;
                i
            }
            None => {
                self.buckets.push(bucket);
                (self.buckets.len() - 1) as u32
            }
        };
        match lower {
            NONE => self.lowest = index,
            l => self.buckets[l as usize].higher = index,
        }
        if higher != NONE {
            self.buckets[higher as usize].lower = index;
        }
        index
    }

    fn drop_bucket(&mut self, b: u32) {
        let Bucket { lower, higher, .. } = self.buckets[b as usize];
        match lower {
            NONE => self.lowest = higher,
            l => self.buckets[l as usize].higher = higher,
        }
        if higher != NONE {
            self.buckets[higher as usize].lower = lower;
        }
        self.spare.push(b);
    }

    #[inline]
    fn entry(&mut self, s: u32) -> Option<&mut Entry> {
        self.entries.at_mut(s).map(|(_, e)| e)
    }

    /// Appends slot `s` (tracked, unlinked) to bucket `b`.
    #[inline]
    fn link(&mut self, s: u32, b: u32) {
        let tail = self.buckets[b as usize].tail;
        if let Some(e) = self.entry(s) {
            e.bucket = b;
            e.prev = tail;
            e.next = NONE;
        }
        match tail {
            NONE => self.buckets[b as usize].head = s,
            t => {
                if let Some(e) = self.entry(t) {
                    e.next = s;
                }
            }
        }
        self.buckets[b as usize].tail = s;
    }

    /// Takes slot `s` out of its bucket's list and returns the bucket, which
    /// may be left empty for the caller to drop.
    #[inline]
    fn detach(&mut self, s: u32) -> Option<u32> {
        let &mut Entry {
            bucket, prev, next, ..
        } = self.entry(s)?;
        match prev {
            NONE => self.buckets[bucket as usize].head = next,
            p => {
                if let Some(e) = self.entry(p) {
                    e.next = next;
                }
            }
        }
        match next {
            NONE => self.buckets[bucket as usize].tail = prev,
            n => {
                if let Some(e) = self.entry(n) {
                    e.prev = prev;
                }
            }
        }
        Some(bucket)
    }

    #[inline]
    fn drop_if_empty(&mut self, b: u32) {
        if self.buckets[b as usize].head == NONE {
            self.drop_bucket(b);
        }
    }

    /// Forgets whatever session holds slot `s`.
    fn forget(&mut self, s: u32) {
        if let Some(b) = self.detach(s) {
            self.drop_if_empty(b);
        }
    }

    #[inline(always)]
    fn touch(&mut self, id: u64) {
        self.seq += 1;
        let seq = self.seq;
        let s = slot(id);
        if let Some(e) = self.entries.get_mut(id) {
            e.seq = seq;
            let b = e.bucket;
            let Bucket {
                count,
                higher,
                head,
                tail,
                ..
            } = self.buckets[b as usize];
            let next_count = count.checked_add(1);
            if head == s
                && tail == s
                && let Some(c) = next_count
                && (higher == NONE || self.buckets[higher as usize].count != c)
            {
                // Alone at its count with none at the next: the bucket takes
                // the next count where it stands, the same list a move into a
                // new bucket would leave. Hot sessions of a skewed load each
                // hold a count of their own, so this is their usual touch.
                self.buckets[b as usize].count = c;
                return;
            }
            let target = match next_count {
                // Saturated: it stays at its count as the most recent there.
                None => b,
                Some(c) if higher != NONE && self.buckets[higher as usize].count == c => higher,
                Some(c) => self.new_bucket(c, b, higher),
            };
            // The target is linked in before `b` may be dropped, so the bucket
            // list stays connected.
            self.detach(s);
            self.link(s, target);
            self.drop_if_empty(b);
            return;
        }
        // A stale session's removal was missed: forget it first.
        self.forget(s);
        let entry = Entry {
            bucket: NONE,
            prev: NONE,
            next: NONE,
            seq,
        };
        // Untracked only if its slot cannot be had (memory): the host then
        // fills from its own order.
        if self.entries.insert(id, entry).is_err() {
            return;
        }
        let target = match self.lowest {
            l if l != NONE && self.buckets[l as usize].count == 1 => l,
            l => self.new_bucket(1, NONE, l),
        };
        self.link(s, target);
    }

    /// The next victims, at most `count`: the count-1 bucket's sessions, least
    /// recently touched first, or when no session is at count 1 the first
    /// victim alone (an arrival at count 1 would go ahead of the second).
    /// Either way, once every count-1 session is listed an arrival comes
    /// next, behind them and ahead of every higher count: the answer ends in
    /// [`ARRIVALS`] when there is room for it.
    fn stable_victims(&self, count: usize, out: &mut Vec<u64>) {
        let Some(lowest) = self.buckets.get(self.lowest as usize) else {
            return;
        };
        let limit = if lowest.count == 1 {
            count
        } else {
            count.min(1)
        };
        let mut at = lowest.head;
        for _ in 0..limit {
            let Some((id, e)) = self.entries.at(at) else {
                break;
            };
            out.push(id);
            at = e.next;
        }
        // Room left means the count-1 bucket was listed whole (or is empty).
        if out.len() < count {
            out.push(ARRIVALS);
        }
    }

    /// Tracked ids, next victim first.
    #[cfg(test)]
    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        let mut bucket = self.lowest;
        let mut at = NONE;
        std::iter::from_fn(move || {
            while at == NONE {
                let b = self.buckets.get(bucket as usize)?;
                at = b.head;
                if at == NONE {
                    return None;
                }
                bucket = b.higher;
            }
            let (id, e) = self.entries.at(at)?;
            at = e.next;
            Some(id)
        })
    }
}

impl Policy for Lfu {
    const NAME: &'static str = "lfu";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const NEEDS: Needs = Needs::INSERTED.union(Needs::ACCESSED).union(Needs::REMOVED);
    const TRAITS: Traits = Traits::STABLE_ORDER;

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        Ok(Self::new())
    }

    // The handlers are inlined into the SDK's event loop: a call per event
    // costs a good part of what the handler does.
    #[inline(always)]
    fn on_insert(&mut self, session: &Session) {
        self.touch(session.id);
    }

    #[inline(always)]
    fn on_access(&mut self, session: &Session) {
        self.touch(session.id);
    }

    #[inline(always)]
    fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
        if self.entries.contains(id) {
            self.forget(slot(id));
            self.entries.remove(id);
        }
    }

    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>) {
        if choice.candidates.is_empty() {
            self.stable_victims(count, out);
        } else {
            pick_lowest(
                count,
                choice.candidates,
                |c| match self.entries.get(c.id) {
                    Some(e) => (self.buckets[e.bucket as usize].count, 0, e.seq),
                    None => (0, c.last_access, 0),
                },
                out,
            );
        }
    }
}

export_policy!(Lfu);

#[cfg(test)]
mod tests;
