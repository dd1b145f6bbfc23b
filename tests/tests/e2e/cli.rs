//! The `rondo` CLI against a real cluster.

use std::process::Command;

use rondo_tests::{Cluster, bin};

pub fn rondo(cluster: &Cluster, token: &str, args: &[&str]) -> (i32, String, String) {
    let ca = cluster.dir.path().join("tls/ca.pem");
    let out = Command::new(bin("rondo"))
        .args(args)
        .env("RONDO_GATEWAY", &cluster.admin.base)
        .env("RONDO_TOKEN", token)
        .env("RONDO_CA_CERT", ca)
        .env("RONDO_DATA", cluster.dir.path().join("no-dev-here"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_folder_songs_and_status() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let nested = tmp.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    crate::wav(
        tmp.path(),
        "one.wav",
        "First Cli",
        "Shell",
        "Terminal",
        0.5,
        1,
    );
    crate::wav(
        &nested,
        "two.wav",
        "Second Cli",
        "Shell",
        "Terminal",
        0.5,
        2,
    );
    std::fs::copy(crate::fixture("tone.mp3"), nested.join("three.mp3")).unwrap();
    std::fs::write(tmp.path().join("cover.txt"), "not audio").unwrap();

    let dir = tmp.path().to_str().unwrap();
    let (code, out, err) = rondo(&cluster, &cluster.token, &["upload", dir]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("skip") && l.contains("cover.txt")),
        "{out}"
    );
    assert!(out.contains("3 uploaded, 1 skipped, 0 failed"), "{out}");
    assert_eq!(cluster.song_count().await.unwrap(), 3);

    let (code, out, _) = rondo(&cluster, &cluster.token, &["songs", "--search", "second"]);
    assert_eq!(code, 0);
    assert!(out.contains("Second Cli — Shell — Terminal"), "{out}");
    assert!(out.contains("1 of 1 songs"), "{out}");
    // Sizes for people: "86.2 KiB", not a count of bytes.
    let size = std::fs::metadata(nested.join("two.wav")).unwrap().len();
    assert!(
        out.contains(" KiB") && !out.contains(&size.to_string()),
        "{size}: {out}"
    );

    let (code, out, _) = rondo(&cluster, &cluster.token, &["status"]);
    assert_eq!(code, 0, "{out}");
    // Bytes stored with a unit ("0 B", "1.2 MiB").
    assert!(out.contains(" B ") || out.contains("iB "), "{out}");
    assert!(
        out.contains(&cluster.nodes[0].id.to_string()) && out.contains("UP"),
        "{out}"
    );
    // The gateway lists itself, without VRRP here.
    assert!(
        out.lines()
            .any(|l| l.starts_with("replica") && l.contains("DISABLED")),
        "{out}"
    );

    // A wrong token fails every upload: non-zero exit, one line per file.
    let (code, out, _) = rondo(&cluster, "wrong", &["upload", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("0 uploaded, 0 skipped, 4 failed"), "{out}");
    assert_eq!(cluster.song_count().await.unwrap(), 3);

    // A missing path is a clear error.
    let (code, _, err) = rondo(
        &cluster,
        &cluster.token,
        &["upload", "/definitely/not/here"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("/definitely/not/here"), "{err}");
    // It works with --token, and says that a token on the command line is
    // seen by every user of the machine; from the environment it does not.
    let (code, _, err) = rondo(&cluster, "", &["status", "--token", &cluster.token]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: a token given with --token"), "{err}");
    let (code, _, err) = rondo(&cluster, &cluster.token, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// A node killed just before a bulk upload: the gateway still lists it
/// until its next health check, so some grants name it; those files are
/// sent again with new grants, and every file ends up stored exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn upload_sends_again_what_a_dead_node_could_not_take() {
    let mut cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..9 {
        crate::wav(
            tmp.path(),
            &format!("retry-{i}.wav"),
            &format!("Retry {i}"),
            "Phoenix",
            "Again",
            0.3,
            100 + i,
        );
    }
    // The first ring needs every initial voter; once it has formed, a
    // majority is enough.
    rondo_tests::eventually(
        "the first ring",
        std::time::Duration::from_secs(20),
        || async {
            let s = cluster.ring_status(0).await.ok()?;
            (s.phase == "operational" && s.members.len() == 3).then_some(())
        },
    )
    .await
    .unwrap();
    cluster.kill_node(2);
    let dir = tmp.path().to_str().unwrap();
    let (code, out, err) = rondo(&cluster, &cluster.token, &["upload", dir]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("9 uploaded, 0 skipped, 0 failed"),
        "{out}\n{err}"
    );
    assert_eq!(cluster.song_count().await.unwrap(), 9, "each file once");
    eprintln!("{err}");

    // `rondo status` reports the dead node, with an exit code of its own
    // (not the one of a lost layout change).
    let (code, out) = rondo_tests::eventually(
        "rondo status to report the dead node",
        std::time::Duration::from_secs(20),
        || async {
            let (code, out, _) = rondo(&cluster, &cluster.token, &["status"]);
            out.lines()
                .any(|l| l.starts_with("node") && l.contains("DOWN"))
                .then_some((code, out))
        },
    )
    .await
    .unwrap();
    assert_eq!(code, 5, "{out}");
}

/// Issue 16's CLI: `--json` on status, ring, songs and layout (with the
/// same exit codes), `songs --all` through every page, a one-line hint for
/// the usual mistakes in a gateway URL, and `rondo node id`.
#[tokio::test(flavor = "multi_thread")]
async fn json_output_every_page_hints_and_node_ids() {
    let cluster = Cluster::builder().start().await.unwrap();
    cluster.wait_layout().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for k in 0..5 {
        crate::wav(
            tmp.path(),
            &format!("{k}.wav"),
            &format!("Paged {k}"),
            "Pages",
            "Book",
            0.2,
            k,
        );
    }
    let dir = tmp.path().display().to_string();
    let (code, out, err) = rondo(&cluster, &cluster.token, &["upload", &dir]);
    assert_eq!(code, 0, "{out}{err}");

    let json = |args: &[&str]| {
        let (code, out, err) = rondo(&cluster, &cluster.token, args);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}{err}"));
        (code, v)
    };
    let (code, status) = json(&["status", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        status["cluster"]["nodes"].as_array().map(Vec::len),
        Some(cluster.nodes.len())
    );
    let (code, ring) = json(&["ring", "--json"]);
    assert_eq!(code, 0);
    assert!(ring["cluster"]["ring"]["id"].is_string(), "{ring}");
    let (code, layout) = json(&["layout", "show", "--json"]);
    assert_eq!(code, 0);
    assert!(layout["cluster"]["layout"]["epoch"].is_u64(), "{layout}");
    // Pages of two: every song, each once.
    let (code, songs) = json(&["songs", "--all", "--page-size", "2", "--json"]);
    assert_eq!(code, 0);
    let ids: std::collections::BTreeSet<&str> = songs["songs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 5, "{songs}");
    assert_eq!(songs["totalCount"], 5);
    let (code, one_page) = json(&["songs", "--limit", "2", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(one_page["songs"].as_array().map(Vec::len), Some(2));

    // The usual mistakes, each with its hint and exit code 1.
    let port = cluster.admin.base.rsplit(':').next().unwrap().to_string();
    for (gateway, says) in [
        (format!("http://127.0.0.1:{port}"), "HTTPS only"),
        (format!("127.0.0.1:{port}"), "needs its scheme"),
        (
            format!("https://127.0.0.1:{port}/graphql"),
            "without /graphql",
        ),
        ("https://127.0.0.1:1".to_string(), "hint: nothing listens"),
    ] {
        let (code, out, err) = rondo(&cluster, &cluster.token, &["status", "--gateway", &gateway]);
        assert_eq!(code, 1, "{gateway}: {out}{err}");
        assert!(err.contains(says), "{gateway}: {err}");
    }

    // No --ca-cert: the system's trust roots, which (SSL_CERT_FILE, read
    // by rustls-native-certs) hold the cluster's CA or do not.
    let ca = cluster.dir.path().join("tls/ca.pem");
    // Another CA: the cluster's internal one, which signs no gateway's
    // public certificate.
    let other = cluster.dir.path().join("tls/cluster-ca.pem");
    assert!(other.exists());
    for (roots, works) in [(&ca, true), (&other, false)] {
        let out = Command::new(bin("rondo"))
            .args(["status", "--json"])
            .env("RONDO_GATEWAY", &cluster.admin.base)
            .env("RONDO_TOKEN", &cluster.token)
            .env_remove("RONDO_CA_CERT")
            .env("SSL_CERT_FILE", roots)
            .env("RONDO_DATA", cluster.dir.path().join("no-dev-here"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), works, "{roots:?}: {err}");
        if !works {
            assert_eq!(out.status.code(), Some(1));
            assert!(err.contains("certificate is not trusted"), "{err}");
        }
    }

    // --version names the commit the binaries were built from.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    for b in ["rondo", "rondo-node", "rondo-gateway"] {
        let out = Command::new(bin(b)).arg("--version").output().unwrap();
        let v = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{b} --version");
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{b}: {v}");
        if head.len() == 12 {
            assert!(v.contains(&format!("(commit {head})")), "{b}: {v}");
        }
    }

    // A node's id: from its certificate, the certificate's directory, or
    // a data directory holding only `node-id`.
    let node = &cluster.nodes[0];
    let only_id = tmp.path().join("data-only");
    std::fs::create_dir_all(&only_id).unwrap();
    std::fs::copy(node.dir.join("node-id"), only_id.join("node-id")).unwrap();
    for path in [node.dir.join("cluster-cert.pem"), node.dir.clone(), only_id] {
        let (code, out, err) = rondo(
            &cluster,
            &cluster.token,
            &["node", "id", &path.display().to_string()],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), node.id.to_string());
    }
}

/// `rondo init` makes a deployment's files once: ids stay across runs, the
/// peers file lists the bootstrap nodes with the ids their certificates
/// name, a node added later gets its files and a certificate the public
/// CA still signs.
#[test]
fn init_makes_a_deployment_once_and_adds_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("conf");
    let init = |extra: &[&str]| {
        let mut args = vec![
            "init",
            "--out",
            out.to_str().unwrap(),
            "--nodes",
            "n1=10.9.0.1,n2,n3",
            "--mount",
            "/etc/rondo",
        ];
        args.extend_from_slice(extra);
        let o = Command::new(bin("rondo")).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let id_of = |name: &str| {
        let o = Command::new(bin("rondo"))
            .args(["node", "id", out.join("nodes").join(name).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    init(&[]);
    let ids: Vec<String> = ["n1", "n2", "n3"].iter().map(|n| id_of(n)).collect();
    let peers: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("peers.toml")).unwrap()).unwrap();
    let listed: Vec<(String, String)> = peers["node"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["grpc_url"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(ids[0].clone(), "https://10.9.0.1:7400".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(ids[1].clone(), "https://n2:7400".into())),
        "{listed:?}"
    );
    let node1: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("nodes/n1/node.toml")).unwrap()).unwrap();
    assert_eq!(
        node1["cluster_cert"].as_str(),
        Some("/etc/rondo/nodes/n1/cluster-cert.pem")
    );

    // Again, with a node that joins later: the others keep their ids.
    init(&["--join", "n4=10.9.0.4"]);
    assert_eq!(id_of("n1"), ids[0]);
    let n4: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("nodes/n4/node.toml")).unwrap()).unwrap();
    assert_eq!(n4["ring"]["auto_join"].as_bool(), Some(true));
    assert_eq!(
        n4["ring"]["grpc_url"].as_str(),
        Some("https://10.9.0.4:7400")
    );
    assert!(n4["ring"].get("peers_file").is_none());
    // The server certificate now names n4, under the same public CA.
    let ca = std::fs::read(out.join("tls/ca.pem")).unwrap();
    let server = std::fs::read(out.join("tls/server.pem")).unwrap();
    let roots = rondo_core::tls::certificates(&ca).unwrap();
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(store),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let leaf = rondo_core::tls::certificates(&server).unwrap().remove(0);
    let name = rustls::pki_types::ServerName::try_from("n4").unwrap();
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        verifier.as_ref(),
        &leaf,
        &[],
        &name,
        &[],
        rustls::pki_types::UnixTime::now(),
    )
    .unwrap();
}
