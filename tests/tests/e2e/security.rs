//! The internal network is trusted for nothing: a hostile client that can
//! reach a node's gRPC port gets nowhere without a certificate of the
//! cluster CA, and a certificate gets it only what its role allows.
//!
//! One concern, kept in one file on purpose: the hostile-caller suite of
//! the internal API, which reads best as one list of attacks.

use std::sync::Arc;
use std::time::Duration;

use rondo_core::tls::{ClusterCa, Identity};
use rondo_proto::mtls::{ClusterTls, Expect, Links};
use rondo_proto::ring::v1 as ring;
use rondo_proto::storage::v1 as pb;
use rondo_tests::{Cluster, NodeClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Links with a certificate for `identity` from `ca` (trusting the
/// cluster's CA for the server's certificate).
fn links_from(cluster: &Cluster, ca: &ClusterCa, identity: Identity) -> Links {
    let issued = ca.issue(identity).unwrap();
    let cluster_ca = std::fs::read(&cluster.pki.cluster_ca).unwrap();
    let tls = ClusterTls::from_pem(
        &cluster_ca,
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap();
    Links::tcp(Arc::new(tls))
}

fn cluster_ca(cluster: &Cluster) -> ClusterCa {
    ClusterCa::from_pem(
        &std::fs::read_to_string(&cluster.pki.cluster_ca).unwrap(),
        &std::fs::read_to_string(&cluster.pki.cluster_ca_key).unwrap(),
    )
    .unwrap()
}

async fn ring_client(
    cluster: &Cluster,
    links: &Links,
    i: usize,
) -> ring::ring_client::RingClient<tonic::transport::Channel> {
    let endpoint = rondo_proto::channel::endpoint(
        &format!("https://{}", cluster.nodes[i].grpc),
        rondo_proto::channel::Link::Ring,
    )
    .unwrap();
    let channel = links
        .connect(endpoint, Expect::Node(cluster.nodes[i].id))
        .await
        .unwrap();
    ring::ring_client::RingClient::new(channel)
}

/// What the tests check is unchanged after each probe.
async fn state(cluster: &Cluster) -> (u64, Vec<String>) {
    let mut digests = Vec::new();
    for i in 0..cluster.nodes.len() {
        let s = cluster.ring_status(i).await.unwrap();
        // The digest of the applied catalog (the ring's own entries, such
        // as a new ring's start, move the seq but not the catalog).
        digests.push(s.catalog_digest);
    }
    (cluster.song_count().await.unwrap(), digests)
}

fn denied(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{what}: {err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_grpc_refuses_strangers_and_wrong_roles() {
    let cluster = Cluster::builder().nodes(2).start().await.unwrap();
    // Each node knows the other as a member once the ring has formed.
    for i in 0..2 {
        rondo_tests::eventually(
            "one ring of both nodes",
            Duration::from_secs(30),
            || async {
                let s = cluster.ring_status(i).await.ok()?;
                (s.phase == "operational" && s.members.len() == 2).then_some(())
            },
        )
        .await
        .unwrap();
    }
    let before = state(&cluster).await;
    let node0 = cluster.nodes[0].grpc;

    // Plain gRPC, no TLS: no answer at all.
    let plain = async {
        let mut client = NodeClient::connect(format!("http://{node0}")).await.ok()?;
        tokio::time::timeout(
            Duration::from_secs(5),
            client.health(pb::HealthRequest::default()),
        )
        .await
        .ok()?
        .ok()
    };
    assert!(plain.await.is_none(), "a node answered plaintext gRPC");

    // TLS that trusts the cluster CA but offers no client certificate: the
    // server ends the connection instead of speaking HTTP/2.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        for c in
            rondo_core::tls::certificates(&std::fs::read(&cluster.pki.cluster_ca).unwrap()).unwrap()
        {
            roots.add(c).unwrap();
        }
        roots
    };
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(node0).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(rondo_core::tls::NODE_ROLE).unwrap();
    let anonymous = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .ok()?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 64];
        match tls.read(&mut buf).await {
            Ok(n) if n > 0 => Some(n),
            _ => None,
        }
    };
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), anonymous)
            .await
            .unwrap(),
        None,
        "a node spoke HTTP/2 to a client without a certificate"
    );

    // A gateway certificate from another CA: refused in the handshake.
    let stranger_ca = ClusterCa::generate("another CA").unwrap();
    let stranger = links_from(
        &cluster,
        &stranger_ca,
        Identity::Gateway(uuid::Uuid::new_v4()),
    );
    let call = async {
        let mut client = cluster.grpc_as(&stranger, 0).await.ok()?;
        client.health(pb::HealthRequest::default()).await.ok()
    };
    assert!(
        call.await.is_none(),
        "a certificate of another CA was taken"
    );

    // A gateway's certificate of this CA: Health and its own calls work,
    // the nodes' calls do not.
    let mut gateway = cluster.grpc(0).await.unwrap();
    gateway.health(pb::HealthRequest::default()).await.unwrap();
    denied(
        gateway
            .read_blob(pb::ReadBlobRequest {
                content_hash: "0".repeat(64),
                offset: 0,
                length: 1,
            })
            .await
            .map(|_| ()),
        "ReadBlob as a gateway",
    );
    denied(
        gateway
            .replicate_blob(pb::ReplicateBlobRequest::default())
            .await,
        "ReplicateBlob as a gateway",
    );
    denied(
        gateway
            .deliver_blob(pb::DeliverBlobRequest::default())
            .await,
        "DeliverBlob as a gateway",
    );
    let mut ring_as_gateway = ring_client(&cluster, &cluster.links, 0).await;
    denied(
        ring_as_gateway.ping(ring::Received {}).await,
        "Ping as a gateway",
    );
    denied(
        ring_as_gateway
            .read_snapshot(ring::ReadSnapshotRequest { at_seq: 0 })
            .await
            .map(|_| ()),
        "ReadSnapshot as a gateway",
    );

    // Even a gateway stores audio types only.
    let mut html = pb::Song {
        id: uuid::Uuid::new_v4().to_string(),
        title: "Not a song".into(),
        mime_type: "text/html".into(),
        ..Default::default()
    };
    html.artist = Some(pb::Artist {
        id: uuid::Uuid::new_v4().to_string(),
        name: "Nobody".into(),
    });
    let err = rondo_tests::upload_direct_song(&mut gateway, html)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("only audio types"), "{err:?}");

    // A node of the layout may not act for users, nor speak for another
    // node.
    let as_node1 = cluster.node_links(1).unwrap();
    let mut node = cluster.grpc_as(&as_node1, 0).await.unwrap();
    denied(
        node.propose(pb::ProposeRequest::default()).await,
        "Propose as a node",
    );
    denied(
        node.delete_song(pb::DeleteSongRequest::default()).await,
        "DeleteSong as a node",
    );
    denied(
        node.watch_catalog(pb::WatchCatalogRequest::default())
            .await
            .map(|_| ()),
        "WatchCatalog as a node",
    );
    denied(
        node.change_layout(pb::ChangeLayoutRequest::default()).await,
        "ChangeLayout as a node",
    );
    let mut ring_as_node1 = ring_client(&cluster, &as_node1, 0).await;
    ring_as_node1.ping(ring::Received {}).await.unwrap();
    denied(
        ring_as_node1
            .deliver(ring::Envelope {
                from: cluster.nodes[0].id.to_string(),
                message: None,
            })
            .await,
        "Deliver in another node's name",
    );

    // A certificate of this CA for a node the layout does not name (one
    // never added, as a removed one): refused on every member RPC.
    let ca = cluster_ca(&cluster);
    let outsider = links_from(
        &cluster,
        &ca,
        Identity::Node(rondo_core::NodeId::new_random()),
    );
    let mut ring_as_outsider = ring_client(&cluster, &outsider, 0).await;
    // Its ring messages reach the ring core (which counts only the
    // layout's voters); its state and blobs are refused.
    ring_as_outsider.ping(ring::Received {}).await.unwrap();
    let err = ring_as_outsider
        .read_snapshot(ring::ReadSnapshotRequest { at_seq: 0 })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("not in this node's layout"),
        "{err:?}"
    );
    let mut as_outsider = cluster.grpc_as(&outsider, 0).await.unwrap();
    let err = as_outsider
        .replicate_blob(pb::ReplicateBlobRequest::default())
        .await
        .unwrap_err();
    assert!(
        err.message().contains("not in this node's layout"),
        "{err:?}"
    );

    assert_eq!(
        state(&cluster).await,
        before,
        "a refused call changed something"
    );
}

/// A tag of megabytes used to make a catalog change no gateway could
/// decode, and the gateway then retried it forever. Tags are cut at
/// ingest, and a node refuses to order an update over 1 MiB; the gateway
/// follows every change after such attempts.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_tag_or_update_never_wedges_the_gateway() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // 9 MB of genre in the file's tags: stored cut to 500 characters.
    let path = tmp.path().join("huge.wav");
    let song = rondo_cli::demo::DemoSong {
        title: "Huge Genre".into(),
        artist: "Tagger".into(),
        album: "Tags".into(),
        track: 1,
        year: 2001,
        genre: "g".repeat(9 << 20),
    };
    rondo_cli::demo::write_song(&path, &song, 0.5, 7, None).unwrap();
    let up = crate::upload_ok(&cluster, &path, serde_json::json!({})).await;
    assert_eq!(
        up["genre"].as_str().map(|g| g.chars().count()),
        Some(500),
        "{}",
        up["title"]
    );

    // Straight to the node as a gateway: an update over 1 MiB is refused
    // and leaves nothing behind.
    let before = cluster.nodes[0].disk();
    let mut client = cluster.grpc(0).await.unwrap();
    let err = upload_with_genre(&mut client, "g".repeat(2 << 20))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("1 MiB"), "{err:?}");
    rondo_tests::eventually(
        "the refused upload's blob is gone",
        Duration::from_secs(10),
        || async { (cluster.nodes[0].disk() == before).then_some(()) },
    )
    .await
    .unwrap();

    // The gateway still follows: a later song shows up.
    let path = tmp.path().join("after.wav");
    rondo_tests::tagged_wav(&path, "After The Huge", "Tagger", "Tags", 0.5, 8).unwrap();
    crate::upload_ok(&cluster, &path, serde_json::json!({})).await;
    assert_eq!(cluster.song_count().await.unwrap(), 2);
}

/// `rondo_tests::upload_direct` with a genre of the caller's choosing.
async fn upload_with_genre(
    client: &mut NodeClient,
    genre: String,
) -> Result<pb::Song, tonic::Status> {
    let artist_id = uuid::Uuid::new_v4().to_string();
    let song = pb::Song {
        id: uuid::Uuid::new_v4().to_string(),
        title: "Oversized".into(),
        artist: Some(pb::Artist {
            id: artist_id.clone(),
            name: "Tagger".into(),
        }),
        album: Some(pb::Album {
            id: uuid::Uuid::new_v4().to_string(),
            title: "Tags".into(),
            artist_id,
            ..Default::default()
        }),
        genre: Some(genre),
        mime_type: "audio/wav".into(),
        ..Default::default()
    };
    rondo_tests::upload_direct_song(client, song).await
}

/// A gateway with closed registration makes no account for anyone; an
/// admin still does.
#[tokio::test(flavor = "multi_thread")]
async fn closed_registration_refuses_register() {
    let cluster = Cluster::builder()
        .gateway_option("registration", "closed")
        .start()
        .await
        .unwrap();
    let register =
        "mutation { register(name: \"mallory\", password: \"long enough pw\") { token } }";
    let e = cluster
        .anon
        .query(register, serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, rondo_cli::Error::GraphQl { code, .. } if code == "FORBIDDEN"),
        "{e}"
    );
    let made = cluster
        .admin
        .query(
            "mutation { createUser(name: \"mallory\", password: \"long enough pw\") { role } }",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        made["createUser"]["role"], "LISTENER",
        "the name was not taken"
    );
}

/// Where the internal services are (node gRPC addresses, gateways) is for
/// admins; anyone may see whether the nodes are up.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_internals_are_for_admins() {
    let cluster = Cluster::builder().start().await.unwrap();
    for q in [
        "{ cluster { layout { nodes { address } } } }",
        "{ cluster { gateways { address } } }",
    ] {
        let e = cluster
            .anon
            .query(q, serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, rondo_cli::Error::GraphQl { code, .. } if code == "UNAUTHENTICATED"),
            "{q}: {e}"
        );
        cluster.admin.query(q, serde_json::json!({})).await.unwrap();
    }
    let d = cluster
        .anon
        .query("{ cluster { nodes { state } } }", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(d["cluster"]["nodes"][0]["state"], "UP");
}

fn rate_limited(e: &rondo_cli::Error) -> bool {
    matches!(e, rondo_cli::Error::GraphQl { code, .. } if code == "RATE_LIMITED")
}

/// Password guessing is slowed per account (whoever asks) and per address,
/// and password checks at once are bounded (memory stays flat).
#[tokio::test(flavor = "multi_thread")]
async fn login_guessing_is_rate_limited() {
    let cluster = Cluster::builder().start().await.unwrap();
    let login = "mutation($n: String!, $p: String!) { login(name: $n, password: $p) { token } }";
    cluster
        .anon
        .query(
            "mutation { register(name: \"bob\", password: \"battery staple\") { token } }",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    // Five guesses at bob are answered; then even the right password waits.
    for _ in 0..5 {
        let e = cluster
            .anon
            .query(login, serde_json::json!({ "n": "bob", "p": "wrong guess" }))
            .await
            .unwrap_err();
        assert!(!rate_limited(&e), "{e}");
    }
    let e = cluster
        .anon
        .query(
            login,
            serde_json::json!({ "n": "BOB", "p": "battery staple" }),
        )
        .await
        .unwrap_err();
    assert!(rate_limited(&e), "{e}");

    // From one address, attempts at many names run out too; batches of
    // logins count each one and keep the gateway's memory flat.
    let pid = cluster.gateway.pid().unwrap();
    let before = crate::rss_kib(pid);
    let batch: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({ "query": login, "variables": { "n": format!("nobody{i}"), "p": "x" } }))
        .collect();
    let mut limited = false;
    for _ in 0..5 {
        let r = cluster
            .http()
            .post(format!("{}/graphql", cluster.admin.base))
            .json(&batch)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        limited |= v
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["errors"][0]["extensions"]["code"] == "RATE_LIMITED");
    }
    assert!(limited, "50 logins from one address were never limited");
    let grown = crate::rss_kib(pid).saturating_sub(before);
    assert!(grown < 100 * 1024, "the gateway grew by {grown} KiB");
    // Queries that check no password are not limited.
    cluster
        .anon
        .query("{ songs { totalCount } }", serde_json::json!({}))
        .await
        .unwrap();
}

/// A TLS connection to `addr` trusting the public CA, that sends nothing
/// after its handshake.
async fn idle_tls(
    cluster: &Cluster,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rondo_core::tls::certificates(&cluster.ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Whether the server closes `stream` within `within` (it sends nothing).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A timeout answer (408) may come first; then the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// Idle and half-open connections are closed, and a flood of them is
/// capped, on the gateway's and a node's public listeners.
#[tokio::test(flavor = "multi_thread")]
async fn public_listeners_time_out_and_cap_connections() {
    let mut cluster = Cluster::builder()
        .gateway_option("max_connections", 8)
        .gateway_option("header_timeout_ms", 1000)
        .start()
        .await
        .unwrap();
    cluster
        .set_node_option(0, "header_timeout_ms", 1000)
        .unwrap();
    cluster.restart_node(0).await.unwrap();

    // A connection that sends no request is closed after the header
    // timeout, on both listeners.
    for addr in [cluster.gateway_addr, cluster.nodes[0].http] {
        let mut idle = idle_tls(&cluster, addr).await.unwrap();
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "{addr} kept an idle connection"
        );
    }

    // Nine connections at once (TCP only, no handshake) against eight
    // slots: whatever else holds a slot (a client's pooled connection),
    // at most eight stay open and the rest are closed at once: within 2 s,
    // far below the 10 s a handshake may take.
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(
            tokio::net::TcpStream::connect(cluster.gateway_addr)
                .await
                .unwrap(),
        );
    }
    let closed = futures::future::join_all(
        held.iter_mut()
            .map(|c| closed_within(c, Duration::from_secs(2))),
    )
    .await;
    let refused = closed.iter().filter(|c| **c).count();
    assert!(refused >= 1, "nine connections held open with eight slots");
    assert!(closed.len() - refused <= 8, "{closed:?}");
    drop(held);
    // The slots come back once those connections are gone.
    rondo_tests::eventually(
        "the gateway answers again",
        Duration::from_secs(10),
        || async {
            cluster
                .anon
                .query("{ songs { totalCount } }", serde_json::json!({}))
                .await
                .ok()
        },
    )
    .await
    .unwrap();
}

/// A direct upload grant holds until the last byte, not only when the PUT
/// starts: a body still arriving 10 s after the grant expired is refused
/// with 408 and leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_grant_holds_until_the_last_byte_only() {
    let cluster = Cluster::builder().start().await.unwrap();
    let song = rondo_core::SongId::new_random();
    let now = rondo_process::unix_now();
    let url = cluster.signed_upload_url(
        0,
        song,
        rondo_core::signing::UploadGrant {
            // Time enough to start the PUT on a loaded machine.
            exp: now + 3,
            max: 10 << 20,
            ..Default::default()
        },
    );
    // 64 KiB, then nothing (the sender stays open).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(vec![0u8; 64 << 10])).await.unwrap();
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let r = cluster.http().put(&url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 408);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "REQUEST_TIMEOUT", "{v}");
    drop(tx);
    rondo_tests::eventually(
        "the staged upload is gone",
        Duration::from_secs(10),
        || async { (cluster.nodes[0].disk().tmp_files == 0).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(cluster.nodes[0].disk().blob_files, 0);
    assert_eq!(cluster.song_count().await.unwrap(), 0);
}

/// Replaying an upload grant after its song was deleted makes no ghost
/// song: a deleted id is never a song again.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_song_id_is_never_written_again() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("replayed.wav");
    rondo_tests::tagged_wav(&path, "Replayed", "Replayer", "Replays", 0.5, 9).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let song = rondo_core::SongId::new_random();
    let url = cluster.signed_upload_url(
        0,
        song,
        rondo_core::signing::UploadGrant {
            exp: rondo_process::unix_now() + 600,
            max: 10 << 20,
            ..Default::default()
        },
    );
    let r = cluster
        .http()
        .put(&url)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    cluster
        .admin
        .query(
            "mutation($id: ID!) { deleteSong(id: $id) }",
            serde_json::json!({ "id": song.to_string() }),
        )
        .await
        .unwrap();
    let r = cluster.http().put(&url).body(bytes).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "CONFLICT", "{v}");
    assert_eq!(cluster.song_count().await.unwrap(), 0);
    rondo_tests::eventually(
        "the refused bytes are gone",
        Duration::from_secs(10),
        || async {
            let d = cluster.nodes[0].disk();
            (d.tmp_files == 0 && d.blob_files == 0).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Account names are NFKC-normalised, invisible and text-direction
/// characters refused, and a name that looks like a taken one is taken.
#[tokio::test(flavor = "multi_thread")]
async fn look_alike_account_names_are_refused() {
    let cluster = Cluster::builder().start().await.unwrap();
    let register = "mutation($n: String!) { register(name: $n, password: \"long enough pw\") { user { name } } }";
    let code = |e: &rondo_cli::Error| match e {
        rondo_cli::Error::GraphQl { code, .. } => code.clone(),
        other => other.to_string(),
    };
    let r = cluster
        .anon
        .query(register, serde_json::json!({ "n": "alice" }))
        .await
        .unwrap();
    assert_eq!(r["register"]["user"]["name"], "alice");
    for (name, expected) in [
        ("ａｌｉｃｅ", "CONFLICT"),   // full-width: NFKC makes it "alice"
        ("\u{0430}lice", "CONFLICT"), // Cyrillic а
        ("ALICE", "CONFLICT"),
        ("alice\u{200b}", "BAD_USER_INPUT"), // zero-width space
        ("\u{202e}ecila", "BAD_USER_INPUT"), // right-to-left override
    ] {
        let e = cluster
            .anon
            .query(register, serde_json::json!({ "n": name }))
            .await
            .unwrap_err();
        assert_eq!(code(&e), expected, "{name:?}");
    }
    // The full-width spelling logs in to the same account.
    let login = cluster
        .anon
        .query(
            "mutation { login(name: \"ａｌｉｃｅ\", password: \"long enough pw\") { user { name } } }",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(login["login"]["user"]["name"], "alice");
}

/// A gateway's certificate lets it act for the sessions it carries, and
/// for nothing else: the node checks each proposal's session against its
/// own accounts (actor, own session, own account, admin authority); the
/// change stream carries no password hashes; a password is checked only
/// by a node; stored bytes must be the audio they claim to be.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_acts_only_for_the_sessions_it_carries() {
    use pb::catalog_update::Change as U;
    let cluster = Cluster::builder().start().await.unwrap();
    let register = "mutation($n: String!) { register(name: $n, password: \"long enough pw\") { token user { id } } }";
    let mut accounts = Vec::new();
    for name in ["vic", "wes"] {
        let r = cluster
            .anon
            .query(register, serde_json::json!({ "n": name }))
            .await
            .unwrap();
        accounts.push((
            r["register"]["token"].as_str().unwrap().to_owned(),
            r["register"]["user"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    let [(vic, _vic_id), (wes, wes_id)] = [accounts[0].clone(), accounts[1].clone()];
    let wes_c =
        rondo_cli::client::Client::new(&cluster.admin.base, &cluster.ca_pem, Some(wes.clone()))
            .unwrap();
    let list = wes_c
        .query(
            "mutation { createPlaylist(name: \"Wes\") { id } }",
            serde_json::json!({}),
        )
        .await
        .unwrap()["createPlaylist"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = state(&cluster).await;
    let mut gateway = cluster.grpc(0).await.unwrap();

    // The change stream has the accounts, never their hashes.
    let mut changes = gateway
        .watch_catalog(pb::WatchCatalogRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut users = 0;
    while users < 2 {
        let c = tokio::time::timeout(Duration::from_secs(10), changes.message())
            .await
            .expect("the change stream to go on")
            .unwrap()
            .expect("the change stream to go on");
        if let Some(pb::catalog_change::Change::User(u)) = c.change {
            assert!(u.password_hash.is_empty(), "a hash on the stream: {u:?}");
            users += 1;
        }
    }
    drop(changes);

    // Passwords are checked by the node, for gateways only.
    let check = |password: &str| pb::CheckPasswordRequest {
        name: "vic".into(),
        password: password.into(),
    };
    let ok = gateway
        .check_password(check("long enough pw"))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().user_id, accounts[0].1);
    let wrong = gateway.check_password(check("wrong")).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let mut as_node = cluster
        .grpc_as(&cluster.node_links(0).unwrap(), 0)
        .await
        .unwrap();
    denied(
        as_node.check_password(check("long enough pw")).await,
        "CheckPassword as a node",
    );

    // Proposals: each needs the session it acts for.
    let propose = |change: U, session: &str| pb::ProposeRequest {
        update: Some(pb::CatalogUpdate {
            change: Some(change),
            ..Default::default()
        }),
        session: session.into(),
    };
    let admin_account = || {
        U::RegisterUser(pb::User {
            id: uuid::Uuid::new_v4().to_string(),
            name: "mallory".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
            role: "admin".into(),
            ..Default::default()
        })
    };
    let rename = || {
        U::Playlist(pb::PlaylistOp {
            playlist_id: list.clone(),
            actor_id: wes_id.clone(),
            at_ms: 1,
            op: Some(pb::playlist_op::Op::Rename("Vic's now".into())),
        })
    };
    let promote = |user: &str| {
        U::UserChange(pb::UserChange {
            user_id: user.into(),
            at_ms: 1,
            change: Some(pb::user_change::Change::Role("admin".into())),
        })
    };
    let wes_session = wes.split('.').nth(5).unwrap().to_owned();
    let end_wes = U::RevokeSession(pb::RevokedSession {
        session_id: wes_session,
        expires_at: u64::MAX,
        at: 1,
    });
    let forged = wes.replace("listener", "admin");
    // Dated far ahead, to end a session's revocation early or lock an
    // account's sessions out for good.
    let vic_forever = U::RevokeSession(pb::RevokedSession {
        session_id: vic.split('.').nth(5).unwrap().to_owned(),
        expires_at: u64::MAX,
        at: u64::MAX,
    });
    let future_password = U::UserChange(pb::UserChange {
        user_id: accounts[0].1.clone(),
        at_ms: u64::MAX,
        change: Some(pb::user_change::Change::PasswordHash(
            "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
        )),
    });
    for (what, request, expected) in [
        (
            "an admin without a session",
            propose(admin_account(), ""),
            tonic::Code::Unauthenticated,
        ),
        (
            "an admin for a listener",
            propose(admin_account(), &vic),
            tonic::Code::PermissionDenied,
        ),
        (
            "another's playlist",
            propose(rename(), &vic),
            tonic::Code::PermissionDenied,
        ),
        (
            "a playlist without a session",
            propose(rename(), ""),
            tonic::Code::Unauthenticated,
        ),
        (
            "a playlist with a forged session",
            propose(rename(), &forged),
            tonic::Code::Unauthenticated,
        ),
        (
            "a promotion of oneself",
            propose(promote(&accounts[0].1), &vic),
            tonic::Code::PermissionDenied,
        ),
        (
            "a promotion of another",
            propose(promote(&wes_id), &vic),
            tonic::Code::PermissionDenied,
        ),
        (
            "another's logout",
            propose(end_wes, &vic),
            tonic::Code::PermissionDenied,
        ),
        (
            "a logout from the future",
            propose(vic_forever, &vic),
            tonic::Code::InvalidArgument,
        ),
        (
            "a password from the future",
            propose(future_password, &vic),
            tonic::Code::InvalidArgument,
        ),
    ] {
        let err = gateway.propose(request).await.expect_err(what);
        assert_eq!(err.code(), expected, "{what}: {err:?}");
    }
    // Deleting a song and changing the layout need an admin's session.
    let song_id = uuid::Uuid::new_v4().to_string();
    for (what, session, expected) in [
        (
            "without a session",
            String::new(),
            tonic::Code::Unauthenticated,
        ),
        ("for a listener", vic.clone(), tonic::Code::PermissionDenied),
        (
            "with a forged session",
            forged.clone(),
            tonic::Code::Unauthenticated,
        ),
    ] {
        let err = gateway
            .delete_song(pb::DeleteSongRequest {
                id: song_id.clone(),
                session: session.clone(),
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), expected, "DeleteSong {what}: {err:?}");
        let remove = rondo_proto::ring::v1::LayoutChange {
            expect_epoch: 0,
            op: Some(rondo_proto::ring::v1::layout_change::Op::Remove(
                rondo_proto::ring::v1::RemoveNode {
                    id: cluster.nodes[0].id.to_string(),
                    force: false,
                },
            )),
            proposal: String::new(),
        };
        let err = gateway
            .change_layout(pb::ChangeLayoutRequest {
                change: Some(remove),
                session,
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), expected, "ChangeLayout {what}: {err:?}");
    }

    // The same rename with wes's own session goes through (so the
    // refusals above were about authority, not form).
    gateway.propose(propose(rename(), &wes)).await.unwrap();
    let after_rename = state(&cluster).await;
    assert_ne!(after_rename, before);

    // Bytes that are no audio, or not the audio they are sent as.
    let song = |mime: &str| pb::Song {
        id: uuid::Uuid::new_v4().to_string(),
        title: "Disguised".into(),
        artist: Some(pb::Artist {
            id: uuid::Uuid::new_v4().to_string(),
            name: "Nobody".into(),
        }),
        mime_type: mime.into(),
        ..Default::default()
    };
    for (bytes, mime) in [
        (
            b"<html><script>alert(1)</script></html>".to_vec(),
            "audio/wav",
        ),
        (rondo_tests::tiny_wav(b"real wav"), "audio/mpeg"),
    ] {
        use pb::upload_song_request::Part;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let parts = [
            Part::Header(pb::SongHeader {
                song: Some(song(mime)),
            }),
            Part::Chunk(bytes),
            Part::Finish(pb::Finish { content_hash: hash }),
        ];
        let err = gateway
            .upload_song(futures::stream::iter(
                parts.map(|p| pb::UploadSongRequest { part: Some(p) }),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("unsupported media"), "{err:?}");
    }
    assert_eq!(
        state(&cluster).await,
        after_rename,
        "a refused call changed something"
    );
}
