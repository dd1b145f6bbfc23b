//! A layout change in the middle of a 3|2 split under upload load, with a
//! kill -9 mid-transition (issue 15, test 6), in network namespaces: five
//! nodes, R = 3 (W = 2), 400 songs first. The majority drains one of its
//! own while the minority is cut off, so the new owners include the two
//! unreachable nodes and the transition cannot finish before the heal; a
//! majority node is killed with SIGKILL and restarted meanwhile. Checked:
//! the minority acknowledges no write and loses no file while cut off,
//! and applies nothing; no acknowledged song is lost; after the heal the
//! old placement retires at one log position on every node, every blob
//! ends on exactly its R owners (the drained node holds nothing) and
//! streams byte-identical from each, and every node applied one log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rondo_proto::storage::v1 as pb;
use rondo_tests::{Cluster, eventually};

use crate::cli::rondo;
use crate::data::{exactly_on_owners, placement, retired_at, streams_from_owners, upload};
use crate::faults::netns_or_skip;
use crate::membership::same_digest;
use crate::ring::one_ring;

const UPLOADERS: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn a_layout_change_during_a_split_with_a_crash_loses_nothing() {
    if !netns_or_skip() {
        return;
    }
    let mut cluster = Cluster::builder()
        .nodes(5)
        .netns()
        .node_option("resync_interval_ms", 200)
        .node_option("release_linger_ms", 300)
        // No automatic out here: the change under test is the operator's.
        .node_option("down_out_interval_ms", 3_600_000)
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
    let mut acked: BTreeMap<String, String> = upload(&cluster, &all, 400, "Before", Some(&p)).await;
    exactly_on_owners(&cluster, &all, &p, &acked).await;

    // 3 | 2. The minority sees itself out of quorum.
    let (majority, minority) = ([0, 1, 2], [3, 4]);
    for m in minority {
        cluster
            .net
            .as_ref()
            .unwrap()
            .partition(m, &majority)
            .unwrap();
    }
    one_ring(&cluster, &majority).await;
    let mut frozen = BTreeMap::new();
    for m in minority {
        let seq = eventually(
            "the minority is not quorate",
            Duration::from_secs(30),
            || async {
                let s = cluster.ring_status(m).await.ok()?;
                (!s.quorate).then_some(s.last_applied_seq)
            },
        )
        .await
        .unwrap();
        frozen.insert(m, (seq, cluster.nodes[m].blob_files()));
    }

    // Phase 1: load; some acknowledgements under the old placement; the
    // operator drains a majority node (the new owners include the two
    // unreachable nodes, so the transition waits for the heal); more
    // acknowledgements; then a majority node dies with SIGKILL, and the
    // two left are no quorum.
    let during: Mutex<BTreeMap<String, (String, usize)>> = Mutex::new(BTreeMap::new());
    let drained = cluster.nodes[2].id;
    let p2 = load(&cluster, &frozen, &during, async {
        acks(&during, 20).await;
        let (status, out, err) = rondo(
            &cluster,
            &cluster.token,
            &["node", "drain", &drained.to_string()],
        );
        assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
        let p2 = placement(&cluster, 0, p.epoch).await;
        assert!(p2.owners.iter().all(|o| !o.contains(&drained)));
        let n = during.lock().unwrap().len();
        acks(&during, n + 10).await;
        cluster.nodes[1]
            .proc
            .signal(nix::sys::signal::Signal::SIGKILL);
        eventually("no quorum left", Duration::from_secs(30), || async {
            (!cluster.ring_status(0).await.ok()?.quorate).then_some(())
        })
        .await
        .unwrap();
        p2
    })
    .await;

    // Phase 2: the node back, the majority quorate again, more load.
    cluster.kill_node(1);
    cluster.restart_node(1).await.unwrap();
    one_ring(&cluster, &majority).await;
    load(&cluster, &frozen, &during, async {
        let n = during.lock().unwrap().len();
        acks(&during, n + 10).await;
    })
    .await;
    let during = during.into_inner().unwrap();
    let from: BTreeSet<usize> = during.values().map(|(_, i)| *i).collect();
    assert!(
        from.iter().all(|i| majority.contains(i)),
        "the minority acknowledged writes: {from:?}"
    );
    for (&m, (seq, _)) in &frozen {
        let s = cluster.ring_status(m).await.unwrap();
        assert_eq!(
            s.last_applied_seq, *seq,
            "minority node {m} applied entries"
        );
        assert_eq!(
            s.layout.unwrap().placement.unwrap().epoch,
            p.epoch,
            "the minority applied no layout"
        );
    }
    // The transition waits for the unreachable owners.
    let layout = cluster.ring_status(0).await.unwrap().layout.unwrap();
    assert!(
        layout.previous.iter().any(|o| o.epoch == p.epoch),
        "the old placement is still in force"
    );

    // Heal: the old placement retires at one position on every node, and
    // everything acknowledged ends on exactly its owners.
    cluster.net.as_ref().unwrap().heal().unwrap();
    one_ring(&cluster, &all).await;
    retired_at(&cluster, &all, p.epoch).await;
    assert_eq!(placement(&cluster, 0, 0).await.epoch, p2.epoch);
    acked.extend(during.into_iter().map(|(id, (hash, _))| (id, hash)));
    same_digest(&cluster, &all).await;
    for i in all {
        let mut client = cluster.grpc(i).await.unwrap();
        for (id, hash) in &acked {
            let song = client
                .get_song(pb::GetSongRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("acknowledged song {id} missing on node {i}: {e}"))
                .into_inner();
            assert_eq!(&song.content_hash, hash);
        }
    }
    exactly_on_owners(&cluster, &all, &p2, &acked).await;
    // (It may also have held copies of uploads applied but never
    // acknowledged to their client: those go too.)
    eventually(
        "the drained node holds nothing",
        Duration::from_secs(60),
        || async { (cluster.nodes[2].disk().blob_files == 0).then_some(()) },
    )
    .await
    .unwrap();
    streams_from_owners(&cluster, &p2, &acked).await;
}

/// Waits until `n` uploads were acknowledged during the split.
async fn acks(during: &Mutex<BTreeMap<String, (String, usize)>>, n: usize) {
    eventually("uploads acknowledged", Duration::from_secs(90), || async {
        (during.lock().unwrap().len() >= n).then_some(())
    })
    .await
    .unwrap();
}

/// Runs [`UPLOADERS`] uploaders, each to every node in turn, recording
/// what is acknowledged and by which node, and a watcher that fails if a
/// minority node loses a file it held at the split, until `scenario`
/// ends; its output.
async fn load<T>(
    cluster: &Cluster,
    frozen: &BTreeMap<usize, (u64, BTreeSet<String>)>,
    during: &Mutex<BTreeMap<String, (String, usize)>>,
    scenario: impl std::future::Future<Output = T>,
) -> T {
    let stop = AtomicBool::new(false);
    let uploader = |u: usize| {
        let stop = &stop;
        async move {
            let mut k = 0usize;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                let i = (u + k) % cluster.nodes.len();
                let song = async {
                    let mut client = cluster.grpc(i).await.ok()?;
                    let title = format!("Split {u}.{k} {}", uuid::Uuid::new_v4());
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        rondo_tests::upload_direct(&mut client, &title, "Split"),
                    )
                    .await
                    .ok()?
                    .ok()
                };
                match song.await {
                    Some(song) => {
                        during
                            .lock()
                            .unwrap()
                            .insert(song.id, (song.content_hash, i));
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    };
    let watcher = async {
        while !stop.load(Ordering::SeqCst) {
            for (&m, (_, files)) in frozen {
                let now: BTreeSet<String> = cluster.nodes[m].blob_files().into_iter().collect();
                let lost: Vec<&String> = files.iter().filter(|h| !now.contains(*h)).collect();
                assert!(lost.is_empty(), "minority node {m} deleted {lost:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let driven = async {
        let out = scenario.await;
        stop.store(true, Ordering::SeqCst);
        out
    };
    let (out, _, ()) = tokio::join!(
        driven,
        futures::future::join_all((0..UPLOADERS).map(uploader)),
        watcher
    );
    out
}
