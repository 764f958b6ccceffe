//! Least recently used: evict the session whose last insert or access is oldest.
//!
//! The baseline every other policy is measured against, and what the host falls
//! back to on its own. The algorithm lives in `lru.rs`, which the `hostile` test
//! fixture also compiles so that it behaves as a correct LRU between faults.

mod lru;

shadowcat_policy_sdk::export_policy!(lru::Lru);
