//! The cluster's metrics, registered in the proxy's Prometheus registry
//! (`shadowcat_cluster_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::RedisDownMode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    pub method: &'static str,
    /// `answered` (the owner's answer was relayed) or `owner_gone` (404).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

type HistogramFamily = Family<OpLabels, Histogram, fn() -> Histogram>;

fn redis_histogram() -> Histogram {
    // 25 µs .. ~0.8 s: a loopback round trip up to a timeout.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

pub struct ClusterMetrics {
    pub forwarded: Family<ForwardLabels, Counter>,
    /// Seconds from sending a request to the owner until its answer starts.
    pub forward_latency: Histogram,
    /// Hop headers received: `accepted` or `rejected` (answered 404).
    pub hops: Family<ResultLabels, Counter>,
    pub redis_errors: Family<OpLabels, Counter>,
    pub redis_latency: HistogramFamily,
    /// 1 while Redis answers, 0 while the instance treats it as down.
    pub redis_up: Gauge,
    pub members: Gauge,
    /// Global rate limit verdicts: `admitted`, `limited`, and when Redis is
    /// down `unchecked` (admitted, mode open) or `refused` (mode closed).
    pub global_limit: Family<ResultLabels, Counter>,
    down_mode: Family<ModeLabels, Gauge>,
}

impl ClusterMetrics {
    pub fn new(mode: RedisDownMode) -> Self {
        let metrics = Self {
            forwarded: Family::default(),
            forward_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            hops: Family::default(),
            redis_errors: Family::default(),
            redis_latency: Family::new_with_constructor(redis_histogram),
            redis_up: Gauge::default(),
            members: Gauge::default(),
            global_limit: Family::default(),
            down_mode: Family::default(),
        };
        for candidate in [RedisDownMode::Open, RedisDownMode::Closed] {
            metrics
                .down_mode
                .get_or_create(&ModeLabels {
                    mode: candidate.as_str(),
                })
                .set(i64::from(candidate == mode));
        }
        metrics
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cluster_forwarded_requests",
            "Requests forwarded to the instance owning their session, by method and outcome",
            self.forwarded.clone(),
        );
        registry.register(
            "cluster_forward_duration_seconds",
            "Time from forwarding a request until the owner's answer starts",
            self.forward_latency.clone(),
        );
        registry.register(
            "cluster_hops_received",
            "Forwarded requests received from other instances, by hop header verdict",
            self.hops.clone(),
        );
        registry.register(
            "cluster_redis_errors",
            "Redis operations that failed or timed out, by operation",
            self.redis_errors.clone(),
        );
        registry.register(
            "cluster_redis_duration_seconds",
            "Redis round trips, by operation",
            self.redis_latency.clone(),
        );
        registry.register(
            "cluster_redis_up",
            "1 while Redis answers; 0 while it is treated as down",
            self.redis_up.clone(),
        );
        registry.register(
            "cluster_redis_down_mode",
            "What the global rate limit does while Redis is down (--cluster-redis-down): 1 for the mode in force",
            self.down_mode.clone(),
        );
        registry.register(
            "cluster_members",
            "Live instances in the cluster, this one included, as last read from Redis",
            self.members.clone(),
        );
        registry.register(
            "cluster_global_rate_limit",
            "Global per-client rate limit verdicts at the receiving instance",
            self.global_limit.clone(),
        );
    }

    pub fn count_forward(&self, method: &'static str, outcome: &'static str) {
        self.forwarded
            .get_or_create(&ForwardLabels { method, outcome })
            .inc();
    }

    pub fn count_hop(&self, result: &'static str) {
        self.hops.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn count_limit(&self, result: &'static str) {
        self.global_limit
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}
