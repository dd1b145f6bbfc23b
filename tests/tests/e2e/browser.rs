//! Real Chromium plays and seeks a song through the gateway's player page.

use std::path::Path;

use serde_json::{Value, json};

use crate::{upload_ok, wav};
use rondo_tests::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn chromium_plays_and_seeks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "install Debian's chromium (.ci/run does)"
    );
    let cluster = Cluster::builder().start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let song = upload_ok(
        &cluster,
        &wav(
            tmp.path(),
            "b.wav",
            "Browser Tune",
            "Headless",
            "Chromium",
            8.0,
            42,
        ),
        json!({}),
    )
    .await;

    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg(dir.join("play.mjs"))
            .arg(&cluster.admin.base)
            .arg("Browser Tune")
            .current_dir(&dir)
            .output(),
    )
    .await
    .expect("chromium run timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "play.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["error"], Value::Null, "{r}");
    assert!(
        r["src"]
            .as_str()
            .unwrap()
            .contains(&format!("/stream/{}", song["id"].as_str().unwrap())),
        "{r}"
    );
    let duration = r["duration"].as_f64().unwrap();
    assert!((duration - 8.0).abs() < 0.1, "{r}");
    assert!(r["playedTo"].as_f64().unwrap() > 0.3, "{r}");
    assert!(
        r["afterSeek"].as_f64().unwrap() > r["seekTarget"].as_f64().unwrap(),
        "{r}"
    );

    // Chromium fetched the audio with range requests, which the node
    // answered with 206.
    let metrics = cluster
        .http()
        .get(format!(
            "https://127.0.0.1:{}/metrics",
            cluster.nodes[0].http.port()
        ))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rondo_node_stream_responses_total{status=\"206\"}")),
        "{metrics}"
    );
}
