//! Layout changes with real processes (PROTOCOL.md, "Layout changes"): a
//! node started with seeds is added at runtime, catches up on the log and
//! the audio, votes, and serves streams; a removed node leaves the ring and
//! the others take writes without it; changes decided against a stale epoch
//! fail with CONFLICT and change nothing; bad requests change nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use rondo_tests::{Cluster, eventually};
use serde_json::{Value, json};

use crate::cli::rondo;
use crate::ring::one_ring;
use crate::{code, upload_ok, wav};

const LAYOUT: &str = "{ epoch replicationFactor nodes { id address isVoter } }";

/// The layout the gateway reports, once it reports one at `epoch` (its
/// view follows the nodes' health reports, every 2 s).
async fn layout(cluster: &Cluster, epoch: u64) -> Value {
    eventually(
        &format!("the gateway reports layout epoch {epoch}"),
        Duration::from_secs(20),
        || async {
            let d = cluster
                .admin
                .query(&format!("{{ cluster {{ layout {LAYOUT} }} }}"), json!({}))
                .await
                .ok()?;
            let l = d["cluster"]["layout"].clone();
            (l["epoch"] == epoch).then_some(l)
        },
    )
    .await
    .unwrap()
}

/// Waits until every node in `nodes` reports the same applied seq and
/// digest, and returns the digest.
pub(crate) async fn same_digest(cluster: &Cluster, nodes: &[usize]) -> String {
    eventually("one catalog digest", Duration::from_secs(60), || async {
        let mut seen = BTreeSet::new();
        for &i in nodes {
            let s = cluster.ring_status(i).await.ok()?;
            seen.insert((s.last_applied_seq, s.catalog_digest));
        }
        (seen.len() == 1)
            .then(|| seen.into_iter().next().map(|(_, d)| d))
            .flatten()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_added_node_catches_up_votes_and_serves_streams() {
    // Pages of two log entries: the new node catches up in several.
    let mut cluster = Cluster::builder()
        .nodes(3)
        .fetch_entries(2)
        .start()
        .await
        .unwrap();
    one_ring(&cluster, &[0, 1, 2]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut songs = Vec::new();
    for k in 0..3 {
        let path = wav(
            tmp.path(),
            &format!("{k}.wav"),
            &format!("Before {k}"),
            "Joiners",
            "Early",
            0.5,
            k,
        );
        songs.push((path.clone(), upload_ok(&cluster, &path, json!({})).await));
    }
    let before = layout(&cluster, 0).await;
    assert_eq!(before["nodes"].as_array().unwrap().len(), 3);

    let d = cluster.spawn_joiner().await.unwrap();
    let joiner = cluster.nodes[d].id.to_string();
    let address = format!("https://{}", cluster.nodes[d].grpc);
    eventually(
        "the new node waits to be added",
        Duration::from_secs(20),
        || async { (cluster.ring_status(d).await.ok()?.phase == "joining").then_some(()) },
    )
    .await
    .unwrap();

    // Refusals change nothing.
    let add = "mutation($a: String!, $e: Int) { addNode(address: $a, expectEpoch: $e) { epoch } }";
    let r = cluster.anon.raw(add, json!({"a": address})).await.unwrap();
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    let r = cluster
        .admin
        .raw(add, json!({"a": "http://127.0.0.1:1"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "UNAVAILABLE", "{r}");
    let member = format!("https://{}", cluster.nodes[1].grpc);
    let r = cluster.admin.raw(add, json!({"a": member})).await.unwrap();
    assert_eq!(
        code(&r),
        "BAD_USER_INPUT",
        "a member of a cluster is not added: {r}"
    );
    let r = cluster
        .admin
        .raw(add, json!({"a": "not a url"}))
        .await
        .unwrap();
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    let r = cluster
        .admin
        .raw(add, json!({"a": address, "e": 7}))
        .await
        .unwrap();
    assert_eq!(code(&r), "CONFLICT", "a stale epoch: {r}");
    assert!(
        r.pointer("/errors/0/message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .contains("ordered first"),
        "{r}"
    );
    assert_eq!(layout(&cluster, 0).await, before, "nothing changed");

    let r = cluster
        .admin
        .raw(add, json!({"a": address, "e": 0}))
        .await
        .unwrap();
    assert!(r.get("errors").is_none(), "{r}");
    let after = &r["data"]["addNode"];
    assert_eq!(after["epoch"], 1);

    // It joins the ring, applies the whole log, and fetches every blob.
    one_ring(&cluster, &[0, 1, 2, 3]).await;
    same_digest(&cluster, &[0, 1, 2, 3]).await;
    let now = layout(&cluster, 1).await;
    let voters: Vec<&str> = now["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["isVoter"] == true)
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(voters.len(), 4);
    assert!(voters.contains(&joiner.as_str()));
    eventually(
        "the new node holds every blob",
        Duration::from_secs(30),
        || async { (cluster.nodes[d].disk().blob_files == 3).then_some(()) },
    )
    .await
    .unwrap();
    for (path, song) in &songs {
        let id = song["id"].as_str().unwrap().parse().unwrap();
        let url = cluster.signed_url(d, id, u64::MAX / 2);
        let body = cluster
            .http()
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(path).unwrap(),
            "streams byte-identical"
        );
    }
    // The gateway found it in the layout.
    eventually(
        "the gateway lists the new node up",
        Duration::from_secs(20),
        || async {
            let d = cluster
                .anon
                .query("{ cluster { nodes { id state } } }", json!({}))
                .await
                .ok()?;
            d["cluster"]["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["id"].as_str() == Some(joiner.as_str()) && n["state"] == "UP")
                .then_some(())
        },
    )
    .await
    .unwrap();

    // Two operators race at epoch 1: the first ordered wins, the other
    // gets CONFLICT, and every node ends with the same layout.
    let rf = "mutation($f: Int!, $e: Int) { setReplicationFactor(factor: $f, expectEpoch: $e) { epoch replicationFactor } }";
    let (a, b) = tokio::join!(
        cluster.admin.raw(rf, json!({"f": 3, "e": 1})),
        cluster.admin.raw(rf, json!({"f": 4, "e": 1})),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let outcomes: BTreeSet<&str> = [&a, &b]
        .iter()
        .map(|r| {
            if r.get("errors").is_none() {
                "ok"
            } else {
                code(r)
            }
        })
        .collect();
    assert_eq!(outcomes, BTreeSet::from(["CONFLICT", "ok"]), "{a} {b}");
    let winner = if a.get("errors").is_none() { 3 } else { 4 };
    let digest = same_digest(&cluster, &[0, 1, 2, 3]).await;
    assert!(!digest.is_empty());
    assert_eq!(layout(&cluster, 2).await["replicationFactor"], winner);

    // It votes: with node 0 dead, nodes 1, 2 and the new one are 3 of the
    // 4 voters and take writes (with 3 or 4 owners per partition, the
    // write quorum of 2 or 3 owners is still up).
    cluster.kill_node(0);
    one_ring(&cluster, &[1, 2, 3]).await;
    cluster.wait_up(&[1, 2, 3]).await.unwrap();
    let path = wav(tmp.path(), "after.wav", "After", "Joiners", "Late", 0.5, 9);
    let song = upload_ok(&cluster, &path, json!({})).await;
    assert_eq!(song["title"], "After");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_node_leaves_the_ring_and_the_others_go_on() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    one_ring(&cluster, &[0, 1, 2]).await;
    let gone = cluster.nodes[2].id.to_string();

    // The CLI: a stale epoch fails with exit code 3 and changes nothing.
    let (status, out, err) = rondo(
        &cluster,
        &cluster.token,
        &["node", "remove", &gone, "--expect-epoch", "4"],
    );
    assert_eq!(status, 3, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("CONFLICT"), "{err}");
    let (status, _, err) = rondo(&cluster, "wrong-token", &["node", "remove", &gone]);
    assert_eq!(status, 1, "{err}");
    assert_eq!(
        layout(&cluster, 0).await["nodes"].as_array().unwrap().len(),
        3
    );

    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "remove", &gone]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("epoch 1"), "{out}");
    assert!(
        !out.contains(&gone),
        "the node is gone from the layout: {out}"
    );

    one_ring(&cluster, &[0, 1]).await;
    eventually(
        "the removed node retires",
        Duration::from_secs(20),
        || async { (cluster.ring_status(2).await.ok()?.phase == "removed").then_some(()) },
    )
    .await
    .unwrap();
    eventually(
        "the gateway shows the node removed",
        Duration::from_secs(20),
        || async {
            let d = cluster
                .anon
                .query("{ cluster { nodes { id state } } }", json!({}))
                .await
                .ok()?;
            d["cluster"]["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["id"].as_str() == Some(gone.as_str()) && n["state"] == "REMOVED")
                .then_some(())
        },
    )
    .await
    .unwrap();

    // The removed node's certificate is still signed by the cluster CA, but
    // the layout no longer names it: the members refuse it their state and
    // their blobs.
    let as_removed = cluster.node_links(2).unwrap();
    for i in [0, 1] {
        let endpoint = rondo_proto::channel::endpoint(
            &format!("https://{}", cluster.nodes[i].grpc),
            rondo_proto::channel::Link::Ring,
        )
        .unwrap();
        let channel = as_removed
            .connect(
                endpoint,
                rondo_proto::mtls::Expect::Node(cluster.nodes[i].id),
            )
            .await
            .unwrap();
        let err = rondo_proto::ring::v1::ring_client::RingClient::new(channel)
            .read_snapshot(rondo_proto::ring::v1::ReadSnapshotRequest { at_seq: 0 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains("not in this node's layout"),
            "{err:?}"
        );
    }

    // The two are the whole quorum now: they take writes, and stream URLs
    // never point at the removed node.
    cluster.kill_node(2);
    cluster.wait_up(&[0, 1]).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = wav(tmp.path(), "x.wav", "Without", "Leavers", "Two", 0.5, 3);
    let song = upload_ok(&cluster, &path, json!({})).await;
    let removed_http = cluster.nodes[2].http.to_string();
    assert!(
        !song["streamUrl"].as_str().unwrap().contains(&removed_http),
        "{song}"
    );
    let (status, out, err) = rondo(&cluster, &cluster.token, &["ring"]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("layout   epoch 1"), "{out}");

    // Layout commands back to back, as a script runs them, each deciding
    // against the gateway's view: the next one sees the layout the last
    // one made (it used to get CONFLICT from a view a health round old).
    for (factor, epoch) in [("1", "epoch 2"), ("2", "epoch 3"), ("1", "epoch 4")] {
        let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "replication", factor]);
        assert_eq!(
            status, 0,
            "replication {factor}: stdout: {out}\nstderr: {err}"
        );
        assert!(out.contains(epoch), "{out}");
    }
    // The same factor again orders nothing (a deployment's setup step runs
    // it at every start): the placement below is still epoch 4's.
    let (status, out, err) = rondo(&cluster, &cluster.token, &["node", "replication", "1"]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("is 1 already"), "{out}");
    // The first factor made a placement (the ordering node computed it):
    // 1024 partitions, one owner each, half on each node.
    let (status, out, err) = rondo(&cluster, &cluster.token, &["ring"]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("placement epoch 4, 1024 partitions x 1 replicas, write quorum 1"),
        "{out}"
    );
    assert_eq!(
        out.matches("zone default  capacity 1.00 TiB  512 partitions")
            .count(),
        2,
        "{out}"
    );
    let l = cluster
        .admin
        .query(
            "{ cluster { layout { nodes { id zone capacityBytes standing partitions } placement { epoch replicas } } } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        l["cluster"]["layout"]["placement"],
        json!({"epoch": 4, "replicas": 1}),
        "{l}"
    );
    for n in l["cluster"]["layout"]["nodes"].as_array().unwrap() {
        assert_eq!(
            (
                &n["zone"],
                &n["capacityBytes"],
                &n["standing"],
                &n["partitions"]
            ),
            (
                &json!("default"),
                &json!((1u64 << 40).to_string()),
                &json!("IN"),
                &json!(512)
            ),
            "{l}"
        );
    }

    // An owner is not removed (CONFLICT, exit code 3): it is drained first.
    let (keep, drained) = (
        cluster.nodes[0].id.to_string(),
        cluster.nodes[1].id.to_string(),
    );
    // (`--force` skips the drain `rondo node remove` does first; the
    // ordering node refuses all the same.)
    let (status, out, err) = rondo(
        &cluster,
        &cluster.token,
        &["node", "remove", "--force", &drained],
    );
    assert_eq!(status, 3, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("still owns partitions"), "{err}");

    // The plan says what a drain moves, before anything is ordered ...
    let (status, out, err) = rondo(
        &cluster,
        &cluster.token,
        &["layout", "plan", "--drain", &drained],
    );
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("against epoch 4"), "{out}");
    assert!(
        out.contains(&format!("move     {drained}  partitions 512 -> 0  +0 -512")),
        "{out}"
    );
    assert!(
        out.contains(&format!("move     {keep}  partitions 512 -> 1024  +512 -0")),
        "{out}"
    );
    let (status, out, _) = rondo(&cluster, &cluster.token, &["layout", "show"]);
    assert!(status == 0 && out.contains("layout   epoch 4"), "{out}");
    // ... and applying it against that epoch orders exactly that table.
    let (status, out, err) = rondo(
        &cluster,
        &cluster.token,
        &[
            "layout",
            "apply",
            "--drain",
            &drained,
            "--expect-epoch",
            "4",
        ],
    );
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("capacity 0 B  0 partitions"), "{out}");
    assert!(out.contains("capacity 1.00 TiB  1024 partitions"), "{out}");

    // Two plans applied at once against one epoch: exactly one wins, the
    // other exits 3 and changes nothing.
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| {
            rondo(
                &cluster,
                &cluster.token,
                &[
                    "layout",
                    "apply",
                    "--storage",
                    &format!("{drained},zone=b,capacity=2TiB"),
                    "--expect-epoch",
                    "5",
                ],
            )
        });
        let two = s.spawn(|| {
            rondo(
                &cluster,
                &cluster.token,
                &[
                    "layout",
                    "apply",
                    "--storage",
                    &format!("{keep},zone=a"),
                    "--expect-epoch",
                    "5",
                ],
            )
        });
        (one.join().unwrap(), two.join().unwrap())
    });
    let mut codes = [a.0, b.0];
    codes.sort_unstable();
    assert_eq!(codes, [0, 3], "{a:?} {b:?}");
    assert_eq!(layout(&cluster, 6).await["epoch"], 6);
}

/// A node started with seeds and `auto_join` is added by the cluster
/// itself (issue 16): no `rondo node add`. It joins without a vote, then
/// gets the zone and capacity it asked for (ordered once it is in the
/// ring: under a placement, a new table), catches up, and holds a share of
/// the songs uploaded after. Only a node may ask, for itself.
///
/// The capacity is three times the others', so the joiner takes a replica
/// of every partition: the assignment that takes longest (seconds in a
/// debug build). It once ran on the driver's thread, which then held the
/// token too long, was dropped from its ring, and the change never
/// committed; it is planned on the blocking pool now.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_auto_join_is_added_by_the_cluster_and_takes_a_share() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    one_ring(&cluster, &[0, 1, 2]).await;
    cluster.wait_layout().await.unwrap();
    let (code, out, err) = rondo(&cluster, &cluster.token, &["node", "replication", "2"]);
    assert_eq!(code, 0, "{out}{err}");

    // A gateway's certificate (the tester's) may not ask to join.
    let mut as_gateway = cluster.grpc(0).await.unwrap();
    let refused = as_gateway
        .join(rondo_proto::storage::v1::JoinRequest {
            grpc_url: format!("https://{}", cluster.nodes[1].grpc),
            zone: String::new(),
            capacity: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // A node must answer, as itself, at the URL it gives: node 1 naming
    // node 2's address is refused (the seed's probe finds another node).
    let as_node1 = cluster.node_links(1).unwrap();
    let mut node1 = cluster.grpc_as(&as_node1, 0).await.unwrap();
    let refused = node1
        .join(rondo_proto::storage::v1::JoinRequest {
            grpc_url: format!("https://{}", cluster.nodes[2].grpc),
            zone: String::new(),
            capacity: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("does not answer as itself"),
        "{refused:?}"
    );
    // An absurd capacity is refused before anything is ordered.
    let refused = node1
        .join(rondo_proto::storage::v1::JoinRequest {
            grpc_url: format!("https://{}", cluster.nodes[1].grpc),
            zone: String::new(),
            capacity: u64::MAX,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let capacity: u64 = 3 << 40;
    let mut ring = toml::Table::new();
    ring.insert("auto_join".into(), true.into());
    ring.insert("capacity".into(), i64::try_from(capacity).unwrap().into());
    let d = cluster.spawn_joiner_with(ring).await.unwrap();
    let joiner = cluster.nodes[d].id.to_string();
    let node = eventually(
        "the cluster adds the joiner with its capacity and a share",
        Duration::from_secs(60),
        || async {
            let data = cluster
                .admin
                .query(
                    "{ cluster { layout { nodes { id isVoter zone capacityBytes partitions } } } }",
                    json!({}),
                )
                .await
                .ok()?;
            let nodes = data.pointer("/cluster/layout/nodes")?.as_array()?.clone();
            let n = nodes.into_iter().find(|n| n["id"] == joiner.as_str())?;
            (n["capacityBytes"] == json!(capacity.to_string()) && n["partitions"].as_u64()? > 0)
                .then_some(n)
        },
    )
    .await
    .unwrap();
    assert_eq!(node["isVoter"], false, "votes are the operator's: {node}");
    assert_eq!(node["zone"], "default", "{node}");
    // Node 1 is a member that has held a share (it synced a placement):
    // asking to join again cannot change its storage (a drain must stay a
    // drain).
    let member = cluster.nodes[1].id.to_string();
    eventually("node 1 synced", Duration::from_secs(30), || async {
        let data = cluster
            .admin
            .query(
                "{ cluster { layout { nodes { id syncedEpoch } } } }",
                json!({}),
            )
            .await
            .ok()?;
        data.pointer("/cluster/layout/nodes")?
            .as_array()?
            .iter()
            .find(|n| n["id"] == member.as_str())
            .and_then(|n| n["syncedEpoch"].as_u64())
    })
    .await
    .unwrap();
    let refused = node1
        .join(rondo_proto::storage::v1::JoinRequest {
            grpc_url: format!("https://{}", cluster.nodes[1].grpc),
            zone: String::new(),
            capacity: 5 << 40,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    eventually(
        "the joiner is in the ring",
        Duration::from_secs(60),
        || async { (cluster.ring_status(d).await.ok()?.phase == "operational").then_some(()) },
    )
    .await
    .unwrap();
    same_digest(&cluster, &[0, 1, 2, d]).await;

    // It owns a replica of every partition: every new song lands on it.
    let tmp = tempfile::tempdir().unwrap();
    for k in 0..3 {
        let path = wav(
            tmp.path(),
            &format!("{k}.wav"),
            &format!("After {k}"),
            "Joiners",
            "Late",
            0.3,
            k,
        );
        upload_ok(&cluster, &path, json!({})).await;
    }
    eventually(
        "the joiner holds the new songs",
        Duration::from_secs(60),
        || async {
            let h = cluster.health(d).await.ok()?;
            (h.blob_count >= 3).then_some(())
        },
    )
    .await
    .unwrap();
}
