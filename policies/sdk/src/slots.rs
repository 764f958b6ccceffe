//! Dense per-session state. A session id's low 32 bits are a slot index that no
//! two live sessions share and that the host reuses after a removal, so a
//! policy's state fits in vectors indexed by slot: no hashing on the event path,
//! and memory proportional to the largest number of sessions live at once.

use std::iter::FusedIterator;

/// The dense slot index of a session id (its low 32 bits). Live sessions never
/// share one; the high 32 bits (the generation) tell a slot's successive
/// sessions apart.
#[inline]
pub const fn slot(id: u64) -> u32 {
    id as u32
}

/// Never a live slot: the host would need 2^32 sessions at once to hand it out.
/// [`SlotMap`] refuses it, so it can serve as a null link.
pub const NO_SLOT: u32 = u32::MAX;

/// `repr(C)` keeps the id in front of the value: a policy that links its
/// sessions reads a neighbour's id and links together, and with the id at the
/// far end of a large value that read would span two cache lines.
#[derive(Clone, Debug)]
#[repr(C)]
struct Entry<T> {
    id: u64,
    value: Option<T>,
}

/// A map from session id to `T`, stored in a vector indexed by [`slot`]. Lookups
/// compare the whole id, so a stale id (an earlier session of the same slot)
/// finds nothing.
#[derive(Clone, Debug)]
pub struct SlotMap<T> {
    entries: Vec<Entry<T>>,
    len: usize,
}

impl<T> Default for SlotMap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SlotMap<T> {
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
            len: 0,
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots the map has room for without growing.
    pub fn slots(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    #[inline]
    pub fn get(&self, id: u64) -> Option<&T> {
        match self.entries.get(slot(id) as usize) {
            Some(Entry { id: held, value }) if *held == id => value.as_ref(),
            _ => None,
        }
    }

    #[inline]
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        match self.entries.get_mut(slot(id) as usize) {
            Some(Entry { id: held, value }) if *held == id => value.as_mut(),
            _ => None,
        }
    }

    /// Stores `value` for `id` and returns what its slot held before: the same
    /// id's previous value, or a stale session's entry (its `removed` event was
    /// missed; live sessions never share a slot) for the caller to unlink.
    ///
    /// `Err(value)` when the slot cannot be stored: [`NO_SLOT`], or memory for a
    /// slot far beyond the others cannot be had. The policy then simply does not
    /// track the session (the host fills any shortfall), rather than trapping.
    #[inline(always)]
    pub fn insert(&mut self, id: u64, value: T) -> Result<Option<(u64, T)>, T> {
        let index = slot(id) as usize;
        // NO_SLOT is never below the length: no vector holds 2^32 entries.
        if index >= self.entries.len() && !self.grow_to(index) {
            return Err(value);
        }
        let entry = &mut self.entries[index];
        let old_id = std::mem::replace(&mut entry.id, id);
        let old = entry.value.replace(value).map(|v| (old_id, v));
        if old.is_none() {
            self.len += 1;
        }
        Ok(old)
    }

    /// Makes room for `index`; false for [`NO_SLOT`] or memory that cannot be
    /// had. Out of line: slots are reused, so the table's first sessions are
    /// the only ones that grow it, and the inlined loop would weigh on every
    /// insert.
    #[cold]
    #[inline(never)]
    fn grow_to(&mut self, index: usize) -> bool {
        if index == NO_SLOT as usize
            || self
                .entries
                .try_reserve(index + 1 - self.entries.len())
                .is_err()
        {
            return false;
        }
        self.entries
            .resize_with(index + 1, || Entry { id: 0, value: None });
        true
    }

    /// Removes `id`'s entry; a stale or unknown id removes nothing.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        match self.entries.get_mut(slot(id) as usize) {
            Some(Entry { id: held, value }) if *held == id => {
                let old = value.take();
                if old.is_some() {
                    self.len -= 1;
                }
                old
            }
            _ => None,
        }
    }

    /// The entry in `slot`, whatever its generation.
    #[inline]
    pub fn at(&self, slot: u32) -> Option<(u64, &T)> {
        let entry = self.entries.get(slot as usize)?;
        Some((entry.id, entry.value.as_ref()?))
    }

    #[inline]
    pub fn at_mut(&mut self, slot: u32) -> Option<(u64, &mut T)> {
        let entry = self.entries.get_mut(slot as usize)?;
        Some((entry.id, entry.value.as_mut()?))
    }

    /// Live entries in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> + '_ {
        self.entries
            .iter()
            .filter_map(|e| Some((e.id, e.value.as_ref()?)))
    }

    /// Forgets every entry, keeping the memory.
    pub fn clear(&mut self) {
        for entry in &mut self.entries {
            entry.value = None;
        }
        self.len = 0;
    }
}

#[derive(Clone, Debug)]
struct Node<T> {
    prev: u32,
    next: u32,
    value: T,
}

/// A [`SlotMap`] whose entries are also kept in one order, as an intrusive
/// doubly-linked list through their slots: push to the back, move to the back,
/// remove and walk, each O(1) per step. The shape of LRU, FIFO, and of each
/// queue of CLOCK, SIEVE, 2Q or S3-FIFO.
#[derive(Clone, Debug)]
pub struct SlotList<T> {
    map: SlotMap<Node<T>>,
    head: u32,
    tail: u32,
}

impl<T> Default for SlotList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SlotList<T> {
    pub const fn new() -> Self {
        Self {
            map: SlotMap::new(),
            head: NO_SLOT,
            tail: NO_SLOT,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    #[inline]
    pub fn contains(&self, id: u64) -> bool {
        self.map.contains(id)
    }

    #[inline]
    pub fn get(&self, id: u64) -> Option<&T> {
        self.map.get(id).map(|n| &n.value)
    }

    #[inline]
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.map.get_mut(id).map(|n| &mut n.value)
    }

    /// Puts `id` at the back with `value`. Whatever held its slot is unlinked
    /// first and returned: `id`'s own previous entry, or a stale session's.
    /// `Err(value)` as for [`SlotMap::insert`].
    // Inlined: in an event loop a call costs as much as the append, in the
    // sandbox's prologue and epilogue alone.
    #[inline(always)]
    pub fn push_back(&mut self, id: u64, value: T) -> Result<Option<(u64, T)>, T> {
        let s = slot(id);
        if self.map.at(s).is_some() {
            self.unlink(s);
        }
        let node = Node {
            prev: self.tail,
            next: NO_SLOT,
            value,
        };
        let old = self.map.insert(id, node).map_err(|n| n.value)?;
        self.link_back(s);
        Ok(old.map(|(id, n)| (id, n.value)))
    }

    /// Moves `id` to the back and returns its value; `None` if it is not here.
    #[inline]
    pub fn move_to_back(&mut self, id: u64) -> Option<&mut T> {
        if !self.map.contains(id) {
            return None;
        }
        let s = slot(id);
        if self.tail != s {
            self.unlink(s);
            self.link_back(s);
        }
        self.get_mut(id)
    }

    pub fn remove(&mut self, id: u64) -> Option<T> {
        if !self.map.contains(id) {
            return None;
        }
        self.unlink(slot(id));
        self.map.remove(id).map(|n| n.value)
    }

    pub fn pop_front(&mut self) -> Option<(u64, T)> {
        let (id, _) = self.front()?;
        Some((id, self.remove(id)?))
    }

    pub fn front(&self) -> Option<(u64, &T)> {
        self.entry(self.head)
    }

    pub fn back(&self) -> Option<(u64, &T)> {
        self.entry(self.tail)
    }

    /// The entry after `id`, toward the back.
    pub fn next(&self, id: u64) -> Option<(u64, &T)> {
        self.map.get(id).and_then(|n| self.entry(n.next))
    }

    /// The entry before `id`, toward the front.
    pub fn prev(&self, id: u64) -> Option<(u64, &T)> {
        self.map.get(id).and_then(|n| self.entry(n.prev))
    }

    /// Front to back (`.rev()` for back to front).
    pub fn iter(&self) -> SlotListIter<'_, T> {
        SlotListIter {
            list: self,
            front: self.head,
            back: self.tail,
            left: self.len(),
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.head = NO_SLOT;
        self.tail = NO_SLOT;
    }

    #[inline]
    fn entry(&self, s: u32) -> Option<(u64, &T)> {
        self.map.at(s).map(|(id, n)| (id, &n.value))
    }

    #[inline]
    fn links(&self, s: u32) -> (u32, u32) {
        self.map
            .at(s)
            .map_or((NO_SLOT, NO_SLOT), |(_, n)| (n.prev, n.next))
    }

    #[inline]
    fn set_prev(&mut self, s: u32, prev: u32) {
        if let Some((_, n)) = self.map.at_mut(s) {
            n.prev = prev;
        }
    }

    #[inline]
    fn set_next(&mut self, s: u32, next: u32) {
        if let Some((_, n)) = self.map.at_mut(s) {
            n.next = next;
        }
    }

    /// Takes slot `s` (occupied) out of the order; its own links are left stale.
    fn unlink(&mut self, s: u32) {
        let (prev, next) = self.links(s);
        if prev == NO_SLOT {
            self.head = next;
        } else {
            self.set_next(prev, next);
        }
        if next == NO_SLOT {
            self.tail = prev;
        } else {
            self.set_prev(next, prev);
        }
    }

    /// Appends slot `s` (occupied, unlinked).
    fn link_back(&mut self, s: u32) {
        let tail = self.tail;
        if let Some((_, n)) = self.map.at_mut(s) {
            n.prev = tail;
            n.next = NO_SLOT;
        }
        if tail == NO_SLOT {
            self.head = s;
        } else {
            self.set_next(tail, s);
        }
        self.tail = s;
    }
}

/// Iterator over a [`SlotList`], front to back (`.rev()` for back to front).
pub struct SlotListIter<'a, T> {
    list: &'a SlotList<T>,
    front: u32,
    back: u32,
    left: usize,
}

impl<'a, T> Iterator for SlotListIter<'a, T> {
    type Item = (u64, &'a T);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let (id, node) = self.list.map.at(self.front)?;
        self.front = node.next;
        self.left -= 1;
        Some((id, &node.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> DoubleEndedIterator for SlotListIter<'_, T> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let (id, node) = self.list.map.at(self.back)?;
        self.back = node.prev;
        self.left -= 1;
        Some((id, &node.value))
    }
}

impl<T> ExactSizeIterator for SlotListIter<'_, T> {}
impl<T> FusedIterator for SlotListIter<'_, T> {}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::Entry;

    #[test]
    fn slot_map_entries_hold_the_id_in_front_of_any_value() {
        // Left to the compiler, a 48-byte value goes first and the id last, so
        // a read of the id and the value's first fields spans the whole entry.
        assert_eq!(offset_of!(Entry<[u64; 6]>, id), 0);
        assert_eq!(offset_of!(Entry<(u32, u32)>, id), 0);
        assert_eq!(offset_of!(Entry<u8>, id), 0);
    }
}
