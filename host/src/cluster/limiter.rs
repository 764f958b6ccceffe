//! The global rate limit per client key: GCRA (the generic cell rate
//! algorithm) run as a Redis script that reads Redis's own `TIME`, so the
//! instances' clocks never enter into it.
//!
//! One key per client holds its theoretical arrival time (TAT) in
//! microseconds. A request at `now` is admitted when `max(TAT, now) +
//! interval - burst * interval <= now`, and then moves TAT on by one
//! interval; the key expires when the client's bucket would be full again.
//! It is checked once per request, at the instance that received it.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::link::{LinkError, RedisLink};
use super::KEY_PREFIX;
use crate::config::RateLimit;
use crate::proxy::client_key::ClientKey;

/// KEYS[1]: the client's TAT. ARGV: interval (µs), burst.
/// Returns {1, 0} when admitted, {0, wait µs} when not.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - burst * interval
if now < allowed_at then
  return {0, allowed_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
",
    )
});

/// What the global limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Over the limit; retry after this long.
    Limited(Duration),
}

pub struct GlobalLimiter {
    interval_us: u64,
    burst: u32,
}

impl GlobalLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            interval_us: (1_000_000 / u64::from(limit.per_second.get())).max(1),
            burst: limit.burst.get(),
        }
    }

    /// One request of `client`.
    pub async fn check(&self, link: &RedisLink, client: ClientKey) -> Result<Verdict, LinkError> {
        let key = format!("{KEY_PREFIX}rate:{:016x}", client.0);
        let (admitted, wait_us): (i64, i64) = link
            .run("rate_limit", true, |mut redis| async move {
                GCRA.key(key)
                    .arg(self.interval_us)
                    .arg(self.burst)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        Ok(if admitted == 1 {
            Verdict::Admit
        } else {
            Verdict::Limited(Duration::from_micros(wait_us.max(1).unsigned_abs()))
        })
    }
}
