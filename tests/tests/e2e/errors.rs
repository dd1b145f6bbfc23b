//! Bad input gets a typed error and changes nothing.

use serde_json::{Value, json};

use crate::{code, query, upload_ok, wav};
use rondo_tests::Cluster;

/// Asserts that songs, reported stats and bytes on disk are as before.
async fn assert_unchanged(
    cluster: &Cluster,
    before: &[(Value, rondo_tests::DiskState)],
    songs: u64,
    what: &str,
) {
    assert_eq!(
        cluster.song_count().await.unwrap(),
        songs,
        "{what}: song count changed"
    );
    let after = cluster.footprint().await.unwrap();
    assert_eq!(after, before, "{what}: storage changed");
    assert_eq!(after[0].1.tmp_files, 0, "{what}: upload left a temp file");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_uploads_leave_nothing_behind() {
    let cluster = Cluster::builder()
        .max_upload_bytes(256 * 1024)
        .start()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    upload_ok(
        &cluster,
        &wav(tmp.path(), "ok.wav", "Keeper", "Stays", "Here", 1.0, 1),
        json!({}),
    )
    .await;
    let before = cluster.footprint().await.unwrap();

    let text = tmp.path().join("notes.mp3");
    std::fs::write(
        &text,
        "this is a text file pretending to be an mp3\n".repeat(50),
    )
    .unwrap();
    let full = std::fs::read(wav(tmp.path(), "full.wav", "Cut", "Short", "Half", 2.0, 2)).unwrap();
    let truncated = tmp.path().join("truncated.wav");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let flac = std::fs::read(crate::fixture("tone.flac")).unwrap();
    let corrupt = tmp.path().join("corrupt.flac");
    let mut bytes = flac.clone();
    for b in bytes.iter_mut().skip(200).step_by(7) {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    let empty = tmp.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let big = wav(tmp.path(), "big.wav", "Huge", "Large", "Heavy", 20.0, 3);

    for (path, expected) in [
        (&text, "UNSUPPORTED_MEDIA"),
        (&truncated, "UNSUPPORTED_MEDIA"),
        (&corrupt, "UNSUPPORTED_MEDIA"),
        (&empty, "UNSUPPORTED_MEDIA"),
        (&big, "PAYLOAD_TOO_LARGE"),
    ] {
        let r = cluster
            .admin
            .upload_raw(path, json!({}), "{ id }")
            .await
            .unwrap();
        assert_eq!(code(&r), expected, "{}: {r}", path.display());
        assert_unchanged(&cluster, &before, 1, &path.display().to_string()).await;
    }

    // Bad arguments, missing or wrong token.
    let good = wav(tmp.path(), "good.wav", "Fine", "Okay", "Good", 0.5, 4);
    let r = cluster
        .admin
        .upload_raw(&good, json!({ "title": "   " }), "{ id }")
        .await
        .unwrap();
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    let r = cluster
        .anon
        .upload_raw(&good, json!({}), "{ id }")
        .await
        .unwrap();
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    let wrong =
        rondo_cli::client::Client::new(&cluster.admin.base, &cluster.ca_pem, Some("wrong".into()))
            .unwrap();
    let r = wrong.upload_raw(&good, json!({}), "{ id }").await.unwrap();
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    let r = wrong
        .raw(
            "mutation { deleteSong(id: \"6c7d1d4e-6e0a-4a53-8d55-0f1c1e2f3a4b\") }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    assert_unchanged(&cluster, &before, 1, "bad arguments").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_get_typed_errors() {
    let cluster = Cluster::builder().start().await.unwrap();
    // A parse error quotes the query, cut short: a long query is not
    // echoed back whole.
    let long = format!("{{ songs {{ {} ", "title ".repeat(2000));
    let r = query(&cluster, &long, json!({})).await;
    assert_eq!(code(&r), "GRAPHQL_PARSE_FAILED", "{r}");
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.chars().count() <= 501, "{} chars", message.len());
    let cases: [(&str, Value, &str); 12] = [
        (
            "{ song(id: \"not-a-uuid\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ artist(id: \"123\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ songs(first: 101) { totalCount } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ songs(first: -1) { totalCount } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ songs(after: \"zz-not-a-cursor\") { totalCount } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "query($q: String) { songs(search: $q) { totalCount } }",
            json!({ "q": "x".repeat(201) }),
            "BAD_USER_INPUT",
        ),
        (
            "query($q: String) { artists(search: $q) { totalCount } }",
            json!({ "q": "a b c d e f g h i" }),
            "BAD_USER_INPUT",
        ),
        ("{ songs { totalCount ", json!({}), "GRAPHQL_PARSE_FAILED"),
        (
            "{ songs { noSuchField } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ songs(first: 1) { nodes { album { artist { albums(first: 1) { nodes { artist { albums(first: 1) { nodes { artist { albums(first: 1) { nodes { artist { name } } } } } } } } } } } } } }",
            json!({}),
            "QUERY_TOO_DEEP",
        ),
        (
            "{ a: songs(first: 100) { nodes { id title streamUrl } } b: songs(first: 100) { nodes { id title streamUrl } } c: songs(first: 100) { nodes { id title streamUrl } } d: songs(first: 100) { nodes { id title streamUrl } } e: songs(first: 100) { nodes { id title streamUrl } } f: songs(first: 100) { nodes { id title streamUrl } } }",
            json!({}),
            "QUERY_TOO_COMPLEX",
        ),
        (
            // Lists under lists are costed by their pages: 100 artists of
            // 100 songs each is over the limit (it was 810,000 rows once).
            "{ artists(first: 100) { nodes { songs(first: 100) { nodes { id } } } } }",
            json!({}),
            "QUERY_TOO_COMPLEX",
        ),
    ];
    // Searches cost what they scan: many searching aliases are too much.
    let aliases: String = (0..30)
        .map(|i| format!("s{i}: songs(first: 1, search: \"a\") {{ totalCount }} "))
        .collect();
    let many_searches = format!("{{ {aliases} }}");
    let cases: Vec<(&str, Value, &str)> = cases
        .into_iter()
        .chain([(many_searches.as_str(), json!({}), "QUERY_TOO_COMPLEX")])
        .collect();
    for (q, vars, expected) in cases {
        let r = query(&cluster, q, vars).await;
        assert_eq!(code(&r), expected, "{q}: {r}");
    }
    let r = cluster
        .admin
        .raw(
            "mutation { deleteSong(id: \"6c7d1d4e-6e0a-4a53-8d55-0f1c1e2f3a4b\") }",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(code(&r), "NOT_FOUND", "{r}");
    let r = cluster
        .admin
        .raw("mutation { deleteSong(id: \"nope\") }", json!({}))
        .await
        .unwrap();
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    // An unknown but well-formed id is simply null.
    let r = query(
        &cluster,
        "{ song(id: \"6c7d1d4e-6e0a-4a53-8d55-0f1c1e2f3a4b\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["song"], Value::Null);
    assert!(r.get("errors").is_none());
}
