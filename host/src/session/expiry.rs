//! Absolute deadlines (max age) with lazy deletion.
//!
//! A table has one max age, so deadlines are creation time plus a constant and
//! arrive in order: a FIFO holds them, and expiring k sessions costs k pops
//! from its front, O(1) each. A deadline that arrives out of order (a clock
//! set backwards, as a replay of an unsorted trace can) goes to a min-heap
//! instead, so expiry stays exact whatever the clock does.
//!
//! Removing a session does not search either queue; its entry goes stale and
//! is skipped when it surfaces. Stale entries are bounded: when they outnumber
//! the live ones (plus slack), both queues are rebuilt from their live
//! entries, so together they stay within about twice the live count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::{Micros, SessionId};

const COMPACTION_SLACK: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    in_order: VecDeque<(Micros, SessionId)>,
    out_of_order: BinaryHeap<Reverse<(Micros, SessionId)>>,
    live: usize,
}

impl Deadlines {
    pub fn push(&mut self, deadline: Micros, id: SessionId) {
        match self.in_order.back() {
            Some(&(last, _)) if deadline < last => {
                self.out_of_order.push(Reverse((deadline, id)));
            }
            _ => self.in_order.push_back((deadline, id)),
        }
        self.live += 1;
    }

    /// Marks one entry as stale (its session left the table by another route)
    /// and compacts once stale entries dominate; `is_live` says whether a
    /// session is still in the table.
    pub fn forget_one(&mut self, mut is_live: impl FnMut(SessionId) -> bool) {
        self.live = self.live.saturating_sub(1);
        if self.len() > 2 * self.live + COMPACTION_SLACK {
            self.in_order.retain(|&(_, id)| is_live(id));
            self.out_of_order.retain(|&Reverse((_, id))| is_live(id));
            self.live = self.len();
        }
    }

    /// Pops the earliest live entry whose deadline has passed, dropping stale
    /// entries on the way.
    pub fn pop_due(
        &mut self,
        now: Micros,
        mut is_live: impl FnMut(SessionId) -> bool,
    ) -> Option<SessionId> {
        loop {
            let front = self.in_order.front().map(|&(d, _)| d);
            let heap = self.out_of_order.peek().map(|&Reverse((d, _))| d);
            let id = match (front, heap) {
                (Some(f), Some(h)) if h < f && h <= now => self.pop_heap(),
                (_, Some(h)) if front.is_none() && h <= now => self.pop_heap(),
                (Some(f), _) if f <= now => self.in_order.pop_front().map(|(_, id)| id),
                (_, Some(h)) if h <= now => self.pop_heap(),
                _ => return None,
            }?;
            if is_live(id) {
                self.live -= 1;
                return Some(id);
            }
        }
    }

    fn pop_heap(&mut self) -> Option<SessionId> {
        self.out_of_order.pop().map(|Reverse((_, id))| id)
    }

    pub fn len(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    pub fn stale(&self) -> usize {
        self.len().saturating_sub(self.live)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn id(n: u32) -> SessionId {
        SessionId::new(n, 0)
    }

    #[test]
    fn session_deadlines_pop_in_time_order_even_when_pushed_out_of_order() {
        let mut d = Deadlines::default();
        for (deadline, n) in [(10, 1), (20, 2), (5, 3), (30, 4), (15, 5)] {
            d.push(deadline, id(n));
        }
        let live = |_| true;
        assert_eq!(d.pop_due(4, live), None);
        let order: Vec<u32> = std::iter::from_fn(|| d.pop_due(100, live))
            .map(|i| i.slot())
            .collect();
        assert_eq!(order, vec![3, 1, 5, 2, 4]);
    }

    #[test]
    fn session_deadlines_skip_and_compact_stale_entries() {
        let mut d = Deadlines::default();
        let mut live: HashSet<u32> = HashSet::new();
        for n in 0..1_000 {
            d.push(u64::from(n), id(n));
            live.insert(n);
        }
        for n in 0..990 {
            live.remove(&n);
            d.forget_one(|i| live.contains(&i.slot()));
        }
        assert!(
            d.len() <= 2 * 10 + COMPACTION_SLACK,
            "compacted: {}",
            d.len()
        );
        let due: Vec<u32> =
            std::iter::from_fn(|| d.pop_due(u64::MAX, |i| live.contains(&i.slot())))
                .map(|i| i.slot())
                .collect();
        assert_eq!(due, (990..1_000).collect::<Vec<_>>());
        assert_eq!(d.stale(), 0);
    }
}
