//! Who is calling: the three ways Subsonic clients authenticate.
//!
//! - `u` + `p`: the account's password (plain or `enc:` + hex), or one of
//!   its app passwords. An account password is checked by a storage node
//!   (argon2id, tens of milliseconds); a success is remembered for
//!   [`CACHE_TTL`] under a keyed hash of name and password, so a client that
//!   sends its password with each of a thousand requests costs one check.
//!   The account's version is remembered too: a password change ends the
//!   remembered success at once.
//! - `u` + `t` + `s`: `t = md5(password + s)`. Argon2 hashes cannot answer
//!   that, so only app passwords work here (they are kept encrypted under
//!   the cluster secret, which every gateway holds); an account without
//!   one gets error 41, and clients such as DSub then send `p`.
//! - `apiKey` (OpenSubsonic): an app password on its own. With `u`, `p`,
//!   `t` or `s` beside it: error 43.
//!
//! Failures are rate-limited like logins (per address, per account name);
//! remembered successes are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rondo_core::UserId;
use rondo_core::session::Session;

use super::Call;
use super::response::{Code, El, Failure};
use crate::AppState;
use crate::accounts::UserRec;

/// How long a checked account password is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// The most remembered checks (then the oldest half is dropped).
const CACHE_MAX: usize = 10_000;
/// The longest password or token considered.
const MAX_SECRET: usize = 1024;

/// The authenticated account of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: UserRec,
    /// A short session for this request, signed for the nodes when the
    /// request orders a change (a playlist edit).
    pub session: Session,
    /// Authenticated by an API key (`tokenInfo` answers for it).
    pub by_api_key: bool,
}

impl Caller {
    fn new(user: UserRec, by_api_key: bool) -> Caller {
        let now = crate::clock::unix_now();
        Caller {
            session: Session {
                user: user.id,
                role: user.role,
                issued_ms: crate::clock::unix_now_ms(),
                expires: now + 300,
                id: *uuid::Uuid::new_v4().as_bytes(),
            },
            user,
            by_api_key,
        }
    }
}

/// Account passwords checked lately.
#[derive(Debug)]
pub struct PasswordCache {
    key: [u8; 32],
    seen: std::sync::Mutex<HashMap<blake3::Hash, (UserId, u64, Instant)>>,
}

impl Default for PasswordCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        PasswordCache {
            key,
            seen: Default::default(),
        }
    }
}

impl PasswordCache {
    fn slot(&self, name: &str, password: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(rondo_core::names::login_key(name).as_bytes());
        h.update(&[0]);
        h.update(password.as_bytes());
        h.finalize()
    }

    fn get(&self, slot: &blake3::Hash) -> Option<(UserId, u64)> {
        let seen = self.seen.lock().ok()?;
        let (id, version, at) = seen.get(slot)?;
        (at.elapsed() < CACHE_TTL).then_some((*id, *version))
    }

    fn put(&self, slot: blake3::Hash, id: UserId, version: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= CACHE_MAX {
                seen.retain(|_, (_, _, at)| at.elapsed() < CACHE_TTL / 2);
                if seen.len() >= CACHE_MAX {
                    seen.clear();
                }
            }
            seen.insert(slot, (id, version, Instant::now()));
        }
    }
}

fn wrong() -> Failure {
    Failure::new(Code::WrongCredentials, "Wrong username or password")
}

/// The password of `p`: plain, or `enc:` and the hex of its bytes.
fn decode_password(p: &str) -> Result<String, Failure> {
    match p.strip_prefix("enc:") {
        Some(hex) => hex::decode(hex)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(wrong),
        None => Ok(p.to_string()),
    }
}

/// The caller of a request, or the Subsonic error that refuses it.
pub async fn authenticate(
    state: &AppState,
    params: &super::Params,
    ip: Option<IpAddr>,
) -> Result<Caller, Failure> {
    let snap = state.cluster.snapshot();
    let accounts = &snap.accounts;
    let has = |k: &str| params.get(k).is_some();
    if let Some(key) = params.get("apiKey") {
        if ["u", "p", "t", "s"].iter().any(|k| has(k)) {
            return Err(Failure::new(
                Code::ConflictingAuth,
                "Multiple conflicting authentication mechanisms provided: send apiKey alone",
            ));
        }
        return match accounts.api_key_user(key) {
            Some(user) => Ok(Caller::new(user.clone(), true)),
            None => {
                limited(state, ip, None)?;
                Err(Failure::new(Code::InvalidApiKey, "Invalid API key"))
            }
        };
    }
    let name = params.need("u")?;
    let (p, t, s) = (params.get("p"), params.get("t"), params.get("s"));
    if p.is_some() && (t.is_some() || s.is_some()) {
        return Err(Failure::new(
            Code::ConflictingAuth,
            "Multiple conflicting authentication mechanisms provided: p with t and s",
        ));
    }
    if name.len() > MAX_SECRET {
        return Err(wrong());
    }
    match (p, t, s) {
        (Some(p), _, _) => {
            let password = decode_password(p)?;
            if password.len() > MAX_SECRET {
                return Err(wrong());
            }
            let user = accounts.user_by_name(name).cloned();
            // An app password of the account.
            if let Some(u) = &user
                && accounts.app_password_matches(u.id, &password)
            {
                return Ok(Caller::new(u.clone(), false));
            }
            let slot = state.subsonic_passwords.slot(name, &password);
            if let (Some(u), Some((id, version))) = (&user, state.subsonic_passwords.get(&slot))
                && u.id == id
                && u.version <= version
            {
                return Ok(Caller::new(u.clone(), false));
            }
            limited(state, ip, Some(name))?;
            let checked = {
                let _turn = state.limits.hashing_turn().await.map_err(Failure::from)?;
                state
                    .cluster
                    .check_password(name.to_string(), password)
                    .await
                    .map_err(Failure::from)?
            };
            let Some((id, version)) = checked else {
                return Err(wrong());
            };
            let snap = state.cluster.snapshot();
            match snap.accounts.user(id) {
                // A node that has not applied the account's last change
                // (a new password) may not vouch for the old one.
                Some(u) if u.version <= version => {
                    state.subsonic_passwords.put(slot, id, version);
                    Ok(Caller::new(u.clone(), false))
                }
                _ => Err(wrong()),
            }
        }
        (None, Some(t), Some(s)) => {
            if t.len() != 32 || s.is_empty() || s.len() > MAX_SECRET {
                return Err(wrong());
            }
            let Some(user) = accounts.user_by_name(name) else {
                limited(state, ip, Some(name))?;
                return Err(wrong());
            };
            if !accounts.has_app_passwords(user.id) {
                return Err(Failure::new(
                    Code::TokenAuthUnsupported,
                    "Token authentication needs an app password: create one in Rondo's \
                     account page (or `rondo user app-password`), or send the password (p)",
                ));
            }
            if accounts.app_password_token_matches(user.id, t, s) {
                Ok(Caller::new(user.clone(), false))
            } else {
                limited(state, ip, Some(name))?;
                Err(wrong())
            }
        }
        (None, _, _) => Err(Failure::missing("p, t and s, or apiKey")),
    }
}

/// One failed or uncached attempt against the rate limits.
fn limited(state: &AppState, ip: Option<IpAddr>, name: Option<&str>) -> Result<(), Failure> {
    let refuse = |e: crate::Error| Failure::new(Code::Generic, e.to_string());
    state.limits.attempt_from(ip).map_err(refuse)?;
    if let Some(name) = name {
        state.limits.guess_at(name).map_err(refuse)?;
    }
    Ok(())
}

/// `tokenInfo`: whom the API key belongs to.
pub fn token_info(call: &Call<'_>) -> Result<super::Reply, Failure> {
    let caller = call.caller()?;
    Ok(El::new("tokenInfo")
        .attr("username", caller.user.name.as_str())
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_passwords_decode_and_bad_hex_is_a_wrong_password() {
        assert_eq!(decode_password("enc:736573616d65").unwrap(), "sesame");
        assert_eq!(decode_password("sesame").unwrap(), "sesame");
        assert_eq!(
            decode_password("enc:zz").unwrap_err().code,
            Code::WrongCredentials
        );
    }

    #[test]
    fn the_cache_is_keyed_by_name_folding_and_password() {
        let c = PasswordCache::default();
        let id = UserId(uuid::Uuid::from_u128(7));
        let slot = c.slot("Alice", "pw");
        assert!(c.get(&slot).is_none());
        c.put(slot, id, 3);
        assert_eq!(c.get(&c.slot("ALICE", "pw")), Some((id, 3)));
        assert!(c.get(&c.slot("alice", "pw2")).is_none());
        assert_ne!(
            PasswordCache::default().slot("alice", "pw"),
            slot,
            "keyed per process"
        );
    }
}
