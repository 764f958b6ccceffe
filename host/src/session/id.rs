//! Compact session handles.

use std::fmt;

/// A session's compact handle: a slot in the table plus the slot's generation.
///
/// Handles are what the table, the policies and the replay pass around; they cost
/// one `u64` and a lookup is an array index. The generation makes a handle to a
/// removed session detectably stale even after its slot has been reused, so a
/// policy that proposes a session which no longer exists cannot hit a newcomer.
/// The external MCP session id (a string) is kept separately by the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        Self((u64::from(generation) << 32) | u64::from(slot))
    }

    pub fn slot(self) -> u32 {
        self.0 as u32
    }

    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The packed form that crosses the WebAssembly boundary.
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// Any `u64` is accepted; the table rejects handles that do not name a live session.
    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot(), self.generation())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_packs_slot_and_generation() {
        let id = SessionId::new(7, 3);
        assert_eq!(id.slot(), 7);
        assert_eq!(id.generation(), 3);
        assert_eq!(SessionId::from_bits(id.to_bits()), id);
        assert_ne!(SessionId::new(7, 4), id);
    }
}
