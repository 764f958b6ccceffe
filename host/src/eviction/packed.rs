//! Events packed in four words, the layout in which WebAssembly policies
//! receive them (`wit/0.2.0/policy.wit`, `observe`):
//!
//! - word 0: bits 0..8 kind, 8..16 detail (removal cause or refusal reason),
//!   16..32 tenant, 32..64 weight;
//! - word 1: session id; word 2: time in microseconds; word 3: stable key.
//!
//! A table holds a batch-taking policy's events in this form, so that handing
//! a batch over is a copy, not a conversion per event under the table lock.

use super::{PolicyEvent, Refusal, RemovalCause};
use crate::session::SessionId;

pub const WORDS: usize = 4;
pub type PackedEvent = [u64; WORDS];

pub const KIND_INSERTED: u64 = 0;
pub const KIND_ACCESSED: u64 = 1;
pub const KIND_REMOVED: u64 = 2;
pub const KIND_REFUSED: u64 = 3;

/// Tenants past 16 bits share the last number rather than wrap into
/// another's, as policies are told them.
#[inline]
pub fn pack(event: PolicyEvent) -> PackedEvent {
    let (kind, detail, tenant, weight, id, time, key) = match event {
        PolicyEvent::Inserted {
            id,
            time,
            weight,
            key,
            tenant,
        } => (KIND_INSERTED, 0, tenant, weight, id, time, key),
        PolicyEvent::Accessed { id, time, weight } => (KIND_ACCESSED, 0, 0, weight, id, time, 0),
        PolicyEvent::Removed {
            id,
            time,
            cause,
            key,
        } => (KIND_REMOVED, cause as u64, 0, 0, id, time, key),
        PolicyEvent::Refused { id, time, reason } => {
            (KIND_REFUSED, reason as u64, 0, 0, id, time, 0)
        }
    };
    let tenant = u64::from(tenant.min(u32::from(u16::MAX)));
    [
        kind | (detail << 8) | (tenant << 16) | (u64::from(weight) << 32),
        id.to_bits(),
        time,
        key,
    ]
}

#[inline]
pub fn kind(event: &PackedEvent) -> u64 {
    event[0] & 0xff
}

#[inline]
pub fn id(event: &PackedEvent) -> SessionId {
    SessionId::from_bits(event[1])
}

/// The event `pack` made of it (a tenant past 16 bits reads as 65,535);
/// `None` for words no `pack` makes.
pub fn unpack(event: PackedEvent) -> Option<PolicyEvent> {
    let [head, id, time, key] = event;
    let id = SessionId::from_bits(id);
    let detail = (head >> 8) & 0xff;
    let weight = (head >> 32) as u32;
    Some(match head & 0xff {
        KIND_INSERTED => PolicyEvent::Inserted {
            id,
            time,
            weight,
            key,
            tenant: ((head >> 16) & 0xffff) as u32,
        },
        KIND_ACCESSED => PolicyEvent::Accessed { id, time, weight },
        KIND_REMOVED => PolicyEvent::Removed {
            id,
            time,
            cause: *RemovalCause::ALL.get(usize::try_from(detail).ok()?)?,
            key,
        },
        KIND_REFUSED => PolicyEvent::Refused {
            id,
            time,
            reason: match detail {
                0 => Refusal::Pinned,
                1 => Refusal::NotLive,
                _ => return None,
            },
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_event_unpacks_as_it_was_packed() {
        let id = SessionId::from_bits((7 << 32) | 9);
        let mut events = vec![
            PolicyEvent::Inserted {
                id,
                time: 11,
                weight: u32::MAX,
                key: u64::MAX,
                tenant: 65_535,
            },
            PolicyEvent::Accessed {
                id,
                time: u64::MAX,
                weight: 3,
            },
            PolicyEvent::Refused {
                id,
                time: 4,
                reason: Refusal::Pinned,
            },
            PolicyEvent::Refused {
                id,
                time: 4,
                reason: Refusal::NotLive,
            },
        ];
        events.extend(RemovalCause::ALL.map(|cause| PolicyEvent::Removed {
            id,
            time: 5,
            cause,
            key: 11,
        }));
        for event in events {
            let packed = pack(event);
            assert_eq!(unpack(packed), Some(event));
            assert_eq!(super::id(&packed), id);
        }
    }

    #[test]
    fn a_tenant_past_16_bits_reads_as_the_last_one_and_bad_words_as_nothing() {
        let id = SessionId::from_bits(1);
        let packed = pack(PolicyEvent::Inserted {
            id,
            time: 0,
            weight: 1,
            key: 0,
            tenant: 70_000,
        });
        assert!(matches!(
            unpack(packed),
            Some(PolicyEvent::Inserted { tenant: 65_535, .. })
        ));
        assert_eq!(unpack([4, 1, 0, 0]), None, "kind 4");
        assert_eq!(unpack([KIND_REMOVED | (7 << 8), 1, 0, 0]), None, "cause 7");
        assert_eq!(unpack([KIND_REFUSED | (2 << 8), 1, 0, 0]), None, "reason 2");
    }
}
