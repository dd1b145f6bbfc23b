//! The library as a listener with a real collection sees it: one song per
//! file however often and however it is sent.

use rondo_cli::client::Client;
use rondo_tests::Cluster;
use serde_json::{Value, json};

/// Uploads through a gateway's GraphQL API: the song's id and whether the
/// answer says the file was a duplicate.
async fn upload(c: &Client, path: &std::path::Path) -> (String, bool) {
    let r = c.upload_raw(path, json!({}), "{ id title }").await.unwrap();
    assert!(r.get("errors").is_none(), "{r}");
    let id = r
        .pointer("/data/uploadSong/song/id")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    let duplicate = r.pointer("/data/uploadSong/duplicate").unwrap() == true;
    (id, duplicate)
}

async fn song_count(c: &Client, search: &str) -> u64 {
    let d = c
        .query(
            "query($s: String) { songs(search: $s) { totalCount } }",
            json!({ "s": search }),
        )
        .await
        .unwrap();
    d.pointer("/songs/totalCount")
        .and_then(Value::as_u64)
        .unwrap()
}

/// The same bytes are one song: sent again (with other names, even), sent
/// through two gateways at once (the ring's order decides which upload is
/// the song), sent straight to the nodes by `rondo upload`; every answer
/// names the first. A deleted song's file is a new song again.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_file_is_one_song_however_it_is_sent() {
    let cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = crate::wav(tmp.path(), "a.wav", "Only Once", "Oner", "Single", 1.0, 1);
    let (first, dup) = upload(&cluster.admin, &a).await;
    assert!(!dup);
    assert_eq!(upload(&cluster.admin, &a).await, (first.clone(), true));
    let renamed = cluster
        .admin
        .upload_raw(&a, json!({ "title": "Other Name" }), "{ id title }")
        .await
        .unwrap();
    assert_eq!(
        renamed.pointer("/data/uploadSong/song/id"),
        Some(&json!(first)),
        "{renamed}"
    );
    assert_eq!(
        renamed.pointer("/data/uploadSong/song/title"),
        Some(&json!("Only Once")),
        "the song as it is, not as it was sent again"
    );

    // Two gateways at once, several files: each file is one song, and of
    // its two answers exactly one is the duplicate.
    let (_gateway2, second) = cluster.spawn_gateway("gateway2").await.unwrap();
    for k in 0..4u64 {
        let f = crate::wav(
            tmp.path(),
            &format!("race{k}.wav"),
            &format!("Raced {k}"),
            "Racers",
            "Photo Finish",
            0.5,
            10 + k,
        );
        let (x, y) = tokio::join!(upload(&cluster.admin, &f), upload(&second, &f));
        assert_eq!(x.0, y.0, "file {k}: one song");
        assert_ne!(x.1, y.1, "file {k}: exactly one answer is the duplicate");
        assert_eq!(song_count(&cluster.admin, &format!("raced {k}")).await, 1);
        assert_eq!(song_count(&second, &format!("raced {k}")).await, 1);
    }
    assert_eq!(song_count(&cluster.admin, "").await, 5);

    // `rondo upload` of a folder holding two known files and a new one:
    // straight to the nodes, which answer the known ones with their songs.
    let folder = tmp.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&a, folder.join("a.wav")).unwrap();
    std::fs::copy(tmp.path().join("race0.wav"), folder.join("r.wav")).unwrap();
    crate::wav(&folder, "new.wav", "Brand New", "Oner", "Single", 0.5, 99);
    let (code, out, err) = crate::cli::rondo(
        &cluster,
        &cluster.token,
        &["upload", folder.to_str().unwrap()],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let same: Vec<&str> = out.lines().filter(|l| l.starts_with("same ")).collect();
    assert_eq!(same.len(), 2, "{out}");
    assert!(same.iter().any(|l| l.contains(&first)), "{out}");
    assert!(
        out.contains("1 uploaded, 2 already in the library"),
        "{out}"
    );
    assert_eq!(song_count(&cluster.admin, "").await, 6);

    // Deleted, the file is a new song when it comes back.
    let d = cluster
        .admin
        .query(
            "mutation($id: ID!) { deleteSong(id: $id) }",
            json!({ "id": first }),
        )
        .await
        .unwrap();
    assert_eq!(d["deleteSong"], true, "{d}");
    let (again, dup) = upload(&cluster.admin, &a).await;
    assert!(!dup);
    assert_ne!(again, first);
    assert_eq!(song_count(&cluster.admin, "").await, 6);
}
