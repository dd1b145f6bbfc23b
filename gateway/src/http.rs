//! HTTP surface of the gateway: GraphQL over HTTP (POST and GET, JSON and
//! multipart uploads), GraphiQL, `/healthz`, `/metrics` and the web app.

use std::sync::Arc;

use async_graphql::http::{GraphiQLSource, MultipartOptions};
use async_graphql::{BatchRequest, BatchResponse, ServerError};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::TryStreamExt;
use rondo_core::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;
use crate::graphql::Auth;

/// The GraphQL-over-HTTP media type.
const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// The web app's content security policy: its own scripts and styles
/// only, audio from the storage nodes (other origins, HTTPS), requests to
/// this gateway and direct uploads to the nodes, never framed.
pub const WEBAPP_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob: https:; media-src https: blob:; connect-src 'self' https:; \
font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// The most operations one batched request may hold: each runs at once, so
/// a long batch is a long queue of work behind one request.
pub const MAX_BATCH: usize = 10;

/// What a multipart upload may carry beyond its file (the `operations` and
/// `map` parts, the part headers).
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// What the handlers share: the state and the schema built over it.
#[derive(Clone)]
pub struct Http {
    state: Arc<AppState>,
    schema: crate::graphql::RondoSchema,
}

/// The gateway's router.
pub fn router(state: Arc<AppState>) -> Router {
    let http = Http {
        schema: crate::graphql::schema(state.clone()),
        state: state.clone(),
    };
    let origins = &state.config.cors_allowed_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .max_age(std::time::Duration::from_secs(600));
    let mut router = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::subsonic::router(state.clone()));
    router = match &state.config.webapp_dir {
        Some(dir) => router.fallback_service(
            tower::ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(WEBAPP_CSP),
                ))
                .service(
                    tower_http::services::ServeDir::new(dir)
                        .fallback(tower_http::services::ServeFile::new(dir.join("index.html"))),
                ),
        ),
        None => router.route("/", get(player_page)),
    };
    router
        .layer(cors)
        // Every answer: no sniffing, no framing, no referrer, HTTPS only.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ))
        // A body that sends nothing for 30 s is cut off (a slow upload
        // holds a connection, a spool file and an upload slot).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(30),
        ))
        .with_state(http)
}

fn auth(state: &AppState, headers: &HeaderMap) -> Auth {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Auth::Anonymous;
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        // blake3::Hash compares in constant time.
        Some(t) if blake3::hash(t.as_bytes()) == state.admin_token_hash => Auth::Admin,
        Some(t) => match state.sessions.verify(t, crate::clock::unix_now()) {
            // A token from before the cap was lowered lasts no longer.
            Ok(session)
                if session.expires
                    > crate::clock::unix_now()
                        .saturating_add(crate::config::MAX_SESSION_TTL_SECS) =>
            {
                Auth::Invalid
            }
            Ok(mut session) => {
                // The token says who; the catalog says whether that account
                // still exists, what it may do now, and whether the session
                // outlived a logout or a password change.
                let snapshot = state.cluster.snapshot();
                match snapshot.accounts.user(session.user) {
                    Some(account) => {
                        session.role = account.role;
                        if snapshot.accounts.session_ok(&session) {
                            Auth::User(session)
                        } else {
                            Auth::Invalid
                        }
                    }
                    None => Auth::Invalid,
                }
            }
            Err(_) => Auth::Invalid,
        },
        None => Auth::Invalid,
    }
}

fn wants_graphql_response(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(GRAPHQL_RESPONSE))
}

/// A GraphQL error answer for a request that could not be executed at all.
fn request_error(
    status: StatusCode,
    code: ErrorCode,
    message: String,
    graphql_response: bool,
) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code.as_str() } }]
    });
    let content_type = if graphql_response {
        GRAPHQL_RESPONSE
    } else {
        "application/json"
    };
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response()
}

/// Gives every error an `extensions.code`, naming async-graphql's own
/// request errors (depth, complexity, parse, validation).
/// The longest error message sent back: a parse error quotes the query,
/// which may be a megabyte long.
pub const MAX_ERROR_MESSAGE: usize = 500;

fn add_codes(errors: &mut [ServerError]) {
    for e in errors {
        let has_code = e
            .extensions
            .as_ref()
            .is_some_and(|x| x.get("code").is_some());
        if !has_code {
            let code = library_error_code(e);
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", code.as_str());
        }
        if e.message.chars().count() > MAX_ERROR_MESSAGE {
            e.message = e
                .message
                .chars()
                .take(MAX_ERROR_MESSAGE)
                .collect::<String>()
                + "…";
        }
    }
}

/// The code of an error async-graphql made itself. It says which only in
/// its message text: each of these codes is pinned by the end-to-end test
/// `tests/tests/e2e/errors.rs`, so a library upgrade that changes the
/// messages fails there.
fn library_error_code(e: &ServerError) -> ErrorCode {
    match e.message.as_str() {
        "Query is nested too deep." => ErrorCode::QueryTooDeep,
        "Query is too complex." => ErrorCode::QueryTooComplex,
        m if m.contains("-->") || m.starts_with("Parse error") => ErrorCode::GraphqlParseFailed,
        m if m.starts_with("Invalid value") => ErrorCode::BadUserInput,
        // A custom scalar's parse error (`UnsignedInt64`, `DateTime`).
        m if m.starts_with("Failed to parse") => ErrorCode::BadUserInput,
        _ if e.path.is_empty() => ErrorCode::GraphqlValidationFailed,
        _ => ErrorCode::InternalServerError,
    }
}

fn client_ip(extensions: &http::Extensions) -> crate::limits::ClientIp {
    crate::limits::ClientIp(
        extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip()),
    )
}

async fn execute(
    http: &Http,
    batch: BatchRequest,
    auth: Auth,
    ip: crate::limits::ClientIp,
    graphql_response: bool,
) -> Response {
    http.state.metrics.graphql_requests.inc();
    let batch = batch.data(auth).data(ip);
    let mut response = http.schema.execute_batch(batch).await;
    let mut request_failed = false;
    match &mut response {
        BatchResponse::Single(r) => {
            add_codes(&mut r.errors);
            request_failed = r.data == async_graphql::Value::Null && !r.errors.is_empty();
        }
        BatchResponse::Batch(rs) => rs.iter_mut().for_each(|r| add_codes(&mut r.errors)),
    }
    let body = match serde_json::to_string(&response) {
        Ok(b) => b,
        Err(e) => {
            return request_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalServerError,
                e.to_string(),
                graphql_response,
            );
        }
    };
    let (status, content_type) = if graphql_response {
        (
            if request_failed {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            },
            GRAPHQL_RESPONSE,
        )
    } else {
        (StatusCode::OK, "application/json")
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn graphql_post(State(http): State<Http>, request: axum::extract::Request) -> Response {
    let ip = client_ip(request.extensions());
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let state = &http.state;
    let graphql_response = wants_graphql_response(&headers);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limit = usize::try_from(state.config.max_upload_bytes).unwrap_or(usize::MAX);
    let multipart = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("multipart/"));
    // A JSON request is a query and its variables; a multipart one also
    // carries the file.
    let body_limit = if multipart {
        limit.saturating_add(MULTIPART_OVERHEAD)
    } else {
        state.config.max_request_bytes
    };
    let too_large = || {
        request_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the request body is over the limit of {body_limit} bytes"),
            graphql_response,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit as u64) {
        return too_large();
    }
    // Counted as it arrives too (a chunked body declares no length).
    let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = over.clone();
    let mut seen = 0usize;
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .and_then(move |chunk| {
            seen = seen.saturating_add(chunk.len());
            futures::future::ready(if seen > body_limit {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                Err(std::io::Error::other("request body over the limit"))
            } else {
                Ok(chunk)
            })
        });
    let opts = MultipartOptions::default()
        .max_file_size(limit)
        .max_num_files(1);
    let reader = tokio_util::compat::TokioAsyncReadCompatExt::compat(
        tokio_util::io::StreamReader::new(stream),
    );
    let batch = match async_graphql::http::receive_batch_body(content_type, reader, opts).await {
        Ok(b) => b,
        Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => return too_large(),
        Err(async_graphql::ParseRequestError::PayloadTooLarge) => {
            return request_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("upload exceeds the limit of {limit} bytes"),
                graphql_response,
            );
        }
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                e.to_string(),
                graphql_response,
            );
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > MAX_BATCH
    {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "a batch holds at most {MAX_BATCH} operations, this one {}",
                requests.len()
            ),
            graphql_response,
        );
    }
    execute(
        &http,
        batch,
        auth(&http.state, &headers),
        ip,
        graphql_response,
    )
    .await
}

async fn graphql_get(
    State(http): State<Http>,
    headers: HeaderMap,
    Query(params): Query<std::collections::HashMap<String, String>>,
    extensions: http::Extensions,
) -> Response {
    let graphql_response = wants_graphql_response(&headers);
    let accepts_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if accepts_html && !params.contains_key("query") {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .title("Rondo GraphQL")
                .finish(),
        )
        .into_response();
    }
    let Some(query) = params.get("query") else {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "missing `query` parameter".into(),
            graphql_response,
        );
    };
    // Mutations are not allowed over GET (GraphQL over HTTP).
    if let Ok(doc) = async_graphql::parser::parse_query(query) {
        let wanted = params.get("operationName");
        let is_mutation = doc.operations.iter().any(|(name, op)| {
            let selected =
                wanted.is_none() || name.map(|n| n.as_str()) == wanted.map(String::as_str);
            selected && op.node.ty == async_graphql::parser::types::OperationType::Mutation
        });
        if is_mutation {
            let mut r = request_error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "mutations need POST".into(),
                graphql_response,
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
    }
    let mut request = async_graphql::Request::new(query.clone());
    if let Some(name) = params.get("operationName") {
        request = request.operation_name(name.clone());
    }
    if let Some(vars) = params.get("variables") {
        match serde_json::from_str::<async_graphql::Variables>(vars) {
            Ok(v) => request = request.variables(v),
            Err(e) => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    format!("variables: {e}"),
                    graphql_response,
                );
            }
        }
    }
    execute(
        &http,
        BatchRequest::Single(request),
        auth(&http.state, &headers),
        client_ip(&extensions),
        graphql_response,
    )
    .await
}

/// The process serves requests (a container's liveness probe).
async fn livez() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// The gateway can answer and write: some storage node it reaches reports
/// a ring with a quorum of the voters (a load balancer's or an
/// orchestrator's readiness probe). 503 otherwise, saying why.
async fn readyz(State(http): State<Http>) -> Response {
    let infos: Vec<_> = http
        .state
        .cluster
        .nodes()
        .iter()
        .map(|n| n.info())
        .collect();
    let up = infos.iter().filter(|i| i.up).count();
    match crate::cluster::primary_ring(&infos) {
        Some(ring) => axum::Json(serde_json::json!({
            "status": "ready",
            "ring": ring.id,
            "nodes_up": up,
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "unavailable",
                "reason": "no storage node it reaches is in a ring with a quorum of the voters",
                "nodes_up": up,
            })),
        )
            .into_response(),
    }
}

async fn healthz(State(http): State<Http>) -> Response {
    let state = &http.state;
    let live = state.cluster.live_nodes().len();
    let total = state.cluster.nodes().len();
    let status = if live > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if live > 0 { "ok" } else { "unavailable" },
        "nodes_up": live,
        "nodes": total,
        "songs": state.cluster.snapshot().songs.len(),
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(http): State<Http>, headers: HeaderMap) -> Response {
    let state = &http.state;
    // For admins: the admin token (what a scraper is given) or a session.
    match auth(state, &headers) {
        Auth::Admin => {}
        Auth::User(s) if s.role == rondo_core::session::Role::Admin => {}
        _ => {
            let mut r =
                (StatusCode::UNAUTHORIZED, "metrics need the admin token\n").into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let snap = state.cluster.snapshot();
    state
        .metrics
        .indexed_songs
        .set(i64::try_from(snap.songs.len()).unwrap_or(i64::MAX));
    state
        .metrics
        .nodes_up
        .set(i64::try_from(state.cluster.live_nodes().len()).unwrap_or(i64::MAX));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
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

/// A minimal built-in player, served at `/` until the web app is built.
async fn player_page() -> Html<&'static str> {
    Html(include_str!("player.html"))
}
