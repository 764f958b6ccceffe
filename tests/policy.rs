//! WebAssembly policies: equivalence with native references, exact replay
//! figures, hostile guests, hot reload, loading errors and the artefact cache.

mod common;

mod policy {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use shadowcat::eviction::{
        packed, EvictionPolicy, FlushHint, PackedEvent, PolicyEvent, Refusal, RemovalCause,
        VictimRequest,
    };
    use shadowcat::session::{Clock, NewSession, SessionId, SessionTable, TableError};
    use shadowcat::wasm::{PolicyEngine, PolicyError, PolicyLimits, WasmPolicy};
    use shadowcat::{QuotaBounds, RateLimit, TableConfig};

    use crate::common::{fixture, policy_file, reference_trace, with_watchdog};

    /// Deadlines are wall-clock: on a loaded 2-core machine a descheduled call
    /// can overrun a tight one, so tests that are not about deadlines get a
    /// generous one and only the infinite-loop test uses [`tight_engine`].
    fn engine() -> Arc<PolicyEngine> {
        engine_with(PolicyLimits {
            call_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            max_consecutive_faults: 3,
            memory_bytes: 32 << 20,
            ..PolicyLimits::default()
        })
    }

    fn tight_engine() -> Arc<PolicyEngine> {
        engine_with(PolicyLimits {
            call_timeout: Duration::from_millis(20),
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            max_consecutive_faults: 3,
            memory_bytes: 32 << 20,
            ..PolicyLimits::default()
        })
    }

    /// No backoff: the next call after a fault recreates the instance.
    fn retrying_engine() -> Arc<PolicyEngine> {
        engine_with(PolicyLimits {
            call_timeout: Duration::from_secs(5),
            backoff_base: Duration::ZERO,
            max_consecutive_faults: 3,
            ..PolicyLimits::default()
        })
    }

    /// A table under `policy` with a manual clock, built shared so that the
    /// policy can warm a fresh instance from the table's live sessions.
    fn shared_table(policy: &Arc<WasmPolicy>, max_sessions: usize) -> Arc<SessionTable<()>> {
        SessionTable::<()>::builder(TableConfig::unbounded_in_time(max_sessions))
            .policy(policy.clone())
            .clock(Clock::manual())
            .build_shared()
            .expect("table")
    }

    fn engine_with(limits: PolicyLimits) -> Arc<PolicyEngine> {
        PolicyEngine::new(limits, None).expect("engine")
    }

    fn load(path: &Path, capacity: u64, config: &[(&str, &str)]) -> Arc<WasmPolicy> {
        let config = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WasmPolicy::load(engine(), path, capacity, config).expect("policy loads")
    }

    fn hostile(mode: &str, capacity: u64) -> Arc<WasmPolicy> {
        load(&fixture("hostile.wasm"), capacity, &[("mode", mode)])
    }

    /// Straightforward reference implementations: slow, obviously correct.
    #[derive(Default)]
    struct Reference {
        kind: &'static str,
        seq: u64,
        // id -> (hits while cached, last touch sequence, insertion sequence)
        entries: HashMap<SessionId, (u64, u64, u64)>,
    }

    impl Reference {
        fn new(kind: &'static str) -> Self {
            Self {
                kind,
                ..Self::default()
            }
        }

        fn apply(&mut self, event: PolicyEvent) {
            self.seq += 1;
            match event {
                PolicyEvent::Inserted { id, .. } => {
                    self.entries.insert(id, (1, self.seq, self.seq));
                }
                PolicyEvent::Accessed { id, .. } => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.0 += 1;
                        e.1 = self.seq;
                    }
                }
                PolicyEvent::Removed { id, .. } => {
                    self.entries.remove(&id);
                }
                PolicyEvent::Refused { .. } => {}
            }
        }

        fn victims(&self, count: usize) -> Vec<SessionId> {
            let mut all: Vec<(SessionId, (u64, u64, u64))> =
                self.entries.iter().map(|(k, v)| (*k, *v)).collect();
            match self.kind {
                "lru" => all.sort_by_key(|(_, (_, last, _))| *last),
                "fifo" => all.sort_by_key(|(_, (_, _, inserted))| *inserted),
                "lfu" => {
                    all.sort_by_key(|(_, (hits, last, _))| (*hits, *last));
                    // Past the first, only count-1 victims: the stable
                    // prefix lfu.wasm promises.
                    let first_is_new = all.first().is_some_and(|(_, (hits, ..))| *hits == 1);
                    let limit = if first_is_new { count } else { count.min(1) };
                    return all
                        .into_iter()
                        .take(limit)
                        .take_while(|(_, (hits, ..))| *hits == 1 || limit == 1)
                        .map(|(id, _)| id)
                        .collect();
                }
                other => panic!("no reference for {other}"),
            }
            all.into_iter().take(count).map(|(id, _)| id).collect()
        }
    }

    #[test]
    fn policy_shipped_wasm_policies_match_native_references_on_a_long_event_sequence() {
        for kind in ["lru", "fifo", "lfu"] {
            let policy = load(&policy_file(kind), 4_096, &[]);
            let mut reference = Reference::new(kind);
            let mut rng = SmallRng::seed_from_u64(99);
            let mut live: Vec<SessionId> = Vec::new();
            let mut next_slot = 0u32;
            let mut decisions = 0;
            for step in 0..60_000u64 {
                let event = match rng.random_range(0..100) {
                    0..=24 => {
                        next_slot += 1;
                        let id = SessionId::from_bits(u64::from(next_slot) | (7 << 32));
                        live.push(id);
                        Some(PolicyEvent::Inserted {
                            id,
                            time: step,
                            weight: 1,
                            key: u64::from(next_slot),
                            tenant: 0,
                        })
                    }
                    25..=79 if !live.is_empty() => {
                        // Skewed so counts differ and LFU ties are exercised.
                        let i = (rng.random_range(0..live.len() as u64).pow(2) / live.len() as u64)
                            as usize;
                        Some(PolicyEvent::Accessed {
                            id: live[i],
                            time: step,
                            weight: 1,
                        })
                    }
                    80..=89 if !live.is_empty() => {
                        let id = live.swap_remove(rng.random_range(0..live.len()));
                        Some(PolicyEvent::Removed {
                            id,
                            time: step,
                            cause: RemovalCause::Evicted,
                            key: 0,
                        })
                    }
                    _ => None,
                };
                match event {
                    Some(event) => {
                        if policy.record(event) == FlushHint::FlushSoon {
                            policy.flush();
                        }
                        reference.apply(event);
                    }
                    None => {
                        let count = rng.random_range(1..8);
                        let mut got = Vec::new();
                        policy
                            .victims(VictimRequest::count(count), &mut got)
                            .expect("the policy answers");
                        assert_eq!(
                            got,
                            reference.victims(count),
                            "{kind}: victims differ at step {step}"
                        );
                        decisions += 1;
                    }
                }
            }
            assert!(decisions > 4_000);
            let m = policy.metrics();
            assert_eq!(m.faults(), 0, "{kind}: {m:?}");
            // FIFO asks for no access events, so it receives fewer.
            assert!(
                m.events_delivered > 15_000,
                "{kind}: events were batched in: {m:?}"
            );
        }
    }

    /// Replays the reference trace through the table at the reference capacity.
    fn replay_misses(policy: Arc<dyn EvictionPolicy>) -> u64 {
        let trace = reference_trace();
        let outcome = shadowcat::replay::replay(
            &trace,
            policy,
            4_897,
            shadowcat::replay::CapacityMode::Objects,
            &mut |_| {},
        )
        .expect("replay");
        outcome.misses
    }

    #[test]
    fn policy_wasm_lru_and_fifo_reproduce_the_reference_miss_counts() {
        assert_eq!(replay_misses(load(&policy_file("lru"), 4_897, &[])), 91_657);
        assert_eq!(
            replay_misses(load(&policy_file("fifo"), 4_897, &[])),
            91_716
        );
    }

    /// Prefetching (the host asking a stable-order policy for 32 victims at a
    /// time and handing them out one eviction at a time) changes nothing but
    /// the number of calls.
    #[test]
    fn policy_prefetched_victims_give_the_same_decisions_with_fewer_calls() {
        for (name, expected) in [("lru", 91_657), ("fifo", 91_716), ("lfu", 90_040)] {
            let mut calls = Vec::new();
            for prefetch in [1, 32] {
                let engine = engine_with(PolicyLimits {
                    call_timeout: Duration::from_secs(5),
                    prefetch,
                    ..PolicyLimits::default()
                });
                let policy =
                    WasmPolicy::load(engine, &policy_file(name), 4_897, Vec::new()).expect("loads");
                assert!(policy.info().traits.stable_order, "{name} declares it");
                assert_eq!(
                    replay_misses(policy.clone()),
                    expected,
                    "{name} prefetch {prefetch}"
                );
                let m = policy.metrics();
                assert_eq!(m.faults(), 0);
                calls.push(m.calls);
            }
            assert!(
                calls[1] * 4 < calls[0],
                "{name}: prefetching makes far fewer calls: {calls:?}"
            );
        }
    }

    /// Tells `policy` that `id` arrived (size 1, no key, default tenant).
    fn record_inserted(policy: &WasmPolicy, id: SessionId, time: u64) {
        policy.record(PolicyEvent::Inserted {
            id,
            time,
            weight: 1,
            key: 0,
            tenant: 0,
        });
    }

    fn record_accessed(policy: &WasmPolicy, id: SessionId, time: u64) {
        policy.record(PolicyEvent::Accessed {
            id,
            time,
            weight: 1,
        });
    }

    fn record_evicted(policy: &WasmPolicy, id: SessionId, time: u64) {
        policy.record(PolicyEvent::Removed {
            id,
            time,
            cause: RemovalCause::Evicted,
            key: 0,
        });
    }

    /// An eviction as the table makes it: the victim leaves, the arrival
    /// that needed the room comes in.
    fn record_replaced(policy: &WasmPolicy, victim: SessionId, arrival: SessionId, time: u64) {
        record_evicted(policy, victim, time);
        record_inserted(policy, arrival, time);
    }

    /// The next victim the policy chose ahead, if the host has one queued.
    fn ready_victim(policy: &WasmPolicy) -> Vec<SessionId> {
        let mut out = Vec::new();
        policy.ready_victims(None, 1, &mut out);
        out
    }

    /// A fresh answer for one eviction.
    fn ask_victim(policy: &WasmPolicy) -> Vec<SessionId> {
        let mut out = Vec::new();
        policy
            .victims(VictimRequest::count(1), &mut out)
            .expect("answers");
        out
    }

    /// The guest's SDK checks a whole batch before applying any of it, eight
    /// events at a time in the sandbox: an unknown code anywhere (in the
    /// first or second eight, or in the tail past them) rejects the batch at
    /// its place and leaves the policy as it was, and the largest known codes
    /// pass.
    #[test]
    fn policy_a_batch_with_an_unknown_code_is_rejected_whole_wherever_it_is() {
        let with_detail = |event: PolicyEvent, detail: u64| {
            let mut words = packed::pack(event);
            words[0] = (words[0] & !0xff00) | (detail << 8);
            words
        };
        let removed = |detail| {
            with_detail(
                PolicyEvent::Removed {
                    id: SessionId::from_bits(1),
                    time: 50,
                    cause: RemovalCause::Evicted,
                    key: 0,
                },
                detail,
            )
        };
        let refused = |detail| {
            with_detail(
                PolicyEvent::Refused {
                    id: SessionId::from_bits(2),
                    time: 50,
                    reason: Refusal::Pinned,
                },
                detail,
            )
        };
        let arrivals = || -> Vec<PackedEvent> {
            (1..=18)
                .map(|slot| {
                    packed::pack(PolicyEvent::Inserted {
                        id: SessionId::from_bits(slot),
                        time: slot,
                        weight: 1,
                        key: 0,
                        tenant: 0,
                    })
                })
                .collect()
        };
        // SIEVE is told of every kind, refusals too.
        let cases = [
            (3, removed(7), "unknown removal cause 7"),
            (11, refused(2), "unknown refusal reason 2"),
            (17, removed(255), "unknown removal cause 255"),
        ];
        for (place, bad, message) in cases {
            let policy = load(&policy_file("sieve"), 64, &[]);
            let mut batch = arrivals();
            batch[place] = bad;
            policy.record_batch(&batch);
            policy.flush();
            assert_eq!(
                policy.last_problem(),
                Some(format!(
                    "observe returned an error: observe: event {place}: {message}"
                ))
            );
            // None of it applied: the one session the policy knows of is the
            // victim, not the oldest of the batch.
            let known = SessionId::from_bits(100);
            record_inserted(&policy, known, 100);
            assert_eq!(ask_victim(&policy), [known]);
        }
        let policy = load(&policy_file("sieve"), 64, &[]);
        let mut batch = arrivals();
        batch[5] = removed(6);
        batch[17] = refused(1);
        policy.record_batch(&batch);
        policy.flush();
        assert_eq!(policy.last_problem(), None);
        assert_eq!(policy.metrics().events_delivered, 18);
    }

    /// An answer's first victim is the choice for the eviction at hand only:
    /// with every session above count 1, lfu.wasm answers it alone, since an
    /// arrival (count 1) would go ahead of it. One the table did not use is
    /// not kept as a later victim: after the arrival, the policy is asked.
    #[test]
    fn policy_an_unused_first_victim_is_not_kept_for_later() {
        let policy = load(&policy_file("lfu"), 64, &[]);
        let id = |slot: u64| SessionId::from_bits(slot | (3 << 32));
        let (a, b, c) = (id(1), id(2), id(3));
        for (time, session) in [a, b].into_iter().enumerate() {
            record_inserted(&policy, session, time as u64);
            record_accessed(&policy, session, time as u64);
        }
        let first = ask_victim(&policy);
        assert_eq!(first, [a]);
        policy.unused_victims(&first);
        record_inserted(&policy, c, 9);
        assert_eq!(ready_victim(&policy), [], "a is no longer the choice");
        assert_eq!(ask_victim(&policy), [c]);
        assert_eq!(policy.metrics().faults(), 0);
    }

    /// An answer ending in ARRIVALS makes the sessions inserted after it the
    /// next victims, in the order they arrive, with no call: lfu.wasm says so
    /// when no session at count 1 is left out of its answer. An arrival that
    /// is accessed leaves the queue (it is at count 2 now), and the arrivals
    /// after it still follow.
    #[test]
    fn policy_arrivals_after_an_answer_ending_in_arrivals_are_victims_without_a_call() {
        let policy = load(&policy_file("lfu"), 64, &[]);
        let id = |slot: u64| SessionId::from_bits(slot | (7 << 32));
        let insert = |session: SessionId, time: u64| record_inserted(&policy, session, time);
        let access = |session: SessionId, time: u64| record_accessed(&policy, session, time);
        let replaced = |victim: SessionId, arrival: SessionId, time: u64| {
            record_replaced(&policy, victim, arrival, time)
        };
        let ready = || ready_victim(&policy);
        let (a, b, c, d, e) = (id(1), id(2), id(3), id(4), id(5));
        for (time, session) in [a, b].into_iter().enumerate() {
            insert(session, time as u64);
            access(session, time as u64);
        }
        assert_eq!(
            ask_victim(&policy),
            [a],
            "the lowest count first; the marker is not a victim"
        );
        let calls = policy.metrics().calls;
        replaced(a, c, 3);
        assert_eq!(ready(), [c], "the arrival, count 1, is next");
        replaced(c, d, 4);
        access(d, 5);
        assert_eq!(
            ready(),
            [],
            "d is at count 2 now, like b: the policy decides"
        );
        insert(e, 6);
        assert_eq!(ready(), [e], "the next arrival still follows");
        assert_eq!(policy.metrics().calls, calls, "no call since the answer");
        // Asked again (e was not evicted): the count-1 sessions, then the
        // arrivals.
        insert(id(6), 7);
        assert_eq!(ask_victim(&policy), [e]);
        replaced(e, id(7), 8);
        assert_eq!(ready(), [id(6)], "the other count-1 session");
        replaced(id(6), id(8), 9);
        assert_eq!(ready(), [id(7)], "then the arrivals, oldest first");
        assert_eq!(policy.metrics().faults(), 0);
    }

    /// SIEVE ends its answer in ARRIVALS_WHILE_QUEUED when its walk reaches
    /// the head: the arrivals follow, a requested one skipped, but only while
    /// one the host queued is left. Once the hand has evicted the newest
    /// session it wraps to the oldest, so the next arrival is not queued and
    /// the policy is asked.
    #[test]
    fn policy_arrivals_while_queued_stop_following_when_the_queue_runs_dry() {
        let policy = load(&policy_file("sieve"), 64, &[]);
        let id = |slot: u64| SessionId::from_bits(slot | (9 << 32));
        let (a, b, c, d, e, f, g) = (id(1), id(2), id(3), id(4), id(5), id(6), id(7));
        for (time, session) in [a, b, c].into_iter().enumerate() {
            record_inserted(&policy, session, time as u64);
        }
        record_accessed(&policy, b, 3);
        assert_eq!(
            ask_victim(&policy),
            [a],
            "the tail, unvisited; the marker is not a victim"
        );
        let calls = policy.metrics().calls;
        // Each eviction: the victim leaves, an arrival comes, and a request
        // may come before the host looks for the next victim.
        let steps = [
            (a, d, None, [c], "b is visited: the hand passes it"),
            (c, e, None, [d], "then the arrivals, oldest first"),
            (d, f, Some(e), [f], "e is visited: passed"),
        ];
        for (time, (victim, arrival, requested, next, why)) in (4..).zip(steps) {
            record_replaced(&policy, victim, arrival, time);
            if let Some(session) = requested {
                record_accessed(&policy, session, time);
            }
            assert_eq!(ready_victim(&policy), next, "{why}");
        }
        record_replaced(&policy, f, g, 8);
        assert_eq!(
            ready_victim(&policy),
            [],
            "f was the newest: the hand wrapped, and g is not the next victim"
        );
        assert_eq!(policy.metrics().calls, calls, "no call since the answer");
        assert_eq!(
            ask_victim(&policy),
            [b],
            "from the tail: b, whose mark the hand cleared"
        );
        assert_eq!(policy.metrics().faults(), 0);
    }

    /// At a small capacity under a skewed load nearly every resident has been
    /// requested twice, so nearly every victim is the latest arrival (count
    /// 1): lfu.wasm says so with ARRIVALS, and the host evicts the arrivals
    /// without a call each. SIEVE's hand likewise chases the arrivals there
    /// (ARRIVALS_WHILE_QUEUED). The same misses as asking every time.
    #[test]
    fn policy_lfu_and_sieve_evict_arrivals_without_a_call_each() {
        let trace = shadowcat::trace::generate(&Default::default());
        let capacity = trace.distinct_ids() as u64 / 100;
        // Calls per eviction at most: without arrivals following, lfu.wasm
        // makes 0.87 and sieve.wasm 0.21.
        for (name, most_calls_per_eviction) in [("lfu", 0.05), ("sieve", 0.05)] {
            let outcomes = [1, 32].map(|prefetch| {
                let engine = engine_with(PolicyLimits {
                    call_timeout: Duration::from_secs(5),
                    prefetch,
                    ..PolicyLimits::default()
                });
                let policy = WasmPolicy::load(engine, &policy_file(name), capacity, Vec::new())
                    .expect("loads");
                let outcome = shadowcat::replay::replay(
                    &trace,
                    policy.clone(),
                    capacity,
                    shadowcat::replay::CapacityMode::Objects,
                    &mut |_| {},
                )
                .expect("replay");
                assert_eq!(outcome.fallback_victims, 0, "{name}");
                (outcome, policy.metrics().calls)
            });
            let [(asking, _), (prefetched, calls)] = &outcomes;
            assert_eq!(prefetched.misses, asking.misses, "{name}");
            assert!(asking.evictions > 100_000, "{name}: {asking:?}");
            assert!(
                (*calls as f64) < most_calls_per_eviction * prefetched.evictions as f64,
                "{name}: {calls} calls for {} evictions",
                prefetched.evictions
            );
        }
    }

    /// A backlog larger than one call takes (a flush was missed) goes to the
    /// guest through `observe` in bounded chunks before the decision, and the
    /// decision sees every event of it.
    #[test]
    fn policy_a_backlog_past_one_call_is_delivered_in_chunks_before_the_decision() {
        let backlog = shadowcat::wasm::EVENTS_PER_CALL + 10;
        let policy = load(&policy_file("lru"), backlog as u64, &[]);
        let id = |slot: usize| SessionId::from_bits(slot as u64 | (5 << 32));
        for slot in 1..=backlog {
            policy.record(PolicyEvent::Inserted {
                id: id(slot),
                time: slot as u64,
                weight: 1,
                key: 0,
                tenant: 0,
            });
        }
        policy.record(PolicyEvent::Accessed {
            id: id(1),
            time: backlog as u64 + 1,
            weight: 1,
        });
        assert_eq!(policy.pending_events(), backlog + 1);
        let calls_before = policy.metrics().calls;
        let mut victims = Vec::new();
        policy
            .victims(VictimRequest::count(3), &mut victims)
            .expect("answers");
        assert_eq!(victims, [id(2), id(3), id(4)], "the last access was seen");
        let m = policy.metrics();
        assert_eq!(m.events_delivered, backlog as u64 + 1);
        assert_eq!(
            m.calls - calls_before,
            3,
            "two observe chunks, then the decision: {m:?}"
        );
        assert_eq!(policy.pending_events(), 0);
        assert_eq!(m.faults(), 0);
    }

    /// A policy told of refusals may answer differently once it knows: sieve.wasm
    /// holds a pinned proposal back for one eviction, which victims it chose
    /// before the refusal cannot reflect. The host drops them and asks again;
    /// while the refused one waits the answer is the next step alone, and
    /// after an eviction the refused one comes first again, the plan behind it.
    #[test]
    fn policy_a_refusal_drops_the_victims_chosen_ahead() {
        let policy = load(&policy_file("sieve"), 64, &[]);
        assert!(policy.info().traits.stable_order && policy.info().needs.refused);
        let id = |slot: u64| SessionId::from_bits(slot | (1 << 32));
        for slot in 1..=5 {
            policy.record(PolicyEvent::Inserted {
                id: id(slot),
                time: slot,
                weight: 1,
                key: slot,
                tenant: 0,
            });
        }
        let (ask, ready) = (ask_victim, ready_victim);
        assert_eq!(ask(&policy), [id(1)]);
        policy.record(PolicyEvent::Refused {
            id: id(1),
            time: 6,
            reason: Refusal::Pinned,
        });
        assert_eq!(ready(&policy), [], "what was chosen before the refusal");
        assert_eq!(ask(&policy), [id(2)]);
        assert_eq!(ready(&policy), [], "1 is due again after this eviction");
        record_evicted(&policy, id(2), 7);
        assert_eq!(ask(&policy), [id(1)]);
        assert_eq!(ready(&policy), [id(3)], "the plan behind it");
        assert_eq!(policy.metrics().faults(), 0);
    }

    /// Components built against interfaces 0.1 and 0.2 still load and
    /// decide exactly: 0.1's adapted to the current layouts by the host,
    /// 0.2's (lru-c, built from `wit/0.2.0` alone) in the layouts 0.3 kept.
    #[test]
    fn policy_interface_0_1_and_0_2_components_keep_loading() {
        let policy = load(&fixture("lru-0.1.wasm"), 4_897, &[]);
        let info = policy.info();
        assert_eq!(info.interface, shadowcat::wasm::InterfaceVersion::V0_1);
        assert!(!info.traits.stable_order && !info.needs.refused);
        assert_eq!(replay_misses(policy.clone()), 91_657);
        assert_eq!(policy.metrics().faults(), 0);
        let previous = load(&policy_file("lru-c"), 4_897, &[]);
        let info = previous.info();
        assert_eq!(info.interface, shadowcat::wasm::InterfaceVersion::V0_2);
        assert!(info.traits.stable_order && !info.traits.ghost_conditional);
        assert_eq!(replay_misses(previous.clone()), 91_657);
        assert_eq!(previous.metrics().faults(), 0);
        let current = load(&policy_file("lru"), 4_897, &[]);
        assert_eq!(
            current.info().interface,
            shadowcat::wasm::InterfaceVersion::V0_3
        );
    }

    /// A sampled policy chooses among the candidates the table draws: every
    /// proposal is live and unpinned, so none is refused or replaced.
    #[test]
    fn policy_sampled_candidates_reach_a_wasm_policy() {
        let policy = load(
            &fixture("hostile.wasm"),
            64,
            &[("traits", "sampled"), ("sample-size", "8")],
        );
        assert!(policy.info().traits.sampled);
        assert_eq!(policy.info().sample_size, 8);
        let (table, pinned) = churn(policy.clone(), 400);
        assert_table_sound(&table, &pinned);
        let m = table.metrics();
        assert!(m.evicted > 300, "{m:?}");
        assert_eq!((m.invalid_victims, m.fallback_victims), (0, 0), "{m:?}");
        assert_eq!(policy.metrics().faults(), 0);
    }

    #[test]
    fn policy_wasm_lfu_matches_the_reference_definition() {
        let policy = load(&policy_file("lfu"), 4_897, &[]);
        assert_eq!(replay_misses(policy.clone()), 90_040);
        assert_eq!(policy.metrics().faults(), 0);
    }

    /// Table invariants after a hostile run: nothing lost, nothing over the bound.
    fn assert_table_sound(table: &SessionTable<()>, pinned: &[SessionId]) {
        let stats = table.stats();
        let m = table.metrics();
        assert!(stats.live <= table.config().max_sessions);
        assert_eq!(stats.lru_len, stats.live);
        assert_eq!(m.created, stats.live as u64 + m.removed(), "{m:?}");
        for id in pinned {
            assert!(table.get(*id).is_some(), "a pinned session was evicted");
        }
    }

    /// A `ghost-conditional` policy choosing as LRU: with no ghosts reported
    /// every arrival is a stranger, and the host hands out its victims ahead
    /// (a fraction of the calls); one that floods the host with a million
    /// ghost keys per answer, as changes and as replacements in turn, costs
    /// only that: the host keeps no more than its bound, hands out nothing
    /// ahead while it cannot tell strangers apart, and the table works on,
    /// every victim the policy's.
    #[test]
    fn policy_a_flood_of_ghosts_costs_the_plan_not_the_table() {
        let mut calls = Vec::new();
        for mode in ["lru", "ghost-flood"] {
            let policy = load(
                &fixture("hostile.wasm"),
                32,
                &[("mode", mode), ("traits", "ghost-conditional")],
            );
            assert!(policy.info().traits.ghost_conditional, "{mode}");
            let table: SessionTable<()> = SessionTable::builder(TableConfig::unbounded_in_time(32))
                .policy(policy.clone())
                .clock(Clock::manual())
                .build()
                .expect("table");
            for i in 0..400u64 {
                table.clock().set(i);
                let key = 1 + i % 50;
                let id = table
                    .create(NewSession::anonymous(()).with_key(key))
                    .expect("create")
                    .id;
                let _ = table.touch(id, 1);
            }
            assert_table_sound(&table, &[]);
            let m = table.metrics();
            assert!(m.evicted > 300, "{mode}: {m:?}");
            assert_eq!(m.fallback_victims + m.invalid_victims, 0, "{mode}: {m:?}");
            let p = policy.metrics();
            assert_eq!(p.faults() + p.guest_errors, 0, "{mode}: {p:?}");
            assert_eq!(p.excess_victims, 0, "{mode}: the ghosts are no victims");
            calls.push((p.calls, m.evicted));
        }
        let [(lru_calls, lru_evicted), (flood_calls, flood_evicted)] = calls[..] else {
            unreachable!()
        };
        assert!(lru_calls * 4 < lru_evicted, "{calls:?}");
        assert!(flood_calls >= flood_evicted, "{calls:?}");
    }

    /// Fills a table over capacity with `policy`, pinning a few sessions, and
    /// returns it with its pinned ids.
    fn churn(policy: Arc<WasmPolicy>, creates: usize) -> (SessionTable<()>, Vec<SessionId>) {
        let table: SessionTable<()> = SessionTable::builder(TableConfig::unbounded_in_time(32))
            .policy(policy.clone())
            .clock(Clock::manual())
            .build()
            .expect("table");
        let mut pinned = Vec::new();
        for i in 0..creates {
            table.clock().set(i as u64);
            let id = table
                .create(NewSession::new(()))
                .expect("create never fails")
                .id;
            if i < 4 {
                table.begin_request(id, 0).expect("pin");
                pinned.push(id);
            }
            let _ = table.touch(id, 1);
            if i >= 32 {
                // Let the fault backoff (1-4 ms) pass so recovery is attempted.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        (table, pinned)
    }

    #[test]
    fn policy_hostile_infinite_loop_times_out_falls_back_and_is_quarantined() {
        with_watchdog(Duration::from_secs(120), || {
            let config = vec![("mode".to_string(), "loop".to_string())];
            let policy = WasmPolicy::load(tight_engine(), &fixture("hostile.wasm"), 32, config)
                .expect("loads");
            let (table, pinned) = churn(policy.clone(), 100);
            assert_table_sound(&table, &pinned);
            let m = policy.metrics();
            assert!(m.timeouts >= 1, "{m:?}");
            assert!(m.fallbacks >= 1, "{m:?}");
            assert!(
                policy.is_quarantined(),
                "three timeouts in a row quarantine it: {m:?}"
            );
            assert_eq!(m.quarantines, 1);
            assert!(table.metrics().fallback_victims > 0);
            // A quarantined policy buffers nothing: its events would never leave.
            for i in 0..100_000u64 {
                let id = SessionId::from_bits(i);
                policy.record(PolicyEvent::Accessed {
                    id,
                    time: i,
                    weight: 1,
                });
            }
            assert_eq!(policy.pending_events(), 0);
        });
    }

    #[test]
    fn policy_hostile_memory_bomb_hits_the_cap_and_is_counted() {
        with_watchdog(Duration::from_secs(120), || {
            // Generous time, small cap: the cap, not the clock, must stop it.
            let engine = engine_with(PolicyLimits {
                call_timeout: Duration::from_secs(2),
                memory_bytes: 16 << 20,
                backoff_base: Duration::from_millis(1),
                backoff_max: Duration::from_millis(4),
                max_consecutive_faults: 3,
                ..PolicyLimits::default()
            });
            let config = vec![("mode".to_string(), "bomb".to_string())];
            let policy =
                WasmPolicy::load(engine, &fixture("hostile.wasm"), 32, config).expect("loads");
            let (table, pinned) = churn(policy.clone(), 60);
            assert_table_sound(&table, &pinned);
            let m = policy.metrics();
            assert!(m.memory_faults >= 1, "{m:?}");
            assert_eq!(m.timeouts, 0, "{m:?}");
            assert!(m.fallbacks >= 1);
            assert!(policy.is_quarantined());
        });
    }

    #[test]
    fn policy_hostile_panic_traps_and_decisions_continue_from_the_fallback() {
        let policy = hostile("panic", 32);
        let (table, pinned) = churn(policy.clone(), 100);
        assert_table_sound(&table, &pinned);
        let m = policy.metrics();
        assert!(m.traps >= 1, "{m:?}");
        assert!(m.reinstantiations >= 1, "a fresh instance was tried: {m:?}");
        assert!(policy.is_quarantined());
        // The SDK's panic hook told the host why, before the trap.
        let problem = policy.last_problem().unwrap_or_default();
        assert!(
            problem.contains("unreachable")
                && problem.contains("panicked at hostile/src/lib.rs:")
                && problem.contains("panicking as configured (mode=panic)"),
            "{problem}"
        );
        assert_eq!(
            table.len(),
            32,
            "every create succeeded through the fallback"
        );
    }

    /// Issue 10, item 8: an `Err` answer is a soft failure. It costs the one
    /// decision (the host answers it), keeps the instance, and never counts
    /// toward quarantine, however often it happens.
    #[test]
    fn policy_hostile_error_answers_cost_one_decision_and_keep_the_instance() {
        let policy = hostile("error", 32);
        let (table, pinned) = churn(policy.clone(), 100);
        assert_table_sound(&table, &pinned);
        let m = policy.metrics();
        let decisions = 100 - 32;
        assert_eq!(m.guest_errors, decisions, "{m:?}");
        assert_eq!(m.faults(), 0, "an error is not a fault: {m:?}");
        assert_eq!(m.reinstantiations, 0, "the instance was kept: {m:?}");
        assert_eq!(m.quarantines, 0, "{m:?}");
        assert!(!policy.is_quarantined());
        let tm = table.metrics();
        assert_eq!(tm.evicted, decisions);
        assert_eq!(
            tm.fallback_faulted, decisions,
            "each failed decision fell back: {tm:?}"
        );
        assert!(policy
            .last_problem()
            .is_some_and(|p| p.contains("refusing to choose")));
        // The same instance keeps answering other calls.
        let calls = m.calls;
        table.run_maintenance();
        assert!(policy.metrics().calls > calls);
        assert_eq!(policy.metrics().faults(), 0);
    }

    /// Issue 10, item 7: a guest trapping on every 7th call never makes a
    /// streak (each recovered instance answers a few calls first), so only the
    /// fault rate over a window of calls can quarantine it.
    #[test]
    fn policy_hostile_fault_every_seventh_call_is_quarantined_by_its_rate() {
        let engine = engine_with(PolicyLimits {
            call_timeout: Duration::from_secs(5),
            backoff_base: Duration::ZERO,
            max_consecutive_faults: 3,
            fault_window: 200,
            max_window_faults: 10,
            ..PolicyLimits::default()
        });
        let config = vec![
            ("mode".to_string(), "trap-every".to_string()),
            ("every".to_string(), "7".to_string()),
        ];
        let policy = WasmPolicy::load(engine, &fixture("hostile.wasm"), 32, config).expect("loads");
        let (table, pinned) = churn(policy.clone(), 200);
        assert_table_sound(&table, &pinned);
        let m = policy.metrics();
        assert!(policy.is_quarantined(), "{m:?}");
        assert_eq!(m.quarantines, 1);
        assert_eq!(
            m.traps, 10,
            "quarantined at the 10th fault within 200 calls, never by a streak of 3: {m:?}"
        );
        assert!(m.reinstantiations >= 9, "{m:?}");
        assert_eq!(
            table.len(),
            32,
            "every create succeeded through the fallback"
        );
    }

    /// Issue 10, item 10: recovery replays every live session into the new
    /// instance; in one call a big table would blow a slow guest's deadline and
    /// quarantine it through its own recovery. The fixture traps (as a missed
    /// deadline would) when one `observe` carries more than 5,000 events.
    #[test]
    fn policy_warm_up_after_a_fault_is_chunked_to_fit_one_call() {
        const LIVE: u64 = 20_000;
        let engine = retrying_engine();
        let config = vec![
            ("mode".to_string(), "trap-at".to_string()),
            ("at".to_string(), "500".to_string()),
            ("max-observe".to_string(), "5000".to_string()),
        ];
        let policy =
            WasmPolicy::load(engine, &fixture("hostile.wasm"), LIVE, config).expect("loads");
        let table = shared_table(&policy, LIVE as usize);
        for i in 0..LIVE {
            table.clock().set(i);
            table.create(NewSession::anonymous(())).expect("create");
        }
        // Tick until call 500 of the instance traps.
        for tick in 0..1_000 {
            if policy.metrics().traps > 0 {
                break;
            }
            policy.maintain(LIVE + tick);
        }
        assert_eq!(policy.metrics().traps, 1);
        let mut proposed = Vec::new();
        policy
            .victims(VictimRequest::count(1), &mut proposed)
            .expect("the recreated, warmed instance answers");
        assert_eq!(proposed, vec![table.recency_order()[0].id]);
        let m = policy.metrics();
        assert_eq!(m.traps, 1, "the warm-up itself did not fault: {m:?}");
        assert_eq!(m.reinstantiations, 1, "{m:?}");
        assert!(!policy.is_quarantined());
        assert!(LIVE as usize > shadowcat::wasm::EVENTS_PER_CALL);
    }

    /// Events the table held back when an instance died are covered by the
    /// snapshot that warms the next one: handed over and dropped at the
    /// snapshot, never replayed on top of it (a frequency policy would count
    /// those requests twice).
    #[test]
    fn policy_recovery_drops_the_held_events_its_snapshot_covers() {
        let engine = retrying_engine();
        // create and info are calls 1 and 2; the sixth maintain is call 8 and
        // traps. The fresh instance makes fewer than 8 calls below.
        let config = vec![
            ("mode".to_string(), "trap-at".to_string()),
            ("at".to_string(), "8".to_string()),
        ];
        let policy = WasmPolicy::load(engine, &fixture("hostile.wasm"), 16, config).expect("loads");
        let table = shared_table(&policy, 16);
        let ids: Vec<SessionId> = (0..8)
            .map(|_| table.create(NewSession::new(())).expect("create").id)
            .collect();
        for &id in &ids[..4] {
            table.touch(id, 1).expect("touch");
        }
        // Twelve events held in the table; nothing asked of the policy yet.
        assert_eq!(policy.pending_events(), 0);
        for tick in 0..10 {
            if policy.metrics().traps > 0 {
                break;
            }
            policy.maintain(tick);
        }
        assert_eq!(policy.metrics().traps, 1);
        let delivered = policy.metrics().events_delivered;
        // The next call recreates the instance from the table's snapshot.
        policy.maintain(100);
        let m = policy.metrics();
        assert_eq!(m.reinstantiations, 1, "{m:?}");
        assert_eq!(
            m.events_delivered, delivered,
            "the held events were covered by the snapshot, not delivered again"
        );
        assert_eq!(policy.pending_events(), 0);
        let mut proposed = Vec::new();
        policy
            .victims(VictimRequest::count(8), &mut proposed)
            .expect("the warmed instance answers");
        let order: Vec<SessionId> = ids[4..].iter().chain(&ids[..4]).copied().collect();
        assert_eq!(proposed, order, "the warmed instance has the table's order");
    }

    /// Issue 10, items 5 and 6: whatever a guest returns as a name, version,
    /// error or log line is stored cut to a bound, with a marker, and with its
    /// control characters escaped.
    #[test]
    fn policy_guest_strings_are_bounded_marked_and_escaped() {
        let marker = "(cut, 1048576 bytes)";
        let clean = |text: &str, bound: usize| {
            assert!(text.len() <= bound + 32, "{} bytes", text.len());
            assert!(text.contains(marker), "{text}");
            assert!(!text.chars().any(char::is_control), "{text:?}");
            assert!(text.contains("\\nERROR shadowcat"), "{text}");
        };
        let policy = hostile("huge-name", 32);
        let info = policy.info();
        clean(&info.name, shadowcat::wasm::MAX_NAME);
        clean(&info.version, shadowcat::wasm::MAX_VERSION);
        assert_eq!(EvictionPolicy::name(policy.as_ref()), info.name);

        let config = vec![("mode".to_string(), "huge-create-error".to_string())];
        let err = WasmPolicy::load(engine(), &fixture("hostile.wasm"), 10, config)
            .err()
            .expect("create refused");
        let PolicyError::CreateRejected { message, .. } = &err else {
            panic!("{err:?}");
        };
        clean(message, shadowcat::wasm::MAX_ERROR);
        assert!(err.to_string().len() < 1_024);

        let policy = hostile("huge-error", 32);
        let (table, _) = churn(policy.clone(), 34);
        table.run_maintenance();
        let m = policy.metrics();
        assert!(m.guest_errors >= 3, "victims twice, maintain once: {m:?}");
        let problem = policy.last_problem().expect("an error was kept");
        clean(&problem, shadowcat::wasm::MAX_ERROR + 32);
    }

    /// Issue 10, item 10: a create that runs into the call deadline says so,
    /// with the limit and the option that raises it.
    #[test]
    fn policy_create_timeout_names_the_limit_and_the_option() {
        let config = vec![("mode".to_string(), "create-loop".to_string())];
        let err = WasmPolicy::load(tight_engine(), &fixture("hostile.wasm"), 10, config)
            .err()
            .expect("create interrupted");
        assert!(matches!(err, PolicyError::Timeout { .. }), "{err:?}");
        let text = err.to_string();
        for part in ["timed out during create", "after 20ms", "--policy-timeout"] {
            assert!(text.contains(part), "`{part}` missing: {text}");
        }
    }

    /// Issue 10, item 10: the name a policy goes by follows a hot reload, and
    /// a name borrowed before the reload stays valid.
    #[test]
    fn policy_name_follows_a_hot_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("current.wasm");
        std::fs::copy(policy_file("lru"), &file).expect("copy");
        let policy = WasmPolicy::load(engine(), &file, 16, Vec::new()).expect("load");
        let before = EvictionPolicy::name(policy.as_ref());
        assert_eq!(before, "lru");
        replace_file(&file, &std::fs::read(policy_file("fifo")).expect("fifo"));
        policy.reload().expect("reload");
        assert_eq!(EvictionPolicy::name(policy.as_ref()), "fifo");
        assert_eq!(before, "lru");
        assert_eq!(policy.info().name, "fifo");
    }

    #[test]
    fn policy_hostile_bad_victims_are_ignored_and_counted() {
        let policy = hostile("bad-victims", 32);
        let (table, pinned) = churn(policy.clone(), 200);
        assert_table_sound(&table, &pinned);
        let m = table.metrics();
        assert!(
            m.invalid_victims > 0,
            "nonexistent/pinned ids refused: {m:?}"
        );
        assert_eq!(m.evicted, 200 - 32);
        assert_eq!(policy.metrics().faults(), 0, "bad answers are not faults");
    }

    #[test]
    fn policy_hostile_million_victims_evict_only_what_is_needed() {
        // Building and copying a million ids takes a while on a loaded machine:
        // the test is about the answer's size, not about the deadline.
        let engine = engine_with(PolicyLimits {
            call_timeout: Duration::from_secs(5),
            ..PolicyLimits::default()
        });
        let config = vec![("mode".to_string(), "million".to_string())];
        let policy = WasmPolicy::load(engine, &fixture("hostile.wasm"), 32, config).expect("loads");
        let (table, pinned) = churn(policy.clone(), 40);
        assert_table_sound(&table, &pinned);
        assert_eq!(table.metrics().evicted, 8);
        let m = policy.metrics();
        assert_eq!(m.faults(), 0, "{m:?}");
        assert_eq!(m.excess_victims, 8 * 999_999, "{m:?}");
    }

    #[test]
    fn policy_hostile_create_failure_shows_the_policy_message() {
        let config = vec![("mode".to_string(), "create-fail".to_string())];
        let err = WasmPolicy::load(engine(), &fixture("hostile.wasm"), 10, config)
            .err()
            .expect("create refused");
        assert!(matches!(err, PolicyError::CreateRejected { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("create refused by configuration (mode=create-fail)"),
            "{err}"
        );
    }

    #[test]
    fn policy_hostile_trap_on_the_thousandth_call_recovers_with_a_warmed_instance() {
        // No backoff: the next decision after a trap recreates the instance.
        let engine = retrying_engine();
        let config = vec![("mode".to_string(), "trap-at".to_string())];
        let policy = WasmPolicy::load(engine, &fixture("hostile.wasm"), 16, config).expect("loads");
        let table = shared_table(&policy, 16);
        let mut ids = Vec::new();
        for i in 0..3_000u64 {
            table.clock().set(i);
            ids.push(table.create(NewSession::new(())).expect("create").id);
        }
        let m = policy.metrics();
        assert!(m.traps >= 2, "call 1000 of each instance traps: {m:?}");
        assert_eq!(m.faults(), m.traps, "{m:?}");
        assert!(
            !policy.is_quarantined(),
            "one fault at a time never quarantines: {m:?}"
        );
        // Past the backoff, the policy decides again from a fresh instance that
        // was warmed with the live sessions: its victim is the table's least
        // recent session, as a native LRU would choose.
        std::thread::sleep(Duration::from_millis(20));
        // Asked directly below, not by the table: told of the requests first.
        table.flush_policy();
        let mut proposed = Vec::new();
        policy
            .victims(VictimRequest::count(1), &mut proposed)
            .expect("the recreated instance answers");
        let oldest = table.recency_order()[0].id;
        assert_eq!(proposed, vec![oldest]);
        let m = policy.metrics();
        assert!(
            m.reinstantiations >= m.traps,
            "each trap was followed by a fresh instance: {m:?}"
        );
        let tm = table.metrics();
        assert_eq!(tm.created, 3_000);
        assert_eq!(table.len(), 16);
        assert_eq!(tm.evicted, 3_000 - 16, "no create failed");
        assert_eq!(
            tm.fallback_victims, m.traps,
            "only the trapped decisions fell back: {tm:?}"
        );
    }

    #[test]
    fn policy_quota_adjustments_are_clamped_to_the_configured_bounds() {
        let policy = hostile("quota", 8);
        let bounds = QuotaBounds {
            min_per_second: 2,
            max_per_second: 300,
            min_burst: 3,
            max_burst: 40,
        };
        let config = TableConfig {
            rate_limit: Some(RateLimit {
                per_second: 100.try_into().expect("non-zero"),
                burst: 10.try_into().expect("non-zero"),
            }),
            quota_bounds: bounds,
            ..TableConfig::unbounded_in_time(8)
        };
        let table: SessionTable<()> = SessionTable::builder(config)
            .policy(policy.clone())
            .clock(Clock::manual())
            .build()
            .expect("table");
        let busy = table.create(NewSession::new(())).expect("create").id;
        let idle = table.create(NewSession::new(())).expect("create").id;
        table.clock().set(1_000_000);
        table.touch(busy, 1).expect("touch");
        table.run_maintenance();
        let adjusted = table.rate_limit(busy).expect("live").expect("limited");
        assert_eq!(
            adjusted.per_second.get(),
            300,
            "clamped down to the maximum"
        );
        assert_eq!(adjusted.burst.get(), 3, "clamped up to the minimum");
        assert_eq!(
            table
                .rate_limit(idle)
                .expect("live")
                .map(|l| l.per_second.get()),
            Some(100),
            "sessions without recent use keep their quota"
        );
        assert!(policy.metrics().quota_adjustments >= 1);
    }

    #[test]
    fn policy_loading_errors_say_what_is_wrong() {
        let err = WasmPolicy::load(engine(), &fixture("core-module.wasm"), 10, Vec::new())
            .err()
            .expect("core module refused");
        assert!(matches!(err, PolicyError::CoreModule { .. }), "{err}");
        assert!(err.to_string().contains("not a component"));

        let err = WasmPolicy::load(engine(), &fixture("wrong-version.wasm"), 10, Vec::new())
            .err()
            .expect("wrong version refused");
        let text = err.to_string();
        assert!(
            text.contains(
                "expected `shadowcat:policy/policy@0.3.0`, `shadowcat:policy/policy@0.2.0` or `shadowcat:policy/policy@0.1.0`"
            ),
            "{text}"
        );
        assert!(
            text.contains("found `shadowcat:policy/policy@0.99.0`"),
            "{text}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.wasm");
        std::fs::write(&junk, b"definitely not wasm").expect("write");
        let err = WasmPolicy::load(engine(), &junk, 10, Vec::new())
            .err()
            .expect("junk refused");
        assert!(matches!(err, PolicyError::NotWasm { .. }), "{err}");

        let config = vec![("colour".to_string(), "blue".to_string())];
        let err = WasmPolicy::load(engine(), &policy_file("lru"), 10, config)
            .err()
            .expect("unknown key refused");
        assert!(matches!(err, PolicyError::CreateRejected { .. }), "{err}");
        assert!(
            err.to_string().contains("colour"),
            "the policy's own message: {err}"
        );

        let dirs = vec![PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies"
        ))];
        let err = shadowcat::wasm::locate("no-such-policy", &dirs).expect_err("not shipped");
        let text = err.to_string();
        assert!(
            text.contains("lru") && text.contains("lfu.wasm"),
            "lists what exists: {text}"
        );
        assert_eq!(
            shadowcat::wasm::locate("lfu", &dirs).expect("found"),
            shadowcat::wasm::PolicySource::File(dirs[0].join("lfu.wasm"))
        );
        assert_eq!(
            shadowcat::wasm::locate("lru", &dirs).expect("built in"),
            shadowcat::wasm::PolicySource::Builtin("lru")
        );
    }

    #[test]
    fn policy_compiled_artefacts_are_cached_by_content() {
        let cache = tempfile::tempdir().expect("tempdir");
        let engine = PolicyEngine::new(PolicyLimits::default(), Some(cache.path().to_owned()))
            .expect("engine");
        let first = engine.load(&policy_file("lfu")).expect("cold load");
        assert!(!first.from_cache);
        let second = engine.load(&policy_file("lfu")).expect("cached load");
        assert!(second.from_cache);
        assert_eq!(first.sha256, second.sha256);
        // A changed file is a different key, never a stale artefact.
        let other = engine.load(&policy_file("lru")).expect("other policy");
        assert!(!other.from_cache);
        let entries = std::fs::read_dir(cache.path()).expect("cache dir").count();
        assert_eq!(entries, 2);
    }

    /// The one artefact file in a cache directory (temporary files are gone).
    fn only_artefact(dir: &Path) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("cache dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.into_iter().next().expect("one")
    }

    /// Issue 10, item 11: an artefact whose bytes no longer match the digest
    /// recorded at compile time is never deserialized; it is recompiled and
    /// replaced.
    #[test]
    fn policy_cache_rejects_a_tampered_artefact_and_recompiles() {
        let cache = tempfile::tempdir().expect("tempdir");
        let engine = PolicyEngine::new(PolicyLimits::default(), Some(cache.path().to_owned()))
            .expect("engine");
        assert!(!engine.load(&policy_file("lru")).expect("cold").from_cache);
        let artefact = only_artefact(cache.path());
        let mut bytes = std::fs::read(&artefact).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&artefact, &bytes).expect("tamper");
        let reloaded = engine.load(&policy_file("lru")).expect("recompiled");
        assert!(!reloaded.from_cache, "the tampered artefact was not used");
        assert_ne!(
            std::fs::read(&artefact).expect("read"),
            bytes,
            "and was replaced"
        );
        assert!(engine.load(&policy_file("lru")).expect("cached").from_cache);
        // A policy from the recompiled artefact still works.
        let policy = WasmPolicy::load(engine, &policy_file("lru"), 8, Vec::new()).expect("loads");
        assert_eq!(policy.info().name, "lru");
    }

    /// Issue 10, item 11: the cache directory is created private, and one that
    /// others may write is refused (nothing is read from or written to it).
    #[cfg(unix)]
    #[test]
    fn policy_cache_is_private_and_refuses_a_group_writable_directory() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let fresh = root.path().join("new").join("cache");
        let engine =
            PolicyEngine::new(PolicyLimits::default(), Some(fresh.clone())).expect("engine");
        assert_eq!(engine.cache_dir(), Some(fresh.as_path()));
        let mode = std::fs::metadata(&fresh)
            .expect("created")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).expect("chmod");
        let engine =
            PolicyEngine::new(PolicyLimits::default(), Some(shared.clone())).expect("engine");
        assert_eq!(
            engine.cache_dir(),
            None,
            "a group-writable cache is refused"
        );
        assert!(
            !engine
                .load(&policy_file("lru"))
                .expect("compiles")
                .from_cache
        );
        assert!(
            !engine
                .load(&policy_file("lru"))
                .expect("compiles")
                .from_cache
        );
        assert_eq!(std::fs::read_dir(&shared).expect("dir").count(), 0);

        // Loosened after the engine accepted it: checked again on every use.
        let later = root.path().join("later");
        let engine =
            PolicyEngine::new(PolicyLimits::default(), Some(later.clone())).expect("engine");
        assert!(!engine.load(&policy_file("lru")).expect("cold").from_cache);
        std::fs::set_permissions(&later, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(
            !engine
                .load(&policy_file("lru"))
                .expect("not from cache")
                .from_cache
        );
    }

    #[test]
    fn policy_hot_reload_under_concurrent_load_swaps_and_survives_a_broken_file() {
        with_watchdog(Duration::from_secs(180), || {
            let dir = tempfile::tempdir().expect("tempdir");
            let live_file = dir.path().join("current.wasm");
            std::fs::copy(policy_file("lru"), &live_file).expect("copy");
            let policy = WasmPolicy::load(engine(), &live_file, 64, Vec::new()).expect("load");
            let table = shared_table(&policy, 64);
            policy.watch(Duration::from_millis(20)).expect("watcher");
            let stop = Arc::new(AtomicBool::new(false));
            let workers: Vec<_> = (0..6)
                .map(|t| {
                    let (table, stop) = (Arc::clone(&table), stop.clone());
                    std::thread::spawn(move || {
                        let mut rng = SmallRng::seed_from_u64(t);
                        let mut mine: Vec<SessionId> = Vec::new();
                        let mut ops = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            if mine.is_empty() || rng.random_range(0..4) == 0 {
                                match table.create(NewSession::new(())) {
                                    Ok(c) => mine.push(c.id),
                                    Err(e) => panic!("create failed during reload: {}", e.error),
                                }
                            } else {
                                let id = mine[rng.random_range(0..mine.len())];
                                match table.touch(id, 1) {
                                    Ok(()) | Err(TableError::UnknownSession(_)) => {}
                                    Err(e) => panic!("touch failed: {e}"),
                                }
                            }
                            if mine.len() > 128 {
                                mine.drain(..64);
                            }
                            ops += 1;
                        }
                        ops
                    })
                })
                .collect();
            let wait_for = |what: &str, check: &dyn Fn() -> bool| {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !check() {
                    assert!(Instant::now() < deadline, "timed out waiting for {what}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            std::thread::sleep(Duration::from_millis(100));
            replace_file(
                &live_file,
                &std::fs::read(policy_file("fifo")).expect("fifo"),
            );
            wait_for("the fifo reload", &|| policy.metrics().hot_reloads == 1);
            assert_eq!(policy.info().name, "fifo");
            std::thread::sleep(Duration::from_millis(100));
            replace_file(&live_file, b"\0asm garbage that is no component");
            wait_for("the failed reload", &|| {
                policy.metrics().hot_reload_failures == 1
            });
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
            let ops: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
            assert!(ops > 1_000, "load kept running: {ops}");
            assert_eq!(
                policy.info().name,
                "fifo",
                "the broken file left fifo running"
            );
            let m = policy.metrics();
            assert_eq!((m.hot_reloads, m.hot_reload_failures), (1, 1), "{m:?}");
            assert_eq!(m.faults(), 0, "{m:?}");
            let tm = table.metrics();
            assert_eq!(tm.created, table.len() as u64 + tm.removed());
            assert_eq!(table.stats().lru_len, table.len());
            // The reloaded policy still decides: its victim is a live session.
            table.flush_policy();
            let mut proposed = Vec::new();
            policy
                .victims(VictimRequest::count(1), &mut proposed)
                .expect("the reloaded policy answers");
            assert_eq!(proposed.len(), 1);
            assert!(table.get(proposed[0]).is_some());
        });
    }

    /// lfu.wasm and sieve.wasm have arrivals follow their answers, queued
    /// by the host as other threads insert, request and close sessions, and
    /// handed out under the table lock while the next call may be under way.
    /// Under six threads at once nothing hangs, nothing is lost or counted
    /// twice, the policy never faults, and most evictions still need no call.
    #[test]
    fn policy_arrivals_follow_under_concurrent_load_without_losing_a_session() {
        for name in ["lfu", "sieve"] {
            with_watchdog(Duration::from_secs(180), move || {
                let policy =
                    WasmPolicy::load(engine(), &policy_file(name), 64, Vec::new()).expect("load");
                let table = shared_table(&policy, 64);
                // Every worker starts at once, so that their operations interleave.
                let start = Arc::new(std::sync::Barrier::new(6));
                let workers: Vec<_> = (0..6)
                    .map(|t| {
                        let (table, start) = (Arc::clone(&table), Arc::clone(&start));
                        std::thread::spawn(move || {
                            let mut rng = SmallRng::seed_from_u64(t);
                            start.wait();
                            let mut mine: Vec<SessionId> = Vec::new();
                            for _ in 0..3_000 {
                                match rng.random_range(0..20) {
                                    0..=11 => {
                                        let created = table
                                            .create(NewSession::new(()))
                                            .unwrap_or_else(|e| panic!("create: {}", e.error));
                                        mine.push(created.id);
                                    }
                                    12..=18 if !mine.is_empty() => {
                                        let id = mine[rng.random_range(0..mine.len())];
                                        match table.touch(id, 1) {
                                            Ok(()) | Err(TableError::UnknownSession(_)) => {}
                                            Err(e) => panic!("touch: {e}"),
                                        }
                                    }
                                    _ if !mine.is_empty() => {
                                        let id = mine.swap_remove(rng.random_range(0..mine.len()));
                                        let _ = table.remove(id, RemovalCause::Closed);
                                    }
                                    _ => {}
                                }
                                if mine.len() > 96 {
                                    mine.drain(..48);
                                }
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    worker.join().expect("worker");
                }
                let m = policy.metrics();
                assert_eq!(m.faults() + m.guest_errors, 0, "{name}: {m:?}");
                let tm = table.metrics();
                assert_eq!(tm.created, table.len() as u64 + tm.removed(), "{name}");
                assert_eq!(table.stats().lru_len, table.len(), "{name}");
                assert!(table.len() <= 64, "{name}: {}", table.len());
                assert!(tm.evicted > 5_000, "{name}: {tm:?}");
                assert!(
                    m.calls * 2 < tm.evicted,
                    "{name}: {} calls for {} evictions",
                    m.calls,
                    tm.evicted
                );
            });
        }
    }

    fn replace_file(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
}

mod policy_signals {
    use std::sync::Arc;
    use std::time::Duration;

    use shadowcat::wasm::{PolicyEngine, PolicyLimits, WasmPolicy};

    use crate::common::policy_file;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn policy_sighup_reloads_the_policy_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("policy.wasm");
        std::fs::copy(policy_file("lru"), &file).expect("copy");
        let engine = PolicyEngine::new(PolicyLimits::default(), None).expect("engine");
        let policy = WasmPolicy::load(engine, &file, 16, Vec::new()).expect("load");
        let listener = policy.reload_on_sighup().expect("signal handler");
        std::fs::copy(policy_file("lfu"), &file).expect("replace");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        for _ in 0..500 {
            if policy.metrics().hot_reloads == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(policy.metrics().hot_reloads, 1);
        assert_eq!(policy.info().name, "lfu");
        // The listener holds the policy weakly: once the reload's blocking
        // task has finished, dropping the last handle drops the policy even
        // though the listener still runs.
        for _ in 0..500 {
            if Arc::strong_count(&policy) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let weak = Arc::downgrade(&policy);
        drop(policy);
        assert!(
            weak.upgrade().is_none(),
            "the signal listener kept the policy alive"
        );
        assert!(!listener.is_finished());
        listener.abort();
    }
}

mod policy_cli {
    use crate::common::{fixture, shadowcat_cli, shadowcat_command, text};

    fn hostile() -> String {
        fixture("hostile.wasm").display().to_string()
    }

    /// Issue 10, item 9: `policy check` fails, with the reason, a policy that
    /// proposes garbage or nothing, answers with errors, or faults in any
    /// export (`maintain` and `adjust-quotas` included); correct ones pass.
    #[test]
    fn policy_cli_check_fails_policies_that_break_the_contract() {
        let hostile = hostile();
        let cases = [
            ("garbage", vec!["proposed victims were invalid"]),
            (
                "empty",
                vec!["chosen by the host", "proposed no valid victim"],
            ),
            (
                "bad-victims",
                vec!["proposed victims were invalid", "beyond the count"],
            ),
            (
                "error",
                vec!["answered calls with an error", "refusing to choose"],
            ),
            ("trap-maintain", vec!["faulted", "maintain: trap"]),
            ("trap-quotas", vec!["faulted", "adjust-quotas: trap"]),
            ("trap-every", vec!["faulted"]),
        ];
        for (mode, expected) in cases {
            let config = format!("mode={mode}");
            let out = shadowcat_cli(&["--policy-config", &config, "policy", "check", &hostile]);
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert_eq!(out.status.code(), Some(1), "{mode}: {stdout}{stderr}");
            assert!(stdout.contains("FAILED"), "{mode}: {stdout}");
            assert!(!stdout.lines().any(|l| l == "ok"), "{mode}: {stdout}");
            assert!(
                stderr.contains("does not keep the policy contract"),
                "{mode}: {stderr}"
            );
            for phrase in expected {
                assert!(
                    stderr.contains(phrase),
                    "{mode}: `{phrase}` missing: {stderr}"
                );
            }
        }
        for policy in ["lru.wasm", "fifo.wasm", "lfu", hostile.as_str()] {
            let out = shadowcat_cli(&["policy", "check", policy]);
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "{policy}: {stdout}{}",
                text(&out.stderr)
            );
            assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
            assert!(
                stdout.contains("0 invalid, 0 beyond the count; 0 evictions chosen by the host"),
                "{stdout}"
            );
            assert!(
                stdout.contains("rounds of maintain and adjust-quotas"),
                "{stdout}"
            );
        }
    }

    /// `stable-order` and `ghost-conditional` are promises the host trusts
    /// and cannot watch: a policy that breaks one decides differently with
    /// prefetch. `policy check` runs its workload with victims asked up to
    /// 128 at a time and one at a time and fails the policy when they differ, naming
    /// the promise and the way out. The same MRU without the trait passes,
    /// and so does an honest LRU with it.
    #[test]
    fn policy_cli_check_fails_a_stable_order_the_policy_does_not_keep() {
        let hostile = hostile();
        let deep = format!("up to {}", shadowcat::wasm::PREFETCH);
        let check = |config: &[&str], extra: &[&str]| {
            let mut args: Vec<&str> = extra.to_vec();
            for pair in config {
                args.extend(["--policy-config", pair]);
            }
            args.extend(["policy", "check", &hostile]);
            let out = shadowcat_cli(&args);
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        };
        for promise in ["stable-order", "ghost-conditional"] {
            let traits = format!("traits={promise}");
            let (code, stdout, stderr) = check(&["mode=mru", &traits], &[]);
            assert_eq!(code, Some(1), "{promise}: {stdout}{stderr}");
            assert!(
                stdout.contains(&format!(
                    "order       {promise} broken: other victims asked {deep} and 1 at a time"
                )),
                "{stdout}"
            );
            for phrase in [
                format!("the policy declares `{promise}`, but its victims change"),
                format!("asked for {deep} per call it evicted session"),
                "declare no stable order".to_owned(),
            ] {
                assert!(stderr.contains(&phrase), "`{phrase}` missing: {stderr}");
            }
            // Whichever way round the prefetch is set, the two runs differ.
            let (code, stdout, _) = check(&["mode=mru", &traits], &["--policy-prefetch", "1"]);
            assert_eq!(code, Some(1), "{stdout}");
            assert!(
                stdout.contains(&format!(
                    "broken: other victims asked 1 and {deep} at a time"
                )),
                "{stdout}"
            );
        }
        let (code, stdout, stderr) = check(&["mode=mru"], &[]);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(!stdout.contains("order "), "nothing to compare: {stdout}");
        let (code, stdout, stderr) = check(&["traits=stable-order"], &[]);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(
            stdout.contains(&format!(
                "order       stable-order kept: the same victims asked {deep} and 1"
            )),
            "{stdout}"
        );
    }

    /// An answer that names a victim twice is invalid, as the check's own
    /// message says, though the table, which stops at the room it needs,
    /// would never reach most repeats: the host counts them per answer.
    #[test]
    fn policy_cli_check_counts_victims_repeated_within_an_answer() {
        let hostile = hostile();
        let out = shadowcat_cli(&[
            "--policy-config",
            "mode=repeat",
            "--policy-config",
            "traits=stable-order",
            "policy",
            "check",
            &hostile,
        ]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stdout.contains("FAILED"), "{stdout}");
        for phrase in [
            "proposed victims were invalid",
            "repeated within one answer",
        ] {
            assert!(stderr.contains(phrase), "`{phrase}` missing: {stderr}");
        }
        // Its order is LRU's, repeats aside: that promise holds.
        assert!(stdout.contains("stable-order kept"), "{stdout}");
    }

    /// A panic in an SDK policy reaches the host's log at error level, with
    /// its message and location, before the trap, and the fault's reason
    /// (what `policy check` prints) carries it.
    #[test]
    fn policy_cli_a_panic_is_reported_with_its_message() {
        let out = shadowcat_cli(&[
            "--policy-config",
            "mode=panic",
            "policy",
            "check",
            &hostile(),
        ]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        let message = "panicked at hostile/src/lib.rs:";
        let said = "hostile policy: panicking as configured (mode=panic)";
        let logged = stderr
            .lines()
            .find(|l| l.contains("shadowcat::policy_log") && l.contains(message));
        assert!(
            logged.is_some_and(|l| l.contains("ERROR") && l.contains(said)),
            "{stderr}"
        );
        let failed = stdout.lines().find(|l| l.starts_with("FAILED"));
        assert!(
            failed.is_some_and(|l| l.contains("unreachable")
                && l.contains(&format!("the policy logged: {message}"))
                && l.contains(said)),
            "{stdout}"
        );
    }

    /// Issue 10, item 7: a fault is one WARN line naming the trap; the
    /// backtrace goes to DEBUG only.
    #[test]
    fn policy_cli_a_fault_is_one_warn_line_with_the_backtrace_at_debug() {
        let hostile = hostile();
        let run = |filter: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowcat"))
                .env("RUST_LOG", filter)
                .args(["--policy-cache", "off", "--policy-timeout", "10s"])
                .args(["--policy-config", "mode=trap-every"])
                .args(["bench", "--synthetic", "uniform:requests=2000,ids=200"])
                .args(["--capacity", "50", "--no-belady", "--policy", &hostile])
                .output()
                .expect("binary runs");
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stderr)
        };
        let warn = run("warn");
        let faults: Vec<&str> = warn
            .lines()
            .filter(|l| l.contains("policy fault"))
            .collect();
        assert!(!faults.is_empty(), "{warn}");
        for line in &faults {
            assert!(line.contains("WARN"), "{line}");
            assert!(line.contains("unreachable"), "names the trap: {line}");
        }
        assert!(!warn.contains("backtrace"), "no backtrace at WARN: {warn}");
        let debug = run("shadowcat=debug");
        assert!(debug.contains("policy fault detail"), "{debug}");
        assert!(debug.contains("backtrace"), "{debug}");
    }

    /// Issue 10, items 5, 6 and 10: a guest's 1 MiB log lines and name reach
    /// stderr and stdout cut and escaped (no forged host lines), and stderr
    /// carries no colour codes when it is not a terminal.
    #[test]
    fn policy_cli_guest_text_cannot_flood_or_forge_output() {
        let hostile = hostile();
        let out = shadowcat_cli(&[
            "--policy-config",
            "mode=huge-log",
            "bench",
            "--synthetic",
            "uniform:requests=3000,ids=300",
            "--capacity",
            "50",
            "--no-belady",
            "--policy",
            &hostile,
        ]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("(cut, 1048576 bytes)"), "{stderr}");
        assert!(
            stderr.contains("\\nERROR shadowcat: forged line\\r\\u{1b}[2K"),
            "{stderr}"
        );
        assert!(
            !stderr
                .lines()
                .any(|l| l.trim_start().starts_with("ERROR shadowcat: forged")),
            "{stderr}"
        );
        assert!(!stderr.contains('\x1b'), "no escape sequences on a pipe");
        assert!(!stderr.contains('\r'));
        // The log import admits 20 lines at once, then 10 a second.
        assert!(stderr.len() < 256 << 10, "{} bytes of stderr", stderr.len());

        let out = shadowcat_cli(&[
            "--policy-config",
            "mode=huge-name",
            "policy",
            "check",
            &hostile,
        ]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("(cut, 1048576 bytes)"), "{stdout}");
        assert!(stdout.len() < 4 << 10, "{} bytes of stdout", stdout.len());
        assert!(!stdout.contains('\x1b') && !stdout.contains('\r'));
    }

    /// A policy refused memory that carries on without it (the SDK's
    /// policies stop tracking what they cannot fit) neither faults nor hands
    /// an eviction to the host, so only the host's count of such calls can
    /// tell that its figures are not its design's: the bench must say so,
    /// and must not when the memory was enough.
    #[test]
    fn policy_cli_bench_reports_a_policy_that_ran_out_of_memory() {
        let bench = |memory: &str| {
            let out = shadowcat_cli(&[
                "--policy-memory",
                memory,
                "bench",
                "--synthetic",
                "zipf:alpha=0.5,requests=300000,ids=300000,seed=42",
                "--capacity",
                "50%",
                "--no-belady",
                "--policy",
                "arc.wasm",
                "--format",
                "json",
            ]);
            let stderr = text(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("a JSON report");
            let warnings: Vec<String> = report["warnings"]
                .as_array()
                .expect("a warnings list")
                .iter()
                .map(|w| w.as_str().expect("text").to_owned())
                .collect();
            let arc = report["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .find(|r| r["policy"] == "arc.wasm")
                .expect("an arc.wasm row")["misses"]
                .as_u64()
                .expect("misses");
            (warnings, stderr, arc)
        };
        let (warnings, stderr, starved_misses) = bench("6MiB");
        let refused: Vec<&String> = warnings
            .iter()
            .filter(|w| w.contains("refused memory past --policy-memory"))
            .collect();
        assert_eq!(refused.len(), 1, "{warnings:?}");
        assert!(
            refused[0].starts_with("arc.wasm at 50%: "),
            "{}",
            refused[0]
        );
        assert!(
            refused[0].contains("raise --policy-memory"),
            "{}",
            refused[0]
        );
        assert!(
            stderr.contains("policy was refused memory past --policy-memory")
                && stderr.contains("limit_mib=6"),
            "{stderr}"
        );

        let (warnings, stderr, ample_misses) = bench("64MiB");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!stderr.contains("refused memory"), "{stderr}");
        // The warning is about real damage: the starved run decided worse.
        assert!(
            starved_misses > ample_misses,
            "{starved_misses} vs {ample_misses}"
        );
    }

    #[test]
    fn policy_cli_list_shows_builtins_and_shipped_policies() {
        let out = shadowcat_cli(&["policy", "list"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list = text(&out.stdout);
        assert!(list.starts_with("NAME"), "{list}");
        let row_of = |file: &str| {
            list.lines()
                .find(|l| l.ends_with(file))
                .unwrap_or_else(|| panic!("no row for {file} in:\n{list}"))
        };
        for (name, needs) in [
            ("lru", "inserted+accessed+removed"),
            ("fifo", "inserted+removed"),
            ("lfu", "inserted+accessed+removed"),
        ] {
            let row = row_of(&format!("/{name}.wasm"));
            assert!(row.starts_with(name), "{row}");
            assert!(row.contains("0.1.0") && row.contains(needs), "{row}");
        }
        // The interface each file speaks and the traits it declares (what
        // decides whether the host may choose victims ahead).
        for (file, interface, traits) in [
            ("policies/lru.wasm", "0.3.0", "stable-order"),
            ("policies/lru-c.wasm", "0.2.0", "stable-order"),
            ("policies/lfu-decay.wasm", "0.3.0", "sampled"),
            ("policies/twoq.wasm", "0.3.0", "ghost-conditional"),
            ("policies/arc.wasm", "0.3.0", "none"),
        ] {
            let row = row_of(file);
            let words: Vec<&str> = row.split_whitespace().collect();
            assert_eq!((words[2], words[4]), (interface, traits), "{row}");
        }
        assert!(list.contains("(built in)"));
        // Columns line up however long a name or a needs label is
        // (`wtinylfu-tuned`, `inserted+accessed+removed+refused`).
        let header = list.lines().next().expect("a header");
        let (file_at, size_end) = (
            header.find("FILE").expect("FILE"),
            header.find("SIZE").expect("SIZE") + "SIZE".len(),
        );
        for row in list.lines().skip(1) {
            let (before, file) = row.split_at(file_at);
            assert!(
                before.ends_with("  ") && !file.starts_with(' '),
                "FILE out of line:\n{header}\n{row}"
            );
            assert!(
                row[..size_end].ends_with(|c: char| c.is_ascii_digit() || c == '-'),
                "SIZE out of line:\n{header}\n{row}"
            );
        }
    }

    /// Compiled policy code is anonymous to `perf`; with the switch set the
    /// engine writes the map that names it, and without it nothing.
    #[test]
    fn policy_perf_map_names_compiled_policy_code_only_when_asked() {
        let check = |switch: Option<&str>| {
            let mut command = shadowcat_command(&["policy", "check", "lru.wasm"]);
            command.env_remove(shadowcat::wasm::PERF_MAP_ENV);
            if let Some(value) = switch {
                command.env(shadowcat::wasm::PERF_MAP_ENV, value);
            }
            let child = command
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("binary runs");
            let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
            let out = child.wait_with_output().expect("binary runs");
            assert!(out.status.success(), "{}", text(&out.stderr));
            let written = std::fs::read_to_string(&map).ok();
            let _ = std::fs::remove_file(&map);
            written
        };
        let map = check(Some("1")).expect("a perf map is written when asked");
        // One line per function: start address, size (both hex), name.
        let functions: Vec<&str> = map
            .lines()
            .filter(|line| line.contains("wasm[0]::function["))
            .collect();
        assert!(functions.len() > 20, "{map}");
        for line in functions {
            let mut fields = line.splitn(3, ' ');
            let start = fields.next().and_then(|f| f.strip_prefix("0x"));
            let size = fields.next();
            assert!(
                start.is_some_and(|a| u64::from_str_radix(a, 16).is_ok_and(|a| a > 0))
                    && size.is_some_and(|s| u64::from_str_radix(s, 16).is_ok_and(|s| s > 0)),
                "{line}"
            );
        }
        assert_eq!(check(None), None, "written without the switch");
        assert_eq!(check(Some("0")), None, "written with the switch off");
    }

    #[test]
    fn policy_cli_check_passes_shipped_policies_and_names_what_is_wrong() {
        let out = shadowcat_cli(&["policy", "check", "lfu"]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        for line in ["interface   ok", "load", "smoke", "call time", "ok"] {
            assert!(stdout.contains(line), "`{line}` missing:\n{stdout}");
        }
        let wrong = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/wrong-version.wasm"
        );
        let out = shadowcat_cli(&["policy", "check", wrong]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("found `shadowcat:policy/policy@0.99.0`"));
        let out = shadowcat_cli(&[
            "--eviction-policy",
            "lfu.wasm",
            "--policy-config",
            "x=1",
            "config",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("refused its configuration"),
            "{}",
            text(&out.stderr)
        );
        // A path naming something that is not a file says what it is.
        let dir = tempfile::tempdir().expect("dir");
        let not_a_file = dir.path().join("folder.wasm");
        std::fs::create_dir(&not_a_file).expect("mkdir");
        let dangling = dir.path().join("gone.wasm");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        for (path, says) in [(&not_a_file, "directory"), (&dangling, "No such file")] {
            let out =
                shadowcat_cli(&["--eviction-policy", path.to_str().expect("utf-8"), "config"]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("cannot read policy file"), "{stderr}");
            assert!(stderr.contains(says), "{stderr}");
            assert!(!stderr.contains("available:"), "{stderr}");
        }
        let out = shadowcat_cli(&["--eviction-policy", "lfu.wasm", "config"]);
        assert!(out.status.success());
        assert!(
            text(&out.stdout).contains("lfu 0.1.0"),
            "{}",
            text(&out.stdout)
        );
    }
}
