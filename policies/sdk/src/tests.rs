use crate::bindings::shadowcat::policy::types::Table as WitTable;
use crate::testing::Rng;
use crate::*;

fn session(id: u64) -> Session {
    Session {
        id,
        key: id.wrapping_mul(31) | 1,
        tenant: (id % 7) as u16,
        size: (id % 1000) as u32 + 1,
        time: 1000 + id,
    }
}

fn every_kind_of_event() -> Vec<Event> {
    let mut events = vec![
        Event::Inserted(Session {
            id: u64::MAX,
            key: u64::MAX,
            tenant: u16::MAX,
            size: u32::MAX,
            time: u64::MAX,
        }),
        Event::Inserted(session(1)),
        Event::Accessed(session(2)),
        Event::Accessed(Session {
            id: 0,
            key: 0,
            tenant: 0,
            size: 0,
            time: 0,
        }),
    ];
    for cause in RemovalCause::ALL {
        events.push(Event::Removed {
            id: 3,
            key: 9,
            tenant: 4,
            time: 77,
            cause,
        });
    }
    for reason in RefusalReason::ALL {
        events.push(Event::Refused {
            id: 5,
            key: 11,
            tenant: 65535,
            time: 78,
            reason,
        });
    }
    events
}

fn pack(events: &[Event]) -> Vec<u64> {
    events.iter().flat_map(|e| e.encode()).collect()
}

// ---- packed layouts -------------------------------------------------------

#[test]
fn event_layout_matches_the_wit_bit_positions() {
    let words = Event::Inserted(Session {
        id: 0x1111,
        key: 0x2222,
        tenant: 0xabcd,
        size: 0x1234_5678,
        time: 0x3333,
    })
    .encode();
    assert_eq!(words, [0x1234_5678_abcd_0000, 0x1111, 0x3333, 0x2222]);
    let removed = Event::Removed {
        id: 1,
        key: 2,
        tenant: 3,
        time: 4,
        cause: RemovalCause::UpstreamFailed,
    };
    assert_eq!(removed.encode(), [0x0003_0602, 1, 4, 2]);
    let refused = Event::Refused {
        id: 1,
        key: 2,
        tenant: 0,
        time: 4,
        reason: RefusalReason::NotLive,
    };
    assert_eq!(refused.encode(), [0x0103, 1, 4, 2]);
}

#[test]
fn every_event_kind_cause_and_reason_round_trips() {
    for event in every_kind_of_event() {
        assert_eq!(Event::decode(event.encode()), Ok(event));
    }
    let words = pack(&every_kind_of_event());
    let decoded: Vec<Event> = decode_events(&words).unwrap().iter().collect();
    assert_eq!(decoded, every_kind_of_event());
}

/// The batch check (every head at once, before anything is applied) accepts
/// exactly the heads an event decodes from: every kind and detail byte, with
/// the other head bits (tenant, size) clear or set.
#[test]
fn the_batch_check_accepts_exactly_what_decodes() {
    for low in 0..=u16::MAX {
        for high in [0, u64::MAX << 16] {
            let head = u64::from(low) | high;
            let event = [head, 1, 2, 3];
            assert_eq!(
                decode_events(&event).is_ok(),
                Event::decode(event).is_ok(),
                "head {head:#x}"
            );
        }
    }
}

#[test]
fn unknown_kinds_causes_and_reasons_are_errors() {
    for kind in 4..=255u64 {
        let err = Event::decode([kind, 1, 2, 3]).unwrap_err();
        assert_eq!(err, format!("unknown event kind {kind}"));
    }
    for cause in 7..=255u64 {
        let err = Event::decode([2 | (cause << 8), 1, 2, 3]).unwrap_err();
        assert_eq!(err, format!("unknown removal cause {cause}"));
    }
    for reason in 2..=255u64 {
        let err = Event::decode([3 | (reason << 8), 1, 2, 3]).unwrap_err();
        assert_eq!(err, format!("unknown refusal reason {reason}"));
    }
}

/// A batch is checked in one pass over its head words, apart from decoding:
/// for every kind and detail byte, a batch holding that event among valid
/// ones is rejected exactly when the event alone is, with its message.
#[test]
fn a_batch_is_rejected_exactly_when_one_of_its_events_is() {
    let valid = Event::Removed {
        id: 4,
        key: 0,
        tenant: 0,
        time: 5,
        cause: RemovalCause::Evicted,
    }
    .encode();
    for kind in 0..=255u64 {
        for detail in 0..=255u64 {
            let odd = [kind | (detail << 8) | (3 << 32), 1, 2, 3];
            let batch = [valid, valid, odd, valid].concat();
            match Event::decode(odd) {
                Ok(_) => assert!(decode_events(&batch).is_ok(), "{odd:?}"),
                Err(message) => assert_eq!(
                    decode_events(&batch).err(),
                    Some(format!("observe: event 2: {message}")),
                ),
            }
        }
    }
}

#[test]
fn detail_byte_of_inserts_and_accesses_and_size_of_removals_are_ignored() {
    let e = Event::decode([0xff00 | 1 | (7 << 32), 9, 8, 6]).unwrap();
    assert_eq!(
        e,
        Event::Accessed(Session {
            id: 9,
            key: 6,
            tenant: 0,
            size: 7,
            time: 8
        })
    );
    let e = Event::decode([2 | (4 << 8) | (5 << 32), 9, 8, 6]).unwrap();
    assert!(matches!(
        e,
        Event::Removed {
            cause: RemovalCause::Deleted,
            ..
        }
    ));
}

#[test]
fn ragged_event_lists_are_rejected() {
    let words = pack(&every_kind_of_event());
    assert!(decode_events(&[]).unwrap().is_empty());
    for cut in 1..EVENT_WORDS {
        let err = decode_events(&words[..words.len() - cut]).unwrap_err();
        assert!(err.contains("is not a multiple of 4 words"), "{err}");
        let err = decode_events(&words[..cut]).unwrap_err();
        assert!(err.contains("is not a multiple of 4 words"), "{err}");
    }
}

#[test]
fn one_bad_event_rejects_the_whole_list_and_names_it() {
    let mut words = pack(&every_kind_of_event());
    words[4 * 3] = 9;
    assert_eq!(
        decode_events(&words).unwrap_err(),
        "observe: event 3: unknown event kind 9"
    );
}

#[test]
fn victims_input_header_events_and_candidates_decode() {
    let events = every_kind_of_event();
    let candidates = [
        Candidate {
            id: 1,
            last_access: 2,
            requests: 3,
            key: 4,
        },
        Candidate {
            id: u64::MAX,
            last_access: 0,
            requests: u64::MAX,
            key: 0,
        },
    ];
    let mut input = vec![events.len() as u64, 42, 7];
    input.extend(pack(&events));
    input.extend(candidates.iter().flat_map(|c| c.encode()));
    let decoded = decode_victims_input(&input).unwrap();
    assert_eq!(decoded.events.iter().collect::<Vec<_>>(), events);
    assert_eq!(decoded.arriving, Some(Arriving { key: 42, size: 7 }));
    let mut out = Vec::new();
    decode_candidates(decoded.candidates, &mut out);
    assert_eq!(out, candidates);
}

#[test]
fn victims_input_arriving_is_none_only_when_key_and_size_are_zero() {
    let arriving = |key, size| decode_victims_input(&[0, key, size]).unwrap().arriving;
    assert_eq!(arriving(0, 0), None);
    assert_eq!(arriving(0, 1), Some(Arriving { key: 0, size: 1 }));
    assert_eq!(arriving(5, 0), Some(Arriving { key: 5, size: 0 }));
    assert_eq!(
        arriving(u64::MAX, u64::from(u32::MAX)),
        Some(Arriving {
            key: u64::MAX,
            size: u32::MAX
        })
    );
}

#[test]
fn malformed_victims_inputs_are_errors() {
    for short in [&[][..], &[0], &[0, 0]] {
        let err = decode_victims_input(short).unwrap_err();
        assert!(err.contains("shorter than its 3-word header"), "{err}");
    }
    let one_event = Event::Inserted(session(1)).encode();
    let with = |head: [u64; 3], rest: &[u64]| [&head[..], rest].concat();
    // More events announced than present, including counts that overflow.
    for count in [2, 1 << 62, u64::MAX] {
        let err = decode_victims_input(&with([count, 0, 0], &one_event)).unwrap_err();
        assert!(err.contains("announces"), "{err}");
    }
    // Ragged candidates.
    for extra in 1..CANDIDATE_WORDS {
        let tail = [&one_event[..], &[0; 8][..extra]].concat();
        let err = decode_victims_input(&with([1, 0, 0], &tail)).unwrap_err();
        assert!(err.contains("victims candidates"), "{err}");
    }
    // A bad event among the pending ones.
    let err = decode_victims_input(&with([1, 0, 0], &[4, 1, 2, 3])).unwrap_err();
    assert_eq!(err, "victims: event 0: unknown event kind 4");
    let err = decode_victims_input(&[0, 1, 1 << 32]).unwrap_err();
    assert!(err.contains("does not fit in 32 bits"), "{err}");
}

#[test]
fn usage_decodes_and_rejects_ragged_lists_and_wide_tenants() {
    let usage = [
        Usage {
            id: 1,
            admitted: 2,
            rejected: 3,
            window_ms: 4,
            key: 5,
            tenant: 6,
        },
        Usage {
            id: u64::MAX,
            admitted: u64::MAX,
            rejected: 0,
            window_ms: 1000,
            key: u64::MAX,
            tenant: u16::MAX,
        },
    ];
    let words: Vec<u64> = usage.iter().flat_map(|u| u.encode()).collect();
    assert_eq!(decode_usage(&words).unwrap(), usage);
    assert_eq!(decode_usage(&[]).unwrap(), []);
    for cut in 1..USAGE_WORDS {
        let err = decode_usage(&words[..words.len() - cut]).unwrap_err();
        assert!(err.contains("multiple of 6 words"), "{err}");
    }
    let err = decode_usage(&[1, 2, 3, 4, 5, 65536]).unwrap_err();
    assert_eq!(
        err,
        "adjust-quotas usage: entry 0: tenant 65536 does not fit in 16 bits"
    );
}

#[test]
fn adjustments_pack_three_words_each() {
    let a = [
        QuotaAdjustment {
            id: 1,
            rate: 2,
            burst: 3,
        },
        QuotaAdjustment {
            id: 4,
            rate: 5,
            burst: 6,
        },
    ];
    assert_eq!(encode_adjustments(&a), [1, 2, 3, 4, 5, 6]);
}

// ---- the adapter ------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Insert(Session),
    Access(Session),
    Remove(u64, u64, RemovalCause),
    Refuse(u64, u64, RefusalReason),
    Victims(usize, Option<Arriving>, Vec<Candidate>),
}

struct Recorder {
    table: Table,
    seen: Vec<Seen>,
    answer: Vec<u64>,
}

impl Policy for Recorder {
    const NAME: &'static str = "recorder";
    const VERSION: &'static str = "9.9.9";
    const NEEDS: Needs = Needs::all();
    const TRAITS: Traits = Traits::SAMPLED;
    const BATCH_SIZE: u32 = 17;
    const SAMPLE_SIZE: u32 = 5;

    fn create(table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &["fail", "answer"])?;
        if config.bool_or("fail", false)? {
            return Err("recorder policy: asked to fail".into());
        }
        let answer = match config.get("answer") {
            Some(list) => list.split(',').map(|n| n.parse().unwrap()).collect(),
            None => Vec::new(),
        };
        Ok(Self {
            table: *table,
            seen: Vec::new(),
            answer,
        })
    }
    fn on_insert(&mut self, s: &Session) {
        self.seen.push(Seen::Insert(*s));
    }
    fn on_access(&mut self, s: &Session) {
        self.seen.push(Seen::Access(*s));
    }
    fn on_remove(&mut self, id: u64, time: u64, cause: RemovalCause) {
        self.seen.push(Seen::Remove(id, time, cause));
    }
    fn on_refused(&mut self, id: u64, time: u64, reason: RefusalReason) {
        self.seen.push(Seen::Refuse(id, time, reason));
    }
    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>) {
        self.seen.push(Seen::Victims(
            count,
            choice.arriving,
            choice.candidates.to_vec(),
        ));
        out.extend(&self.answer);
    }
    fn adjust_quotas(&mut self, usage: &[Usage], out: &mut Vec<QuotaAdjustment>) {
        out.extend(usage.iter().map(|u| QuotaAdjustment {
            id: u.id,
            rate: u.admitted + u64::from(u.tenant),
            burst: u.key,
        }));
    }
    fn maintain(&mut self, now: u64) -> Result<(), String> {
        if now == 13 {
            Err("recorder policy: unlucky tick".into())
        } else {
            Ok(())
        }
    }
}

type Recorded = Adapter<Recorder>;

fn wit_table(capacity: u64, idle: u64, age: u64) -> WitTable {
    WitTable {
        capacity,
        byte_mode: true,
        idle_timeout: idle,
        max_age: age,
    }
}

fn create(config: &[(&str, &str)]) -> Result<(), String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Recorded::create(wit_table(1000, 0, 0), config)
}

fn seen() -> Vec<Seen> {
    with_policy::<Recorder, _>(|r| std::mem::take(&mut r.seen)).unwrap()
}

fn expected(events: &[Event]) -> Vec<Seen> {
    events
        .iter()
        .map(|e| match *e {
            Event::Inserted(s) => Seen::Insert(s),
            Event::Accessed(s) => Seen::Access(s),
            Event::Removed {
                id, time, cause, ..
            } => Seen::Remove(id, time, cause),
            Event::Refused {
                id, time, reason, ..
            } => Seen::Refuse(id, time, reason),
        })
        .collect()
}

#[test]
fn info_reports_the_policy_constants() {
    let info = Recorded::info();
    assert_eq!(info.name, "recorder");
    assert_eq!(info.version, "9.9.9");
    assert_eq!(info.needs, Needs::all());
    assert_eq!(info.traits, Traits::SAMPLED);
    assert_eq!(info.batch_size, 17);
    assert_eq!(info.sample_size, 5);
}

#[test]
fn create_converts_the_table_and_reports_errors_as_they_are() {
    Recorded::create(wit_table(5, 0, 0), Vec::new()).unwrap();
    let table = with_policy::<Recorder, _>(|r| r.table).unwrap();
    assert_eq!(
        table,
        Table {
            capacity: 5,
            byte_mode: true,
            idle_timeout: None,
            max_age: None
        }
    );
    Recorded::create(wit_table(6, 30_000_000, 1), Vec::new()).unwrap();
    let table = with_policy::<Recorder, _>(|r| r.table).unwrap();
    assert_eq!(table.idle_timeout, Some(30_000_000));
    assert_eq!(table.max_age, Some(1));
    assert_eq!(
        create(&[("fail", "yes")]).unwrap_err(),
        "recorder policy: asked to fail"
    );
    assert_eq!(
        create(&[("colour", "red")]).unwrap_err(),
        "recorder policy: unknown config key `colour`; accepted keys: `fail`, `answer`"
    );
}

#[test]
fn calls_before_create_are_errors_not_traps() {
    struct NeverCreated;
    impl Policy for NeverCreated {
        const NAME: &'static str = "never";
        const VERSION: &'static str = "0";
        const NEEDS: Needs = Needs::empty();
        fn create(_: &Table, _: &Config) -> Result<Self, String> {
            Err("no".into())
        }
        fn victims(&mut self, _: usize, _: &Choice<'_>, _: &mut Vec<u64>) {}
    }
    type A = Adapter<NeverCreated>;
    assert!(A::create(wit_table(1, 0, 0), Vec::new()).is_err());
    let not_created = Err(NOT_CREATED.to_owned());
    assert_eq!(A::observe(Vec::new()), not_created);
    assert_eq!(
        A::victims(1, vec![0, 0, 0]),
        not_created.clone().map(|()| vec![])
    );
    assert_eq!(
        A::adjust_quotas(Vec::new()),
        not_created.clone().map(|()| vec![])
    );
    assert_eq!(A::maintain(0), not_created);
}

#[test]
fn observe_delivers_every_event_in_order() {
    create(&[]).unwrap();
    let events = every_kind_of_event();
    Recorded::observe(pack(&events)).unwrap();
    assert_eq!(seen(), expected(&events));
}

#[test]
fn a_malformed_observe_batch_applies_nothing() {
    create(&[]).unwrap();
    let mut words = pack(&every_kind_of_event());
    *words.last_mut().unwrap() = 0;
    let last = words.len() - 4;
    words[last] = 2 | (200 << 8);
    assert!(Recorded::observe(words.clone()).is_err());
    words.pop();
    assert!(Recorded::observe(words).is_err());
    assert_eq!(seen(), []);
}

#[test]
fn victims_applies_pending_events_then_offers_the_choice() {
    create(&[("answer", "9,8,7,6")]).unwrap();
    let events = every_kind_of_event();
    let candidates = [Candidate {
        id: 9,
        last_access: 100,
        requests: 3,
        key: 77,
    }];
    let mut input = vec![events.len() as u64, 77, 1];
    input.extend(pack(&events));
    input.extend(candidates[0].encode());
    assert_eq!(Recorded::victims(3, input).unwrap(), [9, 8, 7]);
    let mut want = expected(&events);
    want.push(Seen::Victims(
        3,
        Some(Arriving { key: 77, size: 1 }),
        candidates.to_vec(),
    ));
    assert_eq!(seen(), want);
    assert_eq!(Recorded::victims(0, vec![0, 0, 0]).unwrap(), []);
    assert_eq!(seen(), [Seen::Victims(0, None, Vec::new())]);
}

#[test]
fn a_malformed_victims_input_applies_none_of_its_events() {
    create(&[("answer", "1")]).unwrap();
    let events = every_kind_of_event();
    let mut input = vec![events.len() as u64, 0, 0];
    input.extend(pack(&events));
    input.extend([1, 2, 3]); // a ragged candidate
    assert!(Recorded::victims(1, input).is_err());
    assert_eq!(seen(), []);
}

#[test]
fn adjust_quotas_and_maintain_go_through() {
    create(&[]).unwrap();
    let usage = Usage {
        id: 5,
        admitted: 10,
        rejected: 1,
        window_ms: 1000,
        key: 99,
        tenant: 2,
    };
    assert_eq!(
        Recorded::adjust_quotas(usage.encode().to_vec()),
        Ok(vec![5, 12, 99])
    );
    assert!(Recorded::adjust_quotas(vec![1, 2, 3, 4]).is_err());
    assert_eq!(Recorded::maintain(1), Ok(()));
    assert_eq!(
        Recorded::maintain(13),
        Err("recorder policy: unlucky tick".into())
    );
}

#[test]
fn a_second_create_starts_over() {
    create(&[]).unwrap();
    Recorded::observe(pack(&[Event::Inserted(session(1))])).unwrap();
    create(&[]).unwrap();
    assert_eq!(seen(), []);
}

#[test]
fn hand_written_guests_can_split_a_victims_call() {
    create(&[("answer", "4,5")]).unwrap();
    let mut input = vec![1, 0, 0];
    input.extend(Event::Inserted(session(4)).encode());
    input.extend(
        Candidate {
            id: 4,
            last_access: 1,
            requests: 1,
            key: 1,
        }
        .encode(),
    );
    let request = apply_victims_input::<Recorder>(&input).unwrap();
    assert_eq!(seen(), [Seen::Insert(session(4))]);
    assert_eq!(request.candidates().count(), 1);
    assert_eq!(choose_victims::<Recorder>(1, &request).unwrap(), [4]);
}

// ---- slots ----------------------------------------------------------------------

const fn id(slot: u32, generation: u32) -> u64 {
    ((generation as u64) << 32) | slot as u64
}

#[test]
fn slot_is_the_low_32_bits() {
    assert_eq!(slot(id(7, 3)), 7);
    assert_eq!(slot(u64::MAX), u32::MAX);
}

#[test]
fn slot_map_checks_the_generation() {
    let mut map = SlotMap::new();
    assert_eq!(map.insert(id(3, 0), "a"), Ok(None));
    assert_eq!(map.len(), 1);
    assert_eq!(map.slots(), 4);
    assert_eq!(map.get(id(3, 0)), Some(&"a"));
    assert_eq!(map.get(id(3, 1)), None);
    assert_eq!(map.get(id(2, 0)), None);
    assert_eq!(map.get(id(300, 0)), None);
    assert_eq!(map.remove(id(3, 1)), None);
    assert_eq!(map.len(), 1);
    // A missed removal: the new session displaces the stale one.
    assert_eq!(map.insert(id(3, 1), "b"), Ok(Some((id(3, 0), "a"))));
    assert_eq!(map.len(), 1);
    assert_eq!(map.insert(id(3, 1), "c"), Ok(Some((id(3, 1), "b"))));
    assert_eq!(map.at(3), Some((id(3, 1), &"c")));
    *map.get_mut(id(3, 1)).unwrap() = "d";
    assert_eq!(map.insert(id(0, 5), "e"), Ok(None));
    assert_eq!(
        map.iter().collect::<Vec<_>>(),
        [(id(0, 5), &"e"), (id(3, 1), &"d")]
    );
    assert_eq!(map.remove(id(3, 1)), Some("d"));
    assert_eq!(map.remove(id(3, 1)), None);
    assert_eq!(map.at(3), None);
    assert_eq!(map.len(), 1);
    map.clear();
    assert!(map.is_empty());
    assert_eq!(map.get(id(0, 5)), None);
}

#[test]
fn slot_map_refuses_rather_than_traps() {
    let mut map = SlotMap::new();
    assert_eq!(map.insert(id(u32::MAX, 0), 1u8), Err(1));
    // Far more memory than any machine has: an error, not an abort. The map
    // is made opaque so an optimised build cannot drop the allocation as
    // unused (and take it to have succeeded).
    let mut big: SlotMap<[u64; 64]> = SlotMap::new();
    let big = std::hint::black_box(&mut big);
    assert!(big.insert(id(u32::MAX - 1, 0), [0; 64]).is_err());
    assert!(big.is_empty());
}

#[test]
fn slot_list_keeps_order_through_moves_and_removals() {
    let mut list = SlotList::new();
    for s in 0..5 {
        assert_eq!(list.push_back(id(s, 0), s), Ok(None));
    }
    let ids = |l: &SlotList<u32>| l.iter().map(|(i, _)| slot(i)).collect::<Vec<_>>();
    assert_eq!(ids(&list), [0, 1, 2, 3, 4]);
    assert_eq!(list.move_to_back(id(0, 0)), Some(&mut 0));
    assert_eq!(list.move_to_back(id(0, 1)), None);
    assert_eq!(ids(&list), [1, 2, 3, 4, 0]);
    assert_eq!(list.remove(id(3, 0)), Some(3));
    assert_eq!(ids(&list), [1, 2, 4, 0]);
    assert_eq!(
        list.iter().rev().map(|(i, _)| slot(i)).collect::<Vec<_>>(),
        [0, 4, 2, 1]
    );
    assert_eq!(list.front(), Some((id(1, 0), &1)));
    assert_eq!(list.back(), Some((id(0, 0), &0)));
    assert_eq!(list.next(id(2, 0)), Some((id(4, 0), &4)));
    assert_eq!(list.prev(id(2, 0)), Some((id(1, 0), &1)));
    assert_eq!(list.next(id(0, 0)), None);
    assert_eq!(list.prev(id(1, 0)), None);
    // A stale occupant is unlinked and handed back.
    assert_eq!(list.push_back(id(2, 1), 20), Ok(Some((id(2, 0), 2))));
    assert_eq!(ids(&list), [1, 4, 0, 2]);
    assert_eq!(list.get(id(2, 1)), Some(&20));
    assert_eq!(list.pop_front(), Some((id(1, 0), 1)));
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().len(), 3);
    list.clear();
    assert_eq!(list.front(), None);
    assert_eq!(list.iter().next(), None);
    assert_eq!(list.push_back(id(u32::MAX, 0), 1), Err(1));
    assert!(list.is_empty());
}

#[test]
fn slot_list_matches_a_vec_under_random_operations() {
    let mut rng = Rng::new(7);
    let mut list: SlotList<u64> = SlotList::new();
    let mut model: Vec<(u64, u64)> = Vec::new();
    let mut generations = [0u32; 40];
    for step in 0..50_000u64 {
        let s = rng.below(40) as u32;
        let current = id(s, generations[s as usize]);
        match rng.below(6) {
            0 | 1 => {
                // Sometimes a new generation without a removal (a missed one).
                if rng.percent(10) {
                    generations[s as usize] += 1;
                }
                let new = id(s, generations[s as usize]);
                let old = model
                    .iter()
                    .position(|&(i, _)| slot(i) == s)
                    .map(|p| model.remove(p));
                model.push((new, step));
                assert_eq!(list.push_back(new, step), Ok(old));
            }
            2 => {
                let found = model.iter().position(|&(i, _)| i == current);
                let moved = found.map(|p| model.remove(p));
                if let Some(entry) = moved {
                    model.push(entry);
                }
                assert_eq!(list.move_to_back(current).copied(), moved.map(|e| e.1));
            }
            3 => {
                let found = model.iter().position(|&(i, _)| i == current);
                let removed = found.map(|p| model.remove(p).1);
                assert_eq!(list.remove(current), removed);
                if removed.is_some() {
                    generations[s as usize] += 1;
                }
            }
            4 => {
                let popped = (!model.is_empty()).then(|| model.remove(0));
                assert_eq!(list.pop_front(), popped);
                if let Some((i, _)) = popped {
                    generations[slot(i) as usize] += 1;
                }
            }
            _ => {
                let got: Vec<(u64, u64)> = list.iter().map(|(i, v)| (i, *v)).collect();
                assert_eq!(got, model);
                let back: Vec<(u64, u64)> = list.iter().rev().map(|(i, v)| (i, *v)).collect();
                assert!(back.iter().rev().eq(model.iter()));
            }
        }
        assert_eq!(list.len(), model.len());
    }
}

// ---- helpers ----------------------------------------------------------------

#[test]
fn pick_lowest_dedups_breaks_ties_by_id_and_stops_at_count() {
    let c = |id, requests| Candidate {
        id,
        last_access: 0,
        requests,
        key: 0,
    };
    let candidates = [c(5, 1), c(3, 1), c(9, 0), c(5, 1), c(1, 2)];
    let mut out = Vec::new();
    pick_lowest(10, &candidates, |c| c.requests, &mut out);
    assert_eq!(out, [9, 3, 5, 1]);
    out.clear();
    pick_lowest(2, &candidates, |c| c.requests, &mut out);
    assert_eq!(out, [9, 3]);
    out.clear();
    pick_lowest(0, &candidates, |c| c.requests, &mut out);
    assert_eq!(out, []);
}

#[test]
fn config_getters_name_the_key() {
    let config = Config::new(vec![
        ("n".into(), "12".into()),
        ("x".into(), "abc".into()),
        ("n".into(), "13".into()),
        ("f".into(), "inf".into()),
    ]);
    assert_eq!(config.u64_or("n", 0), Ok(13));
    assert_eq!(config.u64_or("missing", 4), Ok(4));
    assert_eq!(
        config.u64_or("x", 0).unwrap_err(),
        "policy config `x`: expected a non-negative integer, got `abc`"
    );
    assert_eq!(
        config.f64_or("f", 0.0).unwrap_err(),
        "policy config `f`: expected a finite number, got `inf`"
    );
    assert_eq!(
        config.bool_or("x", true).unwrap_err(),
        "policy config `x`: expected true or false, got `abc`"
    );
    assert!(config.check_keys("p", &["n", "x", "f"]).is_ok());
    assert_eq!(
        config.check_keys("p", &[]).unwrap_err(),
        "p policy: unknown config key `n`; accepted keys: none"
    );
}

#[test]
fn test_ids_reuse_slots_with_the_next_generation() {
    let mut rng = Rng::new(1);
    let mut ids = testing::Ids::new();
    let a = ids.insert(&mut rng);
    let b = ids.insert(&mut rng);
    assert_eq!((a, b), (id(0, 0), id(1, 0)));
    assert!(ids.remove(a));
    assert!(!ids.remove(a));
    assert_eq!(ids.insert(&mut rng), id(0, 1));
    assert_eq!(ids.live().len(), 2);
}
