//! `rondo cert`: the cluster CA and the certificates of nodes and gateways
//! (mutual TLS on the internal network). Offline: it reads the CA's key
//! from disk and talks to no one.
//!
//! - `rondo cert init-ca --out DIR` makes a CA (`cluster-ca.pem`,
//!   `cluster-ca-key.pem`); refuses to overwrite one.
//! - `rondo cert issue --node [ID] --out DIR` issues a node's certificate
//!   (`cluster-cert.pem`, `cluster-key.pem`). Without an id, a new one: the
//!   node takes its id from its certificate, so this is how a node that
//!   joins at runtime gets its identity. `--gateway [ID]` issues a
//!   gateway's.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rondo_core::tls::{ClusterCa, Identity};

use super::Exit;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a new cluster CA in a directory.
    InitCa {
        /// Directory for cluster-ca.pem and cluster-ca-key.pem.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue the certificate of a storage node or a gateway.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
#[group(id = "whom", required = true, multiple = false)]
pub struct IssueArgs {
    /// A storage node's certificate, for this node id (a new id if none).
    #[arg(long, group = "whom", num_args = 0..=1, default_missing_value = "new")]
    node: Option<String>,
    /// A gateway's certificate, for this gateway id (a new id if none).
    #[arg(long, group = "whom", num_args = 0..=1, default_missing_value = "new")]
    gateway: Option<String>,
    /// The cluster CA's certificate.
    #[arg(long)]
    ca_cert: PathBuf,
    /// The cluster CA's private key.
    #[arg(long)]
    ca_key: PathBuf,
    /// Directory for cluster-cert.pem and cluster-key.pem.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: CertCommand) -> anyhow::Result<Exit> {
    match command {
        CertCommand::InitCa { out } => init_ca(&out),
        CertCommand::Issue(args) => issue(&args),
    }
}

fn init_ca(out: &Path) -> anyhow::Result<Exit> {
    let pki = pki_in(out);
    if pki.cluster_ca.exists() || pki.cluster_ca_key.exists() {
        bail!(
            "{} already holds a cluster CA; a new one would lock every node out",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    rondo_cli::devenv::cluster_ca(&pki)?;
    println!("cluster CA: {}", pki.cluster_ca.display());
    println!(
        "its key:    {} (keep it offline)",
        pki.cluster_ca_key.display()
    );
    Ok(Exit::Success)
}

fn pki_in(dir: &Path) -> rondo_cli::devenv::Pki {
    rondo_cli::devenv::Pki {
        ca_cert: PathBuf::new(),
        server_cert: PathBuf::new(),
        server_key: PathBuf::new(),
        cluster_ca: dir.join("cluster-ca.pem"),
        cluster_ca_key: dir.join("cluster-ca-key.pem"),
    }
}

fn parse_id(given: &str) -> anyhow::Result<uuid::Uuid> {
    if given == "new" {
        return Ok(uuid::Uuid::new_v4());
    }
    given
        .parse()
        .with_context(|| format!("{given:?} is not a UUID"))
}

fn issue(args: &IssueArgs) -> anyhow::Result<Exit> {
    let identity = match (&args.node, &args.gateway) {
        (Some(id), None) => Identity::Node(rondo_core::NodeId(parse_id(id)?)),
        (None, Some(id)) => Identity::Gateway(parse_id(id)?),
        _ => bail!("give exactly one of --node and --gateway"),
    };
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
    let ca = ClusterCa::from_pem(&read(&args.ca_cert)?, &read(&args.ca_key)?)
        .context("load the cluster CA")?;
    let cert = rondo_cli::devenv::issue_cluster_cert(&ca, &args.ca_cert, identity, &args.out)?;
    println!("{}", cert.identity);
    println!("certificate: {}", cert.cert.display());
    println!("key:         {}", cert.key.display());
    Ok(Exit::Success)
}
