//! The index from external session names (what clients send as
//! `MCP-Session-Id`) to session handles.
//!
//! Names are hashed once, when the session is created, with a randomly seeded
//! hash, and the index is keyed by that 64-bit hash; the entry keeps it. So
//! removing a session (expiry, eviction: thousands per cleanup round) is an
//! integer probe, with no string to hash again and none to compare. A lookup
//! hashes the name it is given and then checks the session's own name, so a
//! hash collision can never resolve to the wrong session; the rare colliding
//! name goes to a second, string-keyed map.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::id::SessionId;

/// Passes a `u64` through: the keys are already randomly seeded hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[derive(Default)]
pub(crate) struct Names {
    seed: foldhash::fast::RandomState,
    by_hash: HashMap<u64, SessionId, BuildHasherDefault<Prehashed>>,
    /// Names whose hash another live name already holds.
    collided: HashMap<Arc<str>, SessionId, foldhash::fast::RandomState>,
}

impl Names {
    pub fn hash(&self, name: &str) -> u64 {
        self.seed.hash_one(name)
    }

    /// The session named `name`; `name_of` gives a session's own name, to
    /// tell a hash collision from a match.
    pub fn get<'a>(
        &self,
        name: &str,
        name_of: impl Fn(SessionId) -> Option<&'a str>,
    ) -> Option<SessionId> {
        let hash = self.hash(name);
        match self.by_hash.get(&hash) {
            Some(&id) if name_of(id) == Some(name) => Some(id),
            // A collided name outlives the one that held its hash.
            _ if self.collided.is_empty() => None,
            _ => self.collided.get(name).copied(),
        }
    }

    /// Indexes `name` (hashed to `hash`) for `id`. The caller has checked it
    /// is not taken ([`Self::get`]).
    pub fn insert(&mut self, name: &Arc<str>, hash: u64, id: SessionId) {
        match self.by_hash.entry(hash) {
            Entry::Occupied(_) => {
                self.collided.insert(Arc::clone(name), id);
            }
            Entry::Vacant(slot) => {
                slot.insert(id);
            }
        }
    }

    pub fn remove(&mut self, name: &str, hash: u64, id: SessionId) {
        // One probe: expiry removes thousands of names per round.
        match self.by_hash.entry(hash) {
            Entry::Occupied(held) if *held.get() == id => {
                held.remove();
            }
            _ => {
                self.collided.remove(name);
            }
        }
    }

    /// Whether any name is in the string-keyed map (see [`Self::remove_uncollided`]).
    pub fn has_collided(&self) -> bool {
        !self.collided.is_empty()
    }

    /// [`Self::remove`] with no name at hand, for a name removed while
    /// [`Self::has_collided`] was false: it can only be under its hash.
    pub fn remove_uncollided(&mut self, hash: u64, id: SessionId) {
        if let Entry::Occupied(held) = self.by_hash.entry(hash) {
            if *held.get() == id {
                held.remove();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_resolve_and_colliding_hashes_never_mix_sessions() {
        let mut names = Names::default();
        let (a, b) = (SessionId::new(1, 0), SessionId::new(2, 0));
        let (name_a, name_b): (Arc<str>, Arc<str>) = ("alpha".into(), "beta".into());
        // Force a collision: both under the same hash.
        let hash = names.hash(&name_a);
        names.insert(&name_a, hash, a);
        names.insert(&name_b, hash, b);
        let owners = |id: SessionId| {
            if id == a {
                Some("alpha")
            } else if id == b {
                Some("beta")
            } else {
                None
            }
        };
        assert_eq!(names.len(), 2);
        assert_eq!(names.collided.len(), 1);
        assert_eq!(names.get("alpha", owners), Some(a));
        assert_eq!(names.get("beta", owners), Some(b));
        assert_eq!(names.get("gamma", owners), None);
        names.remove(&name_a, hash, a);
        assert_eq!(names.get("beta", owners), Some(b), "outlives alpha");
        assert_eq!(names.get("alpha", owners), None);
        names.insert(&name_a, hash, a);
        names.remove(&name_b, hash, b);
        assert_eq!(names.len(), 1);
        assert_eq!(names.get("beta", owners), None);
        names.remove(&name_a, hash, a);
        assert_eq!(names.len(), 0);
        assert_eq!(names.get("alpha", owners), None);
        assert!(!names.has_collided());
    }

    #[test]
    fn session_names_removed_by_hash_alone_only_for_their_own_session() {
        let mut names = Names::default();
        let (a, b) = (SessionId::new(1, 0), SessionId::new(1, 1));
        let name_a: Arc<str> = "alpha".into();
        let hash = names.hash(&name_a);
        names.insert(&name_a, hash, a);
        // The slot's next session does not own the name.
        names.remove_uncollided(hash, b);
        assert_eq!(
            names.get("alpha", |id| (id == a).then_some("alpha")),
            Some(a)
        );
        names.remove_uncollided(hash, a);
        assert_eq!(names.len(), 0);
        assert_eq!(names.get("alpha", |id| (id == a).then_some("alpha")), None);
    }
}
