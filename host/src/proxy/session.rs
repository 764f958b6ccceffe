//! What one proxy session holds in the table, and how it is torn down.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::client_key::ClientKey;
use super::mcp_headers::Era;
use super::upstream::Upstream;
use crate::session::{RemovedSession, Teardown, TeardownFuture};

/// The table's per-session value in the proxy.
pub struct ProxySession {
    pub upstream: Arc<dyn Upstream>,
    pub client: ClientKey,
    pub era: Era,
    /// Cancelled when the session is closed for good (by its client, an
    /// operator or an unfinished handshake): its requests in flight end at
    /// once instead of holding the removal, and the upstream, for as long as
    /// the upstream keeps them waiting.
    pub abort: CancellationToken,
}

impl ProxySession {
    pub fn new(upstream: Arc<dyn Upstream>, client: ClientKey, era: Era) -> Self {
        Self {
            upstream,
            client,
            era,
            abort: CancellationToken::new(),
        }
    }
}

/// Closes a removed session's upstream (child process, upstream session);
/// the table runs it as a task after releasing its lock.
pub struct CloseUpstream;

impl Teardown<ProxySession> for CloseUpstream {
    fn teardown(&self, session: RemovedSession<ProxySession>) -> TeardownFuture {
        Box::pin(async move {
            tracing::debug!(
                session = session.info.external_id.as_deref().unwrap_or("-"),
                cause = session.cause.as_str(),
                upstream = %session.upstream.upstream.describe(),
                "closing the upstream"
            );
            session.upstream.upstream.close().await;
        })
    }
}
