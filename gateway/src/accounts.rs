//! Accounts, sessions and playlists.
//!
//! Accounts and playlists are catalog updates like songs: the gateway
//! proposes them to a storage node (gRPC `Propose`), the ring orders them,
//! every node applies them with the same checks (name free, owner acting,
//! songs present) and announces the result on its change stream, from which
//! every gateway builds [`Accounts`]. A record carries the ring sequence of
//! its last change (`version`), so the newest wins whichever node told it
//! first.
//!
//! Passwords are hashed with argon2id here (on the blocking pool: it costs
//! tens of milliseconds by design) and checked by a storage node
//! (`CheckPassword`): the hashes stay on the nodes, the change stream
//! carries accounts without them. Sessions are signed tokens
//! ([`rondo_core::session`]) that every gateway can check.

use std::collections::HashMap;
use std::sync::Arc;

use rondo_core::session::Role;
use rondo_core::{PlaylistId, SongId, UserId};
use rondo_proto::storage::v1 as pb;

use crate::error::{Error, Result};

/// An account as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRec {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub created_at_ms: u64,
    pub version: u64,
    /// Sessions issued before this (Unix milliseconds) are refused.
    pub sessions_after_ms: u64,
}

/// A playlist as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaylistRec {
    pub id: PlaylistId,
    pub owner: UserId,
    pub name: String,
    pub songs: Vec<SongId>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub version: u64,
}

/// Every account and playlist.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    users: HashMap<UserId, UserRec>,
    by_name: HashMap<String, UserId>,
    /// By confusable skeleton (`rondo_core::names::account_key`): whether
    /// a new name looks like a taken one.
    by_key: HashMap<String, UserId>,
    playlists: HashMap<PlaylistId, PlaylistRec>,
    /// Deleted playlists and the version that deleted them.
    deleted: HashMap<PlaylistId, u64>,
    /// Deleted accounts and the version that deleted them: an older
    /// record of one, from a node that reports later, does not bring it
    /// back.
    deleted_users: HashMap<UserId, u64>,
    /// Sessions ended by logout, with their expiry (Unix seconds).
    revoked: HashMap<String, u64>,
    /// App passwords by account (decrypted: token authentication needs
    /// the secret itself).
    app_passwords: HashMap<UserId, Vec<AppPasswordRec>>,
    /// App passwords by the hash of their secret (API keys).
    by_secret: HashMap<blake3::Hash, (UserId, AppPasswordId)>,
    /// Revoked app passwords and the version that revoked them.
    revoked_app_passwords: HashMap<AppPasswordId, u64>,
    /// Each account's marks (stars, ratings, plays) by item; shared per
    /// account, so that a snapshot's copy costs a pointer per account.
    marks: HashMap<UserId, Arc<HashMap<uuid::Uuid, Marks>>>,
    /// Each account's saved play queue.
    queues: HashMap<UserId, PlayQueueRec>,
}

/// What an account marked on one song, album or artist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// 1 a song, 2 an album, 3 an artist.
    pub kind: u32,
    /// When it was starred (Unix milliseconds).
    pub starred_at_ms: Option<u64>,
    /// 1 to 5.
    pub rating: Option<u32>,
    pub play_count: u64,
    pub last_played_ms: Option<u64>,
    pub version: u64,
}

/// An account's saved play queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlayQueueRec {
    pub songs: Vec<SongId>,
    pub current: Option<SongId>,
    pub position_ms: u64,
    pub changed_ms: u64,
    pub changed_by: String,
    pub version: u64,
}

/// An app password's id.
pub type AppPasswordId = uuid::Uuid;

/// What an app password's secret is sealed to: its record and account, so
/// sealed bytes copied onto another record or account do not open.
pub fn app_password_aad(id: AppPasswordId, user: UserId) -> [u8; 32] {
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(id.as_bytes());
    aad[16..].copy_from_slice(user.0.as_bytes());
    aad
}

/// An app password (an API key): a secret for one app, checked by
/// Subsonic clients' password, token and API key authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct AppPasswordRec {
    pub id: AppPasswordId,
    pub name: String,
    pub secret: String,
    pub created_at_ms: u64,
    pub version: u64,
}

impl std::fmt::Debug for AppPasswordRec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppPasswordRec")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// Applies an account from a change stream (newest version wins).
    pub fn apply_user(&mut self, u: pb::User) -> Result<()> {
        let id: UserId = u.id.parse()?;
        if self
            .users
            .get(&id)
            .is_some_and(|old| old.version >= u.version)
            || self.deleted_users.get(&id).is_some_and(|v| *v >= u.version)
        {
            return Ok(());
        }
        if u.deleted {
            self.deleted_users.insert(id, u.version);
            if let Some(old) = self.users.remove(&id) {
                let name = rondo_core::names::login_key(&old.name);
                if self.by_name.get(&name) == Some(&id) {
                    self.by_name.remove(&name);
                }
                let key = rondo_core::names::account_key(&old.name);
                if self.by_key.get(&key) == Some(&id) {
                    self.by_key.remove(&key);
                }
            }
            self.playlists.retain(|_, p| p.owner != id);
            self.marks.remove(&id);
            self.queues.remove(&id);
            for p in self.app_passwords.remove(&id).unwrap_or_default() {
                self.by_secret.remove(&blake3::hash(p.secret.as_bytes()));
            }
            return Ok(());
        }
        let role = Role::parse(&u.role).unwrap_or(Role::Listener);
        self.by_name
            .insert(rondo_core::names::login_key(&u.name), id);
        self.by_key
            .entry(rondo_core::names::account_key(&u.name))
            .or_insert(id);
        self.users.insert(
            id,
            UserRec {
                id,
                name: u.name,
                role,
                created_at_ms: u.created_at_ms,
                version: u.version,
                sessions_after_ms: u.sessions_after_ms,
            },
        );
        Ok(())
    }

    /// Applies a playlist (or its tombstone) from a change stream.
    pub fn apply_playlist(&mut self, p: pb::Playlist) -> Result<()> {
        let id: PlaylistId = p.id.parse()?;
        let newest = self
            .playlists
            .get(&id)
            .map(|old| old.version)
            .max(self.deleted.get(&id).copied())
            .unwrap_or(0);
        if p.version <= newest && newest > 0 {
            return Ok(());
        }
        if p.deleted {
            self.playlists.remove(&id);
            self.deleted.insert(id, p.version);
            return Ok(());
        }
        let songs = p
            .song_ids
            .iter()
            .map(|s| s.parse())
            .collect::<std::result::Result<Vec<SongId>, _>>()?;
        self.playlists.insert(
            id,
            PlaylistRec {
                id,
                owner: p.owner_id.parse()?,
                name: p.name,
                songs,
                created_at_ms: p.created_at_ms,
                updated_at_ms: p.updated_at_ms,
                version: p.version,
            },
        );
        Ok(())
    }

    /// Applies an app password (or its tombstone) from a change stream,
    /// opening its secret. One that does not open (sealed under another
    /// cluster secret) is left out, with a warning.
    pub fn apply_app_password(
        &mut self,
        p: pb::AppPassword,
        sealer: &rondo_core::sealing::Sealer,
    ) -> Result<()> {
        let id: AppPasswordId =
            p.id.parse()
                .map_err(|_| Error::BadUserInput("bad app password id".into()))?;
        let user: UserId = p.user_id.parse()?;
        if self.deleted_users.contains_key(&user) {
            return Ok(());
        }
        let list = self.app_passwords.entry(user).or_default();
        if list
            .iter()
            .any(|old| old.id == id && old.version >= p.version)
            || self
                .revoked_app_passwords
                .get(&id)
                .is_some_and(|v| *v >= p.version)
        {
            return Ok(());
        }
        if let Some(at) = list.iter().position(|old| old.id == id) {
            let old = list.remove(at);
            self.by_secret.remove(&blake3::hash(old.secret.as_bytes()));
        }
        if p.deleted {
            self.revoked_app_passwords.insert(id, p.version);
            return Ok(());
        }
        let Some(secret) = sealer
            .open(&app_password_aad(id, user), &p.sealed)
            .and_then(|b| String::from_utf8(b).ok())
        else {
            tracing::warn!(%id, "an app password does not open with this cluster secret: left out");
            return Ok(());
        };
        self.by_secret
            .insert(blake3::hash(secret.as_bytes()), (user, id));
        list.push(AppPasswordRec {
            id,
            name: p.name,
            secret,
            created_at_ms: p.created_at_ms,
            version: p.version,
        });
        Ok(())
    }

    /// Applies an account's marks on an item from a change stream (newest
    /// version wins; marks of nothing are dropped).
    pub fn apply_annotation(&mut self, a: pb::Annotation) -> Result<()> {
        let user: UserId = a.user_id.parse()?;
        let item: uuid::Uuid = a
            .item_id
            .parse()
            .map_err(|_| Error::BadUserInput("bad item id".into()))?;
        if self.deleted_users.contains_key(&user) {
            return Ok(());
        }
        let marks = Arc::make_mut(self.marks.entry(user).or_default());
        if marks.get(&item).is_some_and(|m| m.version >= a.version) {
            return Ok(());
        }
        let m = Marks {
            kind: a.kind,
            starred_at_ms: (a.starred_at_ms > 0).then_some(a.starred_at_ms),
            rating: (a.rating > 0).then_some(a.rating),
            play_count: a.play_count,
            last_played_ms: (a.last_played_ms > 0).then_some(a.last_played_ms),
            version: a.version,
        };
        // Kept even when empty: its version stops an older report.
        marks.insert(item, m);
        Ok(())
    }

    /// Applies an account's saved play queue from a change stream.
    pub fn apply_play_queue(&mut self, q: pb::PlayQueue) -> Result<()> {
        let user: UserId = q.user_id.parse()?;
        if self.deleted_users.contains_key(&user)
            || self
                .queues
                .get(&user)
                .is_some_and(|old| old.version >= q.version)
        {
            return Ok(());
        }
        let songs = q
            .song_ids
            .iter()
            .map(|s| s.parse())
            .collect::<std::result::Result<Vec<SongId>, _>>()?;
        self.queues.insert(
            user,
            PlayQueueRec {
                songs,
                current: q.current.parse().ok(),
                position_ms: q.position_ms,
                changed_ms: q.changed_ms,
                changed_by: q.changed_by,
                version: q.version,
            },
        );
        Ok(())
    }

    /// The account's marks on an item, if any.
    pub fn marks(&self, user: UserId, item: uuid::Uuid) -> Option<&Marks> {
        self.marks.get(&user)?.get(&item)
    }

    /// Every item the account marked.
    pub fn all_marks(&self, user: UserId) -> impl Iterator<Item = (&uuid::Uuid, &Marks)> {
        self.marks.get(&user).into_iter().flat_map(|m| m.iter())
    }

    /// The items the account starred, of `kind`, most recently starred
    /// first.
    pub fn starred(&self, user: UserId, kind: u32) -> Vec<uuid::Uuid> {
        let mut v: Vec<(u64, uuid::Uuid)> = self
            .all_marks(user)
            .filter(|(_, m)| m.kind == kind)
            .filter_map(|(id, m)| m.starred_at_ms.map(|at| (at, *id)))
            .collect();
        v.sort_by_key(|(at, id)| std::cmp::Reverse((*at, *id)));
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The account's saved play queue.
    pub fn play_queue(&self, user: UserId) -> Option<&PlayQueueRec> {
        self.queues.get(&user).filter(|q| !q.songs.is_empty())
    }

    /// Records a logout; forgets revocations that expired by then.
    pub fn apply_revoked(&mut self, r: pb::RevokedSession) {
        self.revoked.retain(|_, exp| *exp > r.at);
        self.revoked.insert(r.session_id, r.expires_at);
    }

    /// Whether this session was ended by a logout.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.revoked.contains_key(session_id)
    }

    pub fn user(&self, id: UserId) -> Option<&UserRec> {
        self.users.get(&id)
    }

    /// The account with this name (case-insensitive, NFKC: what a login
    /// names).
    pub fn user_by_name(&self, name: &str) -> Option<&UserRec> {
        self.by_name
            .get(&rondo_core::names::login_key(name))
            .and_then(|id| self.users.get(id))
    }

    /// The account whose name looks like this one (UTS #39 skeletons): a
    /// new account may not take it.
    pub fn user_like(&self, name: &str) -> Option<&UserRec> {
        self.by_key
            .get(&rondo_core::names::account_key(name))
            .and_then(|id| self.users.get(id))
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Every account, by name (case-insensitively), then id.
    pub fn users(&self) -> Vec<&UserRec> {
        let mut v: Vec<&UserRec> = self.users.values().collect();
        v.sort_by_cached_key(|u| (rondo_core::names::login_key(&u.name), u.id.0));
        v
    }

    /// Whether a session is still good for its account: the account
    /// exists with the session's role, the session was issued after the
    /// last password change and was not ended by a logout.
    pub fn session_ok(&self, s: &rondo_core::session::Session) -> bool {
        self.users.get(&s.user).is_some_and(|u| {
            u.role == s.role && s.issued_ms >= u.sessions_after_ms && !self.is_revoked(&s.id_hex())
        })
    }

    pub fn playlist(&self, id: PlaylistId) -> Option<&PlaylistRec> {
        self.playlists.get(&id)
    }

    /// The playlists of `owner`, newest first.
    pub fn playlists_of(&self, owner: UserId) -> Vec<&PlaylistRec> {
        let mut v: Vec<&PlaylistRec> = self
            .playlists
            .values()
            .filter(|p| p.owner == owner)
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse((p.created_at_ms, p.id.0)));
        v
    }

    /// The account whose app password is `secret` (an API key).
    pub fn api_key_user(&self, secret: &str) -> Option<&UserRec> {
        let (user, _) = self.by_secret.get(&blake3::hash(secret.as_bytes()))?;
        self.users.get(user)
    }

    /// Whether `password` is one of the account's app passwords.
    pub fn app_password_matches(&self, user: UserId, password: &str) -> bool {
        self.by_secret
            .get(&blake3::hash(password.as_bytes()))
            .is_some_and(|(u, _)| *u == user)
    }

    /// Whether the account has app passwords.
    pub fn has_app_passwords(&self, user: UserId) -> bool {
        self.app_passwords.get(&user).is_some_and(|v| !v.is_empty())
    }

    /// Whether `token` is md5(app password + `salt`) for one of the
    /// account's app passwords (Subsonic token authentication).
    pub fn app_password_token_matches(&self, user: UserId, token: &str, salt: &str) -> bool {
        let Ok(token) = hex::decode(token) else {
            return false;
        };
        self.app_passwords
            .get(&user)
            .into_iter()
            .flatten()
            .any(|p| {
                use md5::Digest;
                let mut h = md5::Md5::new();
                h.update(p.secret.as_bytes());
                h.update(salt.as_bytes());
                // Constant time, as any secret's comparison.
                constant_time_eq(&h.finalize(), &token)
            })
    }

    /// The account's app passwords, newest first.
    pub fn app_passwords_of(&self, user: UserId) -> Vec<&AppPasswordRec> {
        let mut v: Vec<&AppPasswordRec> = self
            .app_passwords
            .get(&user)
            .into_iter()
            .flatten()
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse((p.created_at_ms, p.id)));
        v
    }

    /// The version of a playlist's last change as known here (deletions
    /// included), to wait for after a proposal.
    pub fn playlist_version(&self, id: PlaylistId) -> u64 {
        self.playlists
            .get(&id)
            .map(|p| p.version)
            .max(self.deleted.get(&id).copied())
            .unwrap_or(0)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::PasswordHasher;
        // A random salt per password (the `getrandom` feature).
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::BadUserInput(format!("cannot hash this password: {e}")))
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(id: u128, version: u64, deleted: bool) -> pb::Playlist {
        pb::Playlist {
            id: uuid::Uuid::from_u128(id).to_string(),
            owner_id: uuid::Uuid::from_u128(9).to_string(),
            name: format!("v{version}"),
            version,
            deleted,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn passwords_hash_to_salted_argon2id() {
        let h = hash_password("correct horse".into()).await.unwrap();
        let again = hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_ne!(h, again, "a random salt per hash");
    }

    #[test]
    fn a_deleted_account_leaves_the_index_with_its_playlists() {
        let mut a = Accounts::default();
        let user = |deleted: bool, version: u64| pb::User {
            id: uuid::Uuid::from_u128(9).to_string(),
            name: "Zoë".into(),
            role: "listener".into(),
            version,
            deleted,
            ..Default::default()
        };
        a.apply_user(user(false, 1)).unwrap();
        a.apply_playlist(playlist(1, 2, false)).unwrap();
        assert!(a.user_by_name("zoë").is_some());
        a.apply_user(user(true, 3)).unwrap();
        assert!(a.user_by_name("zoë").is_none());
        // A slower node's older record of the account does not bring it
        // back.
        a.apply_user(user(false, 2)).unwrap();
        assert!(a.user_by_name("zoë").is_none());
        assert!(a.user_like("Zoë").is_none());
        assert!(a.playlist(PlaylistId(uuid::Uuid::from_u128(1))).is_none());
        assert_eq!(a.user_count(), 0);
    }

    #[test]
    fn app_passwords_open_answer_keys_tokens_and_go_when_revoked() {
        let sealer = rondo_core::sealing::Sealer::new(b"cluster secret");
        let mut a = Accounts::default();
        let uid = uuid::Uuid::from_u128(9);
        a.apply_user(pb::User {
            id: uid.to_string(),
            name: "joe".into(),
            role: "listener".into(),
            version: 1,
            ..Default::default()
        })
        .unwrap();
        let pid = uuid::Uuid::from_u128(77);
        let record = |version: u64, deleted: bool, secret: &[u8]| pb::AppPassword {
            id: pid.to_string(),
            user_id: uid.to_string(),
            name: "phone".into(),
            sealed: if deleted {
                Vec::new()
            } else {
                sealer.seal(&app_password_aad(pid, UserId(uid)), secret)
            },
            created_at_ms: 5,
            version,
            deleted,
        };
        let user = UserId(uid);
        assert!(!a.has_app_passwords(user));
        a.apply_app_password(record(2, false, b"sesame"), &sealer)
            .unwrap();
        assert_eq!(
            a.api_key_user("sesame").map(|u| u.name.as_str()),
            Some("joe")
        );
        assert!(a.app_password_matches(user, "sesame"));
        assert!(!a.app_password_matches(user, "sesam"));
        // The specification's example: md5("sesame" + "c19b2d").
        assert!(a.app_password_token_matches(user, "26719a1196d2a940705a59634eb18eab", "c19b2d"));
        assert!(!a.app_password_token_matches(user, "26719a1196d2a940705a59634eb18eab", "c19b2e"));
        assert!(!a.app_password_token_matches(user, "not hex", "c19b2d"));
        // Sealed for another record (or secret) it does not open: left out.
        let mut moved = record(3, false, b"other");
        moved.id = uuid::Uuid::from_u128(78).to_string();
        moved.sealed = record(3, false, b"other").sealed;
        a.apply_app_password(moved, &sealer).unwrap();
        assert!(a.api_key_user("other").is_none());
        // Revoked: gone, and an older report does not bring it back.
        a.apply_app_password(record(4, true, b""), &sealer).unwrap();
        assert!(a.api_key_user("sesame").is_none());
        a.apply_app_password(record(2, false, b"sesame"), &sealer)
            .unwrap();
        assert!(a.api_key_user("sesame").is_none());
        assert!(!a.has_app_passwords(user));
        // The account's deletion takes its app passwords.
        let pid2 = uuid::Uuid::from_u128(79);
        let mut p2 = record(5, false, b"");
        p2.id = pid2.to_string();
        p2.sealed = sealer.seal(&app_password_aad(pid2, UserId(uid)), b"second");
        a.apply_app_password(p2, &sealer).unwrap();
        assert!(a.api_key_user("second").is_some());
        a.apply_user(pb::User {
            id: uid.to_string(),
            deleted: true,
            version: 6,
            ..Default::default()
        })
        .unwrap();
        assert!(a.api_key_user("second").is_none());
        assert!(a.app_passwords_of(user).is_empty());
    }

    #[test]
    fn the_newest_version_wins_whichever_node_reports_first() {
        let mut a = Accounts::default();
        a.apply_playlist(playlist(1, 5, false)).unwrap();
        a.apply_playlist(playlist(1, 3, false)).unwrap();
        let id = PlaylistId(uuid::Uuid::from_u128(1));
        assert_eq!(a.playlist(id).map(|p| p.name.as_str()), Some("v5"));
        a.apply_playlist(playlist(1, 7, true)).unwrap();
        assert!(a.playlist(id).is_none());
        // A late report of an older version does not resurrect it.
        a.apply_playlist(playlist(1, 6, false)).unwrap();
        assert!(a.playlist(id).is_none());
        assert_eq!(a.playlist_version(id), 7);
    }
}
