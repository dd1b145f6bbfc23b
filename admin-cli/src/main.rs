//! `rondo`: the admin CLI.

mod dev;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use rondo_cli::client::Client;
use serde_json::{Value, json};

/// Uploads and streams pass large buffers through the allocator; glibc's
/// returns them to the kernel and faults fresh zeroed pages in for the next
/// one, mimalloc reuses them (bench/ingest.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rondo admin CLI: run a local deployment, upload music, inspect the cluster.
#[derive(Debug, Parser)]
#[command(name = "rondo", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a complete local deployment (storage nodes and a gateway) on
    /// loopback, with demo data.
    Dev(dev::DevArgs),
    /// Upload audio files, or whole folders recursively.
    Upload {
        #[command(flatten)]
        conn: Conn,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Files uploaded at the same time.
        #[arg(long, short, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
    },
    /// List songs.
    Songs {
        #[command(flatten)]
        conn: Conn,
        /// Only songs whose title, artist or album match.
        #[arg(long)]
        search: Option<String>,
        /// At most this many songs (up to 100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show the health of the gateway and the storage nodes.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show the control plane: the ring that orders the catalog, and where
    /// each node is in the log. Exit code 4 if no ring is operational.
    Ring {
        #[command(flatten)]
        conn: Conn,
    },
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Change the cluster's storage nodes. Each change names the layout
    /// epoch it expects (`--expect-epoch`, default: the newest known); if
    /// another change was ordered first it fails with exit code 3 and
    /// changes nothing.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Add a storage node. Start it first with `ring.seeds` (gRPC URLs of
    /// running nodes) in its configuration instead of a peers file; it
    /// then joins the ring, catches up and fetches the audio.
    Add {
        #[command(flatten)]
        conn: Conn,
        /// The new node's internal gRPC URL, e.g. http://10.0.0.4:7400.
        address: String,
        /// Add it without a vote.
        #[arg(long)]
        non_voter: bool,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Remove a storage node; the others re-form the ring without it.
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Give a node a vote (`on`) or take it away (`off`).
    Voter {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(value_parser = ["on", "off"])]
        vote: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Set how many nodes hold each song's audio.
    Replication {
        #[command(flatten)]
        conn: Conn,
        factor: u32,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
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

/// How to reach the gateway. Without flags, the local `rondo dev`
/// deployment described by `<data>/dev.json` is used.
#[derive(Debug, Args)]
struct Conn {
    /// Gateway base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "RONDO_GATEWAY")]
    gateway: Option<String>,
    /// Admin token.
    #[arg(long, env = "RONDO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) that signed the gateway's certificate.
    #[arg(long, env = "RONDO_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Data directory of the local deployment.
    #[arg(long, env = "RONDO_DATA", default_value = "rondo-data")]
    data: PathBuf,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
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
        let token = match (&self.token, &dev) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(d)) => std::fs::read_to_string(&d.admin_token_file)
                .ok()
                .map(|t| t.trim().to_string()),
            (None, None) => None,
        };
        Ok(Client::new(&gateway, &ca, token)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RONDO_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Upload { conn, paths, jobs } => {
            upload(&conn.client()?, &paths, usize::from(jobs)).await
        }
        Command::Songs {
            conn,
            search,
            limit,
        } => songs(&conn.client()?, search, limit).await,
        Command::Status { conn } => status(&conn.client()?).await,
        Command::Ring { conn } => ring(&conn.client()?).await,
        Command::User(UserCommand::Create { conn, name, admin }) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            create_user(&conn.client()?, &name, password, admin).await
        }
        Command::Node(cmd) => node(cmd).await,
    }
}

/// Exit code of a layout change that lost to another one.
const EXIT_CONFLICT: u8 = 3;

async fn node(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    const LAYOUT: &str = "{ epoch replicationFactor nodes { id address isVoter } }";
    let epoch = |e: Option<u64>| e.map(|e| json!(e)).unwrap_or(Value::Null);
    let (conn, field, query, vars) = match cmd {
        NodeCommand::Add {
            conn,
            address,
            non_voter,
            expect_epoch,
        } => (
            conn,
            "addNode",
            format!(
                "mutation($a: String!, $v: Boolean!, $e: Int) {{ addNode(address: $a, voter: $v, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"a": address, "v": !non_voter, "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Remove {
            conn,
            id,
            expect_epoch,
        } => (
            conn,
            "removeNode",
            format!(
                "mutation($id: ID!, $e: Int) {{ removeNode(id: $id, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Voter {
            conn,
            id,
            vote,
            expect_epoch,
        } => (
            conn,
            "setNodeVoter",
            format!(
                "mutation($id: ID!, $v: Boolean!, $e: Int) {{ setNodeVoter(id: $id, voter: $v, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "v": vote == "on", "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Replication {
            conn,
            factor,
            expect_epoch,
        } => (
            conn,
            "setReplicationFactor",
            format!(
                "mutation($f: Int!, $e: Int) {{ setReplicationFactor(factor: $f, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"f": factor, "e": epoch(expect_epoch)}),
        ),
    };
    let data = match conn.client()?.query(&query, vars).await {
        Ok(data) => data,
        Err(rondo_cli::Error::GraphQl { code, message }) if code == "CONFLICT" => {
            eprintln!("error: {message} ({code})");
            return Ok(ExitCode::from(EXIT_CONFLICT));
        }
        Err(e) => return Err(e.into()),
    };
    print_layout(&data[field]);
    Ok(ExitCode::SUCCESS)
}

fn print_layout(l: &Value) {
    println!(
        "layout   epoch {}, replication factor {}",
        l["epoch"].as_u64().unwrap_or(0),
        l["replicationFactor"].as_u64().unwrap_or(0)
    );
    for n in l["nodes"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "member   {}  {}  {}",
            n["id"].as_str().unwrap_or("?"),
            n["address"].as_str().unwrap_or("?"),
            if n["isVoter"].as_bool() == Some(true) {
                "voter"
            } else {
                "non-voter"
            }
        );
    }
}

async fn create_user(
    client: &Client,
    name: &str,
    password: String,
    admin: bool,
) -> anyhow::Result<ExitCode> {
    let data = client
        .query(
            "mutation($name: String!, $password: String!, $role: UserRole!) { \
               createUser(name: $name, password: $password, role: $role) { id name role } }",
            json!({
                "name": name,
                "password": password,
                "role": if admin { "ADMIN" } else { "LISTENER" },
            }),
        )
        .await?;
    let u = &data["createUser"];
    println!(
        "created {} {} ({})",
        u["role"].as_str().unwrap_or("?").to_lowercase(),
        u["name"].as_str().unwrap_or(name),
        u["id"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
                let entry = entry.with_context(|| format!("walk {}", p.display()))?;
                if entry.file_type().is_file() {
                    files.push(entry.into_path());
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Uploads files, `jobs` at a time; one line per file, in the order of the
/// files; exit 1 if any upload failed (skipped unsupported files do not
/// count as failures).
pub async fn upload(client: &Client, paths: &[PathBuf], jobs: usize) -> anyhow::Result<ExitCode> {
    let files = collect_files(paths)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = Arc::new(indicatif::ProgressBar::new(total));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut ok, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    let mut results = futures::stream::iter(files.iter())
        .map(|file| {
            let bar = bar.clone();
            async move { (file, upload_one(client, file, bar).await) }
        })
        .buffered(jobs.max(1));
    let mut finished = 0;
    let mut uploaded = Vec::new();
    while let Some((file, result)) = results.next().await {
        finished += 1;
        bar.set_message(format!("{finished}/{} files", files.len()));
        let line = match result {
            Ok(song) => {
                ok += 1;
                if let Some(id) = song.pointer("/id").and_then(Value::as_str) {
                    uploaded.push(id.to_string());
                }
                format!(
                    "ok    {}  {} — {} ({})",
                    file.display(),
                    song.pointer("/title").and_then(Value::as_str).unwrap_or(""),
                    song.pointer("/artist/name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    song.pointer("/id").and_then(Value::as_str).unwrap_or("")
                )
            }
            Err(rondo_cli::Error::GraphQl { code, message }) if code == "UNSUPPORTED_MEDIA" => {
                skipped += 1;
                format!("skip  {}  {message}", file.display())
            }
            Err(e) => {
                failed += 1;
                format!("FAIL  {}  {e}", file.display())
            }
        };
        bar.suspend(|| println!("{line}"));
    }
    bar.finish_and_clear();
    // The nodes answered once each song was committed; wait (briefly) for
    // the gateway's index too, so that a query right after sees them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for id in &uploaded {
        loop {
            let found = client
                .query(
                    "query($id: ID!) { song(id: $id) { id } }",
                    json!({ "id": id }),
                )
                .await
                .is_ok_and(|d| !d["song"].is_null());
            if found {
                break;
            }
            if std::time::Instant::now() > deadline {
                eprintln!("note: the gateway does not list every new song yet");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if std::time::Instant::now() > deadline {
            break;
        }
    }
    println!("{ok} uploaded, {skipped} skipped, {failed} failed");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Attempts per file: a node can die between the gateway's last health
/// check and the upload, or be refusing writes for want of a quorum. The
/// waits between attempts (0.25, 0.5, 1 and 2 s) outlast the gateway's
/// health-check interval (2 s), after which it names only live nodes.
const UPLOAD_ATTEMPTS: u32 = 5;

/// Whether a failed upload certainly stored nothing and another grant may
/// succeed: the node could not be reached at all, or it refused the write
/// for want of a quorum. (A connection lost mid-answer is not retried: the
/// song may be stored, and a retry would store it twice.)
fn retryable(e: &rondo_cli::Error) -> bool {
    match e {
        rondo_cli::Error::Http { source, .. } => source.is_connect(),
        rondo_cli::Error::GraphQl { code, .. } => code == "UNAVAILABLE",
        _ => false,
    }
}

async fn upload_one(
    client: &Client,
    path: &Path,
    bar: Arc<indicatif::ProgressBar>,
) -> rondo_cli::Result<Value> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 1;
    loop {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(rondo_cli::Error::io(format!("open {}", path.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(rondo_cli::Error::io(format!("stat {}", path.display())))?
            .len();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (counter, progress) = (sent.clone(), bar.clone());
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
                if let Ok(c) = chunk {
                    progress.inc(c.len() as u64);
                    counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        match client
            .upload_direct(reqwest::Body::wrap_stream(stream), len, &name, json!({}))
            .await
        {
            Err(e) if attempt < UPLOAD_ATTEMPTS && retryable(&e) => {
                let back = sent.load(std::sync::atomic::Ordering::Relaxed);
                bar.set_position(bar.position().saturating_sub(back));
                bar.suspend(|| eprintln!("retry {}: {e}", path.display()));
                tokio::time::sleep(std::time::Duration::from_millis(250 << (attempt - 1))).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn songs(client: &Client, search: Option<String>, limit: u32) -> anyhow::Result<ExitCode> {
    let data = client
        .query(
            "query($s: String, $n: Int) { songs(search: $s, first: $n) { totalCount nodes { id title durationMs artist { name } album { title } } } }",
            json!({ "s": search, "n": limit.min(100) }),
        )
        .await?;
    let empty = Vec::new();
    let nodes = data
        .pointer("/songs/nodes")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for s in nodes {
        let ms = s.get("durationMs").and_then(Value::as_u64).unwrap_or(0);
        println!(
            "{}  {} — {} — {}  {}:{:02}",
            s.get("id").and_then(Value::as_str).unwrap_or(""),
            s.get("title").and_then(Value::as_str).unwrap_or(""),
            s.pointer("/artist/name")
                .and_then(Value::as_str)
                .unwrap_or(""),
            s.pointer("/album/title")
                .and_then(Value::as_str)
                .unwrap_or(""),
            ms / 60_000,
            (ms / 1000) % 60
        );
    }
    let total = data
        .pointer("/songs/totalCount")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    println!("{} of {total} songs", nodes.len());
    Ok(ExitCode::SUCCESS)
}

async fn ring(client: &Client) -> anyhow::Result<ExitCode> {
    let data = client
        .query(
            "{ cluster { nodes { id state ringId ringPhase lastAppliedSeq catalogDigest isVoter } \
               ring { id members tokenHolder lastSeq rotationsPerSecond } \
               layout { epoch replicationFactor nodes { id address isVoter } } } }",
            json!({}),
        )
        .await?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let ring = data.pointer("/cluster/ring").filter(|r| !r.is_null());
    match ring {
        Some(r) => {
            let members: Vec<&str> = r
                .get("members")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("ring     {}", text(r, "id"));
            println!("members  {}", members.join(" "));
            println!("token    {} (last seen)", text(r, "tokenHolder"));
            println!(
                "log      last seq {}, {:.1} rotations/s",
                r.get("lastSeq").and_then(Value::as_u64).unwrap_or(0),
                r.get("rotationsPerSecond")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
            );
        }
        None => println!("ring     none operational (no quorum?)"),
    }
    if let Some(l) = data.pointer("/cluster/layout").filter(|l| !l.is_null()) {
        print_layout(l);
    }
    let empty = Vec::new();
    for n in data
        .pointer("/cluster/nodes")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let digest = text(n, "catalogDigest");
        println!(
            "node     {}  {}  {}  ring {}  applied {}  digest {}  {}",
            text(n, "id"),
            text(n, "state"),
            text(n, "ringPhase"),
            text(n, "ringId"),
            n.get("lastAppliedSeq").and_then(Value::as_u64).unwrap_or(0),
            digest.get(..16).unwrap_or(&digest),
            if n.get("isVoter").and_then(Value::as_bool) == Some(true) {
                "voter"
            } else {
                "non-voter"
            }
        );
    }
    Ok(if ring.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

async fn status(client: &Client) -> anyhow::Result<ExitCode> {
    let data = client
        .query(
            "{ cluster { nodes { id address state songCount bytesStored outboxLength } \
               gateways { id address vrrpState priority isMaster vip lastSeenMs } } }",
            json!({}),
        )
        .await?;
    println!("gateway  {}", client.base);
    let empty = Vec::new();
    let gateways = data
        .pointer("/cluster/gateways")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for g in gateways {
        let master = g.get("isMaster").and_then(Value::as_bool).unwrap_or(false);
        println!(
            "replica  {}  {}  {} priority {}{}",
            g.get("id").and_then(Value::as_str).unwrap_or("?"),
            g.get("address").and_then(Value::as_str).unwrap_or(""),
            g.get("vrrpState").and_then(Value::as_str).unwrap_or("?"),
            g.get("priority").and_then(Value::as_u64).unwrap_or(0),
            if master {
                format!(
                    "  holds {}",
                    g.get("vip")
                        .and_then(Value::as_str)
                        .unwrap_or("the floating address")
                )
            } else {
                String::new()
            }
        );
    }
    let nodes = data
        .pointer("/cluster/nodes")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut down = 0;
    for n in nodes {
        let state = n.get("state").and_then(Value::as_str).unwrap_or("?");
        if state != "UP" {
            down += 1;
        }
        println!(
            "node     {}  {}  {}  {} songs  {} bytes  {} pending",
            n.get("id").and_then(Value::as_str).unwrap_or("(unknown)"),
            n.get("address").and_then(Value::as_str).unwrap_or(""),
            state,
            n.get("songCount").and_then(Value::as_u64).unwrap_or(0),
            n.get("bytesStored").and_then(Value::as_u64).unwrap_or(0),
            n.get("outboxLength").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    Ok(if down > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
