//! `rondo node add|remove|voter|replication`: change the cluster's storage
//! nodes. Each change names the layout epoch it expects; one that lost to
//! another change ordered first exits with [`Exit::Conflict`] and changes
//! nothing.

use clap::Subcommand;
use rondo_cli::api::Layout;
use rondo_core::ErrorCode;
use serde_json::{Value, json};

use super::{Conn, Exit};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Add a storage node. Start it first with `ring.seeds` (gRPC URLs of
    /// running nodes) in its configuration instead of a peers file; it
    /// then joins the ring, catches up and fetches the audio.
    Add {
        #[command(flatten)]
        conn: Conn,
        /// The new node's internal gRPC URL, e.g. http://10.0.0.4:7400.
        address: String,
        /// Add it without a vote.
        #[arg(long)]
        non_voter: bool,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Remove a storage node; the others re-form the ring without it.
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Give a node a vote (`on`) or take it away (`off`).
    Voter {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(value_parser = ["on", "off"])]
        vote: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Set how many nodes hold each song's audio.
    Replication {
        #[command(flatten)]
        conn: Conn,
        factor: u32,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
}

/// The layout fields every change answers.
pub const LAYOUT: &str = "{ epoch replicationFactor \
     nodes { id address isVoter zone capacityBytes standing partitions } \
     placement { epoch partitions replicas writeQuorum } }";

pub async fn run(cmd: NodeCommand) -> anyhow::Result<Exit> {
    let epoch = |e: Option<u64>| e.map(|e| json!(e)).unwrap_or(Value::Null);
    let (conn, field, query, vars) = match cmd {
        NodeCommand::Add {
            conn,
            address,
            non_voter,
            expect_epoch,
        } => (
            conn,
            "addNode",
            format!(
                "mutation($a: String!, $v: Boolean!, $e: Int) {{ addNode(address: $a, voter: $v, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"a": address, "v": !non_voter, "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Remove {
            conn,
            id,
            expect_epoch,
        } => (
            conn,
            "removeNode",
            format!(
                "mutation($id: ID!, $e: Int) {{ removeNode(id: $id, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Voter {
            conn,
            id,
            vote,
            expect_epoch,
        } => (
            conn,
            "setNodeVoter",
            format!(
                "mutation($id: ID!, $v: Boolean!, $e: Int) {{ setNodeVoter(id: $id, voter: $v, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "v": vote == "on", "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Replication {
            conn,
            factor,
            expect_epoch,
        } => (
            conn,
            "setReplicationFactor",
            format!(
                "mutation($f: Int!, $e: Int) {{ setReplicationFactor(factor: $f, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"f": factor, "e": epoch(expect_epoch)}),
        ),
    };
    let mut data: std::collections::HashMap<String, Layout> =
        match conn.client()?.query_as(&query, vars).await {
            Ok(data) => data,
            Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                eprintln!("error: {e}");
                return Ok(Exit::Conflict);
            }
            Err(e) => return Err(e.into()),
        };
    print_layout(&data.remove(field).unwrap_or_default());
    Ok(Exit::Success)
}

/// Prints a layout, one line per node.
pub fn print_layout(l: &Layout) {
    println!(
        "layout   epoch {}, replication factor {}",
        l.epoch, l.replication_factor
    );
    match &l.placement {
        Some(p) => println!(
            "placement epoch {}, {} partitions x {} replicas, write quorum {}",
            p.epoch, p.partitions, p.replicas, p.write_quorum
        ),
        None => println!("placement none: every node holds every song's audio"),
    }
    for n in &l.nodes {
        let vote = if n.is_voter { "voter" } else { "non-voter" };
        let standing = match n.standing.as_str() {
            "" | "IN" => String::new(),
            other => format!("  {}", other.to_lowercase().replace('_', " ")),
        };
        let owned = n
            .partitions
            .map(|p| format!("  {p} partitions"))
            .unwrap_or_default();
        println!(
            "member   {}  {}  {vote}  zone {}  capacity {}{standing}{owned}",
            n.id,
            n.address,
            n.zone,
            indicatif::BinaryBytes(n.capacity_bytes)
        );
    }
}
