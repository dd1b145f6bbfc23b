//! The sharded data plane with real processes: each song's audio on the R
//! owners the ordered placement names, not on every node. The first
//! replication factor ends full replication without copying anything (the
//! other nodes give their copies up once the owners hold them); an upload
//! is acknowledged with W copies on its owners; a drained node hands its
//! partitions over and ends with nothing, never leaving a blob with fewer
//! live copies than R, and may then be removed.
//!
//! Holdings are read two ways: the blob files on each node's disk, and
//! each node's own index through `HasBlobs` (a live copy), asked as a
//! member of the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rondo_core::{ContentHash, NodeId, SongId};
use rondo_proto::storage::v1 as pb;
use rondo_tests::{Cluster, eventually};
use serde_json::json;

use crate::cli::rondo;
use crate::ring::one_ring;

/// Songs uploaded before the placement, and after it.
const BEFORE: usize = 48;
const AFTER: usize = 24;

/// The placement a node applied, read off the wire format: (bits,
/// replicas, write quorum, owners of each partition).
pub(crate) struct Placement {
    pub epoch: u64,
    pub bits: u8,
    pub write_quorum: usize,
    pub owners: Vec<BTreeSet<NodeId>>,
    /// Each partition's owners in table order (the order a node asks them).
    pub rows: Vec<Vec<NodeId>>,
}

impl Placement {
    pub fn owners_of(&self, hash: &str) -> &BTreeSet<NodeId> {
        let hash: ContentHash = hash.parse().unwrap();
        &self.owners[rondo_core::partitions::partition_of(&hash, self.bits)]
    }

    /// The owners of a blob in table order.
    pub fn row_of(&self, hash: &str) -> &[NodeId] {
        let hash: ContentHash = hash.parse().unwrap();
        &self.rows[rondo_core::partitions::partition_of(&hash, self.bits)]
    }
}

/// Node `i`'s applied placement, once it has one newer than `after`.
pub(crate) async fn placement(cluster: &Cluster, i: usize, after: u64) -> Placement {
    eventually("a new placement", Duration::from_secs(30), || async {
        let layout = cluster.ring_status(i).await.ok()?.layout?;
        let p = layout.placement?;
        (p.epoch > after).then_some(())?;
        let r = p.replicas as usize;
        let nodes: Vec<NodeId> = p.nodes.iter().map(|n| n.parse().unwrap()).collect();
        let index: Vec<usize> = p
            .table
            .chunks(2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .collect();
        assert_eq!(index.len(), (1 << p.bits) * r, "a full table");
        let rows: Vec<Vec<NodeId>> = index
            .chunks(r)
            .map(|row| row.iter().map(|&k| nodes[k]).collect())
            .collect();
        let owners = rows
            .iter()
            .map(|row| row.iter().copied().collect())
            .collect();
        Some(Placement {
            epoch: p.epoch,
            bits: u8::try_from(p.bits).unwrap(),
            write_quorum: p.write_quorum as usize,
            owners,
            rows,
        })
    })
    .await
    .unwrap()
}

/// Which nodes (of `nodes`) hold each of `hashes` in their index: a
/// `HasBlobs` call to each, as node `asker` (a member of the cluster).
pub(crate) async fn live_copies(
    cluster: &Cluster,
    asker: usize,
    nodes: &[usize],
    hashes: &[String],
) -> BTreeMap<String, BTreeSet<NodeId>> {
    let links = cluster.node_links(asker).unwrap();
    let mut out: BTreeMap<String, BTreeSet<NodeId>> = hashes
        .iter()
        .map(|h| (h.clone(), BTreeSet::new()))
        .collect();
    for &i in nodes {
        let mut client = cluster.grpc_as(&links, i).await.unwrap();
        let held = client
            .has_blobs(pb::HasBlobsRequest {
                content_hashes: hashes.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .held;
        assert_eq!(held.len(), hashes.len());
        for (h, held) in hashes.iter().zip(held) {
            if held {
                out.entry(h.clone())
                    .or_default()
                    .insert(cluster.nodes[i].id);
            }
        }
    }
    out
}

/// Which nodes (of `nodes`) have a file of each blob on disk.
pub(crate) fn files(cluster: &Cluster, nodes: &[usize]) -> BTreeMap<String, BTreeSet<NodeId>> {
    let mut out: BTreeMap<String, BTreeSet<NodeId>> = BTreeMap::new();
    for &i in nodes {
        for h in cluster.nodes[i].blob_files() {
            out.entry(h).or_default().insert(cluster.nodes[i].id);
        }
    }
    out
}

/// Waits until each of `songs`' blobs is on exactly its owners among
/// `nodes`, on disk and in the nodes' indexes, and the gateway lists
/// exactly those owners among `nodes` as the song's replicas.
pub(crate) async fn exactly_on_owners(
    cluster: &Cluster,
    nodes: &[usize],
    p: &Placement,
    songs: &BTreeMap<String, String>,
) {
    let hashes: Vec<String> = songs.values().cloned().collect();
    let ids: BTreeSet<NodeId> = nodes.iter().map(|&i| cluster.nodes[i].id).collect();
    let ids = &ids;
    eventually(
        "every blob on exactly its owners",
        Duration::from_secs(120),
        || async {
            let live = live_copies(cluster, nodes[0], nodes, &hashes).await;
            let disk = files(cluster, nodes);
            let empty = BTreeSet::new();
            hashes
                .iter()
                .all(|h| {
                    &live[h] == p.owners_of(h) && disk.get(h).unwrap_or(&empty) == p.owners_of(h)
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    eventually(
        "the gateway lists the owners as replicas",
        Duration::from_secs(30),
        || async {
            for (id, hash) in songs {
                let d = cluster
                    .admin
                    .query(
                        "query($id: ID!) { song(id: $id) { replicas { id } } }",
                        json!({ "id": id }),
                    )
                    .await
                    .ok()?;
                let listed: BTreeSet<NodeId> = d["song"]["replicas"]
                    .as_array()?
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().parse().unwrap())
                    .collect();
                // Nodes outside `nodes` (one that is down) may still be
                // listed: they announced the song and never gave it up.
                let listed: BTreeSet<NodeId> = listed.intersection(ids).copied().collect();
                if &listed != p.owners_of(hash) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
}

/// Every song streams byte-identical (its content hash) from each owner.
pub(crate) async fn streams_from_owners(
    cluster: &Cluster,
    p: &Placement,
    songs: &BTreeMap<String, String>,
) {
    let exp = rondo_process::unix_now() + 600;
    for (id, hash) in songs {
        let song: SongId = id.parse().unwrap();
        for owner in p.owners_of(hash) {
            let i = cluster.nodes.iter().position(|n| n.id == *owner).unwrap();
            let response = cluster
                .http()
                .get(cluster.signed_url(i, song, exp))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "song {id} from node {i}");
            let body = response.bytes().await.unwrap();
            assert_eq!(
                &ContentHash::of(&body).to_hex(),
                hash,
                "song {id} from node {i}"
            );
        }
    }
}

/// Four nodes in one ring, all up, whose resync workers pass every 200 ms
/// and keep a released file 300 ms.
async fn four_nodes() -> Cluster {
    let cluster = Cluster::builder()
        .nodes(4)
        .node_option("resync_interval_ms", 200)
        .node_option("release_linger_ms", 300)
        .start()
        .await
        .unwrap();
    one_ring(&cluster, &[0, 1, 2, 3]).await;
    cluster.wait_all_up().await.unwrap();
    cluster.wait_layout().await.unwrap();
    cluster
}

/// Uploads `n` songs straight to the nodes over gRPC, in turn; returns
/// song id → content hash, and checks at each acknowledgement that the
/// write quorum of the song's owners holds the bytes (`p`, once there is
/// a placement).
pub(crate) async fn upload(
    cluster: &Cluster,
    nodes: &[usize],
    n: usize,
    tag: &str,
    p: Option<&Placement>,
) -> BTreeMap<String, String> {
    let mut songs = BTreeMap::new();
    for k in 0..n {
        let i = nodes[k % nodes.len()];
        let mut client = cluster.grpc(i).await.unwrap();
        let song = rondo_tests::upload_direct(&mut client, &format!("{tag} {k}"), "Shards")
            .await
            .unwrap();
        if let Some(p) = p {
            let hash = vec![song.content_hash.clone()];
            let live = live_copies(cluster, nodes[0], nodes, &hash).await;
            let on_owners = live[&song.content_hash]
                .intersection(p.owners_of(&song.content_hash))
                .count();
            assert!(
                on_owners >= p.write_quorum,
                "acknowledged with {on_owners} copies on its owners, W = {}",
                p.write_quorum
            );
        }
        songs.insert(song.id, song.content_hash);
    }
    songs
}

#[tokio::test(flavor = "multi_thread")]
async fn songs_live_on_their_owners_and_a_drained_node_ends_with_none() {
    let mut cluster = four_nodes().await;
    let all = [0, 1, 2, 3];

    // Full replication: every node holds every blob.
    let mut songs = upload(&cluster, &all, BEFORE, "Full", None).await;
    let hashes: Vec<String> = songs.values().cloned().collect();
    eventually(
        "every node holds every blob",
        Duration::from_secs(60),
        || async {
            let live = live_copies(&cluster, 0, &all, &hashes).await;
            live.values().all(|n| n.len() == all.len()).then_some(())
        },
    )
    .await
    .unwrap();

    // R = 2 of 4: the ordering node computes the placement, and each blob
    // ends on exactly its two owners; nothing was copied to make it.
    // Node 0 is down when the factor is set: a copy whose owners include
    // it is kept by every other node (a down owner confirms nothing), and
    // each node says how many copies it still has to give up.
    cluster.kill_node(0);
    let live = [1, 2, 3];
    one_ring(&cluster, &live).await;
    cluster.wait_up(&live).await.unwrap();
    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "replication", "2"]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    let p = placement(&cluster, 1, 0).await;
    assert_eq!(p.write_quorum, 2);
    assert!(p.owners.iter().all(|o| o.len() == 2));
    let down = cluster.nodes[0].id;
    let kept: BTreeMap<String, String> = songs
        .iter()
        .filter(|(_, h)| p.owners_of(h).contains(&down))
        .map(|(s, h)| (s.clone(), h.clone()))
        .collect();
    let moved: BTreeMap<String, String> = songs
        .iter()
        .filter(|(s, _)| !kept.contains_key(*s))
        .map(|(s, h)| (s.clone(), h.clone()))
        .collect();
    assert!(!kept.is_empty() && !moved.is_empty());
    exactly_on_owners(&cluster, &live, &p, &moved).await;
    let kept_hashes: Vec<String> = kept.values().cloned().collect();
    let copies = live_copies(&cluster, 1, &live, &kept_hashes).await;
    assert!(
        copies.values().all(|n| n.len() == live.len()),
        "a copy whose owner is down was given up"
    );
    // What each live node still has to give up: the kept blobs it does
    // not own.
    let owed: BTreeMap<NodeId, usize> = live
        .iter()
        .map(|&i| {
            let id = cluster.nodes[i].id;
            let n = kept_hashes
                .iter()
                .filter(|h| !p.owners_of(h).contains(&id))
                .count();
            (id, n)
        })
        .collect();
    eventually(
        "each node reports the copies it keeps",
        Duration::from_secs(20),
        || async {
            let d = cluster
                .admin
                .query("{ cluster { nodes { id copiesToGiveUp } } }", json!({}))
                .await
                .ok()?;
            let seen: BTreeMap<NodeId, usize> = d["cluster"]["nodes"]
                .as_array()?
                .iter()
                .filter_map(|n| {
                    let id: NodeId = n["id"].as_str()?.parse().ok()?;
                    owed.contains_key(&id)
                        .then(|| (id, n["copiesToGiveUp"].as_u64().unwrap_or(0) as usize))
                })
                .collect();
            (seen == owed).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(owed.values().sum::<usize>() > 0);
    // Node 0 back: it confirms, and every blob ends on exactly its owners.
    cluster.restart_node(0).await.unwrap();
    cluster.wait_all_up().await.unwrap();
    exactly_on_owners(&cluster, &all, &p, &songs).await;
    streams_from_owners(&cluster, &p, &songs).await;
    let mut received = 0;
    for i in all {
        received += metric(&cluster, i, "rondo_node_resync_received_bytes_total").await;
    }
    assert_eq!(received, 0, "ending full replication copies nothing");
    let disk: usize = all
        .iter()
        .map(|&i| cluster.nodes[i].disk().blob_files)
        .sum();
    assert_eq!(disk, 2 * BEFORE, "two copies of each blob in all");
    // Every node says it has nothing left to move (rondo status too).
    eventually("no resync work left", Duration::from_secs(20), || async {
        let d = cluster
            .admin
            .query(
                "{ cluster { nodes { blobsToFetch copiesToGiveUp } } }",
                json!({}),
            )
            .await
            .ok()?;
        d["cluster"]["nodes"]
            .as_array()?
            .iter()
            .all(|n| n["blobsToFetch"] == 0 && n["copiesToGiveUp"] == 0)
            .then_some(())
    })
    .await
    .unwrap();
    let (_, out, _) = rondo(&cluster, &cluster.token, &["status"]);
    assert_eq!(
        out.matches("resync: 0 to fetch, 0 to give up").count(),
        4,
        "{out}"
    );

    // New songs, sent to every node in turn (owners or not), are
    // acknowledged with W copies on their owners and end on them alone.
    let new = upload(&cluster, &all, AFTER, "Placed", Some(&p)).await;
    exactly_on_owners(&cluster, &all, &p, &new).await;
    streams_from_owners(&cluster, &p, &new).await;
    songs.extend(new);

    // Drain node 3: its partitions go to the others. While it drains, no
    // blob ever has fewer than R live copies; it ends with nothing. The
    // new owners fetch at one byte a second at first, so the transition
    // is seen under way: the placement before stays in force, and the
    // drained node's removal is refused (CONFLICT) until it retires.
    let drained = cluster.nodes[3].id.to_string();
    for i in [0, 1, 2] {
        let id = cluster.nodes[i].id.to_string();
        let (status, out, err) = rondo(
            &cluster,
            &cluster.token,
            &["node", "rates", &id, "--resync", "1"],
        );
        assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    }
    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "drain", &drained]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    // (The gateway's view may lag the drain by a report: a removal
    // decided against the epoch before it loses as stale, and is asked
    // again.)
    let refusal = eventually(
        "the removal refused as not retired",
        Duration::from_secs(20),
        || async {
            let r = cluster
                .admin
                .raw(
                    "mutation($id: ID!) { removeNode(id: $id) { epoch } }",
                    json!({ "id": drained }),
                )
                .await
                .ok()?;
            assert_eq!(crate::code(&r), "CONFLICT", "{r}");
            r.to_string().contains("not retired").then_some(r)
        },
    )
    .await
    .unwrap();
    assert!(
        refusal
            .to_string()
            .contains(&cluster.nodes[0].id.to_string())
            || refusal
                .to_string()
                .contains(&cluster.nodes[1].id.to_string())
            || refusal
                .to_string()
                .contains(&cluster.nodes[2].id.to_string()),
        "the refusal names the owners it waits for: {refusal}"
    );
    eventually(
        "rondo layout show shows the transition",
        Duration::from_secs(20),
        || async {
            let (status, out, _) = rondo(&cluster, &cluster.token, &["layout", "show"]);
            (status == 0 && out.contains(&format!("placement(s) {} still in force", p.epoch)))
                .then_some(())
        },
    )
    .await
    .unwrap();
    for i in [0, 1, 2] {
        let id = cluster.nodes[i].id.to_string();
        let (status, out, err) = rondo(
            &cluster,
            &cluster.token,
            &["node", "rates", &id, "--resync", "0"],
        );
        assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    }
    let hashes: Vec<String> = songs.values().cloned().collect();
    let samples = std::sync::atomic::AtomicUsize::new(0);
    // The node giving copies up is asked first: a copy it gives up after
    // it answered is on every owner before, and the owners, asked after,
    // never give up what they own. So no move between two calls hides one.
    let giver_first = [3, 0, 1, 2];
    eventually("node 3 drained", Duration::from_secs(90), || async {
        let live = live_copies(&cluster, 0, &giver_first, &hashes).await;
        samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fewest = live.values().map(BTreeSet::len).min().unwrap_or(0);
        assert!(
            fewest >= 2,
            "a blob fell to {fewest} live copies during the drain"
        );
        let drained_id = cluster.nodes[3].id;
        (live.values().all(|n| !n.contains(&drained_id)) && cluster.nodes[3].disk().blob_files == 0)
            .then_some(())
    })
    .await
    .unwrap();
    assert!(
        samples.into_inner() > 1,
        "the drain was sampled while it ran"
    );
    let p2 = placement(&cluster, 0, p.epoch).await;
    assert!(p2.owners.iter().all(|o| !o.contains(&cluster.nodes[3].id)));
    let rest = [0, 1, 2];
    exactly_on_owners(&cluster, &rest, &p2, &songs).await;
    streams_from_owners(&cluster, &p2, &songs).await;
    // The placement before retired at one log position, the same on every
    // node.
    retired_at(&cluster, &all, p.epoch).await;

    // Retired, the drained node may go even while it is down: the others
    // hold all it owned. `rondo node remove` needs no `--force`.
    cluster.kill_node(3);
    eventually("node 3 seen down", Duration::from_secs(20), || async {
        let d = cluster
            .admin
            .query("{ cluster { nodes { id state } } }", json!({}))
            .await
            .ok()?;
        d["cluster"]["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["id"].as_str() == Some(drained.as_str()) && n["state"] == "DOWN")
            .then_some(())
    })
    .await
    .unwrap();
    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "remove", &drained]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    one_ring(&cluster, &rest).await;
    eventually(
        "one catalog digest on the three",
        Duration::from_secs(30),
        || async {
            let mut seen = BTreeSet::new();
            for &i in &rest {
                let s = cluster.ring_status(i).await.ok()?;
                seen.insert((s.last_applied_seq, s.catalog_digest));
            }
            (seen.len() == 1).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Streams `songs` in turn through URLs the gateway signs, while `on`
/// holds: each must come back whole (its content hash), at the first try
/// or with one fresh URL. The streams made, and the songs that failed
/// twice.
pub(crate) async fn listen(
    cluster: &Cluster,
    songs: &BTreeMap<String, String>,
    on: &std::sync::atomic::AtomicBool,
) -> (usize, Vec<String>) {
    let once = |id: String, hash: String| async move {
        let d = cluster
            .admin
            .query(
                "query($id: ID!) { song(id: $id) { streamUrl } }",
                json!({ "id": id }),
            )
            .await
            .ok()?;
        let url = d["song"]["streamUrl"].as_str()?.to_string();
        let response = cluster.http().get(url).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let body = response.bytes().await.ok()?;
        (ContentHash::of(&body).to_hex() == hash).then_some(())
    };
    let (mut streamed, mut failed) = (0, Vec::new());
    for (id, hash) in songs.iter().cycle() {
        if !on.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if once(id.clone(), hash.clone()).await.is_none()
            && once(id.clone(), hash.clone()).await.is_none()
        {
            failed.push(id.clone());
        }
        streamed += 1;
    }
    (streamed, failed)
}

/// The log seq at which placement `epoch` retired, once every node of
/// `nodes` reports its retirement: the same on each.
pub(crate) async fn retired_at(cluster: &Cluster, nodes: &[usize], epoch: u64) -> u64 {
    eventually(
        "the placement retires on every node",
        Duration::from_secs(60),
        || async {
            let mut seen = BTreeSet::new();
            for &i in nodes {
                let layout = cluster.ring_status(i).await.ok()?.layout?;
                let r = layout
                    .retirements
                    .iter()
                    .find(|r| r.epochs.contains(&epoch))?;
                seen.insert(r.seq);
            }
            assert_eq!(seen.len(), 1, "placement {epoch} retired at {seen:?}");
            seen.pop_first()
        },
    )
    .await
    .unwrap()
}

/// A counter of node `i`'s `/metrics` by its full name and labels; 0 if
/// the node has not exported it yet (a labelled series appears once).
pub(crate) async fn counter(cluster: &Cluster, i: usize, series: &str) -> u64 {
    let url = format!("https://{}/metrics", cluster.nodes[i].http);
    let Ok(response) = cluster
        .http()
        .get(url)
        .bearer_auth(&cluster.token)
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A counter from node `i`'s `/metrics` (it must be there).
pub(crate) async fn metric(cluster: &Cluster, i: usize, name: &str) -> u64 {
    let url = format!("https://{}/metrics", cluster.nodes[i].http);
    let response = cluster
        .http()
        .get(url)
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("node {i} exports no {name}"))
}

/// A fifth node joins four with R = 3 and takes its share: only it
/// receives bytes (the old nodes only give), what it receives is near the
/// optimum R·D·c_new/Σc, and afterwards every blob is on exactly its
/// owners and streams from each.
#[tokio::test(flavor = "multi_thread")]
async fn a_joiner_takes_its_share_and_the_old_nodes_only_give() {
    const SONGS: usize = 400;
    let mut cluster = four_nodes().await;
    let old = [0, 1, 2, 3];
    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "replication", "3"]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    let p = placement(&cluster, 0, 0).await;
    let songs = upload(&cluster, &old, SONGS, "Share", Some(&p)).await;
    exactly_on_owners(&cluster, &old, &p, &songs).await;
    let distinct: u64 = {
        let disk = files(&cluster, &old);
        assert_eq!(disk.len(), SONGS);
        let sizes: BTreeMap<String, u64> = old
            .iter()
            .flat_map(|&i| {
                let dir = cluster.nodes[i].dir.join("blobs");
                cluster.nodes[i].blob_files().into_iter().map(move |h| {
                    let len = std::fs::metadata(dir.join(&h[..2]).join(&h)).unwrap().len();
                    (h, len)
                })
            })
            .collect();
        sizes.values().sum()
    };
    let mut before = Vec::new();
    for i in old {
        before.push(metric(&cluster, i, "rondo_node_resync_received_bytes_total").await);
    }

    // The joiner, added with a capacity equal to the others': the ordering
    // node computes its share, and the resync workers move it.
    let d = cluster.spawn_joiner().await.unwrap();
    let address = format!("https://{}", cluster.nodes[d].grpc);
    eventually(
        "the joiner waits to be added",
        Duration::from_secs(20),
        || async { (cluster.ring_status(d).await.ok()?.phase == "joining").then_some(()) },
    )
    .await
    .unwrap();
    // Listeners stream all through the join, each song by a URL the
    // gateway signs then; one retry with a fresh URL is allowed.
    let all = [0, 1, 2, 3, 4];
    let joining = std::sync::atomic::AtomicBool::new(true);
    let join = async {
        let (status, out, err) = rondo(
            &cluster,
            &cluster.token,
            &["node", "add", &address, "--capacity", "1TiB"],
        );
        assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
        one_ring(&cluster, &all).await;
        let p2 = placement(&cluster, 0, p.epoch).await;
        exactly_on_owners(&cluster, &all, &p2, &songs).await;
        // The old nodes only gave partitions away; once the joiner (and
        // the old owners of the partitions it took) synced, the placement
        // before retired, at one log position.
        retired_at(&cluster, &all, p.epoch).await;
        joining.store(false, std::sync::atomic::Ordering::SeqCst);
        p2
    };
    let (p2, (streamed, failed)) = tokio::join!(join, listen(&cluster, &songs, &joining));
    assert!(
        failed.is_empty(),
        "streams failed during the join: {failed:?}"
    );
    assert!(streamed >= 20, "only {streamed} streams during the join");
    println!("join: {streamed} streams during the join, none failed");
    let joiner = cluster.nodes[d].id;
    let share = p2.owners.iter().filter(|o| o.contains(&joiner)).count();
    assert!(share > 0, "the joiner owns partitions");
    streams_from_owners(&cluster, &p2, &songs).await;

    // Old nodes received nothing; the joiner about its optimal share.
    for (k, i) in old.into_iter().enumerate() {
        let now = metric(&cluster, i, "rondo_node_resync_received_bytes_total").await;
        assert_eq!(
            now, before[k],
            "old node {i} received bytes during the join"
        );
    }
    let received = metric(&cluster, d, "rondo_node_resync_received_bytes_total").await;
    let optimum = 3.0 * distinct as f64 / 5.0;
    let ratio = received as f64 / optimum;
    println!("join: received {received} bytes, optimum {optimum:.0}, ratio {ratio:.3}");
    assert!(ratio <= 1.15, "moved {ratio:.3} x the optimum");
    assert!(
        ratio >= 0.85,
        "the joiner holds its share: {ratio:.3} x the optimum"
    );
    let held = cluster.nodes[d].disk().blob_bytes;
    assert_eq!(held, received, "what it holds is what it received");

    // `rondo node remove` of a node that owns partitions drains it, waits
    // until it holds nothing, then removes it; its audio stays on R owners.
    let (status, out, err) = rondo(
        &cluster,
        &cluster.token,
        &["node", "remove", &joiner.to_string()],
    );
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("draining"), "{err}");
    assert_eq!(
        cluster.nodes[d].disk().blob_files,
        0,
        "the removed node holds nothing"
    );
    let p3 = placement(&cluster, 0, p2.epoch).await;
    assert!(
        p3.owners
            .iter()
            .all(|o| !o.contains(&joiner) && o.len() == 3)
    );
    exactly_on_owners(&cluster, &old, &p3, &songs).await;
}
