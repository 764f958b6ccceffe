//! The session index: one Redis key per session of the cluster, holding the
//! row the admin API shows, written by the owner when the session opens,
//! renewed while it lives (with its latest figures) and deleted when it
//! ends. A session whose owner dies without deleting it expires.
//!
//! It serves the operator (`shadowcat session list` shows the whole cluster)
//! and revocation from any instance; requests never read it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::link::{LinkError, RedisLink};
use super::KEY_PREFIX;
use crate::proxy::admin::SessionRow;

/// Keys per SCAN page and per MGET.
const PAGE: usize = 500;
/// Bounds a listing of a very large index.
const MAX_PAGES: usize = 10_000;

/// One session as the index holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexRecord {
    #[serde(flatten)]
    pub row: SessionRow,
    /// The owner's boot nonce, hex.
    pub boot: String,
    /// Cluster time of the figures, in ms.
    pub as_of_ms: i64,
}

/// Keyed by owner too: a 2026-07-28 session is named by its client, and two
/// instances may briefly both hold one for the same client.
fn key(instance: &str, id: &str) -> String {
    format!("{KEY_PREFIX}session:{instance}:{id}")
}

pub struct SessionIndex {
    pub ttl: Duration,
}

impl SessionIndex {
    /// Writes (or renews) records, in one pipeline.
    pub async fn put(&self, link: &RedisLink, records: &[IndexRecord]) -> Result<(), LinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        for record in records {
            let json = serde_json::to_string(record).expect("a record serializes");
            let instance = record.row.instance.as_deref().unwrap_or_default();
            pipe.cmd("SET")
                .arg(key(instance, &record.row.id))
                .arg(json)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        link.run("index_put", false, |mut redis| async move {
            pipe.exec_async(&mut redis).await
        })
        .await
    }

    /// Forgets a session that ended. Skipped while Redis is down (the
    /// record then expires), so teardowns never wait on it.
    pub async fn delete(
        &self,
        link: &RedisLink,
        instance: &str,
        id: &str,
    ) -> Result<(), LinkError> {
        let key = key(instance, id);
        link.run("index_delete", true, |mut redis| async move {
            redis::cmd("DEL").arg(key).exec_async(&mut redis).await
        })
        .await
    }

    /// Every record in the index.
    pub async fn list(&self, link: &RedisLink) -> Result<Vec<IndexRecord>, LinkError> {
        let pattern = format!("{KEY_PREFIX}session:*");
        let mut cursor = 0u64;
        let mut records = Vec::new();
        for _ in 0..MAX_PAGES {
            let pattern = pattern.clone();
            let (next, keys): (u64, Vec<String>) = link
                .run("index_scan", false, |mut redis| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(&mut redis)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> = link
                    .run("index_mget", false, |mut redis| async move {
                        redis::cmd("MGET").arg(keys).query_async(&mut redis).await
                    })
                    .await?;
                records.extend(
                    values
                        .into_iter()
                        .flatten()
                        .filter_map(|json| serde_json::from_str::<IndexRecord>(&json).ok()),
                );
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(records)
    }
}
