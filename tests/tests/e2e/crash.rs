//! An owner killed with SIGKILL in the middle of 40 concurrent uploaders
//! (issue 15, test 1): five nodes, R = 3 (W = 2), 400 songs acknowledged.
//! A sampler reads every node's blob files (the dead node's disk too:
//! its copies are durable, only unreachable) every 200 ms and checks that
//! every song acknowledged before the sample has W copies on its owners.
//! After the restart no acknowledged song is missing from any node's
//! catalog, every blob ends on exactly its R owners, streams byte-identical
//! from each, and every node applied one log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rondo_proto::storage::v1 as pb;
use rondo_tests::Cluster;

use crate::cli::rondo;
use crate::data::{exactly_on_owners, files, placement, streams_from_owners};
use crate::membership::same_digest;
use crate::ring::one_ring;

const UPLOADERS: usize = 40;
const PER_UPLOADER: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_upload_is_lost_when_an_owner_is_killed_mid_load() {
    let mut cluster = Cluster::builder()
        .nodes(5)
        .node_option("resync_interval_ms", 200)
        .node_option("release_linger_ms", 300)
        .start()
        .await
        .unwrap();
    let all = [0, 1, 2, 3, 4];
    one_ring(&cluster, &all).await;
    cluster.wait_all_up().await.unwrap();
    cluster.wait_layout().await.unwrap();
    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "replication", "3"]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    let p = placement(&cluster, 0, 0).await;
    assert_eq!(p.write_quorum, 2);

    // A random owner (every node owns some partitions).
    let victim = usize::from(uuid::Uuid::new_v4().as_bytes()[0]) % all.len();
    eprintln!(
        "killing node {victim} after {} acknowledgements",
        UPLOADERS * PER_UPLOADER / 3
    );
    let acked: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let count = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let killed = AtomicBool::new(false);
    let samples = AtomicUsize::new(0);

    let uploader = |u: usize| {
        let (cluster, acked, count, killed) = (&cluster, &acked, &count, &killed);
        async move {
            let mut mine = 0;
            let mut attempt = 0;
            while mine < PER_UPLOADER && attempt < PER_UPLOADER * 4 {
                attempt += 1;
                let i = (u + attempt) % all.len();
                let song = async {
                    let mut client = cluster.grpc(i).await.ok()?;
                    rondo_tests::upload_direct(
                        &mut client,
                        &format!("Crash {u}.{attempt}"),
                        "Crash",
                    )
                    .await
                    .ok()
                };
                if let Some(song) = song.await {
                    acked.lock().unwrap().insert(song.id, song.content_hash);
                    mine += 1;
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == UPLOADERS * PER_UPLOADER / 3 && !killed.swap(true, Ordering::SeqCst) {
                        cluster.nodes[victim]
                            .proc
                            .signal(nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
            mine
        }
    };
    let sampler = async {
        while !done.load(Ordering::SeqCst) {
            // Acknowledged before the files are read: each must be there.
            let before: Vec<(String, String)> = acked
                .lock()
                .unwrap()
                .iter()
                .map(|(s, h)| (s.clone(), h.clone()))
                .collect();
            let disk = files(&cluster, &all);
            for (song, hash) in &before {
                let on_owners = disk
                    .get(hash)
                    .map_or(0, |holders| holders.intersection(p.owners_of(hash)).count());
                assert!(
                    on_owners >= p.write_quorum,
                    "song {song} acknowledged with {on_owners} durable copies on its owners"
                );
            }
            samples.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let uploads = async {
        let n: Vec<usize> = futures::future::join_all((0..UPLOADERS).map(uploader)).await;
        done.store(true, Ordering::SeqCst);
        n
    };
    let (per_uploader, ()) = tokio::join!(uploads, sampler);
    assert!(
        killed.load(Ordering::SeqCst),
        "the owner was killed mid-load"
    );
    let acked = acked.into_inner().unwrap();
    assert_eq!(
        acked.len(),
        UPLOADERS * PER_UPLOADER,
        "each uploader got its songs acknowledged through the survivors: {per_uploader:?}"
    );
    assert!(samples.load(Ordering::SeqCst) >= 5, "the sampler ran");

    // Back: nothing acknowledged is lost, on any node; R copies each.
    cluster.kill_node(victim);
    cluster.restart_node(victim).await.unwrap();
    one_ring(&cluster, &all).await;
    same_digest(&cluster, &all).await;
    for i in all {
        let mut client = cluster.grpc(i).await.unwrap();
        for id in acked.keys() {
            let song = client
                .get_song(pb::GetSongRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("acknowledged song {id} missing on node {i}: {e}"))
                .into_inner();
            assert_eq!(&song.content_hash, &acked[id]);
        }
    }
    exactly_on_owners(&cluster, &all, &p, &acked).await;
    streams_from_owners(&cluster, &p, &acked).await;
}
