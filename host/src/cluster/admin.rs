//! The admin API across the cluster: every instance lists every session
//! (this instance's from its table, the others' from the session index), and
//! removes any session, or cleans every instance's table up, by asking the
//! instances concerned over an authenticated hop.

use axum::http::{HeaderMap, StatusCode};

use super::hop::HopPurpose;
use super::index::IndexRecord;
use super::sealed_id::Owner;
use super::{Cluster, InstanceId};
use crate::proxy::admin::{Removed, SessionRow};
use crate::proxy::client_key::ClientKey;
use crate::proxy::mcp_headers::SESSION_ID;

/// Largest answer read back from an owner's revocation.
const MAX_ANSWER: usize = 64 << 10;

/// The cluster's sessions.
#[derive(Debug, Clone)]
pub struct Listing {
    pub rows: Vec<SessionRow>,
    /// False when Redis could not be read: only this instance's rows.
    pub complete: bool,
}

fn owner_of(record: &IndexRecord) -> Option<Owner> {
    Some(Owner {
        instance: InstanceId::parse(record.row.instance.as_deref()?).ok()?,
        boot: u64::from_str_radix(&record.boot, 16).ok()?,
    })
}

impl Cluster {
    /// `local` (this instance's rows) and every live instance's indexed
    /// sessions. Their figures are as of their last renewal; their age is
    /// brought up to now.
    pub async fn list(&self, local: Vec<SessionRow>) -> Listing {
        let me = self.me().clone();
        let mut rows: Vec<SessionRow> = local
            .into_iter()
            .map(|row| SessionRow {
                instance: Some(me.instance.to_string()),
                ..row
            })
            .collect();
        let records = match self.index.list(&self.link).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!("listing this instance's sessions only: {e}");
                return Listing {
                    rows,
                    complete: false,
                };
            }
        };
        let now = self.now_ms();
        let mut others: Vec<SessionRow> = records
            .into_iter()
            .filter_map(|record| {
                let owner = owner_of(&record)?;
                (owner.instance != me.instance && self.members.is_live(&owner)).then(|| {
                    let behind = (now - record.as_of_ms).max(0) as f64 / 1000.0;
                    SessionRow {
                        age_seconds: record.row.age_seconds + behind,
                        ..record.row
                    }
                })
            })
            .collect();
        others.sort_by(|a, b| (&a.instance, &a.id).cmp(&(&b.instance, &b.id)));
        rows.extend(others);
        Listing {
            rows,
            complete: true,
        }
    }

    /// Removes session `id` held by another instance. `None` when no live
    /// instance holds it.
    pub async fn revoke(&self, id: &str) -> Option<Removed> {
        let me = self.me().clone();
        let owners: Vec<Owner> = match self.keys.open(id) {
            Ok(owner) => vec![owner],
            // Not a sealed id (a 2026-07-28 client's session): its owners
            // are in the index.
            Err(_) => match self.index.list(&self.link).await {
                Ok(records) => records
                    .iter()
                    .filter(|r| r.row.id == id)
                    .filter_map(owner_of)
                    .collect(),
                Err(e) => {
                    tracing::warn!("cannot look session `{id}` up in the index: {e}");
                    Vec::new()
                }
            },
        };
        let mut done: Option<Removed> = None;
        for owner in owners.iter().filter(|o| o.instance != me.instance) {
            let Some(endpoint) = self.members.endpoint_of(owner) else {
                continue;
            };
            let removed = match self.ask_to_remove(&endpoint, HopPurpose::Revoke, id).await {
                Ok(removed) => removed,
                Err(why) => {
                    tracing::info!(%endpoint, "revoking a session: {why}");
                    continue;
                }
            };
            let total = done.get_or_insert_with(Removed::default);
            total.removed += removed.removed;
            total.deferred += removed.deferred;
        }
        done
    }

    /// Asks every other live instance to clean its table up: remove every
    /// session (`all`), or those due to expire. The sum of what they did,
    /// with `instances` the number that answered and `unreached` the others.
    pub async fn cleanup_others(&self, all: bool) -> Removed {
        let purpose = if all {
            HopPurpose::Purge
        } else {
            HopPurpose::Expire
        };
        let others = self.members.others();
        let answers = futures::future::join_all(others.iter().map(|member| async move {
            self.ask_to_remove(&member.mcp, purpose, "")
                .await
                .map_err(|why| tracing::warn!(endpoint = %member.mcp, "cleaning up: {why}"))
                .ok()
        }))
        .await;
        let mut total = Removed {
            instances: Some(0),
            ..Removed::default()
        };
        for (member, answer) in others.iter().zip(answers) {
            match answer {
                Some(done) => {
                    total.removed += done.removed;
                    total.deferred += done.deferred;
                    total.instances = total.instances.map(|n| n + 1);
                }
                None => total.unreached.push(member.owner.instance.to_string()),
            }
        }
        total
    }

    /// Sends `purpose` to the instance at `endpoint` (about session `id`,
    /// or none when empty) and reads what it removed. `Err` says why there
    /// is nothing to count.
    async fn ask_to_remove(
        &self,
        endpoint: &reqwest::Url,
        purpose: HopPurpose,
        id: &str,
    ) -> Result<Removed, String> {
        let hop = self.keys.sign_hop(purpose, id, ClientKey(0), self.now_ms());
        let session = [(SESSION_ID, id)];
        let extra: &[(&str, &str)] = if id.is_empty() { &[] } else { &session };
        let answer = self
            .forwarder
            .send(
                endpoint,
                purpose.method(),
                &HeaderMap::new(),
                extra,
                &hop,
                Default::default(),
            )
            .await
            .map_err(|e| format!("cannot reach the instance: {e}"))?;
        if answer.status() != StatusCode::OK {
            return Err(format!("refused ({})", answer.status()));
        }
        let body = axum::body::to_bytes(answer.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("not a count of removals: {e}"))
    }
}
