//! Signed, expiring stream URLs.
//!
//! A stream URL names a song, the node that serves it and an expiry (Unix
//! seconds); the signature is HMAC-SHA256 under the cluster secret over those
//! three values. Nodes check it in constant time and refuse a URL signed for
//! another node.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, NodeId, SongId};

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies stream URLs with the cluster secret.
#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    /// A signer for the given cluster secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    fn mac(&self, song: SongId, node: NodeId, expires: u64) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("hmac takes keys of any length"),
        };
        mac.update(b"rondo-stream-v1\n");
        mac.update(song.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(node.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The hex signature for this song, node and expiry.
    pub fn sign(&self, song: SongId, node: NodeId, expires: u64) -> String {
        hex::encode(self.mac(song, node, expires).finalize().into_bytes())
    }

    /// The query string `exp=…&sig=…` for a stream URL.
    pub fn query(&self, song: SongId, node: NodeId, expires: u64) -> String {
        format!("exp={expires}&sig={}", self.sign(song, node, expires))
    }

    /// Checks a signature; `now` is the current Unix time in seconds.
    pub fn verify(
        &self,
        song: SongId,
        node: NodeId,
        expires: u64,
        sig_hex: &str,
        now: u64,
    ) -> Result<(), Error> {
        let sig = hex::decode(sig_hex).map_err(|_| Error::BadSignature)?;
        self.mac(song, node, expires)
            .verify_slice(&sig)
            .map_err(|_| Error::BadSignature)?;
        if now >= expires {
            return Err(Error::Expired {
                expired_at: expires,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let signer = UrlSigner::new(b"secret".to_vec());
        let (song, node) = (SongId::new_random(), NodeId::new_random());
        let sig = signer.sign(song, node, 1000);
        assert_eq!(signer.verify(song, node, 1000, &sig, 999), Ok(()));
        assert_eq!(
            signer.verify(song, node, 1000, &sig, 1000),
            Err(Error::Expired { expired_at: 1000 })
        );
        assert_eq!(
            signer.verify(song, node, 1001, &sig, 0),
            Err(Error::BadSignature)
        );
        let other = NodeId::new_random();
        assert_eq!(
            signer.verify(song, other, 1000, &sig, 0),
            Err(Error::BadSignature)
        );
        assert_eq!(
            signer.verify(song, node, 1000, "zz", 0),
            Err(Error::BadSignature)
        );
        let forged = UrlSigner::new(b"other".to_vec()).sign(song, node, 1000);
        assert_eq!(
            signer.verify(song, node, 1000, &forged, 0),
            Err(Error::BadSignature)
        );
    }
}
