//! A ghost list: stable keys of sessions a policy evicted, oldest first, for
//! recognising a client that comes back (ARC's B1 and B2, S3-FIFO's ghost
//! queue, 2Q's Aout).
//!
//! Keys are not slots, so this is the one place a policy hashes: an
//! open-addressing index (linear probing, backward-shift deletion, no
//! tombstones) over an arena of list nodes, both allocated at `create` for the
//! policy's bound (up to 65,536 keys; larger lists grow to theirs by
//! doubling). S3-FIFO and 2Q trim to a fixed size; ARC's lists are bounded by
//! 2C in a full table. Memory that cannot be had costs the oldest ghost, not a
//! trap.

const NIL: u32 = u32::MAX;
/// Keys allocated for up front at most; a larger bound is reached by growing.
const UPFRONT: usize = 1 << 16;

/// 20 bytes: packed to 4-byte alignment, where the `u64` would pad it to 24
/// (a quarter more memory per ghost than without `bucket`, rather than an
/// eighth). Fields are only ever copied out, never borrowed.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct Node {
    key: u64,
    /// Toward the newest end.
    newer: u32,
    /// Toward the oldest end.
    older: u32,
    /// Where the index holds it: the oldest leaves without a probe for its
    /// key, most of a trimmed list's work.
    bucket: u32,
}

#[derive(Clone, Debug)]
pub struct GhostList {
    /// Each key that joined or left since the last
    /// [`GhostList::drain_changes`], in order, when tracked (for a
    /// `ghost-conditional` policy, whose host mirrors its ghosts).
    changes: Vec<u64>,
    tracking: bool,
    /// More changes than the list holds keys came: the next drain lists
    /// every key instead.
    resync: bool,
    nodes: Vec<Node>,
    /// Unused nodes, linked through `older`.
    free: u32,
    newest: u32,
    oldest: u32,
    len: usize,
    /// Node index per bucket, or NIL; a power of two, at most a quarter
    /// full: at half, a miss (most lookups) and a deletion's backward shift
    /// walked runs long enough to cost some 30 % more per operation.
    index: Vec<u32>,
    shift: u32,
}

impl GhostList {
    /// A list expected to hold up to `bound` keys.
    pub fn with_bound(bound: usize) -> Self {
        let bound = bound.min(UPFRONT);
        let buckets = (bound.max(4) * 4).next_power_of_two();
        Self {
            changes: Vec::new(),
            tracking: false,
            resync: false,
            nodes: Vec::with_capacity(bound),
            free: NIL,
            newest: NIL,
            oldest: NIL,
            len: 0,
            index: vec![NIL; buckets],
            shift: 64 - buckets.trailing_zeros(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Records from now on which keys join or leave, for
    /// [`GhostList::drain_changes`].
    pub fn track_changes(&mut self) {
        self.tracking = true;
    }

    /// What changed since the last drain (or since tracking began): each key
    /// that joined or left, in order. Once more changes than twice the
    /// list's length came, all of its keys instead, `replaced`.
    pub fn drain_changes(&mut self, out: &mut shadowcat_policy_sdk::GhostChanges) {
        if std::mem::take(&mut self.resync) {
            out.replaced = true;
            out.keys.extend(self.iter());
        } else {
            out.keys.extend_from_slice(&self.changes);
        }
        self.changes.clear();
    }

    #[inline]
    fn changed(&mut self, key: u64) {
        if self.tracking {
            if self.changes.len() > 2 * self.len + 1024 {
                self.changes.clear();
                self.resync = true;
            }
            if !self.resync {
                self.changes.push(key);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, key: u64) -> bool {
        self.find(key).is_some()
    }

    /// Puts `key` at the newest end, moving it there if it is already listed.
    pub fn push_newest(&mut self, key: u64) {
        if let Some((_, node)) = self.find(key) {
            self.unlink(node);
            self.link_newest(node);
            return;
        }
        self.push_new(key);
    }

    /// Puts `key`, which is not listed (the caller just looked), at the
    /// newest end: [`GhostList::push_newest`] without looking again.
    pub fn push_new(&mut self, key: u64) {
        debug_assert!(!self.contains(key), "{key} is listed already");
        if (self.len + 1) * 4 > self.index.len() && !self.grow() {
            self.pop_oldest();
        }
        if self.free == NIL && self.nodes.try_reserve(1).is_err() {
            self.pop_oldest();
        }
        let node = match self.free {
            NIL => {
                self.nodes.push(Node {
                    key,
                    newer: NIL,
                    older: NIL,
                    bucket: NIL,
                });
                (self.nodes.len() - 1) as u32
            }
            free => {
                self.free = self.nodes[free as usize].older;
                self.nodes[free as usize].key = key;
                free
            }
        };
        self.link_newest(node);
        self.place(node);
        self.len += 1;
        self.changed(key);
    }

    /// True if `key` was listed.
    pub fn remove(&mut self, key: u64) -> bool {
        match self.find(key) {
            Some((bucket, node)) => {
                self.take(bucket, node);
                self.changed(key);
                true
            }
            None => false,
        }
    }

    pub fn pop_oldest(&mut self) -> Option<u64> {
        let node = self.oldest;
        if node == NIL {
            return None;
        }
        let Node { key, bucket, .. } = self.nodes[node as usize];
        self.take(bucket as usize, node);
        self.changed(key);
        Some(key)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.oldest;
        std::iter::from_fn(move || {
            let node = self.nodes.get(at as usize)?;
            at = node.newer;
            Some(node.key)
        })
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        // Fibonacci hashing after folding the high half in: sequential object
        // ids and client-key hashes both spread.
        ((key ^ (key >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The bucket and node holding `key`.
    #[inline]
    fn find(&self, key: u64) -> Option<(usize, u32)> {
        let mask = self.index.len() - 1;
        let mut bucket = self.home(key);
        loop {
            match self.index[bucket] {
                NIL => return None,
                node if self.nodes[node as usize].key == key => return Some((bucket, node)),
                _ => bucket = (bucket + 1) & mask,
            }
        }
    }

    /// Indexes `node` (whose key is not indexed yet).
    fn place(&mut self, node: u32) {
        let mask = self.index.len() - 1;
        let mut bucket = self.home(self.nodes[node as usize].key);
        while self.index[bucket] != NIL {
            bucket = (bucket + 1) & mask;
        }
        self.index[bucket] = node;
        self.nodes[node as usize].bucket = bucket as u32;
    }

    /// Unindexes and unlinks `node`, found in `bucket`, and frees it.
    fn take(&mut self, bucket: usize, node: u32) {
        let mask = self.index.len() - 1;
        // Backward-shift deletion: pull later entries of the probe run into
        // the hole unless that would put one before its home bucket.
        let mut hole = bucket;
        let mut next = (hole + 1) & mask;
        while self.index[next] != NIL {
            let home = self.home(self.nodes[self.index[next] as usize].key);
            let distance_next = next.wrapping_sub(home) & mask;
            let distance_hole = hole.wrapping_sub(home) & mask;
            if distance_hole <= distance_next {
                let moved = self.index[next];
                self.index[hole] = moved;
                self.nodes[moved as usize].bucket = hole as u32;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.index[hole] = NIL;
        self.unlink(node);
        self.nodes[node as usize].older = self.free;
        self.free = node;
        self.len -= 1;
    }

    fn link_newest(&mut self, node: u32) {
        let newest = self.newest;
        let n = &mut self.nodes[node as usize];
        n.newer = NIL;
        n.older = newest;
        match newest {
            NIL => self.oldest = node,
            at => self.nodes[at as usize].newer = node,
        }
        self.newest = node;
    }

    fn unlink(&mut self, node: u32) {
        let Node { newer, older, .. } = self.nodes[node as usize];
        match newer {
            NIL => self.newest = older,
            at => self.nodes[at as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            at => self.nodes[at as usize].newer = newer,
        }
    }

    /// Doubles the index; false if its memory cannot be had.
    fn grow(&mut self) -> bool {
        let buckets = self.index.len() * 2;
        let mut index = Vec::new();
        if index.try_reserve_exact(buckets).is_err() {
            return false;
        }
        index.resize(buckets, NIL);
        self.index = index;
        self.shift = 64 - buckets.trailing_zeros();
        let mut at = self.oldest;
        while at != NIL {
            self.place(at);
            at = self.nodes[at as usize].newer;
        }
        true
    }
}
