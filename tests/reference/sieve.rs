//! SIEVE (libCacheSim `sieve`, Sieve.c; Zhang et al., NSDI'24).
//!
//! A session enters at the head unvisited; a hit marks it visited and does not
//! move it. The hand starts at the tail and walks toward the head, clearing
//! visited marks, wrapping to the tail; the first unvisited session goes, and
//! the hand stays just past it, so the next eviction resumes there.

use std::collections::HashMap;

use super::queue::Queue;
use super::{Policy, PLAN_WALK};

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
    /// hand wraps, behind any arrival), among the next [`PLAN_WALK`].
    fn plan(&self, count: usize, out: &mut Vec<u64>) {
        let mut at = self.hand.or_else(|| self.queue.tail());
        let mut walked = Vec::new();
        while let Some(o) = at.filter(|_| walked.len() < PLAN_WALK) {
            walked.push(o);
            at = self.queue.toward_head(o);
        }
        out.extend(walked.into_iter().filter(|o| !self.visited[o]).take(count));
    }

    fn forget(&mut self, id: u64) {
        if self.hand == Some(id) {
            self.hand = self.queue.toward_head(id);
        }
        self.queue.remove(id);
        self.visited.remove(&id);
    }
}
