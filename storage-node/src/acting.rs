//! Whom a proposal acts for. A gateway proposes account, session and
//! playlist updates on behalf of a listener or an admin; it sends the
//! session token it verified ([`pb::ProposeRequest::session`]), and the
//! node checks it again, against its own copy of the accounts, before the
//! update is ordered: a playlist changes only for its actor, a logout ends
//! only its own session, an account is changed by itself (its password)
//! or by an admin, and an admin is made only by an admin. A gateway bug
//! that names the wrong actor is refused here, whatever the gateway
//! believed. The verified authority (account, session, issue time) is
//! ordered with the update, and every node checks it again when it applies
//! the update (`store::authority`): what is ordered first decides.
//!
//! An admin token's request (the CLI) has no account: its gateway signs a
//! short operator session for it, with the nil user id and the admin role.

use rondo_core::session::{Role, Session, SessionSigner};
use rondo_proto::storage::v1 as pb;

use crate::error::{Error, Result};
use crate::store::{Acting, Store, permits};

/// How far ahead of this node's clock a proposer's may be.
const CLOCK_SKEW_SECS: u64 = 60;

/// Checks that `token` may propose `update` (`now`: Unix seconds) and
/// answers the authority to order with it (none for an anonymous
/// registration). Blocking: it reads the store.
pub fn check(
    store: &Store,
    sessions: &SessionSigner,
    token: &str,
    update: &pb::CatalogUpdate,
    now: u64,
) -> Result<Option<pb::Authority>> {
    use pb::catalog_update::Change as U;
    let verified = if token.is_empty() {
        None
    } else {
        Some(verify(store, sessions, token, now)?)
    };
    permits(verified.as_ref().map(|(a, _, _)| a), update)?;
    // The proposer's clock checks: every node then applies the same dates.
    match &update.change {
        Some(U::RevokeSession(r)) => {
            let expires = verified.as_ref().map_or(0, |(_, s, _)| s.expires);
            if r.expires_at < expires || r.at > now.saturating_add(CLOCK_SKEW_SECS) {
                return Err(Error::Invalid {
                    what: "a logout is kept until its session expires, from the present",
                });
            }
        }
        Some(U::UserChange(c))
            if c.at_ms > now.saturating_add(CLOCK_SKEW_SECS).saturating_mul(1000) =>
        {
            return Err(Error::Invalid {
                what: "an account change is dated in the future",
            });
        }
        Some(U::AppPassword(pb::AppPasswordOp {
            op: Some(pb::app_password_op::Op::Create(p)),
            ..
        })) if p.created_at_ms > now.saturating_add(CLOCK_SKEW_SECS).saturating_mul(1000) => {
            return Err(Error::Invalid {
                what: "an app password is dated in the future",
            });
        }
        Some(U::Listening(op))
            if op.at_ms > now.saturating_add(CLOCK_SKEW_SECS).saturating_mul(1000) =>
        {
            return Err(Error::Invalid {
                what: "a listening change is dated in the future",
            });
        }
        Some(
            U::RegisterUser(_)
            | U::Playlist(_)
            | U::UserChange(_)
            | U::AppPassword(_)
            | U::Listening(_)
            | U::Plays(_),
        ) => {}
        _ => {
            return Err(Error::Invalid {
                what: "only account, session and playlist updates can be proposed",
            });
        }
    }
    Ok(verified.map(|(_, _, authority)| authority))
}

/// Checks that `token` carries an admin's authority (deleting a song,
/// changing the layout) and answers it.
pub fn admin(
    store: &Store,
    sessions: &SessionSigner,
    token: &str,
    now: u64,
) -> Result<pb::Authority> {
    if token.is_empty() {
        return Err(Error::Unauthenticated("this needs an admin's session"));
    }
    let (acting, _, authority) = verify(store, sessions, token, now)?;
    if acting.admin {
        Ok(authority)
    } else {
        Err(Error::Forbidden("this needs an admin's authority"))
    }
}

/// The authority of a session token: signed with the session key, not
/// expired, and (unless it is an operator session) of an account that
/// exists, issued after its last password change and not ended by a
/// logout. The account's role now is what counts, not the token's (a
/// demoted admin's session acts as a listener's).
fn verify(
    store: &Store,
    sessions: &SessionSigner,
    token: &str,
    now: u64,
) -> Result<(Acting, Session, pb::Authority)> {
    let gone = || Error::Unauthenticated("invalid or expired session");
    let session = sessions.verify(token, now).map_err(|_| gone())?;
    if session.user.0.is_nil() && session.role != Role::Admin {
        return Err(gone());
    }
    let authority = pb::Authority {
        user_id: session.user.to_string(),
        session_id: session.id_hex(),
        issued_ms: session.issued_ms,
    };
    let acting = store.standing(&authority)??;
    Ok((acting, session, authority))
}
