//! Who a client is, for limits, eviction keys and the access log.
//!
//! `--client-key header:NAME` names the client by a request header (an API
//! key, a user id set by a gateway); `remote` by its IP address. Only a hash
//! of the value is kept, never the value itself: header values are often
//! credentials. The hash is keyed by a constant, not per process, so every
//! instance of a cluster and every run of an access log agree on it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

const DOMAIN: &[u8] = b"shadowcat client key v1\0";

/// Where the client key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKeySource {
    /// The peer's IP address (the port changes per connection).
    Remote,
    /// A request header; requests without it fall back to the IP address.
    Header(HeaderName),
}

impl FromStr for ClientKeySource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "remote" => Ok(Self::Remote),
            other => match other.strip_prefix("header:") {
                Some(name) if !name.is_empty() => HeaderName::from_str(name)
                    .map(Self::Header)
                    .map_err(|_| format!("`{name}` is not a valid header name")),
                _ => Err(format!(
                    "`{other}` is not a client key; use `remote` or `header:NAME` \
                     (e.g. header:x-api-key)"
                )),
            },
        }
    }
}

impl fmt::Display for ClientKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote => f.write_str("remote"),
            Self::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// The stable 64-bit hash of a client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(pub u64);

impl ClientKey {
    fn hash(kind: &[u8], value: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(DOMAIN)
            .chain_update(kind)
            .chain_update([0])
            .chain_update(value)
            .finalize();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        Self(u64::from_le_bytes(word))
    }

    /// The name a keyed (2026-07-28) session goes by in the table.
    pub fn session_name(self) -> String {
        format!("client-{:016x}", self.0)
    }
}

impl ClientKeySource {
    pub fn key(&self, headers: &HeaderMap, remote: IpAddr) -> ClientKey {
        if let Self::Header(name) = self {
            if let Some(value) = headers.get(name) {
                return ClientKey::hash(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        ClientKey::hash(b"ip", remote.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_client_keys_parse_and_hash_stably() {
        assert_eq!("remote".parse(), Ok(ClientKeySource::Remote));
        let source: ClientKeySource = "header:X-Api-Key".parse().expect("header source");
        assert_eq!(source.to_string(), "header:x-api-key");
        assert!("header:".parse::<ClientKeySource>().is_err());
        assert!("cookie"
            .parse::<ClientKeySource>()
            .unwrap_err()
            .contains("header:NAME"));

        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        let mut headers = HeaderMap::new();
        let by_ip = source.key(&headers, ip);
        assert_eq!(
            by_ip,
            ClientKeySource::Remote.key(&headers, ip),
            "no header: the address"
        );
        headers.insert("x-api-key", "secret-1".parse().expect("value"));
        let a = source.key(&headers, ip);
        assert_ne!(a, by_ip);
        assert_eq!(
            a,
            source.key(&headers, "10.9.9.9".parse().expect("ip")),
            "address ignored"
        );
        headers.insert("x-api-key", "secret-2".parse().expect("value"));
        assert_ne!(source.key(&headers, ip), a);
        // Fixed across processes: a constant, not a per-run seed.
        assert_eq!(a.session_name().len(), "client-".len() + 16);
        assert_eq!(
            a,
            source.key(
                &{
                    let mut h = HeaderMap::new();
                    h.insert("x-api-key", "secret-1".parse().expect("value"));
                    h
                },
                ip
            )
        );
    }
}
