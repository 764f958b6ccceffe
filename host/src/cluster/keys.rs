//! The cluster's shared secret (`--session-key-file`), and the keys derived
//! from it: one seals session ids, one signs hops.
//!
//! Up to two secrets: the first seals and signs, every one opens and
//! verifies, so a key is rotated by adding the new one second on every
//! instance, then swapping the order, then dropping the old one. Putting the
//! new key first before every instance has it would have those without it
//! refuse the ids and hops it makes.

use std::path::{Path, PathBuf};

use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The shortest secret accepted: 256 bits.
pub const MIN_SECRET: usize = 32;
/// A first key to seal with and one older key still accepted.
pub const MAX_KEYS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the session key file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the session key in {} has {len} bytes; at least {MIN_SECRET} random bytes are needed \
         (e.g. `head -c 32 /dev/urandom > {}`)",
        path.display(),
        path.display()
    )]
    TooShort { path: PathBuf, len: usize },
    #[error("give --session-key-file once or twice (the first seals, both open), not {0} times")]
    Count(usize),
}

/// One secret's derived keys.
pub(crate) struct KeyPair {
    pub(crate) seal: XChaCha20Poly1305,
    pub(crate) hop: [u8; 32],
}

/// The keys of a cluster, the sealing one first.
pub struct ClusterKeys {
    keys: Vec<KeyPair>,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKeys({} key(s))", self.keys.len())
    }
}

/// A pseudo-random function of the secret, one per purpose, so the sealing
/// key and the hop key never coincide.
fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

impl ClusterKeys {
    /// Keys from secrets, the sealing one first.
    pub fn from_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Self, KeyError> {
        if secrets.is_empty() || secrets.len() > MAX_KEYS {
            return Err(KeyError::Count(secrets.len()));
        }
        let keys = secrets
            .iter()
            .map(|secret| {
                let secret = secret.as_ref();
                let seal = derive(secret, b"shadowcat session id key v1");
                KeyPair {
                    seal: XChaCha20Poly1305::new(&seal.into()),
                    hop: derive(secret, b"shadowcat hop key v1"),
                }
            })
            .collect();
        Ok(Self { keys })
    }

    /// Reads the key files. Trailing whitespace is ignored, so a key written
    /// as text with a final newline reads the same everywhere.
    pub fn read_files(paths: &[impl AsRef<Path>]) -> Result<Self, KeyError> {
        if paths.is_empty() || paths.len() > MAX_KEYS {
            return Err(KeyError::Count(paths.len()));
        }
        let mut secrets = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let mut bytes = std::fs::read(path).map_err(|error| KeyError::Read {
                path: path.to_owned(),
                error,
            })?;
            while bytes.last().is_some_and(u8::is_ascii_whitespace) {
                bytes.pop();
            }
            if bytes.len() < MIN_SECRET {
                return Err(KeyError::TooShort {
                    path: path.to_owned(),
                    len: bytes.len(),
                });
            }
            secrets.push(bytes);
        }
        Self::from_secrets(&secrets)
    }

    /// The key new ids are sealed and hops signed with.
    pub(crate) fn current(&self) -> &KeyPair {
        &self.keys[0]
    }

    /// Every key that opens ids and verifies hops, the current one first.
    pub(crate) fn all(&self) -> &[KeyPair] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_key_files_need_32_bytes_and_at_most_two_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let short = dir.path().join("short");
        std::fs::write(&short, "too short\n").expect("write");
        let err = ClusterKeys::read_files(&[&short]).expect_err("short key");
        assert!(err.to_string().contains("at least 32"), "{err}");
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(32))).expect("write");
        assert!(ClusterKeys::read_files(&[&good]).is_ok());
        assert!(ClusterKeys::read_files(&[&good, &good]).is_ok());
        let err = ClusterKeys::read_files(&[&good, &good, &good]).expect_err("three keys");
        assert!(err.to_string().contains("not 3 times"), "{err}");
        let missing = dir.path().join("missing");
        assert!(matches!(
            ClusterKeys::read_files(&[&missing]),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn cluster_derived_keys_differ_by_purpose() {
        let secret = [7u8; 32];
        assert_ne!(derive(&secret, b"a"), derive(&secret, b"b"));
        assert_eq!(derive(&secret, b"a"), derive(&secret, b"a"));
    }
}
