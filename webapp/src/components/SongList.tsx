// A list of songs: play from here, add to the queue, add to a playlist.

import { Cover } from "./Cover";
import { Icon } from "./Icon";
import { useState } from "react";
import { Link } from "react-router";
import { useMutation, useQuery } from "urql";
import { graphql } from "../gql";
import type { SongRowFragment } from "../gql/graphql";
import { usePlayer } from "../player/Player";
import { formatTime, type Track } from "../player/queue";
import { useSession } from "../session";

// The fields every song list shows: one fragment, spread (`...SongRow`) by
// every query that lists songs, so a list and its queries cannot drift.
export const SongRowFields = graphql(`
  fragment SongRow on Song {
    id
    title
    durationMs
    artist {
      id
      name
    }
    album {
      id
      title
    }
    thumb: coverArt(size: 64)
    cover: coverArt(size: 300)
    starred
  }
`);

const StarSongs = graphql(`
  mutation StarSongs($ids: [ID!]!, $starred: Boolean!) {
    starSongs(ids: $ids, starred: $starred) {
      id
      starred
    }
  }
`);

/** A star: the song is one of the account's favourites (Subsonic apps show
 * the same stars). */
function StarButton({ song }: { song: SongRow }) {
  const [, star] = useMutation(StarSongs);
  const [starred, setStarred] = useState(song.starred);
  return (
    <button
      type="button"
      className={starred ? "star on" : "star"}
      aria-pressed={starred}
      aria-label={starred ? `Unstar ${song.title}` : `Star ${song.title}`}
      onClick={async () => {
        const r = await star({ ids: [song.id], starred: !starred });
        if (!r.error) setStarred(!starred);
      }}
    >
      <Icon name={starred ? "star" : "starOutline"} />
    </button>
  );
}

export type SongRow = SongRowFragment;

export function toTrack(s: SongRow): Track {
  return {
    id: s.id,
    title: s.title,
    artist: s.artist.name,
    album: s.album.title,
    durationMs: s.durationMs,
    thumb: s.thumb,
    cover: s.cover,
  };
}

const MyPlaylists = graphql(`
  query MyPlaylists {
    playlists(first: 100) {
      nodes {
        id
        name
      }
    }
  }
`);

const AddToPlaylist = graphql(`
  mutation AddToPlaylist($id: ID!, $songs: [ID!]!) {
    addSongsToPlaylist(id: $id, songIds: $songs) {
      id
      songCount
    }
  }
`);

function AddToPlaylistMenu({ song }: { song: SongRow }) {
  const [open, setOpen] = useState(false);
  const [{ data }] = useQuery({ query: MyPlaylists, pause: !open });
  const [, add] = useMutation(AddToPlaylist);
  const [done, setDone] = useState("");
  return (
    <span className="menu">
      <button type="button" aria-label={`Add ${song.title} to a playlist`} aria-expanded={open} onClick={() => setOpen(!open)}>
        <Icon name="add" />
      </button>
      {open && (
        <span className="menu-list" role="menu">
          {(data?.playlists.nodes ?? []).map((p) => (
            <button
              type="button"
              role="menuitem"
              key={p.id}
              onClick={async () => {
                const r = await add({ id: p.id, songs: [song.id] });
                setDone(r.error ? r.error.message : `Added to ${p.name}`);
                setOpen(false);
              }}
            >
              {p.name}
            </button>
          ))}
          {data && data.playlists.nodes.length === 0 && <span className="sub">No playlists yet</span>}
        </span>
      )}
      {done && (
        <span className="sub" role="status">
          {done}
        </span>
      )}
    </span>
  );
}

export function SongList({ songs, showAlbum = true }: { songs: SongRow[]; showAlbum?: boolean }) {
  const { dispatch, queue } = usePlayer();
  const { user } = useSession();
  const current = queue.index >= 0 ? queue.tracks[queue.index]?.id : undefined;
  return (
    <table className="songs">
      <thead>
        <tr>
          <th scope="col">
            <span className="visually-hidden">Play</span>
          </th>
          <th scope="col">Title</th>
          <th scope="col">Artist</th>
          {showAlbum && <th scope="col">Album</th>}
          <th scope="col">Time</th>
          <th scope="col">
            <span className="visually-hidden">Actions</span>
          </th>
        </tr>
      </thead>
      <tbody>
        {songs.map((s, i) => (
          <tr key={`${s.id}-${i}`} className={s.id === current ? "current" : undefined} data-testid="song-row">
            <td>
              <button
                type="button"
                aria-label={`Play ${s.title}`}
                onClick={() => dispatch({ type: "play", tracks: songs.map(toTrack), index: i })}
              >
                <Icon name="play" />
              </button>
            </td>
            <td>
              <span className="with-cover">
                <Cover src={s.thumb} size={40} testId="row-cover" />
                {s.title}
              </span>
            </td>
            <td>
              <Link to={`/artists/${s.artist.id}`}>{s.artist.name}</Link>
            </td>
            {showAlbum && (
              <td>
                <Link to={`/albums/${s.album.id}`}>{s.album.title}</Link>
              </td>
            )}
            <td>{formatTime(s.durationMs / 1000)}</td>
            <td className="actions">
              <button type="button" aria-label={`Add ${s.title} to the queue`} onClick={() => dispatch({ type: "enqueue", tracks: [toTrack(s)] })}>
                <Icon name="queue" />
              </button>
              {user && <StarButton song={s} />}
              {user && <AddToPlaylistMenu song={s} />}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
