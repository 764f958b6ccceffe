//! The packed layouts of `shadowcat:policy@0.3.0` (`wit/0.3.0/policy.wit`), decoded
//! into plain Rust values. Every decoder validates: a list whose length is not a
//! multiple of its stride, an unknown event kind, removal cause or refusal reason,
//! or a field wider than its type is an `Err`, so that what a policy sees is
//! always well formed.

/// Stride of one event: head word (kind, detail, tenant, size), session id, time,
/// stable key.
pub const EVENT_WORDS: usize = 4;
/// Words before the events in a `victims` input: event count, arriving key,
/// arriving size.
pub const VICTIMS_HEADER_WORDS: usize = 3;
/// Stride of one host-sampled candidate: id, last access, requests, stable key.
pub const CANDIDATE_WORDS: usize = 4;
/// Stride of one usage record in `adjust-quotas`: id, admitted, rejected,
/// window, stable key, tenant.
pub const USAGE_WORDS: usize = 6;
/// Stride of one quota adjustment returned by `adjust-quotas`: id, rate, burst.
pub const ADJUSTMENT_WORDS: usize = 3;
/// Last id of a `stable-order` answer: the sessions inserted after this answer
/// follow the victims listed, oldest first, under the same promise (see
/// [`crate::Policy::victims`]). It names no session (no slot is `u32::MAX`):
/// a host that does not know it refuses it as not live.
pub const ARRIVALS: u64 = u64::MAX;
/// Last id of a `stable-order` answer, as [`ARRIVALS`], for a policy whose
/// arrivals come next only until it has evicted every victim it chose ahead:
/// they follow while one the host queued (listed or arrived) is still queued,
/// and once the host has handed out, or seen events name, all of them, the
/// promise ends and the host asks again. SIEVE says it: its hand chases the
/// arrivals, but wraps to the oldest sessions once it passes the newest. Slot
/// `u32::MAX` too, so it names no session either.
pub const ARRIVALS_WHILE_QUEUED: u64 = 0xffff_fffe_ffff_ffff;

/// Follows the victims of a `ghost-conditional` answer; what changed in the
/// policy's ghosts comes after it (see [`crate::GhostChanges`]). Slot
/// `u32::MAX`, so it names no session.
pub const GHOSTS: u64 = 0xffff_fffd_ffff_ffff;
/// Set in the word after [`GHOSTS`] when the keys listed are all of the
/// policy's ghosts rather than the changes to them.
pub const GHOSTS_REPLACED: u64 = 1 << 63;

/// Whether `id`, ending a `stable-order` answer, says the arrivals follow
/// ([`ARRIVALS`] or [`ARRIVALS_WHILE_QUEUED`]).
pub fn is_arrivals(id: u64) -> bool {
    id == ARRIVALS || id == ARRIVALS_WHILE_QUEUED
}

/// A tenant label (bits 16..32 of an event's head word); 0 is the default tenant.
pub type Tenant = u16;

/// Why the host removed a session (the detail byte of a `removed` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    ExpiredIdle,
    ExpiredAge,
    Evicted,
    Closed,
    Deleted,
    Shutdown,
    UpstreamFailed,
}

impl RemovalCause {
    pub const ALL: [Self; 7] = [
        Self::ExpiredIdle,
        Self::ExpiredAge,
        Self::Evicted,
        Self::Closed,
        Self::Deleted,
        Self::Shutdown,
        Self::UpstreamFailed,
    ];

    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::ExpiredIdle,
            1 => Self::ExpiredAge,
            2 => Self::Evicted,
            3 => Self::Closed,
            4 => Self::Deleted,
            5 => Self::Shutdown,
            6 => Self::UpstreamFailed,
            _ => return None,
        })
    }

    pub const fn code(self) -> u8 {
        match self {
            Self::ExpiredIdle => 0,
            Self::ExpiredAge => 1,
            Self::Evicted => 2,
            Self::Closed => 3,
            Self::Deleted => 4,
            Self::Shutdown => 5,
            Self::UpstreamFailed => 6,
        }
    }
}

/// Why the host did not evict a proposed victim (the detail byte of a `refused`
/// event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// A request in flight holds the session; it stays live.
    Pinned,
    /// The id names no live session (already removed, never existed, or a repeat).
    NotLive,
}

impl RefusalReason {
    pub const ALL: [Self; 2] = [Self::Pinned, Self::NotLive];

    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Pinned,
            1 => Self::NotLive,
            _ => return None,
        })
    }

    pub const fn code(self) -> u8 {
        match self {
            Self::Pinned => 0,
            Self::NotLive => 1,
        }
    }
}

/// A session as an `inserted` or `accessed` event describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Session {
    pub id: u64,
    /// The same for every session of the same client (0 when the host knows
    /// none), so a policy can recognise a returning client across session ids.
    pub key: u64,
    pub tenant: Tenant,
    /// 1 per session, or bytes in byte mode.
    pub size: u32,
    /// Host clock, microseconds.
    pub time: u64,
}

/// A decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Inserted(Session),
    Accessed(Session),
    Removed {
        id: u64,
        key: u64,
        tenant: Tenant,
        time: u64,
        cause: RemovalCause,
    },
    Refused {
        id: u64,
        key: u64,
        tenant: Tenant,
        time: u64,
        reason: RefusalReason,
    },
}

const KIND_INSERTED: u8 = 0;
const KIND_ACCESSED: u8 = 1;
const KIND_REMOVED: u8 = 2;
const KIND_REFUSED: u8 = 3;

impl Event {
    /// Decodes one four-word event. The detail byte of `inserted` and `accessed`
    /// events is ignored (it is documented as 0), as is the size word of the
    /// other kinds, so a host that fills them is not an error.
    pub fn decode(words: [u64; EVENT_WORDS]) -> Result<Self, String> {
        Self::try_decode(words).ok_or_else(|| Self::malformed(words))
    }

    /// [`Self::decode`] without the message: inlined into the event loop,
    /// which runs once per event of every batch, while building the message
    /// stays out of line.
    #[inline(always)]
    fn try_decode(words: [u64; EVENT_WORDS]) -> Option<Self> {
        let [head, id, time, key] = words;
        let kind = head as u8;
        let detail = (head >> 8) as u8;
        let tenant = (head >> 16) as u16;
        let size = (head >> 32) as u32;
        let session = Session {
            id,
            key,
            tenant,
            size,
            time,
        };
        Some(match kind {
            KIND_INSERTED => Event::Inserted(session),
            KIND_ACCESSED => Event::Accessed(session),
            KIND_REMOVED => Event::Removed {
                id,
                key,
                tenant,
                time,
                cause: RemovalCause::from_code(detail)?,
            },
            KIND_REFUSED => Event::Refused {
                id,
                key,
                tenant,
                time,
                reason: RefusalReason::from_code(detail)?,
            },
            _ => return None,
        })
    }

    #[cold]
    fn malformed([head, ..]: [u64; EVENT_WORDS]) -> String {
        let (kind, detail) = (head as u8, (head >> 8) as u8);
        match kind {
            KIND_REMOVED => format!("unknown removal cause {detail}"),
            KIND_REFUSED => format!("unknown refusal reason {detail}"),
            _ => format!("unknown event kind {kind}"),
        }
    }

    /// The packed form, as the host sends it (for tests and test hosts).
    pub fn encode(&self) -> [u64; EVENT_WORDS] {
        let head = |kind: u8, detail: u8, tenant: Tenant, size: u32| {
            u64::from(kind)
                | (u64::from(detail) << 8)
                | (u64::from(tenant) << 16)
                | (u64::from(size) << 32)
        };
        match *self {
            Event::Inserted(s) => [
                head(KIND_INSERTED, 0, s.tenant, s.size),
                s.id,
                s.time,
                s.key,
            ],
            Event::Accessed(s) => [
                head(KIND_ACCESSED, 0, s.tenant, s.size),
                s.id,
                s.time,
                s.key,
            ],
            Event::Removed {
                id,
                key,
                tenant,
                time,
                cause,
            } => [head(KIND_REMOVED, cause.code(), tenant, 0), id, time, key],
            Event::Refused {
                id,
                key,
                tenant,
                time,
                reason,
            } => [head(KIND_REFUSED, reason.code(), tenant, 0), id, time, key],
        }
    }

    pub fn id(&self) -> u64 {
        match *self {
            Event::Inserted(s) | Event::Accessed(s) => s.id,
            Event::Removed { id, .. } | Event::Refused { id, .. } => id,
        }
    }
}

/// A host-sampled session offered as a possible victim (policies with the
/// `sampled` trait).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub id: u64,
    /// Host clock, microseconds.
    pub last_access: u64,
    /// Requests the host has seen for this session so far.
    pub requests: u64,
    /// The session's stable key, as in its events.
    pub key: u64,
}

impl Candidate {
    pub fn decode([id, last_access, requests, key]: [u64; CANDIDATE_WORDS]) -> Self {
        Self {
            id,
            last_access,
            requests,
            key,
        }
    }

    pub fn encode(&self) -> [u64; CANDIDATE_WORDS] {
        [self.id, self.last_access, self.requests, self.key]
    }
}

/// The session the host is making room for in a `victims` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Arriving {
    pub key: u64,
    pub size: u32,
}

/// Per-session request usage over the host's last limiter window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Usage {
    pub id: u64,
    pub admitted: u64,
    pub rejected: u64,
    pub window_ms: u64,
    pub key: u64,
    pub tenant: Tenant,
}

impl Usage {
    pub fn encode(&self) -> [u64; USAGE_WORDS] {
        [
            self.id,
            self.admitted,
            self.rejected,
            self.window_ms,
            self.key,
            u64::from(self.tenant),
        ]
    }
}

/// A proposed quota; the host clamps it to its configured bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuotaAdjustment {
    pub id: u64,
    /// Requests per second.
    pub rate: u64,
    pub burst: u64,
}

fn chunks<'a, const N: usize>(what: &str, words: &'a [u64]) -> Result<&'a [[u64; N]], String> {
    match words.as_chunks::<N>() {
        (whole, []) => Ok(whole),
        _ => Err(format!(
            "{what}: {} words is not a multiple of {N} words per entry",
            words.len()
        )),
    }
}

/// A validated packed event list: every entry decodes.
#[derive(Clone, Copy, Debug)]
pub struct Events<'a>(&'a [[u64; EVENT_WORDS]]);

impl<'a> Events<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + 'a {
        // Validated when built, so nothing is dropped here; `filter_map` only
        // keeps a panic path out of the guest.
        self.0.iter().filter_map(|e| Event::try_decode(*e))
    }
}

/// Whether [`Event::try_decode`] accepts an event with this head word: a known
/// kind, and for `removed` and `refused` a known cause or reason. Branch-free,
/// so a batch is checked in one pass that does not wait on each event's kind.
#[inline(always)]
fn head_is_valid(head: u64) -> bool {
    // The kind byte above the detail byte: the valid heads are then two
    // ranges, every `inserted` and `accessed` detail (the byte is unused)
    // running on into the known causes, and the known reasons. Two
    // comparisons and no lookup of the kind's limit, so that SIMD lanes
    // check eight at once (`heads_are_valid_by_eights`).
    let kind_then_detail = (head as u16).rotate_left(8);
    (kind_then_detail < HEADS_BEFORE_CAUSES_END)
        | (kind_then_detail.wrapping_sub(u16::from(KIND_REFUSED) << 8) < KNOWN_REASONS)
}

const KNOWN_REASONS: u16 = RefusalReason::ALL.len() as u16;
/// The first kind-then-detail value past the valid `removed` heads.
const HEADS_BEFORE_CAUSES_END: u16 = ((KIND_REMOVED as u16) << 8) + RemovalCause::ALL.len() as u16;

/// Whether every head of `events` is valid ([`head_is_valid`]).
#[inline(always)]
fn heads_are_valid(events: &[[u64; EVENT_WORDS]]) -> bool {
    #[cfg(target_arch = "wasm32")]
    if events.len() >= 8 {
        return heads_are_valid_by_eights(events);
    }
    // A policy asked one victim at a time sends a few events per call: for
    // those a call to the wide check costs more than it saves.
    heads_are_valid_one_by_one(events)
}

#[inline(always)]
fn heads_are_valid_one_by_one(events: &[[u64; EVENT_WORDS]]) -> bool {
    events.iter().fold(true, |ok, e| ok & head_is_valid(e[0]))
}

/// [`heads_are_valid`] eight events at a time, in 16-bit lanes: in the
/// sandbox each turn of a loop also checks the call's deadline, and the
/// scalar check cost some twenty instructions per event.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn heads_are_valid_by_eights(events: &[[u64; EVENT_WORDS]]) -> bool {
    use core::arch::wasm32::{
        u16x8, u16x8_all_true, u16x8_lt, u16x8_shl, u16x8_shr, u16x8_splat, u16x8_sub, v128_and,
        v128_or,
    };
    let (groups, rest) = events.as_chunks::<8>();
    let causes_end = u16x8_splat(HEADS_BEFORE_CAUSES_END);
    let refused = u16x8_splat(u16::from(KIND_REFUSED) << 8);
    let reasons = u16x8_splat(KNOWN_REASONS);
    let mut valid = u16x8_splat(u16::MAX);
    for group in groups {
        let [a, b, c, d, e, f, g, h] = group.map(|event| event[0] as u16);
        let heads = u16x8(a, b, c, d, e, f, g, h);
        let kind_then_detail = v128_or(u16x8_shl(heads, 8), u16x8_shr(heads, 8));
        let known = v128_or(
            u16x8_lt(kind_then_detail, causes_end),
            u16x8_lt(u16x8_sub(kind_then_detail, refused), reasons),
        );
        valid = v128_and(valid, known);
    }
    u16x8_all_true(valid) & heads_are_valid_one_by_one(rest)
}

fn validate_events<'a>(what: &str, events: &'a [[u64; EVENT_WORDS]]) -> Result<Events<'a>, String> {
    if !heads_are_valid(events) {
        // Rare: find the first culprit the slow way, for the message.
        if let Some(i) = events.iter().position(|e| Event::try_decode(*e).is_none()) {
            let message = Event::malformed(events[i]);
            return Err(format!("{what}: event {i}: {message}"));
        }
    }
    Ok(Events(events))
}

/// Decodes a packed `observe` list, rejecting it whole if any entry is malformed,
/// so the policy never applies half a batch.
pub fn decode_events(words: &[u64]) -> Result<Events<'_>, String> {
    validate_events("observe", chunks::<EVENT_WORDS>("observe", words)?)
}

/// A `victims` input split into its parts, all validated.
#[derive(Clone, Copy, Debug)]
pub struct VictimsInput<'a> {
    pub events: Events<'a>,
    pub arriving: Option<Arriving>,
    pub candidates: &'a [[u64; CANDIDATE_WORDS]],
}

/// Splits and validates a `victims` input: the header `[E, arriving key,
/// arriving size]`, E events, then candidates. Nothing in it is applied, so a
/// malformed tail cannot leave the events half delivered.
///
/// No session is arriving when both header words are 0 (a zero-byte session of
/// unknown key is indistinguishable from none, and treated as none).
pub fn decode_victims_input(input: &[u64]) -> Result<VictimsInput<'_>, String> {
    let Some((&[count, key, size], rest)) = input.split_first_chunk::<VICTIMS_HEADER_WORDS>()
    else {
        return Err(format!(
            "victims: input of {} words is shorter than its {VICTIMS_HEADER_WORDS}-word header \
             (event count, arriving key, arriving size)",
            input.len()
        ));
    };
    let event_words = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(EVENT_WORDS))
        .filter(|&w| w <= rest.len())
        .ok_or_else(|| {
            format!(
                "victims: input announces {count} events but holds only {} words after the header",
                rest.len()
            )
        })?;
    let size = u32::try_from(size)
        .map_err(|_| format!("victims: arriving size {size} does not fit in 32 bits"))?;
    let (events, candidates) = rest.split_at(event_words);
    let events = validate_events("victims", chunks::<EVENT_WORDS>("victims events", events)?)?;
    let candidates = chunks::<CANDIDATE_WORDS>("victims candidates", candidates)?;
    Ok(VictimsInput {
        events,
        arriving: (key != 0 || size != 0).then_some(Arriving { key, size }),
        candidates,
    })
}

/// Decodes validated candidate entries into `out`, replacing its contents.
pub fn decode_candidates(entries: &[[u64; CANDIDATE_WORDS]], out: &mut Vec<Candidate>) {
    out.clear();
    out.extend(entries.iter().map(|e| Candidate::decode(*e)));
}

pub fn decode_usage(words: &[u64]) -> Result<Vec<Usage>, String> {
    let entries = chunks::<USAGE_WORDS>("adjust-quotas usage", words)?;
    entries
        .iter()
        .enumerate()
        .map(|(i, &[id, admitted, rejected, window_ms, key, tenant])| {
            Ok(Usage {
                id,
                admitted,
                rejected,
                window_ms,
                key,
                tenant: Tenant::try_from(tenant).map_err(|_| {
                    format!(
                        "adjust-quotas usage: entry {i}: tenant {tenant} does not fit in 16 bits"
                    )
                })?,
            })
        })
        .collect()
}

pub fn encode_adjustments(adjustments: &[QuotaAdjustment]) -> Vec<u64> {
    let mut out = Vec::with_capacity(adjustments.len() * ADJUSTMENT_WORDS);
    for a in adjustments {
        out.extend([a.id, a.rate, a.burst]);
    }
    out
}
