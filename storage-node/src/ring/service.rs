//! The gRPC front of the control plane (`rondo.ring.v1.Ring`): ring
//! messages in (decoded by [`super::wire`], handed to the driver), pings,
//! and snapshots out.

use std::sync::Arc;

use rondo_proto::ring::v1 as proto;
use tonic::{Request, Response, Status};

use super::{RingHandle, wire};
use crate::error::Error;
use crate::net::Net;
use crate::store::Store;

/// Rows per `SnapshotChunk` (a row is a song, an account, a playlist: a
/// chunk stays well under the message size limit).
const SNAPSHOT_CHUNK_ROWS: usize = 1024;

/// The gRPC front of one node's control plane.
#[derive(Clone, Debug)]
pub struct Service {
    ring: RingHandle,
    store: Arc<Store>,
    net: Net,
}

impl Service {
    pub fn new(ring: RingHandle, store: Arc<Store>, net: Net) -> Self {
        Service { ring, store, net }
    }

    /// Ring messages are for any node, snapshots for the nodes of the
    /// layout ([`crate::authz`]).
    fn authorize<T>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
        allowed: crate::authz::Allowed,
    ) -> Result<rondo_core::tls::Identity, Status> {
        crate::authz::authorize(&self.ring, self.store.node_id(), request, rpc, allowed)
    }
}

#[tonic::async_trait]
impl proto::ring_server::Ring for Service {
    async fn deliver(
        &self,
        request: Request<proto::Envelope>,
    ) -> Result<Response<proto::Received>, Status> {
        let caller = self.authorize(&request, "Deliver", crate::authz::Allowed::Nodes)?;
        let envelope = request.into_inner();
        // A member speaks for itself only (checked before anything else of
        // the message is read).
        if caller.node().map(|id| id.to_string()) != Some(envelope.from.clone()) {
            return Err(Error::NotAllowed(format!(
                "Deliver: a message from node {:?} sent by {caller}",
                envelope.from
            ))
            .into());
        }
        let (from, msg) = wire::message_from_wire(envelope)?;
        self.ring.receive(from, msg)?;
        Ok(Response::new(proto::Received {}))
    }

    async fn ping(
        &self,
        request: Request<proto::Received>,
    ) -> Result<Response<proto::Received>, Status> {
        self.authorize(&request, "Ping", crate::authz::Allowed::Nodes)?;
        Ok(Response::new(proto::Received {}))
    }

    type ReadSnapshotStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::SnapshotChunk, Status>> + Send>>;

    async fn read_snapshot(
        &self,
        request: Request<proto::ReadSnapshotRequest>,
    ) -> Result<Response<Self::ReadSnapshotStream>, Status> {
        self.authorize(&request, "ReadSnapshot", crate::authz::Allowed::Members)?;
        let at = request.into_inner().at_seq;
        let store = self.store.clone();
        // Under the simulator every step runs on its one thread, in order.
        let rows = if self.net.is_sim() {
            store.export_snapshot(at)?
        } else {
            tokio::task::spawn_blocking(move || store.export_snapshot(at))
                .await
                .map_err(Error::from)??
        };
        tracing::info!(at, rows = rows.len(), "serving a snapshot");
        let chunks: Vec<Result<proto::SnapshotChunk, Status>> = rows
            .chunks(SNAPSHOT_CHUNK_ROWS)
            .map(|c| Ok(proto::SnapshotChunk { rows: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}
