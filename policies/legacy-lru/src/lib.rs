//! Test fixture: an exact LRU written straight against `shadowcat:policy@0.1.0`
//! (`wit/0.1.0`) with plain wit-bindgen, no SDK. The SDK follows the newest
//! interface; this keeps a component of the older one built from source, so the
//! host's support for 0.1 stays proven. Built to `tests/fixtures/lru-0.1.wasm`.
//!
//! It decides as `policies/lru` does: recency is the order of `inserted` and
//! `accessed` events (an unknown id is added), any `removed` forgets; victims
//! are the least recent, or with candidates the candidates by last touch time
//! (ties by event order), unknown ones by the host's last-access word after
//! known ones at the same microsecond. Malformed input is an `Err`, never a
//! trap.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

wit_bindgen::generate!({
    path: "../../wit/0.1.0",
    world: "eviction-policy",
});

use exports::shadowcat::policy::policy::Guest;
use shadowcat::policy::types::{Info, Needs};

const EVENT_WORDS: usize = 3;
const CANDIDATE_WORDS: usize = 3;
const USAGE_WORDS: usize = 4;

#[derive(Default)]
struct Lru {
    /// id -> (time, sequence number) of its last touch.
    touched: HashMap<u64, (u64, u64)>,
    /// sequence number -> id, least recent first.
    order: BTreeMap<u64, u64>,
    seq: u64,
}

impl Lru {
    fn touch(&mut self, id: u64, time: u64) {
        self.seq += 1;
        if let Some((_, seq)) = self.touched.insert(id, (time, self.seq)) {
            self.order.remove(&seq);
        }
        self.order.insert(self.seq, id);
    }

    fn remove(&mut self, id: u64) {
        if let Some((_, seq)) = self.touched.remove(&id) {
            self.order.remove(&seq);
        }
    }

    fn victims(&self, count: usize, candidates: &[[u64; CANDIDATE_WORDS]]) -> Vec<u64> {
        if candidates.is_empty() {
            return self.order.values().take(count).copied().collect();
        }
        let mut ranked: Vec<((u64, bool, u64), u64)> = candidates
            .iter()
            .map(|&[id, last_access, _]| match self.touched.get(&id) {
                Some(&(time, seq)) => ((time, false, seq), id),
                None => ((last_access, true, 0), id),
            })
            .collect();
        ranked.sort_unstable_by_key(|r| r.1);
        ranked.dedup_by_key(|r| r.1);
        ranked.sort_unstable();
        ranked.into_iter().take(count).map(|r| r.1).collect()
    }
}

thread_local! {
    static LRU: RefCell<Option<Lru>> = const { RefCell::new(None) };
}

fn with_lru<R>(f: impl FnOnce(&mut Lru) -> R) -> Result<R, String> {
    LRU.with(|cell| match cell.borrow_mut().as_mut() {
        Some(lru) => Ok(f(lru)),
        None => Err("legacy-lru: called before `create`".into()),
    })
}

fn chunks<'a, const N: usize>(what: &str, words: &'a [u64]) -> Result<&'a [[u64; N]], String> {
    match words.as_chunks::<N>() {
        (whole, []) => Ok(whole),
        _ => Err(format!(
            "legacy-lru: {what}: {} words is not a multiple of {N}",
            words.len()
        )),
    }
}

enum Event {
    Touch(u64, u64),
    Remove(u64),
}

fn decode(words: &[u64]) -> Result<Vec<Event>, String> {
    chunks::<EVENT_WORDS>("events", words)?
        .iter()
        .enumerate()
        .map(
            |(i, &[head, id, time])| match (head as u8, (head >> 8) as u8) {
                (0 | 1, _) => Ok(Event::Touch(id, time)),
                (2, 0..=4) => Ok(Event::Remove(id)),
                (2, cause) => Err(format!(
                    "legacy-lru: event {i}: unknown removal cause {cause}"
                )),
                (kind, _) => Err(format!("legacy-lru: event {i}: unknown event kind {kind}")),
            },
        )
        .collect()
}

fn apply(events: Vec<Event>) -> Result<(), String> {
    with_lru(|lru| {
        for event in events {
            match event {
                Event::Touch(id, time) => lru.touch(id, time),
                Event::Remove(id) => lru.remove(id),
            }
        }
    })
}

struct LegacyLru;

impl Guest for LegacyLru {
    fn create(_capacity: u64, config: Vec<(String, String)>) -> Result<(), String> {
        if let Some((key, _)) = config.first() {
            return Err(format!(
                "legacy-lru policy: unknown config key `{key}`; accepted keys: none"
            ));
        }
        LRU.with(|cell| *cell.borrow_mut() = Some(Lru::default()));
        Ok(())
    }

    fn info() -> Info {
        Info {
            name: "legacy-lru".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            needs: Needs::INSERTED | Needs::ACCESSED | Needs::REMOVED,
            batch_size: 256,
        }
    }

    fn observe(events: Vec<u64>) -> Result<(), String> {
        apply(decode(&events)?)
    }

    fn victims(count: u32, input: Vec<u64>) -> Result<Vec<u64>, String> {
        let Some((&n, rest)) = input.split_first() else {
            return Err("legacy-lru: victims: empty input".into());
        };
        let words = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(EVENT_WORDS))
            .filter(|&w| w <= rest.len())
            .ok_or_else(|| format!("legacy-lru: victims: {n} events announced, too few words"))?;
        let (events, candidates) = rest.split_at(words);
        let candidates = chunks::<CANDIDATE_WORDS>("candidates", candidates)?;
        apply(decode(events)?)?;
        with_lru(|lru| lru.victims(count as usize, candidates))
    }

    fn adjust_quotas(usage: Vec<u64>) -> Result<Vec<u64>, String> {
        chunks::<USAGE_WORDS>("usage", &usage)?;
        Ok(Vec::new())
    }

    fn maintain(_now: u64) -> Result<(), String> {
        with_lru(|_| ())
    }
}

// Natively (unit tests) the exports have no caller, and their names, which
// contain `:`, break the native linker's version script.
#[cfg(target_arch = "wasm32")]
export!(LegacyLru);

#[cfg(test)]
mod tests;
