//! The hop header: how an owner knows a request was forwarded by another
//! instance of its cluster, which already checked the client's global rate
//! limit and names the client (whose address the owner no longer sees).
//!
//! ```text
//! shadowcat-hop: 1.<purpose>.<cluster time ms>.<client key hex>.<HMAC-SHA256 base64url>
//! ```
//!
//! The MAC covers the purpose (which HTTP method it may ride on), the time,
//! the client key and the request's session id, under the cluster's hop key.
//! A client cannot make one, and one seen on the wire between instances is
//! good only for the same session and purpose, for `window` either side of
//! its time. Times are cluster time ([`super::clock`]), so instances with
//! skewed clocks agree on them.

use std::time::Duration;

use axum::http::Method;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::ClusterKeys;
use crate::proxy::client_key::ClientKey;

pub const HOP_HEADER: &str = "shadowcat-hop";
const VERSION: &str = "1";
const DOMAIN: &[u8] = b"shadowcat hop v1\0";

/// What a hop may do at the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopPurpose {
    /// A client's POST, GET or DELETE on `/mcp`, forwarded.
    Post,
    Get,
    Delete,
    /// The admin API of another instance removing a session (`DELETE`).
    Revoke,
    /// The admin API of another instance removing every session of this
    /// one (`session cleanup --all`), or those due to expire (`session
    /// cleanup`); `DELETE`, without a session.
    Purge,
    Expire,
}

impl HopPurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Get => "get",
            Self::Delete => "delete",
            Self::Revoke => "revoke",
            Self::Purge => "purge",
            Self::Expire => "expire",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "post" => Self::Post,
            "get" => Self::Get,
            "delete" => Self::Delete,
            "revoke" => Self::Revoke,
            "purge" => Self::Purge,
            "expire" => Self::Expire,
            _ => return None,
        })
    }

    /// The purpose a client request with this method is forwarded for.
    pub fn of_method(method: &Method) -> Option<Self> {
        match *method {
            Method::POST => Some(Self::Post),
            Method::GET => Some(Self::Get),
            Method::DELETE => Some(Self::Delete),
            _ => None,
        }
    }

    /// The HTTP method a hop of this purpose is sent with.
    pub fn method(self) -> Method {
        match self {
            Self::Post => Method::POST,
            Self::Get => Method::GET,
            Self::Delete | Self::Revoke | Self::Purge | Self::Expire => Method::DELETE,
        }
    }
}

/// Why a hop header was refused (the request then gets 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    #[error("malformed hop header")]
    Malformed,
    #[error("the hop header is for another method")]
    WrongMethod,
    #[error("the hop header is outside its time window")]
    Stale,
    #[error(
        "the hop header does not authenticate (a key rotation puts a new key first only once \
         every instance accepts it)"
    )]
    Forged,
}

/// A verified hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub purpose: HopPurpose,
    pub client: ClientKey,
}

fn mac(key: &[u8; 32], purpose: HopPurpose, time: i64, client: u64, session: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(DOMAIN);
    mac.update(purpose.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(&time.to_be_bytes());
    mac.update(&client.to_be_bytes());
    mac.update(session.as_bytes());
    mac
}

impl ClusterKeys {
    /// The hop header for a request about `session` (empty without one) from
    /// `client`, at cluster time `now_ms`.
    pub fn sign_hop(
        &self,
        purpose: HopPurpose,
        session: &str,
        client: ClientKey,
        now_ms: i64,
    ) -> String {
        let tag = mac(&self.current().hop, purpose, now_ms, client.0, session)
            .finalize()
            .into_bytes();
        format!(
            "{VERSION}.{}.{now_ms}.{:016x}.{}",
            purpose.as_str(),
            client.0,
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks a hop header on a `method` request about `session`.
    pub fn verify_hop(
        &self,
        value: &str,
        method: &Method,
        session: &str,
        now_ms: i64,
        window: Duration,
    ) -> Result<Hop, HopError> {
        let mut parts = value.split('.');
        let (Some(VERSION), Some(purpose), Some(time), Some(client), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(HopError::Malformed);
        };
        let purpose = HopPurpose::parse(purpose).ok_or(HopError::Malformed)?;
        let time: i64 = time.parse().map_err(|_| HopError::Malformed)?;
        let client = u64::from_str_radix(client, 16).map_err(|_| HopError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| HopError::Malformed)?;
        if purpose.method() != method {
            return Err(HopError::WrongMethod);
        }
        let authentic = self.all().iter().any(|key| {
            mac(&key.hop, purpose, time, client, session)
                .verify_slice(&tag)
                .is_ok()
        });
        if !authentic {
            return Err(HopError::Forged);
        }
        let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        if now_ms.abs_diff(time) > window.unsigned_abs() {
            return Err(HopError::Stale);
        }
        Ok(Hop {
            purpose,
            client: ClientKey(client),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::clock::ClusterClock;

    const WINDOW: Duration = Duration::from_secs(30);

    fn keys(secrets: &[&[u8]]) -> ClusterKeys {
        ClusterKeys::from_secrets(secrets).expect("keys")
    }

    #[test]
    fn cluster_hops_verify_only_for_their_session_method_and_key() {
        let keys = keys(&[&[1; 32]]);
        let client = ClientKey(0x1234_5678_9abc_def0);
        let now = 1_700_000_000_000;
        let hop = keys.sign_hop(HopPurpose::Post, "session-a", client, now);
        assert_eq!(
            keys.verify_hop(&hop, &Method::POST, "session-a", now + 5, WINDOW),
            Ok(Hop {
                purpose: HopPurpose::Post,
                client
            })
        );
        assert_eq!(
            keys.verify_hop(&hop, &Method::POST, "session-b", now, WINDOW),
            Err(HopError::Forged),
            "another session"
        );
        assert_eq!(
            keys.verify_hop(&hop, &Method::DELETE, "session-a", now, WINDOW),
            Err(HopError::WrongMethod)
        );
        // Claiming another client, another purpose or another time breaks the MAC.
        for forged in [
            hop.replace("123456789abcdef0", "123456789abcdef1"),
            hop.replacen(".post.", ".get.", 1),
            hop.replacen(&now.to_string(), &(now + 1).to_string(), 1),
        ] {
            let method = if forged.contains(".get.") {
                Method::GET
            } else {
                Method::POST
            };
            assert_eq!(
                keys.verify_hop(&forged, &method, "session-a", now, WINDOW),
                Err(HopError::Forged),
                "{forged}"
            );
        }
        let foreign = ClusterKeys::from_secrets(&[[9u8; 32]]).expect("keys");
        assert_eq!(
            foreign.verify_hop(&hop, &Method::POST, "session-a", now, WINDOW),
            Err(HopError::Forged)
        );
        for junk in ["", "1", "1.post.x.y.z", "2.post.1.2.AAAA", "1.fly.1.2.AAAA"] {
            assert_eq!(
                keys.verify_hop(junk, &Method::POST, "session-a", now, WINDOW),
                Err(HopError::Malformed),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn cluster_hops_expire_outside_their_window() {
        let keys = keys(&[&[1; 32]]);
        let client = ClientKey(7);
        let now = 1_700_000_000_000;
        let hop = keys.sign_hop(HopPurpose::Get, "s", client, now);
        let late = now + 31_000;
        assert_eq!(
            keys.verify_hop(&hop, &Method::GET, "s", late, WINDOW),
            Err(HopError::Stale)
        );
        assert!(keys
            .verify_hop(&hop, &Method::GET, "s", now - 29_000, WINDOW)
            .is_ok());
    }

    #[test]
    fn cluster_hops_between_skewed_clocks_verify_in_cluster_time() {
        // Two hosts an hour apart, each corrected by its own Redis reading.
        let keys = keys(&[&[1; 32]]);
        let redis_now = 1_700_000_000_000;
        let (fast, slow) = (ClusterClock::default(), ClusterClock::default());
        fast.observe(redis_now + 3_600_000, redis_now, redis_now + 3_600_000);
        slow.observe(redis_now - 3_600_000, redis_now, redis_now - 3_600_000);
        let fast_local = redis_now + 3_600_000;
        let slow_local = redis_now - 3_600_000;
        let signed_at = fast_local + fast.offset_ms();
        let hop = keys.sign_hop(HopPurpose::Post, "s", ClientKey(1), signed_at);
        let checked_at = slow_local + slow.offset_ms() + 40;
        assert!(keys
            .verify_hop(&hop, &Method::POST, "s", checked_at, WINDOW)
            .is_ok());
        // Without the correction the hour apart would refuse it.
        assert_eq!(
            keys.verify_hop(&hop, &Method::POST, "s", slow_local, WINDOW),
            Err(HopError::Stale)
        );
    }

    #[test]
    fn cluster_hops_verify_under_either_key_while_rotating() {
        let old = keys(&[&[1; 32]]);
        let rotating = keys(&[&[2; 32], &[1; 32]]);
        let hop = old.sign_hop(HopPurpose::Revoke, "s", ClientKey(0), 10);
        assert!(rotating
            .verify_hop(&hop, &Method::DELETE, "s", 10, WINDOW)
            .is_ok());
        let hop = rotating.sign_hop(HopPurpose::Revoke, "s", ClientKey(0), 10);
        assert_eq!(
            old.verify_hop(&hop, &Method::DELETE, "s", 10, WINDOW),
            Err(HopError::Forged)
        );
    }
}
