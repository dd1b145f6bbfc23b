//! Accounts, sessions and playlists in the GraphQL schema.
//!
//! `register` and `login` answer a session token for
//! `Authorization: Bearer …`, valid for `session_ttl_secs`; `logout` revokes
//! it on every gateway (a revocation is a catalog update). Playlists belong to
//! the account of the session; every change is ordered by the storage
//! nodes' ring (see [`crate::accounts`]).

use std::sync::Arc;

use crate::cluster::{AccountUpdate, ListeningEdit, PlaylistEdit, UserEdit};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use rondo_core::session::{Role, Session};
use rondo_core::{PlaylistId, SongId, UserId};

use super::{
    Auth, DEFAULT_PAGE, DateTime, FromPage, MAX_PAGE, PageInfo, Song, SongConnection,
    UnsignedInt64, parse_id, position_page, position_page_info, snapshot, state,
};
use crate::AppState;
use crate::accounts::{AppPasswordRec, PlaylistRec, UserRec};
use crate::error::{Error, GqlResult};

/// Shortest accepted password, in characters.
const MIN_PASSWORD: usize = 8;
/// Longest accepted password, in bytes (argon2 takes any length; this
/// bounds the work an anonymous request can cause).
const MAX_PASSWORD: usize = 1024;

/// What an account may do.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum UserRole {
    /// Browses, plays and keeps playlists.
    Listener,
    /// Also uploads and deletes songs and manages accounts.
    Admin,
}

impl From<Role> for UserRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Listener => UserRole::Listener,
            Role::Admin => UserRole::Admin,
        }
    }
}

/// An account.
pub struct User(pub UserRec);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn role(&self) -> UserRole {
        self.0.role.into()
    }
    async fn created_at(&self) -> DateTime {
        DateTime::from_unix_ms(self.0.created_at_ms)
    }
}

/// An app password: a secret for one app (a Subsonic client such as
/// DSub or Symfonium), which it sends as the account's password, as the key
/// of its md5 token, or as its `apiKey`. Revoking it ends that app's
/// access alone; the account's password keeps working.
pub struct AppPassword(pub AppPasswordRec);

#[Object]
impl AppPassword {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// What the account calls it ("DSub on my phone").
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> DateTime {
        DateTime::from_unix_ms(self.0.created_at_ms)
    }
}

/// A new app password, with its secret: shown this once.
#[derive(SimpleObject)]
pub struct NewAppPassword {
    pub app_password: AppPassword,
    /// The secret to give the app (as its password or API key).
    pub secret: String,
}

/// The longest app password name, in characters.
const MAX_APP_PASSWORD_NAME: usize = 100;

/// The account a request about app passwords is for: the session's own
/// (`user_id` absent or its own), or for an admin (or the admin token,
/// which must name one) any.
fn app_password_owner(ctx: &Context<'_>, user_id: Option<&ID>) -> Result<UserId, Error> {
    let named = user_id.map(parse_id::<UserId>).transpose()?;
    let target = match (ctx.data_opt::<Auth>(), named) {
        (Some(Auth::User(s)), None) => s.user,
        (Some(Auth::User(s)), Some(id)) if id == s.user => id,
        (Some(Auth::User(s)), Some(id)) if s.role == Role::Admin => id,
        (Some(Auth::User(_)), Some(_)) => {
            return Err(Error::Forbidden(
                "only an admin manages another account's app passwords",
            ));
        }
        (Some(Auth::Admin), Some(id)) => id,
        (Some(Auth::Admin), None) => {
            return Err(Error::BadUserInput(
                "the admin token names no account: give userId".into(),
            ));
        }
        _ => {
            return Err(session(ctx)
                .err()
                .unwrap_or(Error::Unauthenticated("log in first")));
        }
    };
    account(ctx, target)?;
    Ok(target)
}

/// A listening list's length: 1 to 500.
fn listening_page(first: i32) -> Result<usize, Error> {
    if !(1..=500).contains(&first) {
        return Err(Error::BadUserInput("first must be 1 to 500".into()));
    }
    Ok(first as usize)
}

/// The session account's played songs, by `key` (highest first).
fn played(
    ctx: &Context<'_>,
    first: i32,
    key: impl Fn(&crate::accounts::Marks) -> (u64, u64),
) -> async_graphql::Result<Vec<Song>> {
    let s = session(ctx).gql()?;
    let n = listening_page(first).gql()?;
    let snap = snapshot(ctx);
    let mut v: Vec<((u64, u64), uuid::Uuid)> = snap
        .accounts
        .all_marks(s.user)
        .filter(|(_, m)| m.kind == 1 && m.play_count > 0)
        .map(|(id, m)| (key(m), *id))
        .collect();
    v.sort_by_key(|(k, id)| std::cmp::Reverse((*k, *id)));
    Ok(v.into_iter()
        .filter_map(|(_, id)| snap.song(SongId(id)).cloned())
        .take(n)
        .map(Song)
        .collect())
}

/// A new app password's secret: 32 lower-case letters and digits (about
/// 165 bits), easy to type on a phone.
fn new_secret() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A session: the token to send as `Authorization: Bearer <token>`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub token: String,
    pub expires_at: DateTime,
    pub user: User,
}

/// A playlist, visible to its owner (and admins).
pub struct Playlist(pub PlaylistRec);

#[Object]
impl Playlist {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn owner(&self, ctx: &Context<'_>) -> Option<User> {
        snapshot(ctx).accounts.user(self.0.owner).cloned().map(User)
    }
    /// Number of songs.
    async fn song_count(&self) -> i32 {
        i32::try_from(self.0.songs.len()).unwrap_or(i32::MAX)
    }
    /// Total duration in milliseconds (past 2^31 at about 25 days).
    async fn duration_ms(&self, ctx: &Context<'_>) -> UnsignedInt64 {
        let snap = snapshot(ctx);
        UnsignedInt64(
            self.0
                .songs
                .iter()
                .filter_map(|id| snap.song(*id))
                .map(|s| s.duration_ms)
                .fold(0u64, u64::saturating_add),
        )
    }
    /// The songs in playlist order; a cursor is a position.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn songs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<SongConnection> {
        let snap = snapshot(ctx);
        let total = self.0.songs.len();
        let page = position_page(total, first, after.as_deref()).gql()?;
        // A song deleted from the catalog leaves its playlists in the same
        // ordered update; until this gateway sees that, it is skipped.
        let items = page
            .clone()
            .filter_map(|p| {
                let song = snap.song(self.0.songs[p])?;
                Some((p.to_string(), Song(song.clone())))
            })
            .collect();
        let info = position_page_info(&page, total);
        Ok(SongConnection::from_page(items, info, total))
    }
    async fn created_at(&self) -> DateTime {
        DateTime::from_unix_ms(self.0.created_at_ms)
    }
    async fn updated_at(&self) -> DateTime {
        DateTime::from_unix_ms(self.0.updated_at_ms)
    }
}

/// A page of playlists (Relay connection).
#[derive(SimpleObject)]
pub struct PlaylistConnection {
    pub edges: Vec<PlaylistEdge>,
    pub nodes: Vec<Playlist>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

/// A page of accounts (Relay connection).
#[derive(SimpleObject)]
pub struct UserConnection {
    pub edges: Vec<UserEdge>,
    pub nodes: Vec<User>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

/// One account in a connection.
#[derive(SimpleObject)]
pub struct UserEdge {
    pub cursor: String,
    pub node: User,
}

/// One playlist in a connection.
#[derive(SimpleObject)]
pub struct PlaylistEdge {
    pub cursor: String,
    pub node: Playlist,
}

/// The session of this request, or why there is none.
fn session(ctx: &Context<'_>) -> Result<Session, Error> {
    match ctx.data_opt::<Auth>() {
        Some(Auth::User(s)) => Ok(*s),
        Some(Auth::Admin) => Err(Error::Unauthenticated(
            "playlists belong to accounts: log in (the admin token names no account)",
        )),
        Some(Auth::Invalid) => Err(Error::Unauthenticated("invalid or expired session token")),
        _ => Err(Error::Unauthenticated("log in first")),
    }
}

/// Whether the session may see this playlist.
fn visible(s: &Session, p: &PlaylistRec) -> bool {
    p.owner == s.user || s.role == Role::Admin
}

/// An account name as kept (NFKC, no invisible or text-direction
/// characters: `rondo_core::names::account_name`).
fn check_name(name: &str) -> Result<String, Error> {
    rondo_core::names::account_name(name).map_err(|e| Error::BadUserInput(e.to_string()))
}

/// The authority a proposal is made with: the session token of the
/// request's account, or for the admin token a one-minute operator session
/// (nil account, admin role; see the node's `acting` module); empty
/// without either (a listener's registration).
pub(crate) fn authority(ctx: &Context<'_>) -> String {
    let state = state(ctx);
    match ctx.data_opt::<Auth>() {
        Some(Auth::User(s)) => state.sessions.sign(s),
        Some(Auth::Admin) => state.sessions.sign(&Session::operator(
            crate::clock::unix_now_ms(),
            *uuid::Uuid::new_v4().as_bytes(),
        )),
        _ => String::new(),
    }
}

/// Orders an account or playlist update through a live storage node, with
/// the request's authority, and waits until this gateway's index has it.
async fn propose(ctx: &Context<'_>, update: AccountUpdate) -> Result<(), Error> {
    state(ctx).cluster.propose(update, authority(ctx)).await
}

async fn issue(state: &Arc<AppState>, user: UserRec) -> AuthPayload {
    let ttl = state
        .config
        .session_ttl_secs
        .min(crate::config::MAX_SESSION_TTL_SECS);
    let expires = crate::clock::unix_now().saturating_add(ttl);
    let token = state.sessions.sign(&Session {
        user: user.id,
        role: user.role,
        issued_ms: crate::clock::unix_now_ms(),
        expires,
        id: *uuid::Uuid::new_v4().as_bytes(),
    });
    AuthPayload {
        token,
        expires_at: DateTime::from_unix_ms(expires.saturating_mul(1000)),
        user: User(user),
    }
}

/// The client's address, when the server knows it.
fn client_ip(ctx: &Context<'_>) -> Option<std::net::IpAddr> {
    ctx.data_opt::<crate::limits::ClientIp>().and_then(|c| c.0)
}

/// Whether a new password is long enough, and not too long.
fn check_password_length(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(Error::BadUserInput(format!(
            "a password must be {MIN_PASSWORD} to {MAX_PASSWORD} bytes long"
        )));
    }
    Ok(())
}

/// A new password's hash, if the password is acceptable.
async fn new_password_hash(state: &Arc<AppState>, password: String) -> Result<String, Error> {
    check_password_length(&password)?;
    let _turn = state.limits.hashing_turn().await?;
    crate::accounts::hash_password(password).await
}

/// The account of `id` as indexed, or NOT_FOUND.
fn account(ctx: &Context<'_>, id: UserId) -> Result<UserRec, Error> {
    state(ctx)
        .cluster
        .snapshot()
        .accounts
        .user(id)
        .cloned()
        .ok_or_else(|| Error::NotFound {
            kind: "user",
            id: id.to_string(),
        })
}

/// Orders an admin's or the account's own change of an account.
async fn change_account(ctx: &Context<'_>, user: UserId, edit: UserEdit) -> Result<(), Error> {
    let update = AccountUpdate::User {
        user,
        at_ms: crate::clock::unix_now_ms(),
        edit,
    };
    propose(ctx, update).await
}

async fn create_account(
    ctx: &Context<'_>,
    name: &str,
    password: String,
    role: Role,
) -> Result<UserRec, Error> {
    let state = state(ctx);
    let name = check_name(name)?;
    if state.cluster.snapshot().accounts.user_like(&name).is_some() {
        return Err(Error::Conflict(format!("the name {name:?} is taken")));
    }
    let id = UserId(uuid::Uuid::new_v4());
    let password_hash = new_password_hash(state, password).await?;
    propose(
        ctx,
        AccountUpdate::Register {
            id,
            name,
            password_hash,
            role: role.as_str(),
            created_at_ms: crate::clock::unix_now_ms(),
        },
    )
    .await?;
    state
        .cluster
        .snapshot()
        .accounts
        .user(id)
        .cloned()
        .ok_or_else(|| Error::Unavailable("the new account is not indexed yet".into()))
}

/// Account and playlist queries.
#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The account of the session; null without one.
    async fn me(&self, ctx: &Context<'_>) -> Option<User> {
        let s = session(ctx).ok()?;
        snapshot(ctx).accounts.user(s.user).cloned().map(User)
    }

    /// The songs the session's account starred, most recently starred
    /// first (at most `first`, 100 by default).
    async fn starred_songs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] first: i32,
    ) -> async_graphql::Result<Vec<Song>> {
        let s = session(ctx).gql()?;
        let snap = snapshot(ctx);
        let n = listening_page(first).gql()?;
        Ok(snap
            .accounts
            .starred(s.user, 1)
            .into_iter()
            .filter_map(|id| snap.song(SongId(id)).cloned())
            .take(n)
            .map(Song)
            .collect())
    }

    /// The songs the session's account played, last played first.
    async fn recently_played(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<Song>> {
        played(ctx, first, |m| (m.last_played_ms.unwrap_or(0), 0))
    }

    /// The songs the session's account played most, most first.
    async fn most_played(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<Song>> {
        // Ties: the last played first.
        played(ctx, first, |m| {
            (m.play_count, m.last_played_ms.unwrap_or(0))
        })
    }

    /// The app passwords of the session's account, newest first (an admin
    /// may name another account; the admin token must).
    async fn app_passwords(
        &self,
        ctx: &Context<'_>,
        user_id: Option<ID>,
    ) -> async_graphql::Result<Vec<AppPassword>> {
        let user = app_password_owner(ctx, user_id.as_ref()).gql()?;
        Ok(snapshot(ctx)
            .accounts
            .app_passwords_of(user)
            .into_iter()
            .cloned()
            .map(AppPassword)
            .collect())
    }

    /// Every account, by name (admins only).
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<UserConnection> {
        super::require_admin(ctx).gql()?;
        let snap = snapshot(ctx);
        let all = snap.accounts.users();
        let page = position_page(all.len(), first, after.as_deref()).gql()?;
        let edges: Vec<UserEdge> = page
            .clone()
            .map(|p| UserEdge {
                cursor: p.to_string(),
                node: User(all[p].clone()),
            })
            .collect();
        Ok(UserConnection {
            nodes: edges.iter().map(|e| User(e.node.0.clone())).collect(),
            page_info: position_page_info(&page, all.len()),
            edges,
            total_count: i32::try_from(all.len()).unwrap_or(i32::MAX),
        })
    }

    /// The session's playlists, newest first.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn playlists(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PlaylistConnection> {
        let s = session(ctx).gql()?;
        let snap = snapshot(ctx);
        let all = snap.accounts.playlists_of(s.user);
        let page = position_page(all.len(), first, after.as_deref()).gql()?;
        let edges: Vec<PlaylistEdge> = page
            .clone()
            .map(|p| PlaylistEdge {
                cursor: p.to_string(),
                node: Playlist(all[p].clone()),
            })
            .collect();
        Ok(PlaylistConnection {
            nodes: edges.iter().map(|e| Playlist(e.node.0.clone())).collect(),
            page_info: position_page_info(&page, all.len()),
            edges,
            total_count: i32::try_from(all.len()).unwrap_or(i32::MAX),
        })
    }

    /// One playlist of the session's account (admins see any).
    async fn playlist(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Playlist>> {
        let s = session(ctx).gql()?;
        let id: PlaylistId = parse_id(&id).gql()?;
        let snap = snapshot(ctx);
        match snap.accounts.playlist(id) {
            Some(p) if visible(&s, p) => Ok(Some(Playlist(p.clone()))),
            Some(_) => Err(Error::Forbidden("this playlist belongs to another account")).gql(),
            None => Ok(None),
        }
    }
}

/// Account and playlist mutations.
#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Opens a listener's account and a session. Admins are made by admins
    /// (`createUser`, `rondo user create --admin`), never by registering.
    /// `FORBIDDEN` when the gateway's registration is closed.
    async fn register(
        &self,
        ctx: &Context<'_>,
        name: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let state = state(ctx);
        if state.config.registration == crate::config::Registration::Closed {
            return Err(Error::Forbidden(
                "registration is closed: an admin creates accounts (`rondo user create`)",
            ))
            .gql();
        }
        state.limits.attempt_from(client_ip(ctx)).gql()?;
        let user = create_account(ctx, &name, password, Role::Listener)
            .await
            .gql()?;
        Ok(issue(state, user).await)
    }

    /// Opens a session. Wrong names and wrong passwords get the same
    /// `UNAUTHENTICATED` answer.
    async fn login(
        &self,
        ctx: &Context<'_>,
        name: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let state = state(ctx);
        state.limits.attempt_from(client_ip(ctx)).gql()?;
        state.limits.guess_at(&name).gql()?;
        if password.len() > MAX_PASSWORD || name.len() > MAX_PASSWORD {
            return Err(Error::Unauthenticated("wrong name or password")).gql();
        }
        // A node checks the password (the hashes stay there), against a
        // fixed hash for an unknown name so that timing tells nothing.
        let id = {
            let _turn = state.limits.hashing_turn().await.gql()?;
            state.cluster.check_password(name, password).await.gql()?
        };
        // A node that has not applied the account's last change (a new
        // password) may not vouch for the old one.
        let id = id.filter(|(id, version)| {
            let known = state
                .cluster
                .snapshot()
                .accounts
                .user(*id)
                .map(|u| u.version);
            known.is_none_or(|k| k <= *version)
        });
        let Some((id, _)) = id else {
            return Err(Error::Unauthenticated("wrong name or password")).gql();
        };
        let user = account(ctx, id).map_err(|_| {
            Error::Unavailable("the account is not indexed by this gateway yet".into())
        });
        Ok(issue(state, user.gql()?).await)
    }

    /// Changes the session's password; every other session of the account
    /// ends (on every gateway), and the answer is a new session.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        old_password: String,
        new_password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let s = session(ctx).gql()?;
        let state = state(ctx);
        let me = account(ctx, s.user).gql()?;
        check_password_length(&new_password).gql()?;
        state.limits.attempt_from(client_ip(ctx)).gql()?;
        state.limits.guess_at(&me.name).gql()?;
        if old_password.len() > MAX_PASSWORD {
            return Err(Error::Unauthenticated("wrong password")).gql();
        }
        let checked = {
            let _turn = state.limits.hashing_turn().await.gql()?;
            state
                .cluster
                .check_password(me.name.clone(), old_password)
                .await
                .gql()?
        };
        // From a node that has applied the account's last change.
        let fresh = checked.is_some_and(|(id, v)| id == s.user && v >= me.version);
        if !fresh {
            return Err(Error::Unauthenticated("wrong password")).gql();
        }
        let hash = new_password_hash(state, new_password).await.gql()?;
        change_account(ctx, s.user, UserEdit::Password(hash))
            .await
            .gql()?;
        Ok(issue(state, account(ctx, s.user).gql()?).await)
    }

    /// Sets an account's password (admins only: a forgotten password);
    /// the account's sessions end.
    async fn set_user_password(
        &self,
        ctx: &Context<'_>,
        id: ID,
        password: String,
    ) -> async_graphql::Result<User> {
        super::require_admin(ctx).gql()?;
        let id: UserId = parse_id(&id).gql()?;
        account(ctx, id).gql()?;
        let hash = new_password_hash(state(ctx), password).await.gql()?;
        change_account(ctx, id, UserEdit::Password(hash))
            .await
            .gql()?;
        Ok(User(account(ctx, id).gql()?))
    }

    /// Makes an account an admin or a listener (admins only). `FORBIDDEN`
    /// for the last admin account.
    async fn set_user_role(
        &self,
        ctx: &Context<'_>,
        id: ID,
        role: UserRole,
    ) -> async_graphql::Result<User> {
        super::require_admin(ctx).gql()?;
        let id: UserId = parse_id(&id).gql()?;
        account(ctx, id).gql()?;
        let role = match role {
            UserRole::Admin => Role::Admin,
            UserRole::Listener => Role::Listener,
        };
        change_account(ctx, id, UserEdit::Role(role.as_str()))
            .await
            .gql()?;
        Ok(User(account(ctx, id).gql()?))
    }

    /// Deletes an account with its playlists (admins only); its sessions
    /// end. `FORBIDDEN` for the last admin account.
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        super::require_admin(ctx).gql()?;
        let id: UserId = parse_id(&id).gql()?;
        account(ctx, id).gql()?;
        change_account(ctx, id, UserEdit::Delete).await.gql()?;
        Ok(true)
    }

    /// Ends this session: its token is refused by every gateway from now
    /// on (the revocation is ordered like any catalog update and kept until
    /// the token would have expired).
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let s = session(ctx).gql()?;
        propose(
            ctx,
            AccountUpdate::Revoke {
                session_id: s.id_hex(),
                expires_at: s.expires,
                at: crate::clock::unix_now(),
            },
        )
        .await
        .gql()?;
        Ok(true)
    }

    /// A new app password for a Subsonic app (`rondo user app-password
    /// create`): the account's own, or (an admin) another's. The answer
    /// holds the secret, shown this once. At most 20 per account.
    async fn create_app_password(
        &self,
        ctx: &Context<'_>,
        name: String,
        user_id: Option<ID>,
    ) -> async_graphql::Result<NewAppPassword> {
        let user = app_password_owner(ctx, user_id.as_ref()).gql()?;
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_APP_PASSWORD_NAME {
            return Err(Error::BadUserInput(format!(
                "an app password's name is 1 to {MAX_APP_PASSWORD_NAME} characters"
            )))
            .gql();
        }
        let state = state(ctx);
        if snapshot(ctx).accounts.app_passwords_of(user).len() >= 20 {
            return Err(Error::Conflict(
                "an account holds at most 20 app passwords: revoke one first".into(),
            ))
            .gql();
        }
        let id = uuid::Uuid::new_v4();
        let secret = new_secret();
        let sealed = state.sealer.seal(
            &crate::accounts::app_password_aad(id, user),
            secret.as_bytes(),
        );
        propose(
            ctx,
            AccountUpdate::CreateAppPassword {
                user,
                id,
                name,
                sealed,
                created_at_ms: crate::clock::unix_now_ms(),
            },
        )
        .await
        .gql()?;
        let rec = snapshot(ctx)
            .accounts
            .app_passwords_of(user)
            .into_iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or_else(|| Error::Unavailable("the new app password is not indexed yet".into()))
            .gql()?;
        Ok(NewAppPassword {
            app_password: AppPassword(rec),
            secret,
        })
    }

    /// Revokes an app password: the app that holds it is refused from
    /// now on, by every gateway.
    async fn revoke_app_password(
        &self,
        ctx: &Context<'_>,
        id: ID,
        user_id: Option<ID>,
    ) -> async_graphql::Result<bool> {
        let user = app_password_owner(ctx, user_id.as_ref()).gql()?;
        let pid: uuid::Uuid = id
            .as_str()
            .parse()
            .map_err(|_| {
                Error::BadUserInput(format!("{:?} is not an app password id", id.as_str()))
            })
            .gql()?;
        if !snapshot(ctx)
            .accounts
            .app_passwords_of(user)
            .iter()
            .any(|p| p.id == pid)
        {
            return Err(Error::NotFound {
                kind: "app password",
                id: id.to_string(),
            })
            .gql();
        }
        propose(ctx, AccountUpdate::RevokeAppPassword { user, id: pid })
            .await
            .gql()?;
        Ok(true)
    }

    /// Stars (or, with `starred: false`, unstars) songs for the session's
    /// account; answers them.
    async fn star_songs(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
        starred: bool,
    ) -> async_graphql::Result<Vec<Song>> {
        let s = session(ctx).gql()?;
        if ids.is_empty() || ids.len() > 500 {
            return Err(Error::BadUserInput("star 1 to 500 songs at once".into())).gql();
        }
        let snap = snapshot(ctx);
        let songs = ids
            .iter()
            .map(|id| {
                let id: SongId = parse_id(id)?;
                snap.song(id).cloned().ok_or_else(|| Error::NotFound {
                    kind: "song",
                    id: id.to_string(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()
            .gql()?;
        propose(
            ctx,
            AccountUpdate::Listening {
                user: s.user,
                at_ms: crate::clock::unix_now_ms(),
                edit: ListeningEdit::Stars {
                    items: songs.iter().map(|s| s.id.0).collect(),
                    starred,
                },
            },
        )
        .await
        .gql()?;
        Ok(songs.into_iter().map(Song).collect())
    }

    /// Counts a play of the song by the session's account (the web app
    /// calls it once a song has played half its length or four minutes).
    /// Answers the song, with its play count, once the play is ordered.
    async fn record_play(&self, ctx: &Context<'_>, song_id: ID) -> async_graphql::Result<Song> {
        let s = session(ctx).gql()?;
        let id: SongId = parse_id(&song_id).gql()?;
        let song = snapshot(ctx)
            .song(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "song",
                id: id.to_string(),
            })
            .gql()?;
        state(ctx)
            .plays
            .record(s.user, id, crate::clock::unix_now_ms())
            .await
            .gql()?;
        Ok(Song(song))
    }

    /// Creates an account (admins only; `rondo user create`).
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        name: String,
        password: String,
        #[graphql(default_with = "UserRole::Listener")] role: UserRole,
    ) -> async_graphql::Result<User> {
        super::require_admin(ctx).gql()?;
        let role = match role {
            UserRole::Admin => Role::Admin,
            UserRole::Listener => Role::Listener,
        };
        let user = create_account(ctx, &name, password, role).await.gql()?;
        Ok(User(user))
    }

    /// A new playlist, optionally with songs.
    async fn create_playlist(
        &self,
        ctx: &Context<'_>,
        name: String,
        song_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<Playlist> {
        let s = session(ctx).gql()?;
        let name = check_name(&name).gql()?;
        let id = PlaylistId(uuid::Uuid::new_v4());
        playlist_op(ctx, &s, id, PlaylistEdit::Create(name)).await?;
        if let Some(songs) = song_ids.filter(|s| !s.is_empty()) {
            return add_songs(ctx, &s, id, songs, None).await;
        }
        current(ctx, id)
    }

    async fn rename_playlist(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: String,
    ) -> async_graphql::Result<Playlist> {
        let s = session(ctx).gql()?;
        let id: PlaylistId = parse_id(&id).gql()?;
        let name = check_name(&name).gql()?;
        playlist_op(ctx, &s, id, PlaylistEdit::Rename(name)).await?;
        current(ctx, id)
    }

    async fn delete_playlist(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let s = session(ctx).gql()?;
        let id: PlaylistId = parse_id(&id).gql()?;
        playlist_op(ctx, &s, id, PlaylistEdit::Delete).await?;
        Ok(true)
    }

    /// Inserts songs before `position` (default: at the end).
    async fn add_songs_to_playlist(
        &self,
        ctx: &Context<'_>,
        id: ID,
        song_ids: Vec<ID>,
        position: Option<i32>,
    ) -> async_graphql::Result<Playlist> {
        let s = session(ctx).gql()?;
        let id: PlaylistId = parse_id(&id).gql()?;
        add_songs(ctx, &s, id, song_ids, position).await
    }

    /// Removes the songs at these positions.
    async fn remove_songs_from_playlist(
        &self,
        ctx: &Context<'_>,
        id: ID,
        positions: Vec<i32>,
    ) -> async_graphql::Result<Playlist> {
        let s = session(ctx).gql()?;
        let id: PlaylistId = parse_id(&id).gql()?;
        let positions = positions
            .into_iter()
            .map(|p| u32::try_from(p).map_err(|_| Error::BadUserInput(format!("bad position {p}"))))
            .collect::<Result<Vec<u32>, Error>>()
            .gql()?;
        playlist_op(ctx, &s, id, PlaylistEdit::RemoveSongs(positions)).await?;
        current(ctx, id)
    }

    /// Moves the song at `from` to position `to`.
    async fn move_playlist_song(
        &self,
        ctx: &Context<'_>,
        id: ID,
        from: i32,
        to: i32,
    ) -> async_graphql::Result<Playlist> {
        let s = session(ctx).gql()?;
        let id: PlaylistId = parse_id(&id).gql()?;
        let (Ok(from), Ok(to)) = (u32::try_from(from), u32::try_from(to)) else {
            return Err(Error::BadUserInput("positions are not negative".into())).gql();
        };
        playlist_op(ctx, &s, id, PlaylistEdit::MoveSong { from, to }).await?;
        current(ctx, id)
    }
}

async fn add_songs(
    ctx: &Context<'_>,
    s: &Session,
    id: PlaylistId,
    song_ids: Vec<ID>,
    position: Option<i32>,
) -> async_graphql::Result<Playlist> {
    let songs = song_ids
        .iter()
        .map(parse_id::<SongId>)
        .collect::<Result<Vec<_>, _>>()
        .gql()?;
    if songs.len() > usize::try_from(MAX_PAGE).unwrap_or(100) * 10 {
        return Err(Error::BadUserInput("at most 1000 songs at once".into())).gql();
    }
    let position = position
        .map(|p| u32::try_from(p).map_err(|_| Error::BadUserInput(format!("bad position {p}"))))
        .transpose()
        .gql()?;
    playlist_op(ctx, s, id, PlaylistEdit::AddSongs { songs, position }).await?;
    current(ctx, id)
}

async fn playlist_op(
    ctx: &Context<'_>,
    s: &Session,
    id: PlaylistId,
    edit: PlaylistEdit,
) -> async_graphql::Result<()> {
    // Checked here for a quick answer, and again when applied (in order).
    if !matches!(edit, PlaylistEdit::Create(_)) {
        match snapshot(ctx).accounts.playlist(id) {
            Some(p) if visible(s, p) => {}
            Some(_) => {
                return Err(Error::Forbidden("only its owner may change a playlist")).gql();
            }
            None => {
                return Err(Error::NotFound {
                    kind: "playlist",
                    id: id.to_string(),
                })
                .gql();
            }
        }
    }
    propose(
        ctx,
        AccountUpdate::Playlist {
            playlist: id,
            actor: s.user,
            at_ms: crate::clock::unix_now_ms(),
            edit,
        },
    )
    .await
    .gql()
}

fn current(ctx: &Context<'_>, id: PlaylistId) -> async_graphql::Result<Playlist> {
    state(ctx)
        .cluster
        .snapshot()
        .accounts
        .playlist(id)
        .cloned()
        .map(Playlist)
        .ok_or_else(|| Error::NotFound {
            kind: "playlist",
            id: id.to_string(),
        })
        .gql()
}
