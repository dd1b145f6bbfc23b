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
        let gateway = gateway_url(&gateway)?;
        let ca_path = match (&self.ca_cert, &dev) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(d)) => Some(d.ca_cert.clone()),
            // The system's trust roots.
            (None, None) => None,
        };
        let ca = match &ca_path {
            Some(p) => {
                std::fs::read(p).with_context(|| format!("read CA certificate {}", p.display()))?
            }
            None => Vec::new(),
        };
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

/// The gateway's base URL, with a one-line hint for the usual mistakes: no
/// scheme, `http://` (a gateway serves HTTPS only), the GraphQL path given.
fn gateway_url(given: &str) -> anyhow::Result<String> {
    let url = given.trim().trim_end_matches('/');
    if let Some(rest) = url.strip_prefix("http://") {
        bail!("{given}: a gateway serves HTTPS only; try https://{rest}");
    }
    if !url.starts_with("https://") {
        bail!("{given}: the gateway URL needs its scheme; try https://{url}");
    }
    if let Some(base) = url.strip_suffix("/graphql") {
        bail!("{given}: give the gateway's base URL, without /graphql; try {base}");
    }
    Ok(url.to_string())
}

/// A hint for an error a user can fix, if it is one: nothing listening at
/// the gateway's address, a certificate not trusted.
pub fn hint(error: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{error:#}");
    if text.contains("Connection refused") {
        Some(
            "nothing listens there: is the gateway running (rondo dev, docker-compose up), and is the port right?",
        )
    } else if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        Some(
            "the gateway's certificate is not trusted: pass the CA that signed it with --ca-cert (or RONDO_CA_CERT)",
        )
    } else if text.contains("dns error") || text.contains("failed to lookup address") {
        Some("that host name does not resolve: check the gateway URL")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::token_on_command_line;

    #[test]
    fn gateway_urls_with_the_usual_mistakes_get_a_hint() {
        assert_eq!(
            super::gateway_url("https://g:8443/").unwrap(),
            "https://g:8443"
        );
        for (given, says) in [
            ("g:8443", "try https://g:8443"),
            ("http://g:8443", "HTTPS only; try https://g:8443"),
            (
                "https://g:8443/graphql",
                "without /graphql; try https://g:8443",
            ),
        ] {
            let e = super::gateway_url(given).unwrap_err().to_string();
            assert!(e.contains(says), "{given}: {e}");
        }
        let refused = anyhow::anyhow!("connect: Connection refused (os error 111)");
        assert!(super::hint(&refused).unwrap().contains("nothing listens"));
        assert!(super::hint(&anyhow::anyhow!("other")).is_none());
    }

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
