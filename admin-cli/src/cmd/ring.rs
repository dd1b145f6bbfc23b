//! `rondo ring`: the control plane, the ring that orders the catalog and
//! where each node is in the log. Exits with [`Exit::NoRing`] if no ring is
//! operational.

use rondo_cli::api::ClusterAnswer;
use rondo_cli::client::Client;
use serde_json::json;

use super::Exit;
use super::node::print_layout;

pub async fn run(client: &Client, as_json: bool) -> anyhow::Result<Exit> {
    let raw = client
        .query(
            "{ cluster { nodes { id state ringId ringPhase lastAppliedSeq catalogDigest isVoter } \
               ring { id members tokenHolder lastSeq rotationsPerSecond } \
               layout { epoch replicationFactor \
               nodes { id address isVoter zone capacityBytes standing partitions } \
               placement { epoch partitions replicas writeQuorum } } } }",
            json!({}),
        )
        .await?;
    let data: ClusterAnswer = serde_json::from_value(raw.clone())?;
    let cluster = data.cluster;
    let exit = match cluster.ring {
        Some(_) => Exit::Success,
        None => Exit::NoRing,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&raw)?);
        return Ok(exit);
    }
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match &cluster.ring {
        Some(r) => {
            println!("ring     {}", r.id);
            println!("members  {}", r.members.join(" "));
            println!("token    {} (last seen)", or_dash(&r.token_holder));
            println!(
                "log      last seq {}, {:.1} rotations/s",
                r.last_seq, r.rotations_per_second
            );
        }
        None => println!("ring     none operational (no quorum?)"),
    }
    if let Some(l) = &cluster.layout {
        print_layout(l);
    }
    for n in &cluster.nodes {
        let digest = or_dash(&n.catalog_digest);
        println!(
            "node     {}  {}  {}  ring {}  applied {}  digest {}  {}",
            or_dash(&n.id),
            n.state,
            or_dash(&n.ring_phase),
            or_dash(&n.ring_id),
            n.last_applied_seq.unwrap_or(0),
            digest.get(..16).unwrap_or(&digest),
            if n.is_voter == Some(true) {
                "voter"
            } else {
                "non-voter"
            }
        );
    }
    Ok(exit)
}
