//! Accounts, playlists and ended sessions: applying their ordered updates.
//!
//! Each function applies one update inside the caller's transaction and
//! answers the record as changed, or why the update was refused (outer
//! error: storage; inner: refusal, the same on every node).

use prost::Message;
use redb::{ReadableDatabase, ReadableTable};
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};

use super::Applied;
use super::tables::*;
use crate::error::{Error, Result};

/// A refused account or playlist update changes nothing; an accepted one
/// goes on this node's change stream.
pub(super) fn finish(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    outcome: std::result::Result<Change, Error>,
) -> Result<(Applied, Option<pb::CatalogChange>)> {
    match outcome {
        Ok(change) => {
            let change = push_change(txn, meta, change)?;
            Ok((
                Applied::Changed {
                    change_seq: change.seq,
                },
                Some(change),
            ))
        }
        Err(e) => Ok((Applied::Rejected(e), None)),
    }
}

/// The longest account or playlist name accepted, in characters.
pub const MAX_NAME: usize = 100;

/// The most songs a playlist holds.
pub const MAX_PLAYLIST: usize = 10_000;

/// Registers an account: the name must be free (case-insensitively); the
/// role is the one proposed (only a gateway proposes, and it proposes an
/// admin only for an admin: `createUser`). Nobody becomes an admin by
/// registering first. Outer error: storage; inner: refusal.
pub(super) fn register_user(
    txn: &redb::WriteTransaction,
    seq: u64,
    mut user: pb::User,
) -> Result<std::result::Result<pb::User, Error>> {
    // The nil id names the operator (the admin token) in an authority.
    let Some(id) = uuid_key(&user.id).ok().filter(|id| *id != 0) else {
        return Ok(Err(Error::Invalid {
            what: "bad user id",
        }));
    };
    // NFKC, no invisible or text-direction characters; unique by the
    // confusable skeleton (rondo_core::names), in the total order.
    let Ok(name) = rondo_core::names::account_name(&user.name) else {
        return Ok(Err(Error::Invalid {
            what: "account name must be 1-100 visible characters",
        }));
    };
    if user.password_hash.is_empty() || user.password_hash.len() > 512 {
        return Ok(Err(Error::Invalid {
            what: "an account needs a password",
        }));
    }
    let folded = rondo_core::names::account_key(&name);
    let mut names = txn.open_table(USER_NAMES)?;
    if names.get(folded.as_str())?.is_some() {
        return Ok(Err(Error::NameTaken(name)));
    }
    let mut users = txn.open_table(USERS)?;
    if users.get(id)?.is_some() {
        return Ok(Err(Error::Invalid {
            what: "user id exists",
        }));
    }
    user.role = if user.role == "admin" {
        "admin".into()
    } else {
        "listener".into()
    };
    user.name = name;
    user.version = seq;
    user.deleted = false;
    user.sessions_after_ms = 0;
    names.insert(folded.as_str(), id)?;
    users.insert(id, user.encode_to_vec().as_slice())?;
    Ok(Ok(user))
}

/// Changes or deletes an account (checked for authority at the node that
/// took the proposal; here only what the total order decides: the account
/// exists, the role is one, the last admin stays). A deletion takes the
/// account's playlists with it: answered as tombstones after the account's.
/// Outer error: storage; inner: refusal.
pub(super) fn change_user(
    txn: &redb::WriteTransaction,
    seq: u64,
    change: pb::UserChange,
) -> Result<std::result::Result<(pb::User, Vec<pb::Playlist>), Error>> {
    use pb::user_change::Change as C;
    let Ok(id) = uuid_key(&change.user_id) else {
        return Ok(Err(Error::Invalid {
            what: "bad user id",
        }));
    };
    let mut users = txn.open_table(USERS)?;
    let Some(mut user) = users
        .get(id)?
        .map(|g| decode::<pb::User>("users", g.value()))
        .transpose()?
    else {
        return Ok(Err(Error::NotFound {
            kind: "user",
            id: change.user_id,
        }));
    };
    let Some(what) = change.change.filter(|c| !matches!(c, C::Delete(false))) else {
        return Ok(Err(Error::Invalid {
            what: "empty account change",
        }));
    };
    // Would this leave no admin where there was one?
    let demotes = user.role == "admin"
        && match &what {
            C::Role(r) => r != "admin",
            C::Delete(_) => true,
            C::PasswordHash(_) => false,
        };
    if demotes {
        let mut admins = 0usize;
        for row in users.iter()? {
            let (_, v) = row?;
            if decode::<pb::User>("users", v.value())?.role == "admin" {
                admins += 1;
            }
        }
        if admins <= 1 {
            return Ok(Err(Error::Forbidden(
                "this is the last admin account: make another admin first",
            )));
        }
    }
    user.version = seq;
    match what {
        C::PasswordHash(hash) => {
            if hash.is_empty() || hash.len() > 512 {
                return Ok(Err(Error::Invalid {
                    what: "an account needs a password",
                }));
            }
            user.password_hash = hash;
            user.sessions_after_ms = user.sessions_after_ms.max(change.at_ms);
        }
        C::Role(role) => {
            if role != "admin" && role != "listener" {
                return Ok(Err(Error::Invalid {
                    what: "a role is listener or admin",
                }));
            }
            user.role = role;
        }
        C::Delete(_) => {
            users.remove(id)?;
            let mut names = txn.open_table(USER_NAMES)?;
            let key = rondo_core::names::account_key(&user.name);
            if names.get(key.as_str())?.map(|g| g.value()) == Some(id) {
                names.remove(key.as_str())?;
            }
            let mut playlists = txn.open_table(PLAYLISTS)?;
            let mut gone = Vec::new();
            for row in playlists.iter()? {
                let (k, v) = row?;
                let list: pb::Playlist = decode("playlists", v.value())?;
                if list.owner_id == user.id {
                    gone.push((k.value(), list));
                }
            }
            let mut tombstones = Vec::with_capacity(gone.len());
            for (k, mut list) in gone {
                playlists.remove(k)?;
                list.deleted = true;
                list.song_ids.clear();
                list.version = seq;
                tombstones.push(list);
            }
            drop(playlists);
            drop(names);
            drop(users);
            drop_app_passwords(txn, &user.id)?;
            super::listening::drop_user(txn, &user.id)?;
            user.deleted = true;
            user.password_hash.clear();
            return Ok(Ok((user, tombstones)));
        }
    }
    users.insert(id, user.encode_to_vec().as_slice())?;
    Ok(Ok((user, Vec::new())))
}

/// Announces several changes of one update (none: nothing to announce,
/// as a star of a starred item); the last names the update.
pub(super) fn finish_many(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    outcome: std::result::Result<Vec<Change>, Error>,
) -> Result<(Applied, Option<pb::CatalogChange>)> {
    let changes = match outcome {
        Ok(c) => c,
        Err(e) => return Ok((Applied::Rejected(e), None)),
    };
    let mut announce = None;
    for change in changes {
        announce = Some(push_change(txn, meta, change)?);
    }
    // The last: a gateway that waits for it has every change of the
    // update (it applies a node's changes in order).
    let change_seq = match &announce {
        Some(c) => c.seq,
        None => meta.get(LAST_SEQ)?.map_or(0, |g| g.value()),
    };
    Ok((Applied::Changed { change_seq }, announce))
}

/// Announces an account change and the playlists it deleted; a follower
/// reads the log on a gap, so announcing the last change makes it read all.
pub(super) fn finish_user_change(
    txn: &redb::WriteTransaction,
    meta: &mut Meta<'_>,
    outcome: std::result::Result<(pb::User, Vec<pb::Playlist>), Error>,
) -> Result<(Applied, Option<pb::CatalogChange>)> {
    let (user, tombstones) = match outcome {
        Ok(changed) => changed,
        Err(e) => return Ok((Applied::Rejected(e), None)),
    };
    let first = push_change(txn, meta, Change::User(user))?;
    let mut announce = first.clone();
    for list in tombstones {
        announce = push_change(txn, meta, Change::Playlist(list))?;
    }
    Ok((
        Applied::Changed {
            change_seq: first.seq,
        },
        Some(announce),
    ))
}

impl super::Store {
    /// The account of this id.
    pub fn user(&self, id: rondo_core::UserId) -> Result<Option<pb::User>> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        users
            .get(id.0.as_u128())?
            .map(|g| decode("users", g.value()))
            .transpose()
    }

    /// The account a login names: NFKC and case-insensitive, exactly (a
    /// look-alike of a name is not that name).
    pub fn user_by_name(&self, name: &str) -> Result<Option<pb::User>> {
        let txn = self.db.begin_read()?;
        let names = txn.open_table(USER_NAMES)?;
        let Some(id) = names
            .get(rondo_core::names::account_key(name).as_str())?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        let users = txn.open_table(USERS)?;
        let user: Option<pb::User> = users
            .get(id)?
            .map(|g| decode("users", g.value()))
            .transpose()?;
        let key = rondo_core::names::login_key(name);
        Ok(user.filter(|u| rondo_core::names::login_key(&u.name) == key))
    }

    /// Whether this session was ended by a logout.
    pub fn session_revoked(&self, session_id: &str) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(REVOKED)?.get(session_id)?.is_some())
    }
}

/// Which key `USER_NAMES` holds names by: 2 is the confusable skeleton
/// (`rondo_core::names::account_key`); before, the folded name.
const USER_NAME_KEYS: u64 = 2;

/// Re-keys the account name table by [`USER_NAME_KEYS`] once, on a store
/// written before (the first of two look-alike names keeps it).
pub(super) fn index_user_names(txn: &redb::WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    if meta.get("user_name_keys")?.map(|g| g.value()) == Some(USER_NAME_KEYS) {
        return Ok(());
    }
    txn.delete_table(USER_NAMES)?;
    let mut names = txn.open_table(USER_NAMES)?;
    let users = txn.open_table(USERS)?;
    let mut all: Vec<(u64, u128, String)> = Vec::new();
    for row in users.iter()? {
        let (k, v) = row?;
        let user: pb::User = decode("users", v.value())?;
        all.push((user.version, k.value(), user.name));
    }
    all.sort();
    for (_, id, name) in all {
        let key = rondo_core::names::account_key(&name);
        if names.get(key.as_str())?.is_none() {
            names.insert(key.as_str(), id)?;
        }
    }
    meta.insert("user_name_keys", USER_NAME_KEYS)?;
    Ok(())
}

/// Records an ended session until it expires, dropping those expired by
/// the proposer's clock (carried in the update, so every node drops the
/// same ones).
pub(super) fn revoke_session(
    txn: &redb::WriteTransaction,
    r: pb::RevokedSession,
) -> Result<std::result::Result<pb::RevokedSession, Error>> {
    if r.session_id.is_empty() || r.session_id.len() > 64 {
        return Ok(Err(Error::Invalid {
            what: "bad session id",
        }));
    }
    let mut revoked = txn.open_table(REVOKED)?;
    let expired: Vec<String> = revoked
        .iter()?
        .filter_map(|row| row.ok())
        .filter(|(_, exp)| exp.value() <= r.at)
        .map(|(id, _)| id.value().to_owned())
        .collect();
    for id in expired {
        revoked.remove(id.as_str())?;
    }
    revoked.insert(r.session_id.as_str(), r.expires_at)?;
    Ok(Ok(r))
}

/// Applies a playlist operation for its actor.
pub(super) fn apply_playlist(
    txn: &redb::WriteTransaction,
    seq: u64,
    op: pb::PlaylistOp,
) -> Result<std::result::Result<pb::Playlist, Error>> {
    use pb::playlist_op::Op;
    let (Ok(id), Ok(actor)) = (uuid_key(&op.playlist_id), uuid_key(&op.actor_id)) else {
        return Ok(Err(Error::Invalid {
            what: "bad playlist or user id",
        }));
    };
    let users = txn.open_table(USERS)?;
    let Some(actor_rec) = users.get(actor)?.map(|g| g.value().to_vec()) else {
        return Ok(Err(Error::NotFound {
            kind: "user",
            id: op.actor_id,
        }));
    };
    let actor_rec: pb::User = decode("users", &actor_rec)?;
    let mut playlists = txn.open_table(PLAYLISTS)?;
    let existing: Option<pb::Playlist> = match playlists.get(id)? {
        Some(g) => Some(decode("playlists", g.value())?),
        None => None,
    };
    let Some(kind) = op.op else {
        return Ok(Err(Error::Invalid {
            what: "empty playlist operation",
        }));
    };
    let mut list = match (kind.clone(), existing) {
        (Op::Create(name), None) => {
            if !name_ok(&name) {
                return Ok(Err(Error::Invalid {
                    what: "playlist name must be 1-100 characters",
                }));
            }
            pb::Playlist {
                id: op.playlist_id.clone(),
                owner_id: op.actor_id.clone(),
                name: name.trim().to_owned(),
                song_ids: Vec::new(),
                created_at_ms: op.at_ms,
                updated_at_ms: op.at_ms,
                version: seq,
                deleted: false,
            }
        }
        (Op::Create(_), Some(_)) => {
            return Ok(Err(Error::Invalid {
                what: "playlist id exists",
            }));
        }
        (_, None) => {
            return Ok(Err(Error::NotFound {
                kind: "playlist",
                id: op.playlist_id,
            }));
        }
        (_, Some(list)) => {
            if list.owner_id != op.actor_id && actor_rec.role != "admin" {
                return Ok(Err(Error::Forbidden(
                    "only its owner may change a playlist",
                )));
            }
            list
        }
    };
    if let Op::Delete(_) = kind {
        playlists.remove(id)?;
        list.deleted = true;
        list.song_ids.clear();
        list.version = seq;
        list.updated_at_ms = op.at_ms;
        return Ok(Ok(list));
    }
    if let Err(refused) = edit_playlist(txn, &mut list, kind)? {
        return Ok(Err(refused));
    }
    list.version = seq;
    list.updated_at_ms = op.at_ms.max(list.created_at_ms);
    playlists.insert(id, list.encode_to_vec().as_slice())?;
    Ok(Ok(list))
}

/// The most app passwords one account holds.
pub const MAX_APP_PASSWORDS: usize = 20;
/// The longest sealed secret kept (24 bytes of nonce, the secret and the
/// tag: gateways make 32-byte secrets).
pub const MAX_SEALED: usize = 256;

/// Creates or revokes an app password of an account. Outer error:
/// storage; inner: refusal.
pub(super) fn apply_app_password(
    txn: &redb::WriteTransaction,
    seq: u64,
    op: pb::AppPasswordOp,
) -> Result<std::result::Result<pb::AppPassword, Error>> {
    use pb::app_password_op::Op;
    let Ok(user) = uuid_key(&op.user_id) else {
        return Ok(Err(Error::Invalid {
            what: "bad user id",
        }));
    };
    if txn.open_table(USERS)?.get(user)?.is_none() {
        return Ok(Err(Error::NotFound {
            kind: "user",
            id: op.user_id,
        }));
    }
    let mut table = txn.open_table(APP_PASSWORDS)?;
    match op.op {
        Some(Op::Create(mut p)) => {
            let Ok(id) = uuid_key(&p.id) else {
                return Ok(Err(Error::Invalid {
                    what: "bad app password id",
                }));
            };
            if p.user_id != op.user_id {
                return Ok(Err(Error::Invalid {
                    what: "an app password is created for the op's account",
                }));
            }
            if !name_ok(&p.name) {
                return Ok(Err(Error::Invalid {
                    what: "an app password's name must be 1-100 characters",
                }));
            }
            if p.sealed.is_empty() || p.sealed.len() > MAX_SEALED {
                return Ok(Err(Error::Invalid {
                    what: "bad sealed app password",
                }));
            }
            if table.get(id)?.is_some() {
                return Ok(Err(Error::Invalid {
                    what: "app password id exists (or was revoked)",
                }));
            }
            let mut count = 0;
            for row in table.iter()? {
                let (_, v) = row?;
                let other: pb::AppPassword = decode("app_passwords", v.value())?;
                count += usize::from(other.user_id == p.user_id && !other.deleted);
            }
            if count >= MAX_APP_PASSWORDS {
                return Ok(Err(Error::Invalid {
                    what: "an account holds at most 20 app passwords: revoke one first",
                }));
            }
            p.name = p.name.trim().to_owned();
            p.version = seq;
            p.deleted = false;
            table.insert(id, p.encode_to_vec().as_slice())?;
            Ok(Ok(p))
        }
        Some(Op::RevokeId(raw)) => {
            let Ok(id) = uuid_key(&raw) else {
                return Ok(Err(Error::Invalid {
                    what: "bad app password id",
                }));
            };
            let found: Option<pb::AppPassword> = match table.get(id)? {
                Some(g) => Some(decode("app_passwords", g.value())?),
                None => None,
            };
            match found {
                // Kept as a tombstone: its id is never an app password
                // again (a replayed creation with the old sealed secret
                // is refused).
                Some(mut p) if p.user_id == op.user_id && !p.deleted => {
                    p.deleted = true;
                    p.sealed.clear();
                    p.version = seq;
                    table.insert(id, p.encode_to_vec().as_slice())?;
                    Ok(Ok(p))
                }
                _ => Ok(Err(Error::NotFound {
                    kind: "app password",
                    id: raw,
                })),
            }
        }
        None => Ok(Err(Error::Invalid {
            what: "empty app password operation",
        })),
    }
}

/// Removes an account's app passwords (the account was deleted).
pub(super) fn drop_app_passwords(txn: &redb::WriteTransaction, user_id: &str) -> Result<()> {
    remove_owned(
        txn,
        (APP_PASSWORDS, "app_passwords"),
        user_id,
        |p: &pb::AppPassword| &p.user_id,
    )
}

/// Whether a playlist name is acceptable.
fn name_ok(n: &str) -> bool {
    !n.trim().is_empty() && n.trim().chars().count() <= MAX_NAME
}

/// Carries out an edit (create, rename, add, remove, move) on a playlist
/// its actor may change. Outer error: storage; inner: refusal.
fn edit_playlist(
    txn: &redb::WriteTransaction,
    list: &mut pb::Playlist,
    kind: pb::playlist_op::Op,
) -> Result<std::result::Result<(), Error>> {
    use pb::playlist_op::Op;
    match kind {
        Op::Create(_) | Op::Delete(_) => {}
        Op::Rename(name) => {
            if !name_ok(&name) {
                return Ok(Err(Error::Invalid {
                    what: "playlist name must be 1-100 characters",
                }));
            }
            list.name = name.trim().to_owned();
        }
        Op::AddSongs(add) => {
            let songs = txn.open_table(SONGS)?;
            for s in &add.song_ids {
                let Ok(k) = uuid_key(s) else {
                    return Ok(Err(Error::Invalid {
                        what: "bad song id",
                    }));
                };
                if songs.get(k)?.is_none() {
                    return Ok(Err(Error::NotFound {
                        kind: "song",
                        id: s.clone(),
                    }));
                }
            }
            if list.song_ids.len() + add.song_ids.len() > MAX_PLAYLIST {
                return Ok(Err(Error::Invalid {
                    what: "a playlist holds at most 10000 songs",
                }));
            }
            let at = add.position.map_or(list.song_ids.len(), |p| {
                (p as usize).min(list.song_ids.len())
            });
            list.song_ids.splice(at..at, add.song_ids);
        }
        Op::RemoveSongs(rm) => {
            let n = list.song_ids.len();
            if rm.positions.iter().any(|&p| p as usize >= n) {
                return Ok(Err(Error::Invalid {
                    what: "position out of range",
                }));
            }
            let drop: std::collections::BTreeSet<usize> =
                rm.positions.iter().map(|&p| p as usize).collect();
            let mut i = 0;
            list.song_ids.retain(|_| {
                let keep = !drop.contains(&i);
                i += 1;
                keep
            });
        }
        Op::MoveSong(mv) => {
            let n = list.song_ids.len();
            let (from, to) = (mv.from as usize, mv.to as usize);
            if from >= n || to >= n {
                return Ok(Err(Error::Invalid {
                    what: "position out of range",
                }));
            }
            let song = list.song_ids.remove(from);
            list.song_ids.insert(to, song);
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use crate::store::testutil::*;

    fn user(name: &str, role: &str) -> (String, Vec<u8>) {
        let id = uuid::Uuid::new_v4().to_string();
        let u = pb::User {
            id: id.clone(),
            name: name.into(),
            password_hash: "$argon2id$x".into(),
            role: role.into(),
            ..Default::default()
        };
        (
            id,
            pb::CatalogUpdate {
                change: Some(pb::catalog_update::Change::RegisterUser(u)),
                ..Default::default()
            }
            .encode_to_vec(),
        )
    }

    fn op(list: &str, actor: &str, op: pb::playlist_op::Op) -> Vec<u8> {
        pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::Playlist(pb::PlaylistOp {
                playlist_id: list.into(),
                actor_id: actor.into(),
                at_ms: 5,
                op: Some(op),
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn last_playlist(store: &Store) -> pb::Playlist {
        store
            .changes_after(0, 10_000)
            .unwrap()
            .into_iter()
            .rev()
            .find_map(|c| match c.change {
                Some(Change::Playlist(p)) => Some(p),
                _ => None,
            })
            .unwrap()
    }

    #[tokio::test]
    async fn accounts_roles_as_proposed_names_unique_playlists_checked_in_order() {
        use pb::playlist_op::Op;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // The first account is no admin for being first: a listener, as
        // proposed.
        let (first, reg) = user("first", "listener");
        store.apply_update(1, &reg, None).unwrap();
        let (alice, reg) = user("Alice", "admin");
        assert!(matches!(
            store.apply_update(2, &reg, None).unwrap(),
            Applied::Changed { .. }
        ));
        let (bob, reg) = user("bob", "weird role");
        store.apply_update(3, &reg, None).unwrap();
        let roles: Vec<(String, String)> = store
            .changes_after(0, 10)
            .unwrap()
            .into_iter()
            .filter_map(|c| match c.change {
                Some(Change::User(u)) => Some((u.name, u.role)),
                _ => None,
            })
            .collect();
        assert_eq!(
            roles,
            [
                ("first".into(), "listener".into()),
                ("Alice".into(), "admin".into()),
                ("bob".into(), "listener".into())
            ]
        );
        let _ = first;
        // Names are unique case-insensitively; nothing changes.
        let (_, dup) = user("ALICE", "listener");
        let before = store.stats().unwrap().last_seq;
        assert!(matches!(
            store.apply_update(4, &dup, None).unwrap(),
            Applied::Rejected(Error::NameTaken(_))
        ));
        assert_eq!(store.stats().unwrap().last_seq, before);

        // Bob's playlist: create, add two songs, move, remove.
        let me = NodeId::new_random();
        let (s1, s2) = (SongId::new_random(), SongId::new_random());
        store.put_blob(staged(&store, b"one").await).unwrap();
        store
            .apply_update(5, &upsert(song(s1), b"one", me), None)
            .unwrap();
        store.put_blob(staged(&store, b"two").await).unwrap();
        store
            .apply_update(6, &upsert(song(s2), b"two", me), None)
            .unwrap();
        let list = uuid::Uuid::new_v4().to_string();
        store
            .apply_update(7, &op(&list, &bob, Op::Create(" Road trip ".into())), None)
            .unwrap();
        let add = Op::AddSongs(pb::AddSongs {
            song_ids: vec![s1.to_string(), s2.to_string()],
            position: None,
        });
        store.apply_update(8, &op(&list, &bob, add), None).unwrap();
        store
            .apply_update(
                9,
                &op(&list, &bob, Op::MoveSong(pb::MoveSong { from: 1, to: 0 })),
                None,
            )
            .unwrap();
        let p = last_playlist(&store);
        assert_eq!(p.name, "Road trip");
        assert_eq!(p.song_ids, [s2.to_string(), s1.to_string()]);
        assert_eq!(p.version, 9);
        // Someone else's playlist is refused (Alice is admin: allowed).
        let (carol, reg) = user("carol", "listener");
        store.apply_update(10, &reg, None).unwrap();
        assert!(matches!(
            store
                .apply_update(11, &op(&list, &carol, Op::Rename("mine".into())), None)
                .unwrap(),
            Applied::Rejected(Error::Forbidden(_))
        ));
        assert!(matches!(
            store
                .apply_update(12, &op(&list, &alice, Op::Rename("Trip".into())), None)
                .unwrap(),
            Applied::Changed { .. }
        ));
        // Unknown songs and bad positions are refused.
        let ghost = Op::AddSongs(pb::AddSongs {
            song_ids: vec![SongId::new_random().to_string()],
            position: Some(0),
        });
        assert!(matches!(
            store
                .apply_update(13, &op(&list, &bob, ghost), None)
                .unwrap(),
            Applied::Rejected(Error::NotFound { .. })
        ));
        let bad = Op::RemoveSongs(pb::RemoveSongs { positions: vec![7] });
        assert!(matches!(
            store.apply_update(14, &op(&list, &bob, bad), None).unwrap(),
            Applied::Rejected(Error::Invalid { .. })
        ));
        // Deleting a song takes it out of the playlist, in the same order.
        store.apply_update(15, &delete(s2), None).unwrap();
        let p = last_playlist(&store);
        assert_eq!((p.song_ids, p.version), (vec![s1.to_string()], 15));
        // Delete: a tombstone.
        store
            .apply_update(16, &op(&list, &bob, Op::Delete(true)), None)
            .unwrap();
        assert!(last_playlist(&store).deleted);
        assert!(matches!(
            store
                .apply_update(17, &op(&list, &bob, Op::Rename("x".into())), None)
                .unwrap(),
            Applied::Rejected(Error::NotFound { .. })
        ));
        // Revocations are kept until they expire (by the proposer's clock).
        store.apply_update(18, &revoke("s1", 50, 10), None).unwrap();
        store
            .apply_update(19, &revoke("s2", 500, 60), None)
            .unwrap();
        let txn = store.db.begin_read().unwrap();
        let ids: Vec<String> = txn
            .open_table(REVOKED)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_owned())
            .collect();
        assert_eq!(ids, ["s2"]);
        // Names are unique by their look too: full-width forms and
        // Cyrillic look-alikes are the same name.
        for (seq, look_alike) in [(1000, "ａｌｉｃｅ"), (1001, "\u{0430}lice")] {
            let (_, dup) = user(look_alike, "listener");
            assert!(
                matches!(
                    store.apply_update(seq, &dup, None).unwrap(),
                    Applied::Rejected(Error::NameTaken(_))
                ),
                "{look_alike}"
            );
        }
    }

    /// A logout of session `id`, kept until `expires_at`, dated `at`.
    fn revoke(id: &str, expires_at: u64, at: u64) -> Vec<u8> {
        pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::RevokeSession(
                pb::RevokedSession {
                    session_id: id.into(),
                    expires_at,
                    at,
                },
            )),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn change(user: &str, c: pb::user_change::Change) -> Vec<u8> {
        pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::UserChange(pb::UserChange {
                user_id: user.into(),
                at_ms: 777,
                change: Some(c),
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[tokio::test]
    async fn account_changes_keep_an_admin_and_deletions_take_playlists() {
        use pb::user_change::Change as C;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ada, reg) = user("ada", "admin");
        store.apply_update(1, &reg, None).unwrap();
        let (lin, reg) = user("lin", "listener");
        store.apply_update(2, &reg, None).unwrap();
        let list = uuid::Uuid::new_v4().to_string();
        store
            .apply_update(
                3,
                &op(&list, &lin, pb::playlist_op::Op::Create("L".into())),
                None,
            )
            .unwrap();
        // The only admin can be neither demoted nor deleted.
        for (seq, c) in [(4, C::Role("listener".into())), (5, C::Delete(true))] {
            assert!(matches!(
                store.apply_update(seq, &change(&ada, c), None).unwrap(),
                Applied::Rejected(Error::Forbidden(_))
            ));
        }
        assert!(matches!(
            store
                .apply_update(6, &change(&lin, C::Role("root".into())), None)
                .unwrap(),
            Applied::Rejected(Error::Invalid { .. })
        ));
        // A new password ends the sessions issued before the change.
        store
            .apply_update(
                7,
                &change(&lin, C::PasswordHash("$argon2id$new".into())),
                None,
            )
            .unwrap();
        let id: rondo_core::UserId = lin.parse().unwrap();
        let u = store.user(id).unwrap().unwrap();
        assert_eq!(
            (u.password_hash.as_str(), u.sessions_after_ms, u.version),
            ("$argon2id$new", 777, 7)
        );
        assert_eq!(
            store.user_by_name("ＬＩＮ").unwrap().map(|u| u.id),
            Some(lin.clone())
        );
        // With a second admin, the first may go; a deletion takes the
        // account's playlists and frees its name.
        store
            .apply_update(8, &change(&lin, C::Role("admin".into())), None)
            .unwrap();
        store
            .apply_update(9, &change(&lin, C::Delete(true)), None)
            .unwrap();
        assert!(store.user(id).unwrap().is_none());
        assert!(store.user_by_name("lin").unwrap().is_none());
        let changes = store.changes_after(0, 100).unwrap();
        let deleted_user = changes.iter().any(|c| {
            matches!(&c.change, Some(Change::User(u)) if u.id == lin && u.deleted && u.password_hash.is_empty())
        });
        assert!(deleted_user);
        assert!(last_playlist(&store).deleted);
        let (_, again) = user("lin", "listener");
        assert!(matches!(
            store.apply_update(10, &again, None).unwrap(),
            Applied::Changed { .. }
        ));
        assert!(matches!(
            store
                .apply_update(11, &change(&ada, C::Delete(true)), None)
                .unwrap(),
            Applied::Rejected(Error::Forbidden(_))
        ));
    }

    /// An update carrying an authority (account, session, issue time).
    fn app_password(user: &str, op: pb::app_password_op::Op) -> Vec<u8> {
        pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::AppPassword(pb::AppPasswordOp {
                user_id: user.into(),
                op: Some(op),
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn new_app_password(user: &str, name: &str) -> (String, pb::app_password_op::Op) {
        let id = uuid::Uuid::new_v4().to_string();
        let p = pb::AppPassword {
            id: id.clone(),
            user_id: user.into(),
            name: name.into(),
            sealed: vec![7; 72],
            created_at_ms: 5,
            ..Default::default()
        };
        (id, pb::app_password_op::Op::Create(p))
    }

    /// App passwords: made for an existing account only, at most 20, only
    /// by the account or an admin; revoked by id as a tombstone; gone with
    /// the account; carried by a snapshot.
    #[tokio::test]
    async fn app_passwords_are_checked_in_order_and_go_with_their_account() {
        use pb::app_password_op::Op;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ada, reg) = user("ada", "listener");
        store.apply_update(1, &reg, None).unwrap();
        let (lin, reg) = user("lin", "listener");
        store.apply_update(2, &reg, None).unwrap();
        let mut seq = 2;
        let mut apply = |update: Vec<u8>| {
            seq += 1;
            store.apply_update(seq, &update, None).unwrap()
        };
        let (id, create) = new_app_password(&ada, "phone");
        assert!(matches!(
            apply(acting_as(
                &ada,
                "s-ada",
                10,
                app_password(&ada, create.clone())
            )),
            Applied::Changed { .. }
        ));
        let last = |store: &Store| {
            store
                .changes_after(0, 1000)
                .unwrap()
                .into_iter()
                .rev()
                .find_map(|c| match c.change {
                    Some(Change::AppPassword(p)) => Some(p),
                    _ => None,
                })
                .unwrap()
        };
        let made = last(&store);
        assert_eq!(
            (made.id.as_str(), made.name.as_str(), made.version),
            (id.as_str(), "phone", 3)
        );
        assert_eq!(made.sealed, vec![7; 72], "gateways get the sealed secret");
        // Lin may not make one for Ada, nor revoke hers; the same id twice,
        // a bad name or an empty secret are refused; nothing changes.
        let before = store.changes_after(0, 1000).unwrap().len();
        let (_, other) = new_app_password(&ada, "lin's");
        for bad in [
            acting_as(&lin, "s-lin", 10, app_password(&ada, other)),
            acting_as(
                &lin,
                "s-lin",
                10,
                app_password(&ada, Op::RevokeId(id.clone())),
            ),
            acting_as(&ada, "s-ada", 10, app_password(&ada, create)),
            acting_as(
                &ada,
                "s-ada",
                10,
                app_password(&ada, {
                    let (_, Op::Create(mut p)) = new_app_password(&ada, " ") else {
                        unreachable!()
                    };
                    p.name = " ".into();
                    Op::Create(p)
                }),
            ),
            acting_as(
                &ada,
                "s-ada",
                10,
                app_password(&ada, {
                    let (_, Op::Create(mut p)) = new_app_password(&ada, "x") else {
                        unreachable!()
                    };
                    p.sealed.clear();
                    Op::Create(p)
                }),
            ),
            acting_as(
                &lin,
                "s-lin",
                10,
                app_password(&lin, Op::RevokeId(id.clone())),
            ),
        ] {
            assert!(matches!(apply(bad), Applied::Rejected(_)));
        }
        assert_eq!(store.changes_after(0, 1000).unwrap().len(), before);
        // At most 20 per account.
        for i in 1..20 {
            let (_, c) = new_app_password(&ada, &format!("app {i}"));
            assert!(matches!(
                apply(acting_as(&ada, "s-ada", 10, app_password(&ada, c))),
                Applied::Changed { .. }
            ));
        }
        let (_, c) = new_app_password(&ada, "one too many");
        assert!(matches!(
            apply(acting_as(&ada, "s-ada", 10, app_password(&ada, c))),
            Applied::Rejected(Error::Invalid { .. })
        ));
        // A snapshot carries them.
        let at = store.ring_applied().unwrap().0;
        let rows = store.export_snapshot(at).unwrap();
        assert_eq!(
            rows.iter().filter(|r| r.table == "app_passwords").count(),
            20
        );
        // Revoked: a tombstone without the secret.
        assert!(matches!(
            apply(acting_as(
                &ada,
                "s-ada",
                10,
                app_password(&ada, Op::RevokeId(id.clone()))
            )),
            Applied::Changed { .. }
        ));
        let gone = last(&store);
        assert!(gone.deleted && gone.sealed.is_empty() && gone.id == id);
        // Its creation, replayed, does not bring it back; a slot is free.
        let replay = pb::app_password_op::Op::Create(pb::AppPassword {
            id: id.clone(),
            user_id: ada.clone(),
            name: "phone".into(),
            sealed: vec![7; 72],
            created_at_ms: 5,
            ..Default::default()
        });
        assert!(matches!(
            apply(acting_as(&ada, "s-ada", 10, app_password(&ada, replay))),
            Applied::Rejected(_)
        ));
        let (_, c) = new_app_password(&ada, "the twentieth again");
        assert!(matches!(
            apply(acting_as(&ada, "s-ada", 10, app_password(&ada, c))),
            Applied::Changed { .. }
        ));
        // The account's deletion takes the rest.
        apply(change(&ada, pb::user_change::Change::Delete(true)));
        let at = store.ring_applied().unwrap().0;
        let rows = store.export_snapshot(at).unwrap();
        assert_eq!(
            rows.iter().filter(|r| r.table == "app_passwords").count(),
            0
        );
    }

    fn acting_as(user: &str, session: &str, issued_ms: u64, update: Vec<u8>) -> Vec<u8> {
        let mut u = pb::CatalogUpdate::decode(update.as_slice()).unwrap();
        u.authority = Some(pb::Authority {
            user_id: user.into(),
            session_id: session.into(),
            issued_ms,
        });
        u.encode_to_vec()
    }

    /// Every node checks an ordered update's authority again at apply:
    /// a demotion, a deletion, a logout or a password change ordered first
    /// decides, whatever the proposer saw.
    #[tokio::test]
    async fn authority_is_checked_again_in_the_total_order() {
        use pb::playlist_op::Op;
        use pb::user_change::Change as C;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ada, reg) = user("ada", "admin");
        store.apply_update(1, &reg, None).unwrap();
        let (cy, reg) = user("cy", "admin");
        store.apply_update(2, &reg, None).unwrap();
        let (lin, reg) = user("lin", "listener");
        store.apply_update(3, &reg, None).unwrap();
        let refused = |seq: u64, update: Vec<u8>| match store.apply_update(seq, &update, None) {
            Ok(Applied::Rejected(e)) => Some(e),
            Ok(_) => None,
            Err(e) => panic!("{e}"),
        };
        let before = store.changes_after(0, 1000).unwrap().len();

        // A listener's session neither makes an admin nor deletes a song.
        let (_, admin_reg) = user("mallory", "admin");
        let e = refused(4, acting_as(&lin, "s-lin", 10, admin_reg.clone()));
        assert!(matches!(e, Some(Error::Forbidden(_))), "{e:?}");
        let e = refused(
            5,
            acting_as(&lin, "s-lin", 10, delete(SongId::new_random())),
        );
        assert!(matches!(e, Some(Error::Forbidden(_))), "{e:?}");
        // A playlist acts only for the session's account.
        let list = uuid::Uuid::new_v4().to_string();
        let e = refused(
            6,
            acting_as(&lin, "s-lin", 10, op(&list, &ada, Op::Create("L".into()))),
        );
        assert!(matches!(e, Some(Error::Forbidden(_))), "{e:?}");
        // A session ends only itself.
        let revoke = |id: &str| revoke(id, u64::MAX, 1);
        let e = refused(7, acting_as(&lin, "s-lin", 10, revoke("s-ada")));
        assert!(matches!(e, Some(Error::Forbidden(_))), "{e:?}");
        assert_eq!(store.changes_after(0, 1000).unwrap().len(), before);

        // Ada is demoted by Cy; her role change for Lin, proposed while
        // she was an admin, is ordered after and refused.
        assert!(
            refused(
                8,
                acting_as(&cy, "s-cy", 10, change(&ada, C::Role("listener".into())))
            )
            .is_none()
        );
        let e = refused(
            9,
            acting_as(&ada, "s-ada", 10, change(&lin, C::Role("admin".into()))),
        );
        assert!(matches!(e, Some(Error::Forbidden(_))), "{e:?}");
        let lin_id: rondo_core::UserId = lin.parse().unwrap();
        assert_eq!(store.user(lin_id).unwrap().unwrap().role, "listener");

        // Lin's playlist with her session applies; after her logout, or
        // with a session issued before her password change, it does not.
        assert!(
            refused(
                10,
                acting_as(&lin, "s-lin", 10, op(&list, &lin, Op::Create("L".into())))
            )
            .is_none()
        );
        assert!(refused(11, acting_as(&lin, "s-lin", 10, revoke("s-lin"))).is_none());
        let e = refused(
            12,
            acting_as(&lin, "s-lin", 10, op(&list, &lin, Op::Rename("M".into()))),
        );
        assert!(matches!(e, Some(Error::Unauthenticated(_))), "{e:?}");
        assert!(
            refused(
                13,
                acting_as(
                    &lin,
                    "s2",
                    10,
                    change(&lin, C::PasswordHash("$argon2id$n".into()))
                )
            )
            .is_none()
        );
        let e = refused(
            14,
            acting_as(&lin, "s3", 776, op(&list, &lin, Op::Rename("M".into()))),
        );
        assert!(matches!(e, Some(Error::Unauthenticated(_))), "{e:?}");
        assert!(
            refused(
                15,
                acting_as(&lin, "s4", 777, op(&list, &lin, Op::Rename("M".into())))
            )
            .is_none()
        );
        assert_eq!(last_playlist(&store).name, "M");

        // An operator (the admin token) may; a deleted account may not.
        assert!(
            refused(
                16,
                acting_as(
                    &uuid::Uuid::nil().to_string(),
                    "op",
                    1,
                    change(&lin, C::Delete(true))
                )
            )
            .is_none()
        );
        let e = refused(
            17,
            acting_as(&lin, "s4", 777, op(&list, &lin, Op::Create("N".into()))),
        );
        assert!(matches!(e, Some(Error::Unauthenticated(_))), "{e:?}");
        // The nil id is the operator's, never an account's.
        let mut nil = pb::CatalogUpdate::decode(user("nobody", "listener").1.as_slice()).unwrap();
        if let Some(pb::catalog_update::Change::RegisterUser(u)) = &mut nil.change {
            u.id = uuid::Uuid::nil().to_string();
        }
        let e = refused(18, nil.encode_to_vec());
        assert!(matches!(e, Some(Error::Invalid { .. })), "{e:?}");
        // No authority: an anonymous listener's registration (and entries
        // ordered before authorities were) apply as their proposer checked.
        let (_, reg) = user("newbie", "listener");
        assert!(matches!(
            store.apply_update(19, &reg, None),
            Ok(Applied::Changed { .. })
        ));
    }
}
