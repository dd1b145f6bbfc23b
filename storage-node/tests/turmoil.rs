//! The storage node's control plane as it runs in production (the driver,
//! the gRPC `Ring` service, the wire conversions, the redb store with its
//! log, compaction and snapshots) under turmoil's deterministic network
//! and clock: three simulated hosts, each with a real data directory,
//! talking gRPC over simulated TCP. Each seed drives writes at random
//! nodes while it partitions, isolates, crashes and restarts nodes at
//! random, then heals everything, and checks after every step:
//!
//! - T-ORDER: no two nodes ever report different digests for the same
//!   applied seq (the digest folds in the whole applied prefix), and no
//!   node's applied seq or ring id ever goes back, across restarts;
//! - T-SPLIT: every ring seen operational has one member set, a majority
//!   of the three voters;
//! - T-LOST: after the heal every node is in one ring of three with the
//!   same applied seq and digest, and holds every acknowledged write.
//! - T-LAYOUT: no two nodes ever report different layouts (epoch,
//!   placement tables, older placements in force, synced epochs,
//!   retirements) at the same applied seq, and no node's layout epoch goes
//!   back.
//! - T-RETIRE: a placement retires at one log seq, the same on every node
//!   and for good; after the heal every node has one layout and no older
//!   placement left in force.
//!
//! Besides writes, the seeds order placement changes (replication factor,
//! a node's capacity, including 0: a drain, an operator's out and in) at
//! random nodes, against the epoch that node applied, and each node orders
//! `Synced` for the newest placement when it owns partitions of it (as
//! its resync worker does once it holds them; the simulation moves no
//! audio). Every write carries the placement epoch its node applied, as
//! an upload does: one ordered after a placement change is refused
//! (`StalePlacement`) on every node alike, and never acknowledged.
//!
//! `RONDO_TURMOIL_SEEDS` (default 50) seeds from `RONDO_TURMOIL_FROM`
//! (default 0); a failure names its seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rondo_core::NodeId;
use rondo_node::NodeState;
use rondo_node::net::{Dial, Io, Transport};
use rondo_proto::storage::v1 as pb;

const NODES: usize = 3;
const PORT: u16 = 7400;

fn host(i: usize) -> String {
    format!("node-{i}")
}

fn node_id(i: usize) -> NodeId {
    NodeId(uuid::Uuid::from_u128(0x1000 + i as u128))
}

fn dial() -> Dial {
    Arc::new(|addr: String| {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    })
}

/// The running nodes, for the test to look at (weak: a crashed host's
/// state must be dropped with it, closing its database).
type Nodes = Arc<Mutex<BTreeMap<usize, Weak<NodeState>>>>;

fn write_config(
    root: &std::path::Path,
    ca: &rondo_core::tls::ClusterCa,
    i: usize,
) -> std::path::PathBuf {
    let dir = root.join(host(i));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("node-id"), node_id(i).to_string()).unwrap();
    // Internal gRPC is mutual TLS, in the simulation too.
    let issued = ca
        .issue(rondo_core::tls::Identity::Node(node_id(i)))
        .unwrap();
    std::fs::write(root.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), issued.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), issued.key_pem).unwrap();
    std::fs::write(root.join("secret"), [7u8; 32]).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{dir}"
grpc_addr = "0.0.0.0:{PORT}"
tls_cert = "unused"
tls_key = "unused"
cluster_secret_file = "{secret}"
cluster_ca = "{ca}"
cluster_cert = "{dir}/cert.pem"
cluster_key = "{dir}/key.pem"
[ring]
peers_file = "{peers}"
token_timeout_ms = 300
write_timeout_ms = 2000
fetch_entries = 4
keep_entries = 4
"#,
            dir = dir.display(),
            secret = root.join("secret").display(),
            ca = root.join("ca.pem").display(),
            peers = root.join("peers.toml").display(),
        ),
    )
    .unwrap();
    config
}

fn write_peers(root: &std::path::Path) {
    let mut text = String::new();
    for i in 0..NODES {
        text += &format!(
            "[[node]]\nid = \"{}\"\ngrpc_url = \"http://{}:{PORT}\"\n",
            node_id(i),
            host(i)
        );
    }
    std::fs::write(root.join("peers.toml"), text).unwrap();
}

/// What one node reports.
#[derive(Clone, Debug)]
struct Seen {
    phase: String,
    ring: (u64, String),
    members: BTreeSet<String>,
    applied: u64,
    digest: String,
    /// The store's applied seq and layout, read together.
    layout: Option<(u64, rondo_ring::Layout)>,
}

/// What `state` reports; its layout only if `read` says so of its
/// applied seq (reading and decoding the layout at every step of every
/// seed would be most of the test's time).
fn seen(state: &NodeState, read: impl Fn(u64) -> bool) -> Option<Seen> {
    let s = state.ring.status();
    let layout = if read(s.last_applied_seq) {
        layout_of(state)
    } else {
        None
    };
    Some(Seen {
        phase: s.phase,
        ring: (s.ring_counter, s.ring_rep),
        members: s.members.into_iter().collect(),
        applied: s.last_applied_seq,
        digest: s.catalog_digest,
        layout,
    })
}

/// The store's applied seq and layout, read together.
fn layout_of(state: &NodeState) -> Option<(u64, rondo_ring::Layout)> {
    state
        .store
        .ring_applied_layout()
        .ok()
        .and_then(|(seq, l)| Some((seq, l?)))
}

/// The invariants checked after every step.
#[derive(Default)]
struct Checks {
    digests: BTreeMap<u64, String>,
    applied: BTreeMap<usize, u64>,
    rings: BTreeMap<usize, (u64, String)>,
    members: BTreeMap<(u64, String), BTreeSet<String>>,
    /// The layout seen at each applied seq.
    layouts: BTreeMap<u64, rondo_ring::Layout>,
    epochs: BTreeMap<usize, u64>,
    /// Each retired placement's retirement seq.
    retired: BTreeMap<u64, u64>,
    /// Per node, the applied seq its layout was last read at.
    read_at: BTreeMap<usize, u64>,
}

impl Checks {
    fn observe(&mut self, i: usize, s: &Seen) -> Result<(), String> {
        if s.applied > 0 && !s.digest.is_empty() {
            let d = self
                .digests
                .entry(s.applied)
                .or_insert_with(|| s.digest.clone());
            if *d != s.digest {
                return Err(format!(
                    "T-ORDER: node {i} reports digest {} at seq {}, another node {d}",
                    s.digest, s.applied
                ));
            }
        }
        let a = self.applied.entry(i).or_default();
        if s.applied < *a {
            return Err(format!(
                "node {i} applied seq went back: {} < {a}",
                s.applied
            ));
        }
        *a = s.applied;
        let r = self.rings.entry(i).or_insert_with(|| s.ring.clone());
        if s.ring.0 < r.0 {
            return Err(format!(
                "node {i} ring counter went back: {:?} < {r:?}",
                s.ring
            ));
        }
        *r = s.ring.clone();
        if let Some((seq, layout)) = &s.layout {
            let l = self.layouts.entry(*seq).or_insert_with(|| layout.clone());
            if l != layout {
                return Err(format!(
                    "T-LAYOUT: node {i} applied another layout at seq {seq}: {layout:?}, not {l:?}"
                ));
            }
            let e = self.epochs.entry(i).or_default();
            if layout.epoch < *e {
                return Err(format!("T-LAYOUT: node {i} layout epoch went back"));
            }
            *e = layout.epoch;
            for r in &layout.retirements {
                for epoch in &r.epochs {
                    let at = self.retired.entry(*epoch).or_insert(r.seq);
                    if *at != r.seq {
                        return Err(format!(
                            "T-RETIRE: node {i} says placement {epoch} retired at {}, another at {at}",
                            r.seq
                        ));
                    }
                }
            }
            // A node behind may not have applied the retirement yet; one
            // past it must have.
            let kept = layout
                .previous
                .iter()
                .find(|p| self.retired.get(&p.epoch).is_some_and(|at| seq >= at));
            if let Some(p) = kept {
                return Err(format!(
                    "T-RETIRE: node {i} keeps placement {} in force after its retirement",
                    p.epoch
                ));
            }
        }
        if s.phase == "operational" {
            if 2 * s.members.len() <= NODES {
                return Err(format!(
                    "T-SPLIT: a minority ring operates: {:?}",
                    s.members
                ));
            }
            let m = self
                .members
                .entry(s.ring.clone())
                .or_insert_with(|| s.members.clone());
            if *m != s.members {
                return Err(format!("T-SPLIT: ring {:?} with two member sets", s.ring));
            }
        }
        Ok(())
    }
}

/// Write `n`, copied (so to say) under placement `epoch`.
fn song(n: u32, epoch: u64) -> pb::CatalogUpdate {
    let artist = uuid::Uuid::from_u128(0xa000 + u128::from(n)).to_string();
    let song = pb::Song {
        id: uuid::Uuid::from_u128(0x5000_0000 + u128::from(n)).to_string(),
        title: format!("song {n}"),
        artist: Some(pb::Artist {
            id: artist.clone(),
            name: format!("artist {n}"),
        }),
        album: Some(pb::Album {
            id: uuid::Uuid::from_u128(0xb000 + u128::from(n)).to_string(),
            title: "sim".into(),
            artist_id: artist,
            ..Default::default()
        }),
        content_hash: blake3::hash(&n.to_be_bytes()).to_hex().to_string(),
        size_bytes: 4,
        mime_type: "audio/wav".into(),
        ..Default::default()
    };
    pb::CatalogUpdate {
        change: Some(pb::catalog_update::Change::Upsert(song)),
        placement_epoch: epoch,
        ..Default::default()
    }
}

/// A random placement change, against the layout node `i` applied.
fn layout_op(rng: &mut impl Rng, layout: &rondo_ring::Layout) -> rondo_ring::LayoutOp {
    use rondo_ring::{LayoutOp, Standing};
    let node = node_id(rng.random_range(0..NODES));
    match rng.random_range(0..4) {
        0 => LayoutOp::SetReplication {
            factor: rng.random_range(1..=3),
            placement: None,
        },
        1 => LayoutOp::SetStorage {
            node,
            zone: rondo_ring::DEFAULT_ZONE.into(),
            capacity: [0, 1 << 40, 2 << 40][rng.random_range(0..3)],
            placement: None,
        },
        _ => {
            let out = layout
                .nodes
                .get(&node)
                .is_some_and(|m| m.standing != Standing::In);
            LayoutOp::SetStanding {
                node,
                standing: if out {
                    Standing::In
                } else {
                    Standing::Out { auto: false }
                },
                placement: None,
            }
        }
    }
}

/// What one seed did.
#[derive(Default)]
struct Tally {
    writes: usize,
    acked: usize,
    crashes: usize,
    partitions: usize,
    rings: usize,
    /// Placement versions installed, and retirements.
    placements: usize,
    retirements: usize,
}

fn run_seed(seed: u64) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    write_peers(root.path());
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(2))
        .simulation_duration(Duration::from_secs(600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    let nodes: Nodes = Arc::default();
    let ca = rondo_core::tls::ClusterCa::generate("turmoil CA").unwrap();
    for i in 0..NODES {
        let config = write_config(root.path(), &ca, i);
        let nodes = nodes.clone();
        sim.host(host(i), move || {
            let config = config.clone();
            let nodes = nodes.clone();
            async move {
                let config = rondo_node::Config::from_file(&config)?;
                let transport = Transport::Sim {
                    dial: dial(),
                    seed: seed ^ (i as u64 + 1),
                };
                let state = rondo_node::open_with(config, Default::default(), transport)?;
                nodes
                    .lock()
                    .map_err(|_| "poisoned")?
                    .insert(i, Arc::downgrade(&state));
                let listener =
                    turmoil::net::TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT))
                        .await?;
                let accepted = Box::pin(futures::stream::unfold(listener, |l| async move {
                    let next = l.accept().await.map(|(s, _)| (s, None));
                    Some((next, l))
                }));
                let incoming = state.net.tls().incoming(accepted);
                tonic::transport::Server::builder()
                    .add_service(rondo_proto::ring::v1::ring_server::RingServer::new(
                        rondo_node::ring::Service::new(
                            state.ring.clone(),
                            state.store.clone(),
                            state.net.clone(),
                        ),
                    ))
                    .serve_with_incoming(incoming)
                    .await?;
                Ok(())
            }
        });
    }

    let state_of =
        |i: usize| -> Option<Arc<NodeState>> { nodes.lock().ok()?.get(&i).and_then(Weak::upgrade) };
    let mut checks = Checks::default();
    let check = |sim_down: &BTreeSet<usize>, checks: &mut Checks| -> Result<(), String> {
        for i in 0..NODES {
            if sim_down.contains(&i) {
                continue;
            }
            let known = checks.read_at.get(&i).copied();
            let read = |seq| known != Some(seq);
            if let Some(s) = state_of(i).as_deref().and_then(|st| seen(st, read)) {
                checks.read_at.insert(i, s.applied);
                checks.observe(i, &s)?;
            }
        }
        Ok(())
    };

    // Writes: proposed by a task on the proposing node's own runtime
    // (so a crash of that node drops it), acknowledged once applied there.
    let acked: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let mut isolated: Option<usize> = None;
    let mut writes = 0u32;
    let mut changes = 0u32;
    let mut claims = Claims::default();
    let steps = 6000; // 12 simulated seconds of faults and writes
    for step in 0..steps {
        if step % 50 == 0 && step > 200 {
            let i = rng.random_range(0..NODES);
            // The client holds the node's ring handle, not its state (a
            // crashed node's database must close with it).
            let ring = state_of(i).filter(|_| !down.contains(&i)).map(|s| {
                let epoch = s
                    .store
                    .ring_layout()
                    .ok()
                    .flatten()
                    .map_or(0, |l| l.placement_epoch());
                (s.ring.clone(), epoch)
            });
            if let Some((ring, epoch)) = ring {
                writes += 1;
                let n = writes;
                let acked = acked.clone();
                sim.client(format!("write-{n}"), async move {
                    if let Ok(rondo_node::store::Applied::Stored { .. }) =
                        ring.propose(song(n, epoch)).await
                    {
                        acked.lock().map_err(|_| "poisoned")?.insert(n);
                    }
                    Ok(())
                });
            }
        }
        if step % 400 == 100 && step > 200 {
            // A placement change, at a random node, against its layout.
            let i = rng.random_range(0..NODES);
            let target = state_of(i)
                .filter(|_| !down.contains(&i))
                .and_then(|s| Some((s.ring.clone(), s.store.ring_layout().ok().flatten()?)));
            if let Some((ring, layout)) = target {
                let change = rondo_ring::LayoutChange {
                    expect_epoch: layout.epoch,
                    op: layout_op(&mut rng, &layout),
                    proposal: String::new(),
                };
                changes += 1;
                sim.client(format!("layout-{changes}"), async move {
                    let _ = ring.propose_layout(change).await;
                    Ok(())
                });
            }
        }
        if step % 100 == 50 {
            claim_syncs(&mut sim, &state_of, &down, &mut claims);
        }
        if step % 400 == 300 {
            // A fault, or a heal of the last one.
            match rng.random_range(0..4) {
                0 if down.is_empty() => {
                    let i = rng.random_range(0..NODES);
                    sim.crash(host(i));
                    down.insert(i);
                    tally.crashes += 1;
                }
                1 if isolated.is_none() => {
                    let i = rng.random_range(0..NODES);
                    for j in (0..NODES).filter(|j| *j != i) {
                        sim.partition(host(i), host(j));
                    }
                    isolated = Some(i);
                    tally.partitions += 1;
                }
                2 => {
                    let (a, b) = (rng.random_range(0..NODES), rng.random_range(0..NODES));
                    if a != b {
                        sim.partition_oneway(host(a), host(b));
                        tally.partitions += 1;
                    }
                }
                _ => {
                    for i in std::mem::take(&mut down) {
                        sim.bounce(host(i));
                    }
                    isolated = None;
                    repair_all(&sim);
                }
            }
        }
        sim.step().map_err(|e| format!("step {step}: {e}"))?;
        check(&down, &mut checks)?;
    }
    // Heal everything; every node must end in one ring of three with one
    // applied seq and digest, holding every acknowledged write.
    for i in std::mem::take(&mut down) {
        sim.bounce(host(i));
    }
    repair_all(&sim);
    let mut last = String::new();
    for step in 0..15_000 {
        if step % 100 == 50 {
            claim_syncs(&mut sim, &state_of, &down, &mut claims);
        }
        sim.step().map_err(|e| format!("heal: {e}"))?;
        check(&down, &mut checks)?;
        match converged(&state_of, &acked) {
            Ok(()) => {
                tally.writes = writes as usize;
                tally.acked = acked_count(&acked);
                tally.rings = checks.members.len();
                let placements: BTreeSet<u64> = checks
                    .layouts
                    .values()
                    .filter_map(|l| Some(l.placement.as_ref()?.epoch))
                    .collect();
                tally.placements = placements.len();
                tally.retirements = checks.retired.len();
                return Ok(tally);
            }
            Err(e) => last = e,
        }
    }
    Err(format!(
        "no convergence 30 simulated seconds after the heal: {last}"
    ))
}

/// Each up node that owns partitions of its newest placement and has not
/// said so orders `Synced` for it, as its resync worker would once it
/// holds them.
fn claim_syncs(
    sim: &mut turmoil::Sim<'_>,
    state_of: &dyn Fn(usize) -> Option<Arc<NodeState>>,
    down: &BTreeSet<usize>,
    claims: &mut Claims,
) {
    for i in (0..NODES).filter(|i| !down.contains(i)) {
        let Some(state) = state_of(i) else { continue };
        let Some(layout) = state.store.ring_layout().ok().flatten() else {
            continue;
        };
        let me = node_id(i);
        let epoch = layout.placement_epoch();
        if epoch == 0 || !layout.owns(me) || layout.synced.get(&me).is_some_and(|s| *s >= epoch) {
            continue;
        }
        // One claim in flight per node: each client is a task the
        // simulation steps until it ends.
        let busy = claims.busy.entry(i).or_default().clone();
        if busy.swap(true, std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        let ring = state.ring.clone();
        claims.made += 1;
        let change = rondo_ring::LayoutChange {
            expect_epoch: 0,
            op: rondo_ring::LayoutOp::Synced { node: me, epoch },
            proposal: String::new(),
        };
        sim.client(format!("synced-{}", claims.made), async move {
            let _ = ring.propose_layout(change).await;
            busy.store(false, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
    }
}

/// The `Synced` claims made, and whether one is in flight per node.
#[derive(Default)]
struct Claims {
    made: u32,
    busy: BTreeMap<usize, Arc<std::sync::atomic::AtomicBool>>,
}

fn acked_count(acked: &Mutex<BTreeSet<u32>>) -> usize {
    acked.lock().map(|a| a.len()).unwrap_or(0)
}

fn repair_all(sim: &turmoil::Sim<'_>) {
    for a in 0..NODES {
        for b in 0..NODES {
            if a != b {
                sim.repair_oneway(host(a), host(b));
            }
        }
    }
}

/// Whether every node is operational in one ring of all, with one applied
/// seq and digest, and holds every acknowledged write; otherwise why not.
fn converged(
    state_of: &dyn Fn(usize) -> Option<Arc<NodeState>>,
    acked: &Mutex<BTreeSet<u32>>,
) -> Result<(), String> {
    let all: Vec<Option<Seen>> = (0..NODES)
        .map(|i| state_of(i).as_deref().and_then(|st| seen(st, |_| false)))
        .collect();
    let first = all[0]
        .as_ref()
        .map(|f| (f.applied, f.digest.clone(), f.ring.clone()));
    let one = all.iter().all(|s| {
        s.as_ref().is_some_and(|s| {
            s.phase == "operational"
                && s.members.len() == NODES
                && Some((s.applied, s.digest.clone(), s.ring.clone())) == first
        })
    });
    if !one {
        return Err(format!("{all:?}"));
    }
    let layouts: Vec<Option<rondo_ring::Layout>> = (0..NODES)
        .map(|i| state_of(i).and_then(|st| layout_of(&st)).map(|(_, l)| l))
        .collect();
    if layouts.iter().any(|l| *l != layouts[0]) {
        return Err("the nodes' layouts differ".into());
    }
    if let Some(l) = layouts[0].as_ref().filter(|l| !l.previous.is_empty()) {
        return Err(format!(
            "placements {:?} still in force, waiting for {:?}",
            l.previous.iter().map(|p| p.epoch).collect::<Vec<_>>(),
            l.unsynced_owners()
        ));
    }
    let acked = acked.lock().map_err(|_| "poisoned")?.clone();
    for i in 0..NODES {
        let state = state_of(i).ok_or("node gone")?;
        for n in &acked {
            if state
                .store
                .song(song_id(*n))
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!("acknowledged write {n} missing on node {i}"));
            }
        }
    }
    Ok(())
}
fn song_id(n: u32) -> rondo_core::SongId {
    rondo_core::SongId(uuid::Uuid::from_u128(0x5000_0000 + u128::from(n)))
}

#[test]
fn the_node_code_keeps_the_invariants_under_simulated_faults() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RONDO_TURMOIL_LOG"))
        .with_test_writer()
        .try_init();
    let (first, seeds) = (env("RONDO_TURMOIL_FROM", 0), env("RONDO_TURMOIL_SEEDS", 50));
    let mut all = Tally::default();
    for seed in first..first + seeds {
        match run_seed(seed) {
            Ok(t) => {
                all.writes += t.writes;
                all.acked += t.acked;
                all.crashes += t.crashes;
                all.partitions += t.partitions;
                all.rings += t.rings;
                all.placements += t.placements;
                all.retirements += t.retirements;
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
    eprintln!(
        "turmoil: {seeds} seeds; {} crashes and restarts, {} partitions, {} rings operated, \
         {} writes, {} acknowledged and present everywhere after the heal; \
         {} placements installed, {} retirements",
        all.crashes,
        all.partitions,
        all.rings,
        all.writes,
        all.acked,
        all.placements,
        all.retirements
    );
    let n = seeds as usize;
    assert!(all.acked * 2 > all.writes, "most writes commit");
    assert!(
        all.crashes * 4 > n && all.partitions > n,
        "the seeds inject faults"
    );
    assert!(all.rings > 2 * n, "the faults make rings re-form");
    assert!(
        all.placements > n && all.retirements > n,
        "the seeds change placements and retire the old ones"
    );
}
