//! Gateway failover benchmark (run by `bench/vrrp-failover.sh` with release
//! binaries, as root): two gateway replicas and one storage node, each in
//! its own network namespace; the master replica's host dies (kill -9 of
//! the gateway, and of its keepalived in the reference setup) and a client
//! probes the floating address with a fresh HTTPS connection every 5 ms
//! until a GraphQL query answers. Reported: the time from the kill and from
//! the master's last advert (seen on the wire) to that first answer, median
//! and max over the trials, for our VRRP and for keepalived managing the
//! same address in the same harness, at 1 s and 100 ms adverts.

use rondo_tests::failover::{max, median, namespace_trials};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!(
        "| advert | setup | median from kill | max from kill | median from last advert | max from last advert |"
    );
    println!("|---|---|---|---|---|---|");
    for advert_ms in [1000u32, 100] {
        let mut medians = Vec::new();
        for keepalived in [true, false] {
            let samples = namespace_trials(keepalived, advert_ms, trials).await?;
            let mut k: Vec<f64> = samples.iter().map(|s| s.from_kill * 1000.0).collect();
            let mut a: Vec<f64> = samples
                .iter()
                .map(|s| s.from_last_advert * 1000.0)
                .collect();
            let (mk, ma) = (median(&mut k), median(&mut a));
            let (xk, xa) = (max(&k), max(&a));
            println!(
                "| {advert_ms} ms | {} | {mk:.0} ms | {xk:.0} ms | {ma:.0} ms | {xa:.0} ms |",
                if keepalived {
                    "keepalived 2.2.7 (reference)"
                } else {
                    "rondo-gateway VRRP"
                }
            );
            medians.push(ma);
        }
        if let [reference, ours] = medians[..] {
            println!(
                "| {advert_ms} ms | ratio ours / keepalived (median from last advert) | | | {:.2} | |",
                ours / reference
            );
        }
    }
    Ok(())
}
