//! Absolute deadlines (max age) in a min-heap with lazy deletion.
//!
//! Removing a session does not search the heap; its entry goes stale and is
//! skipped when it surfaces. Stale entries are bounded: when they outnumber the
//! live ones (plus slack), the heap is rebuilt from its live entries, so its size
//! stays within about twice the live count and each expiry costs O(log n).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{Micros, SessionId};

const COMPACTION_SLACK: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct DeadlineHeap {
    heap: BinaryHeap<Reverse<(Micros, SessionId)>>,
    live: usize,
}

impl DeadlineHeap {
    pub fn push(&mut self, deadline: Micros, id: SessionId) {
        self.heap.push(Reverse((deadline, id)));
        self.live += 1;
    }

    /// Marks one entry as stale (its session left the table by another route).
    pub fn forget_one(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Pops the earliest live entry whose deadline has passed, dropping stale
    /// entries on the way; `is_live` says whether the session still has that deadline.
    pub fn pop_due(
        &mut self,
        now: Micros,
        mut is_live: impl FnMut(SessionId, Micros) -> bool,
    ) -> Option<SessionId> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if is_live(id, deadline) {
                self.live -= 1;
                return Some(id);
            }
        }
        None
    }

    /// Rebuilds the heap from its live entries once stale ones dominate.
    pub fn compact_if_needed(&mut self, mut is_live: impl FnMut(SessionId, Micros) -> bool) {
        if self.heap.len() > 2 * self.live + COMPACTION_SLACK {
            self.heap
                .retain(|&Reverse((deadline, id))| is_live(id, deadline));
            self.live = self.heap.len();
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn stale(&self) -> usize {
        self.heap.len().saturating_sub(self.live)
    }
}
