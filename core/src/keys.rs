//! Keys derived from the cluster secret, one per use: a session token, a
//! stream URL and an upload grant are each signed with a key of their own
//! (HKDF-SHA256, RFC 5869, with a domain label per use), so that no
//! signature of one kind is ever valid as another, and a key that leaks
//! from one use says nothing of the others.

use hkdf::Hkdf;
use sha2::Sha256;

/// The use of a derived key (its HKDF `info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    Session,
    StreamUrl,
    UploadGrant,
    ArtUrl,
    /// Sealing app passwords (`crate::sealing`).
    AppPassword,
}

impl Use {
    fn label(self) -> &'static [u8] {
        match self {
            Use::Session => b"rondo session token v1",
            Use::StreamUrl => b"rondo stream url v1",
            Use::UploadGrant => b"rondo upload grant v1",
            Use::ArtUrl => b"rondo art url v1",
            Use::AppPassword => b"rondo-app-password-v1",
        }
    }
}

/// The 32-byte key for `use_` derived from the cluster secret.
pub fn derive(secret: &[u8], use_: Use) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"rondo cluster secret"), secret);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32).
    if hk.expand(use_.label(), &mut key).is_err() {
        unreachable!("32 bytes is a valid HKDF-SHA256 output length");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_use_has_its_own_key() {
        let secret = b"a cluster secret";
        let keys = [
            Use::Session,
            Use::StreamUrl,
            Use::UploadGrant,
            Use::ArtUrl,
            Use::AppPassword,
        ]
        .map(|u| derive(secret, u));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Deterministic: every process of the cluster derives the same.
        assert_eq!(derive(secret, Use::Session), keys[0]);
        assert_ne!(derive(b"another secret", Use::Session), keys[0]);
    }
}
