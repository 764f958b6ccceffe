//! SIEVE (libCacheSim `sieve`, Sieve.c; Zhang et al., NSDI'24).
//!
//! A session enters at the head unvisited; a hit marks it visited and does not
//! move it. The hand starts at the tail and walks toward the head, clearing
//! visited marks, wrapping to the tail; the first unvisited session goes, and
//! the hand stays just past it, so the next eviction resumes there.

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, ARRIVALS_WHILE_QUEUED, PLAN_WALK};

#[derive(Debug, Default)]
pub struct Sieve {
    queue: Queue,
    visited: HashMap<u64, bool>,
    /// None: start at the tail.
    hand: Option<u64>,
}

impl Sieve {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for Sieve {
    fn name(&self) -> String {
        "sieve".into()
    }

    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.queue.push_head(id);
        self.visited.insert(id, false);
    }

    fn hit(&mut self, id: u64, _time: u64, _evicted: &mut Vec<u64>) {
        if let Some(v) = self.visited.get_mut(&id) {
            *v = true;
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        let Some(mut o) = self.hand.or_else(|| self.queue.tail()) else {
            return;
        };
        while self.visited[&o] {
            self.visited.insert(o, false);
            o = match self.queue.toward_head(o) {
                Some(next) => next,
                None => self.queue.tail().expect("the queue holds o"),
            };
        }
        self.hand = self.queue.toward_head(o);
        self.queue.remove(o);
        self.visited.remove(&o);
        evicted.push(o);
    }

    fn plans(&self) -> bool {
        true
    }

    /// The unvisited sessions from the hand up to the head (beyond it the
    /// hand wraps, behind any arrival), among the next [`PLAN_WALK`]. Past
    /// the head come the arrivals, in order, a requested one passed (its
    /// mark cleared) as the table skips it, until the hand passes the newest
    /// and wraps: [`ARRIVALS_WHILE_QUEUED`] if there is room.
    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        let mut at = self.hand.or_else(|| self.queue.tail());
        let mut walked = Vec::new();
        while let Some(o) = at.filter(|_| walked.len() < PLAN_WALK) {
            walked.push(o);
            at = self.queue.toward_head(o);
        }
        let from = out.len();
        out.extend(walked.into_iter().filter(|o| !self.visited[o]).take(count));
        if at.is_none() && out.len() - from < count {
            out.push(ARRIVALS_WHILE_QUEUED);
        }
    }

    /// The first unvisited session from the hand up to the head, however far.
    fn next_victim(&self) -> Option<u64> {
        let mut at = self.hand.or_else(|| self.queue.tail());
        while let Some(o) = at {
            if !self.visited[&o] {
                return Some(o);
            }
            at = self.queue.toward_head(o);
        }
        None
    }

    fn forget(&mut self, id: u64) {
        if self.hand == Some(id) {
            self.hand = self.queue.toward_head(id);
        }
        self.queue.remove(id);
        self.visited.remove(&id);
    }
}
