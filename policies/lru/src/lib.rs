//! Least recently used: evict the session whose last insert or access is oldest.
//!
//! The baseline every other policy is measured against, and what the host falls
//! back to on its own. The algorithm lives in `lru.rs`, which the `hostile` test
//! fixture also compiles so that it behaves as a correct LRU between faults.
//!
//! Per event O(1): a relink in a slot-indexed list. Per `victims` call O(count)
//! without candidates; with candidates O(c log c) for c of them. Declares
//! `stable-order`, so the host may prefetch victims.

mod lru;

shadowcat_policy_sdk::export_policy!(lru::Lru);

#[cfg(test)]
mod tests;
