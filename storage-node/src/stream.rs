//! The HTTPS streaming endpoint: `GET`/`HEAD /stream/{song_id}?exp=…&sig=…`,
//! plus `/healthz` and `/metrics`; the same listener takes direct uploads
//! (`PUT /upload/{song_id}`, in `upload.rs`).
//!
//! Range semantics follow RFC 9110: one range per request, 206 with
//! `Content-Range`, 416 for unsatisfiable ranges, a strong `ETag` from the
//! content hash, `If-Range`, `If-None-Match`. A bad or expired signature gets
//! 403 before anything else is looked at.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use rondo_core::range::{self, Served};
use rondo_core::{ContentHash, SongId};
use rondo_proto::storage::v1 as pb;
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::NodeState;

/// Size of the reads that feed a response body.
const BODY_CHUNK: usize = 64 * 1024;

/// The node's HTTP router.
pub fn router(state: Arc<NodeState>) -> Router {
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::HEAD, Method::PUT])
        .allow_headers([
            header::RANGE,
            header::IF_RANGE,
            header::IF_NONE_MATCH,
            header::CONTENT_TYPE,
        ])
        .expose_headers([
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::CONTENT_LENGTH,
            header::ETAG,
        ]);
    Router::new()
        .route("/stream/{song_id}", get(stream))
        .route("/art/{hash}", get(crate::art::get))
        .route("/upload/{song_id}", axum::routing::put(crate::upload::put))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(cors)
        // A direct upload that sends nothing for 30 s is cut off.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_secs(30),
        ))
        // Nothing a node serves is a page: no sniffing, no scripts.
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox; default-src 'none'"),
        ))
        .with_state(state)
}

/// Query of a stream URL. Both fields are optional here so that a missing one
/// gets 403 like a wrong one.
#[derive(Debug, Deserialize)]
struct StreamQuery {
    exp: Option<String>,
    sig: Option<String>,
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], msg).into_response()
}

async fn stream(
    State(state): State<Arc<NodeState>>,
    Path(song_id): Path<String>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let response = serve(&state, &song_id, query.ok().map(|q| q.0), &method, &headers).await;
    state
        .metrics
        .stream_responses
        .get_or_create(&crate::metrics::StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn serve(
    state: &Arc<NodeState>,
    song_id: &str,
    query: Option<StreamQuery>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let now = crate::clock::unix_now();
    let (song, exp) = match verify(state, song_id, query, now) {
        Ok(v) => v,
        Err((status, why)) => return plain(status, why),
    };
    let (record, hash) = match lookup(state, song).await {
        Ok(v) => v,
        Err((status, why)) => return plain(status, why),
    };
    let len = record.size_bytes;
    let etag = format!("\"{}\"", hash.to_hex());
    let modified =
        UNIX_EPOCH + Duration::from_millis(u64::try_from(record.created_at_ms).unwrap_or(0));
    let last_modified = httpdate::fmt_http_date(modified);

    let mut out = HeaderMap::new();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        out.insert(header::LAST_MODIFIED, v);
    }
    let remaining = exp.saturating_sub(now);
    if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={remaining}")) {
        out.insert(header::CACHE_CONTROL, v);
    }

    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && etag_list_matches(inm, &etag, true)
    {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }

    // Audio types only: anything else (a record from before the node
    // checked) is bytes to a browser, never a page.
    let content_type = Some(record.mime_type.as_str())
        .filter(|t| rondo_media::is_audio_type(t))
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    out.insert(header::CONTENT_TYPE, content_type);

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let if_range_ok = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        // A strong comparison: our ETag is strong, a weak validator never matches.
        Some(v) if v.trim().starts_with('"') => v.trim() == etag,
        Some(v) => v.trim() == last_modified,
    };
    let served = if if_range_ok {
        range::resolve(range_header, len)
    } else {
        Served::Full
    };
    let status = match served {
        Served::Full => StatusCode::OK,
        Served::Partial { start, end } => {
            if let Ok(v) = HeaderValue::from_str(&range::content_range(start, end, len)) {
                out.insert(header::CONTENT_RANGE, v);
            }
            StatusCode::PARTIAL_CONTENT
        }
        Served::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&range::unsatisfied_range(len)) {
                out.insert(header::CONTENT_RANGE, v);
            }
            out.remove(header::CONTENT_TYPE);
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return (StatusCode::RANGE_NOT_SATISFIABLE, out).into_response();
        }
    };
    let body_len = served.body_len(len);
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if method == Method::HEAD {
        return (status, out).into_response();
    }
    let start = match served {
        Served::Partial { start, .. } => start,
        _ => 0,
    };
    let file = match tokio::fs::File::open(state.store.blob_path(&hash)).await {
        Ok(f) => f.into_std().await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Not on this disk: the song's partition is owned by other
            // nodes (or the copy was given up after its linger), and a
            // player asks another replica on a 404.
            tracing::debug!(%song, %hash, "stream of a blob this node does not hold");
            return plain(
                StatusCode::NOT_FOUND,
                "this node does not hold the song's audio; ask another replica\n",
            );
        }
        Err(e) => {
            tracing::error!(%song, %hash, error = %e, "blob file unreadable");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    state.metrics.stream_bytes.inc_by(body_len);
    // A whole-file stream is hashed on the way out, as a free scrub of a
    // hot blob: a mismatch makes it a suspect, re-hashed at once.
    let check = (start == 0 && body_len == len).then(|| Check {
        state: state.clone(),
        hash,
        hasher: Box::new(blake3::Hasher::new()),
    });
    let body = blob_body(file, start, body_len, check);
    (status, out, body).into_response()
}

/// A refusal: the status and the plain-text body to answer.
type Refusal = (StatusCode, &'static str);

/// Checks a stream URL's signature against this node and the clock: the
/// song and the expiry, or the 403 to answer.
fn verify(
    state: &NodeState,
    song_id: &str,
    query: Option<StreamQuery>,
    now: u64,
) -> Result<(SongId, u64), Refusal> {
    let (Some(exp), Some(sig)) = query.map_or((None, None), |q| (q.exp, q.sig)) else {
        return Err((StatusCode::FORBIDDEN, "missing signature\n"));
    };
    let (Ok(song), Ok(exp)) = (song_id.parse::<SongId>(), exp.parse::<u64>()) else {
        return Err((StatusCode::FORBIDDEN, "bad signature\n"));
    };
    if let Err(e) = state.signer.verify(song, state.node_id, exp, &sig, now) {
        tracing::debug!(%song, error = %e, "refused stream");
        let why = if matches!(e, rondo_core::Error::Expired { .. }) {
            "expired\n"
        } else {
            "bad signature\n"
        };
        return Err((StatusCode::FORBIDDEN, why));
    }
    Ok((song, exp))
}

/// The song's record and content hash, or the response to answer (404 for
/// a song the catalog does not have, 500 on a storage failure).
async fn lookup(
    state: &Arc<NodeState>,
    song: SongId,
) -> Result<(pb::Song, rondo_core::ContentHash), Refusal> {
    let internal = || (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
    let st = state.clone();
    let record = match tokio::task::spawn_blocking(move || st.store.song(song)).await {
        Ok(Ok(Some(record))) => record,
        Ok(Ok(None)) => return Err((StatusCode::NOT_FOUND, "no such song on this node\n")),
        Ok(Err(e)) => {
            tracing::error!(%song, error = %e, "catalog lookup failed");
            return Err(internal());
        }
        Err(e) => {
            tracing::error!(%song, error = %e, "catalog lookup task failed");
            return Err(internal());
        }
    };
    let Ok(hash) = record.content_hash.parse::<rondo_core::ContentHash>() else {
        tracing::error!(%song, "song has a malformed content hash");
        return Err(internal());
    };
    Ok((record, hash))
}

/// The response body: the blob read in [`BODY_CHUNK`] pieces as the socket
/// drains them.
///
/// Each piece is first read on the connection's own task with
/// `preadv2(RWF_NOWAIT)`, which copies from the page cache and fails with
/// `EAGAIN` instead of waiting for the disk; only what is not cached goes to
/// the blocking pool. Hot songs (the common case) are therefore served on one
/// thread with no hand-off, as nginx does, and a cold read never stalls the
/// runtime's workers. A slow listener holds one chunk, never a thread.
fn blob_body(file: std::fs::File, start: u64, len: u64, check: Option<Check>) -> Body {
    let end = start.saturating_add(len);
    let pool = Pool::default();
    let state = (Some(Arc::new(file)), start, check);
    let chunks = futures::stream::unfold(state, move |(file, offset, mut check)| {
        let pool = pool.clone();
        async move {
            let file = file?;
            if offset >= end {
                if let Some(c) = check {
                    c.finish();
                }
                return None;
            }
            let want = usize::try_from((end - offset).min(BODY_CHUNK as u64)).unwrap_or(BODY_CHUNK);
            match read_chunk(&file, offset, pool.take(want)).await {
                Ok(buf) => {
                    let next = offset + buf.len() as u64;
                    if let Some(c) = check.as_mut() {
                        c.hasher.update(&buf);
                    }
                    Some((Ok(pool.piece(buf)), (Some(file), next, check)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "blob read failed mid-stream");
                    if let Some(c) = check {
                        c.state.suspects.report(c.hash);
                    }
                    Some((Err(e), (None, offset, None)))
                }
            }
        }
    });
    Body::from_stream(chunks)
}

/// The hash of a whole-file stream, checked once its last byte is read.
struct Check {
    state: Arc<NodeState>,
    hash: ContentHash,
    hasher: Box<blake3::Hasher>,
}

impl Check {
    fn finish(self) {
        let actual = ContentHash::from(self.hasher.finalize());
        if actual != self.hash {
            tracing::warn!(hash = %self.hash, %actual, "a streamed blob did not hash to its name");
            self.state.suspects.report(self.hash);
        }
    }
}

/// The buffers of one response body. A piece goes back to its pool once the
/// connection has encrypted and sent it, so a stream reuses a few buffers
/// instead of allocating and zeroing one per piece.
#[derive(Clone, Default)]
struct Pool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// A piece of a body on its way to the socket.
struct Piece {
    buf: Vec<u8>,
    pool: Pool,
}

impl Pool {
    /// Buffers a body keeps for reuse; more are only in flight briefly.
    const KEEP: usize = 4;

    fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut free| free.pop());
        let mut buf = reused.unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    fn piece(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Piece {
            buf,
            pool: self.clone(),
        })
    }
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut free) = self.pool.0.lock()
            && free.len() < Pool::KEEP
        {
            free.push(buf);
        }
    }
}

/// Fills `buf` from `offset`: from the page cache without blocking where it
/// can, the rest on the blocking pool.
async fn read_chunk(
    file: &Arc<std::fs::File>,
    offset: u64,
    mut buf: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let want = buf.len();
    let mut filled = 0;
    while filled < want {
        match rustix::io::preadv2(
            file.as_ref(),
            &mut [std::io::IoSliceMut::new(&mut buf[filled..])],
            offset + filled as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => return Err(short_blob()),
            Ok(n) => filled += n,
            // Not (all) in the page cache, or no RWF_NOWAIT here: let a
            // blocking thread wait for the disk.
            Err(_) => break,
        }
    }
    if filled < want {
        buf = read_rest(file.clone(), offset, buf, filled).await?;
    }
    Ok(buf)
}

/// Fill `buf[filled..]` from the file on a blocking thread: the path for
/// pages the page cache does not hold (or a kernel without RWF_NOWAIT).
async fn read_rest(
    file: Arc<std::fs::File>,
    offset: u64,
    mut buf: Vec<u8>,
    filled: usize,
) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf[filled..], offset + filled as u64)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    short_blob()
                } else {
                    e
                }
            })?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn short_blob() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "blob shorter than its catalog entry",
    )
}

fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*"
            || candidate == etag
            || (weak && candidate.strip_prefix("W/") == Some(etag))
    })
}

/// The process serves requests (a container's liveness probe).
async fn livez() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// The node is in an operational ring with a quorum of the voters: it
/// orders and applies writes (a readiness probe). 503 otherwise, with its
/// control plane's phase (`joining`, `gather`, `recover`, or
/// `operational` in a minority).
async fn readyz(State(state): State<Arc<NodeState>>) -> Response {
    let ring = state.ring.status();
    let body = serde_json::json!({
        "status": if ring.quorate { "ready" } else { "unavailable" },
        "node_id": state.node_id.to_string(),
        "phase": ring.phase,
        "last_applied_seq": ring.last_applied_seq,
    });
    let status = if ring.quorate {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn healthz(State(state): State<Arc<NodeState>>) -> Response {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || st.store.stats()).await {
        Ok(Ok(stats)) => axum::Json(serde_json::json!({
            "status": "ok",
            "node_id": state.node_id.to_string(),
            "songs": stats.song_count,
            "blobs": stats.blob_count,
            "bytes_stored": stats.bytes_stored,
        }))
        .into_response(),
        _ => plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}

async fn metrics(State(state): State<Arc<NodeState>>, headers: HeaderMap) -> Response {
    let Some(want) = state.metrics_token else {
        return plain(
            StatusCode::NOT_FOUND,
            "metrics are off: set metrics_token_file\n",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // blake3::Hash compares in constant time.
    if given.map(|t| blake3::hash(t.trim().as_bytes())) != Some(want) {
        let mut r = plain(StatusCode::UNAUTHORIZED, "metrics need the metrics token\n");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    state.refresh_gauges();
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::{BODY_CHUNK, etag_list_matches, read_chunk, read_rest};

    fn blob(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        f.as_file().sync_all().unwrap();
        (f, bytes)
    }

    #[tokio::test]
    async fn reads_cached_and_uncached_pages_alike() {
        let (f, bytes) = blob(3 * BODY_CHUNK + 123);
        let file = Arc::new(std::fs::File::open(f.path()).unwrap());
        // Cached: the write left the pages in the page cache.
        let got = read_chunk(&file, 5, vec![0; BODY_CHUNK]).await.unwrap();
        assert_eq!(&got[..], &bytes[5..5 + BODY_CHUNK]);
        // The blocking path, whole and after a partial cached read. It is
        // called directly: whether fadvise(DONTNEED) evicts pages depends on
        // the filesystem (tmpfs keeps them), so eviction cannot force it.
        let off = 2 * BODY_CHUNK as u64 + 7;
        let got = read_rest(file.clone(), off, vec![0; BODY_CHUNK], 0)
            .await
            .unwrap();
        assert_eq!(&got[..], &bytes[off as usize..off as usize + BODY_CHUNK]);
        let mut half = vec![0; BODY_CHUNK];
        half[..100].copy_from_slice(&bytes[off as usize..off as usize + 100]);
        let got = read_rest(file.clone(), off, half, 100).await.unwrap();
        assert_eq!(&got[..], &bytes[off as usize..off as usize + BODY_CHUNK]);
        // After an eviction request the result is the same either way.
        rustix::fs::fadvise(file.as_ref(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let got = read_chunk(&file, off, vec![0; BODY_CHUNK]).await.unwrap();
        assert_eq!(&got[..], &bytes[off as usize..off as usize + BODY_CHUNK]);
    }

    #[tokio::test]
    async fn a_blob_shorter_than_its_entry_is_an_error() {
        let (f, _) = blob(1000);
        let file = Arc::new(std::fs::File::open(f.path()).unwrap());
        let err = read_chunk(&file, 900, vec![0; 200]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        rustix::fs::fadvise(file.as_ref(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let err = read_chunk(&file, 900, vec![0; 200]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let err = read_rest(file.clone(), 900, vec![0; 200], 0)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(err.to_string(), "blob shorter than its catalog entry");
    }

    #[test]
    fn etag_lists() {
        assert!(etag_list_matches("\"a\", \"b\"", "\"b\"", true));
        assert!(etag_list_matches("*", "\"b\"", true));
        assert!(etag_list_matches("W/\"b\"", "\"b\"", true));
        assert!(!etag_list_matches("W/\"b\"", "\"b\"", false));
        assert!(!etag_list_matches("\"c\"", "\"b\"", true));
    }
}
