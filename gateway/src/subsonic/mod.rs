//! The OpenSubsonic API (`/rest/*`), so that the music apps listeners
//! already use (DSub, Symfonium, Ultrasonic, Feishin, …) play from Rondo.
//!
//! Every method answers from the gateway's index, as GraphQL does, in XML
//! (the default) or JSON (`f=json`), inside the `subsonic-response`
//! envelope ([`response`]). Requests are GET with a query string or POST
//! with a form body (the `formPost` extension); both `/rest/x` and
//! `/rest/x.view` name a method. Audio and pictures never pass through a
//! gateway: `stream`, `download` and `getCoverArt` answer a redirect (302)
//! to a signed URL on a storage node, where range requests work as they do
//! for the web app. [`auth`] checks the caller.

pub mod auth;
mod browse;
mod listening;
mod lists;
mod media;
mod playlists;
pub mod response;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use response::{Code, El, Failure, Format};

/// The largest form body accepted (play:Sub sends playlists of tens of
/// thousands of ids this way).
pub const MAX_FORM_BYTES: usize = 4 << 20;
/// The most values one request may carry.
pub const MAX_PARAMS: usize = 20_000;

/// A request's parameters, query and form merged, repeated keys kept.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: &[u8], form: &[u8]) -> Result<Params, Failure> {
        let mut all = Vec::new();
        for source in [query, form] {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(source)
                .map_err(|e| Failure::bad(format!("malformed parameters: {e}")))?;
            all.extend(pairs);
            if all.len() > MAX_PARAMS {
                return Err(Failure::bad(format!(
                    "at most {MAX_PARAMS} parameters in one request"
                )));
            }
        }
        Ok(Params(all))
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A required parameter.
    pub fn need(&self, key: &str) -> Result<&str, Failure> {
        self.get(key).ok_or_else(|| Failure::missing(key))
    }

    /// An optional number; a value that is not one is refused.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Failure> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Failure::bad(format!("{key}={v:?} is not a valid number"))),
        }
    }

    /// An optional boolean ("true"/"false", as clients send them).
    pub fn flag(&self, key: &str) -> Result<Option<bool>, Failure> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            Some(v) => Err(Failure::bad(format!("{key}={v:?} is not true or false"))),
        }
    }

    /// The answer format asked for.
    fn format(&self) -> Result<Format, Failure> {
        match self.get("f") {
            None | Some("" | "xml") => Ok(Format::Xml),
            Some("json") => Ok(Format::Json),
            Some(f) => Err(Failure::bad(format!(
                "format {f:?} is not supported (xml or json)"
            ))),
        }
    }
}

/// What a method answers.
pub enum Reply {
    /// An envelope, with a payload or without.
    Payload(Option<El>),
    /// A redirect to a signed URL on a storage node.
    Redirect(String),
}

impl From<El> for Reply {
    fn from(el: El) -> Reply {
        Reply::Payload(Some(el))
    }
}

/// What a method's handler has: the state, the snapshot of the index it
/// answers from, the caller and the parameters.
pub struct Call<'a> {
    pub state: &'a Arc<AppState>,
    pub snap: Arc<crate::index::Snapshot>,
    pub caller: Option<&'a auth::Caller>,
    pub params: &'a Params,
}

impl Call<'_> {
    /// The authenticated caller (every method but the public ones has one).
    pub fn caller(&self) -> Result<&auth::Caller, Failure> {
        self.caller
            .ok_or_else(|| Failure::new(Code::WrongCredentials, "not authenticated"))
    }
}

/// The router of `/rest`.
pub fn router<S: Clone + Send + Sync + 'static>(state: Arc<AppState>) -> axum::Router<S> {
    axum::Router::new()
        .route("/rest/{method}", axum::routing::get(handle).post(handle))
        .with_state(state)
}

/// Methods answered without authentication.
const PUBLIC: &[&str] = &["getOpenSubsonicExtensions"];

async fn handle(
    State(state): State<Arc<AppState>>,
    Path(method): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let ip = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = request.into_parts();
    let method = method.strip_suffix(".view").unwrap_or(&method).to_string();
    let query = parts.uri.query().unwrap_or("").as_bytes().to_vec();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let form = if parts.method == axum::http::Method::POST && is_form {
        match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                let f = Failure::bad(format!(
                    "the form body is over the limit of {MAX_FORM_BYTES} bytes"
                ));
                return envelope(Format::Xml, Err(f), &method);
            }
        }
    } else {
        Default::default()
    };
    let params = match Params::parse(&query, &form) {
        Ok(p) => p,
        Err(f) => return envelope(Format::Xml, Err(f), &method),
    };
    let format = match params.format() {
        Ok(f) => f,
        Err(f) => return envelope(Format::Xml, Err(f), &method),
    };
    let caller = if PUBLIC.contains(&method.as_str()) {
        None
    } else {
        let header = parts.headers.contains_key(header::AUTHORIZATION);
        match auth::authenticate(&state, &params, ip, header).await {
            Ok(c) => Some(c),
            Err(f) => return envelope(format, Err(f), &method),
        }
    };
    let call = Call {
        snap: state.cluster.snapshot(),
        state: &state,
        caller: caller.as_ref(),
        params: &params,
    };
    let outcome = dispatch(&method, &call).await;
    if let Err(f) = &outcome {
        tracing::debug!(method, code = f.code as i32, message = %f.message, "subsonic request failed");
    }
    match outcome {
        Ok(Reply::Redirect(url)) => match HeaderValue::from_str(&url) {
            Ok(location) => {
                let mut r = StatusCode::FOUND.into_response();
                r.headers_mut().insert(header::LOCATION, location);
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(_) => envelope(format, Err(Failure::bad("bad node URL")), &method),
        },
        Ok(Reply::Payload(p)) => envelope(format, Ok(p), &method),
        Err(f) => envelope(format, Err(f), &method),
    }
}

/// An envelope as an HTTP answer: always 200, as Subsonic servers answer
/// failures too. XML is `text/xml` (clients tell a failed stream from
/// audio by it).
fn envelope(format: Format, outcome: Result<Option<El>, Failure>, method: &str) -> Response {
    let _ = method;
    let body = response::render(format, &outcome);
    let content_type = match format {
        Format::Xml => "text/xml; charset=utf-8",
        Format::Json => "application/json",
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, headers, body).into_response()
}

async fn dispatch(method: &str, call: &Call<'_>) -> Result<Reply, Failure> {
    match method {
        "ping" => Ok(Reply::Payload(None)),
        "getLicense" => Ok(El::new("license").attr("valid", true).into()),
        "getOpenSubsonicExtensions" => Ok(browse::extensions().into()),
        "tokenInfo" => auth::token_info(call),
        "getMusicFolders" => Ok(browse::music_folders().into()),
        "getIndexes" => browse::indexes(call).map(Into::into),
        "getMusicDirectory" => browse::music_directory(call).map(Into::into),
        "getArtists" => browse::artists(call).map(Into::into),
        "getArtist" => browse::artist(call).map(Into::into),
        "getAlbum" => browse::album(call).map(Into::into),
        "getSong" => browse::song(call).map(Into::into),
        "getGenres" => Ok(lists::genres(call).into()),
        "getAlbumList2" => lists::album_list2(call).map(Into::into),
        "getRandomSongs" => lists::random_songs(call).map(Into::into),
        "getSongsByGenre" => lists::songs_by_genre(call).map(Into::into),
        "search3" => lists::search3(call).map(Into::into),
        "stream" | "download" => media::stream(call),
        "getCoverArt" => media::cover_art(call),
        "getPlaylists" => playlists::list(call).map(Into::into),
        "getPlaylist" => playlists::get(call).map(Into::into),
        "createPlaylist" => playlists::create(call).await.map(Into::into),
        "updatePlaylist" => playlists::update(call).await.map(|()| Reply::Payload(None)),
        "deletePlaylist" => playlists::delete(call).await.map(|()| Reply::Payload(None)),
        "star" => listening::star(call, true)
            .await
            .map(|()| Reply::Payload(None)),
        "unstar" => listening::star(call, false)
            .await
            .map(|()| Reply::Payload(None)),
        "getStarred2" => listening::starred2(call).map(Into::into),
        "setRating" => listening::set_rating(call)
            .await
            .map(|()| Reply::Payload(None)),
        "scrobble" => listening::scrobble(call)
            .await
            .map(|()| Reply::Payload(None)),
        "getNowPlaying" => listening::now_playing(call).map(Into::into),
        "getPlayQueue" => listening::play_queue(call).map(Reply::Payload),
        "savePlayQueue" => listening::save_play_queue(call)
            .await
            .map(|()| Reply::Payload(None)),
        "getUser" => browse::user(call).map(Into::into),
        "getScanStatus" => Ok(El::new("scanStatus")
            .attr("scanning", false)
            .attr("count", call.snap.songs.len())
            .into()),
        _ => Err(Failure::new(
            Code::NotFound,
            format!("the method {method:?} is not supported"),
        )),
    }
}

/// Parses a Subsonic id of some kind (Rondo's ids are UUIDs).
pub fn parse_id<T: std::str::FromStr>(id: &str, what: &str) -> Result<T, Failure> {
    id.trim()
        .parse()
        .map_err(|_| Failure::not_found(&format!("{what} {id:?}")))
}
