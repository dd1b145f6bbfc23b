//! Signed, expiring stream and upload URLs.
//!
//! A stream URL names a song, the node that serves it and an expiry (Unix
//! seconds); the signature is HMAC-SHA256, under a key derived from the
//! cluster secret for stream URLs alone ([`crate::keys`]), over those three
//! values. Nodes check it in constant time and refuse a URL signed for
//! another node.
//!
//! An upload URL ([`UploadGrant`]) lets its holder put one file, as a new
//! song with a given id, on one node before an expiry and up to a size, with
//! the names the uploader asked for; the signature covers all of them, under
//! a key of its own and a different domain label, so that neither kind of
//! URL passes for the other.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ContentHash, Error, NodeId, SongId};

type HmacSha256 = Hmac<Sha256>;

/// The query of an upload URL `PUT {node}/upload/{song}?{grant}`: what the
/// gateway allowed, and its signature (`sig`, hex). Absent names are left to
/// the file's tags.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadGrant {
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Most bytes the body may have.
    pub max: u64,
    /// The file's name (its stem is the title when neither `title` nor a tag
    /// gives one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// HMAC-SHA256 (hex) over the song, the node and every field above.
    #[serde(default)]
    pub sig: String,
}

fn keyed(key: &[u8; 32]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("hmac takes keys of any length"),
    }
}

/// Signs and verifies stream URLs and upload grants, each with its own key
/// derived from the cluster secret ([`crate::keys`]).
#[derive(Clone)]
pub struct UrlSigner {
    stream_key: [u8; 32],
    upload_key: [u8; 32],
    art_key: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    /// A signer for the given cluster secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        let secret = secret.into();
        Self {
            stream_key: crate::keys::derive(&secret, crate::keys::Use::StreamUrl),
            upload_key: crate::keys::derive(&secret, crate::keys::Use::UploadGrant),
            art_key: crate::keys::derive(&secret, crate::keys::Use::ArtUrl),
        }
    }

    fn mac(&self, song: SongId, node: NodeId, expires: u64) -> HmacSha256 {
        let mut mac = keyed(&self.stream_key);
        mac.update(b"rondo-stream-v1\n");
        mac.update(song.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(node.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    fn upload_mac(&self, song: SongId, node: NodeId, grant: &UploadGrant) -> HmacSha256 {
        let mut mac = keyed(&self.upload_key);
        mac.update(b"rondo-upload-v1\n");
        for part in [
            song.to_string(),
            node.to_string(),
            grant.exp.to_string(),
            grant.max.to_string(),
        ] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        // Length-prefixed, so that no name can run into the next.
        for field in [&grant.name, &grant.title, &grant.artist, &grant.album] {
            match field {
                None => mac.update(b"-\n"),
                Some(v) => {
                    mac.update(format!("+{}:", v.len()).as_bytes());
                    mac.update(v.as_bytes());
                    mac.update(b"\n");
                }
            }
        }
        mac
    }

    /// Signs an upload grant for this song on this node (sets `sig`).
    pub fn sign_upload(&self, song: SongId, node: NodeId, grant: &mut UploadGrant) {
        grant.sig = hex::encode(self.upload_mac(song, node, grant).finalize().into_bytes());
    }

    /// Checks an upload grant's signature and expiry; `now` is the current
    /// Unix time in seconds.
    pub fn verify_upload(
        &self,
        song: SongId,
        node: NodeId,
        grant: &UploadGrant,
        now: u64,
    ) -> Result<(), Error> {
        let sig = hex::decode(&grant.sig).map_err(|_| Error::BadSignature)?;
        self.upload_mac(song, node, grant)
            .verify_slice(&sig)
            .map_err(|_| Error::BadSignature)?;
        if now >= grant.exp {
            return Err(Error::Expired {
                expired_at: grant.exp,
            });
        }
        Ok(())
    }

    /// The hex signature for this song, node and expiry.
    pub fn sign(&self, song: SongId, node: NodeId, expires: u64) -> String {
        hex::encode(self.mac(song, node, expires).finalize().into_bytes())
    }

    /// The query string `exp=…&sig=…` for a stream URL.
    pub fn query(&self, song: SongId, node: NodeId, expires: u64) -> String {
        format!("exp={expires}&sig={}", self.sign(song, node, expires))
    }

    fn art_mac(&self, art: &ContentHash, size: u32, expires: u64) -> HmacSha256 {
        let mut mac = keyed(&self.art_key);
        mac.update(b"rondo-art-v1\n");
        for part in [art.to_hex(), size.to_string(), expires.to_string()] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// The query string `size=…&exp=…&sig=…` of a URL of a picture at a
    /// size. Not bound to a node: any node serves any picture (fetching it
    /// from an owner once if it holds none).
    pub fn art_query(&self, art: &ContentHash, size: u32, expires: u64) -> String {
        let sig = hex::encode(self.art_mac(art, size, expires).finalize().into_bytes());
        format!("size={size}&exp={expires}&sig={sig}")
    }

    /// Checks a picture URL's signature and expiry.
    pub fn verify_art(
        &self,
        art: &ContentHash,
        size: u32,
        expires: u64,
        sig_hex: &str,
        now: u64,
    ) -> Result<(), Error> {
        check(self.art_mac(art, size, expires), sig_hex, expires, now)
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
        check(self.mac(song, node, expires), sig_hex, expires, now)
    }
}

/// A URL's signature against its MAC (in constant time), then its expiry.
fn check(mac: HmacSha256, sig_hex: &str, expires: u64, now: u64) -> Result<(), Error> {
    let sig = hex::decode(sig_hex).map_err(|_| Error::BadSignature)?;
    mac.verify_slice(&sig).map_err(|_| Error::BadSignature)?;
    if now >= expires {
        return Err(Error::Expired {
            expired_at: expires,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn art_urls_cover_the_picture_the_size_and_the_expiry() {
        let signer = UrlSigner::new(b"secret".to_vec());
        let art = ContentHash::of(b"a picture");
        let query = signer.art_query(&art, 300, 1000);
        let sig = query.rsplit("sig=").next().unwrap();
        assert_eq!(signer.verify_art(&art, 300, 1000, sig, 999), Ok(()));
        assert_eq!(
            signer.verify_art(&art, 600, 1000, sig, 999),
            Err(Error::BadSignature)
        );
        assert_eq!(
            signer.verify_art(&ContentHash::of(b"another"), 300, 1000, sig, 999),
            Err(Error::BadSignature)
        );
        assert_eq!(
            signer.verify_art(&art, 300, 1001, sig, 999),
            Err(Error::BadSignature)
        );
        assert!(matches!(
            signer.verify_art(&art, 300, 1000, sig, 1000),
            Err(Error::Expired { .. })
        ));
        // A stream signature is no picture signature.
        let song = SongId::new_random();
        let node = NodeId::new_random();
        let stream_sig = signer.sign(song, node, 1000);
        assert_eq!(
            signer.verify_art(&art, 300, 1000, &stream_sig, 999),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn upload_grants_cover_every_field() {
        let signer = UrlSigner::new(b"secret".to_vec());
        let (song, node) = (SongId::new_random(), NodeId::new_random());
        let mut grant = UploadGrant {
            exp: 1000,
            max: 5,
            name: Some("a.wav".into()),
            title: Some("T".into()),
            ..UploadGrant::default()
        };
        signer.sign_upload(song, node, &mut grant);
        assert_eq!(signer.verify_upload(song, node, &grant, 999), Ok(()));
        assert_eq!(
            signer.verify_upload(song, node, &grant, 1000),
            Err(Error::Expired { expired_at: 1000 })
        );
        let bad = |g: UploadGrant| signer.verify_upload(song, node, &g, 0);
        assert_eq!(
            bad(UploadGrant {
                max: 6,
                ..grant.clone()
            }),
            Err(Error::BadSignature)
        );
        assert_eq!(
            bad(UploadGrant {
                exp: 2000,
                ..grant.clone()
            }),
            Err(Error::BadSignature)
        );
        assert_eq!(
            bad(UploadGrant {
                title: None,
                ..grant.clone()
            }),
            Err(Error::BadSignature)
        );
        // A value cannot be moved from one field into the next.
        assert_eq!(
            bad(UploadGrant {
                title: None,
                artist: Some("T".into()),
                ..grant.clone()
            }),
            Err(Error::BadSignature)
        );
        let other = NodeId::new_random();
        assert_eq!(
            signer.verify_upload(song, other, &grant, 0),
            Err(Error::BadSignature)
        );
        let other_song = SongId::new_random();
        assert_eq!(
            signer.verify_upload(other_song, node, &grant, 0),
            Err(Error::BadSignature)
        );
        // A stream signature is no upload signature.
        let stream = UploadGrant {
            sig: signer.sign(song, node, 1000),
            ..grant.clone()
        };
        assert_eq!(bad(stream), Err(Error::BadSignature));
    }

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

    proptest::proptest! {
        /// A grant as a client may send it (any fields, any signature):
        /// no panic, and it verifies only if it is the one signed.
        #[test]
        fn arbitrary_grants_never_verify(
            exp in proptest::num::u64::ANY,
            max in proptest::num::u64::ANY,
            name in proptest::option::of("\\PC{0,40}"),
            title in proptest::option::of("\\PC{0,40}"),
            sig in "[0-9a-f]{0,80}|\\PC{0,80}",
        ) {
            let signer = UrlSigner::new(b"secret".to_vec());
            let (song, node) = (SongId(uuid::Uuid::from_u128(1)), NodeId(uuid::Uuid::from_u128(2)));
            let grant = UploadGrant { exp, max, name, title, sig, ..UploadGrant::default() };
            proptest::prop_assert!(signer.verify_upload(song, node, &grant, 0).is_err());
            let mut signed = UploadGrant { sig: String::new(), ..grant.clone() };
            signer.sign_upload(song, node, &mut signed);
            // The same fields signed verify (unless already expired).
            if exp > 0 {
                proptest::prop_assert_eq!(signer.verify_upload(song, node, &signed, 0), Ok(()));
            }
            // Any other field value does not.
            let other = UploadGrant { max: max.wrapping_add(1), ..signed.clone() };
            proptest::prop_assert!(signer.verify_upload(song, node, &other, 0).is_err());
        }
    }
}
