//! Soonest to expire: the session whose expiry comes first goes.
//!
//! A session expires at the earlier of `last access + idle timeout` and
//! `creation + max age` (either bound absent when 0). Among equal expiry times
//! the one whose time was fixed first goes (its last access, or its creation
//! when max age binds); with no bound at all every session is "never", so the
//! order is the access order. With only an idle timeout this is exactly LRU,
//! with only a max age exactly FIFO.

use std::collections::{BTreeSet, HashMap};

use super::Policy;

#[derive(Debug, Clone, Copy)]
struct Entry {
    created: u64,
    created_seq: u64,
    last_access: u64,
    access_seq: u64,
}

#[derive(Debug)]
pub struct Ttl {
    idle_timeout: u64,
    max_age: u64,
    seq: u64,
    entries: HashMap<u64, Entry>,
    /// (expiry, sequence of the event that fixed it, id)
    order: BTreeSet<(u64, u64, u64)>,
}

impl Ttl {
    /// Both in microseconds; 0: no such bound.
    pub fn new(idle_timeout: u64, max_age: u64) -> Self {
        Self {
            idle_timeout,
            max_age,
            seq: 0,
            entries: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// When the session expires, and the sequence number that breaks ties.
    fn expiry(&self, e: &Entry) -> (u64, u64) {
        let idle = match self.idle_timeout {
            0 => u64::MAX,
            t => e.last_access.saturating_add(t),
        };
        let age = match self.max_age {
            0 => u64::MAX,
            t => e.created.saturating_add(t),
        };
        if idle <= age {
            (idle, e.access_seq)
        } else {
            (age, e.created_seq)
        }
    }

    fn put(&mut self, id: u64, entry: Entry) {
        if let Some(old) = self.entries.insert(id, entry) {
            let (at, seq) = self.expiry(&old);
            self.order.remove(&(at, seq, id));
        }
        let (at, seq) = self.expiry(&entry);
        self.order.insert((at, seq, id));
    }
}

impl Policy for Ttl {
    fn name(&self) -> String {
        "ttl".into()
    }

    fn admit(&mut self, id: u64, _key: u64, time: u64, _evicted: &mut Vec<u64>) {
        self.seq += 1;
        let entry = Entry {
            created: time,
            created_seq: self.seq,
            last_access: time,
            access_seq: self.seq,
        };
        self.put(id, entry);
    }

    fn hit(&mut self, id: u64, time: u64, _evicted: &mut Vec<u64>) {
        let Some(&old) = self.entries.get(&id) else {
            return;
        };
        self.seq += 1;
        let entry = Entry {
            last_access: time,
            access_seq: self.seq,
            ..old
        };
        self.put(id, entry);
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        if let Some(first) = self.order.pop_first() {
            self.entries.remove(&first.2);
            evicted.push(first.2);
        }
    }

    fn plans(&self) -> bool {
        true
    }

    /// With one bound or none, an arrival expires last (times only grow);
    /// with both, its idle expiry can come before an older session's age,
    /// so nothing is listed.
    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        if self.idle_timeout == 0 || self.max_age == 0 {
            out.extend(self.order.iter().map(|&(_, _, id)| id).take(count));
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some(old) = self.entries.remove(&id) {
            let (at, seq) = self.expiry(&old);
            self.order.remove(&(at, seq, id));
        }
    }
}
