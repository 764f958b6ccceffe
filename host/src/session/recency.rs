//! The LRU index: a doubly linked list threaded through the table's slots by
//! index, least recently used first.
//!
//! Each slot has exactly one pair of links, so a session is in the index at
//! most once by construction, and moving or removing it touches a few array
//! cells: no hashing, no allocation per session (the links grow with the slot
//! vector, once). That is what makes touching a session and expiring
//! thousands of them cheap; an ordered hash map does the same job with a hash
//! probe and a heap node per operation.

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
    /// Whether the slot is in the list (its links are meaningful).
    linked: bool,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
    linked: false,
};

#[derive(Debug)]
pub(crate) struct Recency {
    links: Vec<Links>,
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for Recency {
    fn default() -> Self {
        Self {
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl Recency {
    /// Appends `slot` as the most recently used. It must not be in the list.
    // Once per session created, in the table's insert: inlined there, with
    // the links' growth (only the table's first sessions grow them) out of
    // line, so that the common case costs no call.
    #[inline]
    pub fn push_back(&mut self, slot: u32) {
        let index = slot as usize;
        if index >= self.links.len() {
            self.grow_to(index);
        }
        debug_assert!(!self.links[index].linked, "slot {slot} linked twice");
        self.links[index] = Links {
            prev: self.tail,
            next: NIL,
            linked: true,
        };
        match self.tail {
            NIL => self.head = slot,
            tail => self.links[tail as usize].next = slot,
        }
        self.tail = slot;
        self.len += 1;
    }

    #[cold]
    #[inline(never)]
    fn grow_to(&mut self, index: usize) {
        self.links.resize(index + 1, UNLINKED);
    }

    /// Takes `slot` out; a slot not in the list is left alone.
    pub fn remove(&mut self, slot: u32) {
        let Some(&Links { prev, next, linked }) = self.links.get(slot as usize) else {
            return;
        };
        if !linked {
            return;
        }
        match prev {
            NIL => self.head = next,
            prev => self.links[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.links[next as usize].prev = prev,
        }
        self.links[slot as usize] = UNLINKED;
        self.len -= 1;
    }

    /// Makes `slot` the most recently used.
    pub fn move_to_back(&mut self, slot: u32) {
        if self.tail != slot {
            self.remove(slot);
            self.push_back(slot);
        }
    }

    /// Whether `slot` is in the list.
    pub fn contains(&self, slot: u32) -> bool {
        self.links
            .get(slot as usize)
            .is_some_and(|links| links.linked)
    }

    /// The least recently used slot.
    pub fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots from the least to the most recently used.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            let slot = at;
            (slot != NIL).then(|| {
                at = self.links[slot as usize].next;
                slot
            })
        })
    }

    /// Slots from the most to the least recently used.
    pub fn iter_rev(&self) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.tail;
        std::iter::from_fn(move || {
            let slot = at;
            (slot != NIL).then(|| {
                at = self.links[slot as usize].prev;
                slot
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn session_recency_list_matches_a_queue(ops in prop::collection::vec((0u8..3, 0u32..24), 1..300)) {
            let mut list = Recency::default();
            let mut model: VecDeque<u32> = VecDeque::new();
            for (op, slot) in ops {
                match op {
                    0 if !model.contains(&slot) => {
                        list.push_back(slot);
                        model.push_back(slot);
                    }
                    1 => {
                        list.remove(slot);
                        model.retain(|&s| s != slot);
                    }
                    2 if model.contains(&slot) => {
                        list.move_to_back(slot);
                        model.retain(|&s| s != slot);
                        model.push_back(slot);
                    }
                    _ => {}
                }
                prop_assert_eq!(list.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(
                    list.iter_rev().collect::<Vec<_>>(),
                    model.iter().rev().copied().collect::<Vec<_>>()
                );
                prop_assert_eq!(list.len(), model.len());
                prop_assert_eq!(list.front(), model.front().copied());
            }
        }
    }
}
