//! `rondo`: the admin CLI. Parses the command line and hands each command
//! to its module under `cmd/`.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cmd::{Conn, Exit};

/// Uploads and streams pass large buffers through the allocator; glibc's
/// returns them to the kernel and faults fresh zeroed pages in for the next
/// one, mimalloc reuses them (bench/ingest.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rondo admin CLI: run a local deployment, upload music, inspect the cluster.
#[derive(Debug, Parser)]
#[command(name = "rondo", version = rondo_process::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a complete local deployment (storage nodes and a gateway) on
    /// loopback, with demo data.
    Dev(cmd::dev::DevArgs),
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
        /// Every song, page after page (not only the first --limit).
        #[arg(long, conflicts_with = "limit")]
        all: bool,
        /// Songs per page with --all.
        #[arg(long, default_value_t = 100, hide = true, value_parser = clap::value_parser!(u32).range(1..=100))]
        page_size: u32,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the health of the gateway and the storage nodes.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// As JSON (the GraphQL answer); the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Show the control plane: the ring that orders the catalog, and where
    /// each node is in the log. Exit code 4 if no ring is operational.
    Ring {
        #[command(flatten)]
        conn: Conn,
        /// As JSON (the GraphQL answer); the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Manage accounts.
    #[command(subcommand)]
    User(cmd::user::UserCommand),
    /// Change the cluster's storage nodes. Each change names the layout
    /// epoch it expects (`--expect-epoch`, default: the newest known); if
    /// another change was ordered first it fails with exit code 3 and
    /// changes nothing.
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// The layout and its placement: show it, plan a change (what it would
    /// move), apply one.
    #[command(subcommand)]
    Layout(cmd::layout::LayoutCommand),
    /// The cluster CA and the certificates of storage nodes and gateways
    /// (mutual TLS inside the cluster); offline.
    #[command(subcommand)]
    Cert(cmd::cert::CertCommand),
    /// Make what a deployment needs before its first start (CAs and
    /// certificates, the admin token, the cluster secret, each node's and
    /// gateway's configuration, the peers that bootstrap the cluster);
    /// offline, and again without harm.
    Init(cmd::init::InitArgs),
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
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = cmd::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Dev(args) => cmd::dev::run(args).await,
        Command::Upload { conn, paths, jobs } => {
            cmd::upload::run(&conn.client()?, &paths, usize::from(jobs)).await
        }
        Command::Songs {
            conn,
            search,
            limit,
            all,
            page_size,
            json,
        } => {
            let page = if all { page_size } else { limit.min(100) };
            cmd::songs::run(&conn.client()?, search, page, all, json).await
        }
        Command::Status { conn, json } => cmd::status::run(&conn.client()?, json).await,
        Command::Ring { conn, json } => cmd::ring::run(&conn.client()?, json).await,
        Command::User(user) => cmd::user::run(user).await,
        Command::Node(node) => cmd::node::run(node).await,
        Command::Layout(layout) => cmd::layout::run(layout).await,
        Command::Cert(cert) => cmd::cert::run(cert),
        Command::Init(args) => cmd::init::run(&args),
    }
}
