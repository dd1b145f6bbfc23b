//! The Docker deployment (issue 16): `docker-compose.yml` brought up from
//! nothing, on an image made here (tests/docker/build-image.sh: a
//! debootstrapped Debian base and the binaries of this build), then used
//! and hurt only through what an operator and a client have: the floating
//! address, the nodes' streaming addresses, `docker kill`, `docker network
//! disconnect`, `docker-compose down`/`up`. Each step is timed and printed
//! in a short report. One test: it owns the host's Docker for its run (a
//! fixed compose project and fixed subnets).
//!
//! Needs root and Docker (CI installs docker.io, docker-compose and
//! debootstrap, and runs as root); without root it says SKIPPED. Without
//! Docker it fails, naming what is missing: it is never skipped silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rondo_tests::eventually;
use serde_json::{Value, json};

const PROJECT: &str = "rondodeploytest";
/// The image under test: made from this build, or one given by
/// `RONDO_DEPLOY_IMAGE` (e.g. the from-source image of
/// tests/docker/build-from-source.sh), used as it is and kept.
static IMAGE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| given_image().unwrap_or_else(|| "rondo:deploy-test".to_string()));

fn given_image() -> Option<String> {
    std::env::var("RONDO_DEPLOY_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
}

/// The gateways' advert interval in these tests: 100 ms, so that a
/// failover (about 0.4 s, BENCHMARKS §6) ends well before a client's one
/// retry, `RETRY_AFTER` later.
const ADVERT_MS: &str = "100";
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// The gateways' and the nodes' HTTPS ports: not the defaults, so that the
/// knobs of .env.example are seen to work.
const GATEWAY_PORT: &str = "9443";
const STREAM_PORT: &str = "7444";
const VIP: &str = "10.77.1.100";
const NODE_IPS: [&str; 3] = ["10.77.1.11", "10.77.1.12", "10.77.1.13"];
const INTERNAL_IPS: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(repo());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"))
}

fn ok(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(program, args, env);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker-compose` for the test's project, with its image.
fn compose(args: &[&str]) -> String {
    let mut all = vec!["-p", PROJECT, "-f", "docker-compose.yml"];
    all.extend_from_slice(args);
    ok(
        "docker-compose",
        &all,
        &[
            ("RONDO_IMAGE", IMAGE.as_str()),
            ("RONDO_VRRP_ADVERT_MS", ADVERT_MS),
            ("RONDO_GATEWAY_PORT", GATEWAY_PORT),
            ("RONDO_STREAM_PORT", STREAM_PORT),
            ("RONDO_DOWN_OUT_INTERVAL_MS", "600000"),
            // The rest at their defaults, whatever a local .env says.
            ("RONDO_VIP", VIP),
            ("RONDO_REPLICATION", "3"),
            ("RONDO_LOG_FORMAT", "text"),
        ],
    )
}

/// The container of a compose service.
fn container(service: &str) -> String {
    compose(&["ps", "-q", service])
}

/// dockerd, if the test started it: stopped when this is dropped, after
/// the guards that use it.
struct Dockerd(Option<std::process::Child>);

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut d) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(d.id()).unwrap_or(0)),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
    }
}

/// What both Docker tests need first: root (else `None`: SKIPPED), the
/// tools (else a failure naming the missing one), a dockerd (started if
/// none answers), and the image of this build, timed in `report`.
async fn docker_ready(what: &str, tools: &[&str], report: &mut Report) -> Option<Dockerd> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the Docker {what} test needs root (CI runs it as root)");
        return None;
    }
    for tool in tools {
        assert!(
            run("sh", &["-c", &format!("command -v {tool}")], &[])
                .status
                .success(),
            "{tool} is missing: .ci/run installs docker.io, docker-compose and debootstrap"
        );
    }
    let mut dockerd = Dockerd(None);
    if !run("docker", &["info"], &[]).status.success() {
        let log =
            std::fs::File::create(repo().join(format!("target/dockerd-{what}-test.log"))).unwrap();
        dockerd.0 = Some(
            Command::new("dockerd")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        eventually("dockerd answers", Duration::from_secs(60), || async {
            run("docker", &["info"], &[]).status.success().then_some(())
        })
        .await
        .unwrap();
    }
    let bin_dir = rondo_tests::bin("rondo-node")
        .parent()
        .map(Path::to_path_buf)
        .unwrap();
    let t = Instant::now();
    if let Some(image) = given_image() {
        assert!(
            run("docker", &["image", "inspect", &image], &[])
                .status
                .success(),
            "RONDO_DEPLOY_IMAGE={image}: no such image"
        );
    } else {
        ok(
            "bash",
            &["tests/docker/build-image.sh", IMAGE.as_str()],
            &[("BIN_DIR", &bin_dir.display().to_string())],
        );
    }
    report.step("image", t, IMAGE.as_str());
    Some(dockerd)
}

/// Leaves what the compose test made, even when it fails: the project
/// with its volumes and networks, the image, then dockerd if it started it.
struct Cleanup {
    _dockerd: Dockerd,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What a failure needs to be understood where only the
            // test's output is kept (CI).
            for args in [&["ps"][..], &["logs", "--no-color", "--tail", "60"][..]] {
                let mut all = vec!["-p", PROJECT, "-f", "docker-compose.yml"];
                all.extend_from_slice(args);
                let out = run("docker-compose", &all, &[("RONDO_IMAGE", IMAGE.as_str())]);
                eprintln!(
                    "$ docker-compose {}\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let _ = run(
            "docker-compose",
            &[
                "-p",
                PROJECT,
                "-f",
                "docker-compose.yml",
                "down",
                "-v",
                "--remove-orphans",
                "-t",
                "2",
            ],
            &[("RONDO_IMAGE", IMAGE.as_str())],
        );
        if given_image().is_none() {
            let _ = run("docker", &["image", "rm", "-f", IMAGE.as_str()], &[]);
        }
    }
}

/// A client of the deployment from the host: GraphQL through the floating
/// address, streams from the nodes.
struct Client {
    gql: rondo_cli::client::Client,
    http: reqwest::Client,
    ca: Vec<u8>,
}

impl Client {
    async fn query(&self, q: &str, vars: Value) -> anyhow::Result<Value> {
        Ok(self.gql.query(q, vars).await?)
    }

    /// One GraphQL query on a fresh connection to the floating address
    /// (what a failover test must use: a kept connection would stay on the
    /// dead replica), given half a second, of which 100 ms to connect
    /// (TCP and TLS): a connection to the address while no replica holds it
    /// hangs, and a longer wait would blur the failover time measured.
    async fn probe(&self) -> bool {
        let Ok(tls) = rondo_cli::client::tls_config(&self.ca) else {
            return false;
        };
        let Ok(http) = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_millis(100))
            .timeout(Duration::from_millis(500))
            .build()
        else {
            return false;
        };
        let c = rondo_cli::client::Client::with_http(
            http,
            &format!("https://{VIP}:{GATEWAY_PORT}"),
            None,
        );
        c.query("{ songs(first: 1) { totalCount } }", json!({}))
            .await
            .is_ok()
    }
}

async fn song_count(c: &Client) -> u64 {
    c.query("{ songs(first: 1) { totalCount } }", json!({}))
        .await
        .ok()
        .and_then(|d| d.pointer("/songs/totalCount").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// Waits until every node in `expect` reports one applied seq and digest
/// to the gateway; answers the digest.
async fn converged(c: &Client, expect: usize) -> String {
    eventually(
        &format!("{expect} nodes with one catalog digest"),
        Duration::from_secs(120),
        || async {
            let d = c
                .query(
                    "{ cluster { nodes { state lastAppliedSeq catalogDigest } } }",
                    json!({}),
                )
                .await
                .ok()?;
            let nodes = d.pointer("/cluster/nodes")?.as_array()?.clone();
            let up: Vec<&Value> = nodes.iter().filter(|n| n["state"] == "UP").collect();
            let seen: std::collections::BTreeSet<String> = up
                .iter()
                .map(|n| format!("{} {}", n["lastAppliedSeq"], n["catalogDigest"]))
                .collect();
            (up.len() == expect && seen.len() == 1)
                .then(|| up[0]["catalogDigest"].as_str().map(str::to_string))
                .flatten()
        },
    )
    .await
    .unwrap()
}

/// Waits until the floating address has settled on gateway1 (priority
/// 150, preempting) with both replicas heard, then answers a fresh client
/// (a moved address resets the connections a client keeps).
async fn settled(base: &str, ca: &[u8], token: &str, http: &reqwest::Client) -> Client {
    eventually(
        "the address settles on gateway1",
        Duration::from_secs(60),
        || async {
            let c = rondo_cli::client::Client::new(base, ca, Some(token.to_string())).ok()?;
            let d = c
                .query("{ cluster { gateways { address isMaster } } }", json!({}))
                .await
                .ok()?;
            let gws = d.pointer("/cluster/gateways")?.as_array()?.clone();
            let master: Vec<&Value> = gws.iter().filter(|g| g["isMaster"] == true).collect();
            (gws.len() == 2
                && master.len() == 1
                && master[0]["address"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("10.77.1.21")))
            .then_some(())
        },
    )
    .await
    .unwrap();
    Client {
        gql: rondo_cli::client::Client::new(base, ca, Some(token.to_string())).unwrap(),
        http: http.clone(),
        ca: ca.to_vec(),
    }
}

/// Streams `song` through a URL the gateway signs now, with a range, and
/// compares the bytes with the file's.
async fn stream_range(c: &Client, id: &str, file: &[u8]) -> anyhow::Result<()> {
    let d = c
        .query(
            "query($id: ID!) { song(id: $id) { streamUrl } }",
            json!({ "id": id }),
        )
        .await?;
    let url = d
        .pointer("/song/streamUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("no stream URL: {d}"))?;
    let (from, to) = (100usize, file.len().min(5000) - 1);
    let r = c
        .http
        .get(url)
        .header("range", format!("bytes={from}-{to}"))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 206, "range answered {}", r.status());
    let body = r.bytes().await?;
    anyhow::ensure!(body.as_ref() == &file[from..=to], "other bytes from {url}");
    Ok(())
}

async fn upload(c: &Client, path: &Path) -> anyhow::Result<String> {
    let r = c.gql.upload_raw(path, json!({}), "{ id }").await?;
    r.pointer("/data/uploadSong/song/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("upload refused: {r}"))
}

/// Waits until `song` streams again after a node was lost (a URL may name
/// it until the gateway has seen it go); fails with the last error.
async fn streams_without(c: &Client, lost: &str, id: &str, file: &[u8]) {
    let last = std::sync::Mutex::new(String::new());
    let streamed = eventually(
        &format!("the song streams without {lost}"),
        Duration::from_secs(30),
        || async {
            let r = stream_range(c, id, file).await;
            if let (Err(e), Ok(mut l)) = (&r, last.lock()) {
                *l = format!("{e:#}");
            }
            r.ok()
        },
    )
    .await;
    assert!(
        streamed.is_ok(),
        "{streamed:?}: {}",
        last.lock().map(|l| l.clone()).unwrap_or_default()
    );
}

/// Each step's name, time and figures, printed as it ends and at the end.
struct Report(Vec<(String, Duration, String)>);

impl Report {
    fn step(&mut self, name: &str, since: Instant, note: impl Into<String>) {
        let (took, note) = (since.elapsed(), note.into());
        eprintln!("deploy: {name}: {took:.1?} {note}");
        self.0.push((name.into(), took, note));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_deployment_serves_and_survives() {
    let mut report = Report(Vec::new());
    let Some(dockerd) = docker_ready(
        "compose",
        &["docker", "docker-compose", "dockerd", "debootstrap"],
        &mut report,
    )
    .await
    else {
        return;
    };
    let cleanup = Cleanup { _dockerd: dockerd };
    // A project left by an earlier run that was killed.
    let _ = run(
        "docker-compose",
        &[
            "-p",
            PROJECT,
            "-f",
            "docker-compose.yml",
            "down",
            "-v",
            "--remove-orphans",
            "-t",
            "1",
        ],
        &[("RONDO_IMAGE", IMAGE.as_str())],
    );

    // Up from nothing: no step but this.
    let t = Instant::now();
    compose(&["up", "-d"]);
    let gw1 = container("gateway1");
    let ca = ok(
        "docker",
        &["exec", &gw1, "cat", "/etc/rondo/tls/ca.pem"],
        &[],
    )
    .into_bytes();
    let token = ok(
        "docker",
        &["exec", &gw1, "cat", "/etc/rondo/admin-token"],
        &[],
    );
    let tls = rondo_cli::client::tls_config(&ca).unwrap();
    // Bounded: a stream URL may name a node just killed, whose address no
    // longer answers at all (a connection would wait minutes for SYNs).
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("https://{VIP}:{GATEWAY_PORT}");
    eventually(
        "the floating address is ready",
        Duration::from_secs(180),
        || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
    let admin = settled(&base, &ca, &token, &http).await;
    converged(&admin, 3).await;
    // Every process runs as `rondo`; a gateway holds exactly NET_ADMIN and
    // NET_RAW (VRRP), a node no capability at all.
    for (service, binary, caps) in [
        ("gateway1", "rondo-gateway", 0x3000u64),
        ("node1", "rondo-node", 0),
    ] {
        let status = ok(
            "docker",
            &[
                "exec",
                &container(service),
                "sh",
                "-c",
                &format!(
                    "for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = {binary} ] && cat $p/status; done; true"
                ),
            ],
            &[],
        );
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(field("Uid:"), ["10001"; 4], "{service}: {status}");
        let eff = field("CapEff:");
        let eff = eff
            .first()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(u64::MAX);
        assert_eq!(eff, caps, "{service}'s effective capabilities: {status}");
    }
    let user = ok("docker", &["exec", &gw1, "id", "-un"], &[]);
    assert_eq!(user, "rondo");
    // The `layout` service sets the replication factor (3, .env.example).
    eventually(
        "a placement with R = 3",
        Duration::from_secs(120),
        || async {
            let d = admin
                .query(
                    "{ cluster { layout { replicationFactor placement { epoch } } } }",
                    json!({}),
                )
                .await
                .ok()?;
            let l = &d["cluster"]["layout"];
            (l["replicationFactor"] == 3 && l["placement"].is_object()).then_some(())
        },
    )
    .await
    .unwrap();
    report.step("up, ready through the floating address, R = 3", t, "");

    // A listener registers and logs in; the admin uploads; the song is
    // found and streams with a range, from the node the URL names.
    let t = Instant::now();
    let anon = rondo_cli::client::Client::new(&base, &ca, None).unwrap();
    let reg = anon
        .query(
            "mutation { register(name: \"deploylistener\", password: \"a long enough password\") { token } }",
            json!({}),
        )
        .await
        .unwrap();
    assert!(reg.pointer("/register/token").is_some(), "{reg}");
    let login = anon
        .query(
            "mutation { login(name: \"deploylistener\", password: \"a long enough password\") { token } }",
            json!({}),
        )
        .await
        .unwrap();
    let session = login["login"]["token"].as_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let a = crate::wav(
        tmp.path(),
        "a.wav",
        "Deployed",
        "Compose",
        "Networks",
        1.0,
        1,
    );
    let a_bytes = std::fs::read(&a).unwrap();
    let id_a = upload(&admin, &a).await.unwrap();
    let found = admin
        .query(
            "{ songs(search: \"deployed\", first: 5) { totalCount } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(found["songs"]["totalCount"], 1, "{found}");
    stream_range(&admin, &id_a, &a_bytes).await.unwrap();
    // At a node's external address and the configured streaming port.
    let url = admin
        .query(
            "query($id: ID!) { song(id: $id) { streamUrl } }",
            json!({ "id": id_a }),
        )
        .await
        .unwrap()["song"]["streamUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        NODE_IPS
            .iter()
            .any(|ip| url.starts_with(&format!("https://{ip}:{STREAM_PORT}/"))),
        "{url}"
    );
    let listener = rondo_cli::client::Client::new(&base, &ca, Some(session)).unwrap();
    let pl = listener
        .query(
            "mutation($s: [ID!]) { createPlaylist(name: \"Road\", songIds: $s) { id } }",
            json!({ "s": [id_a] }),
        )
        .await
        .unwrap();
    assert!(pl.pointer("/createPlaylist/id").is_some(), "{pl}");
    report.step(
        "register, login, upload, search, range stream, playlist",
        t,
        "",
    );

    // 1. The gateway holding the floating address is killed: the other
    // answers, and a client polling every 20 ms with one retry loses
    // nothing.
    let holder = eventually(
        "a gateway holds the address",
        Duration::from_secs(30),
        || async {
            let d = admin
                .query("{ cluster { gateways { address isMaster } } }", json!({}))
                .await
                .ok()?;
            d.pointer("/cluster/gateways")?
                .as_array()?
                .iter()
                .find(|g| g["isMaster"] == true)
                .and_then(|g| g["address"].as_str().map(str::to_string))
        },
    )
    .await
    .unwrap();
    let (master, backup) = if holder.starts_with("10.77.1.21") {
        ("gateway1", "gateway2")
    } else {
        ("gateway2", "gateway1")
    };
    let polling = Arc::new(AtomicBool::new(true));
    let lost = Arc::new(AtomicU64::new(0));
    let last_fail = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let poller = {
        let (polling, lost, last_fail) = (polling.clone(), lost.clone(), last_fail.clone());
        let c = Client {
            gql: admin.gql.clone(),
            http: http.clone(),
            ca: ca.clone(),
        };
        tokio::spawn(async move {
            let mut done = 0u64;
            while polling.load(Ordering::SeqCst) {
                if !c.probe().await {
                    if let Ok(mut f) = last_fail.lock() {
                        *f = Some(Instant::now());
                    }
                    // One retry, two seconds later.
                    tokio::time::sleep(RETRY_AFTER).await;
                    if !c.probe().await {
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master_id = container(master);
    let t = Instant::now();
    ok("docker", &["kill", &master_id], &[]);
    let kill_took = t.elapsed();
    // Probed back to back (a probe to an address nobody holds yet waits
    // its connect timeout), as BENCHMARKS §6's harness does.
    let failover = loop {
        if admin.probe().await {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the backup does not answer at the address"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    polling.store(false, Ordering::SeqCst);
    let polls = poller.await.unwrap();
    assert_eq!(
        lost.load(Ordering::SeqCst),
        0,
        "requests lost across the failover"
    );
    assert!(polls > 10, "only {polls} polls");
    // The failover target of BENCHMARKS §6 at 100 ms adverts is 400 ms,
    // from the last advert, for a release build measured alone (Docker:
    // 361 ms, "Under Docker"); this is a debug build on a machine that may
    // be slower, timed from before `docker kill`, so the test holds it to
    // the client's retry interval, which still tells 100 ms adverts (about
    // 0.4 s here) from the 1 s default (3.5 s); the figure itself is the
    // benchmark's.
    assert!(
        failover < RETRY_AFTER,
        "failover took {failover:?} (BENCHMARKS §6: about 0.4 s at 100 ms adverts)"
    );
    report.step(
        &format!("1. kill {master}: {backup} answers"),
        t,
        format!("failover {failover:.2?} (of which `docker kill` {kill_took:.2?}), 0 lost"),
    );
    ok("docker", &["start", &container(master)], &[]);
    let admin = settled(&base, &ca, &token, &http).await;

    // 2. A storage node is killed: the song still streams, uploads still
    // succeed; restarted, it catches up.
    let t = Instant::now();
    let node2 = container("node2");
    ok("docker", &["kill", &node2], &[]);
    streams_without(&admin, "node2", &id_a, &a_bytes).await;
    let b = crate::wav(
        tmp.path(),
        "b.wav",
        "While Down",
        "Compose",
        "Networks",
        1.0,
        2,
    );
    // Retried, as `rondo upload` does, and the attempts reported: the
    // first may meet a node not yet known to be down.
    let attempts = AtomicU64::new(0);
    let id_b = eventually(
        "an upload with a node down",
        Duration::from_secs(60),
        || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            upload(&admin, &b).await.ok()
        },
    )
    .await
    .unwrap();
    ok("docker", &["start", &node2], &[]);
    let digest = converged(&admin, 3).await;
    report.step(
        "2. kill node2, stream, upload, restart: caught up",
        t,
        format!(
            "upload took {} attempt(s); digest {digest}",
            attempts.load(Ordering::SeqCst)
        ),
    );

    // 3. node3 cut from the internal network for 20 s: the others keep a
    // quorum (an upload succeeds meanwhile); reconnected, it catches up.
    let t = Instant::now();
    let node3 = container("node3");
    let internal = format!("{PROJECT}_internal");
    ok("docker", &["network", "disconnect", &internal, &node3], &[]);
    let c = crate::wav(
        tmp.path(),
        "c.wav",
        "Cut Off",
        "Compose",
        "Networks",
        1.0,
        3,
    );
    let cut = Instant::now();
    eventually(
        "an upload while node3 is cut off",
        Duration::from_secs(60),
        || async { upload(&admin, &c).await.ok() },
    )
    .await
    .unwrap();
    // Meanwhile node1 and node2 are a quorum and ready; node3, alone, is
    // not (their /readyz on the external network, from the host).
    let ready = |ip: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("https://{ip}:{STREAM_PORT}/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    eventually(
        "node3 out of the quorum, node1 and node2 in it",
        Duration::from_secs(20),
        || async {
            (ready(NODE_IPS[2]).await == 503
                && ready(NODE_IPS[0]).await == 200
                && ready(NODE_IPS[1]).await == 200)
                .then_some(())
        },
    )
    .await
    .unwrap();
    let quorum_seen = cut.elapsed();
    // The fault lasts 20 s (its length, not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    ok(
        "docker",
        &[
            "network",
            "connect",
            "--ip",
            INTERNAL_IPS[2],
            &internal,
            &node3,
        ],
        &[],
    );
    let digest = converged(&admin, 3).await;
    report.step(
        "3. node3 off the internal network 20 s: caught up",
        t,
        format!("node3 unready after {quorum_seen:.1?}, others ready; digest {digest}"),
    );

    // A node's process dies (not a `docker kill`: an operator's stop is
    // never undone): the restart policy starts it again, its health check
    // passes, and it catches up.
    let t = Instant::now();
    let node1 = container("node1");
    let inspect = |format: &str| ok("docker", &["inspect", "-f", format, &node1], &[]);
    let restarts: u64 = inspect("{{.RestartCount}}").parse().unwrap();
    let pid: i32 = inspect("{{.State.Pid}}").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(
        "Docker restarts node1 and finds it healthy",
        Duration::from_secs(120),
        || async {
            let (count, health) = (
                inspect("{{.RestartCount}}").parse::<u64>().ok()?,
                inspect("{{.State.Health.Status}}"),
            );
            (count > restarts && health == "healthy").then_some(())
        },
    )
    .await
    .unwrap();
    let digest = converged(&admin, 3).await;
    report.step(
        "node1's process killed: restarted by Docker, healthy, caught up",
        t,
        format!("digest {digest}"),
    );

    // 4. From a container only on the external network no node's gRPC
    // answers; from the host nothing answers plain HTTP.
    let t = Instant::now();
    let external = format!("{PROJECT}_external");
    for ip in NODE_IPS.iter().chain(INTERNAL_IPS.iter()) {
        let out = run(
            "docker",
            &[
                "run",
                "--rm",
                "--network",
                &external,
                "--entrypoint",
                "curl",
                IMAGE.as_str(),
                "-sk",
                "--max-time",
                "3",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("https://{ip}:7400/"),
            ],
            &[],
        );
        // curl's 7: could not connect (refused), 28: timed out (dropped).
        // Any answer, even a TLS refusal of curl's lack of a client
        // certificate, would be another code.
        let code = out.status.code();
        assert!(
            matches!(code, Some(7 | 28)),
            "{ip}:7400 from the external network: curl exit {code:?} (7 or 28 expected): {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for url in [
        format!("http://{VIP}:{GATEWAY_PORT}/"),
        format!("http://{}:{STREAM_PORT}/", NODE_IPS[0]),
        format!("http://{VIP}/"),
    ] {
        let r = http.get(&url).timeout(Duration::from_secs(3)).send().await;
        assert!(
            r.is_err(),
            "{url} answered plain HTTP: {:?}",
            r.map(|r| r.status())
        );
    }
    // The CAs' keys are in the init service's volume only.
    for service in ["node1", "gateway1"] {
        let out = run(
            "docker",
            &[
                "exec",
                &container(service),
                "ls",
                "-A",
                "/etc/rondo/authority",
            ],
            &[],
        );
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{service} sees the CAs' keys: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    report.step(
        "4. no gRPC from outside, no plain HTTP, no CA key in a service",
        t,
        "",
    );

    // 5. down and up again, volumes kept: songs, accounts and playlists
    // are intact.
    let t = Instant::now();
    let before = song_count(&admin).await;
    compose(&["down", "-t", "10"]);
    compose(&["up", "-d"]);
    eventually("ready again", Duration::from_secs(180), || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await
    .unwrap();
    let admin = settled(&base, &ca, &token, &http).await;
    converged(&admin, 3).await;
    assert_eq!(song_count(&admin).await, before);
    for id in [&id_a, &id_b] {
        stream_range(
            &admin,
            id,
            &std::fs::read(if *id == id_a { &a } else { &b }).unwrap(),
        )
        .await
        .unwrap();
    }
    let anon = rondo_cli::client::Client::new(&base, &ca, None).unwrap();
    let login = anon
        .query(
            "mutation { login(name: \"deploylistener\", password: \"a long enough password\") { token } }",
            json!({}),
        )
        .await
        .unwrap();
    let listener = rondo_cli::client::Client::new(
        &base,
        &ca,
        login["login"]["token"].as_str().map(str::to_string),
    )
    .unwrap();
    let pls = listener
        .query(
            "{ playlists(first: 5) { nodes { name songs(first: 5) { totalCount } } } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        pls.pointer("/playlists/nodes/0/name"),
        Some(&json!("Road")),
        "{pls}"
    );
    report.step(
        "5. down, up: songs, accounts, playlists intact",
        t,
        format!("{before} songs"),
    );

    // A fourth node joins by itself and takes its share: placement gives
    // it partitions (R = 3 of 4: three quarters of them), and of eight new
    // songs it holds some (all eight missing it: a chance of 1 in 65536).
    let t = Instant::now();
    compose(&["up", "-d", "--scale", "node4=1", "node4"]);
    converged(&admin, 4).await;
    let owned = eventually(
        "node4 owns partitions",
        Duration::from_secs(120),
        || async {
            let d = admin
                .query(
                    "{ cluster { layout { nodes { address partitions capacityBytes } } } }",
                    json!({}),
                )
                .await
                .ok()?;
            d.pointer("/cluster/layout/nodes")?
                .as_array()?
                .iter()
                .find(|n| {
                    n["address"]
                        .as_str()
                        .is_some_and(|a| a.contains("10.77.0.14"))
                })
                .and_then(|n| n["partitions"].as_u64())
                .filter(|p| *p > 0)
        },
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for k in 0..8 {
        let f = crate::wav(
            tmp.path(),
            &format!("d{k}.wav"),
            &format!("Four {k}"),
            "Compose",
            "Networks",
            0.3,
            40 + k,
        );
        ids.push(upload(&admin, &f).await.unwrap());
    }
    let held = eventually("node4 holds new songs", Duration::from_secs(60), || async {
        let mut held = 0;
        for id in &ids {
            let r = admin
                .query(
                    "query($id: ID!) { song(id: $id) { replicas { address } } }",
                    json!({ "id": id }),
                )
                .await
                .ok()?;
            if r.to_string().contains("10.77.1.14") {
                held += 1;
            }
        }
        (held > 0).then_some(held)
    })
    .await
    .unwrap();
    report.step(
        "node4 joined by itself, takes its share",
        t,
        format!("{owned} partitions, {held} of 8 new songs"),
    );

    eprintln!("deploy report:");
    for (name, took, note) in &report.0 {
        eprintln!("  {took:>8.1?}  {name}  {note}");
    }
    drop(cleanup);
}

const STACK: &str = "rondoswarmtest";

/// Leaves what the Swarm test made: the stack, its volumes, the swarm
/// itself (if the test made it), the image, then dockerd (if the test
/// started it).
struct SwarmCleanup {
    left_swarm: bool,
    /// The swarm node the test labelled, and the value of its `rondo.node`
    /// label before (restored in a swarm the test did not make).
    labelled: Option<(String, String)>,
    _dockerd: Dockerd,
}

impl Drop for SwarmCleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            swarm_diagnostics();
        }
        let _ = run("docker", &["stack", "rm", STACK], &[]);
        // Its services are gone; remove their containers at once (rather
        // than wait for the swarm to), then the volumes they held.
        let label = format!("label=com.docker.stack.namespace={STACK}");
        let ids = run("docker", &["ps", "-aq", "--filter", &label], &[]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = run("docker", &args, &[]);
        }
        let vols = run("docker", &["volume", "ls", "-q", "--filter", &label], &[]);
        for n in String::from_utf8_lossy(&vols.stdout).lines() {
            let _ = run("docker", &["volume", "rm", "-f", n], &[]);
        }
        if let Some((node, before)) = &self.labelled
            && !self.left_swarm
        {
            let _ = run(
                "docker",
                &["node", "update", "--label-rm", "rondo.node", node],
                &[],
            );
            if !before.is_empty() {
                let _ = run(
                    "docker",
                    &[
                        "node",
                        "update",
                        "--label-add",
                        &format!("rondo.node={before}"),
                        node,
                    ],
                    &[],
                );
            }
        }
        if self.left_swarm {
            // Leaving before the stack's networks are gone leaves their
            // namespaces behind (/run/docker/netns).
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let nets = run("docker", &["network", "ls", "-q", "--filter", &label], &[]);
                if nets.stdout.is_empty() {
                    break;
                }
                // Polls a condition, in a Drop: no runtime to await on.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = run("docker", &["swarm", "leave", "--force"], &[]);
            let _ = run("docker", &["network", "rm", "docker_gwbridge"], &[]);
        }
        if given_image().is_none() {
            let _ = run("docker", &["image", "rm", "-f", IMAGE.as_str()], &[]);
        }
    }
}

/// Removes the overlay networks' VXLAN devices left in the root network
/// namespace, and says how many. Docker 20.10's overlay driver creates a
/// network's `vx-<vni>-<network>` device in the root namespace and moves it
/// into the network's sandbox; a dockerd stopped with a stack up, or a
/// sandbox join that failed half-way, leaves it behind, and from then on
/// every join of a network given that VNI fails ("error creating vxlan
/// interface: file exists": every task rejected, the stack never up; seen
/// here after an earlier run). Devices in use live in the sandboxes, so
/// any in the root namespace is stale.
fn remove_stale_vxlan() -> usize {
    let out = run("ip", &["-o", "link", "show", "type", "vxlan"], &[]);
    let mut removed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
            continue;
        };
        if name.starts_with("vx-") && run("ip", &["link", "delete", name], &[]).status.success() {
            eprintln!("deploy: removed a stale VXLAN device, {name}");
            removed += 1;
        }
    }
    removed
}

/// What a failed swarm test needs to be understood where only its output
/// is kept (CI): the services, their tasks with errors, their logs, the
/// containers, and the end of dockerd's log if the test started it.
fn swarm_diagnostics() {
    let show = |args: &[&str]| {
        let out = run("docker", args, &[]);
        eprintln!(
            "$ docker {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    show(&["info"]);
    show(&["service", "ls"]);
    show(&["stack", "ps", "--no-trunc", STACK]);
    show(&["ps", "-a"]);
    show(&["network", "ls"]);
    for service in ["node1", "node2", "node3", "gateway"] {
        show(&[
            "service",
            "logs",
            "--raw",
            "--tail",
            "60",
            &format!("{STACK}_{service}"),
        ]);
    }
    if let Ok(log) = std::fs::read_to_string(repo().join("target/dockerd-swarm-test.log")) {
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("dockerd's log, last 80 lines:");
        for line in &lines[lines.len().saturating_sub(80)..] {
            eprintln!("{line}");
        }
    }
}

/// The same cluster as a Swarm stack (docker-stack.yml) on a single-node
/// swarm: up, upload, stream, one node's task removed, still streams.
///
/// node1 is pinned by the file's own label constraint (its task waits,
/// unplaced, until the host is labelled `rondo.node=1`); node2 and node3
/// by `node.role==manager` (one host cannot carry three values of a label).
///
/// The routing mesh and service addresses need IPVS in the kernel. Where
/// it is missing (this machine's kernel is built without it: "open
/// /proc/sys/net/ipv4/vs/…: no such file or directory" in dockerd's log,
/// and published ports never answer) the test says BLOCKED for the mesh
/// and runs the stack with `endpoint_mode: dnsrr` and host-mode ports (one
/// gateway on the one host), through the file's own variables; where it is
/// there, with the file's defaults (two gateways behind the mesh).
#[tokio::test(flavor = "multi_thread")]
async fn the_swarm_stack_serves_and_survives_a_lost_node_task() {
    let mut report = Report(Vec::new());
    let Some(dockerd) =
        docker_ready("swarm", &["docker", "dockerd", "debootstrap"], &mut report).await
    else {
        return;
    };
    let active = ok(
        "docker",
        &["info", "--format", "{{.Swarm.LocalNodeState}}"],
        &[],
    );
    let mut cleanup = SwarmCleanup {
        left_swarm: false,
        labelled: None,
        _dockerd: dockerd,
    };
    remove_stale_vxlan();
    if active != "active" {
        ok(
            "docker",
            &["swarm", "init", "--advertise-addr", "127.0.0.1"],
            &[],
        );
        cleanup.left_swarm = true;
    }
    let host = ok("docker", &["info", "--format", "{{.Swarm.NodeID}}"], &[]);
    let before = ok(
        "docker",
        &[
            "node",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"rondo.node\"}}",
            &host,
        ],
        &[],
    );
    let _ = run(
        "docker",
        &["node", "update", "--label-rm", "rondo.node", &host],
        &[],
    );
    let before = if before == "<no value>" {
        String::new()
    } else {
        before
    };
    cleanup.labelled = Some((host.clone(), before));
    let mesh = Path::new("/proc/sys/net/ipv4/vs").exists();
    if !mesh {
        eprintln!(
            "BLOCKED: the swarm's routing mesh needs IPVS, which this kernel lacks \
             (no /proc/sys/net/ipv4/vs); testing the stack with dnsrr and host-mode ports"
        );
    }

    // `rondo init` on the operator's machine; the stack takes its files as
    // swarm secrets and a config.
    let t = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("init");
    ok(
        &rondo_tests::bin("rondo").display().to_string(),
        &[
            "init",
            "--out",
            &out.display().to_string(),
            "--nodes",
            "node1,node2,node3",
            "--gateways",
            "gateway",
        ],
        &[],
    );
    let swarm_dir = out.display().to_string();
    let mut env = vec![
        ("RONDO_IMAGE", IMAGE.as_str()),
        ("RONDO_SWARM_DIR", swarm_dir.as_str()),
        ("RONDO_PLACEMENT2", "node.role==manager"),
        ("RONDO_PLACEMENT3", "node.role==manager"),
    ];
    if !mesh {
        env.extend([
            ("RONDO_ENDPOINT_MODE", "dnsrr"),
            ("RONDO_PUBLISH_MODE", "host"),
            ("RONDO_GATEWAYS", "1"),
        ]);
    }
    ok(
        "docker",
        &["stack", "deploy", "-c", "docker-stack.yml", STACK],
        &env,
    );
    // node1's task is not placed while no host carries its label.
    let node1_task = |field: &str| {
        let ids = ok(
            "docker",
            &[
                "service",
                "ps",
                "-q",
                "--no-trunc",
                &format!("{STACK}_node1"),
            ],
            &[],
        );
        ids.lines()
            .next()
            .map(|id| ok("docker", &["inspect", "--format", field, id], &[]))
            .unwrap_or_default()
    };
    let unplaced = eventually(
        "node1's task waits for its label",
        Duration::from_secs(60),
        || async {
            let s = node1_task("{{.Status.State}} {{.Status.Err}}");
            (s.starts_with("pending") && s.contains("constraints")).then_some(s)
        },
    )
    .await
    .unwrap();
    ok(
        "docker",
        &["node", "update", "--label-add", "rondo.node=1", &host],
        &[],
    );
    let ca = std::fs::read(out.join("tls/ca.pem")).unwrap();
    let token = std::fs::read_to_string(out.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(rondo_cli::client::tls_config(&ca).unwrap())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = "https://127.0.0.1:8443".to_string();
    let swept = std::sync::Mutex::new(Instant::now());
    eventually(
        "the stack's gateway is ready",
        Duration::from_secs(180),
        || async {
            // Every 2 s: a VXLAN device stranded meanwhile (see
            // `remove_stale_vxlan`) would keep every task rejected.
            if let Ok(mut at) = swept.lock()
                && at.elapsed() > Duration::from_secs(2)
            {
                remove_stale_vxlan();
                *at = Instant::now();
            }
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
    let admin = Client {
        gql: rondo_cli::client::Client::new(&base, &ca, Some(token.clone())).unwrap(),
        http: http.clone(),
        ca: ca.clone(),
    };
    converged(&admin, 3).await;
    // Sharded, so that a lost task leaves songs with one copy fewer.
    let (code, stdout, stderr) = {
        let o = Command::new(rondo_tests::bin("rondo"))
            .args(["node", "replication", "2"])
            .env("RONDO_GATEWAY", &base)
            .env("RONDO_TOKEN_FILE", out.join("admin-token"))
            .env("RONDO_CA_CERT", out.join("tls/ca.pem"))
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        node1_task("{{.NodeID}}"),
        host,
        "node1's task placed elsewhere"
    );
    report.step(
        "stack deployed, ready, R = 2",
        t,
        format!(
            "node1 unplaced until labelled ({unplaced}); {}",
            if mesh {
                "routing mesh"
            } else {
                "no IPVS: dnsrr, host ports (mesh BLOCKED)"
            }
        ),
    );

    let t = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let a = crate::wav(tmp.path(), "s.wav", "Swarmed", "Stack", "Mesh", 1.0, 7);
    let a_bytes = std::fs::read(&a).unwrap();
    let id = upload(&admin, &a).await.unwrap();
    stream_range(&admin, &id, &a_bytes).await.unwrap();
    report.step("upload, range stream", t, "");

    // One node's task removed: the song still streams from the others.
    let t = Instant::now();
    ok(
        "docker",
        &["service", "scale", "--detach", &format!("{STACK}_node2=0")],
        &[],
    );
    eventually("node2's task is gone", Duration::from_secs(60), || async {
        let out = run(
            "docker",
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={STACK}_node2"),
            ],
            &[],
        );
        out.stdout.is_empty().then_some(())
    })
    .await
    .unwrap();
    streams_without(&admin, "node2", &id, &a_bytes).await;
    report.step("node2's task removed: still streams", t, "");

    eprintln!("swarm report:");
    for (name, took, note) in &report.0 {
        eprintln!("  {took:>8.1?}  {name}  {note}");
    }
    drop(cleanup);
}
