//! `rondo init --out DIR`: everything a deployment of separate hosts or
//! containers needs before its first start, made once, offline:
//!
//! - `tls/`: the public CA (`ca.pem`, what clients trust) and one server
//!   certificate for every name and address given; the cluster CA
//!   (internal mutual TLS);
//! - `authority/`: the two CAs' keys, apart (mount it only where
//!   certificates are issued; without it here, no new certificate can be
//!   issued, and nothing is replaced);
//! - `admin-token`, `metrics-token` (the nodes' `/metrics`) and
//!   `cluster-secret` (signs stream URLs);
//! - `nodes/NAME/`: each storage node's cluster certificate (its id) and
//!   `node.toml`; `gateways/NAME/`: each gateway's, and `gateway.toml`;
//! - `peers.toml`: the nodes that bootstrap the cluster (its first voters),
//!   by host name, which each node resolves when it connects.
//!
//! It runs again without harm: certificates, ids, secrets and the peers
//! file are kept; configurations are written again; a name not seen
//! before gets its files. That is how a node is added later (`--join`):
//! started with the seeds and its certificate, it asks the cluster to add
//! it (`[ring] auto_join`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use rondo_cli::devenv;
use rondo_core::tls::Identity;

use super::Exit;

/// Options of `rondo init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write into (created if missing; what is there is kept).
    #[arg(long)]
    out: PathBuf,
    /// Storage nodes that bootstrap the cluster (its first voters): `NAME`
    /// (the host name the others reach it at) or `NAME=HOST` (an address
    /// or host name on the internal network).
    #[arg(long, value_delimiter = ',', default_value = "node1,node2,node3")]
    nodes: Vec<String>,
    /// Storage nodes that join the running cluster by themselves (not in
    /// the peers file: started with the seeds and `auto_join`), as
    /// `--nodes`.
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// Gateways, by host name.
    #[arg(long, value_delimiter = ',', default_value = "gateway1,gateway2")]
    gateways: Vec<String>,
    /// More names or addresses of the public certificate: the gateways'
    /// floating address, the addresses clients reach nodes at, host names.
    #[arg(long = "name", value_delimiter = ',')]
    names: Vec<String>,
    /// Where DIR is found by the processes that read it (the paths in the
    /// configurations); default: DIR itself.
    #[arg(long)]
    mount: Option<PathBuf>,
    /// Every storage node's data directory.
    #[arg(long, default_value = "/var/lib/rondo")]
    data_dir: PathBuf,
    /// The nodes' internal gRPC port.
    #[arg(long, default_value_t = 7400)]
    grpc_port: u16,
    /// The nodes' public HTTPS (streaming) port.
    #[arg(long, default_value_t = 7443)]
    http_port: u16,
    /// The gateways' HTTPS port.
    #[arg(long, default_value_t = 8443)]
    gateway_port: u16,
    /// The built web app the gateways serve at `/`.
    #[arg(long, default_value = "/usr/share/rondo/webapp")]
    webapp: PathBuf,
}

/// A host name: letters, digits, `-` and `.`, 1 to 63 bytes.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.']);
    if !ok {
        bail!("{name:?} is not a host name (letters, digits, '-' and '.', 1 to 63 bytes)");
    }
    Ok(())
}

/// A node given as `NAME` or `NAME=HOST`: its name and the host the others
/// reach its gRPC at.
fn split_node(spec: &str) -> anyhow::Result<(&str, &str)> {
    let (name, host) = spec.split_once('=').unwrap_or((spec, spec));
    check_name(name)?;
    if host.parse::<std::net::IpAddr>().is_err() {
        check_name(host)?;
    }
    Ok((name, host))
}

pub fn run(args: &InitArgs) -> anyhow::Result<Exit> {
    let mut seen = BTreeSet::new();
    let mut hosts = std::collections::BTreeMap::new();
    for spec in args.nodes.iter().chain(&args.join) {
        let (name, host) = split_node(spec)?;
        hosts.insert(name.to_string(), host.to_string());
    }
    let node_names = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| s.split_once('=').map_or(s.as_str(), |(n, _)| n).to_string())
            .collect()
    };
    let (initial, joining) = (node_names(&args.nodes), node_names(&args.join));
    for name in initial.iter().chain(&joining).chain(&args.gateways) {
        check_name(name)?;
        if !seen.insert(name.as_str()) {
            bail!("{name} is named twice");
        }
    }
    if args.nodes.is_empty() {
        bail!("--nodes: at least one node bootstraps the cluster");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let out = args
        .out
        .canonicalize()
        .with_context(|| format!("resolve {}", args.out.display()))?;
    let mount = args.mount.clone().unwrap_or_else(|| out.clone());
    // A path under `out` as the processes see it.
    let at = |p: &Path| -> PathBuf {
        p.strip_prefix(&out)
            .map_or_else(|_| p.to_path_buf(), |rest| mount.join(rest))
    };

    let mut names: Vec<String> = seen.iter().map(|s| (*s).to_string()).collect();
    names.extend(args.names.iter().cloned());
    // The CAs' keys apart, in `authority/`: a deployment mounts it only
    // where certificates are issued (the init service), not in the nodes
    // and gateways that read the rest.
    let pki = devenv::ensure_pki_in(&out, &out.join("authority"), &names)?;
    let token_file = out.join("admin-token");
    let metrics_file = out.join("metrics-token");
    let secret_file = out.join("cluster-secret");
    devenv::ensure_secret(&token_file)?;
    devenv::ensure_secret(&metrics_file)?;
    devenv::ensure_secret(&secret_file)?;
    let mut mounted = pki.clone();
    for p in [
        &mut mounted.ca_cert,
        &mut mounted.server_cert,
        &mut mounted.server_key,
        &mut mounted.cluster_ca,
        &mut mounted.cluster_ca_key,
    ] {
        *p = at(p);
    }

    let grpc_url = |name: &str| {
        let host = hosts.get(name).map_or(name, String::as_str);
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("https://[{v6}]:{}", args.grpc_port),
            Err(_) => format!("https://{host}:{}", args.grpc_port),
        }
    };
    let peers_file = out.join("peers.toml");
    let mut peers = Vec::new();
    for (name, joins) in initial
        .iter()
        .map(|n| (n, false))
        .chain(joining.iter().map(|n| (n, true)))
    {
        let dir = out.join("nodes").join(name);
        let mut cert = devenv::ensure_cluster_cert(&pki, &dir, || {
            Identity::Node(rondo_core::NodeId::new_random())
        })?;
        let Identity::Node(id) = cert.identity else {
            bail!("{} holds a gateway's certificate", dir.display());
        };
        cert.ca = at(&cert.ca);
        cert.cert = at(&cert.cert);
        cert.key = at(&cert.key);
        let mut t = devenv::node_table(
            &args.data_dir,
            &format!("0.0.0.0:{}", args.grpc_port),
            &format!("0.0.0.0:{}", args.http_port),
            &mounted,
            &cert,
            &at(&secret_file),
        );
        t.insert(
            "public_url".into(),
            format!("https://{name}:{}", args.http_port).into(),
        );
        // Its own token for /metrics: a node never holds the admin token.
        t.insert(
            "metrics_token_file".into(),
            at(&metrics_file).display().to_string().into(),
        );
        let mut ring = toml::Table::new();
        if joins {
            let seeds: Vec<toml::Value> = initial.iter().map(|n| grpc_url(n).into()).collect();
            ring.insert("seeds".into(), toml::Value::Array(seeds));
            ring.insert("auto_join".into(), true.into());
            ring.insert("grpc_url".into(), grpc_url(name).into());
        } else {
            ring.insert(
                "peers_file".into(),
                at(&peers_file).display().to_string().into(),
            );
            peers.push((id, grpc_url(name)));
        }
        t.insert("ring".into(), toml::Value::Table(ring));
        devenv::write_config(&dir.join("node.toml"), &t)?;
        println!("node {name}: {id}");
    }
    if peers_file.exists() {
        println!("peers:   {} (kept)", peers_file.display());
    } else {
        devenv::write_peers(&peers_file, &peers)?;
        println!("peers:   {}", peers_file.display());
    }

    let node_urls: Vec<String> = initial.iter().map(|n| grpc_url(n)).collect();
    for name in &args.gateways {
        let dir = out.join("gateways").join(name);
        let mut cert =
            devenv::ensure_cluster_cert(&pki, &dir, || Identity::Gateway(uuid::Uuid::new_v4()))?;
        if !matches!(cert.identity, Identity::Gateway(_)) {
            bail!("{} holds a node's certificate", dir.display());
        }
        cert.ca = at(&cert.ca);
        cert.cert = at(&cert.cert);
        cert.key = at(&cert.key);
        let mut t = devenv::gateway_table(
            &format!("0.0.0.0:{}", args.gateway_port),
            &node_urls,
            &mounted,
            &cert,
            &at(&token_file),
            &at(&secret_file),
        );
        t.insert(
            "webapp_dir".into(),
            args.webapp.display().to_string().into(),
        );
        devenv::write_config(&dir.join("gateway.toml"), &t)?;
        println!("gateway {name}: {}", cert.identity);
    }
    println!(
        "public CA:   {} (give it to clients)",
        pki.ca_cert.display()
    );
    println!(
        "cluster CA:  {} (its key, in {}, signs new nodes: mount that directory only where certificates are issued)",
        pki.cluster_ca.display(),
        out.join("authority").display()
    );
    println!("admin token: {}", token_file.display());
    println!(
        "metrics token (nodes' /metrics): {}",
        metrics_file.display()
    );
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_host_names_are_accepted() {
        for good in ["node1", "gw-2", "a.b.example"] {
            assert!(super::check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "x:1", &"n".repeat(64)] {
            assert!(super::check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(super::split_node("n1").unwrap(), ("n1", "n1"));
        assert_eq!(
            super::split_node("n1=10.0.0.1").unwrap(),
            ("n1", "10.0.0.1")
        );
        assert!(super::split_node("n1=a b").is_err());
        assert!(super::split_node("=x").is_err());
    }
}
