//! Session table behaviour under concurrency, expiry, eviction and backpressure.
//!
//! Each of the five failures of the design this table replaces has a test here:
//! deadlock on eviction (`evict_lru_*`), wrong active counts (`metrics_accuracy_*`),
//! duplicate LRU entries and unbounded growth (`session_bounded_*`), cleanup by full
//! scan (`concurrent_cleanup_*` checks the cost-bearing structures stay bounded; the
//! cost itself is in `benches/session.rs`) and missing backpressure
//! (`session_backpressure_*`).

mod common;

mod session {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock, Weak};
    use std::time::Duration;

    use parking_lot::Mutex;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use shadowcat::eviction::{
        packed, Arriving, EvictionPolicy, Fifo, FlushHint, HostLru, PackedEvent, PolicyEvent,
        Refusal, RemovalCause, Unavailable, VictimRequest,
    };
    use shadowcat::session::{
        CleanupTask, Clock, NewSession, RemoveOutcome, RemovedSession, SessionId, SessionState,
        SessionTable, TableError,
    };
    use shadowcat::{RateLimit, TableConfig};

    use crate::common::{with_watchdog, TeardownLog};

    const SECOND: u64 = 1_000_000;

    fn replay_config(max: usize) -> TableConfig {
        TableConfig::unbounded_in_time(max)
    }

    fn manual_table(config: TableConfig, policy: Arc<dyn EvictionPolicy>) -> SessionTable<()> {
        SessionTable::builder(config)
            .policy(policy)
            .clock(Clock::manual())
            .build()
            .expect("valid config")
    }

    /// Checks every invariant against a recount from the table's own snapshot.
    fn assert_consistent<U: Send + 'static>(table: &SessionTable<U>) {
        let snapshot = table.snapshot();
        let stats = table.stats();
        let metrics = table.metrics();
        assert_eq!(stats.live, snapshot.len(), "live count vs recount");
        assert_eq!(
            stats.lru_len, stats.live,
            "LRU index holds each session once"
        );
        assert_eq!(stats.external_ids, stats.live, "external id map");
        assert!(stats.live <= table.config().max_sessions, "bound exceeded");
        let active = snapshot
            .iter()
            .filter(|s| s.state == SessionState::Active)
            .count();
        assert_eq!(metrics.active, active as i64, "active gauge vs recount");
        assert_eq!(
            metrics.created,
            stats.live as u64 + metrics.removed(),
            "created = live + removals ({metrics:?})"
        );
        let pinned = snapshot.iter().filter(|s| s.pins > 0).count();
        assert_eq!(stats.pinned_sessions, pinned, "pinned count vs recount");
        assert!(
            stats.deadline_queue_len <= 2 * stats.live + 64,
            "deadline heap unbounded: {stats:?}"
        );
    }

    /// A policy that proposes garbage: stale, random, pinned and repeated ids.
    struct ChaoticPolicy {
        seen: Mutex<Vec<SessionId>>,
        rng: Mutex<SmallRng>,
    }

    impl ChaoticPolicy {
        fn new(seed: u64) -> Self {
            Self {
                seen: Mutex::new(Vec::new()),
                rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            }
        }
    }

    impl EvictionPolicy for ChaoticPolicy {
        fn name(&self) -> &str {
            "chaotic"
        }

        fn record(&self, event: PolicyEvent) -> FlushHint {
            if let PolicyEvent::Inserted { id, .. } = event {
                let mut seen = self.seen.lock();
                if seen.len() > 4096 {
                    seen.drain(..2048);
                }
                seen.push(id);
            }
            FlushHint::Idle
        }

        fn victims(
            &self,
            request: VictimRequest,
            out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            let count = request.count;
            let seen = self.seen.lock().clone();
            let mut rng = self.rng.lock();
            for _ in 0..count * 3 {
                match rng.random_range(0..4) {
                    0 => out.push(SessionId::from_bits(rng.random())),
                    _ if !seen.is_empty() => {
                        let id = seen[rng.random_range(0..seen.len())];
                        out.push(id);
                        out.push(id);
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }

    /// Calls back into the table from `victims`, as a policy with access to the
    /// table might: deadlocks if the table ever asks while holding its lock.
    struct ReentrantPolicy {
        table: OnceLock<Weak<SessionTable<()>>>,
        inner: Fifo,
        /// Also creates one session from inside `victims`, the first time it
        /// is asked: the eviction path must be re-entrant, buffers and all.
        creates_once: bool,
        created_inside: Mutex<Option<SessionId>>,
    }

    impl ReentrantPolicy {
        fn new(creates_once: bool) -> Arc<Self> {
            Arc::new(Self {
                table: OnceLock::new(),
                inner: Fifo::default(),
                creates_once,
                created_inside: Mutex::new(None),
            })
        }

        /// The table under this policy, which it calls back into.
        fn serve(self: &Arc<Self>, config: TableConfig) -> Arc<SessionTable<()>> {
            let table = Arc::new(manual_table(config, self.clone()));
            self.table
                .set(Arc::downgrade(&table))
                .unwrap_or_else(|_| panic!("set once"));
            table
        }
    }

    impl EvictionPolicy for ReentrantPolicy {
        fn name(&self) -> &str {
            "reentrant"
        }

        fn record(&self, event: PolicyEvent) -> FlushHint {
            self.inner.record(event)
        }

        fn victims(
            &self,
            request: VictimRequest,
            out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            if let Some(table) = self.table.get().and_then(Weak::upgrade) {
                let _ = table.stats();
                let _ = table.snapshot().len();
                if self.creates_once && self.created_inside.lock().is_none() {
                    // Marked before the call: the inner create asks again.
                    *self.created_inside.lock() = Some(SessionId::from_bits(0));
                    let inner = table.create(NewSession::new(())).expect("inner create");
                    *self.created_inside.lock() = Some(inner.id);
                }
            }
            self.inner.victims(request, out)
        }

        fn flush(&self) {
            if let Some(table) = self.table.get().and_then(Weak::upgrade) {
                let _ = table.len();
            }
        }
    }

    /// One task's random mix of every table operation.
    async fn churn(table: Arc<SessionTable<()>>, seed: u64, rounds: usize) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut mine: Vec<SessionId> = Vec::new();
        let mut pinned: Vec<SessionId> = Vec::new();
        for round in 0..rounds {
            match rng.random_range(0..100) {
                0..=29 => match table.create(NewSession::new(())).map_err(|r| r.error) {
                    Ok(created) => mine.push(created.id),
                    Err(TableError::Capacity { .. }) => {}
                    Err(other) => panic!("create failed: {other}"),
                },
                30..=59 if !mine.is_empty() => {
                    let id = mine[rng.random_range(0..mine.len())];
                    let _ = table.touch(id, 100);
                }
                60..=67 if !mine.is_empty() => {
                    let id = mine[rng.random_range(0..mine.len())];
                    if table.begin_request(id, 10).is_ok() {
                        pinned.push(id);
                    }
                }
                68..=75 if !pinned.is_empty() => {
                    let id = pinned.swap_remove(rng.random_range(0..pinned.len()));
                    table
                        .end_request(id)
                        .expect("a pinned session stays until unpinned");
                }
                76..=81 if !mine.is_empty() => {
                    let id = mine.swap_remove(rng.random_range(0..mine.len()));
                    let cause = if rng.random() {
                        RemovalCause::Closed
                    } else {
                        RemovalCause::Deleted
                    };
                    let _ = table.remove(id, cause);
                }
                82..=86 if !mine.is_empty() => {
                    let id = mine[rng.random_range(0..mine.len())];
                    let _ = table.activate(id);
                }
                87..=91 => {
                    table.evict(rng.random_range(1..4));
                }
                92..=95 => {
                    table.clock().advance(rng.random_range(0..SECOND / 2));
                    table.cleanup_expired(table.now());
                }
                _ => {
                    let stats = table.stats();
                    assert!(stats.live <= table.config().max_sessions);
                }
            }
            if mine.len() > 256 {
                mine.drain(..128);
            }
            if round % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for id in pinned {
            table.end_request(id).expect("unpin at the end");
        }
    }

    fn race(table: Arc<SessionTable<()>>, tasks: u64, rounds: usize) {
        let runtime = multi_thread_runtime();
        runtime.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|seed| tokio::spawn(churn(Arc::clone(&table), seed, rounds)))
                .collect();
            for handle in handles {
                handle.await.expect("task panicked");
            }
        });
        assert_consistent(&table);
        assert_eq!(table.stats().requests_in_flight, 0);
    }

    /// Four workers: more than the cores here, so tasks interleave for real.
    fn multi_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn racing_config() -> TableConfig {
        TableConfig {
            max_sessions: 48,
            idle_timeout: Some(Duration::from_secs(2)),
            max_age: Some(Duration::from_secs(5)),
            ..replay_config(48)
        }
    }

    #[test]
    fn evict_lru_races_creates_touches_removes_and_cleanup() {
        with_watchdog(Duration::from_secs(120), || {
            let table = Arc::new(manual_table(racing_config(), Arc::new(HostLru)));
            race(Arc::clone(&table), 12, 4_000);
            let m = table.metrics();
            assert!(m.evicted > 100, "eviction was exercised: {m:?}");
            assert!(
                m.expired_idle + m.expired_age > 0,
                "expiry was exercised: {m:?}"
            );
        });
    }

    #[test]
    fn evict_lru_with_fifo_policy_races_without_losing_sessions() {
        with_watchdog(Duration::from_secs(120), || {
            let table = Arc::new(manual_table(racing_config(), Arc::new(Fifo::default())));
            race(Arc::clone(&table), 10, 3_000);
            assert!(table.metrics().evicted > 100);
        });
    }

    #[test]
    fn evict_lru_with_garbage_proposals_stays_correct_and_counts_them() {
        with_watchdog(Duration::from_secs(120), || {
            let table = Arc::new(manual_table(
                racing_config(),
                Arc::new(ChaoticPolicy::new(7)),
            ));
            race(Arc::clone(&table), 10, 3_000);
            let m = table.metrics();
            assert!(
                m.invalid_victims > 0,
                "garbage was proposed and refused: {m:?}"
            );
            assert!(m.evicted > 100);
        });
    }

    #[test]
    fn evict_lru_policy_calling_back_into_table_does_not_deadlock() {
        with_watchdog(Duration::from_secs(120), || {
            let table = ReentrantPolicy::new(false).serve(racing_config());
            race(Arc::clone(&table), 8, 2_000);
            assert!(table.metrics().evicted > 50);
        });
    }

    #[test]
    fn evict_a_policy_may_create_sessions_from_inside_victims() {
        with_watchdog(Duration::from_secs(60), || {
            let policy = ReentrantPolicy::new(true);
            let table = policy.serve(replay_config(3));
            let ids: Vec<SessionId> = (0..3)
                .map(|_| table.create(NewSession::new(())).expect("fill").id)
                .collect();
            let outer = table.create(NewSession::new(())).expect("outer create");
            let inner = policy.created_inside.lock().expect("created inside");
            assert_eq!(outer.evicted, 1);
            // FIFO: the inner create took the oldest; the outer one's own
            // answer, asked after, the next oldest.
            assert!(table.get(ids[0]).is_none() && table.get(ids[1]).is_none());
            assert!(table.get(ids[2]).is_some());
            assert!(table.get(inner).is_some() && table.get(outer.id).is_some());
            assert_eq!(table.len(), 3);
            assert_eq!(table.metrics().evicted, 2);
            assert_eq!(table.metrics().fallback_victims, 0);
            // And the table goes on evicting normally afterwards.
            for _ in 0..5 {
                assert_eq!(table.create(NewSession::new(())).expect("later").evicted, 1);
            }
            assert_eq!(table.len(), 3);
        });
    }

    #[test]
    fn evict_lru_order_is_least_recently_used_and_skips_pinned() {
        let table = manual_table(replay_config(3), Arc::new(HostLru));
        let a = table.create(NewSession::new(())).expect("a").id;
        let b = table.create(NewSession::new(())).expect("b").id;
        let c = table.create(NewSession::new(())).expect("c").id;
        table.touch(a, 0).expect("touch a");
        // LRU order is now b, c, a; pin b so c is the first evictable.
        table.begin_request(b, 0).expect("pin b");
        let d = table.create(NewSession::new(())).expect("d");
        assert_eq!(d.evicted, 1);
        assert!(table.get(c).is_none(), "c was least recent and unpinned");
        assert!(table.get(b).is_some(), "pinned b survives");
        assert_eq!(table.touch(c, 0), Err(TableError::UnknownSession(c)));
        table.end_request(b).expect("unpin");
        assert_eq!(table.evict(1), 1);
        assert!(
            table.get(a).is_none(),
            "after b's request ended, a is least recent"
        );
        assert_consistent(&table);
    }

    #[test]
    fn evict_lru_all_pinned_fails_with_capacity_error_instead_of_blocking() {
        let table = manual_table(replay_config(2), Arc::new(HostLru));
        for _ in 0..2 {
            let id = table.create(NewSession::new(())).expect("room").id;
            table.begin_request(id, 0).expect("pin");
        }
        let err = table
            .create(NewSession::new(()))
            .expect_err("nothing evictable")
            .error;
        assert!(
            matches!(
                err,
                TableError::Capacity {
                    live: 2,
                    max_sessions: 2,
                    pinned: 2
                }
            ),
            "{err:?}"
        );
        assert_eq!(table.metrics().rejected_capacity, 1);
        assert_eq!(table.len(), 2);
        assert!(err.to_string().contains("in flight"));
    }

    #[test]
    fn session_external_ids_resolve_and_duplicates_are_refused() {
        let table = manual_table(replay_config(10), Arc::new(HostLru));
        let generated = table.create(NewSession::new(())).expect("create");
        let name = generated.external_id.as_deref().expect("generated name");
        assert_eq!(name.len(), 32);
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(table.lookup(name), Ok(generated.id));
        let named = table
            .create(NewSession::new(()).with_external_id("client-7"))
            .expect("create named");
        assert_eq!(table.lookup("client-7"), Ok(named.id));
        assert_eq!(
            table
                .create(NewSession::new(()).with_external_id("client-7"))
                .map_err(|r| r.error),
            Err(TableError::DuplicateExternalId("client-7".into()))
        );
        assert_eq!(
            table
                .create(NewSession::new(()).with_external_id(""))
                .map_err(|r| r.error),
            Err(TableError::EmptyExternalId)
        );
        let anonymous = table.create(NewSession::anonymous(())).expect("anonymous");
        assert!(anonymous.external_id.is_none());
        assert!(table.lookup("").is_err(), "anonymous sessions have no name");
        assert_eq!(table.stats().external_ids, 2);
        table
            .remove(named.id, RemovalCause::Closed)
            .expect("remove");
        assert!(matches!(
            table.lookup("client-7"),
            Err(TableError::UnknownExternalId(_))
        ));
        assert_eq!(
            table.remove(named.id, RemovalCause::Closed),
            Err(TableError::UnknownSession(named.id))
        );
    }

    #[test]
    fn session_slot_reuse_never_revives_a_stale_handle() {
        let table = manual_table(replay_config(1), Arc::new(HostLru));
        let first = table.create(NewSession::new(())).expect("first").id;
        let second = table
            .create(NewSession::new(()))
            .expect("second evicts first")
            .id;
        assert_eq!(first.slot(), second.slot(), "slot reused");
        assert_ne!(first, second);
        assert!(table.get(first).is_none());
        assert_eq!(
            table.touch(first, 1),
            Err(TableError::UnknownSession(first))
        );
        assert!(table.get(second).is_some());
    }

    #[test]
    fn session_removal_of_pinned_session_is_deferred_until_its_request_ends() {
        let log = TeardownLog::default();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let table: SessionTable<()> = SessionTable::builder(replay_config(4))
            .clock(Clock::manual())
            .teardown(log.teardown(), runtime.handle().clone())
            .build()
            .expect("table");
        let id = table.create(NewSession::new(())).expect("create").id;
        table.activate(id).expect("activate");
        table.begin_request(id, 0).expect("pin");
        assert_eq!(
            table.remove(id, RemovalCause::Closed),
            Ok(RemoveOutcome::Deferred)
        );
        let info = table.get(id).expect("still there");
        assert_eq!(info.state, SessionState::Closing);
        assert_eq!(table.metrics().active, 0, "closing is not active");
        assert!(matches!(
            table.touch(id, 0),
            Err(TableError::NotAcceptingRequests { .. })
        ));
        table.end_request(id).expect("unpin");
        assert!(table.get(id).is_none(), "removed when its request ended");
        let m = table.metrics();
        assert_eq!((m.closed, m.active), (1, 0));
        runtime.block_on(log.wait_for(1));
        assert_eq!(log.causes(), vec![RemovalCause::Closed]);
        assert_consistent(&table);
    }

    #[test]
    fn session_state_transitions_only_go_forward() {
        let table = manual_table(replay_config(4), Arc::new(HostLru));
        let id = table.create(NewSession::new(())).expect("create").id;
        assert_eq!(
            table.get(id).map(|s| s.state),
            Some(SessionState::Initializing)
        );
        table.activate(id).expect("activate");
        table.activate(id).expect("activating twice is harmless");
        assert_eq!(table.metrics().active, 1);
        table.begin_request(id, 0).expect("pin");
        table.remove(id, RemovalCause::Deleted).expect("defer");
        assert!(matches!(
            table.activate(id),
            Err(TableError::InvalidTransition { .. })
        ));
        assert_eq!(table.metrics().active, 0);
    }

    /// The replaced design decremented the active gauge for every removal.
    #[test]
    fn metrics_accuracy_removing_sessions_that_never_became_active() {
        let table = manual_table(replay_config(100), Arc::new(HostLru));
        let ids: Vec<_> = (0..10)
            .map(|_| table.create(NewSession::new(())).expect("create").id)
            .collect();
        table.activate(ids[0]).expect("activate");
        for &id in &ids[1..] {
            table.remove(id, RemovalCause::Deleted).expect("remove");
        }
        let m = table.metrics();
        assert_eq!(m.active, 1);
        assert_eq!(m.deleted_by_admin, 9);
        table.remove(ids[0], RemovalCause::Closed).expect("remove");
        assert_eq!(table.metrics().active, 0);
        assert_consistent(&table);
    }

    /// A session created with its first request begun is never evicted by
    /// a concurrent create before that request ends: on a table of two,
    /// threads racing to create and use sessions always find their own, get
    /// refused (capacity, in-flight bound) rather than a lost session, and
    /// the counts stay whole.
    #[test]
    fn create_pinned_sessions_survive_racing_creates_until_their_request_ends() {
        with_watchdog(Duration::from_secs(120), || {
            let config = TableConfig {
                max_in_flight: 6,
                ..replay_config(2)
            };
            let table: Arc<SessionTable<()>> = Arc::new(
                SessionTable::builder(config)
                    .policy(Arc::new(HostLru))
                    .build()
                    .expect("table"),
            );
            let (created, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let threads: Vec<_> = (0..8u64)
                .map(|seed| {
                    let (table, created, refused) =
                        (Arc::clone(&table), created.clone(), refused.clone());
                    std::thread::spawn(move || {
                        let mut rng = SmallRng::seed_from_u64(seed);
                        for _ in 0..2_000 {
                            match table.create_pinned(NewSession::new(()), 10) {
                                Ok((session, guard)) => {
                                    created.fetch_add(1, Ordering::Relaxed);
                                    for _ in 0..rng.random_range(0..20) {
                                        std::hint::spin_loop();
                                    }
                                    if rng.random_bool(0.3) {
                                        std::thread::yield_now();
                                    }
                                    let info = table.get(session.id).expect("still there");
                                    assert_eq!(info.requests, 1, "{info:?}");
                                    assert_eq!(
                                        guard.id(),
                                        session.id,
                                        "the guard pins the session created"
                                    );
                                    drop(guard);
                                }
                                Err(rejected) => {
                                    assert!(
                                        matches!(
                                            rejected.error,
                                            TableError::Capacity { .. }
                                                | TableError::Overloaded { .. }
                                        ),
                                        "{:?}",
                                        rejected.error
                                    );
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("a session was lost under its request");
            }
            let m = table.metrics();
            assert_eq!(m.created, created.load(Ordering::Relaxed));
            assert!(m.evicted > 100, "evictions were exercised: {m:?}");
            assert_eq!(table.stats().requests_in_flight, 0, "every pin came back");
            assert_consistent(&table);
        });
    }

    /// A session created with a handshake shield is never evicted until it
    /// is activated, whatever creates race it, while the shields never
    /// cover more than half the table (so creates keep finding room), and
    /// removals and counts stay whole.
    #[test]
    fn shielded_sessions_outlive_racing_creates_until_activated() {
        with_watchdog(Duration::from_secs(120), || {
            let table: Arc<SessionTable<()>> = Arc::new(
                SessionTable::builder(replay_config(8))
                    .policy(Arc::new(HostLru))
                    .build()
                    .expect("table"),
            );
            let counter = || Arc::new(AtomicU64::new(0));
            let (created, shielded_seen, closed) = (counter(), counter(), counter());
            let threads: Vec<_> = (0..8u64)
                .map(|seed| {
                    let (table, created, shielded_seen, closed) = (
                        Arc::clone(&table),
                        created.clone(),
                        shielded_seen.clone(),
                        closed.clone(),
                    );
                    std::thread::spawn(move || {
                        let mut rng = SmallRng::seed_from_u64(seed);
                        for _ in 0..1_500 {
                            let new = if rng.random_bool(0.7) {
                                NewSession::new(()).shielded_until_active()
                            } else {
                                NewSession::new(())
                            };
                            let (session, guard) = match table.create_pinned(new, 1) {
                                Ok(created) => created,
                                // Shields and the other threads' requests
                                // may hold every place for a moment.
                                Err(rejected) => {
                                    assert!(
                                        matches!(rejected.error, TableError::Capacity { .. }),
                                        "{:?}",
                                        rejected.error
                                    );
                                    continue;
                                }
                            };
                            created.fetch_add(1, Ordering::Relaxed);
                            // The initialize has been answered; the client has
                            // not finished its handshake yet.
                            drop(guard);
                            let shielded = table.get(session.id).is_some_and(|i| i.shielded);
                            for _ in 0..rng.random_range(0..50) {
                                std::hint::spin_loop();
                            }
                            if rng.random_bool(0.3) {
                                std::thread::yield_now();
                            }
                            let stats = table.stats();
                            assert!(stats.shielded_sessions <= 4, "{stats:?}");
                            if shielded {
                                shielded_seen.fetch_add(1, Ordering::Relaxed);
                                let info = table
                                    .get(session.id)
                                    .expect("a shielded session is not evicted");
                                assert_eq!(info.state, SessionState::Initializing);
                                table.activate(session.id).expect("activate");
                                assert!(!table.get(session.id).is_some_and(|i| i.shielded));
                            } else {
                                let _ = table.activate(session.id);
                            }
                            if rng.random_bool(0.2)
                                && table.remove(session.id, RemovalCause::Closed).is_ok()
                            {
                                closed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("a shielded session was evicted");
            }
            assert!(
                shielded_seen.load(Ordering::Relaxed) > 1_000,
                "shields were exercised"
            );
            let m = table.metrics();
            assert!(m.evicted > 1_000, "evictions were exercised: {m:?}");
            assert_eq!(m.created, created.load(Ordering::Relaxed));
            assert!(m.created > 8 * 1_400, "few refusals: {m:?}");
            assert_eq!(
                m.created,
                m.evicted + closed.load(Ordering::Relaxed) + table.len() as u64
            );
            let stats = table.stats();
            assert_eq!((stats.shielded_sessions, stats.pinned_sessions), (0, 0));
            assert_eq!(stats.requests_in_flight, 0);
            assert_consistent(&table);
        });
    }

    #[test]
    fn metrics_accuracy_under_random_concurrent_operations() {
        with_watchdog(Duration::from_secs(120), || {
            let log = TeardownLog::default();
            let runtime = multi_thread_runtime();
            let table = Arc::new(
                SessionTable::builder(racing_config())
                    .clock(Clock::manual())
                    .teardown(log.teardown(), runtime.handle().clone())
                    .build()
                    .expect("table"),
            );
            let done = Arc::new(AtomicBool::new(false));
            let samples = Arc::new(AtomicUsize::new(0));
            let sampler = {
                let (table, done, samples) = (Arc::clone(&table), done.clone(), samples.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        let m = table.metrics();
                        assert!(m.active >= 0, "negative active gauge: {m:?}");
                        let stats = table.stats();
                        assert!(stats.live <= 48 && stats.lru_len <= 48, "{stats:?}");
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            runtime.block_on(async {
                let handles: Vec<_> = (0..12)
                    .map(|seed| tokio::spawn(churn(Arc::clone(&table), 1_000 + seed, 4_000)))
                    .collect();
                for handle in handles {
                    handle.await.expect("task panicked");
                }
            });
            done.store(true, Ordering::Relaxed);
            sampler.join().expect("sampler saw an impossible value");
            assert!(samples.load(Ordering::Relaxed) > 10);
            assert_consistent(&table);
            let m = table.metrics();
            runtime.block_on(log.wait_for(m.removed() as usize));
            let by_cause = log.count_by_cause();
            let count = |c| by_cause.get(&c).copied().unwrap_or(0);
            assert_eq!(count(RemovalCause::Evicted), m.evicted);
            assert_eq!(count(RemovalCause::ExpiredIdle), m.expired_idle);
            assert_eq!(count(RemovalCause::ExpiredAge), m.expired_age);
            assert_eq!(count(RemovalCause::Closed), m.closed);
            assert_eq!(count(RemovalCause::Deleted), m.deleted_by_admin);
            assert_eq!(m.teardown_failures, 0);
        });
    }

    #[test]
    fn concurrent_cleanup_never_expires_a_session_touched_before_its_deadline() {
        with_watchdog(Duration::from_secs(120), || {
            let log = TeardownLog::default();
            let runtime = multi_thread_runtime();
            let idle = 10 * SECOND;
            let max_age = 15 * SECOND;
            // Room for everything: any session that vanishes was expired, not evicted.
            let config = TableConfig {
                max_sessions: 10_000,
                idle_timeout: Some(Duration::from_micros(idle)),
                max_age: Some(Duration::from_micros(max_age)),
                ..replay_config(10_000)
            };
            let table = Arc::new(
                SessionTable::builder(config)
                    .clock(Clock::manual())
                    .teardown(log.teardown(), runtime.handle().clone())
                    .build()
                    .expect("table"),
            );
            // Keepers touch their sessions far more often than the idle timeout
            // while the clock advances and cleanup runs concurrently; creators add
            // sessions nobody touches, which must expire.
            let stop = Arc::new(AtomicBool::new(false));
            let kept_alive_failures = Arc::new(AtomicU64::new(0));
            // Table time at the start of each keeper's latest pass: the clock
            // never runs more than half an idle timeout ahead of the slowest
            // keeper, however the tasks are scheduled.
            let passes: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
            runtime.block_on(async {
                let mut handles = Vec::new();
                for k in 0..4u64 {
                    let (table, stop, failures, passes) = (
                        Arc::clone(&table),
                        stop.clone(),
                        kept_alive_failures.clone(),
                        passes.clone(),
                    );
                    // Created before any task runs, at time 0, so the first
                    // generation surely reaches its max age within the run.
                    let mut ids: Vec<(SessionId, u64)> = (0..8)
                        .map(|_| {
                            (
                                table.create(NewSession::new(())).expect("create").id,
                                table.now(),
                            )
                        })
                        .collect();
                    handles.push(tokio::spawn(async move {
                        let mut rng = SmallRng::seed_from_u64(k);
                        while !stop.load(Ordering::Relaxed) {
                            let pass_started = table.now();
                            for (id, born) in ids.iter_mut() {
                                let now = table.now();
                                if now.saturating_sub(*born) >= max_age - 5 * SECOND {
                                    // Let it expire (idle or age); replace it.
                                    *id = table.create(NewSession::new(())).expect("create").id;
                                    *born = table.now();
                                    continue;
                                }
                                if table.touch(*id, 1).is_err() {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            passes[k as usize].store(pass_started, Ordering::Release);
                            if rng.random_range(0..4) == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }));
                }
                for c in 0..2u64 {
                    let (table, stop) = (Arc::clone(&table), stop.clone());
                    handles.push(tokio::spawn(async move {
                        let mut rng = SmallRng::seed_from_u64(100 + c);
                        while !stop.load(Ordering::Relaxed) {
                            if table.len() < 2_000 {
                                table.create(NewSession::new(())).expect("room");
                            }
                            if table.len() >= 2_000 || rng.random_range(0..8) == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }));
                }
                // The clock only moves a little between keeper passes, so a keeper
                // always touches well inside the idle window.
                let cleaner = {
                    let (table, passes) = (Arc::clone(&table), passes.clone());
                    tokio::spawn(async move {
                        let mut steps = 0;
                        while steps < 3_000 {
                            let slowest = passes
                                .iter()
                                .map(|p| p.load(Ordering::Acquire))
                                .min()
                                .unwrap_or(0);
                            if table.now() + SECOND / 100 - slowest < idle / 2 {
                                table.clock().advance(SECOND / 100);
                                table.cleanup_expired(table.now());
                                steps += 1;
                            }
                            tokio::task::yield_now().await;
                        }
                    })
                };
                cleaner.await.expect("cleaner");
                stop.store(true, Ordering::Relaxed);
                for h in handles {
                    h.await.expect("task");
                }
            });
            let m = table.metrics();
            runtime.block_on(log.wait_for(m.removed() as usize));
            for removed in log.sessions() {
                match removed.cause {
                    RemovalCause::ExpiredIdle => assert!(
                        removed.removed_at - removed.last_access >= idle,
                        "expired while fresh: {removed:?}"
                    ),
                    RemovalCause::ExpiredAge => assert!(
                        removed.removed_at - removed.created_at >= max_age,
                        "aged out early: {removed:?}"
                    ),
                    _ => {}
                }
            }
            assert!(m.expired_idle > 0, "untouched sessions expired: {m:?}");
            assert!(m.expired_age > 0, "old sessions aged out: {m:?}");
            assert_eq!(m.evicted, 0, "nothing was evicted: {m:?}");
            assert_eq!(
                kept_alive_failures.load(Ordering::Relaxed),
                0,
                "a kept-alive session vanished"
            );
            assert_consistent(&table);
        });
    }

    #[test]
    fn concurrent_cleanup_and_eviction_keep_the_deadline_heap_compact() {
        let config = TableConfig {
            max_sessions: 100,
            max_age: Some(Duration::from_secs(3600)),
            ..replay_config(100)
        };
        let table = manual_table(config, Arc::new(HostLru));
        for _ in 0..100_000 {
            table.create(NewSession::new(())).expect("create");
        }
        let stats = table.stats();
        assert_eq!(stats.live, 100);
        assert!(
            stats.deadline_queue_len <= 2 * stats.live + 64,
            "evictions left stale deadlines piling up: {stats:?}"
        );
        table.clock().advance(3_600 * SECOND);
        assert_eq!(table.cleanup_expired(table.now()), 100);
        assert_eq!(table.metrics().expired_age, 100);
        assert!(table.stats().deadline_queue_len <= 64);
    }

    #[test]
    fn session_bounded_lru_index_after_a_million_touches_of_few_sessions() {
        let table = manual_table(replay_config(1_000), Arc::new(HostLru));
        let ids: Vec<_> = (0..5)
            .map(|_| table.create(NewSession::new(())).expect("create").id)
            .collect();
        for i in 0..1_000_000usize {
            table.touch(ids[i % ids.len()], 1).expect("touch");
        }
        let stats = table.stats();
        assert_eq!(stats.lru_len, 5, "one LRU entry per session: {stats:?}");
        assert_eq!(stats.live, 5);
        assert_eq!(
            table.snapshot().iter().map(|s| s.requests).sum::<u64>(),
            1_000_000
        );
    }

    #[test]
    fn session_bounded_structures_under_churn_of_millions_of_sessions() {
        let config = TableConfig {
            max_sessions: 1_000,
            idle_timeout: Some(Duration::from_secs(60)),
            max_age: Some(Duration::from_secs(600)),
            rate_limit: TableConfig::default().rate_limit,
            ..replay_config(1_000)
        };
        let table = manual_table(config, Arc::new(Fifo::default()));
        let mut recent = Vec::new();
        for i in 0..2_000_000u64 {
            let id = table.create(NewSession::new(())).expect("create").id;
            let _ = table.touch(id, 1);
            recent.push(id);
            if recent.len() == 16 {
                for id in recent.drain(..) {
                    let _ = table.touch(id, 1);
                }
            }
            if i % 10_000 == 0 {
                table.clock().advance(SECOND);
                table.cleanup_expired(table.now());
            }
        }
        let stats = table.stats();
        assert_eq!(stats.live, 1_000);
        assert_eq!(stats.lru_len, 1_000);
        assert_eq!(stats.external_ids, 1_000);
        assert_eq!(
            stats.limiters, 1_000,
            "one limiter per live session, no map"
        );
        assert!(stats.deadline_queue_len <= 2 * 1_000 + 64, "{stats:?}");
        assert!(stats.slots <= 1_000, "slots are reused: {stats:?}");
        assert_eq!(table.metrics().created, 2_000_000);
        assert_consistent(&table);
    }

    /// A table on tokio's (paused) clock with its cleanup task running.
    fn paused_table(
        idle: Option<u64>,
        max_age: Option<u64>,
        interval: u64,
    ) -> (Arc<SessionTable<()>>, CleanupTask) {
        let config = TableConfig {
            idle_timeout: idle.map(Duration::from_secs),
            max_age: max_age.map(Duration::from_secs),
            cleanup_interval: Duration::from_secs(interval),
            ..TableConfig::default()
        };
        let table = Arc::new(SessionTable::<()>::new(config).expect("table"));
        let cleanup = CleanupTask::spawn(Arc::clone(&table));
        (table, cleanup)
    }

    #[tokio::test(start_paused = true)]
    async fn session_expiry_idle_with_paused_time() {
        let (table, cleanup) = paused_table(Some(60), None, 10);
        let idle = table.create(NewSession::new(())).expect("idle").id;
        let busy = table.create(NewSession::new(())).expect("busy").id;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            table.touch(busy, 1).expect("busy stays alive");
        }
        assert!(table.get(idle).is_none(), "idle session expired");
        assert!(table.get(busy).is_some(), "busy session kept");
        let m = table.metrics();
        assert_eq!((m.expired_idle, m.expired_age), (1, 0));
        assert!(m.cleanup_rounds >= 10);
        cleanup.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn session_expiry_max_age_with_paused_time() {
        let (table, cleanup) = paused_table(None, Some(300), 30);
        let old = table.create(NewSession::new(())).expect("old").id;
        tokio::time::sleep(Duration::from_secs(200)).await;
        let young = table.create(NewSession::new(())).expect("young").id;
        for _ in 0..14 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let _ = table.touch(old, 1);
            table.touch(young, 1).expect("young is alive");
        }
        assert!(table.get(old).is_none(), "old expired by age however busy");
        assert!(table.get(young).is_some());
        assert_eq!(table.metrics().expired_age, 1);
        cleanup.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn session_expiry_idle_and_age_mixed_with_paused_time() {
        let (table, cleanup) = paused_table(Some(60), Some(150), 5);
        let ids: Vec<_> = (0..6)
            .map(|_| table.create(NewSession::new(())).expect("create").id)
            .collect();
        // Three stay busy (touched every 20 s), three are left alone.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            for &id in &ids[..3] {
                table
                    .touch(id, 1)
                    .expect("busy session alive before max age");
            }
        }
        // 120 s: the idle three expired at ~60 s, the busy three live.
        let m = table.metrics();
        assert_eq!((m.expired_idle, m.expired_age), (3, 0), "{m:?}");
        tokio::time::sleep(Duration::from_secs(40)).await;
        let m = table.metrics();
        assert_eq!((m.expired_idle, m.expired_age), (3, 3), "{m:?}");
        assert!(table.is_empty());
        cleanup.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn session_pinned_session_is_not_expired_while_its_request_runs() {
        let (table, cleanup) = paused_table(Some(60), Some(120), 10);
        let id = table.create(NewSession::new(())).expect("create").id;
        let guard = table.request_guard(id, 1).expect("begin");
        tokio::time::sleep(Duration::from_secs(200)).await;
        let info = table.get(id).expect("not removed while in flight");
        assert_eq!(info.state, SessionState::Closing, "past max age: closing");
        drop(guard);
        assert!(table.get(id).is_none(), "removed once the request ended");
        assert_eq!(table.metrics().expired_age, 1);
        cleanup.shutdown().await;
    }

    /// A policy whose first maintenance tick panics.
    struct PanicOnceInMaintain {
        panicked: AtomicBool,
    }

    impl EvictionPolicy for PanicOnceInMaintain {
        fn name(&self) -> &str {
            "panic-once"
        }
        fn record(&self, _event: PolicyEvent) -> FlushHint {
            FlushHint::Idle
        }
        fn victims(
            &self,
            _request: VictimRequest,
            _out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            Ok(())
        }
        fn maintain(&self, _now: u64) {
            if !self.panicked.swap(true, Ordering::Relaxed) {
                panic!("policy bug in maintain");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn session_cleanup_task_survives_a_panicking_round() {
        let config = TableConfig {
            idle_timeout: Some(Duration::from_secs(30)),
            cleanup_interval: Duration::from_secs(10),
            ..TableConfig::default()
        };
        let table = Arc::new(
            SessionTable::<()>::builder(config)
                .policy(Arc::new(PanicOnceInMaintain {
                    panicked: AtomicBool::new(false),
                }))
                .build()
                .expect("table"),
        );
        let cleanup = CleanupTask::spawn(Arc::clone(&table));
        table.create(NewSession::new(())).expect("create");
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(table.metrics().cleanup_panics, 1);
        tokio::time::sleep(Duration::from_secs(40)).await;
        let m = table.metrics();
        assert_eq!(m.cleanup_panics, 1);
        assert_eq!(m.expired_idle, 1, "later rounds still expire sessions");
        assert!(m.cleanup_rounds >= 4);
        cleanup.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn session_teardown_that_panics_or_hangs_is_counted_and_does_not_wedge() {
        let config = TableConfig {
            teardown_timeout: Duration::from_secs(5),
            ..TableConfig::default()
        };
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        let table: Arc<SessionTable<&'static str>> = Arc::new(
            SessionTable::builder(config)
                .teardown(
                    Arc::new(move |s: RemovedSession<&'static str>| {
                        let done = done.clone();
                        async move {
                            match s.upstream {
                                "panics" => panic!("upstream close failed"),
                                "hangs" => std::future::pending::<()>().await,
                                _ => {
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }),
                    tokio::runtime::Handle::current(),
                )
                .build()
                .expect("table"),
        );
        for kind in ["panics", "hangs", "fine"] {
            let id = table.create(NewSession::new(kind)).expect("create").id;
            table.remove(id, RemovalCause::Deleted).expect("remove");
        }
        // The table is usable at once, whatever the teardowns are doing.
        let id = table.create(NewSession::new("fine")).expect("create").id;
        table.touch(id, 1).expect("touch");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(table.metrics().teardown_failures, 2);
        assert_eq!(finished.load(Ordering::Relaxed), 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn session_backpressure_rate_limit_says_when_to_retry() {
        let config = TableConfig {
            rate_limit: Some(RateLimit {
                per_second: 1.try_into().expect("non-zero"),
                burst: 3.try_into().expect("non-zero"),
            }),
            ..replay_config(10)
        };
        let table = manual_table(config, Arc::new(HostLru));
        let id = table.create(NewSession::new(())).expect("create").id;
        for _ in 0..3 {
            table.touch(id, 1).expect("within burst");
        }
        match table.touch(id, 1) {
            Err(TableError::RateLimited {
                id: limited,
                retry_after,
            }) => {
                assert_eq!(limited, id);
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
            }
            other => panic!("expected rate limiting, got {other:?}"),
        }
        assert_eq!(table.metrics().rejected_rate_limited, 1);
        // Another session has its own bucket.
        let other = table.create(NewSession::new(())).expect("create").id;
        table.touch(other, 1).expect("independent bucket");
        // Quotas can be changed per session.
        let generous = RateLimit {
            per_second: 1000.try_into().expect("non-zero"),
            burst: 100.try_into().expect("non-zero"),
        };
        table.set_rate_limit(id, Some(generous)).expect("set");
        assert_eq!(table.rate_limit(id), Ok(Some(generous)));
        table.touch(id, 1).expect("new quota admits");
        assert_eq!(table.stats().limiters, 2);
        table.set_rate_limit(other, None).expect("unlimit");
        assert_eq!(table.stats().limiters, 1);
        table.remove(id, RemovalCause::Deleted).expect("remove");
        assert_eq!(table.stats().limiters, 0);
    }

    #[test]
    fn session_backpressure_global_in_flight_bound_refuses_with_overloaded() {
        let config = TableConfig {
            max_in_flight: 4,
            ..replay_config(10)
        };
        let table = Arc::new(manual_table(config, Arc::new(HostLru)));
        let id = table.create(NewSession::new(())).expect("create").id;
        let guards: Vec<_> = (0..4)
            .map(|_| table.request_guard(id, 1).expect("within bound"))
            .collect();
        assert!(matches!(
            table.begin_request(id, 1),
            Err(TableError::Overloaded {
                in_flight: 4,
                max_in_flight: 4
            })
        ));
        assert_eq!(table.metrics().rejected_overloaded, 1);
        drop(guards);
        assert_eq!(table.stats().requests_in_flight, 0);
        table.begin_request(id, 1).expect("room again");
    }

    #[test]
    fn session_backpressure_holds_under_concurrent_requests() {
        with_watchdog(Duration::from_secs(60), || {
            let config = TableConfig {
                max_in_flight: 8,
                ..replay_config(64)
            };
            let table = Arc::new(manual_table(config, Arc::new(HostLru)));
            let ids: Vec<_> = (0..16)
                .map(|_| table.create(NewSession::new(())).expect("create").id)
                .collect();
            let peak = Arc::new(AtomicUsize::new(0));
            // All start together; each may try to hold more than the whole bound,
            // so refusals happen however the threads are scheduled.
            let start = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let (table, ids, peak) = (Arc::clone(&table), ids.clone(), peak.clone());
                    let start = Arc::clone(&start);
                    std::thread::spawn(move || {
                        let mut rng = SmallRng::seed_from_u64(t);
                        let mut held = Vec::new();
                        start.wait();
                        for _ in 0..20_000 {
                            if rng.random() && held.len() < 12 {
                                let id = ids[rng.random_range(0..ids.len())];
                                if let Ok(g) = table.request_guard(id, 1) {
                                    held.push(g);
                                }
                            } else if !held.is_empty() {
                                held.swap_remove(rng.random_range(0..held.len()));
                            }
                            peak.fetch_max(table.stats().requests_in_flight, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread");
            }
            assert!(peak.load(Ordering::Relaxed) <= 8);
            assert_eq!(table.stats().requests_in_flight, 0);
            assert!(table.metrics().rejected_overloaded > 0);
        });
    }

    #[test]
    fn session_weight_capacity_evicts_until_the_newcomer_fits() {
        let config = TableConfig {
            max_sessions: 100,
            weight_capacity: Some(10),
            ..replay_config(100)
        };
        let table = manual_table(config, Arc::new(Fifo::default()));
        let a = table
            .create(NewSession::new(()).with_weight(4))
            .expect("a")
            .id;
        let b = table
            .create(NewSession::new(()).with_weight(4))
            .expect("b")
            .id;
        let c = table
            .create(NewSession::new(()).with_weight(6))
            .expect("c evicts a");
        assert_eq!(c.evicted, 1, "4 + 6 fits in 10 once a is gone");
        assert!(table.get(a).is_none() && table.get(b).is_some());
        let d = table
            .create(NewSession::new(()).with_weight(7))
            .expect("d evicts b and c");
        assert_eq!(d.evicted, 2);
        assert!(table.get(b).is_none() && table.get(c.id).is_none());
        assert_eq!(table.stats().live_weight, 7);
        assert!(matches!(
            table
                .create(NewSession::new(()).with_weight(11))
                .map_err(|r| r.error),
            Err(TableError::TooLarge {
                weight: 11,
                capacity: 10
            })
        ));
    }

    #[test]
    fn session_policy_receives_events_in_table_order() {
        #[derive(Default)]
        struct Recorder(Mutex<Vec<PolicyEvent>>);
        impl EvictionPolicy for Recorder {
            fn name(&self) -> &str {
                "recorder"
            }
            fn record(&self, event: PolicyEvent) -> FlushHint {
                self.0.lock().push(event);
                FlushHint::Idle
            }
            fn victims(
                &self,
                _request: VictimRequest,
                _out: &mut Vec<SessionId>,
            ) -> Result<(), Unavailable> {
                Ok(())
            }
        }
        let recorder = Arc::new(Recorder::default());
        let table = manual_table(replay_config(1), recorder.clone());
        let a = table.create(NewSession::new(())).expect("a").id;
        table.clock().set(5);
        table.touch(a, 3).expect("touch");
        let b = table.create(NewSession::new(())).expect("b").id;
        let events = recorder.0.lock().clone();
        assert_eq!(
            events,
            vec![
                PolicyEvent::Inserted {
                    id: a,
                    time: 0,
                    weight: 1,
                    key: 0,
                    tenant: 0
                },
                PolicyEvent::Accessed {
                    id: a,
                    time: 5,
                    weight: 1
                },
                PolicyEvent::Removed {
                    id: a,
                    time: 5,
                    cause: RemovalCause::Evicted,
                    key: 0
                },
                PolicyEvent::Inserted {
                    id: b,
                    time: 5,
                    weight: 1,
                    key: 0,
                    tenant: 0
                },
            ]
        );
        let m = table.metrics();
        assert_eq!(
            m.fallback_victims, 1,
            "recorder proposed nothing: host LRU filled in"
        );
    }

    #[test]
    fn session_config_is_validated_when_building_a_table() {
        let err = SessionTable::<()>::new(TableConfig {
            max_sessions: 0,
            ..TableConfig::default()
        })
        .err()
        .expect("zero sessions refused");
        assert_eq!(err.setting, "max sessions");
    }

    /// Shared across the proxy's tasks and threads: fails to compile otherwise.
    const _: fn() = || {
        fn shared<T: Send + Sync>() {}
        shared::<SessionTable<()>>();
    };

    /// Proposes the first candidate it is given, and remembers every request.
    #[derive(Default)]
    struct Sampler {
        seen: Mutex<Vec<Vec<SessionId>>>,
    }

    impl EvictionPolicy for Sampler {
        fn name(&self) -> &str {
            "sampler"
        }
        fn record(&self, _event: PolicyEvent) -> FlushHint {
            FlushHint::Idle
        }
        fn victims(
            &self,
            request: VictimRequest,
            out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            self.seen
                .lock()
                .push(request.candidates.iter().map(|c| c.id).collect());
            out.extend(request.candidates.first().map(|c| c.id));
            Ok(())
        }
        fn sample_size(&self) -> usize {
            5
        }
    }

    #[test]
    fn session_sampled_candidates_are_live_unpinned_and_distinct() {
        let sampler = Arc::new(Sampler::default());
        let table = manual_table(replay_config(20), sampler.clone());
        let ids: Vec<SessionId> = (0..20)
            .map(|_| table.create(NewSession::new(())).expect("fill").id)
            .collect();
        for &id in &ids[..15] {
            table.begin_request(id, 0).expect("pin");
        }
        for round in 0..30 {
            let before = table.snapshot();
            let created = table.create(NewSession::new(())).expect("room");
            assert_eq!(created.evicted, 1, "round {round}");
            let seen = sampler.seen.lock().last().cloned().expect("asked");
            assert!(!seen.is_empty() && seen.len() <= 5, "{seen:?}");
            let mut distinct = seen.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), seen.len(), "candidates repeat: {seen:?}");
            for id in &seen {
                let info = before.iter().find(|s| s.id == *id).expect("a live session");
                assert_eq!(info.pins, 0, "a pinned candidate");
            }
            assert!(
                table.get(seen[0]).is_none(),
                "the proposed candidate was evicted"
            );
        }
        assert_eq!(table.metrics().fallback_victims, 0);
        assert_eq!(table.metrics().invalid_victims, 0);
    }

    /// Proposes the oldest session it knows, skipping those it was told are
    /// pinned; records the refusals.
    #[derive(Default)]
    struct LearnsFromRefusals {
        order: Mutex<Vec<SessionId>>,
        pinned: Mutex<Vec<SessionId>>,
        asked: AtomicUsize,
    }

    impl EvictionPolicy for LearnsFromRefusals {
        fn name(&self) -> &str {
            "learner"
        }
        fn record(&self, event: PolicyEvent) -> FlushHint {
            match event {
                PolicyEvent::Inserted { id, .. } => self.order.lock().push(id),
                PolicyEvent::Removed { id, .. } => self.order.lock().retain(|&x| x != id),
                PolicyEvent::Refused { id, reason, .. } => {
                    assert_eq!(reason, Refusal::Pinned);
                    self.pinned.lock().push(id);
                }
                PolicyEvent::Accessed { .. } => {}
            }
            FlushHint::Idle
        }
        fn victims(
            &self,
            _request: VictimRequest,
            out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let pinned = self.pinned.lock().clone();
            out.extend(self.order.lock().iter().find(|id| !pinned.contains(id)));
            Ok(())
        }
        fn learns_from_refusals(&self) -> bool {
            true
        }
    }

    #[test]
    fn session_refused_proposals_are_reported_and_the_policy_asked_again() {
        let learner = Arc::new(LearnsFromRefusals::default());
        let table = manual_table(replay_config(3), learner.clone());
        let a = table.create(NewSession::new(())).expect("a").id;
        let b = table.create(NewSession::new(())).expect("b").id;
        let c = table.create(NewSession::new(())).expect("c").id;
        table.begin_request(a, 0).expect("pin a");
        let d = table.create(NewSession::new(())).expect("room");
        assert_eq!(d.evicted, 1);
        assert_eq!(
            learner.pinned.lock().clone(),
            vec![a],
            "told that a is pinned"
        );
        assert_eq!(learner.asked.load(Ordering::Relaxed), 2, "asked again once");
        assert!(table.get(b).is_none(), "its second answer was taken");
        assert!(table.get(a).is_some() && table.get(c).is_some());
        let m = table.metrics();
        assert_eq!((m.invalid_victims, m.fallback_victims), (1, 0), "{m:?}");
    }

    /// A policy may answer fewer victims than asked (one here, the oldest
    /// insert): `evict` asks it again for the rest rather than filling them
    /// from its own LRU order, which the touches below make different.
    #[test]
    fn session_evict_asks_again_when_an_answer_is_short() {
        let policy = Arc::new(LearnsFromRefusals::default());
        let table = manual_table(replay_config(8), policy.clone());
        let ids: Vec<SessionId> = (0..5)
            .map(|_| table.create(NewSession::new(())).expect("fits").id)
            .collect();
        for &id in &ids[..3] {
            table.touch(id, 1).expect("touch");
        }
        assert_eq!(table.evict(3), 3);
        let live: Vec<bool> = ids.iter().map(|&id| table.get(id).is_some()).collect();
        assert_eq!(
            live,
            [false, false, false, true, true],
            "the policy's three"
        );
        assert_eq!(policy.asked.load(Ordering::Relaxed), 3, "one call each");
        let m = table.metrics();
        assert_eq!((m.evicted, m.fallback_victims), (3, 0), "{m:?}");
        // An answer that evicts nothing ends the asking: the host fills in.
        policy.order.lock().clear();
        assert_eq!(table.evict(1), 1);
        assert_eq!(policy.asked.load(Ordering::Relaxed), 4);
        assert!(table.get(ids[3]).is_none(), "the host's LRU head");
        assert_eq!(table.metrics().fallback_victims, 1);
    }

    /// Hands out victims from `ready_victims` and counts `victims` calls.
    #[derive(Default)]
    struct Prefetched {
        order: Mutex<Vec<SessionId>>,
        calls: AtomicUsize,
        /// What the table said it did not need, call by call.
        unused: Mutex<Vec<Vec<SessionId>>>,
    }

    impl EvictionPolicy for Prefetched {
        fn name(&self) -> &str {
            "prefetched"
        }
        fn record(&self, event: PolicyEvent) -> FlushHint {
            match event {
                PolicyEvent::Inserted { id, .. } => self.order.lock().push(id),
                PolicyEvent::Removed { id, .. } => self.order.lock().retain(|&x| x != id),
                _ => {}
            }
            FlushHint::Idle
        }
        fn victims(
            &self,
            _request: VictimRequest,
            _out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn ready_victims(
            &self,
            _arriving: Option<Arriving>,
            count: usize,
            out: &mut Vec<SessionId>,
        ) {
            out.extend(self.order.lock().iter().take(count));
        }
        fn unused_victims(&self, unused: &[SessionId]) {
            self.unused.lock().push(unused.to_vec());
        }
    }

    /// Byte mode asks for an estimated number of victims; those the table did
    /// not need go back to the policy, in order, so that a policy that chose
    /// them ahead keeps them as its next victims rather than losing its place.
    #[test]
    fn session_victims_not_needed_are_handed_back_in_order() {
        let policy = Arc::new(Prefetched::default());
        let config = TableConfig {
            weight_capacity: Some(100),
            ..replay_config(100)
        };
        let table = manual_table(config, policy.clone());
        let mut ids = Vec::new();
        for weight in [50, 10, 10, 10, 10] {
            ids.push(
                table
                    .create(NewSession::new(()).with_weight(weight))
                    .expect("fits")
                    .id,
            );
        }
        // 90 of 100 held, a mean of 18: a newcomer of 40 needs 30 more, an
        // estimate of 2 victims, but the oldest alone frees 50.
        let created = table
            .create(NewSession::new(()).with_weight(40))
            .expect("room");
        assert_eq!(created.evicted, 1);
        assert!(table.get(ids[0]).is_none(), "the first ready victim went");
        assert!(table.get(ids[1]).is_some(), "the second was not needed");
        assert_eq!(*policy.unused.lock(), vec![vec![ids[1]]]);
        assert_eq!(policy.calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn session_ready_victims_are_evicted_without_asking_the_policy() {
        let policy = Arc::new(Prefetched::default());
        let table = manual_table(replay_config(4), policy.clone());
        let first = table.create(NewSession::new(())).expect("first").id;
        for _ in 0..3 {
            table.create(NewSession::new(())).expect("fill");
        }
        table.touch(first, 1).expect("touch");
        let created = table.create(NewSession::new(())).expect("room");
        assert_eq!(created.evicted, 1);
        assert!(
            table.get(first).is_none(),
            "the ready victim went, not the LRU one"
        );
        assert_eq!(
            policy.calls.load(Ordering::Relaxed),
            0,
            "no call was needed"
        );
        assert_eq!(table.metrics().fallback_victims, 0);
    }

    /// Takes its events in batches ([`EvictionPolicy::takes_batches`]) and
    /// checks what it is told: every session's events in a possible order
    /// (inserted, accessed while live, removed once), and, whenever the table
    /// asks it anything, everything that happened before the question.
    #[derive(Default)]
    struct Batched {
        table: OnceLock<Weak<SessionTable<()>>>,
        /// Live sessions as told, oldest insert first: the victims proposed.
        order: Mutex<Vec<SessionId>>,
        batches: Mutex<Vec<usize>>,
        inserted: AtomicU64,
        accessed: AtomicU64,
        removed: AtomicU64,
        /// Accesses the test made so far (single-threaded checks only).
        touches_made: OnceLock<Arc<AtomicU64>>,
        violations: Mutex<Vec<String>>,
        questions: AtomicUsize,
    }

    impl Batched {
        fn apply(&self, event: PolicyEvent) {
            let mut order = self.order.lock();
            match event {
                PolicyEvent::Inserted { id, .. } => {
                    self.inserted.fetch_add(1, Ordering::Relaxed);
                    if order.contains(&id) {
                        self.violations
                            .lock()
                            .push(format!("{id:?} inserted twice"));
                    }
                    order.push(id);
                }
                PolicyEvent::Accessed { id, .. } => {
                    self.accessed.fetch_add(1, Ordering::Relaxed);
                    if !order.contains(&id) {
                        self.violations
                            .lock()
                            .push(format!("{id:?} accessed while not live"));
                    }
                }
                PolicyEvent::Removed { id, .. } => {
                    self.removed.fetch_add(1, Ordering::Relaxed);
                    match order.iter().position(|&x| x == id) {
                        Some(at) => {
                            order.remove(at);
                        }
                        None => self
                            .violations
                            .lock()
                            .push(format!("{id:?} removed while not live")),
                    }
                }
                PolicyEvent::Refused { .. } => {}
            }
        }

        /// Called at each question: the table's counters move under its lock
        /// with the transitions, so once it hands its events over they match.
        /// Exact only while no other thread changes the table.
        fn check_up_to_date(&self, when: &str) {
            self.questions.fetch_add(1, Ordering::Relaxed);
            let (Some(table), Some(touches)) = (
                self.table.get().and_then(Weak::upgrade),
                self.touches_made.get(),
            ) else {
                return;
            };
            let m = table.metrics();
            let told = (
                self.inserted.load(Ordering::Relaxed),
                self.accessed.load(Ordering::Relaxed),
                self.removed.load(Ordering::Relaxed),
            );
            let happened = (m.created, touches.load(Ordering::Relaxed), m.removed());
            if told != happened {
                self.violations
                    .lock()
                    .push(format!("{when}: told {told:?}, happened {happened:?}"));
            }
        }
    }

    impl EvictionPolicy for Batched {
        fn name(&self) -> &str {
            "batched"
        }
        fn takes_batches(&self) -> bool {
            true
        }
        fn record(&self, event: PolicyEvent) -> FlushHint {
            self.violations.lock().push(format!(
                "record called for {event:?}: the table holds events for this policy"
            ));
            FlushHint::Idle
        }
        fn record_batch(&self, events: &[PackedEvent]) -> FlushHint {
            self.batches.lock().push(events.len());
            for &event in events {
                match packed::unpack(event) {
                    Some(event) => self.apply(event),
                    None => self.violations.lock().push(format!(
                        "the table packed {event:?}, which unpacks to nothing"
                    )),
                }
            }
            FlushHint::Idle
        }
        fn record_then_ready(
            &self,
            events: &[PackedEvent],
            _arriving: Option<Arriving>,
            _count: usize,
            _out: &mut Vec<SessionId>,
        ) -> FlushHint {
            // Under the table lock: the counters cannot be read without
            // racing the test thread, but nothing may be missing afterwards.
            let hint = self.record_batch(events);
            self.check_up_to_date("ready_victims");
            hint
        }
        fn victims(
            &self,
            request: VictimRequest,
            out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            self.check_up_to_date("victims");
            out.extend(self.order.lock().iter().take(request.count));
            Ok(())
        }
        fn maintain(&self, _now: u64) {
            self.check_up_to_date("maintain");
        }
    }

    fn batched_table(config: TableConfig) -> (Arc<SessionTable<()>>, Arc<Batched>) {
        let policy = Arc::new(Batched::default());
        let table = SessionTable::builder(config)
            .policy(policy.clone())
            .clock(Clock::manual())
            .build_shared()
            .expect("valid config");
        let _ = policy.table.set(Arc::downgrade(&table));
        (table, policy)
    }

    /// A policy that takes batches is told of requests only in batches of at
    /// most `HELD_EVENTS`, yet before any question (victims, the eviction
    /// that uses choices made ahead, the maintenance tick) it has been told
    /// of everything that happened; and the sessions it proposes go.
    #[test]
    fn session_held_events_reach_a_batching_policy_before_every_question() {
        use shadowcat::eviction::HELD_EVENTS;
        let config = TableConfig {
            idle_timeout: Some(Duration::from_secs(10)),
            ..replay_config(8)
        };
        let (table, policy) = batched_table(config);
        let touches = Arc::new(AtomicU64::new(0));
        let _ = policy.touches_made.set(Arc::clone(&touches));
        let ids: Vec<SessionId> = (0..8)
            .map(|_| table.create(NewSession::new(())).expect("fits").id)
            .collect();
        let touch = |id| {
            touches.fetch_add(1, Ordering::Relaxed);
            table.touch(id, 1).expect("touch");
        };
        for i in 0..100 {
            touch(ids[i % 8]);
        }
        assert!(
            policy.batches.lock().is_empty(),
            "108 events are held back, not handed over one by one"
        );
        for i in 0..(2 * HELD_EVENTS) {
            touch(ids[1 + i % 7]);
        }
        let batches = policy.batches.lock().clone();
        assert_eq!(batches, vec![HELD_EVENTS, HELD_EVENTS], "full batches only");
        // Session 0 was left untouched since the first 100 requests: the
        // oldest insert, which this policy proposes, and it goes.
        let created = table.create(NewSession::new(())).expect("room");
        assert_eq!(created.evicted, 1);
        assert!(table.get(ids[0]).is_none());
        assert!(policy.questions.load(Ordering::Relaxed) >= 1);
        // An idle expiry, then the tick: told of the removals first.
        table.clock().set(60 * SECOND);
        assert_eq!(table.run_maintenance(), 8);
        assert_eq!(policy.removed.load(Ordering::Relaxed), 9);
        assert!(policy.order.lock().is_empty());
        assert!(policy.batches.lock().iter().all(|&b| b <= HELD_EVENTS));
        let violations = policy.violations.lock();
        assert!(violations.is_empty(), "{violations:#?}");
    }

    /// Many threads create, touch, remove and evict at random on a table
    /// whose policy takes batches: it is told every session's events in an
    /// order that could have happened, none lost, none twice, and ends up
    /// knowing exactly the table's live sessions.
    #[test]
    fn concurrent_held_events_reach_the_policy_in_order_and_complete() {
        with_watchdog(Duration::from_secs(120), || {
            let (table, policy) = batched_table(replay_config(64));
            let workers: Vec<_> = (0..8u64)
                .map(|seed| {
                    let table = Arc::clone(&table);
                    std::thread::spawn(move || {
                        let mut rng = SmallRng::seed_from_u64(seed);
                        let mut mine: Vec<SessionId> = Vec::new();
                        for _ in 0..20_000 {
                            match rng.random_range(0..10) {
                                0..=2 => {
                                    if let Ok(created) = table.create(NewSession::new(())) {
                                        mine.push(created.id);
                                    }
                                }
                                3 if !mine.is_empty() => {
                                    let id = mine.swap_remove(rng.random_range(0..mine.len()));
                                    let _ = table.remove(id, RemovalCause::Deleted);
                                }
                                4 => {
                                    table.evict(1);
                                }
                                _ if !mine.is_empty() => {
                                    let id = mine[rng.random_range(0..mine.len())];
                                    let _ = table.touch(id, 1);
                                }
                                _ => {}
                            }
                            if rng.random_range(0..2_000) == 0 {
                                std::thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.join().expect("worker");
            }
            // A maintenance round hands over whatever is still held.
            table.run_maintenance();
            let violations = policy.violations.lock().clone();
            assert!(violations.is_empty(), "{violations:#?}");
            let m = table.metrics();
            assert_eq!(policy.inserted.load(Ordering::Relaxed), m.created);
            assert_eq!(policy.removed.load(Ordering::Relaxed), m.removed());
            let mut told = policy.order.lock().clone();
            let mut live: Vec<SessionId> = table.snapshot().iter().map(|s| s.id).collect();
            told.sort_by_key(|id| id.to_bits());
            live.sort_by_key(|id| id.to_bits());
            assert_eq!(told, live);
            assert!(policy
                .batches
                .lock()
                .iter()
                .all(|&b| b <= shadowcat::eviction::HELD_EVENTS));
        });
    }
}
