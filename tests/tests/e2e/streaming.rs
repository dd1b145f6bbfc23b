//! The signed HTTPS range endpoint of the storage node.

use reqwest::Method;
use serde_json::json;

use crate::upload::rondo_core_now;
use crate::{get, upload_ok, wav};
use rondo_core::SongId;
use rondo_tests::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn stream_url_serves_ranges_byte_for_byte() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = wav(tmp.path(), "s.wav", "Ranger", "Streams", "Bytes", 2.0, 5);
    let file = std::fs::read(&path).unwrap();
    let len = file.len();
    let song = upload_ok(&cluster, &path, json!({})).await;
    let url = song["streamUrl"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!(
            "https://127.0.0.1:{}/stream/",
            cluster.nodes[0].http.port()
        )),
        "{url}"
    );
    let etag = format!("\"{}\"", song["contentHash"].as_str().unwrap());

    // Whole file.
    let (status, h, body) = get(&cluster, Method::GET, &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, file);
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "audio/wav");
    assert_eq!(h["content-length"], len.to_string().as_str());
    assert_eq!(h["etag"], etag.as_str());

    // Several ranges: closed, open-ended, suffix, past the end.
    let cases: [(String, usize, usize); 5] = [
        ("bytes=0-0".into(), 0, 0),
        ("bytes=100-1099".into(), 100, 1099),
        (format!("bytes={}-", len - 10), len - 10, len - 1),
        ("bytes=-500".into(), len - 500, len - 1),
        (format!("bytes=1000-{}", len * 2), 1000, len - 1),
    ];
    for (range, start, end) in cases {
        let (status, h, body) = get(&cluster, Method::GET, &url, &[("range", &range)]).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            h["content-range"],
            format!("bytes {start}-{end}/{len}").as_str(),
            "{range}"
        );
        assert_eq!(
            h["content-length"],
            (end - start + 1).to_string().as_str(),
            "{range}"
        );
        assert_eq!(body, &file[start..=end], "{range}");
    }

    // Unsatisfiable.
    let (status, h, body) = get(
        &cluster,
        Method::GET,
        &url,
        &[("range", &format!("bytes={len}-"))],
    )
    .await;
    assert_eq!(status, 416);
    assert_eq!(h["content-range"], format!("bytes */{len}").as_str());
    assert!(body.is_empty());

    // Malformed or multi-range headers are ignored: the whole file.
    for bad in [
        "bytes=5-1",
        "bytes=abc",
        "pages=1-2",
        "bytes=0-1,4-5",
        "bytes",
    ] {
        let (status, _, body) = get(&cluster, Method::GET, &url, &[("range", bad)]).await;
        assert_eq!(status, 200, "{bad}");
        assert_eq!(body.len(), len, "{bad}");
    }

    // HEAD: headers, no body.
    let (status, h, body) = get(&cluster, Method::HEAD, &url, &[("range", "bytes=10-19")]).await;
    assert_eq!(status, 206);
    assert_eq!(h["content-length"], "10");
    assert!(body.is_empty());
    let (status, h, _) = get(&cluster, Method::HEAD, &url, &[]).await;
    assert_eq!(
        (status, h["content-length"].to_str().unwrap()),
        (200, len.to_string().as_str())
    );

    // If-Range: a matching ETag honours the range, another one gets it all.
    let (status, _, body) = get(
        &cluster,
        Method::GET,
        &url,
        &[("range", "bytes=0-9"), ("if-range", &etag)],
    )
    .await;
    assert_eq!((status, body.len()), (206, 10));
    let (status, _, body) = get(
        &cluster,
        Method::GET,
        &url,
        &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!((status, body.len()), (200, len));
    let (status, _, body) = get(
        &cluster,
        Method::GET,
        &url,
        &[("range", "bytes=0-9"), ("if-range", &format!("W/{etag}"))],
    )
    .await;
    assert_eq!(
        (status, body.len()),
        (200, len),
        "a weak validator never matches If-Range"
    );

    // If-None-Match.
    let (status, _, body) = get(&cluster, Method::GET, &url, &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_foreign_signatures_get_403() {
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = wav(tmp.path(), "f.wav", "Locked", "Guard", "Gate", 1.0, 6);
    let song = upload_ok(&cluster, &path, json!({})).await;
    let url = song["streamUrl"].as_str().unwrap().to_string();
    let id: SongId = song["id"].as_str().unwrap().parse().unwrap();
    let port = cluster.nodes[0].http.port();
    let base = format!("https://127.0.0.1:{port}/stream/{id}");

    let (status, _, _) = get(&cluster, Method::GET, &url, &[]).await;
    assert_eq!(status, 200);

    // Tampered signature, expiry, missing parameters, another key, expired.
    let sig_at = url.find("sig=").unwrap() + 4;
    let mut tampered = url.clone();
    let flipped = if &url[sig_at..=sig_at] == "0" {
        "1"
    } else {
        "0"
    };
    tampered.replace_range(sig_at..=sig_at, flipped);
    let exp = url
        .split("exp=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let moved_exp = url.replace(&format!("exp={exp}"), &format!("exp={}", exp + 1000));
    let other_key = rondo_core::signing::UrlSigner::new(b"not the cluster secret".to_vec());
    let forged = format!("{base}?{}", other_key.query(id, cluster.nodes[0].id, exp));
    let expired = cluster.signed_url(0, id, rondo_core_now() - 1);
    let foreign_node = format!(
        "{base}?{}",
        rondo_core::signing::UrlSigner::new(cluster.secret.clone()).query(
            id,
            rondo_core::NodeId::new_random(),
            exp
        )
    );
    for bad in [
        tampered,
        moved_exp,
        forged,
        expired,
        foreign_node,
        base.clone(),
        format!("{base}?exp={exp}"),
        format!("{base}?exp=x&sig=y"),
    ] {
        let (status, h, body) = get(&cluster, Method::GET, &bad, &[("range", "bytes=0-99")]).await;
        assert_eq!(status, 403, "{bad}");
        assert!(h.get("content-range").is_none());
        assert!(body.len() < 64, "a refused request must not carry audio");
    }

    // A valid signature for an unknown song: 404; a malformed id: 403.
    let unknown = cluster.signed_url(0, SongId::new_random(), rondo_core_now() + 60);
    assert_eq!(get(&cluster, Method::GET, &unknown, &[]).await.0, 404);
    let malformed = format!("https://127.0.0.1:{port}/stream/not-a-uuid?exp={exp}&sig=00");
    assert_eq!(get(&cluster, Method::GET, &malformed, &[]).await.0, 403);

    // The song's audio gone from the node's disk: 404, which a player takes
    // as "ask another replica", not a server error.
    let hash = blake3::hash(&std::fs::read(&path).unwrap())
        .to_hex()
        .to_string();
    let hash = hash.as_str();
    let file = cluster.nodes[0]
        .dir
        .join("blobs")
        .join(&hash[..2])
        .join(hash);
    std::fs::remove_file(&file).unwrap();
    let (status, _, body) = get(&cluster, Method::GET, &url, &[("range", "bytes=0-99")]).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("another replica"));
}
