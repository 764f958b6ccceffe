//! `GET /metrics`: Prometheus exposition of the proxy, the session table and
//! the policy host.
//!
//! The table and the policy keep their own atomic counters (they must work
//! without the proxy: in `bench`, in tests); a collector reads them at scrape
//! time. Only what exists in the proxy alone (HTTP requests, accesses, upstream
//! failures) is counted here with `prometheus-client` metrics.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::access_log::AccessLog;
use super::session::ProxySession;
use crate::eviction::RemovalCause;
use crate::session::{FallbackReason, SessionTable};
use crate::wasm::WasmPolicy;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    pub result: &'static str,
}

/// Counters that exist only in the proxy.
pub struct ProxyMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub accesses: Family<AccessLabels, Counter>,
    pub upstream_failures: Counter,
    pub upstreams_started: Counter,
    pub handshake_timeouts: Counter,
    /// GET streams opened with `Last-Event-ID`: clients resuming a stream
    /// whose connection broke (often an intermediary's idle timeout).
    pub stream_resumptions: Counter,
    /// Seconds spent handling a request until its response starts.
    pub latency: Histogram,
    registry: Registry,
}

impl ProxyMetrics {
    pub fn new(
        table: &Arc<SessionTable<ProxySession>>,
        policy: Option<Arc<WasmPolicy>>,
        access_log: Option<AccessLog>,
    ) -> Arc<Self> {
        Self::with_more(table, policy, access_log, |_| {})
    }

    /// As [`ProxyMetrics::new`], with `more` registering metrics of its own
    /// (the cluster's) in the same exposition.
    pub fn with_more(
        table: &Arc<SessionTable<ProxySession>>,
        policy: Option<Arc<WasmPolicy>>,
        access_log: Option<AccessLog>,
        more: impl FnOnce(&mut Registry),
    ) -> Arc<Self> {
        let mut registry = Registry::with_prefix("shadowcat");
        let requests = Family::<RequestLabels, Counter>::default();
        let accesses = Family::<AccessLabels, Counter>::default();
        let upstream_failures = Counter::default();
        let upstreams_started = Counter::default();
        let handshake_timeouts = Counter::default();
        let stream_resumptions = Counter::default();
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "http_requests",
            "Requests served on the MCP endpoint, by method and status",
            requests.clone(),
        );
        registry.register(
            "session_accesses",
            "Requests that found their session (hit) or had to create one (miss)",
            accesses.clone(),
        );
        registry.register(
            "upstream_failures",
            "Upstreams that failed on their own (process exit, session lost)",
            upstream_failures.clone(),
        );
        registry.register(
            "upstreams_started",
            "Upstreams opened for new sessions",
            upstreams_started.clone(),
        );
        registry.register(
            "handshake_timeouts",
            "Sessions removed for not finishing their handshake within --init-timeout (counted \
             among removals as expired-idle too, the cause policies are told)",
            handshake_timeouts.clone(),
        );
        registry.register(
            "stream_resumptions",
            "GET streams opened with Last-Event-ID, resuming a stream whose connection broke",
            stream_resumptions.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the start of the response on the MCP endpoint",
            latency.clone(),
        );
        registry.register_collector(Box::new(TableCollector {
            table: Arc::downgrade(table),
            policy,
            access_log,
        }));
        more(&mut registry);
        Arc::new(Self {
            requests,
            accesses,
            upstream_failures,
            upstreams_started,
            handshake_timeouts,
            stream_resumptions,
            latency,
            registry,
        })
    }

    pub fn count_request(&self, method: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { method, status })
            .inc();
    }

    pub fn count_access(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.accesses.get_or_create(&AccessLabels { result }).inc();
    }

    /// The exposition in the OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

/// Reads the table's and the policy's own counters at scrape time.
struct TableCollector {
    table: Weak<SessionTable<ProxySession>>,
    policy: Option<Arc<WasmPolicy>>,
    access_log: Option<AccessLog>,
}

impl std::fmt::Debug for TableCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn gauge_f64(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// One counter per label value.
fn labelled<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn signed(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(table) = self.table.upgrade() else {
            return Ok(());
        };
        let m = table.metrics();
        let stats = table.stats();
        let e = &mut encoder;
        counter(e, "sessions_created", "Sessions created", m.created)?;
        gauge(
            e,
            "sessions_live",
            "Sessions in the table",
            signed(stats.live),
        )?;
        gauge(
            e,
            "sessions_active",
            "Sessions past their handshake",
            m.active,
        )?;
        gauge(
            e,
            "sessions_pinned",
            "Sessions eviction may not take: a request in flight, or a handshake under way",
            signed(stats.pinned_sessions),
        )?;
        gauge(
            e,
            "sessions_shielded",
            "Sessions kept from eviction until their handshake completes (at most half the table)",
            signed(stats.shielded_sessions),
        )?;
        gauge(
            e,
            "sessions_max",
            "The table's bound on live sessions",
            signed(table.config().max_sessions),
        )?;
        gauge(
            e,
            "session_streams",
            "Server-to-client streams open",
            signed(stats.open_streams),
        )?;
        labelled(
            e,
            "sessions_removed",
            "Sessions removed, by cause",
            "cause",
            RemovalCause::ALL.map(|c| (c.as_str(), m.removed_by(c))),
        )?;
        labelled(
            e,
            "requests_rejected",
            "Requests or creates refused by the table, by reason",
            "reason",
            [
                ("rate-limited", m.rejected_rate_limited),
                ("capacity", m.rejected_capacity),
                ("overloaded", m.rejected_overloaded),
            ],
        )?;
        gauge(
            e,
            "requests_in_flight",
            "Requests in flight across all sessions",
            signed(stats.requests_in_flight),
        )?;
        counter(
            e,
            "teardown_failures",
            "Upstream teardowns that panicked or timed out",
            m.teardown_failures,
        )?;
        counter(e, "cleanup_rounds", "Cleanup rounds run", m.cleanup_rounds)?;
        counter(
            e,
            "cleanup_panics",
            "Cleanup rounds that panicked",
            m.cleanup_panics,
        )?;
        counter(
            e,
            "eviction_invalid_victims",
            "Victims the policy proposed that the table refused (pinned, not live)",
            m.invalid_victims,
        )?;
        counter(
            e,
            "eviction_fallback_victims",
            "Victims the table chose from its own LRU order",
            m.fallback_victims,
        )?;
        labelled(
            e,
            "eviction_fallback_decisions",
            "Eviction decisions the table took over from the policy, by reason",
            "reason",
            FallbackReason::ALL.map(|r| (r.as_str(), m.fallbacks_by(r))),
        )?;
        if let Some(log) = &self.access_log {
            counter(
                e,
                "access_log_records",
                "Access log records written",
                log.written(),
            )?;
            counter(
                e,
                "access_log_dropped",
                "Access log records dropped because the writer fell behind",
                log.dropped(),
            )?;
        }
        if let Some(policy) = &self.policy {
            let p = policy.metrics();
            counter(
                e,
                "policy_calls",
                "Calls into the WebAssembly policy",
                p.calls,
            )?;
            labelled(
                e,
                "policy_faults",
                "Policy calls that faulted (the instance is recreated), by kind",
                "kind",
                [
                    ("trap", p.traps),
                    ("timeout", p.timeouts),
                    ("memory", p.memory_faults),
                ],
            )?;
            counter(
                e,
                "policy_repeated_victims",
                "Victims a policy named twice in one answer (invalid, dropped)",
                p.repeated_victims,
            )?;
            counter(
                e,
                "policy_memory_refusals",
                "Policy calls refused memory past --policy-memory that answered anyway \
                 (the policy may no longer track every session)",
                p.memory_refusals,
            )?;
            counter(
                e,
                "policy_guest_errors",
                "Calls the policy answered with an error (one decision lost, instance kept)",
                p.guest_errors,
            )?;
            counter(
                e,
                "policy_fallbacks",
                "Decisions the policy could not make (fault, busy, recovering)",
                p.fallbacks,
            )?;
            counter(
                e,
                "policy_reinstantiations",
                "Fresh policy instances after a fault",
                p.reinstantiations,
            )?;
            counter(
                e,
                "policy_quarantines",
                "Times the policy was quarantined",
                p.quarantines,
            )?;
            gauge(
                e,
                "policy_quarantined",
                "1 while the policy is quarantined",
                i64::from(policy.is_quarantined()),
            )?;
            counter(
                e,
                "policy_hot_reloads",
                "Successful hot reloads",
                p.hot_reloads,
            )?;
            counter(
                e,
                "policy_hot_reload_failures",
                "Hot reloads refused (the running policy stayed)",
                p.hot_reload_failures,
            )?;
            counter(
                e,
                "policy_events_delivered",
                "Events delivered to the policy",
                p.events_delivered,
            )?;
            counter(
                e,
                "policy_log_lines_dropped",
                "Policy log lines dropped by the rate limit",
                p.log_lines_dropped,
            )?;
            for (name, quantile) in [("p50", p.call_p50), ("p99", p.call_p99)] {
                gauge_f64(
                    e,
                    &format!("policy_call_seconds_{name}"),
                    "Upper bound of the policy call latency quantile, over one call in eight",
                    quantile.map_or(0.0, |d| d.as_secs_f64()),
                )?;
            }
        }
        Ok(())
    }
}
