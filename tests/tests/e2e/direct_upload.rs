//! Direct uploads: `createUpload` on the gateway, then `PUT` of the file
//! to the node it names. A good one is stored once, filed under the names
//! the catalog knows, and streams byte-identical; every bad one gets its
//! HTTP status and code and leaves nothing behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rondo_core::SongId;
use rondo_core::signing::UploadGrant;
use rondo_tests::{Cluster, DiskState, eventually};
use serde_json::{Value, json};

use crate::{SONG_FIELDS, code, upload_ok, wav};

const GRANT: &str = "mutation($size: UnsignedInt64, $name: String, $title: String) { createUpload(sizeBytes: $size, fileName: $name, title: $title) { songId url method expiresAt maxBytes } }";

/// `PUT`s a body to a URL; returns the status and the JSON answer.
async fn put(cluster: &Cluster, url: &str, body: reqwest::Body) -> (u16, Value) {
    let response = cluster.http().put(url).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "unparsed": text })),
    )
}

async fn grant(cluster: &Cluster, vars: Value) -> Value {
    let data = cluster.admin.query(GRANT, vars).await.unwrap();
    data["createUpload"].clone()
}

/// Every node's songs, reported stats and disk, once they agree: copies
/// taken for other nodes settle after a commit.
async fn settled(cluster: &Cluster, songs: u64) -> Vec<(Value, DiskState)> {
    eventually("nodes to settle", Duration::from_secs(20), || async {
        let f = cluster.footprint().await.ok()?;
        let same = f
            .iter()
            .all(|(r, d)| r["songCount"] == json!(songs) && *d == f[0].1 && d.tmp_files == 0);
        same.then_some(f)
    })
    .await
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_uploads_store_once_and_refuse_cleanly() {
    let cluster = Cluster::builder()
        .nodes(3)
        .max_upload_bytes(1 << 20)
        .start()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // A song through the gateway first: its artist and album, spelled
    // otherwise, are the ones the direct upload must be filed under.
    let first = upload_ok(
        &cluster,
        &wav(
            tmp.path(),
            "a.wav",
            "Gateway Tune",
            "ADA DIRECT",
            "straight",
            0.5,
            1,
        ),
        json!({}),
    )
    .await;
    let path = wav(
        tmp.path(),
        "b.wav",
        "Direct Tune",
        "Ada Direct",
        "Straight",
        1.0,
        2,
    );
    let bytes = std::fs::read(&path).unwrap();

    // Granted and sent: 201 with the song as stored.
    let g = grant(&cluster, json!({ "size": bytes.len(), "name": "b.wav" })).await;
    assert_eq!(g["method"], "PUT");
    assert_eq!(g["maxBytes"], json!(bytes.len().to_string()));
    let url = g["url"].as_str().unwrap().to_string();
    let (status, answer) = put(&cluster, &url, bytes.clone().into()).await;
    assert_eq!(status, 201, "{answer}");
    let song = &answer["song"];
    assert_eq!(song["id"], g["songId"]);
    assert_eq!(song["title"], "Direct Tune");
    assert_eq!(
        song["artist"], first["artist"],
        "filed under the known artist"
    );
    assert_eq!(song["album"], first["album"], "filed under the known album");
    assert_eq!(song["sizeBytes"], json!(bytes.len().to_string()));
    assert_eq!(
        song["contentHash"],
        rondo_core::ContentHash::of(&bytes).to_hex()
    );

    // The gateway lists it, and it streams byte-identical.
    let id = song["id"].as_str().unwrap().to_string();
    let listed = eventually("the gateway lists it", Duration::from_secs(10), || async {
        let d = cluster
            .anon
            .query(
                &format!("query($id: ID!) {{ song(id: $id) {SONG_FIELDS} }}"),
                json!({ "id": id }),
            )
            .await
            .ok()?;
        (!d["song"].is_null()).then(|| d["song"].clone())
    })
    .await
    .unwrap();
    let stream = listed["streamUrl"].as_str().unwrap();
    let got = cluster.http().get(stream).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let before = settled(&cluster, 2).await;
    let songs = cluster.song_count().await.unwrap();
    assert_eq!(songs, 2);
    let unchanged = |what: &'static str| {
        let before = before.clone();
        let cluster = &cluster;
        async move {
            assert_eq!(cluster.song_count().await.unwrap(), songs, "{what}");
            assert_eq!(
                settled(cluster, songs).await,
                before,
                "{what}: storage changed"
            );
        }
    };

    // The grant is for one song: used again, it is a conflict.
    let (status, answer) = put(&cluster, &url, bytes.clone().into()).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (409, &json!("CONFLICT")),
        "{answer}"
    );
    unchanged("a used grant").await;

    // A changed grant, an expired one, and one for another node: 403,
    // before a byte is read.
    let tampered = format!("{url}&title=Mine");
    let fresh = grant(&cluster, json!({ "size": bytes.len() })).await;
    let fresh_url = fresh["url"].as_str().unwrap();
    let forged = fresh_url.replace("max=", "max=9");
    let song_id = SongId::new_random();
    let expired = cluster.signed_upload_url(
        0,
        song_id,
        UploadGrant {
            exp: now() - 1,
            max: 1 << 20,
            ..UploadGrant::default()
        },
    );
    let elsewhere = cluster
        .signed_upload_url(
            1,
            song_id,
            UploadGrant {
                exp: now() + 60,
                max: 1 << 20,
                ..UploadGrant::default()
            },
        )
        .replace(
            &format!(":{}/", cluster.nodes[1].http.port()),
            &format!(":{}/", cluster.nodes[0].http.port()),
        );
    let unsigned = fresh_url.split("&sig=").next().unwrap().to_string();
    for (what, bad) in [
        ("tampered", tampered),
        ("forged", forged),
        ("expired", expired),
        ("another node's", elsewhere),
        ("unsigned", unsigned),
    ] {
        let (status, answer) = put(&cluster, &bad, bytes.clone().into()).await;
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "FORBIDDEN", "{what}");
        if what == "expired" {
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("expired"),
                "{answer}"
            );
        }
        unchanged(what).await;
    }

    // Not audio, and truncated audio: 415, nothing kept.
    for (what, body) in [
        ("not audio", b"this is not audio, just text\n".repeat(40)),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
    ] {
        let g = grant(&cluster, json!({})).await;
        let (status, answer) = put(&cluster, g["url"].as_str().unwrap(), body.into()).await;
        assert_eq!(status, 415, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "UNSUPPORTED_MEDIA", "{what}");
        unchanged(what).await;
    }

    // Larger than granted: refused by its Content-Length, or (sent chunked,
    // with no length) as soon as the bytes pass the limit.
    let small = grant(&cluster, json!({ "size": 1000 })).await;
    let small_url = small["url"].as_str().unwrap();
    let (status, answer) = put(&cluster, small_url, bytes.clone().into()).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (413, &json!("PAYLOAD_TOO_LARGE")),
        "{answer}"
    );
    unchanged("declared too large").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, answer) = put(&cluster, small_url, chunked).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (413, &json!("PAYLOAD_TOO_LARGE")),
        "{answer}"
    );
    unchanged("streamed too large").await;

    // The gateway refuses what it can tell before the bytes exist.
    let over = cluster
        .admin
        .raw(GRANT, json!({ "size": 2 << 20 }))
        .await
        .unwrap();
    assert_eq!(code(&over), "PAYLOAD_TOO_LARGE", "{over}");
    for vars in [json!({ "size": -1 }), json!({ "title": "  " })] {
        let bad = cluster.admin.raw(GRANT, vars).await.unwrap();
        assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    }
    let anon = cluster.anon.raw(GRANT, json!({})).await.unwrap();
    assert_eq!(code(&anon), "UNAUTHENTICATED", "{anon}");
    unchanged("refused grants").await;
}
