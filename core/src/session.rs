//! Session tokens: who a request acts for, signed by the gateways.
//!
//! A token is `rs2.<user id>.<role>.<issued>.<expiry>.<session id>.<signature>`:
//! when it was issued in Unix milliseconds (a password change refuses the
//! sessions issued before it), the expiry in Unix seconds, a random session
//! id (what a logout revokes), the
//! signature HMAC-SHA256 under the cluster secret (with its own domain
//! label, so a stream signature is never a session signature).
//! Every gateway shares the secret, so a session opened on one replica is
//! valid on the others, across a failover of the floating address. A JWT
//! library would add RSA and elliptic-curve code for one HMAC.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::UserId;

type HmacSha256 = Hmac<Sha256>;

/// A role, as a session names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Listener,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Listener => "listener",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "listener" => Some(Role::Listener),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A verified session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: UserId,
    pub role: Role,
    /// When it was issued (Unix milliseconds, the issuer's clock).
    pub issued_ms: u64,
    pub expires: u64,
    /// Random; names the session for a logout.
    pub id: [u8; 16],
}

impl Session {
    /// A one-minute operator session: the nil account with the admin role,
    /// which a gateway signs for a request made with the admin token (a
    /// node takes the nil account as the operator). `now_ms`: Unix
    /// milliseconds.
    pub fn operator(now_ms: u64, id: [u8; 16]) -> Session {
        Session {
            user: crate::UserId(uuid::Uuid::nil()),
            role: Role::Admin,
            issued_ms: now_ms,
            expires: (now_ms / 1000).saturating_add(60),
            id,
        }
    }

    /// The session id as text (what revocations store).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    BadSignature,
    Expired,
}

/// Signs and verifies session tokens with the cluster secret.
#[derive(Clone)]
pub struct SessionSigner {
    /// The session key derived from the cluster secret ([`crate::keys`]).
    key: [u8; 32],
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSigner(..)")
    }
}

impl SessionSigner {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            key: crate::keys::derive(&secret.into(), crate::keys::Use::Session),
        }
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("hmac takes keys of any length"),
        };
        mac.update(b"rondo-session-v2\n");
        mac.update(body.as_bytes());
        mac
    }

    /// A token for this session.
    pub fn sign(&self, s: &Session) -> String {
        let body = format!(
            "rs2.{}.{}.{}.{}.{}",
            s.user,
            s.role.as_str(),
            s.issued_ms,
            s.expires,
            s.id_hex()
        );
        let sig = hex::encode(self.mac(&body).finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Checks a token; `now` is the current Unix time in seconds.
    pub fn verify(&self, token: &str, now: u64) -> Result<Session, Refused> {
        let (body, sig) = token.rsplit_once('.').ok_or(Refused::Malformed)?;
        let mut parts = body.split('.');
        let (Some("rs2"), Some(user), Some(role), Some(issued), Some(expires), Some(id), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refused::Malformed);
        };
        // Lower-case hex only, as `sign` writes it: one token, one spelling
        // (an upper-cased signature would otherwise verify too).
        if !sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Refused::Malformed);
        }
        let sig = hex::decode(sig).map_err(|_| Refused::Malformed)?;
        self.mac(body)
            .verify_slice(&sig)
            .map_err(|_| Refused::BadSignature)?;
        let session = Session {
            user: user.parse().map_err(|_| Refused::Malformed)?,
            role: Role::parse(role).ok_or(Refused::Malformed)?,
            issued_ms: issued.parse().map_err(|_| Refused::Malformed)?,
            expires: expires.parse().map_err(|_| Refused::Malformed)?,
            id: hex::decode(id)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(Refused::Malformed)?,
        };
        if session.expires <= now {
            return Err(Refused::Expired);
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: &str, now: u64, expect: Result<Role, Refused>) {
        let got = SessionSigner::new(b"secret".to_vec())
            .verify(token, now)
            .map(|s| s.role);
        assert_eq!(got, expect, "{token}");
    }

    #[test]
    fn signs_verifies_and_refuses() {
        let signer = SessionSigner::new(b"secret".to_vec());
        let s = Session {
            user: UserId(uuid::Uuid::from_u128(7)),
            role: Role::Admin,
            issued_ms: 1,
            expires: 1000,
            id: [7; 16],
        };
        let token = signer.sign(&s);
        check(&token, 999, Ok(Role::Admin));
        check(&token, 1000, Err(Refused::Expired));
        check(
            &token.replace("admin", "listener"),
            10,
            Err(Refused::BadSignature),
        );
        check("rs2.x.admin.1.5.07.00", 1, Err(Refused::BadSignature));
        check("nonsense", 1, Err(Refused::Malformed));
        check("", 1, Err(Refused::Malformed));
        let other = SessionSigner::new(b"other".to_vec()).sign(&s);
        check(&other, 10, Err(Refused::BadSignature));
        assert_eq!(signer.verify(&token, 5), Ok(s));
    }

    proptest::proptest! {
        /// Any string: no panic; only a token this signer made verifies.
        #[test]
        fn arbitrary_tokens_never_verify(token in "\\PC{0,200}") {
            let signer = SessionSigner::new(b"secret".to_vec());
            proptest::prop_assert!(signer.verify(&token, 1).is_err());
        }

        /// A signed token with any one character changed is refused.
        #[test]
        fn a_changed_token_is_refused(at in 0usize..200, with in proptest::char::any()) {
            let signer = SessionSigner::new(b"secret".to_vec());
            let token = signer.sign(&Session {
                user: UserId(uuid::Uuid::from_u128(9)),
                role: Role::Listener,
                issued_ms: 5,
                expires: 1000,
                id: [1; 16],
            });
            let mut chars: Vec<char> = token.chars().collect();
            let at = at % chars.len();
            proptest::prop_assume!(chars[at] != with);
            chars[at] = with;
            let changed: String = chars.into_iter().collect();
            proptest::prop_assert!(signer.verify(&changed, 1).is_err());
        }
    }
}
