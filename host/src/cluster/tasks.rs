//! What keeps Redis in step with this instance: the heartbeat, the renewal
//! of live sessions' index and owner records, and the records a session
//! writes when it opens and removes when it ends.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::index::IndexRecord;
use super::Cluster;
use crate::proxy::admin::{session_row, SessionRow};
use crate::proxy::client_key::ClientKey;
use crate::proxy::mcp_headers::Era;
use crate::proxy::session::{CloseUpstream, ProxySession};
use crate::proxy::Proxy;
use crate::session::{RemovedSession, SessionId, Teardown, TeardownFuture};

/// Records per pipeline when renewing.
const BATCH: usize = 1_000;

impl Cluster {
    /// The first heartbeat, waited for (bounded) so that the members are
    /// known before the first request; a Redis that is down only delays it.
    pub async fn join(&self) {
        match self.members.heartbeat(&self.link).await {
            Ok(beat) => {
                self.metrics
                    .members
                    .set(i64::try_from(beat.live).unwrap_or(i64::MAX));
                tracing::info!(
                    instance = %self.me().instance,
                    members = beat.live,
                    clock_offset_ms = self.members.clock.offset_ms(),
                    "joined the cluster"
                );
            }
            Err(e) => tracing::warn!(
                instance = %self.me().instance,
                "cannot reach Redis yet ({e}); serving this instance's own sessions meanwhile"
            ),
        }
    }

    /// Leaves at a clean shutdown: the others answer this instance's
    /// sessions with 404 from now on.
    pub async fn leave(&self) {
        if let Err(e) = self.members.leave(&self.link).await {
            tracing::warn!("cannot leave the cluster cleanly ({e}); the record expires on its own");
        }
    }

    fn record(&self, row: SessionRow, now_ms: i64) -> IndexRecord {
        IndexRecord {
            row: SessionRow {
                instance: Some(self.me().instance.to_string()),
                ..row
            },
            boot: format!("{:016x}", self.me().boot),
            as_of_ms: now_ms,
        }
    }

    /// Indexes a session just opened here.
    pub fn opened(self: &Arc<Self>, proxy: &Proxy, id: SessionId) {
        let Some(info) = proxy.table.get(id) else {
            return;
        };
        let now = proxy.table.now();
        let policy = proxy.policy_name();
        let Ok(row) = proxy
            .table
            .with_upstream(id, |s| session_row(now, info, s, &policy))
        else {
            return;
        };
        let record = self.record(row, self.now_ms());
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = cluster.index.put(&cluster.link, &[record]).await {
                tracing::debug!("session not indexed yet ({e}); the next renewal will");
            }
        });
    }

    /// Forgets a session that ended here: its index record, and for a
    /// 2026-07-28 client its owner record (so another instance may claim it).
    async fn closed(&self, name: Option<&str>, client: ClientKey, era: Era) {
        let me = self.me();
        if let Some(name) = name {
            if let Err(e) = self
                .index
                .delete(&self.link, me.instance.as_str(), name)
                .await
            {
                tracing::debug!("index record left to expire ({e})");
            }
        }
        if era == Era::Stateless {
            if let Err(e) = self.owners.release(&self.link, client, me).await {
                tracing::debug!("owner record left to expire ({e})");
            }
        }
    }

    /// Renews every live session's owner record and index record (with its
    /// latest figures); rewrites them after Redis lost them. Owner records
    /// first: until one is back, another instance may open a second session
    /// for its client, while a missing index record only hides a row.
    pub async fn renew(&self, proxy: &Proxy) {
        let now = proxy.table.now();
        let now_ms = self.now_ms();
        let policy = proxy.policy_name();
        let sessions = proxy.table.inspect(|info, session| {
            let era = session.era;
            let client = session.client;
            (session_row(now, info, session, &policy), client, era)
        });
        let stateless: Vec<ClientKey> = sessions
            .iter()
            .filter(|(_, _, era)| *era == Era::Stateless)
            .map(|(_, client, _)| *client)
            .collect();
        for chunk in stateless.chunks(BATCH) {
            if let Err(e) = self.owners.renew(&self.link, chunk, self.me()).await {
                tracing::debug!("owner renewal postponed ({e})");
                return;
            }
        }
        for chunk in sessions.chunks(BATCH) {
            let records: Vec<IndexRecord> = chunk
                .iter()
                .map(|(row, _, _)| self.record(row.clone(), now_ms))
                .collect();
            if let Err(e) = self.index.put(&self.link, &records).await {
                tracing::debug!("index renewal postponed ({e})");
                return;
            }
        }
    }

    /// The heartbeat, every `every`, until aborted.
    pub fn spawn_heartbeat(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut was_up = cluster.link.is_up();
            loop {
                ticker.tick().await;
                match cluster.members.heartbeat(&cluster.link).await {
                    Ok(beat) => {
                        cluster
                            .metrics
                            .members
                            .set(i64::try_from(beat.live).unwrap_or(i64::MAX));
                        if !was_up || beat.lost {
                            // Back after an outage, perhaps a restart that
                            // lost every record, or a Redis that lost them
                            // without one: rewrite them at once.
                            if beat.lost {
                                tracing::warn!(
                                    "Redis lost this instance's records; writing them back"
                                );
                            }
                            cluster.renew_now.notify_one();
                        }
                        was_up = true;
                    }
                    Err(_) => was_up = false,
                }
            }
        })
    }

    /// Renews live sessions' records every `every`, and as soon as Redis is
    /// back after an outage, until aborted or the proxy is gone.
    pub fn spawn_renewal(self: &Arc<Self>, proxy: Weak<Proxy>, every: Duration) -> JoinHandle<()> {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = cluster.renew_now.notified() => {}
                }
                let Some(proxy) = proxy.upgrade() else { return };
                cluster.renew(&proxy).await;
            }
        })
    }
}

/// Closes a removed session's upstream, and forgets it in Redis.
pub struct ClusterTeardown {
    pub cluster: Arc<Cluster>,
}

impl Teardown<ProxySession> for ClusterTeardown {
    fn teardown(&self, session: RemovedSession<ProxySession>) -> TeardownFuture {
        let cluster = Arc::clone(&self.cluster);
        let name = session.info.external_id.clone();
        let (client, era) = (session.upstream.client, session.upstream.era);
        let close = CloseUpstream.teardown(session);
        Box::pin(async move {
            // Forget first: a request arriving meanwhile should not be sent here.
            cluster.closed(name.as_deref(), client, era).await;
            close.await;
        })
    }
}
