//! Whom a proposal acts for. A gateway proposes account, session and
//! playlist updates on behalf of a listener or an admin; it sends the
//! session token it verified ([`pb::ProposeRequest::session`]), and the
//! node checks it again, against its own copy of the accounts, before the
//! update is ordered: a playlist changes only for its actor, a logout ends
//! only its own session, an account is changed by itself (its password)
//! or by an admin, and an admin is made only by an admin. A gateway bug
//! that names the wrong actor is refused here, whatever the gateway
//! believed.
//!
//! An admin token's request (the CLI) has no account: its gateway signs a
//! short operator session for it, with the nil user id and the admin role.

use rondo_core::UserId;
use rondo_core::session::{Role, Session, SessionSigner};
use rondo_proto::storage::v1 as pb;

use crate::error::{Error, Result};
use crate::store::Store;

/// How far ahead of this node's clock a proposer's may be.
const CLOCK_SKEW_SECS: u64 = 60;

/// The authority a verified session carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Acting {
    /// The account (none: an operator session).
    user: Option<UserId>,
    admin: bool,
    session: Session,
}

/// Checks that `token` may propose `update` (`now`: Unix seconds).
/// Blocking: it reads the store.
pub fn check(
    store: &Store,
    sessions: &SessionSigner,
    token: &str,
    update: &pb::CatalogUpdate,
    now: u64,
) -> Result<()> {
    use pb::catalog_update::Change as U;
    let acting = if token.is_empty() {
        None
    } else {
        Some(verify(store, sessions, token, now)?)
    };
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
        Some(U::RegisterUser(u)) if u.role == Role::Admin.as_str() => admin(),
        Some(U::RegisterUser(_)) => Ok(()),
        Some(U::Playlist(op)) => match need()?.user {
            Some(user) if op.actor_id == user.to_string() => Ok(()),
            _ => Err(Error::Forbidden(
                "a playlist is changed only by the account of the session",
            )),
        },
        Some(U::RevokeSession(r)) => {
            let session = need()?.session;
            if r.session_id != session.id_hex() {
                Err(Error::Forbidden("a session ends only itself"))
            } else if r.expires_at < session.expires || r.at > now.saturating_add(CLOCK_SKEW_SECS) {
                Err(Error::Invalid {
                    what: "a logout is kept until its session expires, from the present",
                })
            } else {
                Ok(())
            }
        }
        Some(U::UserChange(c)) => {
            let acting = need()?;
            if c.at_ms > now.saturating_add(CLOCK_SKEW_SECS).saturating_mul(1000) {
                return Err(Error::Invalid {
                    what: "an account change is dated in the future",
                });
            }
            let own = acting.user.is_some_and(|u| c.user_id == u.to_string());
            match c.change {
                Some(pb::user_change::Change::PasswordHash(_)) if own => Ok(()),
                _ => admin(),
            }
        }
        _ => Err(Error::Invalid {
            what: "only account, session and playlist updates can be proposed",
        }),
    }
}

/// The authority of a session token: signed with the session key, not
/// expired, and (unless it is an operator session) of an account that
/// exists, issued after its last password change and not ended by a
/// logout. The account's role now is what counts, not the token's (a
/// demoted admin's session acts as a listener's).
fn verify(store: &Store, sessions: &SessionSigner, token: &str, now: u64) -> Result<Acting> {
    let session = sessions
        .verify(token, now)
        .map_err(|_| Error::Unauthenticated("invalid or expired session"))?;
    if session.user.0.is_nil() {
        return if session.role == Role::Admin {
            Ok(Acting {
                user: None,
                admin: true,
                session,
            })
        } else {
            Err(Error::Unauthenticated("invalid or expired session"))
        };
    }
    let Some(account) = store.user(session.user)? else {
        return Err(Error::Unauthenticated("the session's account is gone"));
    };
    if session.issued_ms < account.sessions_after_ms || store.session_revoked(&session.id_hex())? {
        return Err(Error::Unauthenticated("invalid or expired session"));
    }
    Ok(Acting {
        user: Some(session.user),
        admin: account.role == Role::Admin.as_str(),
        session,
    })
}
