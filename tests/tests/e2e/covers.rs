//! Cover art: pictures embedded in the files ffmpeg makes (a JPEG in an
//! MP3, a PNG in a FLAC) are kept as blobs on their owners, served by any
//! node at the sizes asked for (decoded here: the size is right), cached
//! by browsers, and an admin's own image for an album replaces its first
//! track's, until removed.

use std::path::Path;

use rondo_tests::Cluster;
use serde_json::{Value, json};

/// A plain picture of `colour`, `w`×`h`, made by ffmpeg (`.jpg` or `.png`).
fn picture(path: &Path, colour: &str, w: u32, h: u32) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("color=c={colour}:s={w}x{h}"))
        .args(["-frames:v", "1", "-y"])
        .arg(path)
        .status()
        .expect("ffmpeg is missing: .ci/run installs it (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg made no {}", path.display());
}

/// A one-second tone with `cover` attached as its front cover (none if
/// `None`), encoded with `codec`, tagged with `tags`.
fn song(path: &Path, freq: u32, codec: &[&str], cover: Option<&Path>, tags: &[(&str, &str)]) {
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:duration=1"));
    if let Some(cover) = cover {
        cmd.arg("-i").arg(cover).args([
            "-map",
            "0:a",
            "-map",
            "1:v",
            "-c:v",
            "copy",
            "-disposition:v",
            "attached_pic",
            "-metadata:s:v",
            "comment=Cover (front)",
        ]);
    }
    cmd.args(codec);
    for (k, v) in tags {
        cmd.arg("-metadata").arg(format!("{k}={v}"));
    }
    let status = cmd.arg("-y").arg(path).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg made no {}", path.display());
}

/// Fetches a picture URL: status, headers, body.
async fn fetch(
    cluster: &Cluster,
    url: &str,
    if_none_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = cluster.http().get(url);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

/// Decodes a served picture: (width, height, the colour of its centre).
fn decode(bytes: &[u8]) -> (u32, u32, [u8; 3]) {
    let img = image::load_from_memory(bytes)
        .unwrap_or_else(|e| panic!("not a picture ({} bytes): {e}", bytes.len()))
        .to_rgb8();
    let centre = img.get_pixel(img.width() / 2, img.height() / 2).0;
    (img.width(), img.height(), centre)
}

fn near(c: [u8; 3], want: [u8; 3]) -> bool {
    c.iter().zip(want).all(|(a, b)| a.abs_diff(b) < 40)
}

/// The album titled `title`: (id, its cover URL at `size`, each song's
/// title and cover URL at `size`).
async fn album(
    cluster: &Cluster,
    title: &str,
    size: u32,
) -> (String, Option<String>, Vec<(String, Option<String>)>) {
    let d = crate::query(
        cluster,
        "query($s: String, $n: Int!) { albums(first: 5, search: $s) { nodes { id title coverArt(size: $n) songs { nodes { title coverArt(size: $n) } } } } }",
        json!({ "s": title, "n": size }),
    )
    .await;
    let a = d["data"]["albums"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["title"] == title)
        .unwrap_or_else(|| panic!("no album {title}: {d}"))
        .clone();
    let url = |v: &Value| v.as_str().map(str::to_string);
    let songs = a["songs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["title"].as_str().unwrap().to_string(),
                url(&s["coverArt"]),
            )
        })
        .collect();
    (
        a["id"].as_str().unwrap().to_string(),
        url(&a["coverArt"]),
        songs,
    )
}

/// Sets an album's own image through GraphQL's multipart upload (`None`
/// removes it); the response.
async fn set_album_image(cluster: &Cluster, album: &str, image: Option<Vec<u8>>) -> Value {
    let query = "mutation($a: ID!, $i: Upload) { setAlbumCoverArt(albumId: $a, image: $i) { id title coverArt(size: 64) } }";
    let mut req = cluster
        .admin
        .http()
        .post(cluster.admin.url())
        .bearer_auth(&cluster.token);
    req = match image {
        Some(bytes) => {
            let operations = json!({ "query": query, "variables": { "a": album, "i": null } });
            let form = reqwest::multipart::Form::new()
                .text("operations", operations.to_string())
                .text("map", json!({ "0": ["variables.i"] }).to_string())
                .part(
                    "0",
                    reqwest::multipart::Part::bytes(bytes).file_name("cover"),
                );
            req.multipart(form)
        }
        None => req.json(&json!({ "query": query, "variables": { "a": album, "i": null } })),
    };
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn covers_are_read_from_files_served_at_their_sizes_and_set_by_an_admin() {
    let cluster = Cluster::builder().nodes(3).start().await.unwrap();
    // One owner per partition: a picture lives on one node, and the others
    // serve it all the same.
    cluster.wait_layout().await.unwrap();
    let r = cluster
        .admin
        .raw(
            "mutation { setReplicationFactor(factor: 1) { replicationFactor } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        r["data"]["setReplicationFactor"]["replicationFactor"], 1,
        "{r}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (red, blue, green) = (
        dir.join("red.jpg"),
        dir.join("blue.png"),
        dir.join("green.png"),
    );
    picture(&red, "red", 1000, 800);
    picture(&blue, "blue", 640, 640);
    picture(&green, "green", 500, 500);
    let mp3 = ["-c:a", "libmp3lame", "-b:a", "128k", "-id3v2_version", "3"];
    let flac = ["-c:a", "flac"];
    let files = [
        (
            "plain.mp3",
            300,
            &mp3[..],
            None,
            "Bare Intro",
            "Colours",
            "1",
        ),
        (
            "red.mp3",
            320,
            &mp3[..],
            Some(&red),
            "Red Song",
            "Colours",
            "2",
        ),
        (
            "blue.flac",
            340,
            &flac[..],
            Some(&blue),
            "Blue Song",
            "Blues",
            "1",
        ),
    ];
    for (name, freq, codec, cover, title, album_title, track) in files {
        let path = dir.join(name);
        let tags = [
            ("title", title),
            ("artist", "Painter"),
            ("album", album_title),
            ("track", track),
        ];
        song(&path, freq, codec, cover.map(|p| p.as_path()), &tags);
        crate::upload_ok(&cluster, &path, json!({})).await;
    }

    // Colours: the album shows its first track that has a picture (track
    // 2's JPEG); track 1, which has none, shows the album's.
    let (colours, cover, songs) = album(&cluster, "Colours", 64).await;
    let cover = cover.expect("Colours has a cover");
    assert_eq!(songs.len(), 2);
    assert_eq!(songs[0].1.as_deref(), Some(cover.as_str()), "{songs:?}");
    assert_eq!(songs[1].1.as_deref(), Some(cover.as_str()), "{songs:?}");
    let (status, headers, body) = fetch(&cluster, &cover, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "image/jpeg");
    let (w, h, c) = decode(&body);
    // 1000×800 at 64: the longer side is 64, the ratio kept.
    assert_eq!((w, h), (64, 51));
    assert!(near(c, [255, 0, 0]), "red: {c:?}");
    // Cacheable: a strong ETag, a max-age, 304 for the tag.
    let etag = headers["etag"].to_str().unwrap().to_string();
    let cache = headers["cache-control"].to_str().unwrap();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    let (status, _, body) = fetch(&cluster, &cover, Some(&etag)).await;
    assert_eq!((status, body.len()), (304, 0));
    // The URL stays the same from one query to the next (browsers cache it).
    assert_eq!(
        album(&cluster, "Colours", 64).await.1.as_deref(),
        Some(cover.as_str())
    );
    // Larger sizes, and never larger than the picture.
    let (_, at300, _) = album(&cluster, "Colours", 300).await;
    assert_eq!(
        decode(&fetch(&cluster, &at300.unwrap(), None).await.2).0,
        300
    );
    let (_, blues, blue_songs) = album(&cluster, "Blues", 1200).await;
    let (_, _, body) = fetch(&cluster, &blues.clone().unwrap(), None).await;
    let (w, h, c) = decode(&body);
    assert_eq!((w, h), (640, 640), "a 640-pixel PNG is not enlarged");
    assert!(near(c, [0, 0, 255]), "blue: {c:?}");
    assert_eq!(blue_songs[0].1, blues);
    // A size between the served ones gets the next larger (100 → 128).
    let (_, at100, _) = album(&cluster, "Blues", 100).await;
    assert_eq!(
        decode(&fetch(&cluster, &at100.unwrap(), None).await.2).0,
        128
    );

    // Any node serves any picture: the one holding it, and the others
    // (each reads it from its owner once).
    let hash = cover
        .split("/art/")
        .nth(1)
        .and_then(|rest| rest.split('?').next())
        .unwrap()
        .to_string();
    let holders: Vec<usize> = (0..3)
        .filter(|&i| cluster.nodes[i].blob_files().contains(&hash))
        .collect();
    // R = 1: its owner, and perhaps the node that took the upload (until
    // its resync gives the copy up); never all three.
    assert!(
        !holders.is_empty() && holders.len() < 3,
        "copies at R = 1: {holders:?}"
    );
    let query = cover.split('?').nth(1).unwrap();
    for node in &cluster.nodes {
        let url = format!("https://{}/art/{hash}?{query}", node.http);
        let (status, _, body) = fetch(&cluster, &url, None).await;
        assert_eq!(
            status,
            200,
            "node {}: {}",
            node.id,
            String::from_utf8_lossy(&body)
        );
        assert_eq!(decode(&body).0, 64);
    }
    // Signed: another size, another picture or a bad signature is refused.
    for bad in [
        cover.replace("size=64", "size=600"),
        cover.replace(&hash, &"0".repeat(64)),
        format!(
            "{}0",
            cover.trim_end_matches(|c: char| c.is_ascii_hexdigit())
        ),
    ] {
        let (status, _, _) = fetch(&cluster, &bad, None).await;
        assert_eq!(status, 403, "{bad}");
    }

    // An admin gives Colours its own image: the album and its track
    // without a picture show it; the track with its own keeps that.
    let r = set_album_image(&cluster, &colours, Some(std::fs::read(&green).unwrap())).await;
    assert!(r.get("errors").is_none(), "{r}");
    let (_, own, songs) = album(&cluster, "Colours", 64).await;
    let own = own.unwrap();
    assert_ne!(own, cover);
    let (_, _, body) = fetch(&cluster, &own, None).await;
    let (w, h, c) = decode(&body);
    assert_eq!((w, h), (64, 64));
    assert!(near(c, [0, 128, 0]), "green: {c:?}");
    let by_title: std::collections::HashMap<_, _> = songs.into_iter().collect();
    assert_eq!(by_title["Bare Intro"].as_deref(), Some(own.as_str()));
    assert_eq!(by_title["Red Song"].as_deref(), Some(cover.as_str()));
    // What is not a picture is refused for what it is, and changes nothing.
    let r = set_album_image(&cluster, &colours, Some(b"%PDF-1.4 a document".to_vec())).await;
    assert_eq!(crate::code(&r), "UNSUPPORTED_MEDIA", "{r}");
    assert_eq!(
        album(&cluster, "Colours", 64).await.1.as_deref(),
        Some(own.as_str())
    );
    // Removed: the first track's picture again, and the image's blob goes
    // from its owner.
    let own_hash = own
        .split("/art/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let r = set_album_image(&cluster, &colours, None).await;
    assert!(r.get("errors").is_none(), "{r}");
    assert_eq!(
        album(&cluster, "Colours", 64).await.1.as_deref(),
        Some(cover.as_str())
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cluster
        .nodes
        .iter()
        .any(|n| n.blob_files().contains(&own_hash))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed image's blob stays"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Only an admin sets an album's image.
    let r = crate::query(
        &cluster,
        "mutation($a: ID!) { setAlbumCoverArt(albumId: $a) { id } }",
        json!({ "a": colours }),
    )
    .await;
    assert_eq!(crate::code(&r), "UNAUTHENTICATED", "{r}");
}
