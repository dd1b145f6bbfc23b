//! Gateway failover measurements shared by the benchmarks
//! (`vrrp-failover`: between network namespaces, `docker-failover`: in the
//! compose deployment).

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::vrrp_lab::{self, t};
use crate::{Cluster, REPLICA_PORT};

/// The trials' TRIALS (default 20).
pub fn trials() -> usize {
    std::env::var("TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// The table's header, as BENCHMARKS §6 shows it.
pub fn print_header() {
    println!(
        "| advert | setup | median from kill | max from kill | median from last advert | max from last advert |"
    );
    println!("|---|---|---|---|---|---|");
}

/// One row of the table for `samples`; answers the median from the last
/// advert, in ms.
pub fn print_row(advert_ms: u32, setup: &str, samples: &[Sample]) -> f64 {
    let mut k: Vec<f64> = samples.iter().map(|s| s.from_kill * 1000.0).collect();
    let mut a: Vec<f64> = samples
        .iter()
        .map(|s| s.from_last_advert * 1000.0)
        .collect();
    let (mk, ma) = (median(&mut k), median(&mut a));
    println!(
        "| {advert_ms} ms | {setup} | {mk:.0} ms | {:.0} ms | {ma:.0} ms | {:.0} ms |",
        max(&k),
        max(&a)
    );
    ma
}

/// The slowest of `v`; 0 when empty.
pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// One failover: seconds from the kill, and from the master's last advert
/// seen on the wire, to the first answer at the floating address.
pub struct Sample {
    pub from_kill: f64,
    pub from_last_advert: f64,
}

/// The median (the upper one of an even count); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// BENCHMARKS §6's trials: two gateway replicas (priorities 150 and 140)
/// and one storage node in network namespaces; `trials` times, the
/// master's host dies right after an advert (kill -9 of the gateway, and
/// of its keepalived when `keepalived` manages the address) and a client
/// probes the floating address with a fresh HTTPS connection every 5 ms.
pub async fn namespace_trials(
    keepalived: bool,
    advert_ms: u32,
    trials: usize,
) -> anyhow::Result<Vec<Sample>> {
    let builder = Cluster::builder().nodes(1);
    let builder = if keepalived {
        builder.keepalived_gateways(2, advert_ms)
    } else {
        builder.vrrp_gateways(2, advert_ms)
    };
    let mut cluster = builder.start().await?;
    let net = cluster.net.as_ref().context("namespaces")?;
    let g0_ip = net.addrs[cluster.replicas[0].host];
    let g0_addr = g0_ip.to_string();
    let mut watch = vrrp_lab::watch_iface(net.root_iface(), &cluster.dir.path().join("watch.log"))?;
    let vip = cluster.vip.context("floating address")?;
    let probe = rondo_cli::client::Client::with_http(
        reqwest::Client::builder()
            .tls_backend_preconfigured(rondo_cli::client::tls_config(&cluster.ca_pem)?)
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_millis(50))
            .timeout(Duration::from_millis(500))
            .build()?,
        &format!("https://{vip}:{REPLICA_PORT}"),
        None,
    );
    let query = "{ songs(first: 1) { totalCount } }";
    let mut out = Vec::new();
    for trial in 0..trials {
        vrrp_lab::wait_until("replica 0 to hold the address", 20.0, || {
            cluster.replica_holds_vip(0) && !cluster.replica_holds_vip(1)
        })?;
        let mut ok = false;
        for _ in 0..200 {
            if probe.query(query, json!({})).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::ensure!(
            ok,
            "the floating address does not answer before trial {trial}"
        );
        watch.wait_advert(g0_ip, Duration::from_secs(5))?;
        let killed = vrrp_lab::now();
        cluster.crash_replica(0);
        let answered = loop {
            if probe.query(query, json!({})).await.is_ok() {
                break vrrp_lab::now();
            }
            anyhow::ensure!(
                vrrp_lab::now() - killed < 30.0,
                "no answer 30 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let last = watch
            .lines
            .drain()
            .iter()
            .filter(|v| v["kind"] == "advert" && v["src"] == g0_addr.as_str() && t(v) <= answered)
            .map(t)
            .fold(0.0, f64::max);
        out.push(Sample {
            from_kill: answered - killed,
            from_last_advert: answered - last,
        });
        eprintln!(
            "{} {advert_ms} ms trial {trial}: {:.0} ms from the kill, {:.0} ms from the last advert",
            if keepalived { "keepalived" } else { "ours" },
            (answered - killed) * 1000.0,
            (answered - last) * 1000.0
        );
        // The dead host's address goes with it; then it comes back and
        // preempts.
        cluster.clear_replica_vip(0);
        cluster.restart_replica(0)?;
    }
    Ok(out)
}
