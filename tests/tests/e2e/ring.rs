//! The control plane with real processes: three nodes form one ring over
//! gRPC, re-form it with a greater ring id when a member is killed, take the
//! member back when it restarts, and keep ring ids growing across a full
//! restart of the cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use rondo_tests::{Cluster, RingStatus, eventually};

/// Waits until the nodes `live` are operational in one ring whose members
/// are exactly those nodes, and returns that ring's id (counter, then the
/// representative's UUID, which orders like the UUID itself).
pub(crate) async fn one_ring(cluster: &Cluster, live: &[usize]) -> (u64, String) {
    let want: BTreeSet<String> = live
        .iter()
        .map(|&i| cluster.nodes[i].id.to_string())
        .collect();
    eventually(
        "one ring of the live nodes",
        Duration::from_secs(30),
        || async {
            let mut seen: Vec<RingStatus> = Vec::new();
            for &i in live {
                seen.push(cluster.ring_status(i).await.ok()?);
            }
            let first = seen.first()?.clone();
            let same = seen.iter().all(|s| {
                s.phase == "operational"
                    && s.ring_counter == first.ring_counter
                    && s.ring_rep == first.ring_rep
                    && s.members.iter().cloned().collect::<BTreeSet<_>>() == want
            });
            same.then_some((first.ring_counter, first.ring_rep))
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn three_nodes_form_a_ring_and_reform_it_after_a_kill() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let first = one_ring(&cluster, &[0, 1, 2]).await;

    cluster.kill_node(0);
    let second = one_ring(&cluster, &[1, 2]).await;
    assert!(second > first, "ring ids grow: {first:?} then {second:?}");

    cluster.restart_node(0).await.unwrap();
    let third = one_ring(&cluster, &[0, 1, 2]).await;
    assert!(third > second, "ring ids grow: {second:?} then {third:?}");

    // A full restart: ring ids are durable and keep growing.
    for i in 0..3 {
        cluster.kill_node(i);
    }
    for i in 0..3 {
        cluster.start_node(i).await.unwrap();
    }
    let fourth = one_ring(&cluster, &[0, 1, 2]).await;
    assert!(
        fourth > third,
        "ring ids grow across a full restart: {third:?} then {fourth:?}"
    );
}

#[tokio::test]
async fn a_lone_node_of_three_forms_no_ring() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let start = one_ring(&cluster, &[0, 1, 2]).await;
    cluster.kill_node(1);
    cluster.kill_node(2);
    // Node 0 keeps trying (its promised ring counter grows) but never
    // becomes operational without a majority of the voters.
    let operated = std::cell::Cell::new(None);
    eventually(
        "node 0 tries again and again",
        Duration::from_secs(30),
        || async {
            let s = cluster.ring_status(0).await.ok()?;
            if s.phase == "operational" && s.ring_counter > start.0 {
                operated.set(Some(s.clone()));
            }
            (s.ring_counter >= start.0 + 3).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(operated.take(), None, "a minority must not operate");
}

/// Waits until the nodes `live` report the same applied seq and catalog
/// digest, and returns them.
async fn converged(cluster: &Cluster, live: &[usize]) -> (u64, String) {
    eventually(
        "the live nodes applied the same log",
        Duration::from_secs(30),
        || async {
            let mut seen = BTreeSet::new();
            for &i in live {
                let s = cluster.ring_status(i).await.ok()?;
                seen.insert((s.last_applied_seq, s.catalog_digest));
            }
            (seen.len() == 1).then(|| seen.into_iter().next()).flatten()
        },
    )
    .await
    .unwrap()
}

/// Waits until the gateway lists `n` replicas for the song.
async fn replicas(cluster: &Cluster, song: &str, n: usize) {
    eventually("replicas", Duration::from_secs(30), || async {
        let data = cluster
            .anon
            .query(
                "query($id: ID!) { song(id: $id) { replicas { id } } }",
                serde_json::json!({ "id": song }),
            )
            .await
            .ok()?;
        let got = data.pointer("/song/replicas")?.as_array()?.len();
        (got == n).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn catalog_writes_are_ordered_replicated_and_need_a_quorum() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    one_ring(&cluster, &[0, 1, 2]).await;
    let dir = tempfile::tempdir().unwrap();

    // A write through any node reaches every node, with its bytes.
    let a = crate::wav(dir.path(), "a.wav", "Alpha", "Ring Band", "Circle", 1.0, 1);
    let song_a = crate::upload_ok(&cluster, &a, serde_json::json!({})).await;
    let id_a = song_a["id"].as_str().unwrap().to_string();
    replicas(&cluster, &id_a, 3).await;
    let (seq1, digest1) = converged(&cluster, &[0, 1, 2]).await;

    // The gateway shows the same ring, log position and digest.
    eventually("cluster view", Duration::from_secs(30), || async {
        let data = cluster
            .anon
            .query(
                "{ cluster { nodes { ringId lastAppliedSeq catalogDigest isVoter } \
                   ring { id members tokenHolder lastSeq rotationsPerSecond } } }",
                serde_json::json!({}),
            )
            .await
            .ok()?;
        let nodes = data.pointer("/cluster/nodes")?.as_array()?;
        let ring = data.pointer("/cluster/ring")?;
        let ok = nodes.len() == 3
            && nodes.iter().all(|n| {
                n["catalogDigest"] == digest1.as_str()
                    && n["lastAppliedSeq"] == serde_json::json!(seq1.to_string())
                    && n["isVoter"] == true
                    && n["ringId"] == ring["id"]
            })
            && ring["members"].as_array()?.len() == 3
            && ring["lastSeq"] == serde_json::json!(seq1.to_string())
            && ring["tokenHolder"].is_string()
            && ring["rotationsPerSecond"].as_f64()? > 0.0;
        ok.then_some(())
    })
    .await
    .unwrap();
    let (code, out, _) = crate::cli::rondo(&cluster, &cluster.token, &["ring"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ring     ") && out.matches("operational").count() == 3,
        "{out}"
    );

    // One node down: the other two are a majority and keep taking writes.
    cluster.kill_node(2);
    cluster.wait_up(&[0, 1]).await.unwrap();
    let b = crate::wav(dir.path(), "b.wav", "Beta", "Ring Band", "Circle", 1.0, 2);
    let song_b = crate::upload_ok(&cluster, &b, serde_json::json!({})).await;
    let (seq2, digest2) = converged(&cluster, &[0, 1]).await;
    assert!(seq2 > seq1 && digest2 != digest1);

    // It comes back, catches up on the log and fetches the bytes it lacks.
    cluster.restart_node(2).await.unwrap();
    converged(&cluster, &[0, 1, 2]).await;
    replicas(&cluster, song_b["id"].as_str().unwrap(), 3).await;

    // Two nodes down: the one left is a minority and refuses writes with
    // UNAVAILABLE and the reason, leaving the catalog as it was.
    let before = cluster.song_count().await.unwrap();
    cluster.kill_node(1);
    cluster.kill_node(2);
    cluster.wait_up(&[0]).await.unwrap();
    let c = crate::wav(dir.path(), "c.wav", "Gamma", "Ring Band", "Circle", 1.0, 3);
    let response = cluster
        .admin
        .upload_raw(&c, serde_json::json!({}), "{ id }")
        .await
        .unwrap();
    assert_eq!(crate::code(&response), "UNAVAILABLE", "{response}");
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("no quorum"),
        "the reason is named: {message}"
    );
    assert_eq!(cluster.song_count().await.unwrap(), before);
    let (code, out, _) = crate::cli::rondo(&cluster, &cluster.token, &["ring"]);
    assert_eq!(code, 4, "no ring operational: {out}");
    // Neither the gateway nor the node left is ready (a load balancer
    // would send writes elsewhere); both are live.
    for base in [
        cluster.admin.base.clone(),
        format!("https://127.0.0.1:{}", cluster.nodes[0].http.port()),
    ] {
        for (probe, want) in [("livez", 200), ("readyz", 503)] {
            let r = cluster
                .http()
                .get(format!("{base}/{probe}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), want, "{base}/{probe}");
        }
    }

    // Reads and streams still work on the minority.
    let url = cluster
        .anon
        .query(
            "query($id: ID!) { song(id: $id) { streamUrl } }",
            serde_json::json!({ "id": id_a }),
        )
        .await
        .unwrap()["song"]["streamUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = cluster
        .http()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), std::fs::read(&a).unwrap().as_slice());

    // Heal: the refused write never appears, the cluster converges, and a
    // delete through one node removes the song everywhere.
    cluster.start_node(1).await.unwrap();
    cluster.restart_node(2).await.unwrap();
    let (_, healed) = converged(&cluster, &[0, 1, 2]).await;
    assert_eq!(cluster.song_count().await.unwrap(), before);
    assert!(!healed.is_empty());
    let r = cluster
        .admin
        .query(
            "mutation($id: ID!) { deleteSong(id: $id) }",
            serde_json::json!({ "id": id_a }),
        )
        .await
        .unwrap();
    assert_eq!(r["deleteSong"], true);
    assert_eq!(cluster.song_count().await.unwrap(), before - 1);
    converged(&cluster, &[0, 1, 2]).await;
}
