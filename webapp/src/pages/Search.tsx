// Search as you type (debounced) across songs, albums and artists.

import { useEffect, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { useQuery } from "urql";
import { graphql } from "../gql";
import { SongList } from "../components/SongList";
import { ErrorNote } from "./Browse";

const SearchQuery = graphql(`
  query Search($q: String!) {
    songs(first: 25, search: $q) {
      totalCount
      nodes {
        ...SongRow
      }
    }
    albums(first: 12, search: $q) {
      totalCount
      nodes {
        id
        title
        artist {
          name
        }
      }
    }
    artists(first: 12, search: $q) {
      totalCount
      nodes {
        id
        name
      }
    }
  }
`);

/** `value`, once it has not changed for `ms`. */
export function useDebounced<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}

export function Search() {
  const [params, setParams] = useSearchParams();
  const [text, setText] = useState(params.get("q") ?? "");
  const q = useDebounced(text.trim(), 250);
  useEffect(() => {
    setParams(q ? { q } : {}, { replace: true });
  }, [q, setParams]);
  const [{ data, fetching, error }] = useQuery({ query: SearchQuery, variables: { q }, pause: q === "" });
  return (
    <section>
      <h1>Search</h1>
      <label htmlFor="search" className="visually-hidden">
        Search songs, albums and artists
      </label>
      <input
        id="search"
        type="search"
        className="search"
        placeholder="Songs, albums, artists"
        autoFocus
        value={text}
        onChange={(e) => setText(e.target.value)}
      />
      <ErrorNote error={error} />
      {fetching && <p aria-busy="true">Searching…</p>}
      {data && q && (
        <>
          <h2>Songs ({data.songs.totalCount})</h2>
          {data.songs.nodes.length > 0 ? <SongList songs={data.songs.nodes} /> : <p className="sub">No songs match.</p>}
          <h2>Albums ({data.albums.totalCount})</h2>
          <ul className="grid">
            {data.albums.nodes.map((a) => (
              <li key={a.id}>
                <Link className="card" to={`/albums/${a.id}`}>
                  <strong>{a.title}</strong>
                  <span className="sub">{a.artist?.name}</span>
                </Link>
              </li>
            ))}
          </ul>
          <h2>Artists ({data.artists.totalCount})</h2>
          <ul className="grid">
            {data.artists.nodes.map((a) => (
              <li key={a.id}>
                <Link className="card" to={`/artists/${a.id}`}>
                  {a.name}
                </Link>
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
