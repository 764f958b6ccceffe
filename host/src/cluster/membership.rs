//! Who is in the cluster: one Redis key per instance (its `--advertise` URL
//! and boot nonce) that expires unless the instance renews it, plus a set
//! naming them.
//!
//! One heartbeat is one script: renew this instance's key, read every
//! member's with the time it has left, drop the expired from the set, and
//! read Redis's clock (for [`super::clock::ClusterClock`]). The members read
//! are kept in memory, so routing a request never waits for Redis; while
//! Redis is down the last members read stand.
//!
//! A record is a lease: an instance is taken for dead once its lease has run
//! out, not as soon as one read misses its record. A Redis that restarted
//! empty (or was flushed) holds no record until each instance's next
//! heartbeat, and the first instance to read it must not forget the others
//! meanwhile. So a member missing from a read is kept until its last lease
//! read has run out by this instance's clock; and when Redis lost its records
//! or could not be read, nobody could renew, so the missing get one full
//! lease from that read on. An instance that leaves cleanly leaves a record
//! saying so, which ends its lease at once.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::clock::{local_ms, ClusterClock};
use super::link::{LinkError, RedisLink};
use super::sealed_id::Owner;
use super::{InstanceId, KEY_PREFIX};

/// KEYS[1]: the members set. ARGV: key prefix of member records, this
/// instance's id, its record, the record's time to live in ms. Returns
/// whether this instance's record was still there (`1`/`0`), then each
/// member's id, record and time to live in ms, then Redis's time.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix = ARGV[1]
local mine = prefix .. ARGV[2]
local kept = redis.call('GET', mine) == ARGV[3]
redis.call('SET', mine, ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[2])
local out = {kept and '1' or '0'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', prefix .. id)
  if record then
    out[#out + 1] = id
    out[#out + 1] = record
    out[#out + 1] = tostring(redis.call('PTTL', prefix .. id))
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

/// KEYS[1]: this instance's record. ARGV: its record, the record saying it
/// left, the time to live in ms. Replaces the record only if it is still
/// this boot's; the one saying it left outlives any lease the others hold.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
",
    )
});

/// KEYS[1]: one member's record. Returns it and its time to live in ms, or
/// nil.
static LOOKUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('GET', KEYS[1])
if not record then return false end
return {record, tostring(redis.call('PTTL', KEYS[1]))}
",
    )
});

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The MCP endpoint other instances forward to.
    mcp: String,
    boot: String,
    /// Written at a clean shutdown: the instance is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    left: bool,
}

impl Record {
    /// The member a record names, and whether it left; `None` when unreadable.
    fn parse(instance: &str, text: &str) -> Option<(Member, bool)> {
        let instance = InstanceId::parse(instance).ok()?;
        let Ok(record) = serde_json::from_str::<Record>(text) else {
            tracing::warn!(%instance, "ignoring an unreadable member record");
            return None;
        };
        let boot = u64::from_str_radix(&record.boot, 16).ok()?;
        let mcp = reqwest::Url::parse(&record.mcp).ok()?;
        Some((
            Member {
                owner: Owner { instance, boot },
                mcp,
            },
            record.left,
        ))
    }
}

/// A live instance, as last read from Redis.
#[derive(Debug, Clone)]
pub struct Member {
    pub owner: Owner,
    pub mcp: reqwest::Url,
}

/// A member as known here: until when its lease runs, by the local clock.
#[derive(Debug, Clone)]
struct Known {
    member: Member,
    lease_until_ms: i64,
    /// Missing from the last read: kept on its lease alone.
    missing: bool,
}

/// What one heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// Instances taken for live, this one included.
    pub live: usize,
    /// Redis had lost this instance's record since its last heartbeat (a
    /// restart, a flush, or a heartbeat later than the lease): whatever else
    /// this instance wrote may be gone too.
    pub lost: bool,
}

pub struct Membership {
    me: Member,
    record: String,
    left_record: String,
    ttl: Duration,
    state: RwLock<State>,
    /// Woken after every heartbeat that read Redis.
    read: tokio::sync::Notify,
    pub clock: ClusterClock,
}

#[derive(Default)]
struct State {
    members: HashMap<InstanceId, Known>,
    /// A heartbeat has read Redis at least once.
    joined: bool,
    /// The last heartbeat could not read Redis.
    unread: bool,
    /// Owners whose lookup found nothing, forgotten at the next heartbeat.
    unknown: HashSet<Owner>,
}

/// Adds to `read` the members of `before` it lacks whose lease has not run
/// out at `now` (or from `fresh_lease`, when nobody could renew), unless
/// they left or are this instance.
fn keep_missing(
    before: HashMap<InstanceId, Known>,
    read: &mut HashMap<InstanceId, Known>,
    left: &HashSet<InstanceId>,
    me: &InstanceId,
    now: i64,
    fresh_lease: Option<i64>,
) {
    for (instance, known) in before {
        if &instance == me || read.contains_key(&instance) || left.contains(&instance) {
            continue;
        }
        let lease_until_ms = fresh_lease.map_or(known.lease_until_ms, |fresh| {
            fresh.max(known.lease_until_ms)
        });
        if lease_until_ms > now {
            read.insert(
                instance,
                Known {
                    lease_until_ms,
                    missing: true,
                    ..known
                },
            );
        }
    }
}

fn members_key() -> String {
    format!("{KEY_PREFIX}members")
}

fn member_prefix() -> String {
    format!("{KEY_PREFIX}member:")
}

impl Membership {
    pub fn new(me: Member, ttl: Duration) -> Self {
        let record = |left| {
            serde_json::to_string(&Record {
                mcp: me.mcp.to_string(),
                boot: format!("{:016x}", me.owner.boot),
                left,
            })
            .expect("a record serializes")
        };
        let (record, left_record) = (record(false), record(true));
        let mut state = State::default();
        state.members.insert(
            me.owner.instance.clone(),
            Known {
                member: me.clone(),
                lease_until_ms: i64::MAX,
                missing: false,
            },
        );
        Self {
            me,
            record,
            left_record,
            ttl,
            state: RwLock::new(state),
            read: tokio::sync::Notify::new(),
            clock: ClusterClock::default(),
        }
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// This instance's record, as the heartbeat writes it.
    pub fn record(&self) -> &str {
        &self.record
    }

    /// The key of this instance's record.
    pub fn record_key(&self) -> String {
        format!("{}{}", member_prefix(), self.me.owner.instance)
    }

    /// Renews this instance's record and reads everyone's.
    pub async fn heartbeat(&self, link: &RedisLink) -> Result<Beat, LinkError> {
        let sent = local_ms();
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let reply: Result<Vec<String>, LinkError> = link
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
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                self.state.write().unread = true;
                return Err(e);
            }
        };
        let received = local_ms();
        let (kept, rest) = match reply.split_first() {
            Some((kept, rest)) => (kept == "1", rest),
            None => (false, &[][..]),
        };
        let (triples, time) = rest.split_at(rest.len().saturating_sub(2));
        if let [seconds, micros] = time {
            if let (Ok(s), Ok(us)) = (seconds.parse::<i64>(), micros.parse::<i64>()) {
                self.clock.observe(sent, s * 1000 + us / 1000, received);
            }
        }
        let mut read = HashMap::with_capacity(triples.len() / 3);
        let mut left = HashSet::new();
        for triple in triples.chunks_exact(3) {
            let Some((member, gone)) = Record::parse(&triple[0], &triple[1]) else {
                continue;
            };
            if gone {
                left.insert(member.owner.instance);
                continue;
            }
            // No expiry cannot happen to a record the heartbeat writes; it
            // gets a full lease rather than none.
            let pttl = triple[2].parse::<i64>().ok().filter(|t| *t >= 0);
            let lease_until_ms = received.saturating_add(pttl.unwrap_or(self.ttl_ms()));
            read.insert(
                member.owner.instance.clone(),
                Known {
                    member,
                    lease_until_ms,
                    missing: false,
                },
            );
        }
        let beat = {
            let mut state = self.state.write();
            let lost = state.joined && !kept;
            // Nobody could renew while Redis was out of reach or had lost the
            // records: the leases of the missing start again from now.
            let fresh_lease =
                (state.unread || lost).then(|| received.saturating_add(self.ttl_ms()));
            let me = &self.me.owner.instance;
            let before = std::mem::take(&mut state.members);
            keep_missing(before, &mut read, &left, me, received, fresh_lease);
            read.insert(
                me.clone(),
                Known {
                    member: self.me.clone(),
                    lease_until_ms: i64::MAX,
                    missing: false,
                },
            );
            state.members = read;
            state.joined = true;
            state.unread = false;
            state.unknown.clear();
            Beat {
                live: state.members.len(),
                lost,
            }
        };
        self.read.notify_waiters();
        Ok(beat)
    }

    /// Marks this instance's record as left at a clean shutdown, so the
    /// others answer its sessions with 404 at once instead of after its
    /// lease.
    pub async fn leave(&self, link: &RedisLink) -> Result<(), LinkError> {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        link.run("leave", false, |mut redis| async move {
            LEAVE
                .key(self.record_key())
                .arg(&self.record)
                .arg(&self.left_record)
                .arg(ttl)
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
        let state = self.state.read();
        let known = state.members.get(&owner.instance)?;
        (known.member.owner.boot == owner.boot).then(|| known.member.mcp.clone())
    }

    /// As [`Membership::endpoint_of`], and when `owner` is not known here,
    /// its record read from Redis: an instance that has just started (or
    /// restarted) hands out session ids before the others' next heartbeat
    /// has read its record. One read per unknown owner per heartbeat, and
    /// none while Redis is known to be down.
    pub async fn find(&self, link: &RedisLink, owner: &Owner) -> Option<reqwest::Url> {
        if let Some(url) = self.endpoint_of(owner) {
            return Some(url);
        }
        if !self.state.write().unknown.insert(owner.clone()) {
            return None;
        }
        let key = format!("{}{}", member_prefix(), owner.instance);
        let sent = local_ms();
        let reply: Option<(String, String)> = link
            .run("member_lookup", true, |mut redis| async move {
                LOOKUP.key(key).invoke_async(&mut redis).await
            })
            .await
            .ok()
            .flatten();
        let (record, pttl) = reply?;
        let (member, left) = Record::parse(owner.instance.as_str(), &record)?;
        if left || member.owner != *owner {
            return None;
        }
        let lease = pttl.parse::<i64>().ok().filter(|t| *t >= 0);
        let lease_until_ms = sent.saturating_add(lease.unwrap_or(self.ttl_ms()));
        let url = member.mcp.clone();
        let mut state = self.state.write();
        state.unknown.remove(owner);
        state.members.insert(
            owner.instance.clone(),
            Known {
                member,
                lease_until_ms,
                missing: false,
            },
        );
        Some(url)
    }

    /// Whether `owner` is a live instance in the life it names.
    pub fn is_live(&self, owner: &Owner) -> bool {
        self.state
            .read()
            .members
            .get(&owner.instance)
            .is_some_and(|k| k.member.owner.boot == owner.boot)
    }

    /// Whether some member is kept on its lease alone, its record not yet
    /// written back since Redis lost it.
    pub fn recovering(&self) -> bool {
        self.state.read().members.values().any(|k| k.missing)
    }

    /// Waits, at most `limit`, until no member is missing from Redis: after
    /// Redis lost its records, until every live instance has written its own
    /// back (and with it, soon after, its owner records).
    pub async fn settled(&self, limit: Duration) {
        let deadline = tokio::time::Instant::from_std(Instant::now() + limit);
        loop {
            let read = self.read.notified();
            tokio::pin!(read);
            read.as_mut().enable();
            if !self.recovering() {
                return;
            }
            if tokio::time::timeout_at(deadline, read).await.is_err() {
                return;
            }
        }
    }

    /// Waits, at most `limit`, for the next heartbeat that reads Redis.
    pub async fn next_read(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.read.notified()).await;
    }

    /// Every live instance but this one.
    pub fn others(&self) -> Vec<Member> {
        self.state
            .read()
            .members
            .values()
            .filter(|k| k.member.owner.instance != self.me.owner.instance)
            .map(|k| k.member.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.state.read().members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.read().members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(instance: &str, lease_until_ms: i64) -> (InstanceId, Known) {
        let instance = InstanceId::parse(instance).expect("id");
        let member = Member {
            owner: Owner {
                instance: instance.clone(),
                boot: 1,
            },
            mcp: reqwest::Url::parse("http://127.0.0.1:1/mcp").expect("url"),
        };
        (
            instance,
            Known {
                member,
                lease_until_ms,
                missing: false,
            },
        )
    }

    fn kept(before: &[(&str, i64)], left: &[&str], now: i64, fresh: Option<i64>) -> Vec<String> {
        let me = InstanceId::parse("me").expect("id");
        let before = before.iter().map(|(i, l)| known(i, *l)).collect();
        let left = left
            .iter()
            .map(|i| InstanceId::parse(i).expect("id"))
            .collect();
        let mut read = HashMap::from([known("b", 5_000)]);
        keep_missing(before, &mut read, &left, &me, now, fresh);
        let mut ids: Vec<String> = read.keys().map(ToString::to_string).collect();
        ids.sort();
        ids
    }

    #[test]
    fn cluster_members_missing_from_a_read_live_out_their_lease() {
        // Missing "c" stays while its lease runs, then goes.
        assert_eq!(kept(&[("c", 3_000)], &[], 2_000, None), ["b", "c"]);
        assert_eq!(kept(&[("c", 3_000)], &[], 3_000, None), ["b"]);
        // After an outage or a lost Redis, a full lease from the read.
        assert_eq!(kept(&[("c", 1_000)], &[], 2_000, Some(5_000)), ["b", "c"]);
        // One that left cleanly, or this instance, is never kept this way.
        assert_eq!(kept(&[("c", 3_000)], &["c"], 2_000, Some(5_000)), ["b"]);
        assert_eq!(kept(&[("me", 3_000)], &[], 2_000, None), ["b"]);
    }

    #[test]
    fn cluster_member_records_say_whether_the_instance_left() {
        let record = r#"{"mcp":"http://10.0.0.5:8080/mcp","boot":"00000000000000ff"}"#;
        let (member, left) = Record::parse("a", record).expect("a record");
        assert_eq!(member.owner.boot, 255);
        assert!(!left);
        let record = r#"{"mcp":"http://10.0.0.5:8080/mcp","boot":"ff","left":true}"#;
        assert!(Record::parse("a", record).expect("a record").1);
        assert!(Record::parse("a", "not json").is_none());
        assert!(Record::parse("not an id!", record).is_none());
    }
}
