//! `rondo user`: accounts, with the admin token (create, list, role,
//! password, delete, app passwords). Passwords are read from standard
//! input (one line), so that they stay out of shell history.

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use rondo_cli::api::User;
use rondo_cli::client::Client;
use serde::Deserialize;
use serde_json::json;

use super::{Conn, Exit};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from standard input.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// The account name.
        name: String,
        /// Make it an admin (uploads, deletes, accounts).
        #[arg(long)]
        admin: bool,
    },
    /// List the accounts: name, role, id.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Make an account an admin or a listener (the last admin stays one).
    Role {
        #[command(flatten)]
        conn: Conn,
        name: String,
        role: RoleArg,
    },
    /// Set an account's password (read from standard input); its sessions
    /// end.
    Password {
        #[command(flatten)]
        conn: Conn,
        name: String,
    },
    /// Delete an account and its playlists; its sessions end.
    Delete {
        #[command(flatten)]
        conn: Conn,
        name: String,
    },
    /// An account's app passwords: secrets for Subsonic apps (DSub,
    /// Symfonium, …), each revoked on its own.
    #[command(subcommand)]
    AppPassword(AppPasswordCommand),
}

#[derive(Debug, Subcommand)]
pub enum AppPasswordCommand {
    /// Create one; prints its secret (shown this once).
    Create {
        #[command(flatten)]
        conn: Conn,
        /// The account.
        user: String,
        /// What it is for ("DSub on my phone").
        #[arg(long)]
        name: String,
    },
    /// List an account's app passwords: name, created, id.
    List {
        #[command(flatten)]
        conn: Conn,
        user: String,
    },
    /// Revoke one by id: the app holding it is refused from now on.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        user: String,
        id: String,
    },
}

/// A role on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Listener,
    Admin,
}

impl RoleArg {
    fn graphql(self) -> &'static str {
        match self {
            RoleArg::Listener => "LISTENER",
            RoleArg::Admin => "ADMIN",
        }
    }
}

pub async fn run(cmd: UserCommand) -> anyhow::Result<Exit> {
    match cmd {
        UserCommand::Create { conn, name, admin } => create(&conn.client()?, name, admin).await,
        UserCommand::List { conn } => {
            for u in all_users(&conn.client()?).await? {
                println!("{:<24} {:<8} {}", u.name, u.role.to_lowercase(), u.id);
            }
            Ok(Exit::Success)
        }
        UserCommand::Role { conn, name, role } => {
            let client = conn.client()?;
            let Some(user) = named(&client, &name).await? else {
                return Ok(no_account(&name));
            };
            let changed: serde_json::Value = client
                .query(
                    "mutation($u: ID!, $r: UserRole!) { setUserRole(id: $u, role: $r) { name role } }",
                    json!({ "u": user.id, "r": role.graphql() }),
                )
                .await?;
            println!(
                "{} is now {}",
                user.name,
                changed["setUserRole"]["role"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase()
            );
            Ok(Exit::Success)
        }
        UserCommand::Password { conn, name } => {
            let client = conn.client()?;
            let Some(user) = named(&client, &name).await? else {
                return Ok(no_account(&name));
            };
            let password = read_password()?;
            client
                .query(
                    "mutation($u: ID!, $p: String!) { setUserPassword(id: $u, password: $p) { id } }",
                    json!({ "u": user.id, "p": password }),
                )
                .await?;
            println!("password of {} set; its sessions ended", user.name);
            Ok(Exit::Success)
        }
        UserCommand::Delete { conn, name } => {
            let client = conn.client()?;
            let Some(user) = named(&client, &name).await? else {
                return Ok(no_account(&name));
            };
            client
                .query(
                    "mutation($u: ID!) { deleteUser(id: $u) }",
                    json!({ "u": user.id }),
                )
                .await?;
            println!("deleted {} ({}) and its playlists", user.name, user.id);
            Ok(Exit::Success)
        }
        UserCommand::AppPassword(cmd) => app_password(cmd).await,
    }
}

async fn app_password(cmd: AppPasswordCommand) -> anyhow::Result<Exit> {
    match cmd {
        AppPasswordCommand::Create { conn, user, name } => {
            let client = conn.client()?;
            let Some(account) = named(&client, &user).await? else {
                return Ok(no_account(&user));
            };
            let made: serde_json::Value = client
                .query(
                    "mutation($u: ID!, $n: String!) { createAppPassword(userId: $u, name: $n) { \
                       appPassword { id name } secret } }",
                    json!({ "u": account.id, "n": name }),
                )
                .await?;
            let made = &made["createAppPassword"];
            println!(
                "app password {:?} of {} ({}); its secret, shown this once:\n{}",
                made["appPassword"]["name"].as_str().unwrap_or_default(),
                account.name,
                made["appPassword"]["id"].as_str().unwrap_or_default(),
                made["secret"].as_str().unwrap_or_default()
            );
            Ok(Exit::Success)
        }
        AppPasswordCommand::List { conn, user } => {
            let client = conn.client()?;
            let Some(account) = named(&client, &user).await? else {
                return Ok(no_account(&user));
            };
            let listed: serde_json::Value = client
                .query(
                    "query($u: ID!) { appPasswords(userId: $u) { id name createdAt } }",
                    json!({ "u": account.id }),
                )
                .await?;
            for p in listed["appPasswords"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<26} {}",
                    p["name"].as_str().unwrap_or_default(),
                    p["createdAt"].as_str().unwrap_or_default(),
                    p["id"].as_str().unwrap_or_default()
                );
            }
            Ok(Exit::Success)
        }
        AppPasswordCommand::Revoke { conn, user, id } => {
            let client = conn.client()?;
            let Some(account) = named(&client, &user).await? else {
                return Ok(no_account(&user));
            };
            client
                .query(
                    "mutation($u: ID!, $id: ID!) { revokeAppPassword(userId: $u, id: $id) }",
                    json!({ "u": account.id, "id": id }),
                )
                .await?;
            println!("revoked app password {id} of {}", account.name);
            Ok(Exit::Success)
        }
    }
}

fn no_account(name: &str) -> Exit {
    eprintln!("error: no account named {name:?} (`rondo user list` shows them)");
    Exit::Failure
}

fn read_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("read the password from standard input")?;
    Ok(password.trim_end_matches(['\r', '\n']).to_owned())
}

async fn create(client: &Client, name: String, admin: bool) -> anyhow::Result<Exit> {
    let password = read_password()?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Created {
        create_user: User,
    }
    let created: Created = client
        .query_as(
            "mutation($name: String!, $password: String!, $role: UserRole!) { \
               createUser(name: $name, password: $password, role: $role) { id name role } }",
            json!({
                "name": name,
                "password": password,
                "role": if admin { "ADMIN" } else { "LISTENER" },
            }),
        )
        .await?;
    let u = created.create_user;
    println!("created {} {} ({})", u.role.to_lowercase(), u.name, u.id);
    Ok(Exit::Success)
}

/// Every account, page by page.
async fn all_users(client: &Client) -> anyhow::Result<Vec<User>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct PageInfo {
        has_next_page: bool,
        end_cursor: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        nodes: Vec<User>,
        page_info: PageInfo,
    }
    #[derive(Deserialize)]
    struct Data {
        users: Page,
    }
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data: Data = client
            .query_as(
                "query($a: String) { users(first: 100, after: $a) { \
                   nodes { id name role } pageInfo { hasNextPage endCursor } } }",
                json!({ "a": after }),
            )
            .await?;
        all.extend(data.users.nodes);
        match data.users.page_info.end_cursor {
            Some(c) if data.users.page_info.has_next_page => after = Some(c),
            _ => return Ok(all),
        }
    }
}

/// The account of this name (as a login compares names).
async fn named(client: &Client, name: &str) -> anyhow::Result<Option<User>> {
    let key = rondo_core::names::login_key(name);
    Ok(all_users(client)
        .await?
        .into_iter()
        .find(|u| rondo_core::names::login_key(&u.name) == key))
}
