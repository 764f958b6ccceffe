//! Several proxies behind one plain load balancer, without sticky routing.
//!
//! A session's upstream (a child process, an upstream HTTP session) lives on
//! the instance that opened it and never moves. Any instance can receive any
//! request: the session id names the owner, and a request for another
//! instance's session is forwarded there, one hop at most.
//!
//! # Layout
//!
//! - [`keys`]: the shared secret (`--session-key-file`, rotation) and the
//!   keys derived from it.
//! - [`sealed_id`]: `MCP-Session-Id`s sealed with XChaCha20-Poly1305 that
//!   hold the owner's instance id, its boot nonce and 128 random bits, so
//!   routing needs no lookup and a forged or altered id is just unknown.
//! - [`hop`]: the header that marks a forwarded request, which only an
//!   instance of the cluster can make.
//! - [`clock`]: cluster time (the local clock corrected by Redis's), for hop
//!   timestamps under clock skew.
//! - [`link`]: the Redis connection, its timeouts, and the breaker that keeps
//!   a dead Redis off the request path.
//! - [`membership`]: live instances (heartbeat records with an expiry).
//! - [`index`]: every session of the cluster, for the admin API.
//! - [`limiter`]: the global per-client rate limit (GCRA on Redis's clock).
//! - [`owner`]: which instance holds a 2026-07-28 client's session.
//! - [`forward`]: the hop over HTTP, answers streamed back.
//! - [`route`]: the `/mcp` middleware deciding: here, there, or 404.
//! - [`tasks`]: heartbeat, index renewal, and what a session's end removes.
//! - [`admin`]: the cluster-wide session list and revocation.
//! - [`metrics`]: forwarding, hops, Redis errors and latency, the down mode.
//!
//! # What Redis is for, and what happens without it
//!
//! Requests with a session id do not wait for Redis: members are read by the
//! heartbeat and kept in memory (an owner not known yet, such as an instance
//! that has just started, is looked up once per heartbeat). Redis holds membership, the session index,
//! the global rate limit and the 2026-07-28 owner records. While it is down,
//! routing by session id goes on with the last members read, the rate limit
//! admits or refuses as `--cluster-redis-down` says, 2026-07-28 clients are
//! served where they land, and everything is rewritten when it is back (the
//! connection reconnects on its own).
//!
//! Eviction, expiry, the per-session limits and the policy stay local to
//! each instance's table.

pub mod admin;
pub mod clock;
pub mod forward;
pub mod hop;
pub mod index;
pub mod keys;
pub mod limiter;
pub mod link;
pub mod membership;
pub mod metrics;
pub mod owner;
pub mod route;
pub mod sealed_id;
pub mod tasks;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use self::forward::Forwarder;
use self::index::SessionIndex;
pub use self::keys::{ClusterKeys, KeyError};
use self::limiter::{GlobalLimiter, Verdict};
use self::link::RedisLink;
use self::membership::{Member, Membership};
use self::metrics::ClusterMetrics;
use self::owner::OwnerRecords;
use self::sealed_id::Owner;
use crate::config::RateLimit;
use crate::proxy::client_key::ClientKey;

/// Every key the cluster writes starts with this.
pub const KEY_PREFIX: &str = "shadowcat:";

/// An instance's name in the cluster: 1 to 64 of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    pub fn parse(text: &str) -> Result<Self, ClusterError> {
        let valid = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(Arc::from(text)))
        } else {
            Err(ClusterError::InstanceId(text.to_owned()))
        }
    }

    /// A fresh random id, for instances not given one.
    pub fn random() -> Self {
        let mut bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut bytes);
        Self(Arc::from(format!("sc-{}", hex::encode(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the global rate limit does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisDownMode {
    /// Admit (the per-session limits of each instance still hold).
    #[default]
    Open,
    /// Refuse with 503 until Redis is back.
    Closed,
}

impl RedisDownMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

impl FromStr for RedisDownMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            other => Err(format!("`{other}` is not `open` or `closed`")),
        }
    }
}

impl fmt::Display for RedisDownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often things happen, and how long they last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTiming {
    pub heartbeat: Duration,
    /// A member record not renewed this long expires: the instance is dead.
    pub member_ttl: Duration,
    /// How often the index records and owner records of live sessions are
    /// renewed (with their latest figures).
    pub index_refresh: Duration,
    pub index_ttl: Duration,
    pub owner_ttl: Duration,
    /// Bound on every Redis operation.
    pub redis_timeout: Duration,
    /// How far a hop's time may be from the receiver's, in cluster time.
    pub hop_window: Duration,
    pub forward_connect_timeout: Duration,
}

impl Default for ClusterTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            member_ttl: Duration::from_secs(3),
            index_refresh: Duration::from_secs(10),
            index_ttl: Duration::from_secs(30),
            owner_ttl: Duration::from_secs(30),
            redis_timeout: Duration::from_millis(500),
            hop_window: Duration::from_secs(30),
            forward_connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Everything an instance joins a cluster with.
#[derive(Debug)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// `None`: a random id per boot.
    pub instance_id: Option<InstanceId>,
    /// This instance's MCP endpoint as the others reach it; `None`: the
    /// address it listens on, unless that is a wildcard.
    pub advertise: Option<reqwest::Url>,
    pub keys: ClusterKeys,
    pub redis_down: RedisDownMode,
    pub timing: ClusterTiming,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid --cluster-redis URL `{url}`: {error}")]
    RedisUrl {
        url: String,
        error: redis::RedisError,
    },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("invalid instance id `{0}`: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    InstanceId(String),
    #[error(
        "--advertise is needed when listening on {0}: the other instances must know \
         an address that reaches this one"
    )]
    NoAdvertise(SocketAddr),
    #[error("--advertise must be an http:// or https:// URL, not `{0}`")]
    BadAdvertise(String),
    #[error("cannot build the HTTP client that forwards to other instances: {0}")]
    Http(reqwest::Error),
}

/// Where a request for a session id goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdRoute {
    Local,
    Forward(reqwest::Url),
    /// 404: the id is not ours (forged, tampered), or its owner is dead or
    /// has restarted since.
    Gone(&'static str),
}

/// Where a 2026-07-28 client's request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRoute {
    Local,
    Forward(reqwest::Url, Owner),
}

/// What the global limit lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    Limited(Duration),
    /// Redis is down and the mode is closed.
    Unavailable,
}

/// An instance's part in the cluster.
pub struct Cluster {
    pub keys: ClusterKeys,
    pub link: RedisLink,
    pub members: Membership,
    pub index: SessionIndex,
    pub owners: OwnerRecords,
    pub limiter: Option<GlobalLimiter>,
    pub forwarder: Forwarder,
    pub metrics: Arc<ClusterMetrics>,
    pub redis_down: RedisDownMode,
    pub timing: ClusterTiming,
    /// Wakes the renewal task early (Redis is back).
    renew_now: tokio::sync::Notify,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me())
            .field("redis_down", &self.redis_down)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins with `config`; `listening` is the MCP listener's bound address
    /// (the default `--advertise`), `rate_limit` the global per-client limit.
    /// Must run inside a tokio runtime. Connects to Redis lazily.
    pub fn new(
        config: ClusterConfig,
        listening: SocketAddr,
        rate_limit: Option<RateLimit>,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<Self, ClusterError> {
        let mcp = match config.advertise {
            Some(url) if matches!(url.scheme(), "http" | "https") => url,
            Some(url) => return Err(ClusterError::BadAdvertise(url.to_string())),
            None if listening.ip().is_unspecified() => {
                return Err(ClusterError::NoAdvertise(listening))
            }
            None => reqwest::Url::parse(&format!("http://{listening}/mcp"))
                .map_err(|_| ClusterError::NoAdvertise(listening))?,
        };
        let me = Member {
            owner: Owner {
                instance: config.instance_id.unwrap_or_else(InstanceId::random),
                boot: rand::random(),
            },
            mcp,
        };
        let timing = config.timing;
        let link = RedisLink::new(
            &config.redis_url,
            timing.redis_timeout,
            Arc::clone(&metrics),
        )
        .map_err(|error| ClusterError::RedisUrl {
            url: config.redis_url.clone(),
            error,
        })?;
        metrics.members.set(1);
        Ok(Self {
            keys: config.keys,
            link,
            members: Membership::new(me, timing.member_ttl),
            index: SessionIndex {
                ttl: timing.index_ttl,
            },
            owners: OwnerRecords {
                ttl: timing.owner_ttl,
            },
            limiter: rate_limit.map(GlobalLimiter::new),
            forwarder: Forwarder::new(timing.forward_connect_timeout)
                .map_err(ClusterError::Http)?,
            metrics,
            redis_down: config.redis_down,
            timing,
            renew_now: tokio::sync::Notify::new(),
        })
    }

    /// This instance, in this life.
    pub fn me(&self) -> &Owner {
        &self.members.me().owner
    }

    /// A fresh session id naming this instance.
    pub fn new_session_id(&self) -> String {
        self.keys.seal(self.me())
    }

    /// Where a request for session `id` goes, from the id and the members
    /// in memory; Redis is asked only about an owner not known here.
    pub async fn route_id(&self, id: &str) -> IdRoute {
        let owner = match self.keys.open(id) {
            Ok(owner) => owner,
            Err(e) => {
                tracing::debug!("session id refused: {e}");
                return IdRoute::Gone("not a session id of this cluster");
            }
        };
        let me = self.me();
        if owner.instance == me.instance {
            return if owner.boot == me.boot {
                IdRoute::Local
            } else {
                IdRoute::Gone("a session of this instance's earlier life")
            };
        }
        match self.members.find(&self.link, &owner).await {
            Some(url) => IdRoute::Forward(url),
            None => IdRoute::Gone("its instance is gone or has restarted"),
        }
    }

    /// Where a 2026-07-28 client's request goes when its session is not
    /// here: to the instance holding its owner record, or here when nobody
    /// (live) does, or when Redis cannot tell.
    pub async fn route_client(&self, client: ClientKey) -> ClientRoute {
        let me = self.me();
        // Right after Redis lost its records, the instance holding this
        // client may not have written its owner record back yet: claiming
        // it now would open a second session. Wait (bounded) until every
        // live instance is back in Redis.
        let limit = self.timing.member_ttl;
        self.members.settled(limit).await;
        let mut claimed = self.claim(client, true).await;
        if claimed.as_ref().is_err_and(link::LinkError::dropped) {
            // The connection broke (Redis restarted, say) and is made again
            // by the next command: one more try, past the breaker this
            // failure just tripped, rather than a second session for a
            // client another instance may hold.
            claimed = self.claim(client, false).await;
        }
        if matches!(claimed, Ok(None)) {
            // This instance's own record is gone: Redis lost its records
            // since the last heartbeat, which has not noticed yet.
            self.members.next_read(limit).await;
            self.members.settled(limit).await;
            claimed = self.claim(client, true).await;
        }
        let holder = match claimed {
            Ok(Some(holder)) => holder,
            Ok(None) => {
                tracing::debug!("Redis has not got this instance's record back, serving here");
                return ClientRoute::Local;
            }
            Err(e) => {
                tracing::debug!("owner record unavailable, serving here: {e}");
                return ClientRoute::Local;
            }
        };
        if holder == *me {
            return ClientRoute::Local;
        }
        if let Some(url) = self.members.endpoint_of(&holder) {
            return ClientRoute::Forward(url, holder);
        }
        self.take_over(client, &holder).await
    }

    async fn claim(&self, client: ClientKey, hot: bool) -> Result<Option<Owner>, link::LinkError> {
        self.owners
            .claim(
                &self.link,
                hot,
                client,
                self.me(),
                &self.members.record_key(),
                self.members.record(),
            )
            .await
    }

    /// Replaces a stale owner record (its instance is dead) with this one.
    pub async fn take_over(&self, client: ClientKey, stale: &Owner) -> ClientRoute {
        let me = self.me();
        match self.owners.replace(&self.link, client, stale, me).await {
            Ok(holder) if holder != *me => match self.members.endpoint_of(&holder) {
                Some(url) => ClientRoute::Forward(url, holder),
                None => ClientRoute::Local,
            },
            _ => ClientRoute::Local,
        }
    }

    /// The global rate limit for one request of `client`.
    pub async fn admit(&self, client: ClientKey) -> Admission {
        let Some(limiter) = &self.limiter else {
            return Admission::Admit;
        };
        match limiter.check(&self.link, client).await {
            Ok(Verdict::Admit) => {
                self.metrics.count_limit("admitted");
                Admission::Admit
            }
            Ok(Verdict::Limited(wait)) => {
                self.metrics.count_limit("limited");
                Admission::Limited(wait)
            }
            Err(e) => match self.redis_down {
                RedisDownMode::Open => {
                    tracing::trace!("global rate limit unchecked: {e}");
                    self.metrics.count_limit("unchecked");
                    Admission::Admit
                }
                RedisDownMode::Closed => {
                    self.metrics.count_limit("refused");
                    Admission::Unavailable
                }
            },
        }
    }

    /// Cluster time, in ms.
    pub fn now_ms(&self) -> i64 {
        self.members.clock.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_instance_ids_are_short_and_plain() {
        assert!(InstanceId::parse("node-1.eu_west").is_ok());
        for bad in ["", "has space", "colon:", &"x".repeat(65), "é"] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
        let a = InstanceId::random();
        assert!(InstanceId::parse(a.as_str()).is_ok());
        assert_ne!(a, InstanceId::random());
    }

    #[test]
    fn cluster_redis_down_modes_parse() {
        assert_eq!("open".parse(), Ok(RedisDownMode::Open));
        assert_eq!("closed".parse(), Ok(RedisDownMode::Closed));
        assert!("ajar".parse::<RedisDownMode>().is_err());
    }
}
