//! The HTTPS streaming endpoint: `GET`/`HEAD /stream/{song_id}?exp=…&sig=…`,
//! plus `/healthz` and `/metrics`.
//!
//! Range semantics follow RFC 9110: one range per request, 206 with
//! `Content-Range`, 416 for unsatisfiable ranges, a strong `ETag` from the
//! content hash, `If-Range`, `If-None-Match`. A bad or expired signature gets
//! 403 before anything else is looked at.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use rondo_core::SongId;
use rondo_core::range::{self, Served};
use serde::Deserialize;

use crate::NodeState;

/// Size of the reads that feed a response body.
const BODY_CHUNK: usize = 256 * 1024;

/// How many chunks the reader may run ahead of the socket.
const READ_AHEAD: usize = 2;

/// The node's HTTP router.
pub fn router(state: Arc<NodeState>) -> Router {
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([header::RANGE, header::IF_RANGE, header::IF_NONE_MATCH])
        .expose_headers([
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::CONTENT_LENGTH,
            header::ETAG,
        ]);
    Router::new()
        .route("/stream/{song_id}", get(stream))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(cors)
        .with_state(state)
}

/// Query of a stream URL. Both fields are optional here so that a missing one
/// gets 403 like a wrong one.
#[derive(Debug, Deserialize)]
struct StreamQuery {
    exp: Option<String>,
    sig: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
    let now = unix_now();
    let (Some(exp), Some(sig)) = query.map_or((None, None), |q| (q.exp, q.sig)) else {
        return plain(StatusCode::FORBIDDEN, "missing signature\n");
    };
    let (Ok(song), Ok(exp)) = (song_id.parse::<SongId>(), exp.parse::<u64>()) else {
        return plain(StatusCode::FORBIDDEN, "bad signature\n");
    };
    if let Err(e) = state.signer.verify(song, state.node_id, exp, &sig, now) {
        tracing::debug!(%song, error = %e, "refused stream");
        return plain(
            StatusCode::FORBIDDEN,
            if matches!(e, rondo_core::Error::Expired { .. }) {
                "expired\n"
            } else {
                "bad signature\n"
            },
        );
    }
    let st = state.clone();
    let record = match tokio::task::spawn_blocking(move || st.store.song(song)).await {
        Ok(Ok(Some(record))) => record,
        Ok(Ok(None)) => return plain(StatusCode::NOT_FOUND, "no such song on this node\n"),
        Ok(Err(e)) => {
            tracing::error!(%song, error = %e, "catalog lookup failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
        Err(e) => {
            tracing::error!(%song, error = %e, "catalog lookup task failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let Ok(hash) = record.content_hash.parse::<rondo_core::ContentHash>() else {
        tracing::error!(%song, "song has a malformed content hash");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
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

    let content_type = HeaderValue::from_str(&record.mime_type)
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
        Err(e) => {
            tracing::error!(%song, %hash, error = %e, "blob file missing");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    state.metrics.stream_bytes.inc_by(body_len);
    let body = read_ahead_body(file, start, body_len);
    (status, out, body).into_response()
}

/// A body of `len` bytes of `file` from `start`, read by a task that stays up
/// to [`READ_AHEAD`] chunks ahead of the socket so that disk reads overlap
/// with TLS encryption. Each read is one `pread` on the blocking pool, so a
/// slow listener holds memory for a few chunks but never a thread.
fn read_ahead_body(file: std::fs::File, start: u64, len: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    tokio::spawn(async move {
        let mut file = Some(file);
        let mut offset = start;
        let end = start.saturating_add(len);
        while offset < end
            && let Some(f) = file.take()
        {
            let want = (end - offset).min(BODY_CHUNK as u64);
            let first = offset == start;
            let read =
                tokio::task::spawn_blocking(move || read_chunk(f, first.then_some(start), want))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let chunk = match read {
                Ok((f, chunk)) => {
                    file = Some(f);
                    offset += chunk.len() as u64;
                    Ok(chunk)
                }
                Err(e) => {
                    tracing::error!(error = %e, "blob read failed mid-stream");
                    Err(e)
                }
            };
            if tx.send(chunk).await.is_err() {
                break; // the listener went away
            }
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Reads exactly `want` bytes from the file's cursor (after seeking to
/// `seek`, if given), into a buffer that is never zeroed first.
fn read_chunk(
    mut file: std::fs::File,
    seek: Option<u64>,
    want: u64,
) -> std::io::Result<(std::fs::File, Bytes)> {
    use std::io::{Read, Seek};
    if let Some(pos) = seek {
        file.seek(std::io::SeekFrom::Start(pos))?;
    }
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(BODY_CHUNK));
    (&mut file).take(want).read_to_end(&mut buf)?;
    if (buf.len() as u64) < want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob shorter than its catalog entry",
        ));
    }
    Ok((file, Bytes::from(buf)))
}

/// Whether an `If-None-Match`/`If-Match` list names `etag` (`*` matches all).
fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*"
            || candidate == etag
            || (weak && candidate.strip_prefix("W/") == Some(etag))
    })
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

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
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
    use super::etag_list_matches;

    #[test]
    fn etag_lists() {
        assert!(etag_list_matches("\"a\", \"b\"", "\"b\"", true));
        assert!(etag_list_matches("*", "\"b\"", true));
        assert!(etag_list_matches("W/\"b\"", "\"b\"", true));
        assert!(!etag_list_matches("W/\"b\"", "\"b\"", false));
        assert!(!etag_list_matches("\"c\"", "\"b\"", true));
    }
}
