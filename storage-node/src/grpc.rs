//! The node's gRPC service (`rondo.storage.v1.StorageNode`): each handler
//! decodes its request, calls the store, the ring or the replication
//! module, and encodes the answer.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rondo_core::{ContentHash, SongId};
use rondo_proto::storage::v1::{
    self as pb, storage_node_server::StorageNode, upload_song_request::Part,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::{self, Allowed};
use crate::error::Error;
use crate::replication;
use crate::state::NodeState;
use crate::store::Applied;

/// Size of the chunks a blob is read in.
const READ_CHUNK: usize = 256 * 1024;

/// gRPC front of a [`NodeState`].
#[derive(Clone, Debug)]
pub struct Service {
    state: Arc<NodeState>,
}

impl Service {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

impl Service {
    fn authorize<T>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
        allowed: Allowed,
    ) -> Result<rondo_core::tls::Identity, Status> {
        authz::authorize(&self.state.ring, self.state.node_id, request, rpc, allowed)
    }

    /// The admin authority of the session `token` (see [`crate::acting`]).
    async fn admin(&self, token: String) -> Result<pb::Authority, Status> {
        let state = self.state.clone();
        let authority = tokio::task::spawn_blocking(move || {
            let now = crate::clock::unix_now();
            crate::acting::admin(&state.store, &state.sessions, &token, now)
        })
        .await
        .map_err(Error::from)??;
        Ok(authority)
    }

    /// The layout change a `ChangeLayout` or `PlanLayout` request names,
    /// once its session is an admin's.
    async fn layout_change(
        &self,
        request: pb::ChangeLayoutRequest,
    ) -> Result<rondo_ring::LayoutChange, Status> {
        self.admin(request.session).await?;
        let change = request.change.ok_or(Error::Invalid {
            what: "no layout change",
        })?;
        let change = crate::ring::wire::change_from_wire(change)?;
        if matches!(change.op, rondo_ring::LayoutOp::Synced { .. }) {
            // Only a node says what it holds, through its own ring.
            return Err(Error::Invalid {
                what: "a node orders its own Synced",
            }
            .into());
        }
        Ok(change)
    }
}

/// The most bytes a node may offer when it joins by itself (1 EiB): a
/// bound on what one certificate can claim.
const MAX_JOIN_CAPACITY: u64 = 1 << 60;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl StorageNode for Service {
    async fn upload_song(
        &self,
        request: Request<Streaming<pb::UploadSongRequest>>,
    ) -> Result<Response<pb::UploadSongResponse>, Status> {
        self.authorize(&request, "UploadSong", Allowed::Gateways)?;
        let mut parts = request.into_inner();
        let header = match parts.message().await? {
            Some(pb::UploadSongRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Error::Invalid {
                    what: "upload must start with a header",
                }
                .into());
            }
        };
        let song = header.song.ok_or(Error::Invalid {
            what: "header has no song",
        })?;
        song.id.parse::<SongId>().map_err(Error::from)?;
        // Only audio is stored (the gateway ran the media check; this
        // holds whoever the caller is).
        if !rondo_media::is_audio_type(&song.mime_type) {
            return Err(Error::Invalid {
                what: "only audio types are stored",
            }
            .into());
        }
        let mut staging = self
            .state
            .store
            .stage(self.state.config.max_upload_bytes)
            .await?;
        let finish = loop {
            match parts.message().await? {
                Some(pb::UploadSongRequest {
                    part: Some(Part::Chunk(chunk)),
                }) => staging.write(&chunk).await?,
                Some(pb::UploadSongRequest {
                    part: Some(Part::Finish(f)),
                }) => break f,
                Some(_) => {
                    return Err(Error::Invalid {
                        what: "unexpected message in upload",
                    }
                    .into());
                }
                None => {
                    return Err(Error::Invalid {
                        what: "upload ended before finish",
                    }
                    .into());
                }
            }
        };
        let staged = staging.finish(&finish.content_hash).await?;
        // The bytes must be the audio they claim to be: the node checks
        // what it stores, whichever gateway sent it.
        let path = staged.path().to_path_buf();
        let found = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(path).map_err(Error::io("open staged upload"))?;
            Ok::<_, Error>(rondo_media::inspect(&mut file))
        })
        .await
        .map_err(Error::from)??;
        let picture = match found {
            Ok(info) if info.mime_type == song.mime_type => info.picture,
            Ok(info) => {
                return Err(Error::Media(format!(
                    "the bytes are {}, sent as {}",
                    info.format, song.mime_type
                ))
                .into());
            }
            Err(rondo_media::Error::Io { context, source }) => {
                return Err(Error::Io {
                    context: context.to_string(),
                    source,
                }
                .into());
            }
            Err(e) => return Err(Error::Media(e.to_string()).into()),
        };
        let answer = match crate::upload::commit_song(&self.state, song, staged, picture).await? {
            crate::upload::Committed::New { song, seq } => pb::UploadSongResponse {
                song: Some(*song),
                seq,
                duplicate: false,
            },
            crate::upload::Committed::Duplicate { song } => pb::UploadSongResponse {
                song: Some(*song),
                seq: 0,
                duplicate: true,
            },
        };
        Ok(Response::new(answer))
    }

    async fn replicate_blob(
        &self,
        request: Request<pb::ReplicateBlobRequest>,
    ) -> Result<Response<pb::ReplicateBlobResponse>, Status> {
        self.authorize(&request, "ReplicateBlob", Allowed::Members)?;
        if std::env::var_os("RONDO_REFUSE_REPLICATION").is_some() {
            // Test knob (like `RONDO_FAILPOINT`): this node takes no copies
            // ahead of songs, so the fault tests can pick which nodes do
            // (and, unless it is `copies`, no pushes either).
            return Err(Status::unavailable(
                "this node refuses replication (RONDO_REFUSE_REPLICATION)",
            ));
        }
        let req = request.into_inner();
        let hash: ContentHash = req.content_hash.parse().map_err(Error::from)?;
        let source: rondo_core::NodeId = req.source_node.parse().map_err(Error::from)?;
        replication::quorum::take_copy(&self.state, hash, source).await?;
        Ok(Response::new(pb::ReplicateBlobResponse {}))
    }

    async fn deliver_blob(
        &self,
        request: Request<pb::DeliverBlobRequest>,
    ) -> Result<Response<pb::DeliverBlobReply>, Status> {
        self.authorize(&request, "DeliverBlob", Allowed::Members)?;
        if std::env::var("RONDO_REFUSE_REPLICATION").is_ok_and(|v| v != "copies") {
            return Err(Status::unavailable(
                "this node refuses replication (RONDO_REFUSE_REPLICATION)",
            ));
        }
        let req = request.into_inner();
        let origin: rondo_core::NodeId = req.origin.parse().map_err(Error::from)?;
        let rows: Vec<replication::inbox::Row> = req
            .rows
            .iter()
            .map(|r| Ok((r.outbox_seq, r.content_hash.parse()?, r.entry_seq)))
            .collect::<Result<_, Error>>()?;
        let outcomes =
            replication::inbox::deliver(&self.state, origin, req.low_water, rows).await?;
        Ok(Response::new(pb::DeliverBlobReply {
            outcomes: outcomes.into_iter().map(|o| o as i32).collect(),
        }))
    }

    async fn has_blobs(
        &self,
        request: Request<pb::HasBlobsRequest>,
    ) -> Result<Response<pb::HasBlobsReply>, Status> {
        self.authorize(&request, "HasBlobs", Allowed::Members)?;
        let req = request.into_inner();
        if req.content_hashes.len() > replication::resync::HAS_BLOBS_BATCH {
            return Err(Error::Invalid {
                what: "at most 1024 hashes per HasBlobs call",
            }
            .into());
        }
        let hashes: Vec<rondo_core::ContentHash> = req
            .content_hashes
            .iter()
            .map(|h| h.parse())
            .collect::<Result<_, _>>()
            .map_err(Error::from)?;
        let st = self.state.clone();
        let epoch = req.placement_epoch;
        let (held, confirmed) =
            tokio::task::spawn_blocking(move || st.store.holdings(&hashes, Some(epoch)))
                .await
                .map_err(Error::from)??;
        Ok(Response::new(pb::HasBlobsReply { held, confirmed }))
    }

    async fn report_corrupt(
        &self,
        request: Request<pb::ReportCorruptRequest>,
    ) -> Result<Response<pb::ReportCorruptReply>, Status> {
        self.authorize(&request, "ReportCorrupt", Allowed::Members)?;
        let hash: rondo_core::ContentHash = request
            .into_inner()
            .content_hash
            .parse()
            .map_err(Error::from)?;
        tracing::warn!(%hash, "a peer reports a blob read from here as corrupt; re-hashing it");
        self.state.suspects.report(hash);
        Ok(Response::new(pb::ReportCorruptReply {}))
    }

    async fn set_rates(
        &self,
        request: Request<pb::SetRatesRequest>,
    ) -> Result<Response<pb::Rates>, Status> {
        self.authorize(&request, "SetRates", Allowed::Gateways)?;
        let req = request.into_inner();
        self.admin(req.session).await?;
        if let Some(rate) = req.resync_rate_bytes {
            self.state.resync_limit.set_rate(rate);
        }
        if let Some(rate) = req.scrub_rate_bytes {
            self.state.scrub_limit.set_rate(rate);
        }
        let rates = self.state.rates();
        tracing::info!(
            resync_rate_bytes = rates.resync_rate_bytes,
            scrub_rate_bytes = rates.scrub_rate_bytes,
            "background rates set"
        );
        Ok(Response::new(rates))
    }

    type ReadBlobStream = BoxStream<pb::ReadBlobResponse>;

    async fn read_blob(
        &self,
        request: Request<pb::ReadBlobRequest>,
    ) -> Result<Response<Self::ReadBlobStream>, Status> {
        self.authorize(&request, "ReadBlob", Allowed::Members)?;
        let req = request.into_inner();
        let hash: ContentHash = req.content_hash.parse().map_err(Error::from)?;
        let state = self.state.clone();
        let size = tokio::task::spawn_blocking(move || state.store.blob_size(&hash))
            .await
            .map_err(Error::from)??
            .ok_or(Error::BlobNotFound(hash))?;
        if req.offset > size {
            return Err(Status::out_of_range(format!(
                "offset {} beyond blob size {size}",
                req.offset
            )));
        }
        let remaining = size - req.offset;
        let len = if req.length == 0 {
            remaining
        } else {
            req.length.min(remaining)
        };
        let mut file = tokio::fs::File::open(self.state.store.blob_path(&hash))
            .await
            .map_err(Error::io("open blob"))?;
        file.seek(std::io::SeekFrom::Start(req.offset))
            .await
            .map_err(Error::io("seek blob"))?;
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK).map(|r| {
                r.map(|chunk| pb::ReadBlobResponse {
                    chunk: chunk.to_vec(),
                })
                .map_err(|e| Status::internal(format!("read blob: {e}")))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_song(
        &self,
        request: Request<pb::GetSongRequest>,
    ) -> Result<Response<pb::Song>, Status> {
        self.authorize(&request, "GetSong", Allowed::GatewaysAndMembers)?;
        let id: SongId = request.into_inner().id.parse().map_err(Error::from)?;
        let state = self.state.clone();
        let song = tokio::task::spawn_blocking(move || state.store.song(id))
            .await
            .map_err(Error::from)??;
        Ok(Response::new(song.ok_or(Error::SongNotFound(id))?))
    }

    async fn delete_song(
        &self,
        request: Request<pb::DeleteSongRequest>,
    ) -> Result<Response<pb::DeleteSongResponse>, Status> {
        self.authorize(&request, "DeleteSong", Allowed::Gateways)?;
        let request = request.into_inner();
        let id: SongId = request.id.parse().map_err(Error::from)?;
        let authority = self.admin(request.session).await?;
        let update = pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::DeleteSongId(id.to_string())),
            authority: Some(authority),
            ..Default::default()
        };
        let seq = match self.state.ring.propose(update).await? {
            Applied::Deleted { change_seq } => change_seq,
            Applied::Rejected(e) => return Err(e.into()),
            other => return Err(Status::internal(format!("unexpected outcome {other:?}"))),
        };
        self.state.refresh_gauges();
        tracing::info!(song = %id, seq, "deleted song");
        Ok(Response::new(pb::DeleteSongResponse { seq }))
    }

    async fn set_album_art(
        &self,
        request: Request<pb::SetAlbumArtRequest>,
    ) -> Result<Response<pb::SetAlbumArtResponse>, Status> {
        self.authorize(&request, "SetAlbumArt", Allowed::Gateways)?;
        let request = request.into_inner();
        let album: rondo_core::AlbumId = request.album_id.parse().map_err(Error::from)?;
        let authority = self.admin(request.session).await?;
        let (album, seq) =
            crate::upload::set_album_art(&self.state, album, request.image, authority).await?;
        tracing::info!(album = %album.id, seq, "album image changed");
        Ok(Response::new(pb::SetAlbumArtResponse {
            album: Some(album),
            seq,
        }))
    }

    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        self.authorize(&request, "Propose", Allowed::Gateways)?;
        use pb::catalog_update::Change as U;
        let request = request.into_inner();
        let update = request.update.unwrap_or_default();
        let update = match update.change {
            Some(
                change @ (U::RegisterUser(_)
                | U::Playlist(_)
                | U::RevokeSession(_)
                | U::UserChange(_)
                | U::AppPassword(_)
                | U::Listening(_)
                | U::Plays(_)),
            ) => pb::CatalogUpdate {
                change: Some(change),
                ..Default::default()
            },
            _ => {
                return Err(Error::Invalid {
                    what: "only account, session and playlist updates can be proposed",
                }
                .into());
            }
        };
        let state = self.state.clone();
        let token = request.session;
        let update = tokio::task::spawn_blocking(move || {
            let now = crate::clock::unix_now();
            let authority =
                crate::acting::check(&state.store, &state.sessions, &token, &update, now)?;
            Ok::<_, Error>(pb::CatalogUpdate {
                authority,
                ..update
            })
        })
        .await
        .map_err(Error::from)??;
        match self.state.ring.propose(update).await? {
            Applied::Changed { change_seq } => Ok(Response::new(pb::ProposeReply { change_seq })),
            Applied::Rejected(e) => Err(e.into()),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn change_layout(
        &self,
        request: Request<pb::ChangeLayoutRequest>,
    ) -> Result<Response<pb::ChangeLayoutReply>, Status> {
        self.authorize(&request, "ChangeLayout", Allowed::Gateways)?;
        let change = self.layout_change(request.into_inner()).await?;
        let (layout, seq) = self.state.ring.propose_layout(change).await?;
        Ok(Response::new(pb::ChangeLayoutReply {
            layout: Some(crate::ring::wire::layout_to_wire(&layout)),
            seq,
        }))
    }

    async fn plan_layout(
        &self,
        request: Request<pb::ChangeLayoutRequest>,
    ) -> Result<Response<pb::PlanLayoutReply>, Status> {
        self.authorize(&request, "PlanLayout", Allowed::Gateways)?;
        let change = self.layout_change(request.into_inner()).await?;
        let (before, planned) = self.state.ring.plan_layout(change).await?;
        let after = before.apply(&planned).map_err(Error::from)?;
        let bits = after
            .placement
            .as_ref()
            .map_or(rondo_core::partitions::PARTITION_BITS, |p| {
                p.assignment.bits
            });
        let state = self.state.clone();
        let bytes = tokio::task::spawn_blocking(move || state.store.partition_bytes(bits))
            .await
            .map_err(Error::from)??;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let moves = before
            .moves(&after, &bytes)
            .into_iter()
            .map(|m| pb::NodeMove {
                id: m.node.to_string(),
                partitions_before: count(m.before),
                partitions_after: count(m.after),
                gained: count(m.gained),
                lost: count(m.lost),
                bytes_in: m.bytes_in,
                bytes_out: m.bytes_out,
            })
            .collect();
        Ok(Response::new(pb::PlanLayoutReply {
            layout: Some(crate::ring::wire::layout_to_wire(&after)),
            moves,
            change: Some(crate::ring::wire::change_to_wire(&planned)),
        }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::ChangeLayoutReply>, Status> {
        let rondo_core::tls::Identity::Node(id) =
            self.authorize(&request, "Join", Allowed::Nodes)?
        else {
            return Err(Error::NotAllowed("Join is for storage nodes".into()).into());
        };
        if self.state.config.ring.refuse_joins {
            return Err(Error::NotAllowed(
                "this node refuses joins ([ring] refuse_joins): an operator adds nodes".into(),
            )
            .into());
        }
        let req = request.into_inner();
        if req.capacity > MAX_JOIN_CAPACITY {
            return Err(Error::Invalid {
                what: "a joining node offers at most 2^60 bytes",
            }
            .into());
        }
        let zone = if req.zone.is_empty() {
            rondo_ring::DEFAULT_ZONE.to_string()
        } else {
            req.zone
        };
        if zone.len() > 64 || req.grpc_url.len() > 512 {
            return Err(Error::Invalid {
                what: "a zone is at most 64 bytes, a URL at most 512",
            }
            .into());
        }
        // The caller must answer at the URL it gives, as itself: the others
        // will reach it there.
        let endpoint = crate::net::endpoint(
            &req.grpc_url,
            crate::net::Link::Probe {
                connect: std::time::Duration::from_secs(2),
                answer: std::time::Duration::from_secs(3),
            },
        )?;
        let answered = match self
            .state
            .net
            .connect(endpoint, rondo_proto::mtls::Expect::Node(id))
            .await
        {
            Ok(channel) => pb::storage_node_client::StorageNodeClient::new(channel)
                .health(pb::HealthRequest::default())
                .await
                .is_ok(),
            Err(_) => false,
        };
        if !answered {
            return Err(Error::Unavailable(format!(
                "node {id} does not answer as itself at {}",
                req.grpc_url
            ))
            .into());
        }
        let (layout, seq) =
            crate::ring::join(&self.state.ring, id, req.grpc_url, zone, req.capacity).await?;
        Ok(Response::new(pb::ChangeLayoutReply {
            layout: Some(crate::ring::wire::layout_to_wire(&layout)),
            seq,
        }))
    }

    async fn check_password(
        &self,
        request: Request<pb::CheckPasswordRequest>,
    ) -> Result<Response<pb::CheckPasswordReply>, Status> {
        self.authorize(&request, "CheckPassword", Allowed::Gateways)?;
        let req = request.into_inner();
        let state = self.state.clone();
        let name = req.name;
        let user = tokio::task::spawn_blocking(move || state.store.user_by_name(&name))
            .await
            .map_err(Error::from)??;
        // Without the account, check against a fixed hash all the same, so
        // that timing does not tell which names exist.
        let hash = user.as_ref().map_or_else(
            || crate::passwords::DUMMY_HASH.to_owned(),
            |u| u.password_hash.clone(),
        );
        let ok = self.state.passwords.matches(req.password, hash).await?;
        match user {
            Some(u) if ok => Ok(Response::new(pb::CheckPasswordReply {
                user_id: u.id,
                version: u.version,
            })),
            _ => Err(Status::unauthenticated("wrong name or password")),
        }
    }

    type WatchCatalogStream = BoxStream<pb::CatalogChange>;

    async fn watch_catalog(
        &self,
        request: Request<pb::WatchCatalogRequest>,
    ) -> Result<Response<Self::WatchCatalogStream>, Status> {
        self.authorize(&request, "WatchCatalog", Allowed::Gateways)?;
        let after = request.into_inner().after_seq;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(feed_changes(self.state.clone(), after, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.authorize(&request, "Health", Allowed::Anyone)?;
        if let Some(gw) = request.into_inner().gateway {
            self.state.gateways.heard(gw);
        }
        let state = self.state.clone();
        let stats = tokio::task::spawn_blocking(move || state.store.stats())
            .await
            .map_err(Error::from)??;
        Ok(Response::new(pb::HealthResponse {
            node_id: self.state.node_id.to_string(),
            stream_base_url: self.state.public_url.clone(),
            song_count: stats.song_count,
            blob_count: stats.blob_count,
            bytes_stored: stats.bytes_stored,
            last_seq: stats.last_seq,
            ring: Some(self.state.ring.status()),
            gateways: self.state.gateways.recent(),
            outbox_len: stats.outbox_len,
            inbox_len: stats.inbox_len,
            inbox_duplicates: self.state.metrics.inbox_duplicates.get(),
            blobs_to_fetch: gauge(&self.state.metrics.resync_to_fetch),
            copies_to_give_up: gauge(&self.state.metrics.resync_to_give_up),
            rates: Some(self.state.rates()),
            bytes_to_fetch: gauge(&self.state.metrics.resync_bytes_to_fetch),
            resync_received_bytes: self.state.metrics.resync_received_bytes.get(),
            partitions_lacking: self
                .state
                .lacking
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default(),
        }))
    }
}

/// A gauge's value as a count.
fn gauge(g: &prometheus_client::metrics::gauge::Gauge) -> u64 {
    u64::try_from(g.get()).unwrap_or(0)
}

/// Sends the change log after `after`, then live changes, in sequence order
/// without gaps, until the receiver goes away.
async fn feed_changes(
    state: Arc<NodeState>,
    mut last: u64,
    tx: mpsc::Sender<Result<pb::CatalogChange, Status>>,
) {
    // Subscribe before reading the backlog so that nothing falls in between.
    let mut live = state.store.subscribe();
    loop {
        loop {
            let st = state.clone();
            let batch = match tokio::task::spawn_blocking(move || st.store.changes_after(last, 512))
                .await
            {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Error::from(e).into())).await;
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for change in batch {
                last = change.seq;
                if tx.send(Ok(for_gateways(change))).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let change = tokio::select! {
                r = live.recv() => r,
                () = tx.closed() => return,
            };
            match change {
                Ok(c) if c.seq <= last => {}
                Ok(c) if c.seq == last + 1 => {
                    last = c.seq;
                    if tx.send(Ok(for_gateways(c))).await.is_err() {
                        return;
                    }
                }
                // A gap or a lagging receiver: go back to the log.
                Ok(_) | Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// A change as gateways see it: without password hashes, which stay on
/// the nodes ([`crate::passwords`]).
fn for_gateways(mut change: pb::CatalogChange) -> pb::CatalogChange {
    if let Some(pb::catalog_change::Change::User(u)) = &mut change.change {
        u.password_hash.clear();
    }
    change
}
