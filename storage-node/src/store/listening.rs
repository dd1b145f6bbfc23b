//! A listener's own marks, ordered like playlists: stars and ratings of
//! songs, albums and artists, play counts, the saved play queue.
//!
//! Marks of one account on one item are one record (`pb::Annotation`)
//! keyed by a hash of the two ids; a play queue is one record per account.
//! Plays come in batches a gateway gathers (one ring entry for a second's
//! plays of every listener), so a busy cluster does not order one entry
//! per song played.

use prost::Message;
use redb::ReadableTable;
use rondo_proto::storage::v1::{self as pb, catalog_change::Change};

use super::tables::*;
use crate::error::{Error, Result};

/// The most items one star (or unstar) names.
pub const MAX_STARS: usize = 500;
/// The most songs a saved play queue holds.
pub const MAX_QUEUE: usize = 5_000;
/// The most plays one batch carries.
pub const MAX_PLAYS: usize = 10_000;
/// The longest client name kept with a queue.
const MAX_CLIENT: usize = 100;

/// The key of an account's marks on an item.
pub(super) fn mark_key(user: u128, item: u128) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(&user.to_be_bytes());
    h.update(&item.to_be_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes.as_bytes()[..16]);
    u128::from_be_bytes(first)
}

/// What kind of item an id names: 1 a song, 2 an album, 3 an artist.
fn kind_of(txn: &redb::WriteTransaction, item: u128) -> Result<Option<u32>> {
    if txn.open_table(SONGS)?.get(item)?.is_some() {
        return Ok(Some(1));
    }
    if txn.open_table(ALBUMS)?.get(item)?.is_some() {
        return Ok(Some(2));
    }
    if txn.open_table(ARTISTS)?.get(item)?.is_some() {
        return Ok(Some(3));
    }
    Ok(None)
}

fn read_mark(
    table: &impl ReadableTable<u128, &'static [u8]>,
    user: &str,
    item: &str,
    key: u128,
) -> Result<pb::Annotation> {
    Ok(match table.get(key)? {
        Some(g) => decode("annotations", g.value())?,
        None => pb::Annotation {
            user_id: user.into(),
            item_id: item.into(),
            ..Default::default()
        },
    })
}

/// Stores an annotation (removes it when it marks nothing).
fn write_mark(
    table: &mut redb::Table<'_, u128, &'static [u8]>,
    key: u128,
    mark: &pb::Annotation,
) -> Result<()> {
    if mark.starred_at_ms == 0 && mark.rating == 0 && mark.play_count == 0 {
        table.remove(key)?;
    } else {
        table.insert(key, mark.encode_to_vec().as_slice())?;
    }
    Ok(())
}

/// Applies a listener's own change. Outer error: storage; inner: refusal
/// (nothing changed).
pub(super) fn apply_listening(
    txn: &redb::WriteTransaction,
    seq: u64,
    op: pb::ListeningOp,
) -> Result<std::result::Result<Vec<Change>, Error>> {
    use pb::listening_op::Op;
    let Ok(user) = uuid_key(&op.user_id) else {
        return Ok(Err(Error::Invalid {
            what: "bad user id",
        }));
    };
    if txn.open_table(USERS)?.get(user)?.is_none() {
        return Ok(Err(Error::NotFound {
            kind: "user",
            id: op.user_id,
        }));
    }
    match op.op {
        Some(Op::Stars(stars)) => {
            if stars.item_ids.is_empty() || stars.item_ids.len() > MAX_STARS {
                return Ok(Err(Error::Invalid {
                    what: "a star names 1 to 500 items",
                }));
            }
            let mut items = Vec::with_capacity(stars.item_ids.len());
            for raw in &stars.item_ids {
                let Ok(item) = uuid_key(raw) else {
                    return Ok(Err(Error::Invalid {
                        what: "bad item id",
                    }));
                };
                let Some(kind) = kind_of(txn, item)? else {
                    return Ok(Err(Error::NotFound {
                        kind: "song, album or artist",
                        id: raw.clone(),
                    }));
                };
                items.push((raw, item, kind));
            }
            let mut table = txn.open_table(ANNOTATIONS)?;
            let mut changes = Vec::new();
            for (raw, item, kind) in items {
                let key = mark_key(user, item);
                let mut mark = read_mark(&table, &op.user_id, raw, key)?;
                let starred = if stars.starred {
                    // Starring again keeps the first date.
                    if mark.starred_at_ms == 0 {
                        op.at_ms.max(1)
                    } else {
                        mark.starred_at_ms
                    }
                } else {
                    0
                };
                if starred == mark.starred_at_ms && mark.version != 0 {
                    continue;
                }
                mark.starred_at_ms = starred;
                mark.kind = kind;
                mark.version = seq;
                write_mark(&mut table, key, &mark)?;
                changes.push(Change::Annotation(mark));
            }
            Ok(Ok(changes))
        }
        Some(Op::Rating(r)) => {
            if r.rating > 5 {
                return Ok(Err(Error::Invalid {
                    what: "a rating is 0 to 5",
                }));
            }
            let Ok(item) = uuid_key(&r.item_id) else {
                return Ok(Err(Error::Invalid {
                    what: "bad item id",
                }));
            };
            let Some(kind) = kind_of(txn, item)? else {
                return Ok(Err(Error::NotFound {
                    kind: "song, album or artist",
                    id: r.item_id,
                }));
            };
            let mut table = txn.open_table(ANNOTATIONS)?;
            let key = mark_key(user, item);
            let mut mark = read_mark(&table, &op.user_id, &r.item_id, key)?;
            mark.rating = r.rating;
            mark.kind = kind;
            mark.version = seq;
            write_mark(&mut table, key, &mark)?;
            Ok(Ok(vec![Change::Annotation(mark)]))
        }
        Some(Op::SaveQueue(mut q)) => {
            if q.song_ids.len() > MAX_QUEUE {
                return Ok(Err(Error::Invalid {
                    what: "a play queue holds at most 5000 songs",
                }));
            }
            // Songs deleted meanwhile drop out; a current song not in the
            // queue is none.
            let songs = txn.open_table(SONGS)?;
            let mut kept = Vec::with_capacity(q.song_ids.len());
            for id in q.song_ids {
                if let Ok(k) = uuid_key(&id)
                    && songs.get(k)?.is_some()
                {
                    kept.push(id);
                }
            }
            q.song_ids = kept;
            if !q.song_ids.contains(&q.current) {
                q.current.clear();
                q.position_ms = 0;
            }
            q.changed_by = q.changed_by.chars().take(MAX_CLIENT).collect();
            q.user_id = op.user_id;
            q.changed_ms = op.at_ms;
            q.version = seq;
            let mut queues = txn.open_table(PLAY_QUEUES)?;
            if q.song_ids.is_empty() {
                queues.remove(user)?;
            } else {
                queues.insert(user, q.encode_to_vec().as_slice())?;
            }
            Ok(Ok(vec![Change::PlayQueue(q)]))
        }
        None => Ok(Err(Error::Invalid {
            what: "empty listening change",
        })),
    }
}

/// Counts a batch of plays: each one of an account and a song that exist
/// (others, deleted meanwhile, are skipped).
pub(super) fn apply_plays(
    txn: &redb::WriteTransaction,
    seq: u64,
    plays: pb::Plays,
) -> Result<std::result::Result<Vec<Change>, Error>> {
    if plays.plays.is_empty() || plays.plays.len() > MAX_PLAYS {
        return Ok(Err(Error::Invalid {
            what: "a batch holds 1 to 10000 plays",
        }));
    }
    let users = txn.open_table(USERS)?;
    let songs = txn.open_table(SONGS)?;
    let mut table = txn.open_table(ANNOTATIONS)?;
    let mut touched: std::collections::BTreeMap<u128, pb::Annotation> = Default::default();
    for p in plays.plays {
        let (Ok(user), Ok(song)) = (uuid_key(&p.user_id), uuid_key(&p.song_id)) else {
            continue;
        };
        if users.get(user)?.is_none() || songs.get(song)?.is_none() {
            continue;
        }
        let key = mark_key(user, song);
        let mark = match touched.remove(&key) {
            Some(m) => m,
            None => read_mark(&table, &p.user_id, &p.song_id, key)?,
        };
        let mut mark = mark;
        mark.kind = 1;
        mark.play_count += 1;
        mark.last_played_ms = mark.last_played_ms.max(p.at_ms);
        mark.version = seq;
        touched.insert(key, mark);
    }
    let mut changes = Vec::with_capacity(touched.len());
    for (key, mark) in touched {
        write_mark(&mut table, key, &mark)?;
        changes.push(Change::Annotation(mark));
    }
    Ok(Ok(changes))
}

/// Removes an account's marks and queue (the account was deleted).
pub(super) fn drop_user(txn: &redb::WriteTransaction, user_id: &str) -> Result<()> {
    remove_owned(
        txn,
        (ANNOTATIONS, "annotations"),
        user_id,
        |m: &pb::Annotation| &m.user_id,
    )?;
    if let Ok(user) = uuid_key(user_id) {
        txn.open_table(PLAY_QUEUES)?.remove(user)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Applied;
    use crate::store::testutil::*;

    fn register(name: &str) -> (String, Vec<u8>) {
        let id = uuid::Uuid::new_v4().to_string();
        let u = pb::User {
            id: id.clone(),
            name: name.into(),
            password_hash: "$argon2id$x".into(),
            role: "listener".into(),
            ..Default::default()
        };
        let update = pb::CatalogUpdate {
            change: Some(pb::catalog_update::Change::RegisterUser(u)),
            ..Default::default()
        };
        (id, update.encode_to_vec())
    }

    fn acting(user: &str, change: pb::catalog_update::Change) -> Vec<u8> {
        pb::CatalogUpdate {
            change: Some(change),
            authority: Some(pb::Authority {
                user_id: user.into(),
                session_id: format!("s-{user}"),
                issued_ms: 10,
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn listening(user: &str, op: pb::listening_op::Op) -> Vec<u8> {
        acting(
            user,
            pb::catalog_update::Change::Listening(pb::ListeningOp {
                user_id: user.into(),
                at_ms: 1000,
                op: Some(op),
            }),
        )
    }

    fn marks(store: &super::super::Store) -> Vec<pb::Annotation> {
        store
            .changes_after(0, 10_000)
            .unwrap()
            .into_iter()
            .filter_map(|c| match c.change {
                Some(Change::Annotation(a)) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Stars, ratings, plays and queues: checked in the total order (own
    /// account only, known items, in range), counted in batches, gone
    /// with the account, carried by a snapshot.
    #[tokio::test]
    async fn listening_marks_are_checked_counted_and_go_with_their_account() {
        use pb::listening_op::Op;
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(dir.path()).unwrap();
        let (ada, reg) = register("ada");
        store.apply_update(1, &reg, None).unwrap();
        let (lin, reg) = register("lin");
        store.apply_update(2, &reg, None).unwrap();
        let me = rondo_core::NodeId::new_random();
        let s1 = rondo_core::SongId::new_random();
        let song1 = song(s1);
        let album = song1.album.clone().unwrap().id;
        store.put_blob(staged(&store, b"one").await).unwrap();
        store
            .apply_update(3, &upsert(song1, b"one", me), None)
            .unwrap();
        let mut seq = 3;
        let mut apply = |u: Vec<u8>| {
            seq += 1;
            store.apply_update(seq, &u, None).unwrap()
        };
        let stars = |ids: &[&str], starred: bool| {
            Op::Stars(pb::Stars {
                item_ids: ids.iter().map(|s| s.to_string()).collect(),
                starred,
            })
        };
        let s1t = s1.to_string();
        assert!(matches!(
            apply(listening(&ada, stars(&[&s1t, &album], true))),
            Applied::Changed { .. }
        ));
        let m = marks(&store);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].kind, m[0].starred_at_ms), (1, 1000));
        assert_eq!(m[1].kind, 2, "the album is known as one");
        // Refused, changing nothing: another account's marks, an unknown
        // item (even beside a known one), a rating above 5.
        let before = store.changes_after(0, 10_000).unwrap().len();
        let unknown = uuid::Uuid::new_v4().to_string();
        let other = pb::ListeningOp {
            user_id: ada.clone(),
            at_ms: 1,
            op: Some(stars(&[&s1t], false)),
        };
        for bad in [
            acting(&lin, pb::catalog_update::Change::Listening(other.clone())),
            listening(&ada, stars(&[&s1t, &unknown], false)),
            listening(
                &ada,
                Op::Rating(pb::Rating {
                    item_id: s1t.clone(),
                    rating: 6,
                }),
            ),
        ] {
            assert!(matches!(apply(bad), Applied::Rejected(_)));
        }
        assert_eq!(store.changes_after(0, 10_000).unwrap().len(), before);
        // Starring again changes nothing (and keeps the first date).
        apply(listening(&ada, stars(&[&s1t], true)));
        assert_eq!(store.changes_after(0, 10_000).unwrap().len(), before);
        apply(listening(
            &ada,
            Op::Rating(pb::Rating {
                item_id: s1t.clone(),
                rating: 4,
            }),
        ));
        // Plays: a batch of many, by an operator's authority; unknown
        // songs skipped; one account's plays of one song summed.
        let plays = |list: Vec<(&str, &str, u64)>| {
            acting(
                "00000000-0000-0000-0000-000000000000",
                pb::catalog_update::Change::Plays(pb::Plays {
                    plays: list
                        .into_iter()
                        .map(|(u, s, at)| pb::Play {
                            user_id: u.into(),
                            song_id: s.into(),
                            at_ms: at,
                        })
                        .collect(),
                }),
            )
        };
        assert!(matches!(
            apply(plays(vec![
                (&ada, &s1t, 5000),
                (&ada, &s1t, 4000),
                (&lin, &s1t, 7000),
                (&ada, &unknown, 1)
            ])),
            Applied::Changed { .. }
        ));
        // A listener may not order plays.
        let forged = acting(
            &ada,
            pb::catalog_update::Change::Plays(pb::Plays {
                plays: vec![pb::Play {
                    user_id: ada.clone(),
                    song_id: s1t.clone(),
                    at_ms: 1,
                }],
            }),
        );
        assert!(matches!(apply(forged), Applied::Rejected(_)));
        let m = marks(&store);
        let ada_song = m
            .iter()
            .rev()
            .find(|a| a.user_id == ada && a.item_id == s1t)
            .unwrap();
        assert_eq!(
            (
                ada_song.play_count,
                ada_song.last_played_ms,
                ada_song.rating,
                ada_song.starred_at_ms
            ),
            (2, 5000, 4, 1000)
        );
        let lin_song = m.iter().rev().find(|a| a.user_id == lin).unwrap();
        assert_eq!((lin_song.play_count, lin_song.starred_at_ms), (1, 0));
        // The queue: songs deleted meanwhile drop out; saved, then read back.
        let queue = |songs: Vec<String>, current: &str| {
            Op::SaveQueue(pb::PlayQueue {
                song_ids: songs,
                current: current.into(),
                position_ms: 42,
                changed_by: "DSub".into(),
                ..Default::default()
            })
        };
        apply(listening(
            &ada,
            queue(vec![s1t.clone(), unknown.clone()], &s1t),
        ));
        let q = store
            .changes_after(0, 10_000)
            .unwrap()
            .into_iter()
            .rev()
            .find_map(|c| match c.change {
                Some(Change::PlayQueue(q)) => Some(q),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (q.song_ids, q.current, q.position_ms, q.changed_ms),
            (vec![s1t.clone()], s1t.clone(), 42, 1000)
        );
        // A snapshot carries marks and queues; the account's deletion
        // takes its own.
        let count = |store: &super::super::Store, table: &str| {
            let at = store.ring_applied().unwrap().0;
            store
                .export_snapshot(at)
                .unwrap()
                .iter()
                .filter(|r| r.table == table)
                .count()
        };
        assert_eq!(count(&store, "annotations"), 3);
        assert_eq!(count(&store, "play_queues"), 1);
        apply(
            pb::CatalogUpdate {
                change: Some(pb::catalog_update::Change::UserChange(pb::UserChange {
                    user_id: ada.clone(),
                    at_ms: 1,
                    change: Some(pb::user_change::Change::Delete(true)),
                })),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        assert_eq!(count(&store, "annotations"), 1, "lin's play stays");
        assert_eq!(count(&store, "play_queues"), 0);
    }
}
