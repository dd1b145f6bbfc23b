//! Control-plane benchmark (run by `bench/ring.sh` with release binaries):
//! commit latency of a write through the ring with 1, 3 and 5 nodes under 1
//! and 32 concurrent writers, token rotations per second idle and loaded,
//! and the time from kill -9 of a ring member to the first write committed
//! by the others. The 1-node cluster is the reference: it runs the same
//! write path (blob fsync, ring entry fsync, apply) with no peer to wait for.
//!
//! A write is one gRPC `UploadSong` of a 556-byte WAV straight to a node
//! (no gateway), over the cluster's mutual TLS: the node checks it is
//! audio, stores the blob, orders the song on the ring and answers once it
//! applied it.
//!
//! Join: a fresh 3-node cluster takes writes from 32 writers for the load
//! step's duration; then a fourth node is started with seeds and added
//! (`ChangeLayout`), and the time until it has applied the whole log and
//! holds every blob is measured, against the time the cluster took to
//! write them.

use std::time::{Duration, Instant};

use anyhow::Context;
use rondo_tests::{Cluster, NodeClient as Client};

async fn client(cluster: &Cluster, i: usize) -> anyhow::Result<Client> {
    cluster.grpc(i).await
}

async fn write(client: &mut Client, n: u64) -> anyhow::Result<()> {
    rondo_tests::upload_direct(client, &format!("bench {n}"), "Bench").await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Token passes seen by node 0 over `secs` seconds, divided by the members:
/// full rotations per second.
async fn rotations(cluster: &Cluster, nodes: usize, secs: f64) -> anyhow::Result<f64> {
    let a = cluster.ring_status(0).await?.rotations;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let b = cluster.ring_status(0).await?.rotations;
    Ok(b.saturating_sub(a) as f64 / secs / nodes as f64)
}

async fn load(
    cluster: &Cluster,
    nodes: usize,
    writers: usize,
    secs: f64,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = client(cluster, w % nodes).await?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                let t = Instant::now();
                if write(&mut c, (w as u64) << 32 | n).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let rot = rotations(cluster, nodes, secs * 0.8).await?;
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort();
    Ok((all, rot))
}

async fn wait_ring(cluster: &Cluster, nodes: usize) -> anyhow::Result<()> {
    rondo_tests::eventually("ring formed", Duration::from_secs(60), || async {
        let s = cluster.ring_status(0).await.ok()?;
        (s.phase == "operational" && s.members.len() == nodes).then_some(())
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: f64 = std::env::var("DURATION")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(5.0);
    let token_ms: u64 = std::env::var("TOKEN_TIMEOUT_MS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(1000);
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(10);
    println!(
        "token timeout {token_ms} ms (other timeouts scaled from corosync's defaults), {secs} s per load step"
    );
    let mut reference = None;
    for nodes in [1usize, 3, 5] {
        let cluster = Cluster::builder()
            .nodes(nodes)
            .token_timeout_ms(token_ms)
            .start()
            .await?;
        wait_ring(&cluster, nodes).await?;
        let idle = rotations(&cluster, nodes, 2.0).await?;
        println!("{nodes} node(s): idle {idle:.1} rotations/s");
        for writers in [1usize, 32] {
            let (lat, rot) = load(&cluster, nodes, writers, secs).await?;
            let p50 = percentile(&lat, 0.5);
            let p99 = percentile(&lat, 0.99);
            let rate = lat.len() as f64 / secs;
            let ratio = match (writers, nodes) {
                (1, 1) => {
                    reference = Some(p50);
                    1.0
                }
                _ => reference.map_or(f64::NAN, |r| p50 / r),
            };
            println!(
                "{nodes} node(s), {writers:>2} writer(s): p50 {p50:.1} ms, p99 {p99:.1} ms, {rate:.0} writes/s, {rot:.1} rotations/s loaded, p50 / (1 node, 1 writer) = {ratio:.2}"
            );
        }
        if nodes == 3 {
            failover(cluster, trials).await?;
        }
    }
    join(token_ms, secs).await
}

/// A node added to a cluster that holds `secs` of 32-writer writes: time
/// until it applied the whole log and holds every blob.
async fn join(token_ms: u64, secs: f64) -> anyhow::Result<()> {
    use rondo_proto::ring::v1 as ring;
    use rondo_proto::storage::v1 as pb;
    let mut cluster = Cluster::builder()
        .nodes(3)
        .token_timeout_ms(token_ms)
        .start()
        .await?;
    wait_ring(&cluster, 3).await?;
    let (lat, _) = load(&cluster, 3, 32, secs).await?;
    let writes = lat.len();
    let target = cluster.ring_status(0).await?.last_applied_seq;
    let blobs = cluster.nodes[0].disk().blob_files;
    let d = cluster.spawn_joiner().await?;
    let add = pb::ChangeLayoutRequest {
        change: Some(ring::LayoutChange {
            expect_epoch: 0,
            op: Some(ring::layout_change::Op::Add(ring::AddNode {
                id: cluster.nodes[d].id.to_string(),
                addr: format!("https://{}", cluster.nodes[d].grpc),
                voter: true,
            })),
            proposal: String::new(),
        }),
        session: cluster.operator_session(),
    };
    let started = Instant::now();
    client(&cluster, 0).await?.change_layout(add).await?;
    let added = started.elapsed();
    rondo_tests::eventually(
        "the new node caught up",
        Duration::from_secs(600),
        || async {
            let s = cluster.ring_status(d).await.ok()?;
            (s.last_applied_seq >= target && cluster.nodes[d].disk().blob_files >= blobs)
                .then_some(())
        },
    )
    .await?;
    let caught_up = started.elapsed().as_secs_f64();
    println!(
        "join: {writes} writes ({target} log entries, {blobs} blobs) written in {secs} s by 32 writers; \
         the added node holds all of them {caught_up:.2} s after addNode (ordered in {:.0} ms): \
         catch-up time / write time = {:.2}",
        added.as_secs_f64() * 1000.0,
        caught_up / secs
    );
    Ok(())
}

/// Kill -9 one member while a writer on another member writes in a loop;
/// the time from the kill to the first write that commits afterwards.
async fn failover(mut cluster: Cluster, trials: usize) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for t in 0..trials {
        let victim = t % 3;
        let writer = (victim + 1) % 3;
        let mut c = client(&cluster, writer).await?;
        write(&mut c, 0).await.context("warm-up write")?;
        cluster.kill_node(victim);
        let killed = Instant::now();
        let mut n = 1;
        loop {
            n += 1;
            if write(&mut c, n).await.is_ok() {
                // A write that started after the kill and committed: the
                // first one is the failover time.
                break;
            }
        }
        times.push(killed.elapsed());
        cluster.restart_node(victim).await?;
        wait_ring(&cluster, 3).await?;
    }
    times.sort();
    println!(
        "failover, 3 nodes, kill -9 of a member to the first commit: median {:.0} ms, max {:.0} ms over {} trials",
        percentile(&times, 0.5),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        times.len()
    );
    Ok(())
}
