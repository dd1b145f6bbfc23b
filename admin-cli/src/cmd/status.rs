//! `rondo status`: the gateway replicas (and who holds the floating
//! address) and the storage nodes (songs, bytes, outbox work pending, the
//! resync worker's work).
//! Exits with [`Exit::NodeDown`] if a storage node is down.

use rondo_cli::api::ClusterAnswer;
use rondo_cli::client::Client;
use serde_json::json;

use super::Exit;

pub async fn run(client: &Client) -> anyhow::Result<Exit> {
    let data: ClusterAnswer = client
        .query_as(
            "{ cluster { nodes { id address state songCount bytesStored outboxLength blobsToFetch copiesToGiveUp } \
               gateways { id address vrrpState priority isMaster vip lastSeenMs } } }",
            json!({}),
        )
        .await?;
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
    let mut down = 0;
    for n in &data.cluster.nodes {
        if n.state != "UP" {
            down += 1;
        }
        println!(
            "node     {}  {}  {}  {} songs  {} bytes  {} pending  resync: {} to fetch, {} to give up",
            n.id.as_deref().unwrap_or("(unknown)"),
            n.address,
            n.state,
            n.song_count,
            n.bytes_stored,
            n.outbox_length,
            n.blobs_to_fetch,
            n.copies_to_give_up
        );
    }
    Ok(if down > 0 {
        Exit::NodeDown
    } else {
        Exit::Success
    })
}
