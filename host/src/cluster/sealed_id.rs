//! Session ids that name their owner: any instance routes a request from the
//! `MCP-Session-Id` alone, and nobody without the cluster key can make or
//! alter one.
//!
//! Layout, then base64url without padding (visible ASCII, as the MCP
//! specification asks of session ids):
//!
//! ```text
//! version (1, in the clear) | nonce (24) | XChaCha20-Poly1305( boot (8) | random (16) | instance id ) | tag (16)
//! ```
//!
//! The version byte is authenticated as associated data. A 192-bit random
//! nonce needs no counter shared between instances and never repeats in
//! practice; the 128 random bits make each id unguessable even to someone
//! who knows the owner and its boot nonce.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;
use rand::RngCore;

use super::keys::ClusterKeys;
use super::InstanceId;

const VERSION: u8 = 1;
const NONCE: usize = 24;
const TAG: usize = 16;
const BOOT: usize = 8;
const RANDOM: usize = 16;
const AAD: &[u8] = b"shadowcat session id";
/// Longer values are not ids of ours; refusing them early bounds the work.
const MAX_ENCODED: usize = 256;

/// Who holds a session: an instance, in one of its lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub instance: InstanceId,
    /// Random per start of the instance: an id from an earlier life of the
    /// same instance id names a session that no longer exists.
    pub boot: u64,
}

impl Owner {
    /// `boot:instance`, the form stored in Redis records.
    pub fn to_record(&self) -> String {
        format!("{:016x}:{}", self.boot, self.instance)
    }

    pub fn from_record(text: &str) -> Option<Self> {
        let (boot, instance) = text.split_once(':')?;
        Some(Self {
            boot: u64::from_str_radix(boot, 16).ok()?,
            instance: InstanceId::parse(instance).ok()?,
        })
    }
}

/// Why an id does not open. Both mean 404 to the client; they differ in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenIdError {
    #[error("not a sealed session id")]
    Malformed,
    #[error("the session id does not authenticate under any cluster key")]
    Forged,
}

impl ClusterKeys {
    /// A fresh id for a session held by `owner`, sealed with the current key.
    pub fn seal(&self, owner: &Owner) -> String {
        let mut rng = rand::rng();
        let mut plain = Vec::with_capacity(BOOT + RANDOM + owner.instance.as_str().len());
        plain.extend_from_slice(&owner.boot.to_be_bytes());
        let mut random = [0u8; RANDOM];
        rng.fill_bytes(&mut random);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(owner.instance.as_str().as_bytes());
        let mut nonce = [0u8; NONCE];
        rng.fill_bytes(&mut nonce);
        let aad = [AAD, &[VERSION]].concat();
        let sealed = self
            .current()
            .seal
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message this short");
        let mut raw = Vec::with_capacity(1 + NONCE + sealed.len());
        raw.push(VERSION);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The owner named by a sealed id, if any cluster key opens it.
    pub fn open(&self, id: &str) -> Result<Owner, OpenIdError> {
        if id.len() > MAX_ENCODED {
            return Err(OpenIdError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| OpenIdError::Malformed)?;
        if raw.len() < 1 + NONCE + BOOT + RANDOM + 1 + TAG || raw[0] != VERSION {
            return Err(OpenIdError::Malformed);
        }
        let (nonce, sealed) = raw[1..].split_at(NONCE);
        let aad = [AAD, &[VERSION]].concat();
        let plain = self
            .all()
            .iter()
            .find_map(|key| {
                key.seal
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: sealed,
                            aad: &aad,
                        },
                    )
                    .ok()
            })
            .ok_or(OpenIdError::Forged)?;
        // Authentic plaintexts are ours and long enough; checked all the
        // same, so no id can make this panic.
        let (Some(boot), Some(instance)) = (plain.get(..BOOT), plain.get(BOOT + RANDOM..)) else {
            return Err(OpenIdError::Malformed);
        };
        let boot: [u8; BOOT] = boot.try_into().map_err(|_| OpenIdError::Malformed)?;
        let instance = std::str::from_utf8(instance).map_err(|_| OpenIdError::Forged)?;
        Ok(Owner {
            instance: InstanceId::parse(instance).map_err(|_| OpenIdError::Forged)?,
            boot: u64::from_be_bytes(boot),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secrets: &[&[u8]]) -> ClusterKeys {
        ClusterKeys::from_secrets(secrets).expect("keys")
    }

    fn owner() -> Owner {
        Owner {
            instance: InstanceId::parse("node-1").expect("id"),
            boot: 0xdead_beef_0123_4567,
        }
    }

    #[test]
    fn cluster_sealed_ids_open_to_their_owner_and_are_visible_ascii() {
        let keys = keys(&[&[1; 32]]);
        let a = keys.seal(&owner());
        let b = keys.seal(&owner());
        assert_ne!(a, b, "fresh random bits every time");
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)), "{a}");
        assert!(a.len() < 128, "{} characters", a.len());
        assert_eq!(keys.open(&a), Ok(owner()));
        assert_eq!(keys.open(&b), Ok(owner()));
    }

    #[test]
    fn cluster_sealed_ids_refuse_tampering_foreign_keys_and_junk() {
        let keys_a = keys(&[&[1; 32]]);
        let id = keys_a.seal(&owner());
        // Every single-character change is caught (or is no longer base64).
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for at in 0..id.len() {
            let mut bytes = id.clone().into_bytes();
            let original = bytes[at];
            bytes[at] = *alphabet.iter().find(|&&c| c != original).expect("another");
            let tampered = String::from_utf8(bytes).expect("ascii");
            assert!(keys_a.open(&tampered).is_err(), "position {at} unnoticed");
        }
        let other = keys(&[&[2; 32]]);
        assert_eq!(other.open(&id), Err(OpenIdError::Forged));
        for junk in [
            "",
            "abc",
            "0123456789abcdef0123456789abcdef",
            "!!!",
            &"A".repeat(400),
        ] {
            assert!(keys_a.open(junk).is_err(), "{junk:?}");
        }
        // Truncated: malformed or forged, never an owner.
        assert!(keys_a.open(&id[..id.len() - 2]).is_err());
    }

    #[test]
    fn cluster_key_rotation_seals_with_the_first_and_opens_with_both() {
        let old = keys(&[&[1; 32]]);
        let rotating = keys(&[&[2; 32], &[1; 32]]);
        let new_only = keys(&[&[2; 32]]);
        let from_old = old.seal(&owner());
        let from_rotating = rotating.seal(&owner());
        assert_eq!(rotating.open(&from_old), Ok(owner()), "old ids still open");
        assert_eq!(rotating.open(&from_rotating), Ok(owner()));
        assert_eq!(
            new_only.open(&from_rotating),
            Ok(owner()),
            "sealed with the first"
        );
        assert_eq!(old.open(&from_rotating), Err(OpenIdError::Forged));
        assert_eq!(new_only.open(&from_old), Err(OpenIdError::Forged));
    }

    #[test]
    fn cluster_owner_records_round_trip() {
        let record = owner().to_record();
        assert_eq!(Owner::from_record(&record), Some(owner()));
        assert_eq!(Owner::from_record("zz:node"), None);
        assert_eq!(Owner::from_record("nonsense"), None);
    }
}
