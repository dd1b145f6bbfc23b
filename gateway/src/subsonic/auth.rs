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
//! remembered successes are not counted. An address or a name over its
//! limit is refused for a while before any secret is compared, so a right
//! guess then fails too.

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

/// How long an address or a name that went over its rate limit is refused
/// outright, even with the right secret.
const BLOCKED_FOR: Duration = Duration::from_secs(15);

/// Account passwords checked lately, and who is refused for failing too
/// often.
#[derive(Debug)]
pub struct PasswordCache {
    key: [u8; 32],
    seen: std::sync::Mutex<HashMap<blake3::Hash, (UserId, u64, Instant)>>,
    /// Addresses ("ip:…") and folded names ("name:…") refused until then.
    blocked: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Default for PasswordCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        PasswordCache {
            key,
            seen: Default::default(),
            blocked: Default::default(),
        }
    }
}

impl PasswordCache {
    fn block(&self, key: String) {
        if let Ok(mut b) = self.blocked.lock() {
            let now = Instant::now();
            b.retain(|_, until| *until > now);
            b.insert(key, now + BLOCKED_FOR);
        }
    }

    fn is_blocked(&self, key: &str) -> bool {
        self.blocked
            .lock()
            .map(|b| b.get(key).is_some_and(|until| *until > Instant::now()))
            .unwrap_or(false)
    }

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
    has_authorization_header: bool,
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
        not_blocked(state, ip, None)?;
        return match accounts.api_key_user(key) {
            Some(user) => Ok(Caller::new(user.clone(), true)),
            None => {
                limited(state, ip, None)?;
                Err(Failure::new(Code::InvalidApiKey, "Invalid API key"))
            }
        };
    }
    // Only an Authorization header (HTTP Basic, a bearer token): a
    // mechanism Subsonic does not define. Beside query credentials (DSub
    // sends both) it is ignored.
    if params.get("u").is_none() && has_authorization_header {
        return Err(Failure::new(
            Code::AuthMechanismUnsupported,
            "Provided authentication mechanism not supported: send u with p or t and s, or apiKey",
        ));
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
    not_blocked(state, ip, Some(name))?;
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
            // An unknown name answers as an account without app
            // passwords does: token authentication tells no names apart.
            let user = accounts
                .user_by_name(name)
                .filter(|u| accounts.has_app_passwords(u.id));
            let Some(user) = user else {
                limited(state, ip, None)?;
                return Err(Failure::new(
                    Code::TokenAuthUnsupported,
                    "Token authentication needs an app password: create one in Rondo's \
                     account page (or `rondo user app-password`), or send the password (p)",
                ));
            };
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

fn ip_key(ip: Option<IpAddr>) -> Option<String> {
    ip.map(|ip| format!("ip:{ip}"))
}

fn name_key(name: &str) -> String {
    format!("name:{}", rondo_core::names::login_key(name))
}

fn too_many() -> Failure {
    Failure::new(
        Code::Generic,
        "too many failed attempts; try again in a few seconds",
    )
}

/// Refuses an address or name that went over its limit lately, before
/// any secret is compared (a right guess then is refused too).
fn not_blocked(state: &AppState, ip: Option<IpAddr>, name: Option<&str>) -> Result<(), Failure> {
    let cache = &state.subsonic_passwords;
    if ip_key(ip).is_some_and(|k| cache.is_blocked(&k))
        || name.is_some_and(|n| cache.is_blocked(&name_key(n)))
    {
        return Err(too_many());
    }
    Ok(())
}

/// One failed or uncached attempt against the rate limits (the login
/// limits); over them, the address or name is refused for a while.
fn limited(state: &AppState, ip: Option<IpAddr>, name: Option<&str>) -> Result<(), Failure> {
    let cache = &state.subsonic_passwords;
    if state.limits.attempt_from(ip).is_err() {
        if let Some(k) = ip_key(ip) {
            cache.block(k);
        }
        return Err(too_many());
    }
    if let Some(name) = name
        && state.limits.guess_at(name).is_err()
    {
        cache.block(name_key(name));
        return Err(too_many());
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
