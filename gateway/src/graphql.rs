//! The public GraphQL schema.
//!
//! Queries read the current index snapshot and never wait for storage nodes.
//! Song uploads and deletes need an admin (the admin token, or a session of
//! an admin account); playlists need a session ([`accounts`]). Every error
//! carries `extensions.code` (see [`crate::error::Error::code`]).

pub mod accounts;
pub mod layout;
pub mod scalars;

pub use scalars::{DateTime, UnsignedInt64};

use std::sync::Arc;

use async_graphql::{
    Context, EmptySubscription, Enum, ID, MergedObject, Object, Schema, SimpleObject, Upload,
};
use rondo_core::{AlbumId, ArtistId, SongId};

use crate::AppState;
use crate::error::{Error, GqlResult};
use crate::index::{AlbumRec, ArtistRec, Kind, Snapshot, SongRec};

/// The schema type.
pub type RondoSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Default page size of connections.
pub const DEFAULT_PAGE: i32 = 20;
/// Largest page size a client may ask for.
pub const MAX_PAGE: i32 = 100;

/// What a `search` argument adds to a query's cost: matching scans the
/// index, so a query of many searching aliases is refused as too complex.
pub const SEARCH_COST: usize = 100;
/// The longest search, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;
/// The most words a search matches on.
pub const MAX_SEARCH_WORDS: usize = 8;

/// The schema without state, for exporting its SDL.
pub fn schema_sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .finish()
    .sdl()
}

/// Builds the schema over the gateway state.
pub fn schema(state: Arc<AppState>) -> RondoSchema {
    let depth = state.config.max_query_depth;
    let complexity = state.config.max_query_complexity;
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .data(state)
    .limit_depth(depth)
    .limit_complexity(complexity)
    .finish()
}

/// Who the request acts for; put in each request's data.
#[derive(Clone, Copy, Debug)]
pub enum Auth {
    /// No `Authorization` header.
    Anonymous,
    /// A bearer token that is neither the admin token nor a valid session.
    Invalid,
    /// The admin token (scripts, the CLI).
    Admin,
    /// A session of an account.
    User(rondo_core::session::Session),
}

fn require_admin(ctx: &Context<'_>) -> Result<(), Error> {
    match ctx.data_opt::<Auth>() {
        Some(Auth::Admin) => Ok(()),
        Some(Auth::User(s)) if s.role == rondo_core::session::Role::Admin => Ok(()),
        Some(Auth::User(_)) => Err(Error::Forbidden("this operation needs an admin account")),
        Some(Auth::Invalid) => Err(Error::Unauthenticated(
            "invalid admin token or expired session",
        )),
        _ => Err(Error::Unauthenticated(
            "this operation needs an admin: log in, or send `Authorization: Bearer <admin token>`",
        )),
    }
}

/// The session account's marks on an item.
fn own_marks(ctx: &Context<'_>, item: uuid::Uuid) -> Option<crate::accounts::Marks> {
    let Some(Auth::User(s)) = ctx.data_opt::<Auth>() else {
        return None;
    };
    state(ctx)
        .cluster
        .snapshot()
        .accounts
        .marks(s.user, item)
        .cloned()
}

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a Arc<AppState> {
    // The schema is always built with the state (see `schema`).
    match ctx.data::<Arc<AppState>>() {
        Ok(s) => s,
        Err(_) => unreachable!("schema built without AppState"),
    }
}

pub(crate) fn parse_id<T: std::str::FromStr<Err = rondo_core::Error>>(id: &ID) -> Result<T, Error> {
    id.as_str()
        .parse::<T>()
        .map_err(|e| Error::BadUserInput(e.to_string()))
}

pub(crate) fn page_size(first: Option<i32>) -> Result<usize, Error> {
    match first.unwrap_or(DEFAULT_PAGE) {
        n if n < 0 => Err(Error::BadUserInput(format!(
            "first must not be negative, got {n}"
        ))),
        n if n > MAX_PAGE => Err(Error::BadUserInput(format!(
            "first must be at most {MAX_PAGE}, got {n}"
        ))),
        n => Ok(n as usize),
    }
}

/// Paging information of a connection (Relay).
#[derive(SimpleObject, Debug)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

macro_rules! connection {
    ($conn:ident, $edge:ident, $node:ty, $doc:literal) => {
        #[doc = concat!("A page of ", $doc, " (Relay connection).")]
        #[derive(SimpleObject)]
        pub struct $conn {
            pub edges: Vec<$edge>,
            pub nodes: Vec<$node>,
            pub page_info: PageInfo,
            /// Number of items matching, over all pages.
            pub total_count: i32,
        }

        #[doc = concat!("One of ", $doc, " in a connection.")]
        #[derive(SimpleObject)]
        pub struct $edge {
            pub cursor: String,
            pub node: $node,
        }

        impl FromPage for $conn {
            type Node = $node;

            fn from_page(items: Vec<(String, $node)>, page_info: PageInfo, total: usize) -> Self {
                let nodes = items.iter().map(|(_, n)| n.clone()).collect();
                $conn {
                    edges: items
                        .into_iter()
                        .map(|(cursor, node)| $edge { cursor, node })
                        .collect(),
                    nodes,
                    page_info,
                    total_count: i32::try_from(total).unwrap_or(i32::MAX),
                }
            }
        }
    };
}

/// A connection built from one page of items: (cursor, node) in order.
pub(crate) trait FromPage {
    type Node: Clone;
    fn from_page(items: Vec<(String, Self::Node)>, page_info: PageInfo, total: usize) -> Self;
}

/// One page of a list that hangs off an item (an artist's songs, an
/// album's songs) as a connection whose cursors are positions: every list
/// of the schema is paged, so its cost is its page.
fn list_page<'a, T: 'a, C: FromPage>(
    items: impl Iterator<Item = &'a T> + Clone,
    first: Option<i32>,
    after: Option<&str>,
    node: impl Fn(&T) -> C::Node,
) -> Result<C, Error> {
    let total = items.clone().count();
    let page = position_page(total, first, after)?;
    let nodes = items
        .skip(page.start)
        .take(page.len())
        .zip(page.clone())
        .map(|(item, p)| (p.to_string(), node(item)))
        .collect();
    Ok(C::from_page(nodes, position_page_info(&page, total), total))
}

/// One page of a keyed list of the index (songs, artists or albums, by
/// name, optionally searched) as a connection; `node` makes the item at a
/// position of the snapshot.
fn keyed_page<C: FromPage>(
    ctx: &Context<'_>,
    kind: Kind,
    first: Option<i32>,
    after: Option<&str>,
    search: Option<&str>,
    node: impl Fn(&Snapshot, usize) -> C::Node,
) -> Result<C, Error> {
    if let Some(q) = search {
        if q.chars().count() > MAX_SEARCH_CHARS {
            return Err(Error::BadUserInput(format!(
                "a search is at most {MAX_SEARCH_CHARS} characters"
            )));
        }
        if q.split_whitespace().count() > MAX_SEARCH_WORDS {
            return Err(Error::BadUserInput(format!(
                "a search is at most {MAX_SEARCH_WORDS} words"
            )));
        }
    }
    let snap = snapshot(ctx);
    let page = snap.page(kind, search, after, page_size(first)?)?;
    let items = page
        .items
        .iter()
        .map(|(p, c)| (c.clone(), node(&snap, *p)))
        .collect();
    Ok(C::from_page(items, page_info(&page), page.total))
}

connection!(SongConnection, SongEdge, Song, "songs");
connection!(ArtistConnection, ArtistEdge, Artist, "artists");
connection!(AlbumConnection, AlbumEdge, Album, "albums");

/// One page of a list whose cursors are positions: the positions after
/// `after`, at most `first` (bounded like every page), out of `total`.
pub(crate) fn position_page(
    total: usize,
    first: Option<i32>,
    after: Option<&str>,
) -> Result<std::ops::Range<usize>, Error> {
    let n = page_size(first)?;
    let start = match after {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .and_then(|p| p.checked_add(1))
            .ok_or_else(|| Error::BadUserInput(format!("bad cursor {c:?}")))?,
    };
    let end = start.saturating_add(n).min(total);
    Ok(start.min(end)..end)
}

/// Paging information of a [`position_page`].
pub(crate) fn position_page_info(page: &std::ops::Range<usize>, total: usize) -> PageInfo {
    PageInfo {
        has_next_page: page.end < total,
        has_previous_page: page.start > 0,
        start_cursor: (!page.is_empty()).then(|| page.start.to_string()),
        end_cursor: (!page.is_empty()).then(|| (page.end - 1).to_string()),
    }
}

fn page_info(page: &crate::index::Page) -> PageInfo {
    PageInfo {
        has_next_page: page.has_next,
        has_previous_page: false,
        start_cursor: page.items.first().map(|(_, c)| c.clone()),
        end_cursor: page.items.last().map(|(_, c)| c.clone()),
    }
}

/// A song.
#[derive(Clone)]
pub struct Song(pub Arc<SongRec>);

/// Largest cover size asked for (pixels).
const MAX_ART_SIZE: i32 = 4096;

/// A cover size argument, checked.
fn art_size(size: i32) -> crate::error::Result<u32> {
    u32::try_from(size)
        .ok()
        .filter(|s| (1..=MAX_ART_SIZE as u32).contains(s))
        .ok_or_else(|| {
            Error::BadUserInput(format!(
                "size: a cover is 1 to {MAX_ART_SIZE} pixels, not {size}"
            ))
        })
}

/// A song's sort names, as tagged.
#[derive(SimpleObject)]
pub struct SortNames {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album_artist: Option<String>,
    pub album: Option<String>,
}

/// An audio stream's properties, as the file reports them.
#[derive(SimpleObject)]
pub struct AudioProperties {
    /// The codec's short name: `mp3`, `aac`, `alac`, `flac`, `vorbis`,
    /// `opus`, `pcm_s16le`, `pcm_s24be`, ...
    pub codec: String,
    /// Average bit rate, kbit/s.
    pub bitrate_kbps: i32,
    /// Samples per second, Hz.
    pub sample_rate: i32,
    pub channels: i32,
    /// Bits per sample of a lossless stream; null for lossy codecs.
    pub bit_depth: Option<i32>,
}

/// An artist.
#[derive(Clone)]
pub struct Artist(pub ArtistRec);

/// An album.
#[derive(Clone)]
pub struct Album(pub AlbumRec);

/// A storage node holding a copy of a song.
#[derive(SimpleObject)]
pub struct Replica {
    pub id: ID,
    /// Base URL of the node's streaming endpoint.
    pub address: String,
}

#[Object]
impl Song {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn artist(&self) -> Artist {
        Artist(self.0.artist.clone())
    }
    async fn album(&self) -> Album {
        Album(self.0.album.clone())
    }
    /// The track's number on its disc.
    async fn track_number(&self) -> Option<i32> {
        self.0.track_number.and_then(|n| i32::try_from(n).ok())
    }
    /// How many tracks the disc has, as tagged.
    async fn track_total(&self) -> Option<i32> {
        self.0.track_total.and_then(|n| i32::try_from(n).ok())
    }
    async fn disc_number(&self) -> Option<i32> {
        self.0.disc_number.and_then(|n| i32::try_from(n).ok())
    }
    /// How many discs the album has, as tagged.
    async fn disc_total(&self) -> Option<i32> {
        self.0.disc_total.and_then(|n| i32::try_from(n).ok())
    }
    /// The file says it is part of a compilation (its album is filed under
    /// its album artist, or "Various Artists").
    async fn compilation(&self) -> bool {
        self.0.compilation
    }
    /// Sort names, as tagged (null: sort by the name itself).
    async fn sort_names(&self) -> SortNames {
        SortNames {
            title: self.0.title_sort.clone(),
            artist: self.0.artist_sort.clone(),
            album_artist: self.0.album_artist_sort.clone(),
            album: self.0.album_sort.clone(),
        }
    }
    /// The audio stream's properties; null for a song stored before they
    /// were read.
    async fn audio(&self) -> Option<AudioProperties> {
        self.0.audio.as_ref().map(|a| AudioProperties {
            codec: a.codec.clone(),
            bitrate_kbps: i32::try_from(a.bitrate_kbps).unwrap_or(i32::MAX),
            sample_rate: i32::try_from(a.sample_rate).unwrap_or(i32::MAX),
            channels: i32::try_from(a.channels).unwrap_or(i32::MAX),
            bit_depth: a.bit_depth.and_then(|d| i32::try_from(d).ok()),
        })
    }
    async fn year(&self) -> Option<i32> {
        self.0.year.and_then(|n| i32::try_from(n).ok())
    }
    async fn genre(&self) -> Option<&str> {
        self.0.genre.as_deref()
    }
    /// Duration in milliseconds.
    async fn duration_ms(&self) -> i64 {
        i64::try_from(self.0.duration_ms).unwrap_or(i64::MAX)
    }
    /// MIME type of the audio, as served.
    async fn mime_type(&self) -> &str {
        &self.0.mime_type
    }
    async fn size_bytes(&self) -> UnsignedInt64 {
        UnsignedInt64(self.0.size_bytes)
    }
    /// When the song was stored.
    async fn created_at(&self) -> DateTime {
        DateTime::from_unix_ms(u64::try_from(self.0.created_at_ms).unwrap_or(0))
    }
    /// Lower-case hex BLAKE3 hash of the audio bytes.
    async fn content_hash(&self) -> String {
        self.0.content_hash.to_hex()
    }
    /// Signed, expiring HTTPS URL of the audio on a live node holding it;
    /// null when no such node is up. Supports HTTP range requests.
    async fn stream_url(&self, ctx: &Context<'_>) -> Option<String> {
        state(ctx).stream_url(&self.0)
    }
    /// Signed URL of the song's cover at `size` pixels (the longer side;
    /// served at the nearest of 64, 128, 300, 600 and 1200 at least as
    /// large, never larger than the picture): the picture embedded in its
    /// file, else its album's. Null when neither has one. A JPEG, cacheable
    /// (`ETag`, `Cache-Control`); the URL stays the same for a day.
    async fn cover_art(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 300)] size: i32,
    ) -> async_graphql::Result<Option<String>> {
        let size = art_size(size).gql()?;
        let st = state(ctx);
        let art = self.0.art.clone().or_else(|| {
            st.cluster
                .snapshot()
                .album(self.0.album.id)
                .and_then(|a| a.art.clone())
        });
        Ok(art.and_then(|a| st.art_url(&a, size)))
    }
    /// Whether the session's account starred it (false without a
    /// session).
    async fn starred(&self, ctx: &Context<'_>) -> bool {
        own_marks(ctx, self.0.id.0).is_some_and(|m| m.starred_at_ms.is_some())
    }
    /// How many times the session's account played it (0 without a
    /// session).
    async fn play_count(&self, ctx: &Context<'_>) -> UnsignedInt64 {
        own_marks(ctx, self.0.id.0)
            .map_or(0, |m| m.play_count)
            .into()
    }
    /// When the session's account last played it.
    async fn last_played_at(&self, ctx: &Context<'_>) -> Option<DateTime> {
        own_marks(ctx, self.0.id.0)
            .and_then(|m| m.last_played_ms)
            .map(DateTime::from_unix_ms)
    }
    /// Nodes holding the song.
    async fn replicas(&self, ctx: &Context<'_>) -> Vec<Replica> {
        let cluster = &state(ctx).cluster;
        self.0
            .replicas
            .iter()
            .map(|id| Replica {
                id: ID(id.to_string()),
                address: cluster
                    .node(*id)
                    .map(|n| n.info().stream_base_url)
                    .unwrap_or_default(),
            })
            .collect()
    }
}

#[Object]
impl Artist {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The artist's albums, by title; a cursor is a position.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn albums(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<AlbumConnection> {
        let snap = state(ctx).cluster.snapshot();
        list_page(
            snap.artist_albums(self.0.id),
            first,
            after.as_deref(),
            |a| Album(a.clone()),
        )
        .gql()
    }
    /// The artist's songs, by title; a cursor is a position.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn songs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<SongConnection> {
        let snap = state(ctx).cluster.snapshot();
        list_page(snap.artist_songs(self.0.id), first, after.as_deref(), |s| {
            Song(s.clone())
        })
        .gql()
    }
}

#[Object]
impl Album {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn year(&self) -> Option<i32> {
        self.0.year.and_then(|n| i32::try_from(n).ok())
    }
    /// Signed URL of the album's cover at `size` pixels (see
    /// `Song.coverArt`): its own image if an admin set one, else the
    /// picture of its first track (disc, then track order) that has one.
    /// Null when none has.
    async fn cover_art(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 300)] size: i32,
    ) -> async_graphql::Result<Option<String>> {
        let size = art_size(size).gql()?;
        let st = state(ctx);
        let art = st
            .cluster
            .snapshot()
            .album(self.0.id)
            .and_then(|a| a.art.clone());
        Ok(art.and_then(|a| st.art_url(&a, size)))
    }
    /// Whether the cover is an image an admin gave the album (not its
    /// first track's picture).
    async fn has_own_cover_art(&self, ctx: &Context<'_>) -> bool {
        state(ctx)
            .cluster
            .snapshot()
            .album(self.0.id)
            .is_some_and(|a| a.own_art)
    }
    /// The album artist: the artist the album is filed under (its songs may
    /// have other track artists).
    async fn artist(&self, ctx: &Context<'_>) -> Option<Artist> {
        state(ctx)
            .cluster
            .snapshot()
            .artist(self.0.artist_id)
            .cloned()
            .map(Artist)
    }
    /// The album's songs, by disc then track; a cursor is a position.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn songs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<SongConnection> {
        let snap = state(ctx).cluster.snapshot();
        list_page(snap.album_songs(self.0.id), first, after.as_deref(), |s| {
            Song(s.clone())
        })
        .gql()
    }
}

/// Liveness of a storage node as the gateway sees it.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Answering health checks.
    Up,
    /// Not answering.
    Down,
    /// No longer in the layout (`removeNode`): it serves nothing.
    Removed,
}

/// A storage node.
#[derive(SimpleObject)]
pub struct ClusterNode {
    /// The node's id, null until it has answered once.
    pub id: Option<ID>,
    /// Base URL of the node's streaming endpoint.
    pub address: String,
    pub state: NodeState,
    pub song_count: i64,
    pub bytes_stored: UnsignedInt64,
    /// Side effects of applied updates the node has yet to carry out
    /// (blobs to fetch or push, files to remove); stays above zero while a
    /// node it must push to is down.
    pub outbox_length: i64,
    /// Blobs the node owns under the placement and lacks (its resync
    /// worker fetches them), at its last pass.
    pub blobs_to_fetch: i64,
    /// Copies the node holds and does not own (given up once their owners
    /// hold them), at its last pass.
    pub copies_to_give_up: i64,
    /// The bytes of `blobsToFetch`.
    pub bytes_to_fetch: UnsignedInt64,
    /// Seconds until the node's resync worker has fetched `bytesToFetch`
    /// at the rate it fetched at lately; null with nothing to fetch or no
    /// progress seen yet.
    pub resync_eta_seconds: Option<i64>,
    /// The most bytes per second the node's resync worker fetches (0: no
    /// limit); `setNodeRates` changes it.
    pub resync_rate_bytes: UnsignedInt64,
    /// The most bytes per second the node's scrub reads (0: no limit).
    pub scrub_rate_bytes: UnsignedInt64,
    /// The ring this node is in or trying to form, as `counter:representative`
    /// (ring ids order by counter, then representative).
    pub ring_id: Option<String>,
    /// `joining` (started with seeds, waiting for `addNode`), `gather`,
    /// `recover`, `operational`, or `removed` (`removeNode`).
    pub ring_phase: Option<String>,
    /// Sequence number of the last catalog update this node applied.
    pub last_applied_seq: Option<UnsignedInt64>,
    /// Hash of the applied update log: equal on nodes that applied the same
    /// prefix.
    pub catalog_digest: Option<String>,
    /// Whether the node votes on which ring may take writes.
    pub is_voter: Option<bool>,
}

/// The ring that orders catalog updates: the operational ring with the
/// greatest id among the nodes that answer.
#[derive(SimpleObject)]
pub struct Ring {
    pub id: String,
    pub members: Vec<ID>,
    /// The member that accepted the newest token when last asked (an
    /// estimate: the token moves many times a second).
    pub token_holder: Option<ID>,
    /// Highest catalog update sequence applied by a member.
    pub last_seq: UnsignedInt64,
    /// Full token rotations per second, from the members' token counters.
    pub rotations_per_second: f64,
}

/// A gateway replica's role in sharing the floating address (VRRP).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum VrrpState {
    /// Holds the floating address.
    Master,
    /// Ready to take over.
    Backup,
    /// Unhealthy (cannot reach a quorum of storage nodes): out of the
    /// running until it recovers.
    Fault,
    /// Starting or stopping.
    Initialize,
    /// Runs without VRRP.
    Disabled,
}

/// A gateway replica, as the storage nodes last heard from it.
#[derive(SimpleObject)]
pub struct Gateway {
    pub id: ID,
    /// Its own address (on the VRRP interface, or where it listens).
    pub address: String,
    pub vrrp_state: VrrpState,
    /// Its VRRP priority now (health tracking may lower it); 0 without VRRP.
    pub priority: i32,
    /// Whether it holds the floating address.
    pub is_master: bool,
    /// The floating address it serves, `ADDR/PREFIX`.
    pub vip: Option<String>,
    /// Milliseconds since a storage node last heard from it.
    pub last_seen_ms: i64,
}

/// The storage cluster.
#[derive(SimpleObject)]
#[graphql(name = "Cluster")]
pub struct ClusterInfo {
    pub nodes: Vec<ClusterNode>,
    /// Null while no ring with a majority of the voters is operational.
    pub ring: Option<Ring>,
    /// Partitions of the audio with fewer than R verified copies: those
    /// an owner lacks blobs of, and every partition of a down owner. 0
    /// once every owner holds what it owns; null before a layout is known.
    pub partitions_below_replication: Option<i32>,
    /// The gateway replicas heard from in the last 10 seconds (this one
    /// included), and which holds the floating address. Admins only.
    #[graphql(guard = "AdminOnly")]
    pub gateways: Vec<Gateway>,
    /// The newest layout the nodes report (with the nodes' internal
    /// addresses); null before any ring formed. Admins only.
    #[graphql(guard = "AdminOnly")]
    pub layout: Option<layout::ClusterLayout>,
}

/// A field for admins only (`FORBIDDEN` for listeners, `UNAUTHENTICATED`
/// without credentials): what tells an attacker where the cluster's
/// internal services are.
struct AdminOnly;

impl async_graphql::Guard for AdminOnly {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        require_admin(ctx).gql()
    }
}

/// Queries.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(CatalogQuery, accounts::AccountQuery, layout::LayoutQuery);

/// Catalog and cluster queries.
#[derive(Default)]
pub struct CatalogQuery;

pub(crate) fn snapshot(ctx: &Context<'_>) -> Arc<Snapshot> {
    state(ctx).cluster.snapshot()
}

#[Object]
impl CatalogQuery {
    /// Songs by title. With `search`, only songs where every word of the
    /// search begins a word of the title, artist or album name ("beat abb"
    /// finds "Come Together" by The Beatles on Abbey Road); case, accents and
    /// apostrophes are ignored.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1 + search.as_ref().map_or(0, |_| SEARCH_COST)"
    )]
    async fn songs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> async_graphql::Result<SongConnection> {
        keyed_page(
            ctx,
            Kind::Songs,
            first,
            after.as_deref(),
            search.as_deref(),
            |s, p| Song(s.songs[p].clone()),
        )
        .gql()
    }

    /// Artists by name. With `search`, only artists where every word of the
    /// search begins a word of the name (case, accents and apostrophes ignored).
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1 + search.as_ref().map_or(0, |_| SEARCH_COST)"
    )]
    async fn artists(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> async_graphql::Result<ArtistConnection> {
        keyed_page(
            ctx,
            Kind::Artists,
            first,
            after.as_deref(),
            search.as_deref(),
            |s, p| Artist(s.artists[p].clone()),
        )
        .gql()
    }

    /// Albums by title. With `search`, only albums where every word of the
    /// search begins a word of the album title or artist name (case, accents
    /// and apostrophes ignored).
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1 + search.as_ref().map_or(0, |_| SEARCH_COST)"
    )]
    async fn albums(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> async_graphql::Result<AlbumConnection> {
        keyed_page(
            ctx,
            Kind::Albums,
            first,
            after.as_deref(),
            search.as_deref(),
            |s, p| Album(s.albums[p].clone()),
        )
        .gql()
    }

    /// Songs, most recently added first; a cursor is a position.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn recent_songs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<SongConnection> {
        let snap = snapshot(ctx);
        let total = snap.recent.len();
        let page = position_page(total, first, after.as_deref()).gql()?;
        let items = page
            .clone()
            .map(|p| (p.to_string(), Song(snap.songs[snap.recent[p]].clone())))
            .collect();
        let info = position_page_info(&page, total);
        Ok(SongConnection::from_page(items, info, total))
    }

    /// One song; null if there is none with this id.
    async fn song(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Song>> {
        let id: SongId = parse_id(&id).gql()?;
        Ok(snapshot(ctx).song(id).cloned().map(Song))
    }

    /// One artist; null if there is none with this id.
    async fn artist(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Artist>> {
        let id: ArtistId = parse_id(&id).gql()?;
        Ok(snapshot(ctx).artist(id).cloned().map(Artist))
    }

    /// One album; null if there is none with this id.
    async fn album(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Album>> {
        let id: AlbumId = parse_id(&id).gql()?;
        Ok(snapshot(ctx).album(id).cloned().map(Album))
    }

    /// The storage nodes and the ring that orders the catalog.
    async fn cluster(&self, ctx: &Context<'_>) -> ClusterInfo {
        let cluster = &state(ctx).cluster;
        let current = cluster.layout();
        let infos: Vec<_> = cluster.nodes().iter().map(|n| n.info()).collect();
        let nodes = infos
            .iter()
            .map(|info| {
                let ring = info.ring_view();
                let ring = ring.as_ref();
                ClusterNode {
                    id: info.id.map(|id| ID(id.to_string())),
                    address: info.stream_base_url.clone(),
                    state: match info.id {
                        Some(id) if !cluster.in_layout(current.as_ref(), id) => NodeState::Removed,
                        _ if info.up => NodeState::Up,
                        _ => NodeState::Down,
                    },
                    song_count: i64::try_from(info.song_count).unwrap_or(i64::MAX),
                    bytes_stored: UnsignedInt64(info.bytes_stored),
                    outbox_length: i64::try_from(info.outbox_len).unwrap_or(i64::MAX),
                    blobs_to_fetch: i64::try_from(info.blobs_to_fetch).unwrap_or(i64::MAX),
                    copies_to_give_up: i64::try_from(info.copies_to_give_up).unwrap_or(i64::MAX),
                    bytes_to_fetch: UnsignedInt64(info.bytes_to_fetch),
                    resync_eta_seconds: info
                        .resync_eta()
                        .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                    resync_rate_bytes: UnsignedInt64(info.resync_rate_bytes),
                    scrub_rate_bytes: UnsignedInt64(info.scrub_rate_bytes),
                    ring_id: ring.map(|r| r.id.clone()),
                    ring_phase: ring.map(|r| r.phase.clone()),
                    last_applied_seq: ring.map(|r| UnsignedInt64(r.last_applied_seq)),
                    catalog_digest: ring.map(|r| r.catalog_digest.clone()),
                    is_voter: ring.map(|r| r.is_voter),
                }
            })
            .collect();
        let gateways = state(ctx)
            .cluster
            .gateways()
            .into_iter()
            .map(|g| Gateway {
                id: ID(g.id),
                address: g.address,
                vrrp_state: match g.vrrp_state.as_str() {
                    "master" => VrrpState::Master,
                    "backup" => VrrpState::Backup,
                    "fault" => VrrpState::Fault,
                    "initialize" => VrrpState::Initialize,
                    _ => VrrpState::Disabled,
                },
                priority: i32::try_from(g.priority).unwrap_or(0),
                is_master: g.is_master,
                vip: (!g.vip.is_empty()).then_some(g.vip),
                last_seen_ms: i64::try_from(g.age_ms).unwrap_or(i64::MAX),
            })
            .collect();
        ClusterInfo {
            nodes,
            ring: primary_ring(&infos),
            partitions_below_replication: cluster
                .partitions_below_replication()
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            gateways,
            layout: current.as_ref().map(layout::ClusterLayout::from),
        }
    }
}

/// The ring that orders the catalog, as the cluster client reads it.
fn primary_ring(infos: &[crate::cluster::NodeInfo]) -> Option<Ring> {
    let r = crate::cluster::primary_ring(infos)?;
    Some(Ring {
        id: r.id,
        members: r.members.into_iter().map(ID).collect(),
        token_holder: r.token_holder.map(|id| ID(id.to_string())),
        last_seq: UnsignedInt64(r.last_seq),
        rotations_per_second: r.rotations_per_second,
    })
}

/// A signed direct upload (`createUpload`).
#[derive(SimpleObject)]
pub struct UploadTicket {
    /// The id the song will have.
    pub song_id: ID,
    /// Where to send the file.
    pub url: String,
    /// Always `PUT`.
    pub method: String,
    /// RFC 3339; the URL is refused from then on.
    pub expires_at: DateTime,
    /// The most bytes the node takes.
    pub max_bytes: UnsignedInt64,
}

/// Mutations.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    CatalogMutation,
    accounts::AccountMutation,
    layout::LayoutMutation,
);

/// The answer to `uploadSong`.
#[derive(SimpleObject)]
pub struct UploadSongPayload {
    /// The song stored, or the song the file's bytes already are.
    song: Song,
    /// The file was already in the library as `song`: nothing was added.
    duplicate: bool,
}

/// Song mutations (admins).
#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
    /// Uploads one audio file (GraphQL multipart request). Tags and duration
    /// are read from the file; `title`, `artist` and `album` override them.
    /// Artists and albums are matched by name, case-insensitively. A file
    /// whose bytes are already a song is not stored again: the answer is
    /// that song, with `duplicate: true` (two uploads of one file at once
    /// make one song).
    async fn upload_song(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        title: Option<String>,
        artist: Option<String>,
        album: Option<String>,
    ) -> async_graphql::Result<UploadSongPayload> {
        require_admin(ctx).gql()?;
        let upload = file
            .value(ctx)
            .map_err(|e| Error::BadUserInput(format!("file: {e}")))
            .gql()?;
        let overrides = crate::ingest::Overrides {
            title,
            artist,
            album,
        };
        let uploaded = crate::ingest::upload(state(ctx), upload, overrides)
            .await
            .gql()?;
        Ok(UploadSongPayload {
            song: Song(uploaded.song),
            duplicate: uploaded.duplicate,
        })
    }

    /// Authorises a direct upload of one audio file: answers a signed URL
    /// of a storage node to `PUT` the file's bytes to (HTTP/1.1 is fine;
    /// the body is the file, nothing else), valid for one song until
    /// `expiresAt`. The node checks and stores the file like `uploadSong`
    /// (tags, then the arguments given here, then `fileName`'s stem as the
    /// title) and answers `201` with `{"song": {...}}` (`200` with
    /// `{"song": {...}, "duplicate": true}` when the bytes are already that
    /// song: nothing is added), or an HTTP error with
    /// `{"error": {"code", "message"}}` and the codes of this API:
    /// `FORBIDDEN` (403: bad or expired grant), `PAYLOAD_TOO_LARGE` (413),
    /// `UNSUPPORTED_MEDIA` (415), `CONFLICT` (409: the grant was used),
    /// `UNAVAILABLE` (503: no quorum). Bulk clients use this: the bytes go to
    /// the node once, not through the gateway.
    async fn create_upload(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The file's size, if known: refused at once when over the limit, and the most the node will take."
        )]
        size_bytes: Option<UnsignedInt64>,
        #[graphql(desc = "The file's name (its stem is the title when no tag gives one).")]
        file_name: Option<String>,
        #[graphql(desc = "Overrides the file's title tag.")] title: Option<String>,
        #[graphql(desc = "Overrides the file's artist tag; matched by name, case-insensitively.")]
        artist: Option<String>,
        #[graphql(desc = "Overrides the file's album tag; matched by name, case-insensitively.")]
        album: Option<String>,
    ) -> async_graphql::Result<UploadTicket> {
        require_admin(ctx).gql()?;
        let overrides = crate::ingest::Overrides {
            title,
            artist,
            album,
        };
        let g = crate::ingest::grant(state(ctx), size_bytes.map(|n| n.0), file_name, overrides)
            .gql()?;
        Ok(UploadTicket {
            song_id: ID(g.song.to_string()),
            url: g.url,
            method: "PUT".into(),
            expires_at: DateTime::from_unix_ms(g.expires_at.saturating_mul(1000)),
            max_bytes: UnsignedInt64(g.max_bytes),
        })
    }

    /// Sets an album's own image (admin only), shown instead of the
    /// picture of its first track; `image` absent or null removes it. A
    /// JPEG, PNG, WebP or GIF of at most 6 MiB and 10000 pixels a side
    /// (`UNSUPPORTED_MEDIA`, `PAYLOAD_TOO_LARGE` otherwise). Answers the
    /// album as this gateway's index has it after the change.
    async fn set_album_cover_art(
        &self,
        ctx: &Context<'_>,
        album_id: ID,
        image: Option<Upload>,
    ) -> async_graphql::Result<Album> {
        require_admin(ctx).gql()?;
        let id: AlbumId = parse_id(&album_id).gql()?;
        let bytes = match image {
            None => None,
            Some(upload) => {
                let value = upload
                    .value(ctx)
                    .map_err(|e| Error::BadUserInput(format!("image: {e}")))
                    .gql()?;
                // At most one byte over the limit is read: enough to refuse.
                let limit = crate::ingest::MAX_ALBUM_IMAGE_BYTES as u64 + 1;
                let read = tokio::task::spawn_blocking(move || {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(value.content, limit),
                        &mut bytes,
                    )
                    .map(|_| bytes)
                })
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))
                .gql()?;
                Some(
                    read.map_err(|e| Error::BadUserInput(format!("image: {e}")))
                        .gql()?,
                )
            }
        };
        let session = accounts::authority(ctx);
        crate::ingest::set_album_art(state(ctx), id, bytes, session)
            .await
            .gql()?;
        let album = state(ctx).cluster.snapshot().album(id).cloned();
        album
            .map(Album)
            .ok_or_else(|| Error::NotFound {
                kind: "album",
                id: id.to_string(),
            })
            .gql()
    }

    /// Deletes a song. Its artist and album disappear with their last song.
    async fn delete_song(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        require_admin(ctx).gql()?;
        let id: SongId = parse_id(&id).gql()?;
        let session = accounts::authority(ctx);
        crate::ingest::delete(state(ctx), id, session).await.gql()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Any cursor and page size: no panic, and a page inside the list.
        #[test]
        fn cursors_never_panic_or_leave_the_list(
            total in 0usize..10_000,
            first in proptest::option::of(proptest::num::i32::ANY),
            after in proptest::option::of("\\PC{0,30}|[0-9]{1,25}"),
        ) {
            if let Ok(page) = super::position_page(total, first, after.as_deref()) {
                proptest::prop_assert!(page.start <= page.end && page.end <= total);
                proptest::prop_assert!(page.len() <= super::MAX_PAGE as usize);
            }
        }
    }

    #[test]
    fn position_pages() {
        let check = |total, first, after: Option<&str>, want: Option<std::ops::Range<usize>>| {
            assert_eq!(
                super::position_page(total, first, after).ok(),
                want,
                "{total} {first:?} {after:?}"
            );
        };
        check(5, Some(2), None, Some(0..2));
        check(5, Some(2), Some("1"), Some(2..4));
        check(5, Some(2), Some("3"), Some(4..5));
        check(5, Some(2), Some("4"), Some(5..5));
        check(5, Some(2), Some("99"), Some(5..5));
        check(5, None, None, Some(0..5));
        check(5, Some(0), None, Some(0..0));
        check(5, Some(101), None, None);
        check(5, Some(-1), None, None);
        check(5, Some(2), Some("x"), None);
        // The last position does not wrap around to the first page.
        check(5, Some(2), Some(&usize::MAX.to_string()), None);
        check(5, Some(2), Some("18446744073709551616"), None);
        let info = super::position_page_info(&(2..4), 5);
        assert!(info.has_next_page && info.has_previous_page);
        assert_eq!(
            (info.start_cursor.as_deref(), info.end_cursor.as_deref()),
            (Some("2"), Some("3"))
        );
        assert!(super::position_page_info(&(5..5), 5).end_cursor.is_none());
    }

    /// The committed SDL (`gateway/schema.graphql`) must match the code.
    /// Run with `RONDO_BLESS=1` to update it.
    #[test]
    fn sdl_has_not_drifted() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
        let fresh = super::schema_sdl();
        if std::env::var_os("RONDO_BLESS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "gateway/schema.graphql is stale; run `RONDO_BLESS=1 cargo test -p rondo-gateway sdl`"
        );
    }

    #[test]
    fn schema_contract_names_exist() {
        let sdl = super::schema_sdl();
        for needle in [
            "songs(first: Int, after: String, search: String): SongConnection!",
            "artists(first: Int, after: String, search: String): ArtistConnection!",
            "albums(first: Int, after: String, search: String): AlbumConnection!",
            "song(id: ID!): Song",
            "uploadSong(file: Upload!, title: String, artist: String, album: String): UploadSongPayload!",
            "duplicate: Boolean!",
            "sizeBytes: UnsignedInt64!",
            "bytesStored: UnsignedInt64!",
            "createdAt: DateTime!",
            "scalar UnsignedInt64",
            "scalar DateTime",
            "deleteSong(id: ID!): Boolean!",
            "streamUrl: String",
            "totalCount: Int!",
            "endCursor: String",
            "ringId: String",
            "lastAppliedSeq: UnsignedInt64",
            "catalogDigest: String",
            "isVoter: Boolean",
            "ring: Ring",
            "tokenHolder: ID",
            "lastSeq: UnsignedInt64!",
            "rotationsPerSecond: Float!",
        ] {
            assert!(sdl.contains(needle), "schema lacks {needle:?}");
        }
    }
}
