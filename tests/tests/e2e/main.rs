//! End-to-end tests against real `rondo-node` and `rondo-gateway` processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod browser;
mod cli;
mod covers;
mod crash;
mod data;
mod deploy;
mod dev;
mod direct_upload;
mod errors;
mod faults;
mod gateway_ha;
mod graphql_http;
mod library;
mod membership;
mod outage;
mod ring;
mod scrub;
mod security;
mod streaming;
mod subsonic;
mod transition;
mod upload;
mod vrrp;
mod webapp;

use std::path::{Path, PathBuf};

use rondo_tests::Cluster;
use serde_json::Value;

/// Selection of every song field the tests look at.
pub const SONG_FIELDS: &str = "{ id title trackNumber year genre durationMs mimeType sizeBytes contentHash streamUrl artist { id name } album { id title } replicas { id address } }";

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Uploads a file as admin and returns the song, failing on any error.
pub async fn upload_ok(cluster: &Cluster, path: &Path, overrides: Value) -> Value {
    let response = cluster
        .admin
        .upload_raw(path, overrides, SONG_FIELDS)
        .await
        .unwrap();
    assert!(
        response.get("errors").is_none(),
        "upload failed: {response}"
    );
    response["data"]["uploadSong"]["song"].clone()
}

/// The `extensions.code` of the first error.
pub fn code(response: &Value) -> &str {
    response
        .pointer("/errors/0/extensions/code")
        .and_then(Value::as_str)
        .unwrap_or("<no error code>")
}

/// The resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A tagged WAV in a temp dir.
pub fn wav(
    dir: &Path,
    name: &str,
    title: &str,
    artist: &str,
    album: &str,
    seconds: f32,
    seed: u64,
) -> PathBuf {
    let path = dir.join(name);
    rondo_tests::tagged_wav(&path, title, artist, album, seconds, seed).unwrap();
    path
}

/// Fetches a URL with extra headers; returns status, headers and body.
pub async fn get(
    cluster: &Cluster,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = cluster.http().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

/// Runs a query without a token.
pub async fn query(cluster: &Cluster, q: &str, vars: Value) -> Value {
    cluster.anon.raw(q, vars).await.unwrap()
}
