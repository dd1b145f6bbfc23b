//! Helpers of the store's unit tests.

pub(crate) use std::path::{Path, PathBuf};

pub(crate) use prost::Message;
pub(crate) use rondo_core::{AlbumId, ArtistId, ContentHash, NodeId, SongId};
pub(crate) use rondo_proto::storage::v1::{self as pb, catalog_change::Change};

pub(crate) use super::{Applied, Delivered, Delivery, FetchTask, OutboxTask, StagedBlob, Store};
pub(crate) use crate::error::Error;
pub(crate) use redb::{Database, ReadableDatabase, ReadableTable};

pub(in crate::store) use super::tables::*;

/// Whether a delivery was carried out here before (its inbox row).
pub(crate) fn delivered(store: &Store, origin: NodeId, outbox_seq: u64) -> bool {
    store
        .db
        .begin_read()
        .unwrap()
        .open_table(INBOX)
        .unwrap()
        .get((origin.0.as_u128(), outbox_seq))
        .unwrap()
        .is_some()
}

/// Delivers one row of a blob this node holds (or no longer wants).
pub(crate) fn deliver_held(store: &Store, d: Delivery, hash: ContentHash) -> Delivered {
    store
        .deliver_batch(d.origin, d.low_water, &[(d.outbox_seq, hash)])
        .unwrap()[0]
        .unwrap()
}

pub(crate) fn song(id: SongId) -> pb::Song {
    let artist = ArtistId::new_random().to_string();
    pb::Song {
        id: id.to_string(),
        title: "t".into(),
        artist: Some(pb::Artist {
            id: artist.clone(),
            name: "a".into(),
        }),
        album: Some(pb::Album {
            id: AlbumId::new_random().to_string(),
            title: "b".into(),
            artist_id: artist,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) async fn staged(store: &Store, bytes: &[u8]) -> StagedBlob {
    let mut s = store.stage(1 << 20).await.unwrap();
    s.write(bytes).await.unwrap();
    s.finish(&ContentHash::of(bytes).to_hex()).await.unwrap()
}

pub(crate) fn files_in(dir: &Path) -> usize {
    walk(dir).len()
}

pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

pub(crate) fn upsert(song: pb::Song, bytes: &[u8], origin: NodeId) -> Vec<u8> {
    let mut song = song;
    song.content_hash = ContentHash::of(bytes).to_hex();
    song.size_bytes = bytes.len() as u64;
    pb::CatalogUpdate {
        origin: origin.to_string(),
        change: Some(pb::catalog_update::Change::Upsert(song)),
        ..Default::default()
    }
    .encode_to_vec()
}

pub(crate) fn delete(id: SongId) -> Vec<u8> {
    pb::CatalogUpdate {
        change: Some(pb::catalog_update::Change::DeleteSongId(id.to_string())),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A store whose applied layout is itself and `others`.
pub(crate) fn in_layout(store: &Store, others: &[NodeId]) -> rondo_ring::Layout {
    let mut nodes: std::collections::BTreeMap<NodeId, String> =
        others.iter().map(|n| (*n, n.to_string())).collect();
    nodes.insert(store.node_id(), "me".into());
    let layout = rondo_ring::Layout::genesis(nodes);
    store.apply_marker(1, Some(&layout)).unwrap();
    layout
}

/// `layout` (applied at seq 1) with a placement of `replicas` owners per
/// partition planned and applied at seq 2: the store's applied layout.
pub(crate) fn with_placement(
    store: &Store,
    layout: &rondo_ring::Layout,
    replicas: u32,
) -> rondo_ring::Layout {
    let op = layout
        .plan(rondo_ring::LayoutOp::SetReplication {
            factor: replicas,
            placement: None,
        })
        .unwrap();
    let change = rondo_ring::LayoutChange {
        expect_epoch: layout.epoch,
        op,
        proposal: String::new(),
    };
    let outcome = store.apply_layout(2, &change, layout).unwrap().unwrap();
    assert!(outcome.placement_epoch() > 0);
    outcome
}

/// An upload's update: `song` with the bytes' hash, proposed by `origin`
/// with its bytes copied under placement `epoch`.
pub(crate) fn upsert_placed(song: pb::Song, bytes: &[u8], origin: NodeId, epoch: u64) -> Vec<u8> {
    let mut update = pb::CatalogUpdate::decode(upsert(song, bytes, origin).as_slice()).unwrap();
    update.placement_epoch = epoch;
    update.encode_to_vec()
}

/// Two blobs' bytes: one `me` owns under `layout` and one it does not.
pub(crate) fn owned_and_not(layout: &rondo_ring::Layout, me: NodeId) -> (Vec<u8>, Vec<u8>) {
    let (mut mine, mut theirs) = (None, None);
    for i in 0u32.. {
        let bytes = format!("audio {i}").into_bytes();
        let hash = ContentHash::of(&bytes);
        match layout.should_hold(me, &hash) {
            true if mine.is_none() => mine = Some(bytes),
            false if theirs.is_none() => theirs = Some(bytes),
            _ => {}
        }
        if let (Some(m), Some(t)) = (&mine, &theirs) {
            return (m.clone(), t.clone());
        }
    }
    unreachable!()
}
