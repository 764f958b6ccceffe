//! The connection to Redis: one multiplexed connection that reconnects on
//! its own ([`redis::aio::ConnectionManager`]), every operation bounded by a
//! timeout, timed and counted, and a breaker in front of the request path.
//!
//! Once an operation finds Redis unreachable, operations on the request path
//! (`hot`) fail at once instead of each waiting for a timeout; background
//! operations (the heartbeat, every second) keep trying, and the first that
//! succeeds closes the breaker again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisResult, ServerErrorKind};

use super::metrics::{ClusterMetrics, OpLabels};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("Redis is unreachable (not tried again until the next heartbeat succeeds)")]
    Down,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(redis::RedisError),
}

impl LinkError {
    /// Whether the connection broke under the command; the next command
    /// connects again.
    pub fn dropped(&self) -> bool {
        matches!(self, Self::Redis(error) if error.is_connection_dropped())
    }
}

pub struct RedisLink {
    manager: ConnectionManager,
    up: AtomicBool,
    timeout: Duration,
    metrics: Arc<ClusterMetrics>,
}

/// Whether an error says Redis cannot be used now (rather than that one
/// command was wrong).
fn unreachable(error: &redis::RedisError) -> bool {
    match error.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        ),
        _ => true,
    }
}

impl RedisLink {
    /// Connects lazily: an instance starts while Redis is down, and routes
    /// its own sessions meanwhile.
    pub fn new(
        url: &str,
        timeout: Duration,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        metrics.redis_up.set(0);
        Ok(Self {
            manager,
            up: AtomicBool::new(false),
            timeout,
            metrics,
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn mark(&self, up: bool, why: Option<&dyn std::fmt::Display>) {
        let was = self.up.swap(up, Ordering::Relaxed);
        self.metrics.redis_up.set(i64::from(up));
        match (was, up, why) {
            (false, true, _) => tracing::info!("Redis reachable"),
            (true, false, Some(why)) => tracing::warn!(
                "Redis unreachable ({why}); routing by session id goes on, \
                 the rest waits for it to come back"
            ),
            _ => {}
        }
    }

    /// Runs one operation. A `hot` one (on the request path) is not tried
    /// while Redis is known to be down.
    pub async fn run<T, F, Fut>(&self, op: &'static str, hot: bool, f: F) -> Result<T, LinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if hot && !self.is_up() {
            return Err(LinkError::Down);
        }
        let labels = OpLabels { op };
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, f(self.manager.clone())).await;
        self.metrics
            .redis_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(value)) => {
                self.mark(true, None);
                Ok(value)
            }
            Ok(Err(error)) => {
                self.metrics.redis_errors.get_or_create(&labels).inc();
                if unreachable(&error) {
                    self.mark(false, Some(&error));
                } else {
                    tracing::warn!(op, "Redis refused an operation: {error}");
                }
                Err(LinkError::Redis(error))
            }
            Err(_) => {
                self.metrics.redis_errors.get_or_create(&labels).inc();
                let error = LinkError::Timeout(self.timeout);
                self.mark(false, Some(&error));
                Err(error)
            }
        }
    }
}
