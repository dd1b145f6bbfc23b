//! `rondo dev`: a complete local deployment on loopback.
//!
//! Every storage node and the gateway run as their own OS processes (the
//! `rondo-node` and `rondo-gateway` binaries next to `rondo`), so any of them
//! can be killed. Data, certificates and secrets live under `--data` and are
//! reused by the next run.

use super::Exit;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rondo_cli::client::Client;
use rondo_cli::devenv::{self, DevInfo, DevNode};
use rondo_core::tls::Identity;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Options of `rondo dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory (created if missing, reused if present).
    #[arg(long, env = "RONDO_DATA", default_value = "rondo-data")]
    data: PathBuf,
    /// Number of storage nodes (they order the catalog on one token ring).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: u16,
    /// HTTPS port of the gateway; node i streams on port+1+i and serves gRPC
    /// on port+100+i.
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Do not seed the demo catalog.
    #[arg(long)]
    no_demo: bool,
    /// A built web app to serve at `/` (default: `webapp/dist`, built with
    /// npm first if the source is here and no build is).
    #[arg(long)]
    webapp: Option<PathBuf>,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RONDO_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locate the rondo binary")?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn spawn(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone().context("clone log handle")?;
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .env("RONDO_EXIT_WITH_PARENT", "1")
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {} (build it with `cargo build`)", bin.display()))
}

/// Runs the deployment until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<Exit> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("create {}", args.data.display()))?;
    let dir = args.data.canonicalize().context("resolve data directory")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).context("create logs directory")?;
    let pki = devenv::ensure_pki(&dir)?;
    let token_file = dir.join("admin-token");
    let secret_file = dir.join("cluster-secret");
    devenv::ensure_secret(&token_file)?;
    devenv::ensure_secret(&secret_file)?;
    let Some(last_port) = args.port.checked_add(100 + args.nodes) else {
        bail!("--port {} is too high", args.port)
    };
    let _ = last_port;

    let (nodes, gateway_config) = write_configs(&args, &dir, &pki, &token_file, &secret_file)?;
    let mut children = Vec::new();
    start_all(&nodes, &gateway_config, &dir, &logs, &mut children).await?;

    let gateway_url = format!("https://127.0.0.1:{}", args.port);
    let info = DevInfo {
        graphql_url: format!("{gateway_url}/graphql"),
        webapp_url: format!("{gateway_url}/"),
        gateway_url: gateway_url.clone(),
        ca_cert: pki.ca_cert.clone(),
        admin_token_file: token_file.clone(),
        nodes,
    };
    let token = std::fs::read_to_string(&token_file)
        .context("read admin token")?
        .trim()
        .to_string();
    let ca = std::fs::read(&pki.ca_cert).context("read CA certificate")?;
    let client = Client::new(&gateway_url, &ca, Some(token))?;

    let ready = tokio::select! {
        r = wait_ready(&client, usize::from(args.nodes), &mut children) => r,
        () = rondo_process::shutdown() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = ready {
        stop(&mut children).await;
        return Err(e.context(format!(
            "deployment did not come up; logs are in {}",
            logs.display()
        )));
    }
    if !args.no_demo {
        let seeded = match ensure_demo_admin(&client, &dir).await {
            Ok(()) => seed_demo(&client, &dir).await,
            Err(e) => Err(e),
        };
        if let Err(e) = seeded {
            stop(&mut children).await;
            return Err(e.context("seed demo data"));
        }
    }
    devenv::write_dev_info(&dir, &info)?;
    println!("Rondo is running.");
    println!("  GraphQL:     {}", info.graphql_url);
    println!("  Web app:     {}", info.webapp_url);
    println!("  CA cert:     {}", info.ca_cert.display());
    println!("  Admin token: {}", info.admin_token_file.display());
    if !args.no_demo {
        println!(
            "  Web app admin: \"admin\", password in {}",
            dir.join("admin-password").display()
        );
    }
    println!("  Details:     {}", dir.join("dev.json").display());
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        () = rondo_process::shutdown() => {}
        name = watch_children(&mut children, &logs) => {
            eprintln!("{name} exited; stopping the deployment (logs in {})", logs.display());
            stop(&mut children).await;
            return Ok(Exit::Failure);
        }
    }
    println!("Stopping…");
    stop(&mut children).await;
    Ok(Exit::Success)
}

/// Writes the configuration of every node and of the gateway; answers the
/// nodes and the gateway's configuration file.
fn write_configs(
    args: &DevArgs,
    dir: &Path,
    pki: &devenv::Pki,
    token_file: &Path,
    secret_file: &Path,
) -> anyhow::Result<(Vec<DevNode>, PathBuf)> {
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let data_dir = dir.join(format!("node-{i}"));
        let http = format!("127.0.0.1:{}", args.port + 1 + i);
        let grpc = format!("127.0.0.1:{}", args.port + 100 + i);
        let config = data_dir.join("node.toml");
        let cluster = devenv::ensure_cluster_cert(pki, &data_dir, || {
            Identity::Node(devenv::node_id_of(&data_dir))
        })?;
        let mut t = devenv::node_table(&data_dir, &grpc, &http, pki, &cluster, secret_file);
        // The node's /metrics takes the admin token here (a deployment
        // gives its scraper a token of its own).
        t.insert(
            "metrics_token_file".into(),
            token_file.display().to_string().into(),
        );
        t.insert(
            "address_file".into(),
            data_dir.join("addresses.json").display().to_string().into(),
        );
        // A node down for a minute is marked out of placement (ten in a
        // deployment), so that stopping one shows re-replication soon.
        t.insert("down_out_interval_ms".into(), 60_000.into());
        let mut ring = toml::Table::new();
        ring.insert(
            "peers_file".into(),
            dir.join("peers.toml").display().to_string().into(),
        );
        t.insert("ring".into(), toml::Value::Table(ring));
        let _ = std::fs::remove_file(data_dir.join("addresses.json"));
        devenv::write_config(&config, &t)?;
        nodes.push(DevNode {
            grpc_url: format!("https://{grpc}"),
            stream_url: format!("https://{http}"),
            data_dir,
            config,
        });
    }
    let gateway_config = dir.join("gateway.toml");
    let node_urls: Vec<String> = nodes.iter().map(|n| n.grpc_url.clone()).collect();
    let cluster = devenv::ensure_cluster_cert(pki, &dir.join("gateway"), || {
        Identity::Gateway(uuid::Uuid::new_v4())
    })?;
    let mut t = devenv::gateway_table(
        &format!("127.0.0.1:{}", args.port),
        &node_urls,
        pki,
        &cluster,
        token_file,
        secret_file,
    );
    match webapp_dir(args.webapp.as_deref()) {
        Some((webapp, how)) => {
            println!("Web app: {} ({how})", webapp.display());
            t.insert("webapp_dir".into(), webapp.display().to_string().into());
        }
        None => println!(
            "No web app build found (--webapp, ./webapp/dist, next to the rondo binary, \
             /usr/share/rondo/webapp): the gateway serves its minimal player page at /. \
             Build it with `cd webapp && npm ci && npm run build`."
        ),
    }
    devenv::write_config(&gateway_config, &t)?;
    Ok((nodes, gateway_config))
}

/// Starts the nodes, tells them about each other once each has bound its
/// ports and made its id (the peers file), then starts the gateway. On a
/// failure the processes started so far are stopped.
async fn start_all(
    nodes: &[DevNode],
    gateway_config: &Path,
    dir: &Path,
    logs: &Path,
    children: &mut Vec<(String, Child)>,
) -> anyhow::Result<()> {
    let bins = bin_dir()?;
    for (i, node) in nodes.iter().enumerate() {
        children.push((
            format!("node-{i}"),
            spawn(
                &bins.join("rondo-node"),
                &node.config,
                &logs.join(format!("node-{i}.log")),
            )?,
        ));
    }
    // Once every node is up (and has its id), tell them about each other.
    let mut peers = Vec::new();
    for node in nodes {
        let started = std::time::Instant::now();
        while !node.data_dir.join("addresses.json").exists() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                stop(children).await;
                bail!(
                    "node in {} did not start; logs are in {}",
                    node.data_dir.display(),
                    logs.display()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // The node's id is the one its certificate names.
        let id = devenv::cluster_identity(&node.data_dir)
            .and_then(|i| i.node())
            .context("read the node's certificate")?;
        peers.push((id, node.grpc_url.clone()));
    }
    devenv::write_peers(&dir.join("peers.toml"), &peers)?;
    children.push((
        "gateway".into(),
        spawn(
            &bins.join("rondo-gateway"),
            gateway_config,
            &logs.join("gateway.log"),
        )?,
    ));
    Ok(())
}

/// The web app build to serve, and where it was found: the one given; or
/// `webapp/dist` under the current directory, built first (npm ci, npm run
/// build) when only the source is here; or a build next to the `rondo`
/// binary (`webapp/` beside it, `../share/rondo/webapp`, or the
/// repository's `webapp/dist` for a binary in `target/*/`); or the
/// image's `/usr/share/rondo/webapp`. So `rondo dev` run from anywhere
/// serves the web app, not the minimal player page.
fn webapp_dir(given: Option<&Path>) -> Option<(PathBuf, &'static str)> {
    let built = |d: &Path| d.join("index.html").exists();
    if let Some(dir) = given {
        if built(dir) {
            return dir.canonicalize().ok().map(|d| (d, "given with --webapp"));
        }
        eprintln!(
            "warning: {} has no index.html; not serving it",
            dir.display()
        );
        return None;
    }
    let source = PathBuf::from("webapp");
    let dist = source.join("dist");
    if !built(&dist) && source.join("package.json").exists() {
        println!("Building the web app (npm ci, npm run build; once)…");
        let npm = |args: &[&str]| {
            std::process::Command::new("npm")
                .args(args)
                .current_dir(&source)
                .stdin(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let installed = source.join("node_modules").exists()
            || npm(&["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        if !(installed && npm(&["run", "build", "--silent"])) {
            eprintln!("warning: building the web app failed (is Node 20 with npm installed?)");
        }
    }
    if built(&dist) {
        return dist
            .canonicalize()
            .ok()
            .map(|d| (d, "built in this directory"));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(exe) = exe_dir {
        for candidate in [
            exe.join("webapp"),
            exe.join("../share/rondo/webapp"),
            exe.join("../../webapp/dist"),
        ] {
            if built(&candidate) {
                return candidate
                    .canonicalize()
                    .ok()
                    .map(|d| (d, "found next to the rondo binary"));
            }
        }
    }
    let system = PathBuf::from("/usr/share/rondo/webapp");
    built(&system).then_some((system, "installed"))
}

async fn wait_ready(
    client: &Client,
    nodes: usize,
    children: &mut [(String, Child)],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (name, child) in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited during start-up ({status})");
            }
        }
        if let Ok(data) = client
            .query("{ cluster { nodes { state } } }", json!({}))
            .await
        {
            let up = data
                .pointer("/cluster/nodes")
                .and_then(Value::as_array)
                .map_or(0, |ns| {
                    ns.iter()
                        .filter(|n| n.get("state").and_then(Value::as_str) == Some("UP"))
                        .count()
                });
            if up == nodes {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for the gateway and {nodes} node(s)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An admin account for the web app ("admin", a random password in
/// `DIR/admin-password`): registering makes listeners only.
async fn ensure_demo_admin(client: &Client, dir: &Path) -> anyhow::Result<()> {
    let file = dir.join("admin-password");
    if file.exists() {
        return Ok(());
    }
    let password = devenv::ensure_secret(&dir.join("admin-password.new"))?;
    client
        .query(
            "mutation($p: String!) { createUser(name: \"admin\", password: $p, role: ADMIN) { id } }",
            serde_json::json!({ "p": password }),
        )
        .await
        .context("create the web app's admin account")?;
    std::fs::rename(dir.join("admin-password.new"), &file).context("keep the admin password")?;
    Ok(())
}

async fn seed_demo(client: &Client, dir: &Path) -> anyhow::Result<()> {
    // A marker written after the last demo upload: the gateway's index may
    // still be loading when a rerun asks it, so its song count cannot tell.
    let marker = dir.join("demo-seeded");
    if marker.exists() {
        return Ok(());
    }
    let audio = dir.join("demo-audio");
    std::fs::create_dir_all(&audio).context("create demo-audio")?;
    let catalog = rondo_cli::demo::catalog();
    println!("Seeding the demo catalog ({} songs)…", catalog.len());
    for (i, song) in catalog.iter().enumerate() {
        let path = audio.join(format!("{:02} {}.wav", i + 1, song.title));
        if !path.exists() {
            let seconds = 12.0 + (i % 5) as f32 * 2.0;
            let cover = rondo_cli::demo::cover(&song.album)?;
            rondo_cli::demo::write_song(&path, song, seconds, i as u64, Some(cover))?;
        }
        let response = client.upload_raw(&path, json!({}), "{ id }").await?;
        if let Some(e) = rondo_cli::client::first_error(&response) {
            return Err(e).with_context(|| format!("upload {}", path.display()));
        }
    }
    std::fs::write(&marker, b"").context("write demo-seeded marker")?;
    Ok(())
}

/// Returns when the gateway exits. A storage node that exits is reported
/// and the deployment keeps running on the others, as a real cluster does
/// (the point of Rondo); restarting `rondo dev` brings it back.
async fn watch_children(children: &mut [(String, Child)], logs: &Path) -> String {
    let mut reported = std::collections::HashSet::new();
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                if !name.starts_with("node-") {
                    return name.clone();
                }
                if reported.insert(name.clone()) {
                    eprintln!(
                        "{name} exited ({status}); the others keep serving (logs in {})",
                        logs.display()
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sends SIGTERM to every child, waits up to 10 s, then kills what is left.
async fn stop(children: &mut [(String, Child)]) {
    for (_, child) in children.iter_mut() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("{name} did not stop in time; killing it");
                let _ = child.kill().await;
            }
        }
    }
}
