//! Cover art over HTTPS: `GET`/`HEAD /art/{hash}?size=…&exp=…&sig=…`.
//!
//! A picture is a blob placed like audio, but any node serves any picture:
//! one it does not hold it reads once from an owner (hash checked). What
//! it serves at a size is a JPEG whose longer side is that size (never
//! enlarged), made once and kept in `art-cache/` (a cache: it may be
//! emptied at any time); size 0 is the picture as it was stored. The URL
//! is signed by a gateway (the picture, the size and the expiry) and its
//! answer is immutable: a strong `ETag` (the picture's hash and the size),
//! `Cache-Control: public, max-age` up to the expiry, `304` to a matching
//! `If-None-Match`. A bad or expired signature gets 403 before anything is
//! looked at.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rondo_core::ContentHash;
use rondo_media::art::{ART_SIZES, MAX_ART_BYTES};
use serde::Deserialize;

use crate::error::Error;
use crate::state::NodeState;

/// Pictures resized at once (decoding a large picture takes a core for a
/// while; a page of covers must not starve the streams).
static RESIZES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Query of a picture URL; all optional here so that a missing field gets
/// 403 like a wrong one.
#[derive(Debug, Deserialize)]
pub struct ArtQuery {
    size: Option<String>,
    exp: Option<String>,
    sig: Option<String>,
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], msg).into_response()
}

pub async fn get(
    State(state): State<Arc<NodeState>>,
    Path(hash): Path<String>,
    query: Result<Query<ArtQuery>, axum::extract::rejection::QueryRejection>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let response = serve(&state, &hash, query.ok().map(|q| q.0), &method, &headers).await;
    state
        .metrics
        .art_responses
        .get_or_create(&crate::metrics::StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn serve(
    state: &Arc<NodeState>,
    hash: &str,
    query: Option<ArtQuery>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let now = crate::clock::unix_now();
    let forbidden = || plain(StatusCode::FORBIDDEN, "bad or expired picture URL\n");
    let Some(ArtQuery {
        size: Some(size),
        exp: Some(exp),
        sig: Some(sig),
    }) = query
    else {
        return forbidden();
    };
    let (Ok(art), Ok(size), Ok(exp)) = (
        hash.parse::<ContentHash>(),
        size.parse::<u32>(),
        exp.parse::<u64>(),
    ) else {
        return forbidden();
    };
    if let Err(e) = state.signer.verify_art(&art, size, exp, &sig, now) {
        tracing::debug!(%art, error = %e, "refused picture URL");
        return forbidden();
    }
    if size != 0 && !ART_SIZES.contains(&size) {
        return plain(StatusCode::BAD_REQUEST, "no such picture size\n");
    }
    let etag = format!("\"{}-{size}\"", art.to_hex());
    let mut out = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    let max_age = exp.saturating_sub(now);
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}, immutable")) {
        out.insert(header::CACHE_CONTROL, v);
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| {
            inm.split(',')
                .map(|c| c.trim().trim_start_matches("W/"))
                .any(|c| c == "*" || c == etag)
        })
    {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    let bytes = match picture(state, &art, size).await {
        Ok(b) => b,
        Err(e @ (Error::Unavailable(_) | Error::BlobNotFound(_))) => {
            tracing::info!(%art, error = %e, "picture not found");
            return plain(StatusCode::NOT_FOUND, "no such picture\n");
        }
        Err(e) => {
            tracing::warn!(%art, size, error = %e, "serving a picture failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "picture unavailable\n");
        }
    };
    let mime = if size == 0 {
        rondo_media::art::check_mime(&bytes).unwrap_or("application/octet-stream")
    } else {
        "image/jpeg"
    };
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if method == Method::HEAD {
        return (StatusCode::OK, out).into_response();
    }
    (StatusCode::OK, out, bytes).into_response()
}

/// The bytes served for picture `art` at `size`: from the cache, else made
/// (from this node's copy, or one read from an owner) and cached.
async fn picture(state: &Arc<NodeState>, art: &ContentHash, size: u32) -> Result<Vec<u8>, Error> {
    let path = state.store.art_size_path(art, size);
    if size != 0 {
        match tokio::fs::read(&path).await {
            Ok(b) => return Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read cached picture")(e)),
        }
    }
    if size == 0 {
        return original(state, art).await;
    }
    // The permit first: a burst of requests for sizes not made yet holds
    // at most two pictures in memory, not one each.
    let _permit = RESIZES
        .acquire()
        .await
        .map_err(|_| Error::Unavailable("shutting down".into()))?;
    // Another request may have made it while this one waited.
    if let Ok(b) = tokio::fs::read(&path).await {
        return Ok(b);
    }
    let original = original(state, art).await?;
    let resized = tokio::task::spawn_blocking(move || rondo_media::art::resize(&original, size))
        .await?
        .map_err(|e| Error::Media(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
    let written = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(&tmp, &resized).await?;
        tokio::fs::rename(&tmp, &path).await
    }
    .await;
    if let Err(e) = written {
        // Served all the same; made again next time.
        let _ = tokio::fs::remove_file(&tmp).await;
        tracing::warn!(%art, size, error = %e, "caching a resized picture failed");
    }
    Ok(resized)
}

/// The picture as stored: this node's copy, else one read from an owner.
async fn original(state: &Arc<NodeState>, art: &ContentHash) -> Result<Vec<u8>, Error> {
    match tokio::fs::read(state.store.blob_path(art)).await {
        Ok(b) if b.len() <= MAX_ART_BYTES => Ok(b),
        Ok(_) => Err(Error::TooLarge {
            limit: MAX_ART_BYTES as u64,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::replication::transfer::read_small(state, art, MAX_ART_BYTES).await
        }
        Err(e) => Err(Error::io("read picture")(e)),
    }
}
