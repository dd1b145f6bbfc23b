//! The `rondo` commands, one module each, and what they share: how to
//! reach the gateway ([`Conn`]) and the exit codes ([`Exit`]).

pub mod cert;
pub mod dev;
pub mod init;
pub mod layout;
pub mod node;
pub mod ring;
pub mod songs;
pub mod status;
pub mod upload;
pub mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use rondo_cli::client::Client;

/// How a command ends, as its exit code. Each outcome a script may act on
/// has a code of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Success = 0,
    /// Failed (the message says why); also a bad token or a refused input.
    Failure = 1,
    /// A layout change lost to another one ordered first: nothing changed.
    Conflict = 3,
    /// No ring is operational (no quorum): `rondo ring`.
    NoRing = 4,
    /// A storage node is down: `rondo status`.
    NodeDown = 5,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Whether the arguments carry a token (`--token X` or `--token=X`).
fn token_on_command_line(args: impl Iterator<Item = String>) -> bool {
    args.skip(1)
        .any(|a| a == "--token" || a.starts_with("--token="))
}

/// How to reach the gateway. Without flags, the local `rondo dev`
/// deployment described by `<data>/dev.json` is used.
#[derive(Debug, Args)]
pub struct Conn {
    /// Gateway base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "RONDO_GATEWAY")]
    pub gateway: Option<String>,
    /// Admin token.
    #[arg(long, env = "RONDO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the admin token (what `rondo init` writes).
    #[arg(long, env = "RONDO_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the gateway's certificate.
    #[arg(long, env = "RONDO_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Data directory of the local deployment.
    #[arg(long, env = "RONDO_DATA", default_value = "rondo-data")]
    pub data: PathBuf,
}

impl Conn {
    pub fn client(&self) -> anyhow::Result<Client> {
        if token_on_command_line(std::env::args()) {
            eprintln!(
                "warning: a token given with --token is visible to every user of this machine \
                 (in the process list and the shell history); prefer RONDO_TOKEN"
            );
        }
        let dev = rondo_cli::devenv::read_dev_info(&self.data).ok();
        let gateway = match (&self.gateway, &dev) {
            (Some(g), _) => g.clone(),
            (None, Some(d)) => d.gateway_url.clone(),
            (None, None) => bail!(
                "no gateway given: pass --gateway (or RONDO_GATEWAY), or start `rondo dev` so that {} exists",
                self.data.join("dev.json").display()
            ),
        };
        let ca_path = match (&self.ca_cert, &dev) {
            (Some(p), _) => p.clone(),
            (None, Some(d)) => d.ca_cert.clone(),
            (None, None) => bail!("no CA certificate given: pass --ca-cert (or RONDO_CA_CERT)"),
        };
        let ca = std::fs::read(&ca_path)
            .with_context(|| format!("read CA certificate {}", ca_path.display()))?;
        let from_file = match &self.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("read the admin token {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let token = match (self.token.as_ref().or(from_file.as_ref()), &dev) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(d)) => std::fs::read_to_string(&d.admin_token_file)
                .ok()
                .map(|t| t.trim().to_string()),
            (None, None) => None,
        };
        Ok(Client::new(&gateway, &ca, token)?)
    }
}

#[cfg(test)]
mod tests {
    use super::token_on_command_line;

    #[test]
    fn a_token_flag_is_noticed() {
        let args = |a: &[&str]| {
            a.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert!(token_on_command_line(args(&[
            "rondo", "status", "--token", "x"
        ])));
        assert!(token_on_command_line(args(&[
            "rondo",
            "status",
            "--token=x"
        ])));
        assert!(!token_on_command_line(args(&["rondo", "status"])));
        assert!(!token_on_command_line(args(&["--token", "status"])));
    }
}
