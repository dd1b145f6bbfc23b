//! Gateway failover benchmark (run by `bench/vrrp-failover.sh` with release
//! binaries, as root): two gateway replicas and one storage node, each in
//! its own network namespace; the master replica's host dies (kill -9 of
//! the gateway, and of its keepalived in the reference setup) and a client
//! probes the floating address with a fresh HTTPS connection every 5 ms
//! until a GraphQL query answers. Reported: the time from the kill and from
//! the master's last advert (seen on the wire) to that first answer, median
//! and max over the trials, for our VRRP and for keepalived managing the
//! same address in the same harness, at 1 s and 100 ms adverts.

use rondo_tests::failover::{namespace_trials, print_header, print_row, trials};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trials = trials();
    print_header();
    for advert_ms in [1000u32, 100] {
        let reference = print_row(
            advert_ms,
            "keepalived 2.2.7 (reference)",
            &namespace_trials(true, advert_ms, trials).await?,
        );
        let ours = print_row(
            advert_ms,
            "rondo-gateway VRRP",
            &namespace_trials(false, advert_ms, trials).await?,
        );
        println!(
            "| {advert_ms} ms | ratio ours / keepalived (median from last advert) | | | {:.2} | |",
            ours / reference
        );
    }
    Ok(())
}
