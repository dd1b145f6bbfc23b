//! `rondo status`: the gateway replicas (and who holds the floating
//! address) and the storage nodes (standing, zone, capacity, partitions
//! owned, songs, bytes, outbox work pending, the resync worker's work and
//! its ETA), then how many partitions have fewer than R verified copies.
//! Exits with [`Exit::NodeDown`] if a storage node is down.

use rondo_cli::api::ClusterAnswer;
use rondo_cli::client::Client;
use serde_json::json;

use super::Exit;

pub async fn run(client: &Client, as_json: bool) -> anyhow::Result<Exit> {
    let raw = client
        .query(
            "{ cluster { nodes { id address state songCount bytesStored outboxLength blobsToFetch bytesToFetch resyncEtaSeconds copiesToGiveUp } \
               gateways { id address vrrpState priority isMaster vip lastSeenMs } \
               layout { nodes { id zone capacityBytes standing partitions } } \
               partitionsBelowReplication } }",
            json!({}),
        )
        .await?;
    let data: ClusterAnswer = serde_json::from_value(raw.clone())?;
    let any_down = data.cluster.nodes.iter().any(|n| n.state != "UP");
    let exit = if any_down {
        Exit::NodeDown
    } else {
        Exit::Success
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&raw)?);
        return Ok(exit);
    }
    println!("gateway  {}", client.base);
    for g in &data.cluster.gateways {
        let holds = match (g.is_master, &g.vip) {
            (true, Some(vip)) => format!("  holds {vip}"),
            (true, None) => "  holds the floating address".to_string(),
            (false, _) => String::new(),
        };
        println!(
            "replica  {}  {}  {} priority {}{holds}",
            g.id, g.address, g.vrrp_state, g.priority
        );
    }
    let members = data
        .cluster
        .layout
        .as_ref()
        .map(|l| l.nodes.as_slice())
        .unwrap_or_default();
    for n in &data.cluster.nodes {
        let member = members.iter().find(|m| Some(&m.id) == n.id.as_ref());
        let placed = member.map_or(String::new(), |m| {
            let standing = match m.standing.as_str() {
                "OUT" => "out",
                "OUT_AUTO" => "out (auto)",
                _ if m.capacity_bytes == 0
                    && (n.bytes_stored > 0 || m.partitions.unwrap_or(0) > 0) =>
                {
                    "draining"
                }
                _ if m.capacity_bytes == 0 => "no capacity",
                _ => "in",
            };
            let owned = m
                .partitions
                .map_or(String::new(), |p| format!("  {p} partitions"));
            format!(
                "  {standing}  zone {}  capacity {}{owned}",
                m.zone,
                indicatif::BinaryBytes(m.capacity_bytes)
            )
        });
        let fetch = if n.blobs_to_fetch == 0 {
            "0 to fetch".to_string()
        } else {
            let eta = n.resync_eta_seconds.map_or("ETA unknown".to_string(), |s| {
                format!(
                    "ETA {}",
                    indicatif::HumanDuration(std::time::Duration::from_secs(s))
                )
            });
            format!(
                "{} to fetch ({}, {eta})",
                n.blobs_to_fetch,
                indicatif::BinaryBytes(n.bytes_to_fetch)
            )
        };
        println!(
            "node     {}  {}  {}{placed}  {} songs  {}  {} pending  resync: {fetch}, {} to give up",
            n.id.as_deref().unwrap_or("(unknown)"),
            n.address,
            n.state,
            n.song_count,
            indicatif::BinaryBytes(n.bytes_stored),
            n.outbox_length,
            n.copies_to_give_up
        );
    }
    match data.cluster.partitions_below_replication {
        Some(n) => println!("partitions with fewer than R verified copies: {n}"),
        None => println!("partitions with fewer than R verified copies: unknown (no layout yet)"),
    }
    Ok(exit)
}
