//! The control plane with real processes: three nodes form one ring over
//! gRPC, re-form it with a greater ring id when a member is killed, take the
//! member back when it restarts, and keep ring ids growing across a full
//! restart of the cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use rondo_tests::{Cluster, RingStatus, eventually};

/// Waits until the nodes `live` are operational in one ring whose members
/// are exactly those nodes, and returns that ring's counter.
async fn one_ring(cluster: &Cluster, live: &[usize]) -> u64 {
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
            same.then_some(first.ring_counter)
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
    assert!(second > first, "ring ids grow: {first} then {second}");

    cluster.restart_node(0).await.unwrap();
    let third = one_ring(&cluster, &[0, 1, 2]).await;
    assert!(third > second, "ring ids grow: {second} then {third}");

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
        "ring ids grow across a full restart: {third} then {fourth}"
    );
}

#[tokio::test]
async fn a_lone_node_of_three_forms_no_ring() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    one_ring(&cluster, &[0, 1, 2]).await;
    cluster.kill_node(1);
    cluster.kill_node(2);
    // Node 0 keeps trying (its promised ring counter grows) but never
    // becomes operational without a majority of the voters.
    let start = cluster.ring_status(0).await.unwrap().ring_counter;
    let operated = std::cell::Cell::new(None);
    eventually(
        "node 0 tries again and again",
        Duration::from_secs(30),
        || async {
            let s = cluster.ring_status(0).await.ok()?;
            if s.phase == "operational" && s.ring_counter > start {
                operated.set(Some(s.clone()));
            }
            (s.ring_counter >= start + 3).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(operated.take(), None, "a minority must not operate");
}
