//! Fault tests of the control plane with real processes on loopback: the
//! token holder killed again and again under write load, and a node paused
//! beyond the token timeout. After each: every live node reports the same
//! catalog digest, every acknowledged write is present exactly once, and
//! ring ids only grew.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rondo_tests::{Cluster, eventually};
use serde_json::{Value, json};

/// Uploads songs one after another until `stop`, recording the ids of the
/// acknowledged ones (title → id). Failures (a node just died, no ring yet)
/// are expected and simply retried with the next song.
fn writer(
    client: rondo_cli::client::Client,
    name: &'static str,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut attempts = 0;
        let mut n = 0u64;
        while !*stop.borrow() {
            n += 1;
            attempts += 1;
            let title = format!("{name} {n}");
            let file = crate::wav(
                dir.path(),
                &format!("{n}.wav"),
                &title,
                "Fault Band",
                name,
                0.2,
                n,
            );
            if let Ok(r) = client.upload_raw(&file, json!({}), "{ id title }").await
                && let Some(id) = r
                    .pointer("/data/uploadSong/song/id")
                    .and_then(Value::as_str)
            {
                acked.lock().unwrap().insert(title, id.to_string());
            }
        }
        attempts
    })
}

/// Every acknowledged write is in the catalog exactly once, and the live
/// nodes agree on the applied log.
async fn check(cluster: &Cluster, live: &[usize], acked: &BTreeMap<String, String>) {
    let (seq, digest) = eventually("live nodes converge", Duration::from_secs(60), || async {
        let mut seen = BTreeSet::new();
        for &i in live {
            let s = cluster.ring_status(i).await.ok()?;
            if s.phase != "operational" {
                return None;
            }
            seen.insert((s.last_applied_seq, s.catalog_digest));
        }
        (seen.len() == 1).then(|| seen.into_iter().next()).flatten()
    })
    .await
    .unwrap();
    assert!(seq > 0 && !digest.is_empty());
    let mut titles: BTreeMap<String, usize> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let d = cluster
            .anon
            .query(
                "query($a: String) { songs(first: 100, after: $a, search: \"fault band\") { nodes { id title } pageInfo { hasNextPage endCursor } } }",
                json!({ "a": after }),
            )
            .await
            .unwrap();
        for s in d["songs"]["nodes"].as_array().unwrap() {
            *titles
                .entry(s["title"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        if d["songs"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = d["songs"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_string);
    }
    for title in acked.keys() {
        assert_eq!(
            titles.get(title),
            Some(&1),
            "acknowledged {title:?} present exactly once"
        );
    }
    assert!(
        titles.values().all(|&n| n == 1),
        "no song twice: {titles:?}"
    );
}

/// One write straight to node `i` over gRPC (no gateway): the outcome.
async fn write_to(cluster: &Cluster, i: usize, title: &str) -> Result<(), tonic::Status> {
    let mut client = cluster
        .grpc(i)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    rondo_tests::upload_direct(&mut client, title, "Fault Band")
        .await
        .map(|_| ())
}

/// Whether node `i` holds the blob `hash` (a one-byte ranged read of it).
async fn holds_blob(cluster: &Cluster, i: usize, hash: &str) -> bool {
    use futures::StreamExt;
    // ReadBlob is for members: ask as the node itself.
    let Ok(links) = cluster.node_links(i) else {
        return false;
    };
    let Ok(mut client) = cluster.grpc_as(&links, i).await else {
        return false;
    };
    let request = rondo_proto::storage::v1::ReadBlobRequest {
        content_hash: hash.to_string(),
        offset: 0,
        length: 1,
    };
    match client.read_blob(request).await {
        Ok(stream) => matches!(stream.into_inner().next().await, Some(Ok(c)) if c.chunk.len() == 1),
        Err(_) => false,
    }
}

/// Waits until node `i` is operational in a ring of exactly `n` members.
async fn ring_of(cluster: &Cluster, i: usize, n: usize) -> (u64, String) {
    eventually(
        "a ring of the expected size",
        Duration::from_secs(30),
        || async {
            let s = cluster.ring_status(i).await.ok()?;
            (s.phase == "operational" && s.members.len() == n)
                .then_some((s.ring_counter, s.ring_rep))
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_token_holder_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let writers: Vec<_> = ["w1", "w2"]
        .into_iter()
        .map(|w| writer(cluster.admin.clone(), w, acked.clone(), stop.clone()))
        .collect();
    let mut last = ring_of(&cluster, 0, 3).await;
    for round in 0..3 {
        // Let some writes through, then kill whoever holds the token.
        let before = acked.lock().unwrap().len();
        eventually("writes go through", Duration::from_secs(60), || async {
            (acked.lock().unwrap().len() >= before + 3).then_some(())
        })
        .await
        .unwrap();
        let holder = cluster
            .anon
            .query("{ cluster { ring { tokenHolder } } }", json!({}))
            .await
            .ok()
            .and_then(|d| {
                d.pointer("/cluster/ring/tokenHolder")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        let victim = cluster
            .nodes
            .iter()
            .position(|n| Some(n.id.to_string()) == holder)
            .unwrap_or(round % 3);
        cluster.kill_node(victim);
        let live: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        let now = ring_of(&cluster, live[0], 2).await;
        assert!(now > last, "ring ids grow: {last:?} then {now:?}");
        let snapshot = acked.lock().unwrap().clone();
        check(&cluster, &live, &snapshot).await;
        // Bring it back (same ports, same data); it catches up.
        cluster.restart_node(victim).await.unwrap();
        let back = ring_of(&cluster, victim, 3).await;
        assert!(back > now, "ring ids grow: {now:?} then {back:?}");
        let snapshot = acked.lock().unwrap().clone();
        check(&cluster, &[0, 1, 2], &snapshot).await;
        last = back;
    }
    let _ = stop_tx.send(true);
    for w in writers {
        w.await.unwrap();
    }
    let snapshot = acked.lock().unwrap().clone();
    check(&cluster, &[0, 1, 2], &snapshot).await;
    assert!(snapshot.len() >= 9, "writes kept going: {}", snapshot.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_beyond_the_token_timeout_rejoins() {
    let cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let w = writer(cluster.admin.clone(), "p1", acked.clone(), stop.clone());
    let first = ring_of(&cluster, 0, 3).await;
    cluster.nodes[2]
        .proc
        .signal(nix::sys::signal::Signal::SIGSTOP);
    // The other two form a ring without it and keep taking writes.
    let two = ring_of(&cluster, 0, 2).await;
    assert!(two > first);
    let before = acked.lock().unwrap().len();
    eventually(
        "writes go on without the paused node",
        Duration::from_secs(60),
        || async { (acked.lock().unwrap().len() >= before + 3).then_some(()) },
    )
    .await
    .unwrap();
    cluster.nodes[2]
        .proc
        .signal(nix::sys::signal::Signal::SIGCONT);
    // It comes back into a ring of three, with a greater id, and catches up.
    // (Right after SIGCONT it still reports the ring it was paused in, until
    // it learns that ring is gone: wait for a newer one.)
    let three = eventually("a newer ring of three", Duration::from_secs(30), || async {
        let s = cluster.ring_status(2).await.ok()?;
        let id = (s.ring_counter, s.ring_rep);
        (s.phase == "operational" && s.members.len() == 3 && id > two).then_some(id)
    })
    .await
    .unwrap();
    assert!(three > two, "ring ids grow: {two:?} then {three:?}");
    let _ = stop_tx.send(true);
    w.await.unwrap();
    let snapshot = acked.lock().unwrap().clone();
    check(&cluster, &[0, 1, 2], &snapshot).await;
}

/// Skips (with the reason on stderr) when namespaces cannot be made.
pub(crate) fn netns_or_skip() -> bool {
    if rondo_tests::netns::Net::available() {
        return true;
    }
    eprintln!("SKIPPED: network namespace tests need root (CI runs them as root)");
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_two_one_then_heal() {
    if !netns_or_skip() {
        return;
    }
    let cluster = Cluster::builder().nodes(3).netns().start().await.unwrap();
    let first = ring_of(&cluster, 0, 3).await;
    let net = cluster.net.as_ref().unwrap();

    // Node 2 alone on one side, nodes 0 and 1 on the other.
    net.partition(2, &[0, 1]).unwrap();
    let majority = ring_of(&cluster, 0, 2).await;
    assert!(majority > first, "a new ring: {first:?} then {majority:?}");
    let mut acked = BTreeMap::new();
    for n in 0..4 {
        let title = format!("majority {n}");
        if write_to(&cluster, n % 2, &title).await.is_ok() {
            acked.insert(title, String::new());
        }
    }
    assert!(acked.len() >= 3, "the majority takes writes: {acked:?}");
    // The minority refuses, naming the reason, and never operates.
    let refused = write_to(&cluster, 2, "minority").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("no quorum"), "{refused:?}");
    let s = cluster.ring_status(2).await.unwrap();
    assert_ne!(s.phase, "operational", "{s:?}");
    // The gateway, which still reaches all three, sends uploads only to the
    // majority once it has seen the minority out of a ring (round-robin
    // over three live nodes would name node 2 every third time).
    let id = cluster.nodes[2].id.to_string();
    let nodes = cluster
        .anon
        .query("{ cluster { nodes { id address } } }", json!({}))
        .await
        .unwrap();
    let minority = nodes["cluster"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id.as_str())
        .and_then(|n| n["address"].as_str())
        .unwrap()
        .to_string();
    assert!(minority.starts_with("https://"), "{minority}");
    eventually(
        "grants that avoid the minority",
        Duration::from_secs(15),
        || async {
            for _ in 0..6 {
                let d = cluster
                    .admin
                    .query("mutation { createUpload { url } }", json!({}))
                    .await
                    .ok()?;
                let url = d["createUpload"]["url"].as_str()?.to_string();
                if url.starts_with(&minority) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();

    // Heal: one ring of three with a greater id, one log, nothing lost,
    // the refused write nowhere.
    net.heal().unwrap();
    let healed = ring_of(&cluster, 2, 3).await;
    assert!(
        healed > majority,
        "ring ids grow: {majority:?} then {healed:?}"
    );
    check(&cluster, &[0, 1, 2], &acked).await;
    let d = cluster
        .anon
        .query("{ songs(search: \"minority\") { totalCount } }", json!({}))
        .await
        .unwrap();
    assert_eq!(d["songs"]["totalCount"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_percent_packet_loss_still_converges() {
    if !netns_or_skip() {
        return;
    }
    // TCP hides most of the loss behind retransmissions of 200 ms and more,
    // so this test uses a token timeout well above that (2 s).
    let cluster = Cluster::builder()
        .nodes(3)
        .netns()
        .token_timeout_ms(2000)
        .start()
        .await
        .unwrap();
    ring_of(&cluster, 0, 3).await;
    let net = cluster.net.as_ref().unwrap();
    net.loss(20).unwrap();
    let mut acked = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut n = 0;
    while acked.len() < 3 && std::time::Instant::now() < deadline {
        n += 1;
        let title = format!("lossy {n}");
        if write_to(&cluster, n % 3, &title).await.is_ok() {
            acked.insert(title, String::new());
        }
    }
    assert!(
        acked.len() >= 3,
        "writes commit under 20% loss: {} of {n}",
        acked.len()
    );
    net.heal().unwrap();
    ring_of(&cluster, 0, 3).await;
    check(&cluster, &[0, 1, 2], &acked).await;
}

/// Kills a node (abort, as a crash) at each outbox crash point of blob
/// replication: after the entry and its fetch task are committed but before
/// the fetch, and after the fetched blob is committed but before the task is
/// marked done. After a restart the node holds the blob exactly once and
/// announces the song; the cluster converges.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_each_outbox_point_still_replicates_once() {
    for point in ["apply-before-fetch", "fetch-before-finish"] {
        let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
        ring_of(&cluster, 0, 3).await;
        // Node 2 takes no copy ahead of the song (node 1 makes the
        // majority), so it must fetch the blob through its outbox.
        cluster
            .start_node_with(
                2,
                &[
                    ("RONDO_FAILPOINT", point),
                    ("RONDO_REFUSE_REPLICATION", "1"),
                ],
            )
            .await
            .unwrap();
        ring_of(&cluster, 2, 3).await;
        let title = format!("crash {point}");
        write_to(&cluster, 0, &title).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while cluster.node_running(2) {
            assert!(
                std::time::Instant::now() < deadline,
                "node 2 never reached {point}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            cluster.nodes[2].disk().blob_files,
            usize::from(point == "fetch-before-finish")
        );
        cluster.restart_node(2).await.unwrap();
        ring_of(&cluster, 2, 3).await;
        let acked: BTreeMap<String, String> = [(title.clone(), String::new())].into();
        check(&cluster, &[0, 1, 2], &acked).await;
        // Node 2 holds the blob once and announces the song: 3 replicas.
        eventually("three replicas", Duration::from_secs(30), || async {
            let d = cluster
                .anon
                .query(
                    "query($q: String) { songs(search: $q) { nodes { replicas { id } } } }",
                    json!({ "q": title }),
                )
                .await
                .ok()?;
            let n = d.pointer("/songs/nodes/0/replicas")?.as_array()?.len();
            (n == 3).then_some(())
        })
        .await
        .unwrap();
        assert_eq!(
            cluster.nodes[2].disk().blob_files,
            1,
            "{point}: the blob once"
        );
        assert_eq!(
            cluster.nodes[2].disk().tmp_files,
            0,
            "{point}: no partial download left"
        );
    }
}

/// Kills a node at each crash point of a push, an outbox row carried out by
/// another node: the proposer after the song's entry and its push rows are
/// committed but before it sends them, and the receiver after it stored the
/// blob with the inbox row but before it answered. Node 2 takes no copy
/// ahead of the song and never fetches by itself (its repair delay is
/// longer than the test), so only the push can bring it the blob. After the
/// restart, the push is sent (again) and carried out once: node 2 holds the
/// blob once, the resent row is answered as a duplicate, and the
/// proposer's outbox empties.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_each_push_point_delivers_once() {
    for (crashing, point) in [(0, "push-before-send"), (2, "deliver-before-ack")] {
        let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
        ring_of(&cluster, 0, 3).await;
        cluster
            .set_node_option(2, "blob_repair_after_ms", 3_600_000)
            .unwrap();
        let refuse = ("RONDO_REFUSE_REPLICATION", "copies");
        let fail = ("RONDO_FAILPOINT", point);
        if crashing == 2 {
            cluster.start_node_with(2, &[refuse, fail]).await.unwrap();
        } else {
            cluster.start_node_with(2, &[refuse]).await.unwrap();
            cluster.start_node_with(crashing, &[fail]).await.unwrap();
        }
        ring_of(&cluster, 0, 3).await;
        ring_of(&cluster, 2, 3).await;
        let title = format!("push {point}");
        // The answer may be lost with the proposer (push-before-send).
        let _ = write_to(&cluster, 0, &title).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while cluster.node_running(crashing) {
            assert!(
                std::time::Instant::now() < deadline,
                "node {crashing} never reached {point}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            cluster.nodes[2].disk().blob_files,
            usize::from(point == "deliver-before-ack"),
            "{point}: node 2 holds the blob only if it took the push"
        );
        if crashing == 0 {
            cluster.start_node(0).await.unwrap();
        } else {
            cluster.start_node_with(2, &[refuse]).await.unwrap();
        }
        ring_of(&cluster, crashing, 3).await;
        // The song was committed before the crash: it is everywhere once.
        let acked: BTreeMap<String, String> = [(title.clone(), String::new())].into();
        check(&cluster, &[0, 1, 2], &acked).await;
        let song_hash = eventually("node 2 holds the blob", Duration::from_secs(60), || async {
            let d = cluster
                .anon
                .query(
                    "query($q: String) { songs(search: $q) { nodes { contentHash replicas { id } } } }",
                    json!({ "q": title }),
                )
                .await
                .ok()?;
            let n = d.pointer("/songs/nodes/0/replicas")?.as_array()?.len();
            let hash = d.pointer("/songs/nodes/0/contentHash")?.as_str()?.to_string();
            (n == 3 && holds_blob(&cluster, 2, &hash).await).then_some(hash)
        })
        .await
        .unwrap();
        eventually(
            "the proposer's outbox empties",
            Duration::from_secs(60),
            || async { (cluster.health(0).await.ok()?.outbox_len == 0).then_some(()) },
        )
        .await
        .unwrap();
        let health = cluster.health(2).await.unwrap();
        assert!(health.inbox_len >= 1, "{point}: the delivery is remembered");
        assert_eq!(
            health.inbox_duplicates,
            u64::from(point == "deliver-before-ack"),
            "{point}: the resent row is a no-op (once: a crash before the answer)"
        );
        assert_eq!(
            cluster.nodes[2].disk().blob_files,
            1,
            "{point}: the blob once"
        );
        assert_eq!(
            cluster.nodes[2].disk().tmp_files,
            0,
            "{point}: no partial copy"
        );
        assert!(holds_blob(&cluster, 1, &song_hash).await);
    }
}

/// The others keep three applied entries in their logs (`ring.keep_entries`);
/// a node that was down while they ordered many more (writes, and the
/// delete of a song it holds) finds those entries compacted away: it takes a
/// snapshot of a member's applied state, then the entries after it. It ends
/// with the same digest, announces the songs it then holds (three replicas
/// each), fetches the blobs it lacks and drops the deleted song's.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::builder()
        .nodes(3)
        .keep_entries(3)
        .start()
        .await
        .unwrap();
    ring_of(&cluster, 0, 3).await;
    let mut client = cluster.grpc(0).await.unwrap();
    let doomed = rondo_tests::upload_direct(&mut client, "doomed", "Fault Band")
        .await
        .unwrap();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    write_to(&cluster, 0, "kept").await.unwrap();
    acked.insert("kept".into(), String::new());
    check(&cluster, &[0, 1, 2], &acked).await;
    let behind = cluster.ring_status(2).await.unwrap().last_applied_seq;
    assert_eq!(cluster.nodes[2].disk().blob_files, 2);

    cluster.kill_node(2);
    ring_of(&cluster, 0, 2).await;
    for n in 0..12 {
        let title = format!("while down {n}");
        write_to(&cluster, 0, &title).await.unwrap();
        acked.insert(title, String::new());
    }
    client
        .delete_song(rondo_proto::storage::v1::DeleteSongRequest {
            id: doomed.id.clone(),
            session: cluster.operator_session(),
        })
        .await
        .unwrap();
    let compacted = cluster.ring_status(0).await.unwrap().compacted_seq;
    assert!(
        compacted > behind,
        "the others dropped entries node 2 lacks: compacted to {compacted}, node 2 at {behind}"
    );

    cluster.restart_node(2).await.unwrap();
    ring_of(&cluster, 2, 3).await;
    check(&cluster, &[0, 1, 2], &acked).await;
    let status = cluster.ring_status(2).await.unwrap();
    assert!(
        status.compacted_seq > behind,
        "node 2 took a snapshot: its log starts after {}",
        status.compacted_seq
    );
    let log = std::fs::read_to_string(cluster.nodes[2].dir.join("node.log")).unwrap();
    assert!(
        log.contains("snapshot installed"),
        "node 2 logs its snapshot"
    );
    // It holds every live song's blob, and no longer the deleted one's.
    eventually(
        "node 2 holds exactly the live blobs",
        Duration::from_secs(60),
        || async {
            let d = cluster.nodes[2].disk();
            (d.blob_files == acked.len() && d.tmp_files == 0).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(!holds_blob(&cluster, 2, &doomed.content_hash).await);
    // The gateway lists node 2 as a replica of every song, and not the
    // deleted one.
    eventually(
        "three replicas of every song",
        Duration::from_secs(30),
        || async {
            let d = cluster
            .anon
            .query(
                "{ songs(first: 100, search: \"fault band\") { nodes { title replicas { id } } } }",
                json!({}),
            )
            .await
            .ok()?;
            let songs = d.pointer("/songs/nodes")?.as_array()?;
            let full = songs
                .iter()
                .all(|s| s["replicas"].as_array().is_some_and(|r| r.len() == 3));
            let titles: BTreeSet<&str> = songs.iter().filter_map(|s| s["title"].as_str()).collect();
            (full && titles.len() == acked.len() && !titles.contains("doomed")).then_some(())
        },
    )
    .await
    .unwrap();
    // And it takes part in writes again.
    write_to(&cluster, 2, "after the snapshot").await.unwrap();
    acked.insert("after the snapshot".into(), String::new());
    check(&cluster, &[0, 1, 2], &acked).await;
}

/// An upload is acknowledged only once its bytes are durable on a majority
/// of the nodes. When no other node takes a copy, the upload is refused as
/// UNAVAILABLE and leaves nothing behind; when one does, it holds the bytes
/// the moment the answer comes, so killing the receiving node right after
/// the acknowledgement loses nothing: the third node gets the bytes from
/// the copy and every live node streams them.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_is_acknowledged_once_its_bytes_are_on_a_majority() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    ring_of(&cluster, 0, 3).await;
    for i in [1, 2] {
        cluster
            .start_node_with(i, &[("RONDO_REFUSE_REPLICATION", "1")])
            .await
            .unwrap();
    }
    cluster.wait_all_up().await.unwrap();
    ring_of(&cluster, 0, 3).await;
    let before = cluster.nodes[0].disk();
    let mut client = cluster.grpc(0).await.unwrap();
    let err = rondo_tests::upload_direct(&mut client, "no majority", "Fault Band")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("write quorum needs"),
        "the reason is named: {err:?}"
    );
    eventually(
        "the refused upload's blob is gone",
        Duration::from_secs(10),
        || async { (cluster.nodes[0].disk() == before).then_some(()) },
    )
    .await
    .unwrap();
    let d = cluster
        .anon
        .query(
            "{ songs(search: \"no majority\") { totalCount } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(d["songs"]["totalCount"], 0, "no song from a refused upload");

    // Node 1 takes copies again; node 2 still does not.
    cluster.start_node(1).await.unwrap();
    cluster.wait_all_up().await.unwrap();
    ring_of(&cluster, 0, 3).await;
    let song = rondo_tests::upload_direct(&mut client, "on a majority", "Fault Band")
        .await
        .unwrap();
    // At the acknowledgement: node 0 and node 1 hold the bytes.
    cluster.kill_node(0);
    assert!(
        holds_blob(&cluster, 1, &song.content_hash).await,
        "the copy was made before the acknowledgement"
    );
    // Node 2 fetches them from node 1 (node 0 is dead) and streams them.
    let id: rondo_core::SongId = song.id.parse().unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    for i in [1, 2] {
        let url = cluster.signed_url(i, id, exp);
        let body = eventually("the song streams", Duration::from_secs(30), || async {
            let r = cluster.http().get(&url).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.bytes().await.ok()
        })
        .await
        .unwrap();
        assert_eq!(
            rondo_core::ContentHash::of(&body).to_hex(),
            song.content_hash,
            "node {i} streams the acknowledged bytes"
        );
    }
    check(
        &cluster,
        &[1, 2],
        &[("on a majority".to_string(), String::new())].into(),
    )
    .await;
}

/// A node that crashes after taking a copy of an upload's bytes but before
/// saying so: the upload is not acknowledged (no other node would take a
/// copy), and the copy is gone once the node is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_a_copy_before_its_acknowledgement_leaves_nothing() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    ring_of(&cluster, 0, 3).await;
    cluster
        .start_node_with(1, &[("RONDO_REFUSE_REPLICATION", "1")])
        .await
        .unwrap();
    cluster
        .start_node_with(2, &[("RONDO_FAILPOINT", "replicate-before-ack")])
        .await
        .unwrap();
    cluster.wait_all_up().await.unwrap();
    ring_of(&cluster, 0, 3).await;
    let before: Vec<_> = cluster.nodes.iter().map(|n| n.disk()).collect();
    let err = write_to(&cluster, 0, "copied then crashed")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(!cluster.node_running(2), "node 2 died at the failpoint");
    assert_eq!(
        cluster.nodes[2].disk().blob_files,
        before[2].blob_files + 1,
        "node 2 crashed holding the copy"
    );
    cluster.restart_node(2).await.unwrap();
    ring_of(&cluster, 2, 3).await;
    eventually(
        "no copy, no upload left anywhere",
        Duration::from_secs(30),
        || async {
            let now: Vec<_> = cluster.nodes.iter().map(|n| n.disk()).collect();
            (now == before).then_some(())
        },
    )
    .await
    .unwrap();
    let d = cluster
        .anon
        .query(
            "{ songs(search: \"copied then crashed\") { totalCount } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(d["songs"]["totalCount"], 0);
}

/// One-way loss between two nodes (node 0's packets to node 1 are dropped;
/// over TCP that breaks both directions between them while both still
/// reach node 2): it must converge, never flap forever. The ring settles on
/// two members that can reach each other, stays the same ring for 5 s and
/// through writes, and is not pulled apart by the node left out; after the
/// link heals, one ring of three and one log.
#[tokio::test(flavor = "multi_thread")]
async fn one_way_loss_between_two_nodes_settles_on_a_stable_ring() {
    if !netns_or_skip() {
        return;
    }
    let cluster = Cluster::builder().nodes(3).netns().start().await.unwrap();
    let first = ring_of(&cluster, 0, 3).await;
    let net = cluster.net.as_ref().unwrap();
    net.block(0, 1).unwrap();
    let stable = eventually("a stable ring of two", Duration::from_secs(60), || async {
        let s = cluster.ring_status(2).await.ok()?;
        if s.phase != "operational" || s.members.len() != 2 {
            return None;
        }
        let id = (s.ring_counter, s.ring_rep.clone());
        // An observation window, not a synchronisation: nothing may change.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t = cluster.ring_status(2).await.ok()?;
        (t.phase == "operational" && (t.ring_counter, t.ring_rep.clone()) == id).then_some(t)
    })
    .await
    .unwrap();
    assert!(
        (stable.ring_counter, stable.ring_rep.clone()) > first,
        "a new ring"
    );
    let member = |i: usize| stable.members.contains(&cluster.nodes[i].id.to_string());
    assert!(member(2), "node 2 reaches both: {stable:?}");
    assert!(
        member(0) != member(1),
        "exactly one of the cut-off pair: {stable:?}"
    );
    let members: Vec<usize> = (0..3).filter(|&i| member(i)).collect();
    let mut acked = BTreeMap::new();
    for n in 0..4 {
        let title = format!("one way {n}");
        write_to(&cluster, members[n % 2], &title)
            .await
            .unwrap_or_else(|e| panic!("{title}: the stable ring takes writes: {e:?}"));
        acked.insert(title, String::new());
    }
    let after = cluster.ring_status(2).await.unwrap();
    assert_eq!(
        (after.ring_counter, after.ring_rep),
        (stable.ring_counter, stable.ring_rep.clone()),
        "still the same ring after the writes"
    );
    net.heal().unwrap();
    ring_of(&cluster, 0, 3).await;
    ring_of(&cluster, 1, 3).await;
    check(&cluster, &[0, 1, 2], &acked).await;
}
