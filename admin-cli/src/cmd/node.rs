//! `rondo node add|remove|drain|out|in|set|rates|voter|replication`:
//! change the cluster's storage nodes. Each change names the layout epoch it expects;
//! one that lost to another change ordered first exits with
//! [`Exit::Conflict`] and changes nothing.

use clap::Subcommand;
use rondo_cli::api::Layout;
use rondo_core::ErrorCode;
use serde_json::{Value, json};

use super::{Conn, Exit};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Print a node's id, known before it first starts: from its cluster
    /// certificate (a file, or a directory holding cluster-cert.pem, as
    /// `rondo init` and `rondo cert issue` write them) or its data
    /// directory (`node-id`). Offline.
    Id {
        /// A certificate, a certificate's directory or a data directory.
        path: std::path::PathBuf,
    },
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
        /// Its failure domain (a rack, a room, a site): a partition's
        /// replicas go to distinct zones.
        #[arg(long)]
        zone: Option<String>,
        /// The bytes it offers for audio, e.g. 2TB or 500GiB (0: none).
        #[arg(long)]
        capacity: Option<bytesize::ByteSize>,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Drain a storage node: capacity 0, so that its partitions go to the
    /// others. It keeps serving until they hold its audio.
    Drain {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Mark a storage node out of placement: its partitions go to the
    /// nodes still in, and it keeps serving until they hold its audio. It
    /// keeps its capacity, so `rondo node in` gives its share back. The
    /// cluster does this itself for a node down longer than the down-out
    /// interval, and marks it in again once it is back.
    Out {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Mark a storage node that is out in again.
    In {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Set a node's zone or capacity (what is left out stays).
    Set {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        zone: Option<String>,
        /// e.g. 2TB or 500GiB (0: none).
        #[arg(long)]
        capacity: Option<bytesize::ByteSize>,
        #[arg(long)]
        expect_epoch: Option<u64>,
    },
    /// Show or set a node's background byte rates: what its resync worker
    /// fetches and its scrub reads per second, e.g. 50MB or 0 (no limit).
    /// Takes effect at once, until the node restarts.
    Rates {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        resync: Option<bytesize::ByteSize>,
        #[arg(long)]
        scrub: Option<bytesize::ByteSize>,
    },
    /// Remove a storage node; the others re-form the ring without it.
    /// Under a placement it is drained first (if it still owns partitions)
    /// and removed once it holds no audio, with a progress bar meanwhile.
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// The node's id.
        id: String,
        #[arg(long)]
        expect_epoch: Option<u64>,
        /// Remove it at once, drained or not (a dead node whose partitions
        /// the others already hold).
        #[arg(long)]
        force: bool,
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
     nodes { id address isVoter zone capacityBytes standing partitions syncedEpoch unretiredPlacements } \
     placement { epoch partitions replicas writeQuorum } \
     olderPlacements unsyncedNodes retirements { seq placementEpochs placement } }";

/// The mutation that sets a node's storage.
const SET_STORAGE: &str = "mutation($id: ID!, $z: String, $c: UnsignedInt64, $e: Int) { setNodeStorage(id: $id, zone: $z, capacityBytes: $c, expectEpoch: $e) ";

fn epoch(e: Option<u64>) -> Value {
    e.map(|e| json!(e)).unwrap_or(Value::Null)
}

/// The node id `path` names (see [`NodeCommand::Id`]).
fn node_id(path: &std::path::Path) -> anyhow::Result<String> {
    let cert = if path.is_dir() {
        if path.join("cluster-cert.pem").exists() {
            path.join("cluster-cert.pem")
        } else {
            let file = path.join("node-id");
            let id = std::fs::read_to_string(&file).map_err(|e| {
                anyhow::anyhow!(
                    "{}: neither cluster-cert.pem nor node-id ({e})",
                    path.display()
                )
            })?;
            return Ok(id.trim().to_string());
        }
    } else {
        path.to_path_buf()
    };
    let pem = std::fs::read(&cert).map_err(|e| anyhow::anyhow!("read {}: {e}", cert.display()))?;
    let leaf = rondo_core::tls::certificates(&pem)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate", cert.display()))?;
    match rondo_core::tls::identity_of(&leaf)? {
        rondo_core::tls::Identity::Node(id) => Ok(id.to_string()),
        other => anyhow::bail!(
            "{}: the certificate of {other}, not of a node",
            cert.display()
        ),
    }
}

pub async fn run(cmd: NodeCommand) -> anyhow::Result<Exit> {
    let (conn, field, query, vars) = match cmd {
        NodeCommand::Id { path } => {
            println!("{}", node_id(&path)?);
            return Ok(Exit::Success);
        }
        NodeCommand::Add {
            conn,
            address,
            non_voter,
            zone,
            capacity,
            expect_epoch,
        } => {
            let query = format!(
                "mutation($a: String!, $v: Boolean!, $e: Int) {{ addNode(address: $a, voter: $v, expectEpoch: $e) {LAYOUT} }}"
            );
            let vars = json!({"a": address, "v": !non_voter, "e": epoch(expect_epoch)});
            if zone.is_none() && capacity.is_none() {
                (conn, "addNode", query, vars)
            } else {
                // Two ordered changes: the node joins (storing nothing
                // under a placement), then gets its zone and share,
                // decided against the layout the first one made.
                let client = conn.client()?;
                let Some(added) = change(&client, "addNode", &query, vars).await? else {
                    return Ok(Exit::Conflict);
                };
                let Some(node) = added.nodes.iter().find(|n| n.address == address) else {
                    anyhow::bail!("the layout after adding {address} does not list it");
                };
                let vars = json!({
                    "id": node.id, "z": zone, "c": capacity.map(|c| c.as_u64()),
                    "e": added.epoch,
                });
                let query = format!("{SET_STORAGE}{LAYOUT} }}");
                return finish(change(&client, "setNodeStorage", &query, vars).await?);
            }
        }
        NodeCommand::Drain {
            conn,
            id,
            expect_epoch,
        } => (
            conn,
            "drainNode",
            format!(
                "mutation($id: ID!, $e: Int) {{ drainNode(id: $id, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Out {
            conn,
            id,
            expect_epoch,
        } => (
            conn,
            "markNodeOut",
            format!(
                "mutation($id: ID!, $e: Int) {{ markNodeOut(id: $id, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "e": epoch(expect_epoch)}),
        ),
        NodeCommand::In {
            conn,
            id,
            expect_epoch,
        } => (
            conn,
            "markNodeIn",
            format!(
                "mutation($id: ID!, $e: Int) {{ markNodeIn(id: $id, expectEpoch: $e) {LAYOUT} }}"
            ),
            json!({"id": id, "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Set {
            conn,
            id,
            zone,
            capacity,
            expect_epoch,
        } => (
            conn,
            "setNodeStorage",
            format!("{SET_STORAGE}{LAYOUT} }}"),
            json!({"id": id, "z": zone, "c": capacity.map(|c| c.as_u64()), "e": epoch(expect_epoch)}),
        ),
        NodeCommand::Rates {
            conn,
            id,
            resync,
            scrub,
        } => return rates(&conn.client()?, &id, resync, scrub).await,
        NodeCommand::Remove {
            conn,
            id,
            expect_epoch,
            force,
        } => return remove(&conn.client()?, &id, expect_epoch, force).await,
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
        } => {
            // Idempotent for scripts (and a deployment's setup step): a
            // placement with this factor already is left as it is.
            if expect_epoch.is_none() {
                let client = conn.client()?;
                let now = client
                    .query(
                        "{ cluster { layout { replicationFactor placement { epoch } } } }",
                        json!({}),
                    )
                    .await?;
                let layout = &now["cluster"]["layout"];
                if layout["replicationFactor"] == factor && layout["placement"].is_object() {
                    println!("the replication factor is {factor} already");
                    return Ok(Exit::Success);
                }
            }
            (
                conn,
                "setReplicationFactor",
                format!(
                    "mutation($f: Int!, $e: Int) {{ setReplicationFactor(factor: $f, expectEpoch: $e) {LAYOUT} }}"
                ),
                json!({"f": factor, "e": epoch(expect_epoch)}),
            )
        }
    };
    finish(change(&conn.client()?, field, &query, vars).await?)
}

/// Sets (or, with neither given, only shows) a node's background rates.
async fn rates(
    client: &rondo_cli::client::Client,
    id: &str,
    resync: Option<bytesize::ByteSize>,
    scrub: Option<bytesize::ByteSize>,
) -> anyhow::Result<Exit> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Rates {
        #[serde(deserialize_with = "rondo_cli::api::uint64")]
        resync_rate_bytes: u64,
        #[serde(deserialize_with = "rondo_cli::api::uint64")]
        scrub_rate_bytes: u64,
    }
    let query = "mutation($id: ID!, $r: UnsignedInt64, $s: UnsignedInt64) { setNodeRates(id: $id, resyncRateBytes: $r, scrubRateBytes: $s) { resyncRateBytes scrubRateBytes } }";
    let vars = json!({"id": id, "r": resync.map(|b| b.as_u64()), "s": scrub.map(|b| b.as_u64())});
    let mut data: std::collections::HashMap<String, Rates> = client.query_as(query, vars).await?;
    let Some(r) = data.remove("setNodeRates") else {
        anyhow::bail!("the gateway answered no rates");
    };
    let show = |b: u64| {
        if b == 0 {
            "no limit".to_string()
        } else {
            format!("{}/s", indicatif::BinaryBytes(b))
        }
    };
    println!("node     {id}");
    println!("resync   {}", show(r.resync_rate_bytes));
    println!("scrub    {}", show(r.scrub_rate_bytes));
    Ok(Exit::Success)
}

/// Runs the layout mutation `field`: the layout after it, or none if it
/// lost to another change ordered first (`CONFLICT`, said on stderr).
pub async fn change(
    client: &rondo_cli::client::Client,
    field: &str,
    query: &str,
    vars: Value,
) -> anyhow::Result<Option<Layout>> {
    let mut data: std::collections::HashMap<String, Layout> =
        match client.query_as(query, vars).await {
            Ok(data) => data,
            Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                eprintln!("error: {e}");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
    Ok(Some(data.remove(field).unwrap_or_default()))
}

/// Prints the layout a change made, or says it lost.
fn finish(layout: Option<Layout>) -> anyhow::Result<Exit> {
    Ok(match layout {
        Some(l) => {
            print_layout(&l);
            Exit::Success
        }
        None => Exit::Conflict,
    })
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
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    if !l.older_placements.is_empty() {
        println!(
            "transition placement(s) {} still in force, waiting for {} node(s) to sync: {}",
            list(&l.older_placements),
            l.unsynced_nodes.len(),
            l.unsynced_nodes.join(", ")
        );
    }
    if let Some(r) = l.retirements.last() {
        println!(
            "retired  placement(s) {} at log seq {}; placement {} alone from then",
            list(&r.placement_epochs),
            r.seq,
            r.placement
        );
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
        let older = if n.unretired_placements.is_empty() {
            String::new()
        } else {
            format!(
                "  owns in placement(s) {} too",
                list(&n.unretired_placements)
            )
        };
        println!(
            "member   {}  {}  {vote}  zone {}  capacity {}{standing}{owned}{older}",
            n.id,
            n.address,
            n.zone,
            indicatif::BinaryBytes(n.capacity_bytes)
        );
    }
}

/// `rondo node remove`: under a placement, a node that owns partitions is
/// drained first, and the removal waits until the placements it owns
/// partitions of have retired (every new owner holds what it owns; the
/// cluster refuses the removal before, as the node could be the only
/// source); then the node is removed. `force` removes at once.
async fn remove(
    client: &rondo_cli::client::Client,
    id: &str,
    expect_epoch: Option<u64>,
    force: bool,
) -> anyhow::Result<Exit> {
    let mut expect_epoch = expect_epoch;
    if !force {
        let cluster = cluster_view(client).await?;
        let placed = cluster
            .layout
            .as_ref()
            .is_some_and(|l| l.placement.is_some());
        let owns = cluster
            .layout
            .as_ref()
            .and_then(|l| l.nodes.iter().find(|n| n.id == id))
            .and_then(|n| n.partitions)
            .unwrap_or(0);
        if placed && owns > 0 {
            eprintln!("draining {id} ({owns} partitions) first");
            let query = format!(
                "mutation($id: ID!, $e: Int) {{ drainNode(id: $id, expectEpoch: $e) {LAYOUT} }}"
            );
            let vars = json!({"id": id, "e": epoch(expect_epoch)});
            let Some(drained) = change(client, "drainNode", &query, vars).await? else {
                return Ok(Exit::Conflict);
            };
            expect_epoch = Some(drained.epoch);
        }
        if placed {
            wait_until_retired(client, id).await?;
        }
    }
    let query = format!(
        "mutation($id: ID!, $e: Int, $f: Boolean!) {{ removeNode(id: $id, expectEpoch: $e, force: $f) {LAYOUT} }}"
    );
    let vars = json!({"id": id, "e": epoch(expect_epoch), "f": force});
    finish(change(client, "removeNode", &query, vars).await?)
}

/// The cluster's nodes and layout as the gateway sees them.
async fn cluster_view(
    client: &rondo_cli::client::Client,
) -> anyhow::Result<rondo_cli::api::Cluster> {
    let answer: rondo_cli::api::ClusterAnswer = client
        .query_as(
            &format!("{{ cluster {{ nodes {{ id state bytesStored }} layout {LAYOUT} }} }}"),
            json!({}),
        )
        .await?;
    Ok(answer.cluster)
}

/// Waits, with a progress bar of the bytes node `id` has given up, until
/// it owns partitions of no placement in force (the newest gives it none,
/// and the older ones it owned in have retired: every owner of the newest
/// holds what it owns) and, while it is up, until it has given up every
/// copy. A node down before its placements retired ends the wait: what it
/// holds is unknown.
async fn wait_until_retired(client: &rondo_cli::client::Client, id: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "offloading {bar:30} {binary_bytes}/{binary_total_bytes} moved, eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut start = None;
    loop {
        let cluster = cluster_view(client).await?;
        let member = cluster
            .layout
            .as_ref()
            .and_then(|l| l.nodes.iter().find(|n| n.id == id));
        let Some(member) = member else {
            anyhow::bail!("node {id} is not a node of the cluster");
        };
        let retired = member.partitions.unwrap_or(0) == 0 && member.unretired_placements.is_empty();
        let node = cluster
            .nodes
            .iter()
            .find(|n| n.id.as_deref() == Some(id))
            .filter(|n| n.state == "UP");
        let Some(node) = node else {
            if retired {
                bar.finish_and_clear();
                return Ok(());
            }
            bar.abandon();
            anyhow::bail!(
                "node {id} is down: what it holds is unknown; `rondo node remove --force {id}` once its partitions are held by others"
            );
        };
        if retired && node.bytes_stored == 0 {
            bar.finish_and_clear();
            return Ok(());
        }
        let total = *start.get_or_insert(node.bytes_stored);
        bar.set_length(total);
        bar.set_position(total.saturating_sub(node.bytes_stored));
        let waiting = cluster
            .layout
            .as_ref()
            .map_or(0, |l| l.unsynced_nodes.len());
        bar.set_message(format!("{waiting} new owner(s) still fetching"));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
