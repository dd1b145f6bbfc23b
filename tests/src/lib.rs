//! Cluster harness: starts the real `rondo-node` and `rondo-gateway`
//! binaries on loopback (port 0, addresses read back from the files the
//! processes write), with a temp dir each, and drives them over HTTPS and
//! GraphQL. Handles kill (SIGKILL) and restart nodes.
//!
//! The binaries must be built first (`cargo build --bins`); the harness finds
//! them next to the test executable's profile directory.
//!
//! One concern, kept in one file on purpose: starting, faulting and
//! reading a cluster of real processes (the network namespaces and the
//! VRRP lab are their own modules).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rondo_cli::client::Client;
use rondo_core::tls::Identity;
use rondo_core::{NodeId, SongId};
use serde_json::{Value, json};

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Path of a workspace binary in the profile directory of this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test>-<hash>, or target/<profile>/<bin>.
    let mut profile = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if profile.file_name().is_some_and(|n| n == "deps") {
        profile = profile.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    let path = profile.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first",
        path.display()
    );
    path
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Proc(Option<Child>);

impl Proc {
    /// Takes ownership of a spawned child.
    pub fn from_child(child: Child) -> Proc {
        Proc(Some(child))
    }

    /// Waits for the process to exit (after a signal), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.0.as_mut().map(Child::try_wait) {
                Some(Ok(Some(_))) | None => {
                    self.0 = None;
                    return true;
                }
                _ => vrrp_lab::pause(Duration::from_millis(5)),
            }
        }
        false
    }

    fn spawn(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Proc> {
        Proc::spawn_in(None, bin, config, log)
    }

    /// Spawns `bin --config config`, inside network namespace `ns` if given.
    fn spawn_in(ns: Option<&str>, bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Proc> {
        Proc::spawn_env(ns, bin, config, log, &[])
    }

    fn spawn_env(
        ns: Option<&str>,
        bin: &Path,
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--config")
            .arg(config)
            .env("RONDO_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Proc(Some(child)))
    }

    /// Whether the process has not exited yet.
    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// Sends a signal (SIGSTOP, SIGCONT, …) to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One storage node process.
#[derive(Debug)]
pub struct NodeHandle {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub id: NodeId,
    pub proc: Proc,
    /// Where the process's output goes.
    pub log: PathBuf,
    /// The node's network namespace, if the cluster uses them.
    netns: Option<String>,
}

impl NodeHandle {
    /// Songs, blob files, bytes in blob files, and files in `tmp/` on disk.
    pub fn disk(&self) -> DiskState {
        let mut state = DiskState::default();
        for path in walk(&self.dir.join("blobs")) {
            state.blob_files += 1;
            state.blob_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        state.tmp_files = walk(&self.dir.join("tmp")).len();
        state
    }
}

impl NodeHandle {
    /// The content hashes (hex) of the blob files on disk.
    pub fn blob_files(&self) -> BTreeSet<String> {
        walk(&self.dir.join("blobs"))
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect()
    }
}

/// What a node has on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskState {
    pub blob_files: usize,
    pub blob_bytes: u64,
    pub tmp_files: usize,
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub mod failover;
pub mod netns;
pub mod vrrp_lab;

pub use rondo_proto::storage::v1::RingStatus;

/// A gRPC client of one storage node.
pub type NodeClient =
    rondo_proto::storage::v1::storage_node_client::StorageNodeClient<tonic::transport::Channel>;

/// Writes one song with a small unique blob straight to a node over gRPC
/// (no gateway): the node stores the blob and orders the song on the ring;
/// the call returns when the node has applied it. For fault tests and the
/// ring benchmark.
pub async fn upload_direct(
    client: &mut NodeClient,
    title: &str,
    artist: &str,
) -> Result<rondo_proto::storage::v1::Song, tonic::Status> {
    use rondo_proto::storage::v1 as pb;
    let artist_id = uuid::Uuid::new_v4().to_string();
    let song = pb::Song {
        id: uuid::Uuid::new_v4().to_string(),
        title: title.into(),
        artist: Some(pb::Artist {
            id: artist_id.clone(),
            name: artist.into(),
        }),
        album: Some(pb::Album {
            id: uuid::Uuid::new_v4().to_string(),
            title: "Direct".into(),
            artist_id,
            ..Default::default()
        }),
        mime_type: "audio/wav".into(),
        ..Default::default()
    };
    upload_direct_song(client, song).await
}

/// [`upload_direct`] of a song record the caller made, with a small
/// unique blob.
pub async fn upload_direct_song(
    client: &mut NodeClient,
    song: rondo_proto::storage::v1::Song,
) -> Result<rondo_proto::storage::v1::Song, tonic::Status> {
    use rondo_proto::storage::v1::{self as pb, upload_song_request::Part};
    let blob = tiny_wav(format!("{} {}", song.title, uuid::Uuid::new_v4()).as_bytes());
    let hash = blake3::hash(&blob).to_hex().to_string();
    let parts = [
        Part::Header(pb::SongHeader { song: Some(song) }),
        Part::Chunk(blob),
        Part::Finish(pb::Finish { content_hash: hash }),
    ];
    client
        .upload_song(futures::stream::iter(
            parts.map(|p| pb::UploadSongRequest { part: Some(p) }),
        ))
        .await
        .and_then(|r| {
            r.into_inner()
                .song
                .ok_or_else(|| tonic::Status::internal("stored song missing from the answer"))
        })
}

/// A WAV of 256 samples (8 kHz mono, 16-bit) that differ with `unique`:
/// real audio, as a node checks, with its own content hash.
pub fn tiny_wav(unique: &[u8]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    if let Ok(mut writer) = hound::WavWriter::new(&mut cursor, spec) {
        let seed = blake3::hash(unique);
        for (i, b) in seed.as_bytes().iter().cycle().take(256).enumerate() {
            let _ = writer.write_sample(i16::from(*b) * 64 - (i as i16 % 7));
        }
        let _ = writer.finalize();
    }
    cursor.into_inner()
}

/// Options of a test cluster.
#[derive(Debug, Clone)]
pub struct Builder {
    nodes: usize,
    max_upload_bytes: Option<u64>,
    stream_url_ttl_secs: Option<u64>,
    token_timeout_ms: u64,
    netns: bool,
    /// Gateway replicas sharing a floating address, and their advert
    /// interval in milliseconds.
    vrrp: Option<(usize, u32)>,
    /// The floating address is keepalived's, not the gateways' own.
    keepalived: bool,
    /// `ring.fetch_entries` of every node.
    fetch_entries: Option<usize>,
    /// `ring.keep_entries` of every node.
    keep_entries: Option<usize>,
    /// More top-level options of the gateway's configuration.
    gateway_options: Vec<(String, toml::Value)>,
    /// Extra top-level options of every node's configuration.
    node_options: Vec<(String, toml::Value)>,
    /// Data directories node `i` starts from (copied): a store written by
    /// an earlier release, say.
    node_fixtures: Vec<(usize, PathBuf)>,
}

/// A gateway replica in its own namespace (VRRP clusters).
#[derive(Debug)]
pub struct Replica {
    pub proc: Proc,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Its host index in [`Cluster::net`].
    pub host: usize,
    /// The keepalived managing the floating address on this host instead
    /// of the gateway ([`Builder::keepalived_gateways`]).
    pub keepalived: Option<vrrp_lab::Keepalived>,
    priority: u8,
    advert_ms: u32,
}

/// The port every gateway replica listens on (the floating address's
/// port).
pub const REPLICA_PORT: u16 = 8443;

/// A running cluster of real processes.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeHandle>,
    pub gateway: Proc,
    pub gateway_addr: SocketAddr,
    pub ca_pem: Vec<u8>,
    pub token: String,
    pub secret: Vec<u8>,
    /// Client with the admin token.
    pub admin: Client,
    /// Client without a token.
    pub anon: Client,
    /// Gateway replicas sharing [`Cluster::vip`] (built with
    /// [`Builder::vrrp_gateways`]); `gateway` is then a stand-in.
    pub replicas: Vec<Replica>,
    /// The floating address of the replicas.
    pub vip: Option<std::net::Ipv4Addr>,
    /// The PKI of the deployment (the public HTTPS CA and the cluster CA).
    pub pki: rondo_cli::devenv::Pki,
    /// gRPC channels to the nodes as a gateway of the cluster ("the
    /// tester"): internal calls are mutual TLS.
    pub links: rondo_proto::mtls::Links,
    /// The namespaces, when built with [`Builder::netns`]; dropped last,
    /// after every process.
    pub net: Option<netns::Net>,
}

/// A passing test leaves nothing behind: its processes are stopped and its
/// directory removed. A failing one keeps the directory (node logs,
/// databases) for a look.
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test cluster kept in {}", self.dir.path().display());
            return;
        }
        for node in &mut self.nodes {
            node.proc.kill();
        }
        self.gateway.kill();
        for r in &mut self.replicas {
            r.proc.kill();
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

async fn read_addresses(path: &Path) -> anyhow::Result<Value> {
    eventually(
        &format!("{}", path.display()),
        Duration::from_secs(90),
        || async {
            let text = std::fs::read_to_string(path).ok()?;
            serde_json::from_str::<Value>(&text).ok()
        },
    )
    .await
}

fn addr(v: &Value, key: &str) -> anyhow::Result<SocketAddr> {
    v.get(key)
        .and_then(Value::as_str)
        .context("address missing")?
        .parse()
        .context("bad address")
}

impl Builder {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    pub fn max_upload_bytes(mut self, n: u64) -> Self {
        self.max_upload_bytes = Some(n);
        self
    }

    /// Runs every node in its own network namespace (root only; see
    /// [`netns`]), so that tests can partition them.
    pub fn netns(mut self) -> Self {
        self.netns = true;
        self
    }

    /// Log entries per page when a node catches up (`ring.fetch_entries`).
    pub fn fetch_entries(mut self, n: usize) -> Self {
        self.fetch_entries = Some(n);
        self
    }

    /// Applied log entries every node keeps (`ring.keep_entries`).
    pub fn keep_entries(mut self, n: usize) -> Self {
        self.keep_entries = Some(n);
        self
    }

    /// The control plane's token loss timeout (default 600 ms in tests).
    pub fn token_timeout_ms(mut self, ms: u64) -> Self {
        self.token_timeout_ms = ms;
        self
    }

    /// Runs `replicas` gateways in namespaces of their own, sharing a
    /// floating address by VRRP (priorities 150, 140, …) with adverts every
    /// `advert_ms`; implies [`Builder::netns`]. The clients then go through
    /// the floating address.
    pub fn vrrp_gateways(mut self, replicas: usize, advert_ms: u32) -> Self {
        self.netns = true;
        self.vrrp = Some((replicas, advert_ms));
        self
    }

    /// Like [`Builder::vrrp_gateways`], but the replicas run without VRRP
    /// and a keepalived on each host manages the floating address (the
    /// reference the failover benchmark compares with).
    pub fn keepalived_gateways(mut self, replicas: usize, advert_ms: u32) -> Self {
        self = self.vrrp_gateways(replicas, advert_ms);
        self.keepalived = true;
        self
    }

    /// Sets a top-level option of every storage node's configuration.
    pub fn node_option(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.node_options.push((key.into(), value.into()));
        self
    }

    /// Starts node `i` on a copy of the data directory `dir` (its `node-id`,
    /// `node.redb` and `blobs/`), with a certificate for the id it holds.
    pub fn node_fixture(mut self, i: usize, dir: impl Into<PathBuf>) -> Self {
        self.node_fixtures.push((i, dir.into()));
        self
    }

    /// Sets a top-level option of the gateway's configuration.
    pub fn gateway_option(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.gateway_options.push((key.into(), value.into()));
        self
    }

    pub fn stream_url_ttl_secs(mut self, n: u64) -> Self {
        self.stream_url_ttl_secs = Some(n);
        self
    }

    /// Starts the nodes, then the gateway, and waits until the gateway sees
    /// every node up.
    pub async fn start(self) -> anyhow::Result<Cluster> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("rondo-test-")
            .disable_cleanup(true)
            .tempdir()?;
        let token = rondo_cli::devenv::ensure_secret(&dir.path().join("admin-token"))?;
        rondo_cli::devenv::ensure_secret(&dir.path().join("cluster-secret"))?;
        let secret = std::fs::read(dir.path().join("cluster-secret"))?;
        let net = if self.netns {
            if !netns::Net::available() {
                anyhow::bail!("network namespace tests need root");
            }
            Some(netns::Net::new(
                self.nodes + self.vrrp.map_or(0, |(r, _)| r),
            )?)
        } else {
            None
        };
        // A VRRP cluster's floating address is .100 of the namespaces' net.
        let floating = net.as_ref().filter(|_| self.vrrp.is_some()).map(|n| {
            let [a, b, c, _] = n.addrs[0].octets();
            std::net::Ipv4Addr::new(a, b, c, 100)
        });
        // The streaming certificate names the floating address and every
        // namespace's address, so that tests reach each node's HTTPS too.
        let extra: Vec<String> = floating
            .iter()
            .chain(net.iter().flat_map(|n| n.addrs.iter()))
            .map(ToString::to_string)
            .collect();
        let pki = rondo_cli::devenv::ensure_pki_with(dir.path(), &extra)?;
        let mut nodes = Vec::new();
        for i in 0..self.nodes {
            let bind = net.as_ref().map_or_else(
                || "127.0.0.1:0".to_string(),
                |n| format!("{}:0", n.addrs[i]),
            );
            let ns = net.as_ref().map(|n| n.namespaces[i].clone());
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut id = NodeId::new_random();
            if let Some((_, fixture)) = self.node_fixtures.iter().find(|(k, _)| *k == i) {
                copy_tree(fixture, &node_dir)?;
                id = std::fs::read_to_string(node_dir.join("node-id"))?
                    .trim()
                    .parse()?;
            }
            let config = node_dir.join("node.toml");
            let addr_file = node_dir.join("addresses.json");
            let secret_file = dir.path().join("cluster-secret");
            let cert =
                rondo_cli::devenv::ensure_cluster_cert(&pki, &node_dir, || Identity::Node(id))?;
            let mut t =
                rondo_cli::devenv::node_table(&node_dir, &bind, &bind, &pki, &cert, &secret_file);
            t.insert(
                "address_file".into(),
                addr_file.display().to_string().into(),
            );
            t.insert(
                "metrics_token_file".into(),
                dir.path().join("admin-token").display().to_string().into(),
            );
            if let Some(n) = self.max_upload_bytes {
                t.insert(
                    "max_upload_bytes".into(),
                    toml::Value::Integer(i64::try_from(n)?),
                );
            }
            for (key, value) in &self.node_options {
                t.insert(key.clone(), value.clone());
            }
            let mut ring = toml::Table::new();
            ring.insert(
                "peers_file".into(),
                dir.path().join("peers.toml").display().to_string().into(),
            );
            ring.insert(
                "token_timeout_ms".into(),
                toml::Value::Integer(i64::try_from(self.token_timeout_ms)?),
            );
            if let Some(n) = self.fetch_entries {
                ring.insert(
                    "fetch_entries".into(),
                    toml::Value::Integer(i64::try_from(n)?),
                );
            }
            if let Some(n) = self.keep_entries {
                ring.insert(
                    "keep_entries".into(),
                    toml::Value::Integer(i64::try_from(n)?),
                );
            }
            let write_timeout = (3 * self.token_timeout_ms).max(3000);
            ring.insert(
                "write_timeout_ms".into(),
                toml::Value::Integer(i64::try_from(write_timeout)?),
            );
            t.insert("ring".into(), toml::Value::Table(ring));
            rondo_cli::devenv::write_config(&config, &t)?;
            let log = node_dir.join("node.log");
            let proc = Proc::spawn_in(ns.as_deref(), &bin("rondo-node"), &config, &log)?;
            let addrs = read_addresses(&addr_file).await?;
            let (grpc, http) = (addr(&addrs, "grpc")?, addr(&addrs, "http")?);
            // Pin the ports so that a restart comes back on the same ones.
            t.insert("grpc_addr".into(), grpc.to_string().into());
            t.insert("http_addr".into(), http.to_string().into());
            rondo_cli::devenv::write_config(&config, &t)?;
            let id = cert.identity.node().context("a node certificate")?;
            nodes.push(NodeHandle {
                dir: node_dir,
                config,
                grpc,
                http,
                id,
                proc,
                log,
                netns: ns,
            });
        }
        // Every node has bound its ports: tell them about each other.
        let peers: Vec<(NodeId, String)> = nodes
            .iter()
            .map(|n| (n.id, format!("https://{}", n.grpc)))
            .collect();
        rondo_cli::devenv::write_peers(&dir.path().join("peers.toml"), &peers)?;
        let gw_config = dir.path().join("gateway.toml");
        let gw_addr_file = dir.path().join("gateway-address.json");
        let node_urls: Vec<String> = nodes
            .iter()
            .map(|n| format!("https://{}", n.grpc))
            .collect();
        let gateway_cert =
            rondo_cli::devenv::ensure_cluster_cert(&pki, &dir.path().join("gateway"), || {
                Identity::Gateway(uuid::Uuid::new_v4())
            })?;
        let mut t = rondo_cli::devenv::gateway_table(
            "127.0.0.1:0",
            &node_urls,
            &pki,
            &gateway_cert,
            &dir.path().join("admin-token"),
            &dir.path().join("cluster-secret"),
        );
        t.insert(
            "address_file".into(),
            gw_addr_file.display().to_string().into(),
        );
        if let Some(n) = self.max_upload_bytes {
            t.insert(
                "max_upload_bytes".into(),
                toml::Value::Integer(i64::try_from(n)?),
            );
        }
        for (key, value) in &self.gateway_options {
            t.insert(key.clone(), value.clone());
        }
        if let Some(n) = self.stream_url_ttl_secs {
            t.insert(
                "stream_url_ttl_secs".into(),
                toml::Value::Integer(i64::try_from(n)?),
            );
        }
        let mut replicas = Vec::new();
        let mut vip = None;
        let (gateway, gateway_addr, base, http) = match (self.vrrp, net.as_ref()) {
            (Some((n, advert_ms)), Some(net)) => {
                let [a, b, c, _] = net.addrs[0].octets();
                let floating = std::net::Ipv4Addr::new(a, b, c, 100);
                vip = Some(floating);
                for k in 0..n {
                    let host = self.nodes + k;
                    let mut t = t.clone();
                    rondo_cli::devenv::ensure_cluster_cert(
                        &pki,
                        &dir.path().join(format!("gateway-{k}")),
                        || Identity::Gateway(uuid::Uuid::new_v4()),
                    )?
                    .insert_into(&mut t);
                    t.insert("listen".into(), format!("0.0.0.0:{REPLICA_PORT}").into());
                    let file = dir.path().join(format!("gateway-{k}-address.json"));
                    t.insert("address_file".into(), file.display().to_string().into());
                    let priority = 150 - 10 * u8::try_from(k)?;
                    let mut v = toml::Table::new();
                    v.insert("interface".into(), net.iface(host).into());
                    v.insert("vip".into(), format!("{floating}/24").into());
                    v.insert("priority".into(), toml::Value::Integer(i64::from(priority)));
                    v.insert(
                        "advert_ms".into(),
                        toml::Value::Integer(i64::from(advert_ms)),
                    );
                    v.insert("health_interval_ms".into(), toml::Value::Integer(100));
                    v.insert("health_timeout_ms".into(), toml::Value::Integer(80));
                    if !self.keepalived {
                        t.insert("vrrp".into(), toml::Value::Table(v));
                    }
                    let config = dir.path().join(format!("gateway-{k}.toml"));
                    rondo_cli::devenv::write_config(&config, &t)?;
                    let log = dir.path().join(format!("gateway-{k}.log"));
                    let proc = Proc::spawn_in(
                        Some(&net.namespaces[host]),
                        &bin("rondo-gateway"),
                        &config,
                        &log,
                    )?;
                    read_addresses(&file).await?;
                    let keepalived = if self.keepalived {
                        Some(vrrp_lab::start_keepalived(
                            &net.namespaces[host],
                            &net.iface(host),
                            net.addrs[host],
                            dir.path(),
                            &vrrp_lab::KeepalivedConfig {
                                priority,
                                advert_ms,
                                vip: floating,
                                extra: "",
                            },
                        )?)
                    } else {
                        None
                    };
                    replicas.push(Replica {
                        proc,
                        config,
                        log,
                        host,
                        keepalived,
                        priority,
                        advert_ms,
                    });
                }
                let at = SocketAddr::from((floating, REPLICA_PORT));
                let ca_pem = std::fs::read(&pki.ca_cert)?;
                let http = reqwest::Client::builder()
                    .tls_backend_preconfigured(rondo_cli::client::tls_config(&ca_pem)?)
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(10))
                    .build()?;
                (
                    Proc(None),
                    at,
                    format!("https://{floating}:{REPLICA_PORT}"),
                    Some(http),
                )
            }
            _ => {
                rondo_cli::devenv::write_config(&gw_config, &t)?;
                let gateway = Proc::spawn(
                    &bin("rondo-gateway"),
                    &gw_config,
                    &dir.path().join("gateway.log"),
                )?;
                let gateway_addr = addr(&read_addresses(&gw_addr_file).await?, "listen")?;
                let base = format!("https://127.0.0.1:{}", gateway_addr.port());
                (gateway, gateway_addr, base, None)
            }
        };
        let ca_pem = std::fs::read(&pki.ca_cert)?;
        let (admin, anon) = match http {
            Some(http) => (
                Client::with_http(http.clone(), &base, Some(token.clone())),
                Client::with_http(http, &base, None),
            ),
            None => (
                Client::new(&base, &ca_pem, Some(token.clone()))?,
                Client::new(&base, &ca_pem, None)?,
            ),
        };
        let tester =
            rondo_cli::devenv::ensure_cluster_cert(&pki, &dir.path().join("tester"), || {
                Identity::Gateway(uuid::Uuid::new_v4())
            })?;
        let links = rondo_proto::mtls::Links::tcp(std::sync::Arc::new(
            rondo_proto::mtls::ClusterTls::from_files(&tester.ca, &tester.cert, &tester.key)?,
        ));
        let cluster = Cluster {
            dir,
            nodes,
            gateway,
            gateway_addr,
            ca_pem,
            token,
            secret,
            admin,
            anon,
            replicas,
            vip,
            pki,
            links,
            net,
        };
        cluster.wait_all_up().await?;
        Ok(cluster)
    }
}

impl Cluster {
    /// A builder with one node and default limits.
    pub fn builder() -> Builder {
        Builder {
            nodes: 1,
            max_upload_bytes: None,
            stream_url_ttl_secs: None,
            token_timeout_ms: 600,
            netns: false,
            vrrp: None,
            keepalived: false,
            fetch_entries: None,
            keep_entries: None,
            gateway_options: Vec::new(),
            node_options: Vec::new(),
            node_fixtures: Vec::new(),
        }
    }

    /// Starts another gateway of this cluster on loopback (its own
    /// cluster certificate and address, the first gateway's other
    /// settings), and an admin client of it. The caller stops it by
    /// dropping the process.
    pub async fn spawn_gateway(&self, name: &str) -> anyhow::Result<(Proc, Client)> {
        let dir = self.dir.path();
        let text = std::fs::read_to_string(dir.join("gateway.toml"))?;
        let mut t: toml::Table = toml::from_str(&text)?;
        let cert = rondo_cli::devenv::ensure_cluster_cert(&self.pki, &dir.join(name), || {
            Identity::Gateway(uuid::Uuid::new_v4())
        })?;
        cert.insert_into(&mut t);
        t.insert("listen".into(), "127.0.0.1:0".into());
        let addr_file = dir.join(format!("{name}-address.json"));
        t.insert(
            "address_file".into(),
            addr_file.display().to_string().into(),
        );
        let config = dir.join(format!("{name}.toml"));
        rondo_cli::devenv::write_config(&config, &t)?;
        let proc = Proc::spawn(
            &bin("rondo-gateway"),
            &config,
            &dir.join(format!("{name}.log")),
        )?;
        let at = addr(&read_addresses(&addr_file).await?, "listen")?;
        let base = format!("https://127.0.0.1:{}", at.port());
        let client = Client::new(&base, &self.ca_pem, Some(self.token.clone()))?;
        // Ready once it has heard from every node.
        let n = self.nodes.len();
        eventually(
            "the new gateway sees every node up",
            Duration::from_secs(30),
            || async {
                let d = client
                    .query("{ cluster { nodes { state } } }", json!({}))
                    .await
                    .ok()?;
                let nodes = d.pointer("/cluster/nodes")?.as_array()?;
                (nodes.len() == n && nodes.iter().all(|s| s["state"] == "UP")).then_some(())
            },
        )
        .await?;
        Ok((proc, client))
    }

    /// Whether gateway replica `k` has the floating address configured.
    pub fn replica_holds_vip(&self, k: usize) -> bool {
        let (Some(net), Some(vip)) = (&self.net, self.vip) else {
            return false;
        };
        let host = self.replicas[k].host;
        Command::new("ip")
            .args([
                "-n",
                &net.namespaces[host],
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                &net.iface(host),
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/")))
    }

    /// Removes the floating address left on replica `k`'s interface (by a
    /// kill -9: a dead host would lose it with its power).
    pub fn clear_replica_vip(&self, k: usize) {
        if let (Some(net), Some(vip)) = (&self.net, self.vip) {
            let host = self.replicas[k].host;
            let _ = Command::new("ip")
                .args([
                    "-n",
                    &net.namespaces[host],
                    "addr",
                    "del",
                    &format!("{vip}/24"),
                    "dev",
                    &net.iface(host),
                ])
                .output();
        }
    }

    /// Host death of replica `k`: kill -9 of the gateway (and of its
    /// keepalived, if any).
    pub fn crash_replica(&mut self, k: usize) {
        let r = &mut self.replicas[k];
        if let Some(ka) = r.keepalived.as_mut() {
            ka.crash();
        }
        r.proc.kill();
    }

    /// Starts replica `k` again after it was killed (with its keepalived,
    /// if any).
    pub fn restart_replica(&mut self, k: usize) -> anyhow::Result<()> {
        let (Some(net), Some(vip), r) = (&self.net, self.vip, &mut self.replicas[k]) else {
            bail!("not a VRRP cluster");
        };
        r.proc.kill();
        r.proc = Proc::spawn_in(
            Some(&net.namespaces[r.host]),
            &bin("rondo-gateway"),
            &r.config,
            &r.log,
        )?;
        if r.keepalived.is_some() {
            r.keepalived = Some(vrrp_lab::start_keepalived(
                &net.namespaces[r.host],
                &net.iface(r.host),
                net.addrs[r.host],
                self.dir.path(),
                &vrrp_lab::KeepalivedConfig {
                    priority: r.priority,
                    advert_ms: r.advert_ms,
                    vip,
                    extra: "",
                },
            )?);
        }
        Ok(())
    }

    /// The control plane as node `i` reports it (gRPC `Health`).
    pub async fn ring_status(&self, i: usize) -> anyhow::Result<RingStatus> {
        self.health(i)
            .await?
            .ring
            .context("node reports no ring status")
    }

    /// Node `i`'s answer to gRPC `Health`.
    pub async fn health(
        &self,
        i: usize,
    ) -> anyhow::Result<rondo_proto::storage::v1::HealthResponse> {
        let mut client = self.grpc(i).await?;
        Ok(tokio::time::timeout(
            Duration::from_secs(2),
            client.health(rondo_proto::storage::v1::HealthRequest::default()),
        )
        .await??
        .into_inner())
    }

    /// A gRPC client of node `i`, connected now, as the tester (a gateway
    /// certificate of the cluster CA).
    pub async fn grpc(&self, i: usize) -> anyhow::Result<NodeClient> {
        self.grpc_as(&self.links, i).await
    }

    /// Channels as node `j` (its own cluster certificate), for the RPCs
    /// only members may call.
    pub fn node_links(&self, j: usize) -> anyhow::Result<rondo_proto::mtls::Links> {
        let dir = &self.nodes[j].dir;
        Ok(rondo_proto::mtls::Links::tcp(std::sync::Arc::new(
            rondo_proto::mtls::ClusterTls::from_files(
                &self.pki.cluster_ca,
                &dir.join("cluster-cert.pem"),
                &dir.join("cluster-key.pem"),
            )?,
        )))
    }

    /// A gRPC client of node `i` over `links` (another identity, another
    /// CA), connected now.
    pub async fn grpc_as(
        &self,
        links: &rondo_proto::mtls::Links,
        i: usize,
    ) -> anyhow::Result<NodeClient> {
        let endpoint = rondo_proto::channel::endpoint(
            &format!("https://{}", self.nodes[i].grpc),
            rondo_proto::channel::Link::Probe {
                connect: Duration::from_secs(2),
                answer: Duration::from_secs(10),
            },
        )?;
        let channel = links
            .connect(endpoint, rondo_proto::mtls::Expect::Node(self.nodes[i].id))
            .await?;
        Ok(NodeClient::new(channel))
    }

    /// Sets a top-level option of node `i`'s configuration file; it takes
    /// effect at the node's next start.
    pub fn set_node_option(
        &self,
        i: usize,
        key: &str,
        value: impl Into<toml::Value>,
    ) -> anyhow::Result<()> {
        let path = &self.nodes[i].config;
        let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(path)?)?;
        t.insert(key.into(), value.into());
        rondo_cli::devenv::write_config(path, &t)?;
        Ok(())
    }

    /// Waits until the gateway knows a layout, so that a layout command
    /// may follow at once (before, it answers `UNAVAILABLE`).
    pub async fn wait_layout(&self) -> anyhow::Result<u64> {
        eventually(
            "a layout at the gateway",
            Duration::from_secs(30),
            || async {
                let data = self
                    .admin
                    .query("{ cluster { layout { epoch } } }", json!({}))
                    .await
                    .ok()?;
                data.pointer("/cluster/layout/epoch")?.as_u64()
            },
        )
        .await
    }

    /// Waits until the gateway reports every node up.
    pub async fn wait_all_up(&self) -> anyhow::Result<()> {
        let n = self.nodes.len();
        eventually(
            "all nodes up at the gateway",
            // Generous: seconds on an idle machine, more beside the
            // heavy suites on two cores.
            Duration::from_secs(90),
            || async {
                let data = self
                    .anon
                    .query("{ cluster { nodes { state } } }", json!({}))
                    .await
                    .ok()?;
                let up = data
                    .pointer("/cluster/nodes")?
                    .as_array()?
                    .iter()
                    .filter(|x| x["state"] == "UP")
                    .count();
                (up == n).then_some(())
            },
        )
        .await
    }

    /// Waits until the gateway reports exactly the nodes `up` as up.
    pub async fn wait_up(&self, up: &[usize]) -> anyhow::Result<()> {
        let want: std::collections::BTreeSet<String> =
            up.iter().map(|&i| self.nodes[i].id.to_string()).collect();
        eventually(
            "the gateway sees the expected nodes up",
            Duration::from_secs(30),
            || async {
                let data = self
                    .anon
                    .query("{ cluster { nodes { id state } } }", json!({}))
                    .await
                    .ok()?;
                let seen: std::collections::BTreeSet<String> = data
                    .pointer("/cluster/nodes")?
                    .as_array()?
                    .iter()
                    .filter(|x| x["state"] == "UP")
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect();
                (seen == want).then_some(())
            },
        )
        .await
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].proc.kill();
    }

    /// Restarts node `i` on its old ports and waits until the gateway sees
    /// every node up.
    pub async fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_node(i).await?;
        self.wait_all_up().await
    }

    /// Restarts node `i` with extra environment variables (such as
    /// `RONDO_FAILPOINT`) and waits until it has bound its ports.
    pub async fn start_node_with(&mut self, i: usize, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        node.proc.kill();
        let addr_file = node.dir.join("addresses.json");
        let _ = std::fs::remove_file(&addr_file);
        node.proc = Proc::spawn_env(
            node.netns.as_deref(),
            &bin("rondo-node"),
            &node.config,
            &node.log,
            env,
        )?;
        read_addresses(&addr_file).await?;
        Ok(())
    }

    /// Starts a new storage node that joins this running cluster: its
    /// configuration is node 0's with its own data directory and ports,
    /// and `ring.seeds` (every node's gRPC URL) instead of the peers file.
    /// It waits to be added (`addNode`); returns its index.
    pub async fn spawn_joiner(&mut self) -> anyhow::Result<usize> {
        self.spawn_joiner_with(toml::Table::new()).await
    }

    /// [`Cluster::spawn_joiner`] with more `[ring]` keys (`auto_join`,
    /// `zone`, `capacity`).
    pub async fn spawn_joiner_with(&mut self, extra_ring: toml::Table) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let template = std::fs::read_to_string(&self.nodes[0].config)?;
        let mut t: toml::Table = toml::from_str(&template)?;
        let node_dir = self.dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&node_dir)?;
        let bind = match &self.nodes[0].netns {
            Some(_) => anyhow::bail!("joiners in namespaces are not supported"),
            None => "127.0.0.1:0",
        };
        let addr_file = node_dir.join("addresses.json");
        let cert = rondo_cli::devenv::ensure_cluster_cert(&self.pki, &node_dir, || {
            Identity::Node(NodeId::new_random())
        })?;
        cert.insert_into(&mut t);
        t.insert("data_dir".into(), node_dir.display().to_string().into());
        t.insert("grpc_addr".into(), bind.into());
        t.insert("http_addr".into(), bind.into());
        t.insert(
            "address_file".into(),
            addr_file.display().to_string().into(),
        );
        let mut ring = t
            .get("ring")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        ring.remove("peers_file");
        let seeds: Vec<toml::Value> = self
            .nodes
            .iter()
            .map(|n| toml::Value::from(format!("https://{}", n.grpc)))
            .collect();
        ring.insert("seeds".into(), toml::Value::Array(seeds));
        ring.extend(extra_ring);
        t.insert("ring".into(), toml::Value::Table(ring));
        let config = node_dir.join("node.toml");
        rondo_cli::devenv::write_config(&config, &t)?;
        let log = node_dir.join("node.log");
        let proc = Proc::spawn_in(None, &bin("rondo-node"), &config, &log)?;
        let addrs = read_addresses(&addr_file).await?;
        let (grpc, http) = (addr(&addrs, "grpc")?, addr(&addrs, "http")?);
        t.insert("grpc_addr".into(), grpc.to_string().into());
        t.insert("http_addr".into(), http.to_string().into());
        rondo_cli::devenv::write_config(&config, &t)?;
        let id = cert.identity.node().context("a node certificate")?;
        self.nodes.push(NodeHandle {
            dir: node_dir,
            config,
            grpc,
            http,
            id,
            proc,
            log,
            netns: None,
        });
        Ok(i)
    }

    /// Whether node `i`'s process is still running (false once it exited,
    /// for example at a failpoint).
    pub fn node_running(&mut self, i: usize) -> bool {
        self.nodes[i].proc.running()
    }

    /// Restarts node `i` on its old ports and waits until it has bound them.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        node.proc.kill();
        let addr_file = node.dir.join("addresses.json");
        let _ = std::fs::remove_file(&addr_file);
        node.proc = Proc::spawn_in(
            node.netns.as_deref(),
            &bin("rondo-node"),
            &node.config,
            &node.log,
        )?;
        read_addresses(&addr_file).await?;
        Ok(())
    }

    /// An HTTP client trusting the cluster CA.
    pub fn http(&self) -> &reqwest::Client {
        self.anon.http()
    }

    /// A one-minute operator session (the nil account, admin), signed as a
    /// gateway signs one for the admin token: what a node's admin RPCs
    /// (`DeleteSong`, `ChangeLayout`) need.
    pub fn operator_session(&self) -> String {
        let signer = rondo_core::session::SessionSigner::new(self.secret.clone());
        signer.sign(&rondo_core::session::Session::operator(
            rondo_process::unix_now_ms(),
            *uuid::Uuid::new_v4().as_bytes(),
        ))
    }

    /// A stream URL for `song` on `node`, signed with the cluster secret and
    /// expiring at `exp` (Unix seconds).
    pub fn signed_url(&self, node: usize, song: SongId, exp: u64) -> String {
        let signer = rondo_core::signing::UrlSigner::new(self.secret.clone());
        let n = &self.nodes[node];
        format!(
            "https://{}/stream/{song}?{}",
            n.http,
            signer.query(song, n.id, exp)
        )
    }

    /// A direct upload URL for `song` on `node`, with `grant` signed by the
    /// cluster secret (as the gateway's `createUpload` would sign it).
    pub fn signed_upload_url(
        &self,
        node: usize,
        song: SongId,
        mut grant: rondo_core::signing::UploadGrant,
    ) -> String {
        let signer = rondo_core::signing::UrlSigner::new(self.secret.clone());
        let n = &self.nodes[node];
        signer.sign_upload(song, n.id, &mut grant);
        format!(
            "https://127.0.0.1:{}/upload/{song}?{}",
            n.http.port(),
            serde_urlencoded::to_string(&grant).unwrap_or_default()
        )
    }

    /// Total songs the gateway lists.
    pub async fn song_count(&self) -> anyhow::Result<u64> {
        let data = self
            .anon
            .query("{ songs(first: 0) { totalCount } }", json!({}))
            .await?;
        data.pointer("/songs/totalCount")
            .and_then(Value::as_u64)
            .context("no totalCount")
    }

    /// Songs, blobs and bytes each node reports, plus what is on disk.
    pub async fn footprint(&self) -> anyhow::Result<Vec<(Value, DiskState)>> {
        let data = self
            .anon
            .query(
                "{ cluster { nodes { id songCount bytesStored } } }",
                json!({}),
            )
            .await?;
        let reported = data
            .pointer("/cluster/nodes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(self
            .nodes
            .iter()
            .map(|n| {
                let r = reported
                    .iter()
                    .find(|r| r["id"] == n.id.to_string())
                    .cloned()
                    .unwrap_or(Value::Null);
                (r, n.disk())
            })
            .collect())
    }
}

/// Copies the files under `from` into `to`, keeping the tree.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes a tagged demo song of `seconds` to `path`.
pub fn tagged_wav(
    path: &Path,
    title: &str,
    artist: &str,
    album: &str,
    seconds: f32,
    seed: u64,
) -> anyhow::Result<()> {
    demo_wav(path, (title, artist, album), seconds, seed, None)
}

fn demo_wav(
    path: &Path,
    (title, artist, album): (&str, &str, &str),
    seconds: f32,
    seed: u64,
    cover: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let song = rondo_cli::demo::DemoSong {
        title: title.into(),
        artist: artist.into(),
        album: album.into(),
        track: 3,
        year: 1999,
        genre: "Test".into(),
    };
    rondo_cli::demo::write_song(path, &song, seconds, seed, cover)?;
    Ok(())
}

/// [`tagged_wav`] with the demo cover of `album` (a 400-pixel PNG) as its
/// front cover.
pub fn tagged_wav_with_cover(
    path: &Path,
    title: &str,
    artist: &str,
    album: &str,
    seconds: f32,
    seed: u64,
) -> anyhow::Result<()> {
    let cover = rondo_cli::demo::cover(album)?;
    demo_wav(path, (title, artist, album), seconds, seed, Some(cover))
}
