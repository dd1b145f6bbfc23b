//! `rondo user create`: make an account with the admin token.

use anyhow::Context;
use clap::Subcommand;
use rondo_cli::api::User;
use serde::Deserialize;
use serde_json::json;

use super::{Conn, Exit};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account (with the admin token). The password is read from
    /// standard input (one line), so that it stays out of shell history.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// The account name.
        name: String,
        /// Make it an admin (uploads, deletes, accounts).
        #[arg(long)]
        admin: bool,
    },
}

pub async fn run(cmd: UserCommand) -> anyhow::Result<Exit> {
    let UserCommand::Create { conn, name, admin } = cmd;
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Created {
        create_user: User,
    }
    let created: Created = conn
        .client()?
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
