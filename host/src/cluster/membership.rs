//! Who is in the cluster: one Redis key per instance (its `--advertise` URL
//! and boot nonce) that expires unless the instance renews it, plus a set
//! naming them.
//!
//! One heartbeat is one script: renew this instance's key, read every
//! member's, drop the expired from the set, and read Redis's clock (for
//! [`super::clock::ClusterClock`]). The members read are kept in memory, so
//! routing a request never waits for Redis; while Redis is down the last
//! members read stand.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::RwLock;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::clock::{local_ms, ClusterClock};
use super::link::{LinkError, RedisLink};
use super::sealed_id::Owner;
use super::{InstanceId, KEY_PREFIX};

/// KEYS[1]: the members set. ARGV: key prefix of member records, this
/// instance's id, its record, the record's time to live in ms.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix = ARGV[1]
redis.call('SET', prefix .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[2])
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', prefix .. id)
  if record then
    out[#out + 1] = id
    out[#out + 1] = record
  else
    redis.call('SREM', KEYS[1], id)
  end
end
local t = redis.call('TIME')
out[#out + 1] = t[1]
out[#out + 1] = t[2]
return out
",
    )
});

/// KEYS[1]: the members set, KEYS[2]: this instance's record. ARGV[1]: its id.
/// Deletes the record only if it is still this boot's.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[1], ARGV[1])
  return 1
end
return 0
",
    )
});

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The MCP endpoint other instances forward to.
    mcp: String,
    boot: String,
}

/// A live instance, as last read from Redis.
#[derive(Debug, Clone)]
pub struct Member {
    pub owner: Owner,
    pub mcp: reqwest::Url,
}

pub struct Membership {
    me: Member,
    record: String,
    ttl: Duration,
    members: RwLock<HashMap<InstanceId, Member>>,
    pub clock: ClusterClock,
}

fn members_key() -> String {
    format!("{KEY_PREFIX}members")
}

fn member_prefix() -> String {
    format!("{KEY_PREFIX}member:")
}

impl Membership {
    pub fn new(me: Member, ttl: Duration) -> Self {
        let record = serde_json::to_string(&Record {
            mcp: me.mcp.to_string(),
            boot: format!("{:016x}", me.owner.boot),
        })
        .expect("a record serializes");
        let members = HashMap::from([(me.owner.instance.clone(), me.clone())]);
        Self {
            me,
            record,
            ttl,
            members: RwLock::new(members),
            clock: ClusterClock::default(),
        }
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    /// Renews this instance's record and reads everyone's. Returns how many
    /// instances are live.
    pub async fn heartbeat(&self, link: &RedisLink) -> Result<usize, LinkError> {
        let sent = local_ms();
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let reply: Vec<String> = link
            .run("heartbeat", false, |mut redis| async move {
                HEARTBEAT
                    .key(members_key())
                    .arg(member_prefix())
                    .arg(self.me.owner.instance.as_str())
                    .arg(&self.record)
                    .arg(ttl)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        let received = local_ms();
        let (pairs, time) = reply.split_at(reply.len().saturating_sub(2));
        if let [seconds, micros] = time {
            if let (Ok(s), Ok(us)) = (seconds.parse::<i64>(), micros.parse::<i64>()) {
                self.clock.observe(sent, s * 1000 + us / 1000, received);
            }
        }
        let mut members = HashMap::with_capacity(pairs.len() / 2);
        for pair in pairs.chunks_exact(2) {
            let Ok(instance) = InstanceId::parse(&pair[0]) else {
                continue;
            };
            let Ok(record) = serde_json::from_str::<Record>(&pair[1]) else {
                tracing::warn!(%instance, "ignoring an unreadable member record");
                continue;
            };
            let (Ok(boot), Ok(mcp)) = (
                u64::from_str_radix(&record.boot, 16),
                reqwest::Url::parse(&record.mcp),
            ) else {
                continue;
            };
            members.insert(
                instance.clone(),
                Member {
                    owner: Owner { instance, boot },
                    mcp,
                },
            );
        }
        members.insert(self.me.owner.instance.clone(), self.me.clone());
        let live = members.len();
        *self.members.write() = members;
        Ok(live)
    }

    /// Removes this instance's record at a clean shutdown, so the others
    /// answer its sessions with 404 at once instead of after the expiry.
    pub async fn leave(&self, link: &RedisLink) -> Result<(), LinkError> {
        let record_key = format!("{}{}", member_prefix(), self.me.owner.instance);
        link.run("leave", false, |mut redis| async move {
            LEAVE
                .key(members_key())
                .key(record_key)
                .arg(self.me.owner.instance.as_str())
                .arg(&self.record)
                .invoke_async::<i64>(&mut redis)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Where to forward a request for `owner`'s session: `None` when that
    /// instance is not live, or lives again under another boot nonce (its
    /// sessions are gone with its earlier life).
    pub fn endpoint_of(&self, owner: &Owner) -> Option<reqwest::Url> {
        let members = self.members.read();
        let member = members.get(&owner.instance)?;
        (member.owner.boot == owner.boot).then(|| member.mcp.clone())
    }

    /// Whether `owner` is a live instance in the life it names.
    pub fn is_live(&self, owner: &Owner) -> bool {
        self.members
            .read()
            .get(&owner.instance)
            .is_some_and(|m| m.owner.boot == owner.boot)
    }

    pub fn len(&self) -> usize {
        self.members.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.read().is_empty()
    }
}
