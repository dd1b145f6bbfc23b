//! `rondo layout show|plan|apply`: the layout and its placement; what a
//! change would move before it is ordered, and that exact change ordered.
//! `plan` prints the epoch it was computed against; `apply --expect-epoch`
//! with it orders the same table (the ordering node computes it the same
//! way from the same layout), or exits with [`Exit::Conflict`] if another
//! change was ordered first.

use clap::{Args, Subcommand};
use rondo_cli::api::{Layout, LayoutPlan};
use serde_json::{Value, json};

use super::node::{LAYOUT, change, print_layout};
use super::{Conn, Exit};

#[derive(Debug, Subcommand)]
pub enum LayoutCommand {
    /// The layout: nodes, zones, capacities, the placement.
    Show {
        #[command(flatten)]
        conn: Conn,
        /// The layout as JSON (the GraphQL answer).
        #[arg(long)]
        json: bool,
    },
    /// What a change would do: the partitions and bytes each node would
    /// gain and lose. Orders nothing.
    Plan {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        change: ChangeArgs,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Order a change (one ordered operation). With the plan's
    /// `--expect-epoch`, exactly the plan shown.
    Apply {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        change: ChangeArgs,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
}

/// One layout change.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ChangeArgs {
    /// A new replication factor.
    #[arg(long, value_name = "R")]
    replication: Option<u32>,
    /// Drain a node (capacity 0).
    #[arg(long, value_name = "ID")]
    drain: Option<String>,
    /// Remove a node.
    #[arg(long, value_name = "ID")]
    remove: Option<String>,
    /// A node's zone and capacity: ID[,zone=Z][,capacity=C].
    #[arg(long, value_name = "ID,zone=Z,capacity=C")]
    storage: Option<String>,
}

/// A change as the GraphQL `LayoutChangeInput`, and the mutation that
/// orders it: (field, query, variables).
fn to_graphql(
    c: &ChangeArgs,
    epoch: Value,
) -> anyhow::Result<(Value, &'static str, String, Value)> {
    if let Some(r) = c.replication {
        return Ok((
            json!({"replicationFactor": r}),
            "setReplicationFactor",
            format!(
                "mutation($f: Int!, $e: Int) {{ setReplicationFactor(factor: $f, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"f": r, "e": epoch}),
        ));
    }
    if let Some(id) = &c.drain {
        return Ok((
            json!({"drainNode": id}),
            "drainNode",
            format!(
                "mutation($id: ID!, $e: Int) {{ drainNode(id: $id, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "e": epoch}),
        ));
    }
    if let Some(id) = &c.remove {
        return Ok((
            json!({"removeNode": id}),
            "removeNode",
            format!(
                "mutation($id: ID!, $e: Int) {{ removeNode(id: $id, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "e": epoch}),
        ));
    }
    let Some(spec) = &c.storage else {
        anyhow::bail!("name one change: --replication, --drain, --remove or --storage");
    };
    let mut parts = spec.split(',');
    let id = parts.next().unwrap_or_default().to_string();
    let (mut zone, mut capacity) = (None, None);
    for part in parts {
        match part.split_once('=') {
            Some(("zone", z)) => zone = Some(z.to_string()),
            Some(("capacity", c)) => {
                let bytes: bytesize::ByteSize = c
                    .parse()
                    .map_err(|e| anyhow::anyhow!("capacity {c:?}: {e}"))?;
                capacity = Some(bytes.as_u64());
            }
            _ => anyhow::bail!("--storage {spec:?}: expected ID[,zone=Z][,capacity=C]"),
        }
    }
    Ok((
        json!({"nodeStorage": {"id": id, "zone": zone, "capacityBytes": capacity}}),
        "setNodeStorage",
        format!(
            "mutation($id: ID!, $z: String, $c: UnsignedInt64, $e: Int) {{ setNodeStorage(id: $id, zone: $z, capacityBytes: $c, expectEpoch: $e) {LAYOUT} }}"
        ),
        json!({"id": id, "z": zone, "c": capacity, "e": epoch}),
    ))
}

pub async fn run(cmd: LayoutCommand) -> anyhow::Result<Exit> {
    let epoch = |e: Option<u64>| e.map(|e| json!(e)).unwrap_or(Value::Null);
    match cmd {
        LayoutCommand::Show { conn, json } => {
            #[derive(serde::Deserialize)]
            struct Cluster {
                layout: Option<Layout>,
            }
            let raw = conn
                .client()?
                .query(&format!("{{ cluster {{ layout {LAYOUT} }} }}"), json!({}))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&raw)?);
                return Ok(Exit::Success);
            }
            let mut data: std::collections::HashMap<String, Cluster> = serde_json::from_value(raw)?;
            match data.remove("cluster").and_then(|c| c.layout) {
                Some(l) => print_layout(&l),
                None => println!("no node has reported a layout yet"),
            }
            Ok(Exit::Success)
        }
        LayoutCommand::Plan {
            conn,
            change,
            expect_epoch,
        } => {
            let (input, ..) = to_graphql(&change, Value::Null)?;
            let query = format!(
                "query($c: LayoutChangeInput!, $e: Int) {{ layoutPlan(change: $c, expectEpoch: $e) {{ \
                 expectEpoch bytesToMove layout {LAYOUT} \
                 moves {{ id partitionsBefore partitionsAfter gained lost bytesIn bytesOut }} }} }}"
            );
            let mut data: std::collections::HashMap<String, LayoutPlan> = conn
                .client()?
                .query_as(&query, json!({"c": input, "e": epoch(expect_epoch)}))
                .await?;
            let plan = data.remove("layoutPlan").unwrap_or_default();
            print_plan(&plan);
            Ok(Exit::Success)
        }
        LayoutCommand::Apply {
            conn,
            change: c,
            expect_epoch,
        } => {
            let (_, field, query, vars) = to_graphql(&c, epoch(expect_epoch))?;
            Ok(match change(&conn.client()?, field, &query, vars).await? {
                Some(l) => {
                    print_layout(&l);
                    Exit::Success
                }
                None => Exit::Conflict,
            })
        }
    }
}

/// Prints a plan: the layout it would make and the moves per node.
fn print_plan(p: &LayoutPlan) {
    println!(
        "plan     against epoch {} (apply with --expect-epoch {})",
        p.expect_epoch, p.expect_epoch
    );
    print_layout(&p.layout);
    for m in &p.moves {
        println!(
            "move     {}  partitions {} -> {}  +{} -{}  in {}  out {}",
            m.id,
            m.partitions_before,
            m.partitions_after,
            m.gained,
            m.lost,
            indicatif::BinaryBytes(m.bytes_in),
            indicatif::BinaryBytes(m.bytes_out)
        );
    }
    println!(
        "total    {} to copy between nodes",
        indicatif::BinaryBytes(p.bytes_to_move)
    );
}
