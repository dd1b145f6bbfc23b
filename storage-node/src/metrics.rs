//! Prometheus metrics of a node. The registry is created per node and passed
//! in, so several nodes can live in one test process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set of a stream response.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

/// Label set of an automatic out held back by a guard.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabel {
    /// `one_at_a_time`, `replicas`, `capacity`, `zones`, `not_eligible`
    /// or `placement` (no table fits).
    pub guard: String,
}

/// Label set of a bad copy the scrub took out of service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabel {
    /// `missing` (gone, or of another length) or `corrupt`.
    pub fault: String,
}

/// The node's metrics.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Stream responses by HTTP status.
    pub stream_responses: Family<StatusLabel, Counter>,
    /// Picture (`/art/…`) responses by HTTP status.
    pub art_responses: Family<StatusLabel, Counter>,
    /// Audio bytes sent by the streaming endpoint.
    pub stream_bytes: Counter,
    /// Direct upload (`PUT /upload/…`) responses by HTTP status.
    pub upload_responses: Family<StatusLabel, Counter>,
    /// Songs stored, by any upload path.
    pub uploads: Counter,
    /// Songs in the catalog.
    pub songs: Gauge,
    /// Bytes of distinct blobs stored.
    pub bytes_stored: Gauge,
    /// Deliveries from other nodes' outboxes carried out (blob pushes).
    pub inbox_applied: Counter,
    /// Deliveries received again and ignored (the inbox knew them).
    pub inbox_duplicates: Counter,
    /// Bytes the resync worker fetched (partitions this node gained).
    pub resync_received_bytes: Counter,
    /// Copies given up because their owners hold them.
    pub released_blobs: Counter,
    /// At the resync worker's last pass: blobs this node owns and lacks.
    pub resync_to_fetch: Gauge,
    /// At the resync worker's last pass: the bytes of those blobs.
    pub resync_bytes_to_fetch: Gauge,
    /// At the resync worker's last pass: copies it holds and does not own.
    pub resync_to_give_up: Gauge,
    /// Nodes this node, as the ring's representative, marked out or in
    /// automatically.
    pub auto_standing_changes: Counter,
    /// Checks, as the representative, that found a node down past the
    /// down-out interval and kept it in because of a guard, by guard.
    pub auto_outs_withheld: Family<GuardLabel, Counter>,
    /// Bytes the scrub re-hashed.
    pub scrub_bytes: Counter,
    /// Blobs the scrub checked.
    pub scrub_blobs: Counter,
    /// Scrub passes over every blob completed.
    pub scrub_passes: Counter,
    /// Copies taken out of service, by fault.
    pub blob_faults: Family<FaultLabel, Counter>,
    /// Blobs read from a peer that did not hash to their name, reported to
    /// that peer.
    pub corrupt_reads: Counter,
}

impl Metrics {
    /// Sets the gauges from the store.
    pub fn refresh(&self, store: &crate::store::Store) {
        if let Ok(stats) = store.stats() {
            self.songs
                .set(i64::try_from(stats.song_count).unwrap_or(i64::MAX));
            self.bytes_stored
                .set(i64::try_from(stats.bytes_stored).unwrap_or(i64::MAX));
        }
    }

    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rondo_node_stream_responses",
            "Stream responses by status",
            self.stream_responses.clone(),
        );
        registry.register(
            "rondo_node_art_responses",
            "Picture responses by status",
            self.art_responses.clone(),
        );
        registry.register(
            "rondo_node_stream_bytes",
            "Audio bytes streamed",
            self.stream_bytes.clone(),
        );
        registry.register(
            "rondo_node_upload_responses",
            "Direct upload responses by status",
            self.upload_responses.clone(),
        );
        registry.register("rondo_node_uploads", "Songs uploaded", self.uploads.clone());
        registry.register("rondo_node_songs", "Songs stored", self.songs.clone());
        registry.register(
            "rondo_node_bytes_stored",
            "Bytes of audio stored",
            self.bytes_stored.clone(),
        );
        registry.register(
            "rondo_node_inbox_applied",
            "Deliveries from other nodes' outboxes carried out",
            self.inbox_applied.clone(),
        );
        registry.register(
            "rondo_node_inbox_duplicates",
            "Deliveries received again and ignored",
            self.inbox_duplicates.clone(),
        );
        registry.register(
            "rondo_node_resync_received_bytes",
            "Audio bytes fetched by the resync worker",
            self.resync_received_bytes.clone(),
        );
        registry.register(
            "rondo_node_released_blobs",
            "Copies given up because every owner holds the blob",
            self.released_blobs.clone(),
        );
        registry.register(
            "rondo_node_resync_blobs_to_fetch",
            "Blobs this node owns and lacks, at the resync worker's last pass",
            self.resync_to_fetch.clone(),
        );
        registry.register(
            "rondo_node_resync_copies_to_give_up",
            "Copies this node holds and does not own, at the resync worker's last pass",
            self.resync_to_give_up.clone(),
        );
        registry.register(
            "rondo_node_resync_bytes_to_fetch",
            "Bytes of the blobs this node owns and lacks, at the resync worker's last pass",
            self.resync_bytes_to_fetch.clone(),
        );
        registry.register(
            "rondo_node_auto_standing_changes",
            "Nodes this node marked out (down too long) or in again automatically",
            self.auto_standing_changes.clone(),
        );
        registry.register(
            "rondo_node_auto_outs_withheld",
            "Checks that kept a node down past the down-out interval in, by the guard that did",
            self.auto_outs_withheld.clone(),
        );
        registry.register(
            "rondo_node_scrub_bytes",
            "Bytes the scrub re-hashed",
            self.scrub_bytes.clone(),
        );
        registry.register(
            "rondo_node_scrub_blobs",
            "Blobs the scrub checked",
            self.scrub_blobs.clone(),
        );
        registry.register(
            "rondo_node_scrub_passes",
            "Scrub passes over every blob completed",
            self.scrub_passes.clone(),
        );
        registry.register(
            "rondo_node_blob_faults",
            "Copies taken out of service (quarantined), by fault: missing or corrupt",
            self.blob_faults.clone(),
        );
        registry.register(
            "rondo_node_corrupt_reads",
            "Blobs read from a peer that failed the hash check (reported to it)",
            self.corrupt_reads.clone(),
        );
    }
}
