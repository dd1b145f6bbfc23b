//! The OpenSubsonic API, driven by a real Subsonic client library from the
//! npm registry (`subsonic-api`, in `tests/browser`), against a cluster
//! of three storage nodes: authentication by token (with an app
//! password), API key and password, and their errors (40, 41, 43, 44);
//! browsing artist → album → songs; search; a ranged stream through the
//! redirect to a node (the exact bytes); a cover at the size asked for;
//! playlists. The script (`tests/browser/subsonic.mjs`) asserts as it
//! goes; this side prepares the library and checks what the script
//! changed.

use std::path::Path;
use std::process::Command;

use rondo_tests::Cluster;
use serde_json::{Value, json};

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subsonic_client_library_browses_streams_and_edits_playlists() {
    let browser = repo().join("tests/browser");
    assert!(
        browser.join("node_modules/subsonic-api").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    let cluster = Cluster::builder().nodes(3).start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // A library: one album of two tracks (with a cover), one more song.
    let mut songs = Vec::new();
    for (i, (title, artist, album)) in [
        ("Morning Tide", "Harbour Lights", "Tides"),
        ("Evening Tide", "Harbour Lights", "Tides"),
        ("Straße der Lieder", "Kapelle Nord", "Wege"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = tmp.path().join(format!("{i}.wav"));
        rondo_tests::tagged_wav_with_cover(&path, title, artist, album, 2.0, 90 + i as u64)
            .unwrap();
        let song = crate::upload_ok(&cluster, &path, json!({})).await;
        songs.push(json!({
            "id": song["id"],
            "title": title,
            "artist": artist,
            "album": album,
            "albumId": song["album"]["id"],
            "artistId": song["artist"]["id"],
            "path": path,
            "size": std::fs::metadata(&path).unwrap().len(),
        }));
    }

    // Three listeners: ada and bob with app passwords (bob's made by an
    // admin), cy without one.
    for name in ["ada", "bob", "cy"] {
        let made = cluster
            .admin
            .raw(
                "mutation($n: String!) { createUser(name: $n, password: \"correct horse\") { id } }",
                json!({ "n": name }),
            )
            .await
            .unwrap();
        assert!(made.get("errors").is_none(), "{made}");
    }
    let session = cluster
        .anon
        .raw(
            "mutation { login(name: \"ada\", password: \"correct horse\") { token } }",
            json!({}),
        )
        .await
        .unwrap();
    let token = session["data"]["login"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ada =
        rondo_cli::client::Client::new(&cluster.admin.base, &cluster.ca_pem, Some(token)).unwrap();
    let made = ada
        .raw(
            "mutation { createAppPassword(name: \"phone\") { appPassword { id name } secret } }",
            json!({}),
        )
        .await
        .unwrap();
    assert!(made.get("errors").is_none(), "{made}");
    let secret = made["data"]["createAppPassword"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(secret.len(), 32);
    // A revoked one is refused as an unknown key.
    let other = ada
        .raw(
            "mutation { createAppPassword(name: \"old tablet\") { appPassword { id } secret } }",
            json!({}),
        )
        .await
        .unwrap();
    let revoked_id = other["data"]["createAppPassword"]["appPassword"]["id"].clone();
    let revoked = other["data"]["createAppPassword"]["secret"].clone();
    let r = ada
        .raw(
            "mutation($id: ID!) { revokeAppPassword(id: $id) }",
            json!({ "id": revoked_id }),
        )
        .await
        .unwrap();
    assert_eq!(r["data"]["revokeAppPassword"], true, "{r}");
    let listed = ada
        .raw("{ appPasswords { name } }", json!({}))
        .await
        .unwrap();
    assert_eq!(listed["data"]["appPasswords"], json!([{ "name": "phone" }]));

    let bob_id = cluster
        .admin
        .raw("{ users { nodes { id name } } }", json!({}))
        .await
        .unwrap()["data"]["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "bob")
        .unwrap()["id"]
        .clone();
    let bob_key = cluster
        .admin
        .raw(
            "mutation($u: ID!) { createAppPassword(userId: $u, name: \"laptop\") { secret } }",
            json!({ "u": bob_id }),
        )
        .await
        .unwrap()["data"]["createAppPassword"]["secret"]
        .clone();
    assert!(bob_key.is_string(), "an admin makes one for an account");
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, &cluster.ca_pem).unwrap();
    let facts = tmp.path().join("facts.json");
    std::fs::write(
        &facts,
        json!({
            "user": "ada",
            "password": "correct horse",
            "appPassword": secret,
            "revokedKey": revoked,
            "other": "bob",
            "otherKey": bob_key,
            "third": "cy",
            "songs": songs,
        })
        .to_string(),
    )
    .unwrap();
    let out = Command::new("node")
        .arg(browser.join("subsonic.mjs"))
        .arg(&cluster.admin.base)
        .arg(&facts)
        .current_dir(&browser)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .output()
        .expect("node is missing");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "subsonic.mjs failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"));
    // Each check the script made is named in its report.
    for check in [
        "auth",
        "envelope",
        "browse",
        "search",
        "stream",
        "cover",
        "playlists",
        "listening",
        "errors",
    ] {
        assert_eq!(report[check], true, "{check} not done: {report}");
    }
    // The playlist the script kept is ada's, in the catalog every gateway
    // reads, with the songs it left in it.
    let kept = report["keptPlaylist"].as_str().unwrap().to_string();
    let lists = ada
        .raw(
            "{ playlists { nodes { id name songs { nodes { id } } } } }",
            json!({}),
        )
        .await
        .unwrap();
    let nodes = lists["data"]["playlists"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "the deleted playlist is gone: {lists}");
    assert_eq!(nodes[0]["id"], kept.as_str());
    assert_eq!(nodes[0]["name"], "Road trip");
    let ids: Vec<&Value> = nodes[0]["songs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(ids, [&songs[1]["id"], &songs[2]["id"]], "{lists}");
    // The web app counts a play through GraphQL, in the same gathered
    // entries.
    let played = ada
        .raw(
            "mutation($id: ID!) { recordPlay(songId: $id) { id playCount } }",
            json!({ "id": songs[2]["id"] }),
        )
        .await
        .unwrap();
    assert_eq!(played["data"]["recordPlay"]["playCount"], "2", "{played}");
    // What the app marked is what the web app shows: the starred song,
    // the plays counted (a batch of plays is one ring entry), the queue
    // the last client saved.
    let mine = ada
        .raw(
            "{ starredSongs { id starred } mostPlayed { id playCount } recentlyPlayed { id } }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        mine["data"]["starredSongs"],
        json!([{ "id": songs[0]["id"], "starred": true }]),
        "{mine}"
    );
    assert_eq!(
        mine["data"]["mostPlayed"],
        json!([
            { "id": songs[2]["id"], "playCount": "2" },
            { "id": songs[0]["id"], "playCount": "2" }
        ]),
        "{mine}"
    );
    assert_eq!(mine["data"]["recentlyPlayed"].as_array().unwrap().len(), 2);
    // Bob's view of the same songs carries none of Ada's marks.
    let bob = cluster
        .anon
        .raw(
            "mutation { login(name: \"bob\", password: \"correct horse\") { token } }",
            json!({}),
        )
        .await
        .unwrap();
    let bob = rondo_cli::client::Client::new(
        &cluster.admin.base,
        &cluster.ca_pem,
        Some(bob["data"]["login"]["token"].as_str().unwrap().to_string()),
    )
    .unwrap();
    let theirs = bob
        .raw("{ starredSongs { id } mostPlayed { id } }", json!({}))
        .await
        .unwrap();
    assert_eq!(
        theirs["data"],
        json!({ "starredSongs": [], "mostPlayed": [] }),
        "{theirs}"
    );
}
