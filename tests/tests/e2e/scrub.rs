//! Bad copies are found and replaced, with real processes (issue 15, test
//! 5): R = 3 on four nodes, 400 songs; three ways a copy goes bad, each
//! found by a different check, and each song back at R afterwards.
//!
//! - A byte flipped under a node, then streamed whole: the listener gets
//!   the bytes read before the check could know, the node's stream hasher
//!   finds the mismatch at the end and quarantines the copy, and from then
//!   on the node answers 404 or the right bytes (refetched), never the
//!   corrupt ones.
//! - A copy deleted under one owner (the inventory check finds it) while
//!   the owner it fetches from first has a flipped byte: the reader's hash
//!   check fails, it reports the source, which re-hashes its own copy and
//!   quarantines it; the reader gets the blob from the third owner.
//! - A byte flipped under a node that then restarts: its first scrub pass
//!   re-hashes every blob and finds it.
//!
//! On the way, `rondo node rates` changes a node's background rates at
//! runtime and the cluster view shows them.

use std::path::PathBuf;
use std::time::Duration;

use rondo_core::{ContentHash, SongId};
use rondo_tests::{Cluster, eventually};

use crate::cli::rondo;
use crate::data::{counter, exactly_on_owners, metric, placement, streams_from_owners, upload};
use crate::membership::same_digest;
use crate::ring::one_ring;

const SONGS: usize = 400;

fn faults(fault: &str) -> String {
    format!("rondo_node_blob_faults_total{{fault=\"{fault}\"}}")
}

/// Node `i`'s count of copies taken out of service for `fault`.
async fn fault_count(cluster: &Cluster, i: usize, fault: &str) -> u64 {
    counter(cluster, i, &faults(fault)).await
}

/// Waits until node `i` has taken `n` copies out of service for `fault`
/// (counted since it started), and not more.
async fn wait_faults(cluster: &Cluster, i: usize, fault: &str, n: u64) {
    let series = faults(fault);
    eventually(
        &format!("node {i} finds {n} {fault} copies"),
        Duration::from_secs(60),
        || async { (counter(cluster, i, &series).await >= n).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(counter(cluster, i, &series).await, n, "{fault} on node {i}");
}

fn blob_file(cluster: &Cluster, i: usize, hash: &str) -> PathBuf {
    cluster.nodes[i]
        .dir
        .join("blobs")
        .join(&hash[..2])
        .join(hash)
}

/// Flips one byte in the middle of a file, in place (its length never
/// changes, so no check sees it short).
fn flip(path: &PathBuf) {
    use std::os::unix::fs::FileExt;
    let len = std::fs::metadata(path).unwrap().len();
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, len / 2).unwrap();
    byte[0] ^= 0xff;
    file.write_all_at(&byte, len / 2).unwrap();
    file.sync_all().unwrap();
}

/// A whole-file stream of `song` from node `i`: status and body.
async fn stream(cluster: &Cluster, i: usize, song: &str) -> (u16, Vec<u8>) {
    let song: SongId = song.parse().unwrap();
    let url = cluster.signed_url(i, song, rondo_process::unix_now() + 600);
    let response = cluster.http().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Once a node has quarantined a copy, it answers a stream of it with 404
/// (ask another replica) until it has a verified copy again, then with the
/// right bytes; never with other bytes.
async fn never_corrupt_again(cluster: &Cluster, i: usize, song: &str, hash: &str) {
    eventually(
        &format!("node {i} serves song {song} again"),
        Duration::from_secs(60),
        || async {
            let (status, body) = stream(cluster, i, song).await;
            match status {
                404 => None,
                200 => {
                    assert_eq!(
                        ContentHash::of(&body).to_hex(),
                        hash,
                        "node {i} served corrupt bytes after it found them"
                    );
                    Some(())
                }
                other => panic!("node {i} answered {other} for song {song}"),
            }
        },
    )
    .await
    .unwrap();
}

fn quarantined(cluster: &Cluster, i: usize, hash: &str) -> usize {
    std::fs::read_dir(cluster.nodes[i].dir.join("quarantine"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(hash))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_and_missing_copies_are_found_quarantined_and_replaced() {
    let mut cluster = Cluster::builder()
        .nodes(4)
        .node_option("resync_interval_ms", 200)
        .node_option("release_linger_ms", 300)
        .node_option("check_interval_ms", 300)
        // No scrub pass but the one at start: each case below is found by
        // the check it is about.
        .node_option("scrub_interval_ms", 3_600_000)
        .start()
        .await
        .unwrap();
    let all = [0, 1, 2, 3];
    one_ring(&cluster, &all).await;
    cluster.wait_all_up().await.unwrap();
    cluster.wait_layout().await.unwrap();
    // The background rates change at runtime, and the cluster view shows
    // them; the scrub runs unthrottled here.
    let id0 = cluster.nodes[0].id.to_string();
    let args = ["node", "rates", &id0, "--resync", "2MiB", "--scrub", "0"];
    let (status, out, err) = rondo(&cluster, &cluster.token, &args);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("resync   2.00 MiB/s"), "{out}");
    assert!(out.contains("scrub    no limit"), "{out}");
    let d = cluster
        .admin
        .query(
            "{ cluster { nodes { id resyncRateBytes scrubRateBytes } } }",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    let node0 = d["cluster"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id0.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        node0["resyncRateBytes"],
        (2u64 << 20).to_string(),
        "{node0}"
    );
    assert_eq!(node0["scrubRateBytes"], "0", "{node0}");
    let (status, out, _) = rondo(
        &cluster,
        &cluster.token,
        &["node", "rates", &id0, "--resync", "0"],
    );
    assert_eq!(status, 0);
    assert!(
        out.contains("resync   no limit") && out.contains("scrub    no limit"),
        "{out}"
    );

    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "replication", "3"]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    let p = placement(&cluster, 0, 0).await;
    let songs = upload(&cluster, &all, SONGS, "Scrub", Some(&p)).await;
    exactly_on_owners(&cluster, &all, &p, &songs).await;
    let index = |id: &rondo_core::NodeId| cluster.nodes.iter().position(|n| n.id == *id).unwrap();
    let list: Vec<(&String, &String)> = songs.iter().collect();

    // 1. The stream hasher.
    let (song_a, hash_a) = list[0];
    let a = index(&p.row_of(hash_a)[0]);
    let base_a = fault_count(&cluster, a, "corrupt").await;
    flip(&blob_file(&cluster, a, hash_a));
    let (status, body) = stream(&cluster, a, song_a).await;
    assert_eq!(status, 200);
    assert_ne!(
        &ContentHash::of(&body).to_hex(),
        hash_a,
        "the first stream sends what is on disk"
    );
    wait_faults(&cluster, a, "corrupt", base_a + 1).await;
    assert_eq!(quarantined(&cluster, a, hash_a), 1);
    never_corrupt_again(&cluster, a, song_a, hash_a).await;

    // 2. The inventory check and a reader's report. The first owner
    // loses its file; it fetches from the second owner first (table
    // order), whose copy has a flipped byte.
    let (song_b, hash_b) = list[1];
    let row = p.row_of(hash_b);
    let (reader, source) = (index(&row[0]), index(&row[1]));
    let base_missing = fault_count(&cluster, reader, "missing").await;
    let base_corrupt = fault_count(&cluster, source, "corrupt").await;
    let base_reads = metric(&cluster, reader, "rondo_node_corrupt_reads_total").await;
    flip(&blob_file(&cluster, source, hash_b));
    std::fs::remove_file(blob_file(&cluster, reader, hash_b)).unwrap();
    wait_faults(&cluster, reader, "missing", base_missing + 1).await;
    wait_faults(&cluster, source, "corrupt", base_corrupt + 1).await;
    assert_eq!(
        metric(&cluster, reader, "rondo_node_corrupt_reads_total").await,
        base_reads + 1,
        "the reader saw the bad bytes once, then read another owner"
    );
    assert_eq!(quarantined(&cluster, source, hash_b), 1);
    never_corrupt_again(&cluster, source, song_b, hash_b).await;
    never_corrupt_again(&cluster, reader, song_b, hash_b).await;

    // 3. The scrub: a flipped byte under a stopped node, found by the pass
    // its restart begins.
    let (song_c, hash_c) = list[2];
    let c = index(&p.row_of(hash_c)[0]);
    cluster.kill_node(c);
    flip(&blob_file(&cluster, c, hash_c));
    cluster.restart_node(c).await.unwrap();
    wait_faults(&cluster, c, "corrupt", 1).await;
    never_corrupt_again(&cluster, c, song_c, hash_c).await;
    eventually(
        &format!("node {c} ends its scrub pass"),
        Duration::from_secs(60),
        || async {
            (metric(&cluster, c, "rondo_node_scrub_passes_total").await >= 1).then_some(())
        },
    )
    .await
    .unwrap();
    let held = cluster.nodes[c].blob_files().len() as u64;
    assert!(metric(&cluster, c, "rondo_node_scrub_blobs_total").await >= held);

    // Every song back on its three owners, byte-identical from each, and
    // one catalog on every node.
    one_ring(&cluster, &all).await;
    exactly_on_owners(&cluster, &all, &p, &songs).await;
    streams_from_owners(&cluster, &p, &songs).await;
    same_digest(&cluster, &all).await;
}
