//! The web app: its Vitest unit tests, and the whole flow in Debian's
//! Chromium against `rondo dev` (3 storage nodes, the web app build).
//! Screenshots of every page land in `target/webapp-screenshots/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

#[test]
fn webapp_unit_tests_pass() {
    let webapp = repo().join("webapp");
    assert!(
        webapp.join("node_modules").exists(),
        "run `npm ci` in webapp first (.ci/run does)"
    );
    let out = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(&webapp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vitest failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webapp_end_to_end_in_chromium() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dist = repo().join("webapp/dist");
    assert!(
        dist.join("index.html").exists(),
        "build the web app first: `npm ci && npm run build` in webapp (.ci/run does)"
    );
    let browser = repo().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rondo-data");
    let lease = crate::dev::dev_ports(3);
    let args = [
        "--no-demo".as_ref(),
        "--nodes".as_ref(),
        "3".as_ref(),
        "--webapp".as_ref(),
        dist.as_os_str(),
    ];
    let (mut dev, info) = crate::dev::run_dev(&data, lease.base, &args).await;

    // A 4-minute song: long enough that Chromium has not buffered all of it
    // when its node dies.
    let title = "Zephyr Overture";
    let wav = tmp.path().join("zephyr.wav");
    rondo_tests::tagged_wav_with_cover(&wav, title, "Wind Quartet", "Open Air", 240.0, 7).unwrap();
    // Registering makes listeners only: the operator makes the admin.
    let ca = std::fs::read(&info.ca_cert).unwrap();
    let token = std::fs::read_to_string(&info.admin_token_file).unwrap();
    let operator =
        rondo_cli::client::Client::new(&info.gateway_url, &ca, Some(token.trim().into())).unwrap();
    let made = operator
        .query(
            "mutation { createUser(name: \"ada\", password: \"analytical engine\", role: ADMIN) { role } }",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(made["createUser"]["role"], "ADMIN");
    // The app is served with its security headers.
    let page = operator.http().get(&info.webapp_url).send().await.unwrap();
    let h = page.headers();
    assert_eq!(
        h["content-security-policy"],
        rondo_gateway::http::WEBAPP_CSP,
        "{h:?}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.contains_key("strict-transport-security"));
    // An MP3 made by ffmpeg with a 500-pixel JPEG attached, in its own
    // album: its cover shows on the albums page too.
    let jpeg = tmp.path().join("colours.jpg");
    image::RgbImage::from_fn(500, 500, |_, y| image::Rgb([230, (y / 2) as u8, 40]))
        .save(&jpeg)
        .unwrap();
    let mp3 = tmp.path().join("colours.mp3");
    let made = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-i",
        ])
        .arg(&jpeg)
        .args([
            "-map",
            "0:a",
            "-map",
            "1:v",
            "-c:v",
            "copy",
            "-disposition:v",
            "attached_pic",
        ])
        .args(["-c:a", "libmp3lame", "-id3v2_version", "3"])
        .args([
            "-metadata",
            "title=Warm Colours",
            "-metadata",
            "album=Colours",
            "-metadata",
            "artist=Painter",
            "-y",
        ])
        .arg(&mp3)
        .status()
        .expect("ffmpeg is missing: .ci/run installs it");
    assert!(made.success());
    let up = operator
        .upload_raw(&mp3, serde_json::json!({}), "{ id }")
        .await
        .unwrap();
    assert!(up.get("errors").is_none(), "{up}");
    // An 800-pixel image the admin gives the album in the page.
    let own_cover = tmp.path().join("own-cover.png");
    image::RgbImage::from_fn(800, 800, |x, _| image::Rgb([(x / 4) as u8, 90, 200]))
        .save(&own_cover)
        .unwrap();
    let shots = repo().join("target/webapp-screenshots");
    let mut child = Command::new("node")
        .arg(browser.join("webapp.mjs"))
        .arg(&info.gateway_url)
        .arg(&shots)
        .arg(&wav)
        .arg(title)
        .arg("Open Air")
        .arg(&own_cover)
        .current_dir(&browser)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let nodes = info.nodes.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut done = None;
        let mut killed = None;
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["event"] == "playing" {
                // Kill the node that serves the stream.
                let src = v["src"].as_str().unwrap_or_default().to_owned();
                let node = nodes
                    .iter()
                    .find(|n| src.starts_with(&n.stream_url))
                    .unwrap_or_else(|| panic!("{src} is on no node"));
                let ok = Command::new("pkill")
                    .args(["-KILL", "-f"])
                    .arg(node.config.as_os_str())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "kill the node serving {src}");
                killed = Some(node.stream_url.clone());
                let _ = writeln!(stdin, "killed");
            } else if v["event"] == "done" {
                done = Some(v);
            }
        }
        (done, killed)
    });
    let (done, killed) = tokio::time::timeout(Duration::from_secs(240), reader)
        .await
        .expect("the browser run timed out")
        .unwrap();
    let _ = child.wait();
    let r = done.expect("no result from the browser run");
    assert_eq!(r["error"], Value::Null, "{r:#}");
    assert_eq!(r["loggedInAs"], "ada");
    assert_eq!(r["cspViolations"], serde_json::json!([]), "{r}");
    assert!(
        r["wrongPassword"]
            .as_str()
            .unwrap_or_default()
            .contains("wrong name or password"),
        "{r}"
    );
    assert!(
        r["uploadError"]
            .as_str()
            .unwrap_or_default()
            .contains("Not a supported audio file"),
        "{r}"
    );
    assert!((r["duration"].as_f64().unwrap() - 240.0).abs() < 0.5, "{r}");
    assert!(r["playedTo"].as_f64().unwrap() > 0.5, "{r}");
    // The file's 400-pixel cover: 64 in the list, 300 in the player bar
    // and the Media Session, 300 on the album card, whole (not enlarged
    // to 600) on the album's page.
    assert_eq!(r["rowCover"], 64, "{r}");
    assert_eq!(r["playerCover"]["width"], 300, "{r}");
    let cover = r["playerCover"]["src"].as_str().unwrap_or_default();
    assert!(cover.contains("/art/"), "{r}");
    assert_eq!(r["mediaArtwork"], serde_json::json!([cover]), "{r}");
    assert_eq!(
        r["cardCovers"],
        serde_json::json!([300, 300]),
        "both albums' covers: {r}"
    );
    assert_eq!(r["albumCover"], 400, "{r}");
    assert_eq!(
        r["ownAlbumCover"], 600,
        "the admin's 800-pixel image at 600: {r}"
    );
    assert_eq!(r["albumCoverAgain"], 400, "the track's again: {r}");
    assert!(
        r["afterSeek"].as_f64().unwrap() >= r["seekTarget"].as_f64().unwrap(),
        "{r}"
    );
    // Playback continued from another node, at the position asked for.
    let killed = killed.expect("the node was killed");
    let resumed = r["resumedFrom"].as_str().unwrap_or_default();
    assert!(
        !resumed.starts_with(&killed),
        "resumed from the dead node: {r}"
    );
    assert!(
        r["resumedAt"].as_f64().unwrap() > r["farTarget"].as_f64().unwrap(),
        "{r}"
    );
    assert!(
        r["playlistSongs"][0]
            .as_str()
            .unwrap_or_default()
            .contains(title),
        "{r}"
    );
    assert_eq!(r["clusterNodes"], 3, "{r}");
    assert!(r["clusterUp"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["clusterIn"], 3, "every node in placement: {r}");
    assert_eq!(
        r["belowR"],
        "1024 partitions have fewer copies than they should: a node that holds them is down.",
        "full replication with one of three nodes down: {r}"
    );
    assert!(r["gateways"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["listenerSeesUpload"], 0, "{r}");
    // Stars, plays and app passwords.
    assert_eq!(r["starredAfterReload"], "true", "{r}");
    let recent = r["recentlyPlayed"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{r}");
    assert!(recent[0].as_str().unwrap().contains(title), "{r}");
    assert_eq!(r["appSecret"].as_str().unwrap().len(), 32, "{r}");
    assert_eq!(
        r["appPasswords"],
        serde_json::json!(["DSub on my phone"]),
        "{r}"
    );
    assert_eq!(
        r["subsonicPing"], "ok",
        "an app password is an API key: {r}"
    );
    assert_eq!(r["pageErrors"], serde_json::json!([]), "{r}");
    // No serious or critical WCAG 2 A/AA violation on any page (axe-core).
    let audits = r["accessibility"]
        .as_object()
        .expect("accessibility audits");
    assert!(audits.len() >= 8, "{r}");
    for (page, found) in audits {
        assert!(
            found["passed"].as_u64() > Some(5),
            "the audit ran on {page}: {found}"
        );
        assert_eq!(
            found["violations"],
            serde_json::json!([]),
            "accessibility of {page}: {found}"
        );
    }
    for page in [
        "register",
        "upload",
        "search-playing",
        "recovered",
        "playlist",
        "cluster",
        "home",
        "home-phone",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "screenshot {page}"
        );
    }
    // Stop the deployment (its processes would notice a kill too).
    if let Some(pid) = dev.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), dev.wait()).await;
}
