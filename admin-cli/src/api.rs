//! Typed answers of the gateway's GraphQL API, as the CLI and the test
//! harness read them (field names as in `gateway/schema.graphql`). A field
//! the query did not ask for is left at its default.

use serde::{Deserialize, Deserializer};

/// An `UnsignedInt64` of the API: a string of decimal digits (a JSON
/// number is taken too).
pub fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(u64),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// An optional `UnsignedInt64` (see [`uint64`]).
pub fn opt_uint64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "uint64")] u64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// A node of the layout.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LayoutNode {
    pub id: String,
    pub address: String,
    pub is_voter: bool,
    pub zone: String,
    #[serde(deserialize_with = "uint64")]
    pub capacity_bytes: u64,
    /// IN, OUT or OUT_AUTO.
    pub standing: String,
    /// Partitions owned in the placement; none without one.
    pub partitions: Option<u64>,
    /// The newest placement epoch it holds everything it owns of.
    pub synced_epoch: Option<u64>,
    /// Older placements in force in which it owns partitions.
    pub unretired_placements: Vec<u64>,
}

/// Older placements leaving force at one log position.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LayoutRetirement {
    #[serde(deserialize_with = "uint64")]
    pub seq: u64,
    pub placement_epochs: Vec<u64>,
    pub placement: u64,
}

/// The placement of audio partitions.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LayoutPlacement {
    pub epoch: u64,
    pub partitions: u64,
    pub replicas: u64,
    pub write_quorum: u64,
}

/// The cluster's layout: its storage nodes and replication factor.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Layout {
    pub epoch: u64,
    pub replication_factor: u64,
    pub nodes: Vec<LayoutNode>,
    pub placement: Option<LayoutPlacement>,
    /// Older placements still in force (a transition under way).
    pub older_placements: Vec<u64>,
    /// Owners of the newest placement that have not synced it.
    pub unsynced_nodes: Vec<String>,
    pub retirements: Vec<LayoutRetirement>,
}

/// What a layout change would move to and from one node.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeMove {
    pub id: String,
    pub partitions_before: u64,
    pub partitions_after: u64,
    pub gained: u64,
    pub lost: u64,
    #[serde(deserialize_with = "uint64")]
    pub bytes_in: u64,
    #[serde(deserialize_with = "uint64")]
    pub bytes_out: u64,
}

/// A layout change planned, not ordered (`layoutPlan`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LayoutPlan {
    pub expect_epoch: u64,
    pub layout: Layout,
    pub moves: Vec<NodeMove>,
    #[serde(deserialize_with = "uint64")]
    pub bytes_to_move: u64,
}

/// A name of an artist.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Named {
    pub name: String,
}

/// A title of an album.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Titled {
    pub title: String,
}

/// A song as lists show it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Song {
    pub id: String,
    pub title: String,
    pub duration_ms: u64,
    #[serde(deserialize_with = "uint64")]
    pub size_bytes: u64,
    pub artist: Named,
    pub album: Titled,
}

/// A page of songs.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct SongPage {
    pub total_count: u64,
    pub nodes: Vec<Song>,
    pub page_info: PageInfo,
}

/// Where a page ends (Relay).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

/// A storage node as the gateway sees it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterNode {
    pub id: Option<String>,
    pub address: String,
    /// `UP`, `DOWN` or `REMOVED`.
    pub state: String,
    pub song_count: u64,
    #[serde(deserialize_with = "uint64")]
    pub bytes_stored: u64,
    pub outbox_length: u64,
    pub blobs_to_fetch: u64,
    #[serde(deserialize_with = "uint64")]
    pub bytes_to_fetch: u64,
    pub resync_eta_seconds: Option<u64>,
    pub copies_to_give_up: u64,
    pub ring_id: Option<String>,
    pub ring_phase: Option<String>,
    #[serde(deserialize_with = "opt_uint64")]
    pub last_applied_seq: Option<u64>,
    pub catalog_digest: Option<String>,
    pub is_voter: Option<bool>,
}

/// A gateway replica.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Gateway {
    pub id: String,
    pub address: String,
    pub vrrp_state: String,
    pub priority: u64,
    pub is_master: bool,
    pub vip: Option<String>,
}

/// The ring that orders the catalog.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Ring {
    pub id: String,
    pub members: Vec<String>,
    pub token_holder: Option<String>,
    #[serde(deserialize_with = "uint64")]
    pub last_seq: u64,
    pub rotations_per_second: f64,
}

/// `cluster { … }`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub gateways: Vec<Gateway>,
    pub ring: Option<Ring>,
    pub layout: Option<Layout>,
    #[serde(rename = "partitionsBelowReplication")]
    pub partitions_below_replication: Option<u64>,
}

/// An answer of `{ cluster { … } }`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterAnswer {
    pub cluster: Cluster,
}

/// An account.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct User {
    pub id: String,
    pub name: String,
    /// `ADMIN` or `LISTENER`.
    pub role: String,
}
