//! The MCP proxy: clients on one side, one upstream per session on the other,
//! the session table in between.
//!
//! # Layout
//!
//! - [`jsonrpc`]: messages as bytes plus a routing envelope (never re-encoded).
//! - [`mcp_headers`]: the streamable-HTTP headers and the two protocol eras.
//! - [`client_key`]: who a client is (a header or its address), as a hash.
//! - [`upstream`]: what a session holds upstream, behind one trait: a child
//!   process over stdio ([`upstream::StdioUpstream`]) or a session on an
//!   upstream HTTP server ([`upstream::HttpUpstream`]).
//! - [`session`]: the table's per-session value and its teardown.
//! - [`reverse`]: streamable HTTP at `/mcp` for clients (both eras).
//! - [`forward`]: a client on our stdin/stdout, the server spawned.
//! - [`admin`]: the operator's API (sessions, cleanup, metrics, health).
//! - [`metrics`]: Prometheus exposition.
//! - [`access_log`]: the access trace `shadowcat bench` replays.
//! - [`server`]: all of it started and shut down as one ([`server::RunningProxy`]).
//!
//! With `--cluster-redis`, [`crate::cluster`] adds sealed session ids,
//! forwarding to the instance holding a session, and Redis-backed state.
//!
//! # Where things run
//!
//! Request handlers run on tokio workers and only take the table lock for
//! short operations. Creating a session may ask the eviction policy for a
//! victim (a WebAssembly call), so it runs on the blocking pool; the table
//! delivers policy events from its own thread ([`crate::session::FlushMode::Thread`])
//! and the cleanup task runs its rounds on the blocking pool. Upstream
//! teardown (closing stdin, signals, an HTTP DELETE) runs as tasks after the
//! table has released its lock.

pub mod access_log;
pub mod admin;
mod batch;
pub mod client_key;
pub mod forward;
pub mod head;
pub mod jsonrpc;
pub mod mcp_headers;
pub mod metrics;
pub mod oauth;
pub mod origin;
pub mod reverse;
pub mod server;
pub mod session;
mod sse;
pub mod tls;
pub mod upstream;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use self::access_log::AccessLog;
use self::client_key::{ClientKey, ClientKeySource};
use self::mcp_headers::Era;
use self::metrics::ProxyMetrics;
use self::session::ProxySession;
use self::upstream::{Upstream, UpstreamError, UpstreamSpec};
use crate::config::RateLimit;
use crate::eviction::RemovalCause;
use crate::session::{
    ExternalId, NewSession, RemoveOutcome, RequestGuard, SessionId, SessionTable, TableError,
};

/// Settings of the client-facing side.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub client_key: ClientKeySource,
    /// A session whose handshake (`initialize`, then `notifications/initialized`)
    /// has not finished by then is removed.
    pub init_timeout: Duration,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Sessions one client key may open per second (and at once); stops a
    /// client from escaping its per-session limits by looping `initialize`.
    pub init_rate: Option<RateLimit>,
    /// Browser origins served besides this machine's (`--allowed-origin`).
    pub origins: origin::AllowedOrigins,
    /// The URL clients reach `/mcp` at, as OAuth metadata names it
    /// (`--public-url`); otherwise each request's `Host` tells.
    pub public_url: Option<reqwest::Url>,
    /// `/mcp` is served over HTTPS: the URLs the proxy names itself by
    /// start with `https://`.
    pub https: bool,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            client_key: ClientKeySource::Remote,
            init_timeout: Duration::from_secs(30),
            max_body: 4 << 20,
            init_rate: Some(RateLimit {
                per_second: NonZeroU32::new(5).expect("non-zero"),
                burst: NonZeroU32::new(20).expect("non-zero"),
            }),
            origins: origin::AllowedOrigins::default(),
            public_url: None,
            https: false,
        }
    }
}

/// Why a session could not be opened, with what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("this client opens sessions too fast; retry after {0:?}")]
    TooFast(Duration),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Table(TableError),
    #[error("the session table is shutting down")]
    ShuttingDown,
}

/// Everything the transports share.
pub struct Proxy {
    pub table: Arc<SessionTable<ProxySession>>,
    pub upstreams: UpstreamSpec,
    pub options: ProxyOptions,
    pub metrics: Arc<ProxyMetrics>,
    pub access_log: Option<AccessLog>,
    /// Set when this instance is one of a cluster.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    opens: Option<DefaultKeyedRateLimiter<u64>>,
}

/// A session just opened, its first request begun.
pub struct Opened {
    pub id: SessionId,
    pub name: Option<Arc<str>>,
    pub request: Pinned,
}

/// A request in flight on a session: what it needs to reach the upstream,
/// and the pin that keeps the session until the answer has gone out.
pub struct Pinned {
    pub guard: RequestGuard<ProxySession>,
    pub upstream: Arc<dyn Upstream>,
    /// Cancelled when the session is closed under the request.
    pub abort: CancellationToken,
}

impl Proxy {
    pub fn new(
        table: Arc<SessionTable<ProxySession>>,
        upstreams: UpstreamSpec,
        options: ProxyOptions,
        metrics: Arc<ProxyMetrics>,
        access_log: Option<AccessLog>,
    ) -> Self {
        let opens = options.init_rate.map(|limit| {
            DefaultKeyedRateLimiter::keyed(
                Quota::per_second(limit.per_second).allow_burst(limit.burst),
            )
        });
        Self {
            table,
            upstreams,
            options,
            metrics,
            access_log,
            cluster: None,
            opens,
        }
    }

    /// Makes this proxy an instance of `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The eviction policy's name as it is now: a reload may have changed it.
    pub fn policy_name(&self) -> String {
        self.table.policy().name().to_owned()
    }

    /// Records one access to the table by `client`.
    pub fn count_access(&self, client: ClientKey, hit: bool) {
        self.metrics.count_access(hit);
        if let Some(log) = &self.access_log {
            log.record(client);
        }
    }

    /// Opens a session for `client` with its first request (of `bytes`)
    /// begun: checks its rate of opening sessions, starts an upstream, and
    /// creates the table entry (evicting as the policy decides), pinned from
    /// the start so that no concurrent create can evict it before its client
    /// has used it. A refused create tears the fresh upstream down.
    pub async fn open_session(
        self: &Arc<Self>,
        client: ClientKey,
        era: Era,
        name: ExternalId,
        bytes: u64,
    ) -> Result<Opened, OpenError> {
        if let Some(opens) = &self.opens {
            if let Err(not_until) = opens.check_key(&client.0) {
                return Err(OpenError::TooFast(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ));
            }
        }
        // A full table of busy sessions refuses the create anyway: say so
        // before starting an upstream process only to tear it down.
        self.table.check_room(1).map_err(OpenError::Table)?;
        let upstream = self.upstreams.open().await?;
        self.metrics.upstreams_started.inc();
        // In a cluster the id names this instance, so any other can route it.
        let name = match (name, &self.cluster) {
            (ExternalId::Generate, Some(cluster)) => ExternalId::Given(cluster.new_session_id()),
            (name, _) => name,
        };
        let new = NewSession {
            external_id: name,
            key: client.0,
            tenant: 0,
            weight: 1,
            // Until `notifications/initialized` or --init-timeout.
            shield_handshake: era == Era::Sessions,
            upstream: ProxySession::new(Arc::clone(&upstream), client, era),
        };
        let abort = new.upstream.abort.clone();
        let table = Arc::clone(&self.table);
        // The create may ask a WebAssembly policy for a victim.
        let created = tokio::task::spawn_blocking(move || table.create_pinned(new, bytes))
            .await
            .map_err(|_| OpenError::ShuttingDown)?;
        let (created, guard) = match created {
            Ok(created) => created,
            Err(rejected) => {
                let refused = rejected.upstream.upstream;
                tokio::spawn(async move { refused.close().await });
                return Err(OpenError::Table(rejected.error));
            }
        };
        self.count_access(client, false);
        if let Some(cluster) = &self.cluster {
            cluster.opened(self, created.id);
        }
        self.watch_upstream(created.id, Arc::clone(&upstream));
        match era {
            Era::Sessions => self.expire_unfinished_handshake(created.id),
            Era::Stateless => {
                let _ = self.table.activate(created.id);
            }
        }
        Ok(Opened {
            id: created.id,
            name: created.external_id,
            request: Pinned {
                guard,
                upstream,
                abort,
            },
        })
    }

    /// Removes a session for good, ending its requests in flight at once. A
    /// removal waits for the requests it finds (the table defers it), and a
    /// request waits for its upstream: without the abort, a stuck upstream
    /// would keep the session, and itself, alive past any delete or timeout.
    pub fn close_session(
        &self,
        id: SessionId,
        cause: RemovalCause,
    ) -> Result<RemoveOutcome, TableError> {
        let abort = self.table.with_upstream(id, |s| s.abort.clone())?;
        let outcome = self.table.remove(id, cause)?;
        abort.cancel();
        Ok(outcome)
    }

    /// Closes the session when its upstream fails on its own. After a normal
    /// removal the session is already gone and nothing happens.
    fn watch_upstream(self: &Arc<Self>, id: SessionId, upstream: Arc<dyn Upstream>) {
        let proxy = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = upstream.failed().await;
            let Some(proxy) = proxy.upgrade() else { return };
            if proxy.table.remove(id, RemovalCause::UpstreamFailed).is_ok() {
                proxy.metrics.upstream_failures.inc();
                tracing::warn!(upstream = %upstream.describe(), "session closed: {reason}");
            }
        });
    }

    fn expire_unfinished_handshake(self: &Arc<Self>, id: SessionId) {
        let proxy = Arc::downgrade(self);
        let timeout = self.options.init_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(proxy) = proxy.upgrade() else { return };
            let unfinished = proxy
                .table
                .get(id)
                .is_some_and(|s| s.state == crate::session::SessionState::Initializing);
            if unfinished && proxy.close_session(id, RemovalCause::ExpiredIdle).is_ok() {
                proxy.metrics.handshake_timeouts.inc();
                tracing::info!(?timeout, "session expired before finishing its handshake");
            }
        });
    }

    /// Forgets clients that have not opened a session for a while, so the
    /// per-client limiter stays as small as the set of recent clients.
    pub fn forget_idle_clients(&self) {
        if let Some(opens) = &self.opens {
            opens.retain_recent();
            opens.shrink_to_fit();
        }
    }
}

/// A retry hint in whole milliseconds. Rounded up, and at least 1: a client
/// that waits exactly this long must not come back early and be refused again.
pub(crate) fn retry_after_millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000).max(1)).unwrap_or(u64::MAX)
}

/// A retry hint in whole seconds (`Retry-After`'s unit). Rounded up, and at
/// least 1: `Retry-After: 0` would invite a hot loop.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_retry_hints_round_up_and_are_never_zero() {
        let cases = [
            (Duration::ZERO, 1, 1),
            (Duration::from_nanos(1), 1, 1),
            (Duration::from_micros(999_990), 1_000, 1),
            (Duration::from_millis(1_000), 1_000, 1),
            (Duration::from_nanos(1_000_000_001), 1_001, 2),
            (Duration::from_millis(2_500), 2_500, 3),
        ];
        for (wait, millis, seconds) in cases {
            assert_eq!(retry_after_millis(wait), millis, "{wait:?} in ms");
            assert_eq!(retry_after_seconds(wait), seconds, "{wait:?} in s");
            assert!(Duration::from_millis(retry_after_millis(wait)) >= wait);
            assert!(Duration::from_secs(retry_after_seconds(wait)) >= wait);
        }
        assert_eq!(retry_after_millis(Duration::MAX), u64::MAX);
    }
}
