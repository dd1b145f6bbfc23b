// Home, songs, artists, albums, and their pages.

import { Icon } from "../components/Icon";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Link, useParams } from "react-router";
import { useQuery } from "urql";
import { graphql } from "../gql";
import { Cover } from "../components/Cover";
import { SongList, toTrack, type SongRow } from "../components/SongList";
import { usePlayer } from "../player/Player";
import { useSession } from "../session";

const Recent = graphql(`
  query Recent {
    recentSongs(first: 12) {
      totalCount
      nodes {
        ...SongRow
      }
    }
  }
`);

export function ErrorNote({ error }: { error?: { message: string } }) {
  return error ? (
    <p className="error" role="alert">
      {error.message}
    </p>
  ) : null;
}

export function PlayAll({ songs, label = "Play all" }: { songs: SongRow[]; label?: string }) {
  const { dispatch } = usePlayer();
  return (
    <div className="row-buttons">
      <button type="button" className="primary" disabled={songs.length === 0} onClick={() => dispatch({ type: "play", tracks: songs.map(toTrack) })}>
        <Icon name="play" /> {label}
      </button>
      <button type="button" disabled={songs.length === 0} onClick={() => dispatch({ type: "enqueue", tracks: songs.map(toTrack) })}>
        Add to queue
      </button>
    </div>
  );
}

const RecentlyPlayed = graphql(`
  query RecentlyPlayed {
    recentlyPlayed(first: 10) {
      ...SongRow
    }
  }
`);

/** The account's recently played songs (nothing without a session). */
function RecentlyPlayedShelf() {
  const { user } = useSession();
  // Fetched again when a play is recorded (its answer is a Song), even
  // from an empty list, which names no type the cache could match.
  const context = useMemo(() => ({ additionalTypenames: ["Song"] }), []);
  const [{ data }] = useQuery({ query: RecentlyPlayed, pause: !user, requestPolicy: "cache-and-network", context });
  const songs = data?.recentlyPlayed ?? [];
  if (!user || songs.length === 0) return null;
  return (
    <section aria-labelledby="recently-played">
      <h2 id="recently-played">Recently played</h2>
      <SongList songs={songs} />
    </section>
  );
}

export function Home() {
  const [{ data, fetching, error }] = useQuery({ query: Recent });
  const songs = data?.recentSongs.nodes ?? [];
  return (
    <section>
      <RecentlyPlayedShelf />
      <h1>Recently added</h1>
      <ErrorNote error={error} />
      {fetching && !data && <p aria-busy="true">Loading…</p>}
      {data && songs.length === 0 && (
        <p>
          No music yet. <Link to="/upload">Upload some</Link>.
        </p>
      )}
      <PlayAll songs={songs} />
      <SongList songs={songs} />
      {data && (
        <p className="sub">
          {data.recentSongs.totalCount === 1 ? "1 song" : `${data.recentSongs.totalCount} songs`} in the library
        </p>
      )}
    </section>
  );
}

const SongsPage = graphql(`
  query SongsPage($after: String) {
    songs(first: 50, after: $after) {
      totalCount
      pageInfo {
        hasNextPage
        endCursor
      }
      nodes {
        ...SongRow
      }
    }
  }
`);

/** Calls `onVisible` when the sentinel scrolls into view. */
function Sentinel({ onVisible, active }: { onVisible: () => void; active: boolean }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el || !active || typeof IntersectionObserver === "undefined") return;
    const io = new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && onVisible(), {
      rootMargin: "400px",
    });
    io.observe(el);
    return () => io.disconnect();
  }, [onVisible, active]);
  return <div ref={ref} data-testid="more" />;
}

export function Songs() {
  const [after, setAfter] = useState<string | null>(null);
  const [pages, setPages] = useState<SongRow[][]>([]);
  const pagesKeys = useRef<string[]>([]);
  const [{ data, fetching, error }] = useQuery({ query: SongsPage, variables: { after } });
  useEffect(() => {
    if (!data) return;
    setPages((p) => {
      const key = after ?? "";
      const at = pagesKeys.current.indexOf(key);
      if (at >= 0) return p.map((x, i) => (i === at ? data.songs.nodes : x));
      pagesKeys.current.push(key);
      return [...p, data.songs.nodes];
    });
  }, [data, after]);
  const more = useCallback(() => {
    if (!fetching && data?.songs.pageInfo.hasNextPage && data.songs.pageInfo.endCursor) {
      setAfter(data.songs.pageInfo.endCursor);
    }
  }, [fetching, data]);
  const songs = pages.flat();
  return (
    <section>
      <h1>Songs</h1>
      <ErrorNote error={error} />
      {data && <p className="sub">{data.songs.totalCount} songs</p>}
      <SongList songs={songs} />
      {fetching && <p aria-busy="true">Loading…</p>}
      <Sentinel onVisible={more} active={!!data?.songs.pageInfo.hasNextPage} />
      {data?.songs.pageInfo.hasNextPage && (
        <button type="button" onClick={more}>
          Load more
        </button>
      )}
    </section>
  );
}

const ArtistsPage = graphql(`
  query ArtistsPage($after: String) {
    artists(first: 100, after: $after) {
      totalCount
      pageInfo {
        hasNextPage
        endCursor
      }
      nodes {
        id
        name
      }
    }
  }
`);

export function Artists() {
  const [after, setAfter] = useState<string | null>(null);
  const [{ data, error }] = useQuery({ query: ArtistsPage, variables: { after } });
  return (
    <section>
      <h1>Artists</h1>
      <ErrorNote error={error} />
      <ul className="grid">
        {(data?.artists.nodes ?? []).map((a) => (
          <li key={a.id}>
            <Link className="card" to={`/artists/${a.id}`}>
              {a.name}
            </Link>
          </li>
        ))}
      </ul>
      {data?.artists.pageInfo.hasNextPage && (
        <button type="button" onClick={() => setAfter(data.artists.pageInfo.endCursor ?? null)}>
          Next page
        </button>
      )}
    </section>
  );
}

const AlbumsPage = graphql(`
  query AlbumsPage($after: String) {
    albums(first: 100, after: $after) {
      pageInfo {
        hasNextPage
        endCursor
      }
      nodes {
        id
        title
        year
        cover: coverArt(size: 300)
        artist {
          id
          name
        }
      }
    }
  }
`);

export function Albums() {
  const [after, setAfter] = useState<string | null>(null);
  const [{ data, error }] = useQuery({ query: AlbumsPage, variables: { after } });
  return (
    <section>
      <h1>Albums</h1>
      <ErrorNote error={error} />
      <ul className="grid">
        {(data?.albums.nodes ?? []).map((a) => (
          <li key={a.id}>
            <Link className="card" to={`/albums/${a.id}`}>
              <Cover src={a.cover} size={150} testId="card-cover" />
              <strong>{a.title}</strong>
              <span className="sub">
                {a.artist?.name}
                {a.year ? ` · ${a.year}` : ""}
              </span>
            </Link>
          </li>
        ))}
      </ul>
      {data?.albums.pageInfo.hasNextPage && (
        <button type="button" onClick={() => setAfter(data.albums.pageInfo.endCursor ?? null)}>
          Next page
        </button>
      )}
    </section>
  );
}

const ArtistQuery = graphql(`
  query ArtistPage($id: ID!) {
    artist(id: $id) {
      id
      name
      albums(first: 100) {
        nodes {
          id
          title
          year
          cover: coverArt(size: 300)
        }
      }
      songs(first: 100) {
        totalCount
        nodes {
          ...SongRow
        }
      }
    }
  }
`);

export function ArtistPage() {
  const { id = "" } = useParams();
  const [{ data, error, fetching }] = useQuery({ query: ArtistQuery, variables: { id } });
  const a = data?.artist;
  if (fetching && !data) return <p aria-busy="true">Loading…</p>;
  if (!a) return <ErrorNote error={error ?? { message: "No such artist" }} />;
  return (
    <section>
      <h1>{a.name}</h1>
      <PlayAll songs={a.songs.nodes} />
      <h2>Albums</h2>
      <ul className="grid">
        {a.albums.nodes.map((al) => (
          <li key={al.id}>
            <Link className="card" to={`/albums/${al.id}`}>
              <Cover src={al.cover} size={150} testId="card-cover" />
              <strong>{al.title}</strong>
              {al.year && <span className="sub">{al.year}</span>}
            </Link>
          </li>
        ))}
      </ul>
      <h2>Songs</h2>
      <SongList songs={a.songs.nodes} />
      {a.songs.totalCount > a.songs.nodes.length && (
        <p className="sub">
          The first {a.songs.nodes.length} of {a.songs.totalCount} songs; search finds the others.
        </p>
      )}
    </section>
  );
}

const AlbumQuery = graphql(`
  query AlbumPage($id: ID!) {
    album(id: $id) {
      id
      title
      year
      cover: coverArt(size: 600)
      hasOwnCoverArt
      artist {
        id
        name
      }
      songs(first: 100) {
        nodes {
          ...SongRow
          trackNumber
        }
      }
    }
  }
`);

const SET_COVER =
  "mutation($a: ID!, $i: Upload) { setAlbumCoverArt(albumId: $a, image: $i) { id } }";

/** Sets (or, with no file, removes) an album's own image: the GraphQL multipart request spec. */
async function setAlbumCover(album: string, file: File | null, token: string | null): Promise<void> {
  const operations = JSON.stringify({ query: SET_COVER, variables: { a: album, i: null } });
  let body: BodyInit;
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  if (file) {
    const form = new FormData();
    form.append("operations", operations);
    form.append("map", JSON.stringify({ "0": ["variables.i"] }));
    form.append("0", file, file.name);
    body = form;
  } else {
    headers["content-type"] = "application/json";
    body = operations;
  }
  const r = await fetch("/graphql", { method: "POST", headers, body });
  const answer = await r.json().catch(() => null);
  const err = answer?.errors?.[0];
  if (err || !r.ok) throw new Error(err?.message ?? `HTTP ${r.status}`);
}

/** An admin's controls for an album's own image. */
function CoverControls({ album, hasOwn, onChanged }: { album: string; hasOwn: boolean; onChanged: () => void }) {
  const { token } = useSession();
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const run = async (file: File | null) => {
    setBusy(true);
    setError("");
    try {
      await setAlbumCover(album, file, token);
      onChanged();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="row-buttons">
      <label className="button">
        Change cover
        <input
          type="file"
          accept="image/jpeg,image/png,image/webp,image/gif"
          className="visually-hidden"
          data-testid="cover-input"
          disabled={busy}
          onChange={(e) => {
            const file = e.currentTarget.files?.[0];
            e.currentTarget.value = "";
            if (file) void run(file);
          }}
        />
      </label>
      {hasOwn && (
        <button type="button" disabled={busy} onClick={() => void run(null)}>
          Use the first track's cover
        </button>
      )}
      {error && (
        <span className="error" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

export function AlbumPage() {
  const { id = "" } = useParams();
  const { user } = useSession();
  const [{ data, error, fetching }, reload] = useQuery({ query: AlbumQuery, variables: { id } });
  const a = data?.album;
  if (fetching && !data) return <p aria-busy="true">Loading…</p>;
  if (!a) return <ErrorNote error={error ?? { message: "No such album" }} />;
  return (
    <section>
      <header className="album-head">
        <Cover src={a.cover} size={220} testId="album-cover" />
        <div>
          <h1>{a.title}</h1>
          <p className="sub">
            {a.artist && <Link to={`/artists/${a.artist.id}`}>{a.artist.name}</Link>}
            {a.year ? ` · ${a.year}` : ""}
          </p>
        </div>
      </header>
      <PlayAll songs={a.songs.nodes} label="Play album" />
      {user?.role === "ADMIN" && (
        <CoverControls
          album={a.id}
          hasOwn={a.hasOwnCoverArt}
          onChanged={() => reload({ requestPolicy: "network-only" })}
        />
      )}
      <SongList songs={a.songs.nodes} showAlbum={false} />
    </section>
  );
}
