//! Owner records for 2026-07-28 clients: no session id travels with their
//! requests, so which instance holds a client's upstream is written in Redis
//! under its client key, set only if absent and expiring unless renewed.
//!
//! The first instance to claim a client holds its session; the others
//! forward to it. A record naming a dead instance (or an earlier life of
//! one) is replaced, compare-and-set, by whoever finds it stale.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::link::{LinkError, RedisLink};
use super::sealed_id::Owner;
use super::KEY_PREFIX;
use crate::proxy::client_key::ClientKey;

/// KEYS[1]: the record, KEYS[2]: the claimant's member record. ARGV: the
/// claimant, ttl ms, its member record. Returns the owner after the call, or
/// nil when the claimant's member record is not there: Redis lost its
/// records, and with them perhaps another instance's claim on this client.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return false end
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
",
    )
});

/// KEYS[1]: the record. ARGV: the stale owner, the claimant, ttl ms.
static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return current end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
",
    )
});

/// KEYS[1]: the record. ARGV[1]: the owner letting go.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// KEYS: records of clients held here. ARGV: this owner, ttl ms. Renews
/// them, or writes them back if lost (after a Redis restart); leaves those
/// another instance took.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local renewed = 0
for _, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if not current or current == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
",
    )
});

fn key(client: ClientKey) -> String {
    format!("{KEY_PREFIX}owner:{:016x}", client.0)
}

fn parse(text: &str) -> Result<Owner, LinkError> {
    Owner::from_record(text).ok_or_else(|| {
        LinkError::Redis(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unreadable owner record",
        )))
    })
}

pub struct OwnerRecords {
    pub ttl: Duration,
}

impl OwnerRecords {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Claims `client` for `me` unless someone holds it; returns the holder,
    /// or `None` when Redis does not hold `member_record` under `member_key`
    /// (this instance's membership record) and so may have lost the claim
    /// of another. Not `hot`: tried even while Redis is taken for down.
    pub async fn claim(
        &self,
        link: &RedisLink,
        hot: bool,
        client: ClientKey,
        me: &Owner,
        member_key: &str,
        member_record: &str,
    ) -> Result<Option<Owner>, LinkError> {
        let (key, me, ttl) = (key(client), me.to_record(), self.ttl_ms());
        let holder: Option<String> = link
            .run("owner_claim", hot, |mut redis| async move {
                CLAIM
                    .key(key)
                    .key(member_key)
                    .arg(me)
                    .arg(ttl)
                    .arg(member_record)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        holder.as_deref().map(parse).transpose()
    }

    /// Takes `client` over from `stale` (dead, or an earlier life); returns
    /// the holder, which is someone else if another instance was faster.
    pub async fn replace(
        &self,
        link: &RedisLink,
        client: ClientKey,
        stale: &Owner,
        me: &Owner,
    ) -> Result<Owner, LinkError> {
        let (key, stale, me, ttl) = (
            key(client),
            stale.to_record(),
            me.to_record(),
            self.ttl_ms(),
        );
        let holder: String = link
            .run("owner_replace", true, |mut redis| async move {
                REPLACE
                    .key(key)
                    .arg(stale)
                    .arg(me)
                    .arg(ttl)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        parse(&holder)
    }

    /// Lets `client` go when its session here ends.
    pub async fn release(
        &self,
        link: &RedisLink,
        client: ClientKey,
        me: &Owner,
    ) -> Result<(), LinkError> {
        let (key, me) = (key(client), me.to_record());
        link.run("owner_release", true, |mut redis| async move {
            RELEASE
                .key(key)
                .arg(me)
                .invoke_async::<i64>(&mut redis)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Renews the records of clients whose sessions live here.
    pub async fn renew(
        &self,
        link: &RedisLink,
        clients: &[ClientKey],
        me: &Owner,
    ) -> Result<(), LinkError> {
        if clients.is_empty() {
            return Ok(());
        }
        let (me, ttl) = (me.to_record(), self.ttl_ms());
        link.run("owner_renew", false, |mut redis| async move {
            let mut call = RENEW.prepare_invoke();
            for &client in clients {
                call.key(key(client));
            }
            call.arg(me).arg(ttl).invoke_async::<i64>(&mut redis).await
        })
        .await
        .map(|_| ())
    }
}
