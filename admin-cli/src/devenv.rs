//! Files of a local deployment: a dev CA and server certificate (rcgen), the
//! admin token and cluster secret, the per-process configs, and `dev.json`,
//! which tells scripts (and the CLI itself) where everything is.

use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a running local deployment can be reached; written to `DIR/dev.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevInfo {
    /// GraphQL endpoint of the gateway.
    pub graphql_url: String,
    /// The web app (served by the gateway).
    pub webapp_url: String,
    /// Base URL of the gateway.
    pub gateway_url: String,
    /// CA certificate that signed every server certificate.
    pub ca_cert: PathBuf,
    /// File holding the admin token.
    pub admin_token_file: PathBuf,
    /// The storage nodes.
    pub nodes: Vec<DevNode>,
}

/// One storage node of a local deployment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevNode {
    pub grpc_url: String,
    pub stream_url: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
}

/// Paths of the PKI files.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The cluster CA (internal mutual TLS): its certificate and key. Not
    /// the CA of the public HTTPS certificate above: clients trust that
    /// one, and a client must never hold a cluster certificate.
    pub cluster_ca: PathBuf,
    pub cluster_ca_key: PathBuf,
}

/// One process's cluster certificate files, as its configuration names
/// them (`cluster_ca`, `cluster_cert`, `cluster_key`).
#[derive(Clone, Debug)]
pub struct ClusterCert {
    pub identity: rondo_core::tls::Identity,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClusterCert {
    /// Adds the three keys to a process's configuration.
    pub fn insert_into(&self, t: &mut toml::Table) {
        t.insert("cluster_ca".into(), path_value(&self.ca));
        t.insert("cluster_cert".into(), path_value(&self.cert));
        t.insert("cluster_key".into(), path_value(&self.key));
    }
}

/// The cluster CA of `pki`, made on first use. A CA whose key is not
/// there (moved offline) is never replaced: that would lock every node
/// out; issuing then fails, saying so.
pub fn cluster_ca(pki: &Pki) -> Result<rondo_core::tls::ClusterCa> {
    let err = |e: rondo_core::Error| Error::Certificate(e.to_string());
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(&pki.cluster_ca),
        std::fs::read_to_string(&pki.cluster_ca_key),
    ) {
        return rondo_core::tls::ClusterCa::from_pem(&cert, &key).map_err(err);
    }
    if pki.cluster_ca.exists() {
        return Err(Error::Certificate(format!(
            "the cluster CA's key {} is not there (kept offline?): put it back to issue a certificate",
            pki.cluster_ca_key.display()
        )));
    }
    let ca = rondo_core::tls::ClusterCa::generate("Rondo cluster CA").map_err(err)?;
    write_private(&pki.cluster_ca_key, ca.key_pem().as_bytes())?;
    write_private(&pki.cluster_ca, ca.cert_pem().as_bytes())?;
    Ok(ca)
}

/// Issues a cluster certificate for `identity` into `dir`
/// (`cluster-cert.pem`, `cluster-key.pem`, mode 0600), replacing any there.
pub fn issue_cluster_cert(
    ca: &rondo_core::tls::ClusterCa,
    ca_path: &Path,
    identity: rondo_core::tls::Identity,
    dir: &Path,
) -> Result<ClusterCert> {
    let issued = ca
        .issue(identity)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let cert = ClusterCert {
        identity,
        ca: ca_path.to_path_buf(),
        cert: dir.join("cluster-cert.pem"),
        key: dir.join("cluster-key.pem"),
    };
    write_private(&cert.key, issued.key_pem.as_bytes())?;
    write_private(&cert.cert, issued.cert_pem.as_bytes())?;
    Ok(cert)
}

/// The cluster certificate in `dir` if there is one (for the identity it
/// names), else a new one for `fresh()`: a data directory keeps its node
/// id across restarts of `rondo dev`.
pub fn ensure_cluster_cert(
    pki: &Pki,
    dir: &Path,
    fresh: impl FnOnce() -> rondo_core::tls::Identity,
) -> Result<ClusterCert> {
    let cert_path = dir.join("cluster-cert.pem");
    if dir.join("cluster-key.pem").exists()
        && let Some(identity) = cluster_identity(dir)
    {
        return Ok(ClusterCert {
            identity,
            ca: pki.cluster_ca.clone(),
            cert: cert_path,
            key: dir.join("cluster-key.pem"),
        });
    }
    let ca = cluster_ca(pki)?;
    issue_cluster_cert(&ca, &pki.cluster_ca, fresh(), dir)
}

/// The identity the cluster certificate in `dir` names, if there is one.
pub fn cluster_identity(dir: &Path) -> Option<rondo_core::tls::Identity> {
    let pem = std::fs::read(dir.join("cluster-cert.pem")).ok()?;
    let leaf = rondo_core::tls::certificates(&pem)
        .ok()?
        .into_iter()
        .next()?;
    rondo_core::tls::identity_of(&leaf).ok()
}

/// The node id a data directory already has (from an earlier start), or a
/// new one.
pub fn node_id_of(data_dir: &Path) -> rondo_core::NodeId {
    std::fs::read_to_string(data_dir.join("node-id"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(rondo_core::NodeId::new_random)
}

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io(format!("create {}", tmp.display())))?;
        f.write_all(contents)
            .map_err(Error::io(format!("write {}", tmp.display())))?;
        f.sync_all()
            .map_err(Error::io(format!("sync {}", tmp.display())))?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(format!("rename {}", path.display())))
}

/// Makes (once) a dev CA and a server certificate for `localhost`,
/// `127.0.0.1` and `::1` signed by it, in `dir/tls/`.
pub fn ensure_pki(dir: &Path) -> Result<Pki> {
    ensure_pki_with(dir, &[])
}

/// Like [`ensure_pki`], with more names (or addresses, such as a floating
/// address) in the server certificate. The public CA's key is kept
/// (`tls/ca-key.pem`) with the names signed (`tls/server-names.txt`), so
/// that a later call naming more reissues the server certificate under
/// the same CA (clients keep trusting it).
pub fn ensure_pki_with(dir: &Path, extra_names: &[String]) -> Result<Pki> {
    ensure_pki_in(dir, &dir.join("tls"), extra_names)
}

/// Like [`ensure_pki_with`], with the two CAs' keys in `keys` instead of
/// beside their certificates (`rondo init`: a directory only the process
/// that issues certificates reads).
pub fn ensure_pki_in(dir: &Path, keys: &Path, extra_names: &[String]) -> Result<Pki> {
    let tls = dir.join("tls");
    for d in [&tls, keys] {
        std::fs::create_dir_all(d).map_err(Error::io(format!("create {}", d.display())))?;
    }
    let pki = Pki {
        ca_cert: tls.join("ca.pem"),
        server_cert: tls.join("server.pem"),
        server_key: tls.join("server-key.pem"),
        cluster_ca: tls.join("cluster-ca.pem"),
        cluster_ca_key: keys.join("cluster-ca-key.pem"),
    };
    if !pki.cluster_ca.exists() {
        cluster_ca(&pki)?;
    }
    let ca_key_file = keys.join("ca-key.pem");
    let names_file = tls.join("server-names.txt");
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    // The public CA is reused when its certificate and key are here, and
    // kept (never replaced: clients trust it) when only its certificate is.
    let have_ca = pki.ca_cert.exists();
    let ca_kept = have_ca && ca_key_file.exists();
    let have_server = pki.server_cert.exists() && pki.server_key.exists();
    let signed: Vec<String> = std::fs::read_to_string(&names_file)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let missing: Vec<&String> = names.iter().filter(|n| !signed.contains(n)).collect();
    if have_server && missing.is_empty() {
        return Ok(pki);
    }
    if have_ca && !ca_kept {
        if have_server {
            eprintln!(
                "warning: {} is not here, so the server certificate cannot name {:?} too",
                ca_key_file.display(),
                missing
            );
            return Ok(pki);
        }
        return Err(Error::Certificate(format!(
            "{} is not here: the server certificate cannot be issued under {}",
            ca_key_file.display(),
            pki.ca_cert.display()
        )));
    }
    let have = ca_kept;
    let err = |e: rcgen::Error| Error::Certificate(e.to_string());
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Rondo dev CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let issuer = if have {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(Error::io(format!("read {}", p.display())))
        };
        let key = rcgen::KeyPair::from_pem(&read(&ca_key_file)?).map_err(err)?;
        for n in &signed {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        rcgen::Issuer::from_ca_cert_pem(&read(&pki.ca_cert)?, key).map_err(err)?
    } else {
        let ca_key = rcgen::KeyPair::generate().map_err(err)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        write_private(&ca_key_file, ca_key.serialize_pem().as_bytes())?;
        write_private(&pki.ca_cert, ca_cert.pem().as_bytes())?;
        rcgen::Issuer::new(ca, ca_key)
    };

    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rondo dev server");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(err)?;

    write_private(&pki.server_key, key.serialize_pem().as_bytes())?;
    write_private(&pki.server_cert, cert.pem().as_bytes())?;
    write_private(&names_file, names.join("\n").as_bytes())?;
    Ok(pki)
}

/// Reads a secret file, creating it with 32 random bytes (hex) if missing.
pub fn ensure_secret(path: &Path) -> Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim().to_string();
        if !text.is_empty() {
            return Ok(text);
        }
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    write_private(path, secret.as_bytes())?;
    Ok(secret)
}

/// Reads `dev.json` from a data directory.
pub fn read_dev_info(dir: &Path) -> Result<DevInfo> {
    let path = dir.join("dev.json");
    let text =
        std::fs::read_to_string(&path).map_err(Error::io(format!("read {}", path.display())))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        context: format!("parse {}", path.display()),
        source,
    })
}

/// Writes `dev.json` into a data directory.
pub fn write_dev_info(dir: &Path, info: &DevInfo) -> Result<()> {
    let text = serde_json::to_string_pretty(info).map_err(|source| Error::Json {
        context: "encode dev.json".into(),
        source,
    })?;
    write_private(&dir.join("dev.json"), text.as_bytes())
}

/// Writes a TOML config file.
pub fn write_config(path: &Path, value: &toml::Table) -> Result<()> {
    let text =
        toml::to_string(value).map_err(|e| Error::Certificate(format!("encode config: {e}")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("create {}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(Error::io(format!("write {}", path.display())))
}

fn path_value(p: &Path) -> toml::Value {
    p.display().to_string().into()
}

/// The configuration of one storage node process.
pub fn node_table(
    data_dir: &Path,
    grpc: &str,
    http: &str,
    pki: &Pki,
    cluster: &ClusterCert,
    secret_file: &Path,
) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("data_dir".into(), path_value(data_dir));
    cluster.insert_into(&mut t);
    t.insert("grpc_addr".into(), grpc.into());
    t.insert("http_addr".into(), http.into());
    t.insert("tls_cert".into(), path_value(&pki.server_cert));
    t.insert("tls_key".into(), path_value(&pki.server_key));
    t.insert("cluster_secret_file".into(), path_value(secret_file));
    t
}

/// Writes the control plane's peers file (every node with its gRPC URL),
/// atomically: nodes poll it until it lists everyone.
pub fn write_peers(path: &Path, nodes: &[(rondo_core::NodeId, String)]) -> Result<()> {
    let list: Vec<toml::Value> = nodes
        .iter()
        .map(|(id, url)| {
            let mut t = toml::Table::new();
            t.insert("id".into(), id.to_string().into());
            t.insert("grpc_url".into(), url.as_str().into());
            toml::Value::Table(t)
        })
        .collect();
    let mut doc = toml::Table::new();
    doc.insert("node".into(), toml::Value::Array(list));
    let tmp = path.with_extension("toml.tmp");
    write_config(&tmp, &doc)?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("rename {}", path.display())))
}

/// The configuration of one gateway process.
pub fn gateway_table(
    listen: &str,
    nodes: &[String],
    pki: &Pki,
    cluster: &ClusterCert,
    token_file: &Path,
    secret_file: &Path,
) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("listen".into(), listen.into());
    cluster.insert_into(&mut t);
    t.insert("tls_cert".into(), path_value(&pki.server_cert));
    t.insert("tls_key".into(), path_value(&pki.server_key));
    t.insert(
        "nodes".into(),
        toml::Value::Array(nodes.iter().map(|n| n.as_str().into()).collect()),
    );
    t.insert("admin_token_file".into(), path_value(token_file));
    t.insert("cluster_secret_file".into(), path_value(secret_file));
    t
}
