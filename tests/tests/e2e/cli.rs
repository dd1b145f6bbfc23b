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

    let (code, out, _) = rondo(&cluster, &cluster.token, &["status"]);
    assert_eq!(code, 0, "{out}");
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
