//! `rondo upload`: send audio files, or whole folders recursively, each
//! straight to a storage node (`createUpload`, then a `PUT` of the bytes),
//! several at a time; one line per file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use rondo_cli::api::Song;
use rondo_cli::client::Client;
use rondo_core::ErrorCode;
use serde_json::{Value, json};

use super::Exit;

fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
                let entry = entry.with_context(|| format!("walk {}", p.display()))?;
                if entry.file_type().is_file() {
                    files.push(entry.into_path());
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Uploads files, `jobs` at a time; one line per file, in the order of the
/// files; exit 1 if any upload failed (skipped unsupported files do not
/// count as failures).
pub async fn run(client: &Client, paths: &[PathBuf], jobs: usize) -> anyhow::Result<Exit> {
    let files = collect_files(paths)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = Arc::new(indicatif::ProgressBar::new(total));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut ok, mut already, mut skipped, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut results = futures::stream::iter(files.iter())
        .map(|file| {
            let bar = bar.clone();
            async move { (file, upload_one(client, file, bar).await) }
        })
        .buffered(jobs.max(1));
    let mut finished = 0;
    let mut uploaded = Vec::new();
    while let Some((file, result)) = results.next().await {
        finished += 1;
        bar.set_message(format!("{finished}/{} files", files.len()));
        let result_code = result.as_ref().err().and_then(rondo_cli::Error::code);
        let line = match result {
            Ok(answer) if answer["duplicate"] == true => {
                already += 1;
                let song: Song = serde_json::from_value(answer["song"].clone()).unwrap_or_default();
                format!(
                    "same  {}  already in the library: {} — {} ({})",
                    file.display(),
                    song.title,
                    song.artist.name,
                    song.id
                )
            }
            Ok(answer) => {
                ok += 1;
                let song: Song = serde_json::from_value(answer["song"].clone()).unwrap_or_default();
                let line = format!(
                    "ok    {}  {} — {} ({})",
                    file.display(),
                    song.title,
                    song.artist.name,
                    song.id
                );
                if !song.id.is_empty() {
                    uploaded.push(song.id);
                }
                line
            }
            Err(rondo_cli::Error::GraphQl { message, .. })
                if result_code == Some(ErrorCode::UnsupportedMedia) =>
            {
                skipped += 1;
                format!("skip  {}  {message}", file.display())
            }
            Err(e) => {
                failed += 1;
                format!("FAIL  {}  {e}", file.display())
            }
        };
        bar.suspend(|| println!("{line}"));
    }
    bar.finish_and_clear();
    // The nodes answered once each song was committed; wait (briefly) for
    // the gateway's index too, so that a query right after sees them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for id in &uploaded {
        loop {
            let found = client
                .query(
                    "query($id: ID!) { song(id: $id) { id } }",
                    json!({ "id": id }),
                )
                .await
                .is_ok_and(|d| !d["song"].is_null());
            if found {
                break;
            }
            if std::time::Instant::now() > deadline {
                eprintln!("note: the gateway does not list every new song yet");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if std::time::Instant::now() > deadline {
            break;
        }
    }
    let already = match already {
        0 => String::new(),
        n => format!("{n} already in the library, "),
    };
    println!("{ok} uploaded, {already}{skipped} skipped, {failed} failed");
    Ok(if failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// Attempts per file: a node can die between the gateway's last health
/// check and the upload, or be refusing writes for want of a quorum. The
/// waits between attempts (0.25, 0.5, 1 and 2 s) outlast the gateway's
/// health-check interval (2 s), after which it names only live nodes.
const UPLOAD_ATTEMPTS: u32 = 5;

/// Whether another grant may succeed: the node could not be reached, the
/// connection was lost (even mid-answer: the song may be stored, but the
/// same bytes sent again are answered with that song, never stored twice),
/// or the node refused the write for want of a quorum.
fn retryable(e: &rondo_cli::Error) -> bool {
    match e {
        rondo_cli::Error::Http { .. } => true,
        rondo_cli::Error::GraphQl { .. } => e.code() == Some(ErrorCode::Unavailable),
        _ => false,
    }
}

async fn upload_one(
    client: &Client,
    path: &Path,
    bar: Arc<indicatif::ProgressBar>,
) -> rondo_cli::Result<Value> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 1;
    loop {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(rondo_cli::Error::io(format!("open {}", path.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(rondo_cli::Error::io(format!("stat {}", path.display())))?
            .len();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (counter, progress) = (sent.clone(), bar.clone());
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
                if let Ok(c) = chunk {
                    progress.inc(c.len() as u64);
                    counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        match client
            .upload_direct(reqwest::Body::wrap_stream(stream), len, &name, json!({}))
            .await
        {
            Err(e) if attempt < UPLOAD_ATTEMPTS && retryable(&e) => {
                let back = sent.load(std::sync::atomic::Ordering::Relaxed);
                bar.set_position(bar.position().saturating_sub(back));
                bar.suspend(|| eprintln!("retry {}: {e}", path.display()));
                tokio::time::sleep(std::time::Duration::from_millis(250 << (attempt - 1))).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
