// Playlists: the session's list, one playlist's page (play, reorder,
// remove, rename, delete).

import { Icon } from "../components/Icon";
import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { useMutation, useQuery } from "urql";
import { graphql } from "../gql";
import { formatTime } from "../player/queue";
import { ErrorNote, PlayAll } from "./Browse";

const List = graphql(`
  query PlaylistList {
    playlists(first: 100) {
      totalCount
      nodes {
        id
        name
        songCount
        durationMs
        updatedAt
      }
    }
  }
`);

const Create = graphql(`
  mutation CreatePlaylist($name: String!) {
    createPlaylist(name: $name) {
      id
      name
    }
  }
`);

export function Playlists() {
  const [{ data, error }, refetch] = useQuery({ query: List, requestPolicy: "cache-and-network" });
  const [, create] = useMutation(Create);
  const [name, setName] = useState("");
  const [problem, setProblem] = useState<string>();
  return (
    <section>
      <h1>Playlists</h1>
      <form
        className="inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          const r = await create({ name });
          if (r.error) setProblem(r.error.graphQLErrors[0]?.message ?? r.error.message);
          else {
            setName("");
            setProblem(undefined);
            refetch({ requestPolicy: "network-only" });
          }
        }}
      >
        <label htmlFor="new-playlist">New playlist</label>
        <input id="new-playlist" required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
        <button type="submit" className="primary">
          Create
        </button>
      </form>
      {problem && (
        <p className="error" role="alert">
          {problem}
        </p>
      )}
      <ErrorNote error={error} />
      <ul className="grid">
        {(data?.playlists.nodes ?? []).map((p) => (
          <li key={p.id}>
            <Link className="card" to={`/playlists/${p.id}`}>
              <strong>{p.name}</strong>
              <span className="sub">
                {p.songCount === 1 ? "1 song" : `${p.songCount} songs`} · {formatTime(Number(p.durationMs) / 1000)}
              </span>
            </Link>
          </li>
        ))}
      </ul>
      {data && data.playlists.totalCount === 0 && <p className="sub">No playlists yet.</p>}
    </section>
  );
}

const One = graphql(`
  query PlaylistPage($id: ID!) {
    playlist(id: $id) {
      id
      name
      songCount
      owner {
        name
      }
      songs(first: 100) {
        nodes {
          ...SongRow
        }
      }
    }
  }
`);

const Rename = graphql(`
  mutation RenamePlaylist($id: ID!, $name: String!) {
    renamePlaylist(id: $id, name: $name) {
      id
      name
    }
  }
`);
const Remove = graphql(`
  mutation RemoveFromPlaylist($id: ID!, $at: Int!) {
    removeSongsFromPlaylist(id: $id, positions: [$at]) {
      id
      songCount
    }
  }
`);
const Move = graphql(`
  mutation MoveInPlaylist($id: ID!, $from: Int!, $to: Int!) {
    movePlaylistSong(id: $id, from: $from, to: $to) {
      id
    }
  }
`);
const Delete = graphql(`
  mutation DeletePlaylist($id: ID!) {
    deletePlaylist(id: $id)
  }
`);

export function PlaylistPage() {
  const { id = "" } = useParams();
  const navigate = useNavigate();
  const [{ data, error, fetching }, refetch] = useQuery({ query: One, variables: { id }, requestPolicy: "cache-and-network" });
  const [, rename] = useMutation(Rename);
  const [, remove] = useMutation(Remove);
  const [, move] = useMutation(Move);
  const [, del] = useMutation(Delete);
  const [problem, setProblem] = useState<string>();
  const p = data?.playlist;
  const after = async (r: { error?: { message: string } }) => {
    setProblem(r.error?.message);
    refetch({ requestPolicy: "network-only" });
  };
  if (fetching && !data) return <p aria-busy="true">Loading…</p>;
  if (!p) return <ErrorNote error={error ?? { message: "No such playlist" }} />;
  const songs = p.songs.nodes;
  return (
    <section>
      <h1>{p.name}</h1>
      <p className="sub">
        {p.songCount === 1 ? "1 song" : `${p.songCount} songs`}{p.owner ? ` · by ${p.owner.name}` : ""}
      </p>
      <PlayAll songs={songs} label="Play playlist" />
      {problem && (
        <p className="error" role="alert">
          {problem}
        </p>
      )}
      <ol className="playlist">
        {songs.map((s, i) => (
          <li key={`${s.id}-${i}`} data-testid="playlist-song">
            <span className="name">
              {s.title} <span className="sub">— {s.artist.name}</span>
            </span>
            <span className="actions">
              <button type="button" aria-label={`Move ${s.title} up`} disabled={i === 0} onClick={async () => after(await move({ id, from: i, to: i - 1 }))}>
                <Icon name="up" />
              </button>
              <button
                type="button"
                aria-label={`Move ${s.title} down`}
                disabled={i === songs.length - 1}
                onClick={async () => after(await move({ id, from: i, to: i + 1 }))}
              >
                <Icon name="down" />
              </button>
              <button type="button" aria-label={`Remove ${s.title}`} onClick={async () => after(await remove({ id, at: i }))}>
                <Icon name="remove" />
              </button>
            </span>
          </li>
        ))}
      </ol>
      <form
        className="inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          const name = new FormData(e.currentTarget).get("name");
          if (typeof name === "string") await after(await rename({ id, name }));
        }}
      >
        <label htmlFor="rename">Rename</label>
        <input id="rename" name="name" defaultValue={p.name} required maxLength={100} />
        <button type="submit">Save</button>
      </form>
      <button
        type="button"
        className="danger"
        onClick={async () => {
          if (!window.confirm(`Delete the playlist “${p.name}”?`)) return;
          const r = await del({ id });
          if (r.error) setProblem(r.error.message);
          else navigate("/playlists");
        }}
      >
        Delete playlist
      </button>
    </section>
  );
}
