//! Soonest to expire: the session the table would expire first goes first.
//!
//! A session expires at the earlier of `last request + idle timeout` and
//! `creation + max age`, the table's own bounds as `create` reports them
//! (either absent when the table has none). Among equal expiry times the one
//! whose time was fixed first goes (its last request, or its creation when max
//! age binds). With no bound at all every session is "never", so the order is
//! the request order. With only an idle timeout this is exactly LRU, with only
//! a max age exactly FIFO; with both it evicts what the table's cleanup would
//! remove next anyway, so an eviction costs the least remaining session time.
//!
//! No config: the bounds are the table's, so the policy cannot disagree with
//! the expiry it anticipates.
//!
//! State: two orders through the session slots, one by idle expiry (a request
//! moves a session to its end) and one by age expiry (fixed at creation). The
//! soonest to expire is the first of one or the other: whichever first entry
//! expires sooner by its own binding bound. An order that cannot decide is
//! not kept: the age order without a max age, the idle order when a max age
//! is the only bound. Event times from the host only grow, so a session is
//! placed at an order's end in O(1); an out-of-order time walks back to its
//! place, and the order is still exact.
//!
//! `stable-order`: with one bound or none, the victims after the first are
//! that order's next sessions. An arrival goes to the end of both orders,
//! since event times from the host only grow; a request names its session.
//! With both bounds a new session's idle expiry can come before an older
//! one's max age, so the answer is the first victim alone. (Should a host's
//! times go back, a listed session may no longer come first; the table
//! evicting it is then taken as the table's own choice.) The table's
//! protocol (re-arrivals, pinned refusals, planned steps) is
//! `shadowcat-policy-sim`'s.
//!
//! Costs: O(1) per event and per eviction, no hashing.

use shadowcat_policy_sdk::{Config, NO_SLOT, SlotMap, Table, Traits, export_policy, slot};
use shadowcat_policy_sim::{OnTable, Simulated};

#[derive(Clone, Copy, Debug, Default)]
struct Links {
    /// Toward the soonest to expire.
    prev: u32,
    next: u32,
}

/// `repr(C)`, in this order: a request reads its session's idle links and
/// times and its neighbours' idle links, which then lie in the slot's first 40
/// bytes beside its id (the SDK's `SlotMap` puts the id first), rather than at
/// both ends of its 64.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Entry {
    idle: Links,
    last_access: u64,
    access_seq: u64,
    age: Links,
    created: u64,
    created_seq: u64,
}

/// [`Ttl::idle_key`], for a caller that holds the entry mutably.
fn idle_key(idle_timeout: u64, e: &Entry) -> (u64, u64) {
    let at = match idle_timeout {
        0 => u64::MAX,
        t => e.last_access.saturating_add(t),
    };
    (at, e.access_seq)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Idle,
    Age,
}

#[derive(Clone, Copy, Debug)]
struct Ends {
    first: u32,
    last: u32,
}

const EMPTY: Ends = Ends {
    first: NO_SLOT,
    last: NO_SLOT,
};

pub struct Ttl {
    /// 0: no such bound.
    idle_timeout: u64,
    max_age: u64,
    seq: u64,
    entries: SlotMap<Entry>,
    idle: Ends,
    age: Ends,
}

impl Ttl {
    /// Both in microseconds; 0: no such bound.
    pub fn new(idle_timeout: u64, max_age: u64) -> Self {
        Self {
            idle_timeout,
            max_age,
            seq: 0,
            entries: SlotMap::new(),
            idle: EMPTY,
            age: EMPTY,
        }
    }

    /// When the session expires by its idle timeout, with its tie-breaker.
    fn idle_key(&self, e: &Entry) -> (u64, u64) {
        idle_key(self.idle_timeout, e)
    }

    /// When the session expires by its max age, with its tie-breaker.
    fn age_key(&self, e: &Entry) -> (u64, u64) {
        let at = match self.max_age {
            0 => u64::MAX,
            t => e.created.saturating_add(t),
        };
        (at, e.created_seq)
    }

    /// When the session expires, by whichever bound comes first.
    fn expiry(&self, e: &Entry) -> (u64, u64) {
        let (idle, age) = (self.idle_key(e), self.age_key(e));
        if idle.0 <= age.0 { idle } else { age }
    }

    fn key(&self, order: Order, e: &Entry) -> (u64, u64) {
        match order {
            Order::Idle => self.idle_key(e),
            Order::Age => self.age_key(e),
        }
    }

    fn ends(&mut self, order: Order) -> &mut Ends {
        match order {
            Order::Idle => &mut self.idle,
            Order::Age => &mut self.age,
        }
    }

    fn links(&mut self, order: Order, s: u32) -> Option<&mut Links> {
        let (_, e) = self.entries.at_mut(s)?;
        Some(match order {
            Order::Idle => &mut e.idle,
            Order::Age => &mut e.age,
        })
    }

    fn entry(&self, s: u32) -> Option<&Entry> {
        self.entries.at(s).map(|(_, e)| e)
    }

    /// Whether `order` can decide anything: without a max age every age
    /// expiry is "never" and never comes first, and with a max age alone
    /// every idle expiry is. An order that cannot decide is not kept.
    fn keeps(&self, order: Order) -> bool {
        match order {
            Order::Idle => self.idle_timeout != 0 || self.max_age == 0,
            Order::Age => self.max_age != 0,
        }
    }

    fn unlink(&mut self, order: Order, s: u32) {
        if !self.keeps(order) {
            return;
        }
        let Some(&mut Links { prev, next }) = self.links(order, s) else {
            return;
        };
        match prev {
            NO_SLOT => self.ends(order).first = next,
            p => {
                if let Some(l) = self.links(order, p) {
                    l.next = next;
                }
            }
        }
        match next {
            NO_SLOT => self.ends(order).last = prev,
            n => {
                if let Some(l) = self.links(order, n) {
                    l.prev = prev;
                }
            }
        }
    }

    /// Links slot `s` (stored, unlinked) into `order` at its place, found
    /// from the end: at once when times only grow.
    fn link(&mut self, order: Order, s: u32) {
        if !self.keeps(order) {
            return;
        }
        let Some(key) = self.entry(s).map(|e| self.key(order, e)) else {
            return;
        };
        let mut after = self.ends(order).last;
        while let Some(e) = self.entry(after) {
            if self.key(order, e) <= key {
                break;
            }
            after = match order {
                Order::Idle => e.idle.prev,
                Order::Age => e.age.prev,
            };
        }
        let next = match after {
            // Where times only grow: no neighbour to look up behind it.
            a if a == self.ends(order).last => NO_SLOT,
            NO_SLOT => self.ends(order).first,
            a => self.links(order, a).map_or(NO_SLOT, |l| l.next),
        };
        if let Some(l) = self.links(order, s) {
            *l = Links { prev: after, next };
        }
        match after {
            NO_SLOT => self.ends(order).first = s,
            a => {
                if let Some(l) = self.links(order, a) {
                    l.next = s;
                }
            }
        }
        match next {
            NO_SLOT => self.ends(order).last = s,
            n => {
                if let Some(l) = self.links(order, n) {
                    l.prev = s;
                }
            }
        }
    }

    fn drop_slot(&mut self, s: u32) {
        self.unlink(Order::Idle, s);
        self.unlink(Order::Age, s);
    }
}

impl Simulated for Ttl {
    const NAME: &'static str = "ttl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const TRAITS: Traits = Traits::STABLE_ORDER;

    fn create(table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        Ok(Self::new(
            table.idle_timeout.unwrap_or(0),
            table.max_age.unwrap_or(0),
        ))
    }

    fn admit(&mut self, id: u64, _key: u64, time: u64, _evicted: &mut Vec<u64>) {
        let s = slot(id);
        if self.entries.at(s).is_some() {
            self.drop_slot(s);
        }
        self.seq += 1;
        let entry = Entry {
            created: time,
            created_seq: self.seq,
            last_access: time,
            access_seq: self.seq,
            idle: Links::default(),
            age: Links::default(),
        };
        // Untracked only without memory for the slot; the host then chooses.
        if self.entries.insert(id, entry).is_ok() {
            self.link(Order::Idle, s);
            self.link(Order::Age, s);
        }
    }

    #[inline]
    fn hit(&mut self, id: u64, time: u64, _evicted: &mut Vec<u64>) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        self.seq += 1;
        e.last_access = time;
        e.access_seq = self.seq;
        let Links { prev, next } = e.idle;
        let key = idle_key(self.idle_timeout, e);
        let s = slot(id);
        if !self.keeps(Order::Idle) {
            return;
        }
        let last = self.idle.last;
        let goes_last = match self.entry(if s == last { prev } else { last }) {
            Some(before) => self.idle_key(before) <= key,
            None => true,
        };
        if s == last && goes_last {
            return;
        }
        if !goes_last || next == NO_SLOT {
            // Its time went back: walk to its place.
            self.unlink(Order::Idle, s);
            self.link(Order::Idle, s);
            return;
        }
        // The usual move, as times only grow: out from between its
        // neighbours, in behind the last.
        match prev {
            NO_SLOT => self.idle.first = next,
            p => {
                if let Some(l) = self.links(Order::Idle, p) {
                    l.next = next;
                }
            }
        }
        if let Some(l) = self.links(Order::Idle, next) {
            l.prev = prev;
        }
        if let Some(l) = self.links(Order::Idle, last) {
            l.next = s;
        }
        if let Some(l) = self.links(Order::Idle, s) {
            *l = Links {
                prev: last,
                next: NO_SLOT,
            };
        }
        self.idle.last = s;
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        let first = |s: u32| self.entry(s).map(|e| (self.expiry(e), s));
        let soonest = match (first(self.idle.first), first(self.age.first)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(only) => only,
                None => return,
            },
        };
        let s = soonest.1;
        self.drop_slot(s);
        if let Some((id, _)) = self.entries.at(s) {
            self.entries.remove(id);
            evicted.push(id);
        }
    }

    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        // The one order that decides: with no bound every expiry is "never"
        // and requests order them, as in the idle order.
        let order = match (self.idle_timeout, self.max_age) {
            (_, 0) => Order::Idle,
            (0, _) => Order::Age,
            _ => return,
        };
        let mut s = match order {
            Order::Idle => self.idle.first,
            Order::Age => self.age.first,
        };
        let mut listed = 0;
        while let Some((id, e)) = self.entries.at(s)
            && listed < count
        {
            out.push(id);
            listed += 1;
            s = match order {
                Order::Idle => e.idle.next,
                Order::Age => e.age.next,
            };
        }
    }

    fn forget(&mut self, id: u64) {
        if self.entries.contains(id) {
            self.drop_slot(slot(id));
            self.entries.remove(id);
        }
    }
}

export_policy!(OnTable<Ttl>);

#[cfg(test)]
mod tests;
