//! The gateway's requests to the storage nodes on a user's behalf: every
//! gRPC call a resolver needs (orders, uploads, deletes, layout changes,
//! probes) and the mapping of a node's refusal to the gateway's error.
//! Resolvers call these and never see a gRPC client or status.

use std::time::Duration;

use futures::{Stream, StreamExt};
use rondo_core::{ContentHash, NodeId, PlaylistId, SongId, UserId};
use rondo_proto::channel::{self, Link};
use rondo_proto::ring::v1 as ring;
use rondo_proto::storage::v1::{self as pb, upload_song_request::Part};

use super::{Cluster, Node};
use crate::error::{Error, Result};

/// An account update the ring orders (the gateway's words; the wire form
/// is made here).
#[derive(Clone, Debug)]
pub enum AccountUpdate {
    /// A new account.
    Register {
        id: UserId,
        name: String,
        password_hash: String,
        role: &'static str,
        created_at_ms: u64,
    },
    /// A session ended by logout, refused until `expires_at`.
    Revoke {
        session_id: String,
        expires_at: u64,
        at: u64,
    },
    /// A change of a playlist by `actor`.
    Playlist {
        playlist: PlaylistId,
        actor: UserId,
        at_ms: u64,
        edit: PlaylistEdit,
    },
    /// A change of an account (its own password, or an admin's change).
    User {
        user: UserId,
        at_ms: u64,
        edit: UserEdit,
    },
    /// A new app password of `user`, its secret sealed.
    CreateAppPassword {
        user: UserId,
        id: uuid::Uuid,
        name: String,
        sealed: Vec<u8>,
        created_at_ms: u64,
    },
    /// An app password of `user` revoked.
    RevokeAppPassword { user: UserId, id: uuid::Uuid },
    /// A listener's own marks.
    Listening {
        user: UserId,
        at_ms: u64,
        edit: ListeningEdit,
    },
    /// Plays of listeners this gateway authenticated: (account, song,
    /// when).
    Plays(Vec<(UserId, SongId, u64)>),
}

/// A listener's change of its own marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListeningEdit {
    /// Star (or unstar) songs, albums or artists.
    Stars {
        items: Vec<uuid::Uuid>,
        starred: bool,
    },
    /// Rate an item 1 to 5 (0 removes the rating).
    Rating { item: uuid::Uuid, rating: u32 },
    /// Keep this play queue (no songs: clear it).
    SaveQueue {
        songs: Vec<SongId>,
        current: Option<SongId>,
        position_ms: u64,
        client: String,
    },
}

/// A change of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserEdit {
    /// A new password hash; ends the sessions issued before.
    Password(String),
    /// A new role ("listener" or "admin").
    Role(&'static str),
    /// Delete the account and its playlists.
    Delete,
}

/// A change of a playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaylistEdit {
    Create(String),
    Rename(String),
    Delete,
    /// Songs inserted before `position` (default: at the end).
    AddSongs {
        songs: Vec<SongId>,
        position: Option<u32>,
    },
    RemoveSongs(Vec<u32>),
    MoveSong {
        from: u32,
        to: u32,
    },
}

/// A change of the layout, decided against an expected epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutOp {
    Add {
        node: NodeId,
        address: String,
        voter: bool,
    },
    /// `force`: also while it owns partitions of an older placement not
    /// retired yet.
    Remove(NodeId, bool),
    SetVoter(NodeId, bool),
    SetReplication(u32),
    /// A node's zone and capacity (0: drain it).
    SetStorage {
        node: NodeId,
        zone: String,
        capacity: u64,
    },
    /// An operator marks a node out of placement (its partitions go to the
    /// others, it keeps serving what it holds) or in again.
    SetOut(NodeId, bool),
}

/// What a layout change would move to and from one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMove {
    pub id: String,
    pub partitions_before: u32,
    pub partitions_after: u32,
    pub gained: u32,
    pub lost: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A layout change planned, not ordered: the layout it would make and what
/// it would move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutPlan {
    /// The epoch it was planned against (apply it with this one).
    pub expect_epoch: u64,
    pub layout: Layout,
    pub moves: Vec<NodeMove>,
}

/// A node of the layout, as a change answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutMember {
    pub id: String,
    pub address: String,
    pub voter: bool,
    /// Its failure domain.
    pub zone: String,
    /// Bytes it offers for audio.
    pub capacity: u64,
    /// Marked out of placement (`auto`: by the cluster).
    pub out: Option<bool>,
    /// Partitions it owns in the placement (none without one).
    pub partitions: Option<u32>,
    /// The newest placement epoch it holds everything it owns of.
    pub synced: Option<u64>,
    /// The epochs of older placements in force in which it owns
    /// partitions (removing it is refused meanwhile).
    pub unretired: Vec<u64>,
}

/// Older placements leaving force at one log position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetirementSummary {
    pub seq: u64,
    pub epochs: Vec<u64>,
    pub placement: u64,
}

/// The placement of a layout, summed up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementSummary {
    /// The layout epoch it was installed at.
    pub epoch: u64,
    pub partitions: u32,
    pub replicas: u32,
    pub write_quorum: u32,
}

/// The layout after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub epoch: u64,
    pub replication: u32,
    pub members: Vec<LayoutMember>,
    /// None: every node holds every song's audio.
    pub placement: Option<PlacementSummary>,
    /// Epochs of the older placements still in force, oldest first.
    pub previous: Vec<u64>,
    /// Owners of the newest placement that have not synced it.
    pub unsynced: Vec<String>,
    /// The last retirements, oldest first.
    pub retirements: Vec<RetirementSummary>,
}

/// Per node id, the partitions it owns in `p`: the table holds two-byte
/// indices into the placement's node list.
fn owned_counts(p: &ring::Placement) -> std::collections::BTreeMap<&str, u32> {
    let mut counts = std::collections::BTreeMap::new();
    for pair in p.table.chunks_exact(2) {
        let i = usize::from(u16::from_le_bytes([pair[0], pair[1]]));
        if let Some(id) = p.nodes.get(i) {
            *counts.entry(id.as_str()).or_insert(0u32) += 1;
        }
    }
    counts
}

impl From<&ring::Layout> for Layout {
    fn from(l: &ring::Layout) -> Self {
        let owned = l.placement.as_ref().map(owned_counts);
        let older: Vec<(u64, std::collections::BTreeMap<&str, u32>)> = l
            .previous
            .iter()
            .map(|p| (p.epoch, owned_counts(p)))
            .collect();
        let synced: std::collections::BTreeMap<&str, u64> =
            l.synced.iter().map(|s| (s.id.as_str(), s.epoch)).collect();
        let unsynced = match &l.placement {
            Some(p) => owned
                .iter()
                .flatten()
                .filter(|(id, n)| **n > 0 && synced.get(*id).is_none_or(|e| *e < p.epoch))
                .map(|(id, _)| (*id).to_owned())
                .collect(),
            None => Vec::new(),
        };
        Layout {
            epoch: l.epoch,
            replication: l.replication,
            members: l
                .nodes
                .iter()
                .map(|m| LayoutMember {
                    id: m.id.clone(),
                    address: m.addr.clone(),
                    voter: m.voter,
                    zone: if m.zone.is_empty() {
                        rondo_core::partitions::DEFAULT_ZONE.into()
                    } else {
                        m.zone.clone()
                    },
                    capacity: m
                        .capacity
                        .unwrap_or(rondo_core::partitions::DEFAULT_CAPACITY),
                    out: m.out.then_some(m.out_auto),
                    partitions: owned
                        .as_ref()
                        .map(|o| o.get(m.id.as_str()).copied().unwrap_or(0)),
                    synced: synced.get(m.id.as_str()).copied(),
                    unretired: older
                        .iter()
                        .filter(|(_, o)| o.get(m.id.as_str()).is_some_and(|n| *n > 0))
                        .map(|(e, _)| *e)
                        .collect(),
                })
                .collect(),
            placement: l.placement.as_ref().map(|p| PlacementSummary {
                epoch: p.epoch,
                partitions: 1u32.checked_shl(p.bits).unwrap_or(0),
                replicas: p.replicas,
                write_quorum: p.write_quorum,
            }),
            previous: l.previous.iter().map(|p| p.epoch).collect(),
            unsynced,
            retirements: l
                .retirements
                .iter()
                .map(|r| RetirementSummary {
                    seq: r.seq,
                    epochs: r.epochs.clone(),
                    placement: r.placement,
                })
                .collect(),
        }
    }
}

fn account_to_wire(update: AccountUpdate) -> pb::catalog_update::Change {
    use pb::catalog_update::Change;
    match update {
        AccountUpdate::Register {
            id,
            name,
            password_hash,
            role,
            created_at_ms,
        } => Change::RegisterUser(pb::User {
            id: id.to_string(),
            name,
            password_hash,
            role: role.into(),
            created_at_ms,
            ..Default::default()
        }),
        AccountUpdate::Revoke {
            session_id,
            expires_at,
            at,
        } => Change::RevokeSession(pb::RevokedSession {
            session_id,
            expires_at,
            at,
        }),
        AccountUpdate::Playlist {
            playlist,
            actor,
            at_ms,
            edit,
        } => Change::Playlist(pb::PlaylistOp {
            playlist_id: playlist.to_string(),
            actor_id: actor.to_string(),
            at_ms,
            op: Some(edit_to_wire(edit)),
        }),
        AccountUpdate::User { user, at_ms, edit } => Change::UserChange(pb::UserChange {
            user_id: user.to_string(),
            at_ms,
            change: Some(match edit {
                UserEdit::Password(hash) => pb::user_change::Change::PasswordHash(hash),
                UserEdit::Role(role) => pb::user_change::Change::Role(role.into()),
                UserEdit::Delete => pb::user_change::Change::Delete(true),
            }),
        }),
        AccountUpdate::CreateAppPassword {
            user,
            id,
            name,
            sealed,
            created_at_ms,
        } => Change::AppPassword(pb::AppPasswordOp {
            user_id: user.to_string(),
            op: Some(pb::app_password_op::Op::Create(pb::AppPassword {
                id: id.to_string(),
                user_id: user.to_string(),
                name,
                sealed,
                created_at_ms,
                ..Default::default()
            })),
        }),
        AccountUpdate::RevokeAppPassword { user, id } => Change::AppPassword(pb::AppPasswordOp {
            user_id: user.to_string(),
            op: Some(pb::app_password_op::Op::RevokeId(id.to_string())),
        }),
        AccountUpdate::Listening { user, at_ms, edit } => {
            use pb::listening_op::Op;
            let op = match edit {
                ListeningEdit::Stars { items, starred } => Op::Stars(pb::Stars {
                    item_ids: items.iter().map(ToString::to_string).collect(),
                    starred,
                }),
                ListeningEdit::Rating { item, rating } => Op::Rating(pb::Rating {
                    item_id: item.to_string(),
                    rating,
                }),
                ListeningEdit::SaveQueue {
                    songs,
                    current,
                    position_ms,
                    client,
                } => Op::SaveQueue(pb::PlayQueue {
                    song_ids: songs.iter().map(ToString::to_string).collect(),
                    current: current.map(|c| c.to_string()).unwrap_or_default(),
                    position_ms,
                    changed_by: client,
                    ..Default::default()
                }),
            };
            Change::Listening(pb::ListeningOp {
                user_id: user.to_string(),
                at_ms,
                op: Some(op),
            })
        }
        AccountUpdate::Plays(plays) => Change::Plays(pb::Plays {
            plays: plays
                .into_iter()
                .map(|(user, song, at_ms)| pb::Play {
                    user_id: user.to_string(),
                    song_id: song.to_string(),
                    at_ms,
                })
                .collect(),
        }),
    }
}

fn edit_to_wire(edit: PlaylistEdit) -> pb::playlist_op::Op {
    use pb::playlist_op::Op;
    match edit {
        PlaylistEdit::Create(name) => Op::Create(name),
        PlaylistEdit::Rename(name) => Op::Rename(name),
        PlaylistEdit::Delete => Op::Delete(true),
        PlaylistEdit::AddSongs { songs, position } => Op::AddSongs(pb::AddSongs {
            song_ids: songs.iter().map(ToString::to_string).collect(),
            position,
        }),
        PlaylistEdit::RemoveSongs(positions) => Op::RemoveSongs(pb::RemoveSongs { positions }),
        PlaylistEdit::MoveSong { from, to } => Op::MoveSong(pb::MoveSong { from, to }),
    }
}

/// A request naming `op`, decided against `expect_epoch`, with the admin
/// authority `session`.
fn layout_request(op: LayoutOp, expect_epoch: u64, session: String) -> pb::ChangeLayoutRequest {
    pb::ChangeLayoutRequest {
        change: Some(ring::LayoutChange {
            expect_epoch,
            op: Some(layout_op_to_wire(op)),
            proposal: String::new(),
        }),
        session,
    }
}

fn layout_op_to_wire(op: LayoutOp) -> ring::layout_change::Op {
    use ring::layout_change::Op;
    match op {
        LayoutOp::Add {
            node,
            address,
            voter,
        } => Op::Add(ring::AddNode {
            id: node.to_string(),
            addr: address,
            voter,
        }),
        LayoutOp::Remove(node, force) => Op::Remove(ring::RemoveNode {
            id: node.to_string(),
            force,
        }),
        LayoutOp::SetVoter(node, voter) => Op::SetVoter(ring::SetVoter {
            id: node.to_string(),
            voter,
        }),
        LayoutOp::SetReplication(factor) => Op::SetReplication(ring::SetReplication {
            factor,
            placement: None,
        }),
        LayoutOp::SetStorage {
            node,
            zone,
            capacity,
        } => Op::SetStorage(ring::SetStorage {
            id: node.to_string(),
            zone,
            capacity,
            placement: None,
        }),
        LayoutOp::SetOut(node, out) => Op::SetStanding(ring::SetStanding {
            id: node.to_string(),
            out,
            auto: false,
            placement: None,
        }),
    }
}

/// A node failed or refused a call; the code comes from its status.
fn node_error(node: &Node, status: tonic::Status) -> Error {
    Error::Node {
        node: node.grpc_url.clone(),
        status: Box::new(status),
    }
}

/// A node refused an ordered account or playlist update: the refusal is
/// the caller's (a taken name, a record the update names that does not
/// exist, an actor who may not), the same on every node.
fn proposal_error(node: &Node, status: tonic::Status) -> Error {
    let msg = status.message().to_owned();
    match status.code() {
        tonic::Code::AlreadyExists => Error::Conflict(msg),
        tonic::Code::PermissionDenied => Error::Refused(msg),
        tonic::Code::Unauthenticated => Error::Unauthenticated("invalid or expired session"),
        tonic::Code::NotFound | tonic::Code::InvalidArgument => Error::BadUserInput(msg),
        _ => node_error(node, status),
    }
}

impl Cluster {
    /// Orders an account or playlist update through a live storage node
    /// and waits until this gateway's index has it. `session`: the token
    /// of the session it is done for (the node checks it again), empty
    /// for a listener's registration.
    pub async fn propose(&self, update: AccountUpdate, session: String) -> Result<()> {
        let (target, node) = self.pick_live([])?;
        let request = pb::ProposeRequest {
            update: Some(pb::CatalogUpdate {
                change: Some(account_to_wire(update)),
                ..Default::default()
            }),
            session,
        };
        let reply = node
            .client
            .clone()
            .propose(request)
            .await
            .map_err(|status| proposal_error(&node, status))?;
        self.wait_applied(target, reply.into_inner().change_seq)
            .await
    }

    /// The account whose name and password these are, checked by a live
    /// node (the password hashes are kept there), and the account's
    /// version there; none for a wrong name or password.
    pub async fn check_password(
        &self,
        name: String,
        password: String,
    ) -> Result<Option<(UserId, u64)>> {
        let (_, node) = self.pick_live([])?;
        let reply = node
            .client
            .clone()
            .check_password(pb::CheckPasswordRequest { name, password })
            .await;
        match reply {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some((r.user_id.parse()?, r.version)))
            }
            Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(None),
            Err(status) => Err(node_error(&node, status)),
        }
    }

    /// Uploads a song's bytes to the node `target` (its record, the
    /// chunks, the hash they must have); answers with the song and the seq
    /// of the node's change that announces it (see
    /// [`Cluster::wait_applied`]), or with the song these bytes already
    /// are (`duplicate`). A chunk
    /// stream that ends early (a read error) ends the upload without its
    /// finish, which the node refuses.
    pub async fn upload_song(
        &self,
        target: NodeId,
        song: pb::Song,
        hash: ContentHash,
        chunks: impl Stream<Item = Vec<u8>> + Send + 'static,
    ) -> Result<pb::UploadSongResponse> {
        let node = self.known_node(target)?;
        let header = pb::UploadSongRequest {
            part: Some(Part::Header(pb::SongHeader { song: Some(song) })),
        };
        let finish = pb::UploadSongRequest {
            part: Some(Part::Finish(pb::Finish {
                content_hash: hash.to_hex(),
            })),
        };
        let chunks = chunks.map(|chunk| pb::UploadSongRequest {
            part: Some(Part::Chunk(chunk)),
        });
        let requests = futures::stream::iter([header])
            .chain(chunks)
            .chain(futures::stream::iter([finish]));
        let reply = node
            .client
            .clone()
            .upload_song(requests)
            .await
            .map_err(|status| node_error(&node, status))?
            .into_inner();
        Ok(reply)
    }

    /// Deletes a song through a live node (the first of `preferred` that
    /// is up) and waits until this gateway's index has the delete. A song
    /// deleted meanwhile by someone else is gone all the same. `session`:
    /// the admin session the node checks.
    pub async fn delete_song(
        &self,
        preferred: impl IntoIterator<Item = NodeId>,
        id: SongId,
        session: String,
    ) -> Result<()> {
        let (target, node) = self.pick_live(preferred)?;
        let request = pb::DeleteSongRequest {
            id: id.to_string(),
            session,
        };
        match node.client.clone().delete_song(request).await {
            Ok(reply) => self.wait_applied(target, reply.into_inner().seq).await,
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(node_error(&node, status)),
        }
    }

    /// Sets (or, with no bytes, removes) an album's own image through a
    /// live node (preferring `preferred`), with the admin authority
    /// `session`, and waits until this gateway's index has the change.
    pub async fn set_album_art(
        &self,
        preferred: impl IntoIterator<Item = NodeId>,
        album: rondo_core::AlbumId,
        image: Vec<u8>,
        session: String,
    ) -> Result<()> {
        let (target, node) = self.pick_live(preferred)?;
        let request = pb::SetAlbumArtRequest {
            album_id: album.to_string(),
            image,
            session,
        };
        let reply = node
            .client
            .clone()
            .set_album_art(request)
            .await
            .map_err(|status| node_error(&node, status))?;
        self.wait_applied(target, reply.into_inner().seq).await
    }

    /// Has the node `target` order a layout change, decided against
    /// `expect_epoch`, with the admin authority `session`; answers the
    /// layout after it.
    pub async fn change_layout(
        &self,
        target: NodeId,
        op: LayoutOp,
        expect_epoch: u64,
        session: String,
    ) -> Result<Layout> {
        let node = self.known_node(target)?;
        let request = layout_request(op, expect_epoch, session);
        let reply = node
            .client
            .clone()
            .change_layout(request)
            .await
            .map_err(|status| node_error(&node, status))?
            .into_inner();
        // Read the node's layout now rather than at the next health round,
        // so that a change right after this one (a script's next command,
        // whose expected epoch defaults to this gateway's view) is decided
        // against the layout this one made.
        if let Err(e) = node.check_health(self.me()).await {
            tracing::warn!(node = %target, error = %e, "no health after a layout change");
        }
        reply
            .layout
            .as_ref()
            .map(Layout::from)
            .ok_or_else(|| Error::Unavailable(format!("node {target} answered no layout")))
    }
}

impl Cluster {
    /// Sets the background byte rates of node `target` (a rate left out
    /// stays), with the admin authority `session`; answers the rates in
    /// force there, (resync, scrub).
    pub async fn set_rates(
        &self,
        target: NodeId,
        resync: Option<u64>,
        scrub: Option<u64>,
        session: String,
    ) -> Result<(u64, u64)> {
        let node = self.known_node(target)?;
        let request = pb::SetRatesRequest {
            resync_rate_bytes: resync,
            scrub_rate_bytes: scrub,
            session,
        };
        let rates = node
            .client
            .clone()
            .set_rates(request)
            .await
            .map_err(|status| node_error(&node, status))?
            .into_inner();
        node.update(|info| {
            info.resync_rate_bytes = rates.resync_rate_bytes;
            info.scrub_rate_bytes = rates.scrub_rate_bytes;
        });
        Ok((rates.resync_rate_bytes, rates.scrub_rate_bytes))
    }

    /// Asks the node `target` what a layout change decided against
    /// `expect_epoch` would do, with the admin authority `session`; orders
    /// nothing.
    pub async fn plan_layout(
        &self,
        target: NodeId,
        op: LayoutOp,
        expect_epoch: u64,
        session: String,
    ) -> Result<LayoutPlan> {
        let node = self.known_node(target)?;
        let request = layout_request(op, expect_epoch, session);
        let reply = node
            .client
            .clone()
            .plan_layout(request)
            .await
            .map_err(|status| node_error(&node, status))?
            .into_inner();
        let layout = reply
            .layout
            .as_ref()
            .map(Layout::from)
            .ok_or_else(|| Error::Unavailable(format!("node {target} answered no layout")))?;
        Ok(LayoutPlan {
            expect_epoch,
            layout,
            moves: reply
                .moves
                .into_iter()
                .map(|m| NodeMove {
                    id: m.id,
                    partitions_before: m.partitions_before,
                    partitions_after: m.partitions_after,
                    gained: m.gained,
                    lost: m.lost,
                    bytes_in: m.bytes_in,
                    bytes_out: m.bytes_out,
                })
                .collect(),
        })
    }
}

/// What a probe learned of a node: its id and its control plane's phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    pub id: NodeId,
    pub phase: String,
}

/// Asks the node at `address` (not yet followed: a node about to be added)
/// its id and phase, within `timeout`.
pub async fn probe(cluster: &Cluster, address: &str, timeout: Duration) -> Result<Probed> {
    let link = Link::Probe {
        connect: timeout,
        answer: timeout,
    };
    let endpoint = channel::endpoint(address, link)
        .map_err(|e| Error::BadUserInput(format!("node address {address:?}: {e}")))?;
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Unavailable(format!(
            "cannot reach the node at {address} to learn its id ({e}); start it first"
        ))
    };
    let channel = cluster
        .links
        .connect(endpoint, rondo_proto::mtls::Expect::AnyNode)
        .await
        .map_err(|e| unreachable(&e))?;
    let reply = pb::storage_node_client::StorageNodeClient::new(channel)
        .health(pb::HealthRequest::default())
        .await
        .map_err(|e| unreachable(&e))?
        .into_inner();
    Ok(Probed {
        id: reply.node_id.parse()?,
        phase: reply.ring.map(|r| r.phase).unwrap_or_default(),
    })
}
