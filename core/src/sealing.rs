//! Secrets kept sealed under the cluster secret: app passwords, which token
//! authentication needs in the clear, so they cannot be hashed. A gateway
//! seals a new one; the nodes keep only the sealed bytes; every gateway
//! opens them (they all hold the cluster secret). XChaCha20-Poly1305 with
//! a random 24-byte nonce, the key derived for this use alone
//! ([`crate::keys::Use::AppPassword`]), and associated data naming what it
//! belongs to (an app password's id and account), so a sealed secret copied
//! onto another record does not open.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Nonce bytes at the front of a sealed secret.
const NONCE: usize = 24;

/// Seals and opens app passwords.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(cluster_secret: &[u8]) -> Sealer {
        let key = crate::keys::derive(cluster_secret, crate::keys::Use::AppPassword);
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// `secret` sealed for the record `id`: nonce, then ciphertext and tag.
    pub fn seal(&self, id: &[u8], secret: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret,
            aad: id,
        };
        // Encryption fails only past 256 GiB of plaintext.
        let sealed = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    /// The secret sealed for `id`, or `None` if these bytes are not one
    /// (another cluster secret, another record, tampered).
    pub fn open(&self, id: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let payload = Payload { msg: body, aad: id };
        self.cipher.decrypt(XNonce::from_slice(nonce), payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_record_and_secret() {
        let s = Sealer::new(b"cluster secret");
        let sealed = s.seal(b"id-1", b"app password");
        assert!(
            !sealed.windows(12).any(|w| w == b"app password"),
            "not in the clear"
        );
        assert_eq!(
            s.open(b"id-1", &sealed).as_deref(),
            Some(&b"app password"[..])
        );
        assert_ne!(s.seal(b"id-1", b"app password"), sealed, "a nonce per seal");
        assert_eq!(s.open(b"id-2", &sealed), None, "bound to its record");
        assert_eq!(Sealer::new(b"another").open(b"id-1", &sealed), None);
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert_eq!(s.open(b"id-1", &bad), None);
        assert_eq!(s.open(b"id-1", b"short"), None);
    }
}
