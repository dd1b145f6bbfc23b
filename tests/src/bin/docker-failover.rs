//! Gateway failover in the compose deployment (run by
//! `bench/docker-failover.sh` as root, with the image of a release build):
//! docker-compose.yml's two gateway replicas (priorities 150 and 140,
//! unicast adverts on the `external` bridge), three storage nodes. Each
//! trial waits for an advert from the master (gateway1), `docker kill`s its
//! container, and probes the floating address from the host with a fresh
//! HTTPS connection and a GraphQL query every 5 ms until one answers; then
//! `docker start`s it and waits until it has preempted. Adverts are read
//! in the backup's network namespace (the backup lives through every
//! trial), so "from the last advert" is measured as in BENCHMARKS §6. The reference, in the same run: the same gateways
//! between network namespaces (§6's harness), ours and keepalived's.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail};
use rondo_tests::failover::{Sample, namespace_trials, print_header, print_row, trials};
use rondo_tests::vrrp_lab::{self, t};
use serde_json::{Value, json};

const PROJECT: &str = "rondofailoverbench";
const VIP: &str = "10.77.1.100";
const MASTER_IP: &str = "10.77.1.21";

fn docker(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let out: Output = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

struct Compose {
    image: String,
    advert_ms: String,
}

impl Compose {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-p", PROJECT, "-f", "docker-compose.yml"];
        all.extend_from_slice(args);
        docker(
            "docker-compose",
            &all,
            &[
                ("RONDO_IMAGE", &self.image),
                ("RONDO_VRRP_ADVERT_MS", &self.advert_ms),
                // The rest at the defaults this program assumes, whatever
                // a local .env says.
                ("RONDO_VIP", VIP),
                ("RONDO_GATEWAY_PORT", "8443"),
                ("RONDO_STREAM_PORT", "7443"),
                ("RONDO_REPLICATION", "3"),
                ("RONDO_LOG_FORMAT", "text"),
            ],
        )
    }

    fn container(&self, service: &str) -> anyhow::Result<String> {
        self.run(&["ps", "-q", service])
    }

    fn down(&self) {
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "2"]);
    }
}

/// The process id of `container` and the name of its interface on the
/// project's `external` network.
fn external_iface(container: &str) -> anyhow::Result<(String, String)> {
    let inspect = |format: &str| docker("docker", &["inspect", "-f", format, container], &[]);
    let mac = inspect(&format!(
        "{{{{(index .NetworkSettings.Networks \"{PROJECT}_external\").MacAddress}}}}"
    ))?;
    let pid = inspect("{{.State.Pid}}")?;
    let links = docker(
        "docker",
        &[
            "exec",
            container,
            "sh",
            "-c",
            "for i in /sys/class/net/*; do echo $(cat $i/address) ${i##*/}; done",
        ],
        &[],
    )?;
    let iface = links
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{mac} ")))
        .with_context(|| format!("no interface with {mac} in {container}"))?
        .trim()
        .to_string();
    Ok((pid, iface))
}

/// Gateways heard by the cluster and whether gateway1 holds the address.
async fn gateway1_is_master(admin: &rondo_cli::client::Client) -> bool {
    let Ok(d) = admin
        .query("{ cluster { gateways { address isMaster } } }", json!({}))
        .await
    else {
        return false;
    };
    let Some(gws) = d.pointer("/cluster/gateways").and_then(Value::as_array) else {
        return false;
    };
    let masters: Vec<&Value> = gws.iter().filter(|g| g["isMaster"] == true).collect();
    gws.len() == 2
        && masters.len() == 1
        && masters[0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with(MASTER_IP))
}

async fn eventually(what: &str, secs: f64, mut f: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let start = vrrp_lab::now();
    while vrrp_lab::now() - start < secs {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what}: not within {secs} s")
}

async fn docker_trials(image: &str, advert_ms: u32, trials: usize) -> anyhow::Result<Vec<Sample>> {
    let compose = Compose {
        image: image.to_string(),
        advert_ms: advert_ms.to_string(),
    };
    compose.down();
    let result = docker_trials_on(&compose, trials).await;
    compose.down();
    result
}

async fn docker_trials_on(compose: &Compose, trials: usize) -> anyhow::Result<Vec<Sample>> {
    compose.run(&["up", "-d"])?;
    let gw1 = compose.container("gateway1")?;
    let gw2 = compose.container("gateway2")?;
    let ca = docker(
        "docker",
        &["exec", &gw1, "cat", "/etc/rondo/tls/ca.pem"],
        &[],
    )?
    .into_bytes();
    let token = docker(
        "docker",
        &["exec", &gw1, "cat", "/etc/rondo/admin-token"],
        &[],
    )?;
    let base = format!("https://{VIP}:8443");
    let fresh = || {
        Ok::<_, anyhow::Error>(rondo_cli::client::Client::with_http(
            reqwest::Client::builder()
                .tls_backend_preconfigured(rondo_cli::client::tls_config(&ca)?)
                .pool_max_idle_per_host(0)
                .connect_timeout(Duration::from_millis(50))
                .timeout(Duration::from_millis(500))
                .build()?,
            &base,
            Some(token.clone()),
        ))
    };
    let probe = fresh()?;
    let admin = rondo_cli::client::Client::new(&base, &ca, Some(token.clone()))?;
    eventually("the floating address answers", 180.0, async || {
        probe
            .query("{ songs(first: 1) { totalCount } }", json!({}))
            .await
            .is_ok()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    // Inside the backup's network namespace, where the master's unicast
    // adverts arrive.
    let (pid, iface) = external_iface(&gw2)?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(rondo_tests::bin("vrrp-watch"))
        .arg(iface);
    let mut watch = vrrp_lab::watch_with(cmd, &dir.path().join("watch.log"))?;
    let master_ip: std::net::Ipv4Addr = MASTER_IP.parse()?;
    let query = "{ songs(first: 1) { totalCount } }";
    let mut out = Vec::new();
    for trial in 0..trials {
        eventually("gateway1 holds the address", 60.0, async || {
            gateway1_is_master(&admin).await
        })
        .await?;
        eventually("the floating address answers", 30.0, async || {
            probe.query(query, json!({})).await.is_ok()
        })
        .await?;
        watch.lines.drain();
        watch.wait_advert(master_ip, Duration::from_secs(5))?;
        let killed = vrrp_lab::now();
        docker("docker", &["kill", &gw1], &[])?;
        let answered = loop {
            if probe.query(query, json!({})).await.is_ok() {
                break vrrp_lab::now();
            }
            if vrrp_lab::now() - killed > 30.0 {
                bail!("no answer 30 s after the kill");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let last = watch
            .lines
            .drain()
            .iter()
            .filter(|v| v["kind"] == "advert" && v["src"] == MASTER_IP && t(v) <= answered)
            .map(t)
            .fold(0.0, f64::max);
        out.push(Sample {
            from_kill: answered - killed,
            from_last_advert: answered - last,
        });
        eprintln!(
            "docker {} ms trial {trial}: {:.0} ms from the kill, {:.0} ms from the last advert",
            compose.advert_ms,
            (answered - killed) * 1000.0,
            (answered - last) * 1000.0
        );
        docker("docker", &["start", &gw1], &[])?;
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trials = trials();
    let image = std::env::var("RONDO_IMAGE").unwrap_or_else(|_| "rondo:bench".into());
    print_header();
    for advert_ms in [1000u32, 100] {
        let keepalived = print_row(
            advert_ms,
            "keepalived 2.2.7, namespaces (reference)",
            &namespace_trials(true, advert_ms, trials).await?,
        );
        let ours = print_row(
            advert_ms,
            "rondo-gateway VRRP, namespaces",
            &namespace_trials(false, advert_ms, trials).await?,
        );
        let in_docker = print_row(
            advert_ms,
            "rondo-gateway VRRP, docker-compose",
            &docker_trials(&image, advert_ms, trials).await?,
        );
        println!(
            "| {advert_ms} ms | ratio docker-compose / keepalived (median from last advert) | | | **{:.2}** | |",
            in_docker / keepalived
        );
        println!(
            "| {advert_ms} ms | ratio docker-compose / namespaces (median from last advert) | | | {:.2} | |",
            in_docker / ours
        );
    }
    Ok(())
}
