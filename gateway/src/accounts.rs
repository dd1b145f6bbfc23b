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
