//! Who may order which update: the rules, and the standing of an
//! authority against the accounts. A proposing node checks them before it
//! orders an update (`crate::acting`, with the session token); every node
//! checks them again when it applies the update, against the accounts at
//! that point of the total order, so a demotion, a deletion, a logout or a
//! password change ordered before the update decides it the same way on
//! every node, whatever the proposer saw.

use redb::ReadableTable;
use rondo_core::UserId;
use rondo_proto::storage::v1 as pb;

use super::Store;
use super::tables::{REVOKED, USERS, decode, uuid_key};
use crate::error::{Error, Result};

/// The authority an update acts with, as it stands now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acting {
    /// The account (none: an operator, i.e. the admin token).
    pub user: Option<UserId>,
    /// The account's role now is admin (an operator always is).
    pub admin: bool,
    /// The session's id (hex).
    pub session_id: String,
}

/// Whether `acting` may order `update`. Only the rules that every node
/// decides alike from the update and the accounts; the proposer adds its
/// clock checks.
pub fn permits(acting: Option<&Acting>, update: &pb::CatalogUpdate) -> Result<()> {
    use pb::catalog_update::Change as U;
    let need = || {
        acting.ok_or(Error::Unauthenticated(
            "this update needs the session of the account it acts for",
        ))
    };
    let admin = || -> Result<()> {
        if need()?.admin {
            Ok(())
        } else {
            Err(Error::Forbidden("this update needs an admin's authority"))
        }
    };
    match &update.change {
        Some(U::RegisterUser(u)) if u.role == rondo_core::session::Role::Admin.as_str() => admin(),
        Some(U::RegisterUser(_)) => Ok(()),
        Some(U::Playlist(op)) => match need()?.user {
            Some(user) if op.actor_id == user.to_string() => Ok(()),
            _ => Err(Error::Forbidden(
                "a playlist is changed only by the account of the session",
            )),
        },
        Some(U::RevokeSession(r)) => {
            if r.session_id == need()?.session_id {
                Ok(())
            } else {
                Err(Error::Forbidden("a session ends only itself"))
            }
        }
        Some(U::UserChange(c)) => {
            let own = need()?.user.is_some_and(|u| c.user_id == u.to_string());
            match c.change {
                Some(pb::user_change::Change::PasswordHash(_)) if own => Ok(()),
                _ => admin(),
            }
        }
        Some(U::AppPassword(op)) => {
            if need()?.user.is_some_and(|u| op.user_id == u.to_string()) {
                Ok(())
            } else {
                admin()
            }
        }
        Some(U::Listening(op)) => match need()?.user {
            Some(user) if op.user_id == user.to_string() => Ok(()),
            _ => Err(Error::Forbidden(
                "stars, ratings and play queues are changed only by their account",
            )),
        },
        // A gateway's batch of the plays of listeners it authenticated.
        Some(U::Plays(_)) => admin(),
        Some(U::DeleteSongId(_) | U::AlbumArt(_)) => admin(),
        // Uploads carry a checked grant; readings are the nodes' own.
        Some(U::Upsert(_) | U::Reinspected(_)) | None => Ok(()),
    }
}

/// The standing of `authority` in these tables: an operator, or an account
/// that exists, whose session was issued after its last password change
/// and not ended by a logout; its role is the account's now.
fn standing(
    users: &impl ReadableTable<u128, &'static [u8]>,
    revoked: &impl ReadableTable<&'static str, u64>,
    authority: &pb::Authority,
) -> Result<std::result::Result<Acting, Error>> {
    let gone = Error::Unauthenticated("invalid or expired session");
    let Ok(key) = uuid_key(&authority.user_id) else {
        return Ok(Err(gone));
    };
    if authority.session_id.is_empty() || authority.session_id.len() > 64 {
        return Ok(Err(gone));
    }
    if key == 0 {
        return Ok(Ok(Acting {
            user: None,
            admin: true,
            session_id: authority.session_id.clone(),
        }));
    }
    let Some(account) = users
        .get(key)?
        .map(|g| decode::<pb::User>("users", g.value()))
        .transpose()?
    else {
        return Ok(Err(Error::Unauthenticated("the session's account is gone")));
    };
    if authority.issued_ms < account.sessions_after_ms
        || revoked.get(authority.session_id.as_str())?.is_some()
    {
        return Ok(Err(gone));
    }
    Ok(Ok(Acting {
        user: Some(UserId(uuid::Uuid::from_u128(key))),
        admin: account.role == rondo_core::session::Role::Admin.as_str(),
        session_id: authority.session_id.clone(),
    }))
}

/// Checks an ordered update's authority in the applying transaction: the
/// refusal every node reaches alike, or `None` to apply it. An update
/// without an authority was checked by its proposer only (an anonymous
/// registration, a song, an entry from before authorities were ordered).
pub(super) fn refusal(
    txn: &redb::WriteTransaction,
    update: &pb::CatalogUpdate,
) -> Result<Option<Error>> {
    let Some(authority) = &update.authority else {
        return Ok(None);
    };
    let users = txn.open_table(USERS)?;
    let revoked = txn.open_table(REVOKED)?;
    let acting = match standing(&users, &revoked, authority)? {
        Ok(a) => a,
        Err(e) => return Ok(Some(e)),
    };
    Ok(permits(Some(&acting), update).err())
}

impl Store {
    /// The standing of `authority` in this node's accounts now.
    pub fn standing(
        &self,
        authority: &pb::Authority,
    ) -> Result<std::result::Result<Acting, Error>> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let revoked = txn.open_table(REVOKED)?;
        standing(&users, &revoked, authority)
    }
}
