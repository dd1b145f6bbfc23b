//! Down is not out, with real processes: a node that owns partitions and
//! stays away from the quorate ring past the down-out interval is marked
//! out by the cluster itself, its partitions get new owners and every
//! song is back at R on the survivors; once it is back for the mark-in
//! time it is marked in and the surplus copies go. The guards hold: at
//! most one automatic out at a time (a 3|2 split in network namespaces),
//! and none that would leave fewer than R nodes in (R = 3 on 3 nodes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rondo_core::NodeId;
use rondo_tests::{Cluster, eventually};

use crate::cli::rondo;
use crate::data::{
    Placement, counter, exactly_on_owners, metric, placement, streams_from_owners, upload,
};
use crate::faults::netns_or_skip;
use crate::membership::same_digest;
use crate::ring::one_ring;

/// The down-out interval and mark-in time the clusters here run with.
const DOWN_OUT_MS: i64 = 4000;
const MARK_IN_MS: i64 = 2000;

fn builder(n: usize) -> rondo_tests::Builder {
    Cluster::builder()
        .nodes(n)
        .node_option("resync_interval_ms", 200)
        .node_option("release_linger_ms", 300)
        .node_option("down_out_interval_ms", DOWN_OUT_MS)
        .node_option("mark_in_after_ms", MARK_IN_MS)
}

/// Node `i`'s applied standings: node id → (out, automatic).
async fn standings(cluster: &Cluster, i: usize) -> Option<BTreeMap<NodeId, (bool, bool)>> {
    let layout = cluster.ring_status(i).await.ok()?.layout?;
    Some(
        layout
            .nodes
            .iter()
            .map(|m| (m.id.parse().unwrap(), (m.out, m.out_auto)))
            .collect(),
    )
}

/// The nodes out of placement in node `i`'s applied layout.
async fn outs(cluster: &Cluster, i: usize) -> Vec<(NodeId, bool)> {
    standings(cluster, i)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, (out, _))| *out)
        .map(|(id, (_, auto))| (id, auto))
        .collect()
}

/// A counter summed over `nodes`.
async fn total(cluster: &Cluster, nodes: &[usize], name: &str) -> u64 {
    let mut sum = 0;
    for &i in nodes {
        sum += metric(cluster, i, name).await;
    }
    sum
}

const CHANGES: &str = "rondo_node_auto_standing_changes_total";
/// Automatic outs held back on `nodes` by `guard`.
async fn withheld(cluster: &Cluster, nodes: &[usize], guard: &str) -> u64 {
    let series = format!("rondo_node_auto_outs_withheld_total{{guard=\"{guard}\"}}");
    let mut sum = 0;
    for &i in nodes {
        sum += counter(cluster, i, &series).await;
    }
    sum
}

/// `rondo node replication r`, and the placement it made.
async fn replicate(cluster: &Cluster, r: &str) -> Placement {
    cluster.wait_layout().await.unwrap();
    let (status, out, err) = rondo(cluster, &cluster.token, &["node", "replication", r]);
    assert_eq!(status, 0, "stdout: {out}\nstderr: {err}");
    placement(cluster, 0, 0).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_down_too_long_is_marked_out_and_its_songs_return_to_r() {
    const SONGS: usize = 400;
    let mut cluster = builder(5).start().await.unwrap();
    let all = [0, 1, 2, 3, 4];
    one_ring(&cluster, &all).await;
    cluster.wait_all_up().await.unwrap();
    let p = replicate(&cluster, "3").await;
    let songs = upload(&cluster, &all, SONGS, "Outage", Some(&p)).await;
    exactly_on_owners(&cluster, &all, &p, &songs).await;
    below_r(&cluster, 0).await;

    // Node 2 dies. Not before the down-out interval, the representative
    // marks it out; the new placement gives its partitions to the others.
    let victim = 2;
    let victim_id = cluster.nodes[victim].id;
    cluster.kill_node(victim);
    let killed = Instant::now();
    let live = [0, 1, 3, 4];
    one_ring(&cluster, &live).await;
    let p2 = placement(&cluster, 0, p.epoch).await;
    assert!(
        killed.elapsed() >= Duration::from_millis(DOWN_OUT_MS as u64),
        "marked out after {:?}, before the down-out interval",
        killed.elapsed()
    );
    assert_eq!(outs(&cluster, 0).await, vec![(victim_id, true)]);
    assert!(
        p2.owners
            .iter()
            .all(|o| o.len() == 3 && !o.contains(&victim_id))
    );
    // The operator sees it (once the gateway has the new layout).
    eventually(
        "rondo layout show says out auto",
        Duration::from_secs(20),
        || async {
            let (_, out, _) = rondo(&cluster, &cluster.token, &["layout", "show"]);
            let line = out
                .lines()
                .find(|l| l.contains(&victim_id.to_string()))
                .unwrap_or_default()
                .to_string();
            line.contains("out auto").then_some(())
        },
    )
    .await
    .unwrap();
    // Every song back at R on the survivors, streaming from each owner.
    exactly_on_owners(&cluster, &live, &p2, &songs).await;
    streams_from_owners(&cluster, &p2, &songs).await;
    below_r(&cluster, 0).await;
    assert_eq!(
        total(&cluster, &live, CHANGES).await,
        1,
        "one automatic out"
    );

    // Back: marked in after the mark-in time, with a share again; the
    // survivors give up the copies they no longer own, and so does it.
    cluster.restart_node(victim).await.unwrap();
    one_ring(&cluster, &all).await;
    let p3 = placement(&cluster, 0, p2.epoch).await;
    assert!(outs(&cluster, 0).await.is_empty(), "marked in again");
    assert!(p3.owners.iter().any(|o| o.contains(&victim_id)));
    exactly_on_owners(&cluster, &all, &p3, &songs).await;
    streams_from_owners(&cluster, &p3, &songs).await;
    assert_eq!(
        total(&cluster, &all, CHANGES).await,
        2,
        "one automatic out, one automatic in"
    );
    same_digest(&cluster, &all).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_past_the_down_out_interval_marks_at_most_one_node_out() {
    if !netns_or_skip() {
        return;
    }
    const SONGS: usize = 400;
    let cluster = builder(5).netns().start().await.unwrap();
    let all = [0, 1, 2, 3, 4];
    one_ring(&cluster, &all).await;
    cluster.wait_all_up().await.unwrap();
    let p = replicate(&cluster, "3").await;
    let songs = upload(&cluster, &all, SONGS, "Split", Some(&p)).await;
    exactly_on_owners(&cluster, &all, &p, &songs).await;

    // 3 | 2: the majority marks one of the two out, and the other stays
    // in (at most one automatic out at a time); the minority, not quorate,
    // changes nothing.
    let net = cluster.net.as_ref().unwrap();
    let (majority, minority) = ([0, 1, 2], [3, 4]);
    for m in minority {
        net.partition(m, &majority).unwrap();
    }
    one_ring(&cluster, &majority).await;
    let p2 = placement(&cluster, 0, p.epoch).await;
    eventually(
        "the second absent node held back: one automatic out at a time",
        Duration::from_secs(30),
        || async { (withheld(&cluster, &majority, "one_at_a_time").await > 0).then_some(()) },
    )
    .await
    .unwrap();
    let out = outs(&cluster, 0).await;
    assert_eq!(out.len(), 1, "{out:?}");
    let (out_id, auto) = out[0];
    assert!(auto);
    let minority_ids: Vec<NodeId> = minority.iter().map(|&i| cluster.nodes[i].id).collect();
    assert!(
        minority_ids.contains(&out_id),
        "{out_id} was in the majority"
    );
    assert_eq!(
        placement(&cluster, 0, 0).await.epoch,
        p2.epoch,
        "nothing else was placed"
    );
    assert_eq!(total(&cluster, &majority, CHANGES).await, 1);
    for m in minority {
        let s = cluster.ring_status(m).await.unwrap();
        assert!(!s.quorate, "{s:?}");
        assert_eq!(
            s.layout.unwrap().placement.unwrap().epoch,
            p.epoch,
            "the minority applied nothing"
        );
    }

    // Heal: the out node is marked in again and every blob ends on its
    // owners.
    net.heal().unwrap();
    one_ring(&cluster, &all).await;
    let p3 = placement(&cluster, 0, p2.epoch).await;
    let (_, shown, _) = rondo(&cluster, &cluster.token, &["layout", "show"]);
    assert!(
        outs(&cluster, 0).await.is_empty(),
        "marked in again: {shown}"
    );
    exactly_on_owners(&cluster, &all, &p3, &songs).await;
    streams_from_owners(&cluster, &p3, &songs).await;
    same_digest(&cluster, &all).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_node_is_marked_out_when_fewer_than_r_would_stay_in() {
    // A guard test: no byte ratio is measured, so a few songs do.
    const SONGS: usize = 40;
    let mut cluster = builder(3).start().await.unwrap();
    let all = [0, 1, 2];
    one_ring(&cluster, &all).await;
    cluster.wait_all_up().await.unwrap();
    let p = replicate(&cluster, "3").await;
    let songs = upload(&cluster, &all, SONGS, "Three", Some(&p)).await;
    exactly_on_owners(&cluster, &all, &p, &songs).await;

    cluster.kill_node(2);
    let live = [0, 1];
    one_ring(&cluster, &live).await;
    eventually(
        "the absent node held back: fewer than R would stay in",
        Duration::from_secs(30),
        || async { (withheld(&cluster, &live, "replicas").await > 0).then_some(()) },
    )
    .await
    .unwrap();
    assert!(outs(&cluster, 0).await.is_empty());
    assert_eq!(placement(&cluster, 0, 0).await.epoch, p.epoch);
    assert_eq!(total(&cluster, &live, CHANGES).await, 0);
    // The operator sees every partition of the down owner (R = 3 of 3:
    // all of them) below R.
    below_r(&cluster, 1024).await;

    cluster.restart_node(2).await.unwrap();
    one_ring(&cluster, &all).await;
    exactly_on_owners(&cluster, &all, &p, &songs).await;
    streams_from_owners(&cluster, &p, &songs).await;
    same_digest(&cluster, &all).await;
    below_r(&cluster, 0).await;
}

/// Waits until `rondo status` says `n` partitions are below R.
async fn below_r(cluster: &Cluster, n: usize) {
    let want = format!("partitions with fewer than R verified copies: {n}");
    eventually(&want, Duration::from_secs(20), || async {
        let (_, out, _) = rondo(cluster, &cluster.token, &["status"]);
        out.lines().any(|l| l == want).then_some(())
    })
    .await
    .unwrap();
}
