//! A shipped policy run beside a twin that must decide exactly as it does:
//! its reference model (under the guests' protocol rules, [`Twin`]) or
//! another `.wasm`. The table gets the policy's answers; every one is checked
//! against the twin's, fed the very same events, candidates and ticks.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shadowcat::eviction::{
    Arriving, EvictionPolicy, FlushHint, LiveSessions, PolicyEvent, QuotaAdjustment, QuotaUsage,
    Refusal, RemovalCause, Unavailable, VictimRequest,
};
use shadowcat::session::SessionId;
use shadowcat::wasm::{PolicyEngine, PolicyLimits, PolicyTable, WasmPolicy};

use crate::common::{policy_file, reference_trace};
use crate::reference::driver::Driver;
use crate::reference::Table;
use crate::twin::Twin;

/// Generous deadlines: these tests are about answers, not time. Without
/// prefetching, every victim of a stable-order policy comes from a call
/// that can be checked.
pub fn engine(prefetch: usize) -> Arc<PolicyEngine> {
    PolicyEngine::new(
        PolicyLimits {
            call_timeout: Duration::from_secs(10),
            prefetch,
            ..PolicyLimits::default()
        },
        None,
    )
    .expect("engine")
}

pub fn load_with(
    engine: Arc<PolicyEngine>,
    name: &str,
    table: PolicyTable,
    config: &[(&str, &str)],
) -> Arc<WasmPolicy> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    WasmPolicy::load(engine, &policy_file(name), table, config)
        .unwrap_or_else(|e| panic!("{name}.wasm: {e}"))
}

pub fn load(name: &str, table: PolicyTable, config: &[(&str, &str)]) -> Arc<WasmPolicy> {
    load_with(engine(1), name, table, config)
}

/// Who decides beside the wasm: its model (a reference model under the
/// guests' protocol rules), or another wasm that must agree with it.
pub enum Beside {
    Model(Twin),
    Wasm(Arc<WasmPolicy>),
}

/// A shipped policy and its twin, side by side: the table gets the
/// wasm's answers, and each is checked against the twin's, fed the very
/// same events.
pub struct SideBySide {
    pub wasm: Arc<WasmPolicy>,
    twin: Mutex<Checked>,
}

struct Checked {
    twin: Beside,
    /// Events the table recorded since the model last caught up.
    events: Vec<PolicyEvent>,
    decisions: u64,
    refusals: u64,
}

impl Checked {
    fn catch_up(&mut self) {
        for event in std::mem::take(&mut self.events) {
            if let PolicyEvent::Refused { .. } = event {
                self.refusals += 1;
            }
            let Beside::Model(twin) = &mut self.twin else {
                continue;
            };
            match event {
                PolicyEvent::Inserted { id, time, key, .. } => twin.insert(id.to_bits(), key, time),
                PolicyEvent::Accessed { id, time, .. } => twin.access(id.to_bits(), time),
                PolicyEvent::Removed { id, cause, .. } => {
                    twin.remove(id.to_bits(), cause == RemovalCause::Evicted)
                }
                PolicyEvent::Refused { id, reason, .. } => {
                    twin.refused(id.to_bits(), reason == Refusal::Pinned)
                }
            }
        }
    }
}

impl SideBySide {
    /// `name` beside the model `reference::build` makes of `model`.
    pub fn with_model(
        name: &str,
        model: &str,
        table: PolicyTable,
        config: &[(&str, &str)],
    ) -> Arc<Self> {
        let model_table = Table {
            capacity: table.capacity as usize,
            idle_timeout: table.idle_timeout,
            max_age: table.max_age,
        };
        let twin = Twin::build(model, &model_table, config)
            .unwrap_or_else(|e| panic!("model {model} {config:?}: {e}"));
        Self::new(load(name, table, config), Beside::Model(twin))
    }

    /// `name` beside another wasm, `twin`, with the same settings.
    pub fn with_wasm(name: &str, twin: &str, table: PolicyTable) -> Arc<Self> {
        Self::new(load(name, table, &[]), Beside::Wasm(load(twin, table, &[])))
    }

    pub fn new(wasm: Arc<WasmPolicy>, twin: Beside) -> Arc<Self> {
        Arc::new(Self {
            wasm,
            twin: Mutex::new(Checked {
                twin,
                events: Vec::new(),
                decisions: 0,
                refusals: 0,
            }),
        })
    }

    pub fn decisions(&self) -> (u64, u64) {
        let t = self.twin.lock();
        (t.decisions, t.refusals)
    }

    pub fn assert_no_faults(&self) {
        for w in [Some(&self.wasm), self.twin_wasm().as_ref()]
            .into_iter()
            .flatten()
        {
            let m = w.metrics();
            assert_eq!(m.faults() + m.guest_errors, 0, "{}: {m:?}", w.name());
        }
    }

    pub fn twin_wasm(&self) -> Option<Arc<WasmPolicy>> {
        match &self.twin.lock().twin {
            Beside::Wasm(w) => Some(w.clone()),
            Beside::Model(_) => None,
        }
    }
}

impl EvictionPolicy for SideBySide {
    fn name(&self) -> &str {
        self.wasm.name()
    }

    fn record(&self, event: PolicyEvent) -> FlushHint {
        let mut twin = self.twin.lock();
        if let Beside::Wasm(w) = &twin.twin {
            if w.record(event) == FlushHint::FlushSoon {
                w.flush();
            }
        }
        twin.events.push(event);
        self.wasm.record(event)
    }

    fn victims(
        &self,
        request: VictimRequest<'_>,
        out: &mut Vec<SessionId>,
    ) -> Result<(), Unavailable> {
        let start = out.len();
        let answered = self.wasm.victims(request, out);
        assert_eq!(
            answered,
            Ok(()),
            "{}: {:?}",
            self.name(),
            self.wasm.metrics()
        );
        let got: Vec<u64> = out[start..].iter().map(|id| id.to_bits()).collect();
        let key = request.arriving.map_or(0, |a| a.key);
        let mut twin = self.twin.lock();
        twin.catch_up();
        let expected: Vec<u64> = match &mut twin.twin {
            Beside::Model(model) => {
                let candidates: Vec<u64> =
                    request.candidates.iter().map(|c| c.id.to_bits()).collect();
                model.victims(request.count, key, &candidates)
            }
            Beside::Wasm(w) => {
                let mut theirs = Vec::new();
                assert_eq!(w.victims(request, &mut theirs), Ok(()));
                theirs.iter().map(|id| id.to_bits()).collect()
            }
        };
        assert_eq!(
            got,
            expected,
            "{}: decision {} (count {}, arriving key {key}): the wasm (left) and its twin \
             (right) differ",
            self.name(),
            twin.decisions,
            request.count
        );
        twin.decisions += 1;
        answered
    }

    fn sample_size(&self) -> usize {
        self.wasm.sample_size()
    }

    fn learns_from_refusals(&self) -> bool {
        self.wasm.learns_from_refusals()
    }

    fn ready_victims(&self, arriving: Option<Arriving>, count: usize, out: &mut Vec<SessionId>) {
        // Prefetching would hand out victims without a call to check;
        // the engine here prefetches nothing.
        self.wasm.ready_victims(arriving, count, out);
        assert!(
            out.is_empty(),
            "{}: no prefetch in these tests",
            self.name()
        );
    }

    fn flush(&self) {
        self.wasm.flush();
    }

    fn maintain(&self, now: u64) {
        let mut twin = self.twin.lock();
        twin.catch_up();
        match &mut twin.twin {
            Beside::Model(model) => model.maintain(now),
            Beside::Wasm(w) => w.maintain(now),
        }
        drop(twin);
        self.wasm.maintain(now);
    }

    fn adjust_quotas(&self, usage: &[QuotaUsage], out: &mut Vec<QuotaAdjustment>) {
        self.wasm.adjust_quotas(usage, out);
    }

    fn attach_live_sessions(&self, source: LiveSessions) {
        self.wasm.attach_live_sessions(source);
    }
}

/// The reference trace as the models' driver replays it: (misses, misses
/// plus re-arrivals, which is what the simulator counts).
pub fn model_misses(name: &str, config: &[(&str, &str)], capacity: u64) -> (u64, u64) {
    let trace = reference_trace();
    let mut model = crate::reference::build(name, &Table::with_capacity(capacity as usize), config)
        .expect("model");
    // Keys as the host's replay makes them: object ids plus one.
    let requests = trace
        .requests
        .iter()
        .map(|r| (r.time, r.id.wrapping_add(1)));
    let replayed = Driver::new(capacity as usize)
        .replay(&mut *model, requests)
        .expect("model replay");
    (replayed.misses, replayed.misses + model.rearrivals())
}
