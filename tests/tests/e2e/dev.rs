//! `rondo dev`: a whole local deployment with demo data, stopped by Ctrl-C
//! and reusing its data on the next run.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use rondo_tests::{bin, eventually};

/// Ports for one `rondo dev`, which uses fixed offsets from its `--port`
/// (+1.. for streaming, +100.. for gRPC), reserved against the other tests
/// that run `rondo dev` in parallel processes: each port is held by an
/// exclusive lock on a file named after it until the lease is dropped, and
/// must also be free to bind. The base is taken below Linux's ephemeral
/// range (32768 and up), where no port-0 bind or outgoing connection of a
/// parallel test can land.
pub struct PortLease {
    /// The `--port` to pass.
    pub base: u16,
    _locks: Vec<nix::fcntl::Flock<std::fs::File>>,
}

/// Reserves the ports of a `rondo dev --nodes NODES`.
pub fn dev_ports(nodes: u16) -> PortLease {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let lock = |p: u16| {
        let file = std::fs::File::create(std::env::temp_dir().join(format!("rondo-port-{p}.lock")))
            .ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
    };
    let seed = std::process::id() as usize;
    for attempt in 0..500usize {
        let base = 20_000 + ((seed * 7919 + attempt * 131) % 12_000) as u16;
        let ports = (0..=nodes)
            .chain((0..nodes).map(|i| 100 + i))
            .map(|o| base + o);
        let locks: Option<Vec<_>> = ports.map(|p| lock(p).filter(|_| free(p))).collect();
        if let Some(locks) = locks {
            return PortLease {
                base,
                _locks: locks,
            };
        }
    }
    panic!("no free base port below the ephemeral range");
}

/// What `rondo dev` printed and the tail of every process log it keeps,
/// for a failure message.
fn dev_report(data: &std::path::Path, out: &std::path::Path) -> String {
    let mut report = format!(
        "rondo dev output:\n{}",
        std::fs::read_to_string(out).unwrap_or_default()
    );
    let mut logs: Vec<_> = std::fs::read_dir(data.join("logs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        report.push_str(&format!("\n--- {} (last 40 lines)\n", log.display()));
        for line in tail.into_iter().rev() {
            report.push_str(line);
            report.push('\n');
        }
    }
    report
}

/// Starts `rondo dev --data DATA --port PORT ARGS…` and waits for its
/// `dev.json`; if it exits first or takes two minutes, fails with its output
/// and its process logs.
pub async fn run_dev(
    data: &std::path::Path,
    port: u16,
    args: &[&std::ffi::OsStr],
) -> (tokio::process::Child, rondo_cli::devenv::DevInfo) {
    let out_path = data.with_extension(format!("out-{}", std::process::id()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = tokio::process::Command::new(bin("rondo"))
        .args(["dev", "--data"])
        .arg(data)
        .args(["--port", &port.to_string()])
        .args(args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Ok(info) = rondo_cli::devenv::read_dev_info(data) {
            return (child, info);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "rondo dev exited ({status}) before writing dev.json\n{}",
                dev_report(data, &out_path)
            );
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!(
                "rondo dev wrote no dev.json in 120 s\n{}",
                dev_report(data, &out_path)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rondo_dev_runs_seeds_stops_and_reuses_data() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rondo-data");
    let lease = dev_ports(2);
    let port = lease.base;
    let nodes = ["--nodes".as_ref(), "2".as_ref()];
    let (mut child, info) = run_dev(&data, port, &nodes).await;
    assert_eq!(
        info.graphql_url,
        format!("https://127.0.0.1:{port}/graphql")
    );
    assert!(info.ca_cert.exists() && info.admin_token_file.exists());
    let ca = std::fs::read(&info.ca_cert).unwrap();
    let client = rondo_cli::client::Client::new(&info.gateway_url, &ca, None).unwrap();
    let q = "{ songs(first: 100) { totalCount nodes { id streamUrl } } artists { totalCount } albums { totalCount } cluster { nodes { state } } }";
    let d = client.query(q, json!({})).await.unwrap();
    assert!(d["songs"]["totalCount"].as_u64().unwrap() >= 20, "{d}");
    assert!(d["artists"]["totalCount"].as_u64().unwrap() >= 3, "{d}");
    assert!(d["albums"]["totalCount"].as_u64().unwrap() >= 4, "{d}");
    assert_eq!(d["cluster"]["nodes"].as_array().unwrap().len(), 2);
    let ids: Vec<Value> = d["songs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].clone())
        .collect();
    // The web app's admin: "admin", with the password rondo dev wrote.
    let password = std::fs::read_to_string(data.join("admin-password")).unwrap();
    let login = client
        .query(
            "mutation($p: String!) { login(name: \"admin\", password: $p) { user { role } } }",
            json!({ "p": password.trim() }),
        )
        .await
        .unwrap();
    assert_eq!(login["login"]["user"]["role"], "ADMIN", "{login}");
    // Demo songs are real audio that streams.
    let url = d["songs"]["nodes"][0]["streamUrl"].as_str().unwrap();
    let resp = client
        .http()
        .get(url)
        .header("range", "bytes=0-11")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(&resp.bytes().await.unwrap()[..4], b"RIFF");
    // Run outside the repository (the tests run in tests/), it still
    // serves the web app: the build next to the binary, not the minimal
    // player page.
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../webapp/dist/index.html");
    let page = client
        .http()
        .get(format!("{}/", info.gateway_url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        page.as_ref(),
        std::fs::read(&built).unwrap().as_slice(),
        "the web app's index.html"
    );
    // And it says where the build came from.
    let said = std::fs::read_to_string(data.with_extension(format!("out-{}", std::process::id())))
        .unwrap_or_default();
    let dist = built.parent().unwrap().canonicalize().unwrap();
    assert!(
        said.contains(&format!(
            "Web app: {} (found next to the rondo binary)",
            dist.display()
        )),
        "{said}"
    );

    // Ctrl-C stops everything.
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    kill(pid, Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let alive = std::process::Command::new("pgrep")
        .args(["-f", &data.display().to_string()])
        .output()
        .unwrap();
    assert!(
        alive.stdout.is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&alive.stdout)
    );

    // Running it again reuses the data: the same songs, nothing seeded twice.
    std::fs::remove_file(data.join("dev.json")).unwrap();
    let (mut child, info) = run_dev(&data, port, &nodes).await;
    let client = rondo_cli::client::Client::new(
        &info.gateway_url,
        &std::fs::read(&info.ca_cert).unwrap(),
        None,
    )
    .unwrap();
    // The gateway rebuilds its index from the nodes; wait for it, then the
    // songs must be exactly the first run's.
    let again = rondo_tests::eventually("index reloaded", Duration::from_secs(30), || async {
        let d = client.query(q, json!({})).await.ok()?;
        let again: Vec<Value> = d["songs"]["nodes"]
            .as_array()?
            .iter()
            .map(|n| n["id"].clone())
            .collect();
        (again.len() >= ids.len()).then_some(again)
    })
    .await
    .unwrap();
    assert_eq!(again, ids);
    // Killed too hard to stop them (SIGKILL), `rondo dev` still leaves no
    // node or gateway behind: they notice their parent is gone.
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait().await;
    let pattern = data.display().to_string();
    eventually("children to stop", Duration::from_secs(15), || async {
        let alive = std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .ok()?;
        alive.stdout.is_empty().then_some(())
    })
    .await
    .unwrap();
}
