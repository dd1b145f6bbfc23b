//! Uploading, tags, search, name matching, deletion and durability.

use serde_json::{Value, json};

use crate::{SONG_FIELDS, fixture, query, upload_ok, wav};
use rondo_tests::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn upload_reads_tags_and_search_finds_it() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = wav(
        tmp.path(),
        "a.wav",
        "Night Train",
        "Ada Sine",
        "Rails",
        2.0,
        1,
    );
    let song = upload_ok(&cluster, &path, json!({})).await;
    assert_eq!(song["title"], "Night Train");
    assert_eq!(song["artist"]["name"], "Ada Sine");
    assert_eq!(song["album"]["title"], "Rails");
    assert_eq!(song["trackNumber"], 3);
    assert_eq!(song["year"], 1999);
    assert_eq!(song["genre"], "Test");
    assert_eq!(song["mimeType"], "audio/wav");
    assert_eq!(song["durationMs"], 2000);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        song["sizeBytes"],
        bytes.len().to_string(),
        "a 64-bit count, as a string"
    );
    assert_eq!(song["contentHash"], blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(song["replicas"][0]["id"], cluster.nodes[0].id.to_string());

    // Search is case-insensitive over title, artist and album.
    for q in ["night", "ADA SINE", "rails train", "Ada"] {
        let r = query(
            &cluster,
            "query($q: String) { songs(search: $q) { totalCount nodes { id } } }",
            json!({ "q": q }),
        )
        .await;
        assert_eq!(r["data"]["songs"]["totalCount"], 1, "search {q:?}: {r}");
        assert_eq!(r["data"]["songs"]["nodes"][0]["id"], song["id"]);
    }
    let r = query(
        &cluster,
        "{ songs(search: \"nothing like it\") { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["songs"]["totalCount"], 0);

    // The same artist in another case is matched, not duplicated; the
    // album is matched within the artist.
    let other = wav(
        tmp.path(),
        "b.wav",
        "Day Train",
        "ADA sine",
        "rails",
        1.0,
        2,
    );
    let second = upload_ok(&cluster, &other, json!({})).await;
    assert_eq!(second["artist"]["id"], song["artist"]["id"]);
    assert_eq!(second["album"]["id"], song["album"]["id"]);
    let r = query(&cluster, "{ artists(first: 10) { totalCount nodes { name albums(first: 5) { nodes { title songs(first: 10) { nodes { title } } } } songs(first: 10) { totalCount nodes { title } } } } }", json!({})).await;
    assert_eq!(r["data"]["artists"]["totalCount"], 1, "{r}");
    let artist = &r["data"]["artists"]["nodes"][0];
    assert_eq!(artist["songs"]["totalCount"], 2, "{r}");
    assert_eq!(artist["songs"]["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(
        artist["albums"]["nodes"][0]["songs"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // An artist's songs are paged like every list: one per page here.
    let r = query(&cluster, "{ artists { nodes { songs(first: 1) { totalCount pageInfo { hasNextPage endCursor } nodes { title } } } } }", json!({})).await;
    let page = &r["data"]["artists"]["nodes"][0]["songs"];
    assert_eq!(page["nodes"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(page["pageInfo"]["hasNextPage"], true, "{r}");
    let r = query(
        &cluster,
        "query($id: ID!) { album(id: $id) { title year artist { name } songs { nodes { title } } } }",
        json!({ "id": song["album"]["id"] }),
    )
    .await;
    assert_eq!(r["data"]["album"]["artist"]["name"], "Ada Sine");
    assert_eq!(r["data"]["album"]["year"], 1999);
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_override_tags_and_formats_are_recognised_by_content() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = wav(
        tmp.path(),
        "x.wav",
        "Tagged",
        "Tag Artist",
        "Tag Album",
        1.0,
        3,
    );
    let song = upload_ok(
        &cluster,
        &path,
        json!({ "title": "Given", "artist": "Given Artist", "album": "Given Album" }),
    )
    .await;
    assert_eq!(
        (
            song["title"].as_str(),
            song["artist"]["name"].as_str(),
            song["album"]["title"].as_str()
        ),
        (Some("Given"), Some("Given Artist"), Some("Given Album"))
    );

    for (file, mime) in [
        ("tone.mp3", "audio/mpeg"),
        ("tone.flac", "audio/flac"),
        ("tone.ogg", "audio/ogg"),
        ("tone.opus", "audio/ogg; codecs=opus"),
        ("tone.m4a", "audio/mp4"),
    ] {
        // A misleading name: the format comes from the bytes.
        let renamed = tmp.path().join(format!("{file}.txt"));
        std::fs::copy(fixture(file), &renamed).unwrap();
        let song = upload_ok(&cluster, &renamed, json!({})).await;
        assert_eq!(song["mimeType"], mime, "{file}");
        let ext = file.rsplit('.').next().unwrap();
        assert_eq!(song["title"], format!("Fixture {ext}"), "{file}");
        assert_eq!(song["artist"]["name"], "Fixture Artist", "{file}");
        assert_eq!(song["trackNumber"], 7, "{file}");
        assert_eq!(song["year"], 2011, "{file}");
        let ms = song["durationMs"].as_u64().unwrap();
        assert!((2900..=3100).contains(&ms), "{file}: duration {ms}");
    }
    let r = query(
        &cluster,
        "{ albums(search: \"fixtures\") { totalCount nodes { songs { nodes { title } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["albums"]["totalCount"], 1);
    assert_eq!(
        r["data"]["albums"]["nodes"][0]["songs"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_walks_every_song_once() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for i in 0..7u64 {
        let p = wav(
            tmp.path(),
            &format!("{i}.wav"),
            &format!("Song {i}"),
            "Pager",
            "Pages",
            0.5,
            i,
        );
        ids.push(
            upload_ok(&cluster, &p, json!({})).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let r = query(
            &cluster,
            "query($a: String) { songs(first: 3, after: $a) { totalCount edges { cursor node { id } } nodes { id } pageInfo { hasNextPage endCursor } } }",
            json!({ "a": after }),
        )
        .await;
        let c = &r["data"]["songs"];
        assert_eq!(c["totalCount"], 7);
        assert_eq!(
            c["edges"].as_array().unwrap().len(),
            c["nodes"].as_array().unwrap().len()
        );
        seen.extend(
            c["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_str().unwrap().to_string()),
        );
        if c["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = c["pageInfo"]["endCursor"].clone();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "{seen:?}");
    ids.sort();
    assert_eq!(sorted, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_song_artist_album_and_blob() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let before = cluster.nodes[0].disk();
    let song = upload_ok(
        &cluster,
        &wav(tmp.path(), "d.wav", "Gone", "Ghost", "Away", 1.0, 9),
        json!({}),
    )
    .await;
    assert_eq!(cluster.nodes[0].disk().blob_files, before.blob_files + 1);
    let r = cluster
        .admin
        .raw(
            "mutation($id: ID!) { deleteSong(id: $id) }",
            json!({ "id": song["id"] }),
        )
        .await
        .unwrap();
    assert_eq!(r["data"]["deleteSong"], true, "{r}");
    let r = query(
        &cluster,
        &format!("query($id: ID!) {{ song(id: $id) {SONG_FIELDS} }}"),
        json!({ "id": song["id"] }),
    )
    .await;
    assert_eq!(r["data"]["song"], Value::Null);
    let r = query(
        &cluster,
        "{ artists { totalCount } albums { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(
        (
            r["data"]["artists"]["totalCount"].as_u64(),
            r["data"]["albums"]["totalCount"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // The blob goes through the outbox, after the commit.
    rondo_tests::eventually(
        "blob removed",
        std::time::Duration::from_secs(10),
        || async { (cluster.nodes[0].disk() == before).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_upload_survives_kill_9() {
    let mut cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = wav(tmp.path(), "k.wav", "Survivor", "Durable", "Fsync", 3.0, 11);
    let song = upload_ok(&cluster, &path, json!({})).await;
    // SIGKILL straight after the acknowledgement: no chance to flush.
    cluster.kill_node(0);
    cluster.restart_node(0).await.unwrap();
    let id: rondo_core::SongId = song["id"].as_str().unwrap().parse().unwrap();
    let url = cluster.signed_url(0, id, rondo_core_now() + 60);
    let (status, _, body) = crate::get(&cluster, reqwest::Method::GET, &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        std::fs::read(&path).unwrap(),
        "streamed bytes differ after restart"
    );
    assert_eq!(cluster.song_count().await.unwrap(), 1);
}

pub fn rondo_core_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
