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

    // A grant answered with a duplicate is spent: its URL takes no other
    // file.
    let g = cluster
        .admin
        .query(
            "mutation { createUpload(fileName: \"again.wav\") { url } }",
            json!({}),
        )
        .await
        .unwrap();
    let url = g
        .pointer("/createUpload/url")
        .and_then(Value::as_str)
        .unwrap();
    let put = |bytes: Vec<u8>| async {
        let res = cluster.http().put(url).body(bytes).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap())
    };
    let (status, answer) = put(std::fs::read(&a).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");
    assert_eq!(answer.pointer("/song/id"), Some(&json!(first)), "{answer}");
    let other = crate::wav(tmp.path(), "other.wav", "Other", "Oner", "Single", 0.5, 77);
    let (status, answer) = put(std::fs::read(&other).unwrap()).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer.pointer("/error/code"),
        Some(&json!("CONFLICT")),
        "{answer}"
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

/// Makes a one-second tone with ffmpeg (Debian's, installed by `.ci/run`):
/// `codec` args, then `-metadata` pairs.
fn ffmpeg(path: &std::path::Path, freq: u32, codec: &[&str], tags: &[(&str, &str)]) {
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:duration=1"))
        .args(codec);
    for (k, v) in tags {
        cmd.arg("-metadata").arg(format!("{k}={v}"));
    }
    let status = cmd
        .arg("-y")
        .arg(path)
        .status()
        .expect("ffmpeg is missing: .ci/run installs it (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg made no {}", path.display());
}

/// Songs of an album, in the album's order: (title, track artist).
async fn album_songs(c: &Client, title: &str) -> (String, Vec<(String, String)>) {
    let d = c
        .query(
            "query($s: String) { albums(first: 5, search: $s) { totalCount nodes { title artist { name } songs(first: 10) { nodes { title artist { name } } } } } }",
            json!({ "s": title }),
        )
        .await
        .unwrap();
    let albums = d
        .pointer("/albums/nodes")
        .and_then(Value::as_array)
        .unwrap();
    let album = albums
        .iter()
        .find(|a| a["title"] == title)
        .unwrap_or_else(|| panic!("no album {title}: {d}"));
    assert_eq!(
        albums.iter().filter(|a| a["title"] == title).count(),
        1,
        "one album {title}: {d}"
    );
    let owner = album["artist"]["name"].as_str().unwrap().to_string();
    let songs = album["songs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["title"].as_str().unwrap().to_string(),
                s["artist"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (owner, songs)
}

/// Files as ffmpeg makes them: a compilation of three track artists under
/// one album artist is one album; a compilation without one is under
/// "Various Artists"; two discs play disc by disc; AIFF and ALAC are
/// accepted, measured and streamed byte for byte; a JPEG named `.mp3` and
/// a WMA are refused for what they are, leaving nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn files_are_filed_by_album_artist_and_disc_and_read_in_more_formats() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mp3 = ["-c:a", "libmp3lame", "-b:a", "128k"];
    let mut freq = 300;
    let mut next = || {
        freq += 20;
        freq
    };
    let mut files = Vec::new();
    for (n, artist) in ["Ana", "Ben", "Cleo"].into_iter().enumerate() {
        let path = dir.join(format!("hits{n}.mp3"));
        let track = (n + 1).to_string();
        ffmpeg(
            &path,
            next(),
            &mp3,
            &[
                ("title", &format!("Hit {track}")),
                ("artist", artist),
                ("album_artist", "DJ Host"),
                ("album", "Summer Hits"),
                ("track", &track),
            ],
        );
        files.push(path);
    }
    for (n, artist) in ["Dora", "Eli"].into_iter().enumerate() {
        let path = dir.join(format!("free{n}.mp3"));
        ffmpeg(
            &path,
            next(),
            &mp3,
            &[
                ("title", &format!("Free {n}")),
                ("artist", artist),
                ("album", "Free For All"),
                ("compilation", "1"),
                ("track", &(n + 1).to_string()),
            ],
        );
        files.push(path);
    }
    // Uploaded in another order than they play.
    for (disc, track) in [(2, 2), (1, 2), (2, 1), (1, 1)] {
        let path = dir.join(format!("double-{disc}-{track}.flac"));
        ffmpeg(
            &path,
            next(),
            &["-c:a", "flac"],
            &[
                ("title", &format!("Side {disc}.{track}")),
                ("artist", "Duo"),
                ("album", "Double"),
                ("disc", &format!("{disc}/2")),
                ("track", &format!("{track}/2")),
            ],
        );
        files.push(path);
    }
    for path in &files {
        let r = cluster
            .admin
            .upload_raw(path, json!({}), "{ id }")
            .await
            .unwrap();
        assert!(r.get("errors").is_none(), "{}: {r}", path.display());
    }

    let (owner, songs) = album_songs(&cluster.admin, "Summer Hits").await;
    assert_eq!(owner, "DJ Host");
    let artists: Vec<&str> = songs.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        artists,
        ["Ana", "Ben", "Cleo"],
        "one album, three track artists"
    );
    let (owner, songs) = album_songs(&cluster.admin, "Free For All").await;
    assert_eq!(owner, "Various Artists");
    assert_eq!(songs.len(), 2);
    let (owner, songs) = album_songs(&cluster.admin, "Double").await;
    assert_eq!(owner, "Duo");
    let titles: Vec<&str> = songs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(titles, ["Side 1.1", "Side 1.2", "Side 2.1", "Side 2.2"]);
    let d = cluster
        .admin
        .query(
            "{ songs(first: 10, search: \"side\") { nodes { title discNumber discTotal trackNumber trackTotal audio { codec bitDepth sampleRate channels } } } }",
            json!({}),
        )
        .await
        .unwrap();
    let nodes = d.pointer("/songs/nodes").and_then(Value::as_array).unwrap();
    let song = nodes.iter().find(|n| n["title"] == "Side 2.1").unwrap();
    assert_eq!(
        song,
        &json!({
            "title": "Side 2.1", "discNumber": 2, "discTotal": 2, "trackNumber": 1, "trackTotal": 2,
            "audio": { "codec": "flac", "bitDepth": 16, "sampleRate": 44100, "channels": 1 }
        }),
        "{d}"
    );
    // The track artist's own page lists the song, the album artist's the album.
    let d = cluster
        .admin
        .query(
            "{ artists(first: 2, search: \"DJ Host\") { nodes { albums(first: 2) { nodes { title } } } } b: artists(first: 2, search: \"Ben\") { nodes { songs(first: 2) { nodes { title } } } } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        d.pointer("/artists/nodes/0/albums/nodes/0/title"),
        Some(&json!("Summer Hits")),
        "{d}"
    );
    assert_eq!(
        d.pointer("/b/nodes/0/songs/nodes/0/title"),
        Some(&json!("Hit 2")),
        "{d}"
    );

    // AIFF and ALAC: accepted, measured, streamed byte for byte.
    let aiff = dir.join("tone.aiff");
    ffmpeg(
        &aiff,
        next(),
        &["-c:a", "pcm_s16be"],
        &[("title", "Apple Tone")],
    );
    let alac = dir.join("tone.m4a");
    ffmpeg(
        &alac,
        next(),
        &["-c:a", "alac"],
        &[("title", "Lossless Tone")],
    );
    for (path, mime, codec) in [
        (&aiff, "audio/aiff", "pcm_s16be"),
        (&alac, "audio/mp4", "alac"),
    ] {
        let r = cluster
            .admin
            .upload_raw(
                path,
                json!({}),
                "{ id mimeType streamUrl audio { codec bitDepth sampleRate } }",
            )
            .await
            .unwrap();
        let song = r
            .pointer("/data/uploadSong/song")
            .unwrap_or_else(|| panic!("{r}"));
        assert_eq!(song["mimeType"], mime, "{r}");
        assert_eq!(
            song["audio"],
            json!({ "codec": codec, "bitDepth": 16, "sampleRate": 44100 }),
            "{r}"
        );
        let bytes = std::fs::read(path).unwrap();
        let url = song["streamUrl"].as_str().unwrap();
        let res = cluster
            .http()
            .get(url)
            .header("range", "bytes=10-1009")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["content-type"], mime);
        assert_eq!(&res.bytes().await.unwrap()[..], &bytes[10..1010]);
    }

    // A JPEG named .mp3 and a WMA: refused as what they are, by the
    // gateway and by a node (the direct upload), storing nothing.
    let disk = |f: Vec<(Value, rondo_tests::DiskState)>| -> Vec<rondo_tests::DiskState> {
        f.into_iter().map(|(_, d)| d).collect()
    };
    let before = disk(cluster.footprint().await.unwrap());
    let jpeg = dir.join("cover.jpg");
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=64x64",
        ])
        .args(["-frames:v", "1", "-y"])
        .arg(&jpeg)
        .status()
        .unwrap();
    assert!(status.success());
    let fake = dir.join("song.mp3");
    std::fs::copy(&jpeg, &fake).unwrap();
    let wma = dir.join("tone.wma");
    ffmpeg(
        &wma,
        next(),
        &["-c:a", "wmav2"],
        &[("title", "Windows Tone")],
    );
    for (path, what) in [(&fake, "JPEG image"), (&wma, "Windows Media")] {
        let r = cluster
            .admin
            .upload_raw(path, json!({}), "{ id }")
            .await
            .unwrap();
        assert_eq!(crate::code(&r), "UNSUPPORTED_MEDIA", "{r}");
        let message = r
            .pointer("/errors/0/message")
            .and_then(Value::as_str)
            .unwrap();
        assert!(message.contains(what), "{message}");
    }
    let refused = dir.join("refused");
    std::fs::create_dir_all(&refused).unwrap();
    std::fs::copy(&fake, refused.join("song.mp3")).unwrap();
    std::fs::copy(&wma, refused.join("tone.wma")).unwrap();
    let (code, out, err) = crate::cli::rondo(
        &cluster,
        &cluster.token,
        &["upload", refused.to_str().unwrap()],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("skip") && l.contains("song.mp3") && l.contains("JPEG image")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("skip")
            && l.contains("tone.wma")
            && l.contains("Windows Media")),
        "{out}"
    );
    let after = disk(cluster.footprint().await.unwrap());
    assert_eq!(after, before, "nothing stored");
    assert_eq!(after[0].tmp_files, 0, "no temp file left");
}

/// A node holding more than 2^31 bytes says so exactly: 64-bit counts are
/// `UnsignedInt64` strings through GraphQL (a 32-bit `Int` overflowed at
/// 2 GiB, about 400 MP3s). The song is a real WAV of 2^31 + 4 KiB bytes,
/// sent by the direct upload from a sparse file (its samples are holes),
/// its size declared to `createUpload` as a string.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_past_two_gib_reports_its_bytes_exactly() {
    const LIMIT: u64 = 3 << 30;
    let cluster = Cluster::builder()
        .max_upload_bytes(LIMIT)
        .node_option("max_upload_bytes", i64::try_from(LIMIT).unwrap())
        .start()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data: u64 = (1 << 31) + 4096;
    let path = tmp.path().join("long.wav");
    let mut header = Vec::new();
    header.extend(b"RIFF");
    header.extend(u32::try_from(36 + data).unwrap().to_le_bytes());
    header.extend(b"WAVEfmt ");
    header.extend(16u32.to_le_bytes());
    header.extend(1u16.to_le_bytes()); // PCM
    header.extend(1u16.to_le_bytes()); // mono
    header.extend(8000u32.to_le_bytes());
    header.extend(16000u32.to_le_bytes());
    header.extend(2u16.to_le_bytes());
    header.extend(16u16.to_le_bytes());
    header.extend(b"data");
    header.extend(u32::try_from(data).unwrap().to_le_bytes());
    std::fs::write(&path, &header).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(44 + data).unwrap();
    drop(file);
    let size = 44 + data;

    let g = cluster
        .admin
        .query(
            "mutation($size: UnsignedInt64) { createUpload(sizeBytes: $size, fileName: \"long.wav\") { url maxBytes } }",
            json!({ "size": size.to_string() }),
        )
        .await
        .unwrap();
    assert_eq!(
        g.pointer("/createUpload/maxBytes"),
        Some(&json!(size.to_string())),
        "{g}"
    );
    let url = g
        .pointer("/createUpload/url")
        .and_then(Value::as_str)
        .unwrap();
    let body = reqwest::Body::from(tokio::fs::File::open(&path).await.unwrap());
    let res = cluster
        .http()
        .put(url)
        .header("content-length", size)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer.pointer("/song/sizeBytes"),
        Some(&json!(size.to_string()))
    );

    let id = answer.pointer("/song/id").and_then(Value::as_str).unwrap();
    // The node's figures reach the gateway with its health checks.
    let d = rondo_tests::eventually("the gateway lists the song and the node's bytes", std::time::Duration::from_secs(30), || async {
        let d = cluster
            .admin
            .query(
                "query($id: ID!) { song(id: $id) { sizeBytes durationMs } cluster { nodes { bytesStored } } }",
                json!({ "id": id }),
            )
            .await
            .ok()?;
        (!d["song"].is_null() && d.pointer("/cluster/nodes/0/bytesStored")? != "0").then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(
        d.pointer("/song/sizeBytes"),
        Some(&json!(size.to_string())),
        "{d}"
    );
    assert_eq!(
        d.pointer("/song/durationMs"),
        Some(&json!(data / 2 * 1000 / 8000)),
        "{d}"
    );
    assert_eq!(
        d.pointer("/cluster/nodes/0/bytesStored"),
        Some(&json!(size.to_string())),
        "exact, past 2^31: {d}"
    );
}

/// A node's store as the previous release wrote it (tests/fixtures/store-v0,
/// made by tests/fixtures/make-store-v0.sh): its songs, made before album
/// artists, discs, audio properties and cover art were read, are read
/// again from their bytes once the node runs, through the ring, and gain
/// them (the picture that release left inside one file becomes its
/// album's cover); none is lost, ids and bytes stay.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_of_the_previous_release_gains_the_new_fields() {
    let cluster = Cluster::builder()
        .node_fixture(0, crate::fixture("store-v0"))
        .start()
        .await
        .unwrap();
    const QUERY: &str = "{ songs(first: 10) { totalCount nodes { id title contentHash streamUrl discNumber artist { name } album { title artist { name } } audio { codec sampleRate } coverArt(size: 300) } } }";
    let before = cluster.admin.query(QUERY, json!({})).await.unwrap();
    assert_eq!(
        before.pointer("/songs/totalCount"),
        Some(&json!(5)),
        "{before}"
    );
    let ids = |d: &Value| {
        let mut ids: Vec<String> = d
            .pointer("/songs/nodes")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let after = rondo_tests::eventually(
        "the old songs are read again",
        std::time::Duration::from_secs(60),
        || async {
            let d = cluster.admin.query(QUERY, json!({})).await.ok()?;
            let nodes = d.pointer("/songs/nodes")?.as_array()?;
            let read = nodes.iter().all(|s| !s["audio"].is_null());
            let covered = nodes.iter().any(|s| !s["coverArt"].is_null());
            (read && covered).then_some(d)
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&after), ids(&before), "the same songs");
    let nodes = after
        .pointer("/songs/nodes")
        .and_then(Value::as_array)
        .unwrap();
    for s in nodes {
        assert_eq!(s["audio"]["codec"], "mp3", "{s}");
        assert_eq!(s["audio"]["sampleRate"], 44100, "{s}");
        let hit = s["title"].as_str().unwrap().starts_with("Old Hit");
        let owner = if hit { "Old Host" } else { "Duo" };
        assert_eq!(s["album"]["artist"]["name"], owner, "{s}");
        // "Old Hit 1" carries an orange cover; its album's other tracks
        // show it too, the other album has none.
        assert_eq!(s["coverArt"].is_null(), !hit, "{s}");
    }
    let cover = nodes.iter().find_map(|s| s["coverArt"].as_str()).unwrap();
    let picture = cluster.http().get(cover).send().await.unwrap();
    assert_eq!(picture.status(), 200);
    let picture = image::load_from_memory(&picture.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(picture.dimensions(), (300, 300));
    let [r, g, b] = picture.get_pixel(150, 150).0;
    assert!(
        r > 200 && (100..200).contains(&g) && b < 60,
        "orange: {r} {g} {b}"
    );
    let (owner, songs) = album_songs(&cluster.admin, "Old Hits").await;
    assert_eq!(owner, "Old Host");
    let artists: Vec<&str> = songs.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(artists, ["Ana", "Ben", "Cleo"], "one album again");
    let (_, songs) = album_songs(&cluster.admin, "Old Double").await;
    let titles: Vec<&str> = songs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(titles, ["Two Sides A", "Two Sides B"], "disc by disc");
    // The bytes are the same.
    let song = &nodes[0];
    let url = song["streamUrl"].as_str().unwrap();
    let bytes = cluster
        .http()
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        blake3::hash(&bytes).to_hex().as_str(),
        song["contentHash"].as_str().unwrap()
    );
}
